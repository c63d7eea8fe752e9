//! How many items a participant runs between two *checkpoints*: the looks at its run
//! for hungry threads, stops and urgent items (`Participant::checkpoint_due`, and the
//! full checks in `Participant::checkpoint`).
//!
//! A fixed count is wrong at one end or the other: every 8 items is noise for 1 ns
//! items, but for 50 us items it keeps an idle thread waiting 400 us for work that sits
//! in a busy thread's private stack (a run of seeds starts with all of them there). So
//! the count follows the items' measured cost: `CHECKPOINT_GAP_NS / per_item` items,
//! between 1 (items of over 1 us) and `MOST_ITEMS` (items of 250 ns or less).
//!
//! The clock is read every few checkpoints: after the first item, then twice as many
//! checkpoints apart each time while reads come quickly, up to
//! `MOST_CHECKPOINTS_PER_READ` checkpoints (2,048 fast items); a read that finds items
//! slower brings the next one closer in proportion. Each activation of a participant
//! starts over. The first read also counts what came before the first item (pulling
//! seeds, a steal); the next one, a checkpoint later, corrects it.
//!
//! A fast first item skips its checkpoint (the next comes `MOST_ITEMS` items later, as
//! for any fast item). Checkpoints that come sooner than that (items of over 250 ns)
//! share only when the work in sight, the private stack times the items' cost, is worth
//! waking a thread (`worth_sharing`): a run of a few such items still runs as a plain
//! loop, without a wake-up, as it did when every checkpoint was 8 items apart.
//!
//! The measured cost also says whether the items seem to be computation
//! (`compute_only`: under a microsecond on average); the sharer then wakes no more
//! threads than there are CPUs (`Seats::wants_a_worker_for_compute`).

use std::time::Instant;

/// The most items between two checkpoints.
#[cfg(not(loom))]
const MOST_ITEMS: u32 = 8;
/// Under loom, a checkpoint after every item, whatever the clock (models do not depend on
/// time).
#[cfg(loom)]
const MOST_ITEMS: u32 = 1;

/// Aimed-for work between two checkpoints, in nanoseconds: short next to waking a thread,
/// long next to a checkpoint.
const CHECKPOINT_GAP_NS: u64 = 2_000;
/// Aimed-for time between two reads of the clock, in nanoseconds.
const CLOCK_GAP_NS: u64 = 20_000;
/// Most checkpoints between two reads of the clock: bounds how many items run before items
/// that suddenly got slow are noticed.
const MOST_CHECKPOINTS_PER_READ: u32 = 256;
/// The least work in sight, in nanoseconds, that a checkpoint sooner than every
/// `MOST_ITEMS` items shares: a sleeping thread takes tens of microseconds to arrive,
/// and waking it costs the sharer a system call (5-15 us on a VM that halts idle
/// vCPUs).
const SHARE_EARLY_NS: u64 = 50_000;

/// Items shorter than this on average, in nanoseconds, are taken for computation: a
/// thread that blocks and is woken again takes longer than that to come back. A
/// heuristic: an item that blocks after many short ones is not seen until it returns.
const COMPUTE_ONLY_NS: u64 = 1_000;

/// A participant's checkpoint count between two of its clock reads (see the module
/// docs).
pub(crate) struct Cadence {
    lap: Lap,
    /// Checkpoints between two clock reads. `every` changes only at a read, so a read
    /// comes after `checkpoints_per_read * every` items (more if a checkpoint came
    /// early, see `Lap`).
    checkpoints_per_read: u32,
    /// The last read.
    last: Instant,
    /// What one item cost, in nanoseconds, as of the last read.
    per_item: u64,
    /// No read has been made yet.
    first: bool,
    /// When the participant should hand its place over (a long run's caller stepping
    /// back, see `Participant::step_back`); `None`: never, or already due.
    step_back_at: Option<Instant>,
    /// A read found the clock past `step_back_at`: the next checkpoint steps back.
    step_back_due: bool,
}

/// The two counters the item loop keeps in registers: copied out of the `Cadence`
/// when the loop starts (`Cadence::lap`) and back when it ends (`Cadence::set_lap`).
/// A checkpoint that comes early (a task asked for one) restarts the count of items without
/// being counted, which only makes items seem slower (more checkpoints, never fewer).
#[derive(Clone, Copy)]
pub(crate) struct Lap {
    /// Items between two checkpoints, `1..=MOST_ITEMS`.
    every: u32,
    /// Checkpoints left until the next clock read, at least 1.
    checkpoints_to_read: u32,
}

