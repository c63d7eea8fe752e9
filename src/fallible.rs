//! The work of fallible runs: the first failure (error or panic) of a run, the walks
//! that record it with the item's index, and the turning of a run's outcome into a
//! `Result`.

use crate::error::{RunError, panic_message};
use crate::range::walk;
use crate::run::{Ctx, Outcome, Work};
use crate::stats::RunStats;
use crate::stop::StopReason;
use crate::sync::{Mutex, lock};
use std::any::Any;
use std::marker::PhantomData;
use std::ops::{ControlFlow, Range};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// What went wrong in a task.
pub(crate) enum Fault<E> {
    Error(E),
    Panic(Box<dyn Any + Send>),
}

/// A run's first failure and the index of the item that caused it. It is kept only if
/// it was the run's first reason to stop, so it always matches what the run reports.
pub(crate) struct Failure<E>(Mutex<Option<(Fault<E>, Option<usize>)>>);

impl<E> Failure<E> {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(None))
    }

    /// Stops the run because of `fault` at `index`; keeps it if it is the first stop.
    pub(crate) fn record<T>(&self, ctx: &mut Ctx<'_, T>, fault: Fault<E>, index: Option<usize>) {
        let reason = match fault {
            Fault::Error(_) => StopReason::Error,
            Fault::Panic(_) => StopReason::Panic,
        };
        if ctx.stop_for(reason) {
            *lock(&self.0) = Some((fault, index));
        } else {
            // Not the first: drop it here, where a panicking `Drop` cannot escape.
            drop_quietly(fault);
        }
    }

    fn take(&self) -> Option<(Fault<E>, Option<usize>)> {
        lock(&self.0).take()
    }
}

/// Drops `value`, swallowing a panic from its `Drop` (a task's error or panic payload
/// that nobody will read must not unwind through the engine or the caller).
pub(crate) fn drop_quietly<T>(value: T) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
        // That panic's payload may panic when dropped too, and so on: leak it (the hook
        // has printed its message) rather than loop or let it unwind from here.
        std::mem::forget(payload);
    }
}

/// Drops the values one at a time, each like [`drop_quietly`]: a panicking `Drop` of one
/// stops neither the others' drops nor (as two in one `Vec` would) aborts the process.
pub(crate) fn drop_each_quietly<T>(values: Vec<T>) {
    values.into_iter().for_each(drop_quietly);
}

/// Combines the accumulators of a finished run on the caller: `identity()` when there is
/// none, else `reduce` over them. A panic in either comes back as its payload instead of
/// unwinding, with the accumulators not yet reduced dropped one at a time quietly (so
/// that a panicking `Drop` among them can neither replace it nor abort the process).
pub(crate) fn reduce_catching<A>(
    accs: impl IntoIterator<Item = A>,
    identity: impl FnOnce() -> A,
    reduce: impl Fn(A, A) -> A,
) -> Result<A, Box<dyn Any + Send>> {
    let mut accs = accs.into_iter();
    let Some(mut total) = accs.next() else {
        return catch_unwind(AssertUnwindSafe(identity));
    };
    // Not a `for` loop: the rest of `accs` is dropped inside the loop on a panic.
    while let Some(acc) = accs.next() {
        match catch_unwind(AssertUnwindSafe(|| reduce(total, acc))) {
            Ok(next) => total = next,
            Err(payload) => {
                accs.for_each(drop_quietly);
                return Err(payload);
            }
        }
    }
    Ok(total)
}

/// [`reduce_catching`] for the infallible calls: a panic is resumed on the caller, with
/// its original payload.
pub(crate) fn reduce_or_resume<A>(
    accs: impl IntoIterator<Item = A>,
    identity: impl FnOnce() -> A,
    reduce: impl Fn(A, A) -> A,
) -> A {
    reduce_catching(accs, identity, reduce).unwrap_or_else(|payload| resume_unwind(payload))
}

/// [`reduce_catching`] for the fallible calls: a panic becomes [`RunError::Panicked`]
/// (without an index: it belongs to no item).
pub(crate) fn reduce_or_error<A, E>(
    accs: impl IntoIterator<Item = A>,
    identity: impl FnOnce() -> A,
    reduce: impl Fn(A, A) -> A,
) -> Result<A, RunError<E>> {
    reduce_catching(accs, identity, reduce).map_err(|payload| {
        let message = panic_message(&*payload);
        drop_quietly(payload);
        RunError::Panicked { message, index: None }
    })
}

