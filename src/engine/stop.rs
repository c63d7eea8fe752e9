//! Why and when a run stops early: a task's panic or error, a cancel token, a deadline.
//!
//! Participants look at the stop state between items (every few items, see
//! `crate::engine::cadence`, or after every block of a range walk), per item only when items
//! take microseconds. The first reason to be claimed wins and is what the run reports;
//! the `flag` is the hot hint every participant reads.

use crate::cancel::CancelToken;
use crate::sync::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Why a run stopped before running out of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// A task panicked.
    Panic = 1,
    /// A task of a fallible run returned an error.
    Error = 2,
    /// The run's cancel token was cancelled.
    Cancelled = 3,
    /// The run's deadline passed.
    TimedOut = 4,
}

impl StopReason {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Panic),
            2 => Some(Self::Error),
            3 => Some(Self::Cancelled),
            4 => Some(Self::TimedOut),
            _ => None,
        }
    }
}

/// A run's stop state and the outside signals (token, deadline) it watches.
pub(crate) struct Stop<'c> {
    /// Set once any reason has been claimed: no new item starts.
    flag: AtomicBool,
    /// The first reason claimed (0: none).
    reason: AtomicU32,
    token: Option<&'c CancelToken>,
    deadline: Option<Instant>,
}

impl<'c> Stop<'c> {
    pub(crate) fn new(token: Option<&'c CancelToken>, deadline: Option<Instant>) -> Self {
        Self { flag: AtomicBool::new(false), reason: AtomicU32::new(0), token, deadline }
    }

    /// Whether the run is stopping (the hot check: one relaxed load).
    #[inline(always)]
    pub(crate) fn is_set(&self) -> bool {
        // Relaxed: a hint to stop starting items. What a stopping run hands back (the
        // reason, the error, the panic) is read by the caller after quiescence, which
        // the termination protocol orders.
        self.flag.load(Ordering::Relaxed)
    }

    /// Whether the run is stopping, also looking at the token and (through `clock`,
    /// which reads the time only now and then) the deadline; claims the reason if one
    /// of those fired.
    #[inline(always)]
    pub(crate) fn poll(&self, clock: &mut Clock) -> bool {
        self.is_set() || ((self.token.is_some() || self.deadline.is_some()) && self.poll_outside(clock))
    }

    /// Whether [`Stop::poll`] could return true: the flag is set, or the run has a
    /// token or a deadline to look at. (Relaxed loads and field reads only.)
    #[inline(always)]
    pub(crate) fn needs_poll(&self) -> bool {
        self.is_set() || self.token.is_some() || self.deadline.is_some()
    }

    /// Like [`Stop::poll`] but without the deadline: for `&self` views of the run.
    #[inline]
    pub(crate) fn is_set_or_cancelled(&self) -> bool {
        // Relaxed on the token: the same hint as `is_set`.
        self.is_set() || self.token.is_some_and(|t| t.flag().load(Ordering::Relaxed))
    }

    #[cold]
    #[inline(never)]
    fn poll_outside(&self, clock: &mut Clock) -> bool {
        // Relaxed: a hint, as in `is_set`.
        if self.token.is_some_and(|t| t.flag().load(Ordering::Relaxed)) {
            self.claim(StopReason::Cancelled);
            return true;
        }
        if let Some(deadline) = self.deadline
            && clock.passed(deadline)
        {
            self.claim(StopReason::TimedOut);
            return true;
        }
        false
    }

    /// Checks the token and deadline once, reading the clock now: for run start-up.
    pub(crate) fn poll_now(&self) -> bool {
        // A new clock reads the time on its first poll.
        self.poll(&mut Clock::new())
    }

    /// Stops the run for `reason`; returns whether it was the first reason claimed.
    pub(crate) fn claim(&self, reason: StopReason) -> bool {
        // Relaxed: the CAS only decides which reason is first; the caller reads it after
        // the run has quiesced (ordered by the termination counters).
        let first = self.reason.compare_exchange(0, reason as u32, Ordering::Relaxed, Ordering::Relaxed).is_ok();
        // Relaxed: see `is_set`.
        self.flag.store(true, Ordering::Relaxed);
        first
    }