impl Cadence {
    /// A cadence for a participant that started working at `start`: its first checkpoint
    /// comes after one item, and times it.
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            lap: Lap { every: 1, checkpoints_to_read: 1 },
            checkpoints_per_read: 1,
            last: start,
            per_item: 0,
            first: true,
            step_back_at: None,
            step_back_due: false,
        }
    }

    /// Makes a checkpoint due at the first clock read at or after `at` (under loom,
    /// where the clock is never read, due at once), and `step_back_due` true there.
    pub(crate) fn step_back_at(&mut self, at: Instant) {
        self.step_back_at = Some(at);
        self.step_back_due = cfg!(loom);
    }

    /// Whether the participant should step back now (see `step_back_at`).
    #[inline(always)]
    pub(crate) fn step_back_due(&self) -> bool {
        self.step_back_due
    }

    /// Clears `step_back_due`: the participant stepped back, or could not and will try
    /// again at `again` (if any).
    pub(crate) fn stepped_back_or_retry(&mut self, again: Option<Instant>) {
        self.step_back_due = false;
        self.step_back_at = again;
    }

    /// When the clock was last read.
    pub(crate) fn last_read(&self) -> Instant {
        self.last
    }

    /// Items to run before the next checkpoint.
    #[inline(always)]
    pub(crate) fn every(&self) -> u32 {
        self.lap.every()
    }

    /// The counters, for the item loop to keep in registers.
    #[inline(always)]
    pub(crate) fn lap(&self) -> Lap {
        self.lap
    }

    /// Takes back the counters the item loop kept.
    #[inline(always)]
    pub(crate) fn set_lap(&mut self, lap: Lap) {
        self.lap = lap;
    }

    /// Whether the items measured so far are short enough to be taken for computation
    /// (see `COMPUTE_ONLY_NS`), which more threads than CPUs cannot run any sooner.
    pub(crate) fn compute_only(&self) -> bool {
        self.per_item < COMPUTE_ONLY_NS
    }

    /// Whether a checkpoint may share `private` items in sight (see the module docs).
    pub(crate) fn worth_sharing(&self, private: usize) -> bool {
        cfg!(loom) || self.lap.every == MOST_ITEMS || (private as u64).saturating_mul(self.per_item) >= SHARE_EARLY_NS
    }

    /// Sets the count from the work done since the last read, which ended at `now`;
    /// returns whether to checkpoint now.
    #[cold]
    #[inline(never)]
    fn read(&mut self, now: Instant) -> bool {
        // In nanoseconds as `u64`: 128-bit divisions cost more than the rest of a checkpoint.
        let gap = now.saturating_duration_since(self.last).as_nanos() as u64;
        let per_item = gap / u64::from(self.checkpoints_per_read * self.lap.every);
        // Items too fast to measure (`per_item == 0`) get the most items.
        let every =
            CHECKPOINT_GAP_NS.checked_div(per_item).map_or(MOST_ITEMS, |n| n.clamp(1, u64::from(MOST_ITEMS)) as u32);
        // Reads came faster than aimed for: read less often. Slower: at once in
        // proportion, so that items that turned slow are caught up with on the next read.
        self.checkpoints_per_read = if gap < CLOCK_GAP_NS {
            (self.checkpoints_per_read * 2).min(MOST_CHECKPOINTS_PER_READ)
        } else {
            (u64::from(self.checkpoints_per_read) * CLOCK_GAP_NS / gap).max(1) as u32
        };
        self.lap = Lap { every, checkpoints_to_read: self.checkpoints_per_read };
        self.last = now;
        self.per_item = per_item;
        if self.step_back_at.is_some_and(|at| now >= at) {
            self.step_back_at = None;
            self.step_back_due = true;
        }
        !std::mem::take(&mut self.first) || every < MOST_ITEMS || self.step_back_due
    }
}

impl Lap {
    /// Items to run before the next checkpoint.
    #[inline(always)]
    pub(crate) fn every(self) -> u32 {
        if cfg!(loom) { MOST_ITEMS } else { self.every }
    }

    /// Counts a checkpoint, which came after `every()` items, reading the clock into
    /// `cadence` when due; returns whether to checkpoint now (always but at a fast first
    /// item, see the module docs).
    #[inline(always)]
    pub(crate) fn checkpoint(&mut self, cadence: &mut Cadence) -> bool {
        cfg!(loom) || self.checkpoint_with(cadence, Instant::now)
    }