/// Walks `range` like [`walk`], with a body that may fail: an `Err` or a panic stops
/// the run and is recorded in `failure` with the item's index. Returns the state (none
/// after a failure) and the number of indices that completed.
///
/// Each item runs inside its own `catch_unwind`: with the body inlined that costs
/// nothing on the happy path (no store per item), and the panicking index is known.
#[inline(always)]
pub(crate) fn try_walk<S, E>(
    range: Range<usize>,
    ctx: &mut Ctx<'_, Range<usize>>,
    state: S,
    failure: &Failure<E>,
    mut body: impl FnMut(S, usize) -> Result<S, E>,
) -> (Option<S>, u64) {
    let start = range.start;
    let mut fault = None;
    let (state, end) = walk(range, ctx, state, |s, i| match catch_unwind(AssertUnwindSafe(|| body(s, i))) {
        Ok(Ok(next)) => ControlFlow::Continue(next),
        Ok(Err(e)) => {
            fault = Some((Fault::Error(e), i));
            ControlFlow::Break(())
        }
        Err(payload) => {
            fault = Some((Fault::Panic(payload), i));
            ControlFlow::Break(())
        }
    });
    match fault {
        Some((fault, at)) => {
            failure.record(ctx, fault, Some(at));
            (None, (at - start) as u64)
        }
        None => (state, (end - start) as u64),
    }
}

/// `try_fold` over indices: one accumulator per participant, and the count of indices
/// it completed (for the `completed` count of a cancelled run).
pub(crate) struct TryFold<A, E, Id, F> {
    pub(crate) identity: Id,
    pub(crate) fold: F,
    pub(crate) failure: Failure<E>,
    pub(crate) _acc: PhantomData<fn() -> A>,
}

impl<A, E, Id, F> Work for TryFold<A, E, Id, F>
where
    A: Send,
    E: Send,
    Id: Fn() -> A + Sync,
    F: Fn(A, usize) -> Result<A, E> + Sync,
{
    type Item = Range<usize>;
    type Acc = (Option<A>, u64);
    fn new_acc(&self) -> (Option<A>, u64) {
        (None, 0)
    }
    #[inline]
    fn execute(&self, item: Range<usize>, ctx: &mut Ctx<'_, Range<usize>>, acc: &mut (Option<A>, u64)) {
        let start = acc.0.take().unwrap_or_else(&self.identity);
        let (folded, completed) = try_walk(item, ctx, start, &self.failure, &self.fold);
        *acc = (folded, acc.1 + completed);
    }
}

/// A fallible follow-on run with a per-thread accumulator (`()` for `try_run`). Panics
/// are caught by the engine (follow-on items have no index to report).
pub(crate) struct TryRunFold<T, E, Id, F> {
    pub(crate) identity: Id,
    pub(crate) f: F,
    pub(crate) failure: Failure<E>,
    pub(crate) _item: PhantomData<fn(T)>,
}

impl<T, A, E, Id, F> Work for TryRunFold<T, E, Id, F>
where
    T: Send,
    A: Send,
    E: Send,
    Id: Fn() -> A + Sync,
    F: Fn(&mut A, T, &mut Ctx<'_, T>) -> Result<(), E> + Sync,
{
    type Item = T;
    type Acc = A;
    const FOLLOW_ON: bool = true;
    fn new_acc(&self) -> A {
        (self.identity)()
    }
    #[inline(always)]
    fn execute(&self, item: T, ctx: &mut Ctx<'_, T>, acc: &mut A) {
        if let Err(e) = (self.f)(acc, item, ctx) {
            self.failure.record(ctx, Fault::Error(e), None);
        }
    }
}

/// Turns a run's outcome into its result: the accumulators and statistics if it ran to
/// the end, or why it stopped. `completed` counts what finished (items or indices).
/// With `resume_panics` (the infallible calls), a task's panic is resumed on this thread.
pub(crate) fn into_result<A, E>(
    outcome: Outcome<A>,
    failure: &Failure<E>,
    resume_panics: bool,
    completed: impl FnOnce(&[A], &RunStats) -> u64,
) -> Result<(Vec<A>, RunStats), RunError<E>> {
    let Outcome { accs, stats, panic, stopped } = outcome;
    let Some(reason) = stopped else {
        return Ok((accs, stats));
    };
    if resume_panics && reason == StopReason::Panic {
        drop_each_quietly(accs);
        match failure.take() {
            Some((Fault::Panic(payload), _)) => resume_unwind(payload),
            _ => resume_unwind(panic.unwrap_or_else(|| Box::new("<unknown panic>"))),
        }
    }
    let completed = completed(&accs, &stats);
    // Dropped here, after the run: accumulators of a stopped run are not returned.
    drop_each_quietly(accs);
    let error = match reason {
        StopReason::Cancelled | StopReason::TimedOut => cancelled_error(reason, completed),
        StopReason::Error | StopReason::Panic => match failure.take() {
            Some((Fault::Error(error), index)) => RunError::Failed { error, index },
            Some((Fault::Panic(payload), index)) => {
                let message = panic_message(&*payload);
                drop_quietly(payload);
                RunError::Panicked { message, index }
            }
            // A panic the engine caught (follow-on runs): no index.
            None => RunError::Panicked {
                message: panic.as_deref().map_or_else(|| "<unknown panic>".to_owned(), panic_message),
                index: None,
            },
        },
    };
    drop_quietly(panic);
    Err(error)
}

/// The error of a run stopped by its token or deadline after `completed` items.
pub(crate) fn cancelled_error<E>(reason: StopReason, completed: u64) -> RunError<E> {
    match reason {
        StopReason::TimedOut => RunError::TimedOut { completed },
        _ => RunError::Cancelled { completed },
    }
}
