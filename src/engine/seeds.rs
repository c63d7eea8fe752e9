//! A run's seeds, pulled by its caller a chunk at a time (termination rule 3, see
//! `super::run`).

use super::share::BATCH_AT_MOST;
use super::stack::PrivateStack;
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Seeds the caller pulls from the seed iterator at a time (once its private stack
/// is empty): enough for a full batch to share with as much again staying behind,
/// without holding all the seeds at once.
#[cfg(not(loom))]
pub(super) const SEED_CHUNK: usize = 4 * super::share::BATCH_AT_MOST;
/// Under loom, so that a model with three seeds pulls twice.
#[cfg(loom)]
pub(super) const SEED_CHUNK: usize = 2;

/// The seeds of a run that the caller has not pulled yet (see rule 3).
pub(crate) struct Seeds<I> {
    pub(super) iter: I,
    /// How many were pulled, for `RunStats::pushed`.
    pub(super) pulled: u64,
    /// The iterator came up short (it is not asked again: it may not be fused), or it
    /// panicked.
    pub(super) done: bool,
    /// Its size hint said fewer seeds were left than it then gave: not trusted again.
    hint_was_low: bool,
}

impl<I: Iterator> Seeds<I> {
    pub(crate) fn new(iter: I) -> Self {
        Self { iter, pulled: 0, done: false, hint_was_low: false }
    }

    /// How many seeds were pulled so far.
    pub(crate) fn pulled(&self) -> u64 {
        self.pulled
    }
}

/// A run's seeds, with the iterator's type erased: the engine asks once per chunk,
/// and the chunk is filled by a loop monomorphized for the iterator.
pub(crate) trait SeedSource<T> {
    /// Fills the caller's empty private stack with the next seeds, the first on top;
    /// `Ok(false)` when none are left, the payload if the iterator panicked (the seeds
    /// it had made in this chunk are dropped then, and the stack stays empty).
    fn pull(&mut self, stack: &mut PrivateStack<T>) -> Result<bool, Box<dyn Any + Send>>;

    /// Whether the iterator says at most `most` seeds are left (`size_hint`); the
    /// payload if it panicked (it is not asked again then).
    fn at_most_left(&mut self, most: usize) -> Result<bool, Box<dyn Any + Send>>;

    /// Gives the seeds not pulled yet to `push`, in order, in chunks of at most
    /// `BATCH_AT_MOST`, and at most `most` of them (a size hint may be wrong); returns
    /// whether none are left (`Ok(false)`: the iterator may hold more), the payload if
    /// the iterator panicked (the seeds of the chunk being made are dropped then, and
    /// the iterator is not asked again).
    fn hand_over(&mut self, most: usize, push: &mut dyn FnMut(Vec<T>)) -> Result<bool, Box<dyn Any + Send>>;
}

impl<I: Iterator> SeedSource<I::Item> for Seeds<I> {
    fn pull(&mut self, stack: &mut PrivateStack<I::Item>) -> Result<bool, Box<dyn Any + Send>> {
        if self.done {
            return Ok(false);
        }
        // Stays set if `next` panics below.
        self.done = true;
        let n = catch_unwind(AssertUnwindSafe(|| stack.refill_first_on_top(&mut self.iter, SEED_CHUNK)))?;
        self.pulled += n as u64;
        self.done = n < SEED_CHUNK;
        Ok(n != 0)
    }

    fn at_most_left(&mut self, most: usize) -> Result<bool, Box<dyn Any + Send>> {
        if self.done {
            return Ok(true);
        }
        if self.hint_was_low {
            return Ok(false);
        }
        let iter = &mut self.iter;
        // Stays set if `size_hint` panics.
        self.done = true;
        let fits = catch_unwind(AssertUnwindSafe(|| iter.size_hint().1.is_some_and(|left| left <= most)))?;
        self.done = false;
        Ok(fits)
    }

    fn hand_over(&mut self, most: usize, push: &mut dyn FnMut(Vec<I::Item>)) -> Result<bool, Box<dyn Any + Send>> {
        if self.done {
            return Ok(true);
        }
        let (iter, pulled) = (&mut self.iter, &mut self.pulled);
        // Stays set if the iterator panics below.
        self.done = true;
        let exhausted = catch_unwind(AssertUnwindSafe(|| {
            let mut handed = 0;
            while handed < most {
                let want = BATCH_AT_MOST.min(most - handed);
                let chunk: Vec<_> = iter.by_ref().take(want).collect();
                let n = chunk.len();
                *pulled += n as u64;
                handed += n;
                if n > 0 {
                    push(chunk);
                }
                if n < want {
                    return true;
                }
            }
            // Exactly `most` so far: only the next call can say whether that was all.
            match iter.next() {
                None => true,
                Some(seed) => {
                    *pulled += 1;
                    push(vec![seed]);
                    false
                }
            }
        }))?;
        self.done = exhausted;
        self.hint_was_low = !exhausted;
        Ok(exhausted)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Hands over everything `seeds` gives for `most`, chunk by chunk.
    fn hand(seeds: &mut Seeds<impl Iterator<Item = u32>>, most: usize) -> (bool, Vec<u32>) {
        let mut got = Vec::new();
        let done = seeds.hand_over(most, &mut |chunk| got.extend(chunk)).unwrap();
        (done, got)
    }

    #[test]
    fn seeds_are_handed_over_in_order_and_never_more_than_asked() {
        let mut seeds = Seeds::new(0..10u32);
        assert!(seeds.at_most_left(10).unwrap());
        assert!(!seeds.at_most_left(9).unwrap());
        // Exactly as many as asked: the next call says that was all.
        let mut exact = Seeds::new(0..10u32);
        assert_eq!(hand(&mut exact, 10), (true, (0..10).collect()));
        assert_eq!(exact.pulled(), 10);
        assert!(hand(&mut exact, 10).0, "nothing left, nothing made");
        // Fewer than there are: at most `most` (and the one that showed more exist).
        let mut endless = Seeds::new(0u32..);
        let (done, got) = hand(&mut endless, 5);
        assert!(!done);
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    }

    /// An iterator whose size hint says fewer are left than it gives.
    struct LowHint(std::ops::Range<u32>);

    impl Iterator for LowHint {
        type Item = u32;
        fn next(&mut self) -> Option<u32> {
            self.0.next()
        }
        fn size_hint(&self) -> (usize, Option<usize>) {
            (0, Some(2))
        }
    }

    #[test]
    fn a_size_hint_found_low_is_not_trusted_again() {
        let mut seeds = Seeds::new(LowHint(0..100));
        assert!(seeds.at_most_left(4).unwrap(), "the hint says so");
        let (done, got) = hand(&mut seeds, 4);
        assert!(!done);
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert!(!seeds.at_most_left(4).unwrap(), "a low hint is not believed twice");
        // The rest still comes by the usual pulls.
        let mut stack = PrivateStack::new();
        assert!(seeds.pull(&mut stack).unwrap());
        assert_eq!(stack.pop(), Some(5));
    }
}