    /// `checkpoint`, with the clock given.
    #[inline(always)]
    fn checkpoint_with(&mut self, cadence: &mut Cadence, now: impl FnOnce() -> Instant) -> bool {
        self.checkpoints_to_read -= 1;
        if self.checkpoints_to_read != 0 {
            return true;
        }
        cadence.lap = *self;
        let checkpoint = cadence.read(now());
        *self = cadence.lap;
        checkpoint
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Cadence, MOST_CHECKPOINTS_PER_READ, MOST_ITEMS};
    use std::time::{Duration, Instant};

    /// Runs `checkpoints` checkpoints of items costing `per_item` each on `cadence`, on
    /// a made-up clock that starts at `now`; returns the clock.
    fn feed(cadence: &mut Cadence, mut now: Instant, per_item: Duration, checkpoints: u32) -> Instant {
        let mut lap = cadence.lap();
        for _ in 0..checkpoints {
            now += per_item * lap.every();
            lap.checkpoint_with(cadence, || now);
        }
        cadence.set_lap(lap);
        now
    }

    #[test]
    fn slow_items_are_checked_after_one_at_a_time() {
        let start = Instant::now();
        let mut cadence = Cadence::new(start);
        assert_eq!(cadence.every(), 1, "the first checkpoint comes after the first item");
        feed(&mut cadence, start, Duration::from_micros(50), 10);
        assert_eq!(cadence.every(), 1);
        assert_eq!(cadence.checkpoints_per_read, 1, "every checkpoint of 50 us items reads the clock");
    }

    #[test]
    fn fast_items_get_the_most_items_and_few_reads() {
        let start = Instant::now();
        let mut cadence = Cadence::new(start);
        feed(&mut cadence, start, Duration::from_nanos(3), 1000);
        assert_eq!(cadence.every(), MOST_ITEMS);
        assert_eq!(cadence.checkpoints_per_read, MOST_CHECKPOINTS_PER_READ);
    }

    #[test]
    fn microsecond_items_are_checked_after_every_two_microseconds() {
        let start = Instant::now();
        let mut cadence = Cadence::new(start);
        feed(&mut cadence, start, Duration::from_nanos(500), 100);
        assert_eq!(cadence.every(), 4);
    }

    #[test]
    fn items_that_turn_slow_are_caught_up_with_on_the_next_read() {
        let start = Instant::now();
        let mut cadence = Cadence::new(start);
        let now = feed(&mut cadence, start, Duration::from_nanos(3), 1000);
        // At most `MOST_CHECKPOINTS_PER_READ` checkpoints of `MOST_ITEMS` items until the next
        // read; after it, a checkpoint per item and a read per checkpoint.
        feed(&mut cadence, now, Duration::from_micros(50), MOST_CHECKPOINTS_PER_READ);
        assert_eq!(cadence.every(), 1);
        assert_eq!(cadence.checkpoints_per_read, 1);
    }

    #[test]
    fn only_a_fast_first_item_skips_its_look() {
        let start = Instant::now();
        let mut fast = Cadence::new(start);
        let mut lap = fast.lap();
        assert!(!lap.checkpoint_with(&mut fast, || start + Duration::from_nanos(5)));
        assert!(
            lap.checkpoint_with(&mut fast, || start + Duration::from_nanos(50)),
            "only the first checkpoint is skipped"
        );
        let mut slow = Cadence::new(start);
        assert!(slow.lap().checkpoint_with(&mut slow, || start + Duration::from_nanos(500)));
    }

    #[test]
    fn only_items_under_a_microsecond_count_as_compute_only() {
        let start = Instant::now();
        let mut fast = Cadence::new(start);
        feed(&mut fast, start, Duration::from_nanos(300), 10);
        assert!(fast.compute_only());
        let mut slow = Cadence::new(start);
        feed(&mut slow, start, Duration::from_micros(50), 10);
        assert!(!slow.compute_only(), "50 us items may be waiting on I/O");
    }

    #[test]
    fn early_looks_share_only_what_is_worth_a_wake_up() {
        let start = Instant::now();
        // Fast items checkpoint every `MOST_ITEMS` items, and share whatever is in sight.
        let mut fast = Cadence::new(start);
        feed(&mut fast, start, Duration::from_nanos(3), 10);
        assert!(fast.worth_sharing(2));
        // 1 us items checkpoint every 2 items, and share 50 of them but not 3.
        let mut slow = Cadence::new(start);
        feed(&mut slow, start, Duration::from_micros(1), 10);
        assert!(slow.every() < MOST_ITEMS);
        assert!(!slow.worth_sharing(3));
        assert!(slow.worth_sharing(50));
    }
}
