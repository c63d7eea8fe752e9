//! The `active` word of the termination protocol (see `super::run`): how many
//! participants may hold or produce items, and an epoch bumped by every activation,
//! packed in one atomic so that the finisher's re-check sees both at once.

use crate::sync::{AtomicU64, Ordering};
use crossbeam_utils::CachePadded;

/// Low 32 bits: the count; high 32 bits: the epoch.
const COUNT_BITS: u32 = 32;
/// Adds one active participant and bumps the epoch.
const ACTIVATE: u64 = 1 | (1 << COUNT_BITS);

/// The run's `active` word.
pub(crate) struct Active(CachePadded<AtomicU64>);

/// A value of the `active` word, as a participant's decrement left it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Left(u64);

impl Left {
    /// Whether nobody is active: the one who left this value runs the final check.
    pub(crate) fn nobody_active(self) -> bool {
        self.0 as u32 == 0
    }
}

impl Active {
    /// The word of a run whose caller starts active.
    pub(crate) fn new() -> Self {
        Self(CachePadded::new(AtomicU64::new(1)))
    }

    /// How many participants are active now (a hint: Relaxed).
    #[inline]
    pub(crate) fn count(&self) -> u32 {
        self.0.load(Ordering::Relaxed) as u32
    }

    /// Rule 2: counts one more participant active and bumps the epoch, if fewer than
    /// `limit` are (`u32::MAX`: no limit). Returns whether it did.
    pub(crate) fn try_activate(&self, limit: u32) -> bool {
        // AcqRel: keeps the increment ordered before the caller's steals (rule 2) and
        // acquires the previous activations and deactivations.
        if limit == u32::MAX {
            self.0.fetch_add(ACTIVATE, Ordering::AcqRel);
            return true;
        }
        // Relaxed: only a first guess for the CAS, which does the ordering.
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            if current as u32 >= limit {
                return false;
            }
            match self.0.compare_exchange_weak(
                current,
                current.wrapping_add(ACTIVATE),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    /// Rule 3: counts one participant idle; returns the value this left.
    pub(crate) fn deactivate(&self) -> Left {
        // AcqRel: Release hands the participant's work to whoever finishes the run;
        // Acquire (on the last decrement) collects everyone else's.
        Left(self.0.fetch_sub(1, Ordering::AcqRel) - 1)
    }

    /// Rule 4's last step: whether the word still holds what `left` says, so that
    /// nobody activated since (the epoch rules out a count that went up and down).
    pub(crate) fn unchanged_since(&self, left: Left) -> bool {
        // Acquire: together with the AcqRel decrement, this sees every activation whose
        // take emptied a queue the finisher looked at (see `super::run`).
        self.0.load(Ordering::Acquire) == left.0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_tells_a_count_that_went_up_and_down() {
        let active = Active::new();
        let left = active.deactivate();
        assert!(left.nobody_active());
        assert!(active.unchanged_since(left));
        assert!(active.try_activate(u32::MAX));
        assert_eq!(active.count(), 1);
        let again = active.deactivate();
        assert!(again.nobody_active());
        assert_ne!(again, left, "same count, new epoch");
        assert!(!active.unchanged_since(left));
    }

    #[test]
    fn activation_stops_at_the_limit() {
        let active = Active::new();
        assert!(active.try_activate(2));
        assert!(!active.try_activate(2));
        assert_eq!(active.count(), 2);
        assert!(!active.deactivate().nobody_active());
        assert!(active.try_activate(2));
    }
}