    /// The first reason claimed, if any. Call after the run has quiesced.
    pub(crate) fn reason(&self) -> Option<StopReason> {
        // Relaxed: read after quiescence (see `claim`).
        StopReason::from_u32(self.reason.load(Ordering::Relaxed))
    }
}

/// Reads the time rarely: the gap between two reads adapts so that a deadline is noticed
/// within about `TARGET_GAP` of passing while fast items (1 ns) pay ~nothing for it.
/// Why a run watching `token` and `deadline` must stop now, if it must: the check made
/// before a run starts, and before each batch of a stream.
pub(crate) fn outside_reason(token: Option<&CancelToken>, deadline: Option<Instant>) -> Option<StopReason> {
    let stop = Stop::new(token, deadline);
    if stop.poll_now() { stop.reason() } else { None }
}

pub(crate) struct Clock {
    countdown: u32,
    stride: u32,
    last: Option<Instant>,
}

/// Aimed-for time between two reads of the clock while polling a deadline.
const TARGET_GAP: Duration = Duration::from_micros(50);
/// Most polls between two reads of the clock: bounds how late a deadline is seen when
/// items suddenly get slower (at most this many polls after it passed), while a read
/// every 256 polls costs ~1% even when polls come every 8 items of 1 ns (follow-on
/// runs; range walks poll once per block of microseconds).
const MAX_STRIDE: u32 = 256;

impl Clock {
    pub(crate) fn new() -> Self {
        Self { countdown: 1, stride: 1, last: None }
    }

    /// Whether `deadline` has passed; reads the time only every `stride` calls.
    fn passed(&mut self, deadline: Instant) -> bool {
        self.countdown -= 1;
        if self.countdown > 0 {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        // Polls come faster than the target gap: read the clock less often. Slower:
        // shrink the stride in proportion at once, so that items that suddenly turn
        // slow are caught up with on the next read (down to every poll).
        self.stride = match self.last {
            Some(last) if now - last < TARGET_GAP => (self.stride * 2).min(MAX_STRIDE),
            Some(last) => {
                let gap = (now - last).as_nanos().max(1);
                let scaled = u128::from(self.stride) * TARGET_GAP.as_nanos() / gap;
                (scaled as u32).max(1)
            }
            None => 1,
        };
        self.last = Some(now);
        self.countdown = self.stride;
        false
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins() {
        let stop = Stop::new(None, None);
        assert!(!stop.is_set());
        assert!(stop.claim(StopReason::Error));
        assert!(!stop.claim(StopReason::Panic));
        assert!(stop.is_set());
        assert_eq!(stop.reason(), Some(StopReason::Error));
    }

    #[test]
    fn token_and_deadline_are_polled() {
        let token = CancelToken::new();
        let stop = Stop::new(Some(&token), None);
        let mut clock = Clock::new();
        assert!(!stop.poll(&mut clock));
        token.cancel();
        assert!(stop.poll(&mut clock));
        assert_eq!(stop.reason(), Some(StopReason::Cancelled));

        let past = Stop::new(None, Some(Instant::now()));
        assert!(past.poll_now());
        assert_eq!(past.reason(), Some(StopReason::TimedOut));
    }

    #[test]
    fn clock_reads_often_enough_for_slow_polls() {
        // Polls 1 ms apart: the stride must stay at 1, so a deadline 5 ms out is seen
        // on the first poll after it passes.
        let deadline = Instant::now() + Duration::from_millis(5);
        let mut clock = Clock::new();
        let mut polls = 0;
        while !clock.passed(deadline) {
            polls += 1;
            std::thread::sleep(Duration::from_millis(1));
            assert!(polls < 1000, "deadline never noticed");
        }
        assert!(Instant::now() >= deadline);
        assert!(clock.stride <= 2, "stride grew to {} on slow polls", clock.stride);
    }
}
