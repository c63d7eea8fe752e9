//! Per-run statistics, counted by each participant privately and summed at the end.

use std::time::Duration;

/// What one run did, summed over its participants.
///
/// Every counter is kept privately by the thread that bumps it and added up once the
/// run is over, so collecting them costs no shared atomic per item.
///
/// ```
/// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
/// let stats = pool.run([3u32], |n, ctx| {
///     if n > 0 {
///         ctx.push(n - 1);
///     }
/// });
/// assert_eq!(stats.executed, 4);
/// assert_eq!(stats.pushed, 3);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunStats {
    /// Items executed (seeds, follow-ons, and index-range chunks for slice runs).
    pub executed: u64,
    /// Follow-on items pushed by tasks through [`crate::Ctx::push`] (for follow-on
    /// runs: items executed minus seeds; zero for slice and range calls).
    pub pushed: u64,
    /// Items moved from a private buffer to a stealable deque because some thread was
    /// hungry, plus range halves split off for the same reason.
    pub published: u64,
    /// Successful steals from another participant's deque.
    pub steals: u64,
    /// Items that came along with those steals, moved into the thief's deque.
    pub stolen_extra: u64,
    /// Items taken from the run's global queue.
    pub global_pops: u64,
    /// Times a participant ran out of work and went idle.
    pub idle_transitions: u64,
    /// Times a participant left the run while it was still going (it may have parked).
    pub leaves: u64,
    /// Participants that took part: the caller plus every worker that joined.
    pub participants: usize,
    /// Busy time of each participant slot (workers in index order, the caller last).
    pub busy: Vec<Duration>,
    /// How many pool workers are pinned to a core.
    pub pinned_workers: usize,
}

/// The counters one participant keeps for itself.
#[derive(Debug, Default, Clone)]
pub(crate) struct SlotStats {
    pub(crate) executed: u64,
    pub(crate) published: u64,
    pub(crate) steals: u64,
    pub(crate) stolen_extra: u64,
    pub(crate) global_pops: u64,
    pub(crate) idle_transitions: u64,
    pub(crate) leaves: u64,
    pub(crate) joined: bool,
    pub(crate) busy: Duration,
}

impl RunStats {
    pub(crate) fn add_slot(&mut self, s: &SlotStats) {
        self.executed += s.executed;
        self.published += s.published;
        self.steals += s.steals;
        self.stolen_extra += s.stolen_extra;
        self.global_pops += s.global_pops;
        self.idle_transitions += s.idle_transitions;
        self.leaves += s.leaves;
        self.participants += usize::from(s.joined);
        self.busy.push(s.busy);
    }
}
