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

    /// Gives every seed not pulled yet to `push`, in order, in chunks of at most
    /// `BATCH_AT_MOST`, if the iterator says at most `most` are left; returns whether
    /// it did (`Ok(true)` also when none were left), the payload if the iterator
    /// panicked (the seeds of the chunk being made are dropped then, and the iterator
    /// is not asked again).
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

    fn hand_over(&mut self, most: usize, push: &mut dyn FnMut(Vec<I::Item>)) -> Result<bool, Box<dyn Any + Send>> {
        if self.done {
            return Ok(true);
        }
        let (iter, pulled) = (&mut self.iter, &mut self.pulled);
        // `done` stays set if the iterator panics below.
        self.done = true;
        let handed = catch_unwind(AssertUnwindSafe(|| {
            if iter.size_hint().1.is_none_or(|left| left > most) {
                return false;
            }
            loop {
                let chunk: Vec<_> = iter.by_ref().take(BATCH_AT_MOST).collect();
                let n = chunk.len();
                *pulled += n as u64;
                if n > 0 {
                    push(chunk);
                }
                if n < BATCH_AT_MOST {
                    return true;
                }
            }
        }))?;
        self.done = handed;
        Ok(handed)
    }
}
