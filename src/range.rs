//! Index-range fan-outs: `for_each`, `map` and `fold` over `0..n`, with lazy splitting.
//!
//! A range run starts as one item, the whole range, on the caller. Whoever executes a
//! range walks it in small blocks; between blocks, if some thread is idle and our
//! previous split has been taken, it hands the upper half of what is left to its deque
//! and wakes a sleeper. Nobody splits while everyone is busy, and skewed item costs are
//! balanced by whoever runs dry asking again; there is no grain-size knob.

use crate::fallible::{Failure, try_walk};
use crate::run::{Ctx, Work};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::{ControlFlow, Range};

/// Most indices executed between two looks at the demand signal: enough that the look
/// (one relaxed load) is noise for 1 ns items. Blocks start at one index and double up
/// to this, so a range of slow items (say, blocking calls) offers its first split after
/// one item rather than after sixteen.
const MAX_BLOCK: usize = 16;

/// Walks `range`, splitting off halves on demand; returns the state and the end of the
/// part this call executed (`range.start..end`). A body that breaks ends the walk at
/// once, without a state (a failed fold has consumed it); `end` is then the index after
/// the one that broke.
#[inline(always)]
pub(crate) fn walk<S>(
    range: Range<usize>,
    ctx: &mut Ctx<'_, Range<usize>>,
    mut state: S,
    mut body: impl FnMut(S, usize) -> ControlFlow<(), S>,
) -> (Option<S>, usize) {
    let (mut i, mut end) = (range.start, range.end);
    let mut block = 1;
    while i < end {
        let stop = end.min(i + block);
        block = (block * 2).min(MAX_BLOCK);
        let block_start = i;
        while i < stop {
            state = match body(state, i) {
                ControlFlow::Continue(next) => next,
                ControlFlow::Break(()) => {
                    ctx.report_completed(i - block_start);
                    return (None, i + 1);
                }
            };
            i += 1;
        }
        ctx.report_completed(i - block_start);
        if end - i >= 2 && ctx.should_split() {
            let mid = i + (end - i) / 2;
            ctx.share(mid..end);
            end = mid;
        } else if i < end && ctx.should_step_back() {
            ctx.share(i..end);
            end = i;
        }
        if ctx.poll_stop() {
            break;
        }
    }
    (Some(state), i)
}

/// `for_each` over indices.
pub(crate) struct ForEach<F>(pub(crate) F);

impl<F: Fn(usize) + Sync> Work for ForEach<F> {
    type Item = Range<usize>;
    type Acc = ();
    fn new_acc(&self) {}
    #[inline]
    fn execute(&self, item: Range<usize>, ctx: &mut Ctx<'_, Range<usize>>, _acc: &mut ()) {
        walk(item, ctx, (), |(), i| {
            (self.0)(i);
            ControlFlow::Continue(())
        });
    }
}

/// `fold` over indices: one accumulator per participant.
pub(crate) struct Fold<A, Id, F> {
    pub(crate) identity: Id,
    pub(crate) fold: F,
    pub(crate) _acc: PhantomData<fn() -> A>,
}

impl<A, Id, F> Work for Fold<A, Id, F>
where
    A: Send,
    Id: Fn() -> A + Sync,
    F: Fn(A, usize) -> A + Sync,
{
    type Item = Range<usize>;
    type Acc = Option<A>;
    fn new_acc(&self) -> Option<A> {
        None
    }
    #[inline]
    fn execute(&self, item: Range<usize>, ctx: &mut Ctx<'_, Range<usize>>, acc: &mut Option<A>) {
        let start = acc.take().unwrap_or_else(&self.identity);
        let (folded, _) = walk(item, ctx, start, |a, i| ControlFlow::Continue((self.fold)(a, i)));
        *acc = folded;
    }
}

/// The output buffer of a `map`, written in place by index.
pub(crate) struct Output<R>(pub(crate) *mut MaybeUninit<R>);

// SAFETY: each index is written by exactly one participant (ranges are disjoint), and
// the buffer is read only after the run has quiesced; `R: Send` because results are
// created on workers and handed to the caller.
unsafe impl<R: Send> Sync for Output<R> {}

/// `map` over indices, writing `f(i)` to `out[i]` when it is `Ok` (infallible maps use
/// an uninhabited `E`). Each participant records the sub-ranges it wrote, also when `f`
/// fails or panics, so that a stopped run can drop exactly what was written.
pub(crate) struct Map<R, E, F> {
    pub(crate) f: F,
    pub(crate) out: Output<R>,
    pub(crate) failure: Failure<E>,
}

impl<R: Send, E: Send, F: Fn(usize) -> Result<R, E> + Sync> Work for Map<R, E, F> {
    type Item = Range<usize>;
    type Acc = Vec<Range<usize>>;
    fn new_acc(&self) -> Vec<Range<usize>> {
        Vec::new()
    }
    #[inline]
    fn execute(&self, item: Range<usize>, ctx: &mut Ctx<'_, Range<usize>>, done: &mut Vec<Range<usize>>) {
        let out = self.out.0;
        // Records what was written when the walk ends, whether it ran out, failed or
        // caught a panic.
        let mut written = Written { done, start: item.start, end: item.start };
        try_walk(item, ctx, (), &self.failure, |(), i| {
            let value = (self.f)(i)?;
            // SAFETY: `i` is below the buffer's length (the run covers `0..len`) and is
            // visited exactly once, by this call.
            unsafe { (*out.add(i)).write(value) };
            written.end = i + 1;
            Ok(())
        });
    }
}

/// Pushes `start..end` (the indices written so far) to the completed list when dropped,
/// on return or on unwind.
struct Written<'a> {
    done: &'a mut Vec<Range<usize>>,
    start: usize,
    end: usize,
}

impl Drop for Written<'_> {
    fn drop(&mut self) {
        if self.end > self.start {
            self.done.push(self.start..self.end);
        }
    }
}
