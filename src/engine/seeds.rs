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
}

impl<I: Iterator> Seeds<I> {
    pub(crate) fn new(iter: I) -> Self {
        Self { iter, pulled: 0, done: false }
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
            false
        }))?;
        self.done = exhausted;
        Ok(exhausted)
    }
}
