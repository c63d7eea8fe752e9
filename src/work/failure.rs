//! A run's first failure (error or panic) with the index of its item, and the turning
//! of a run's outcome into a `Result`.

use crate::engine::ctx::Ctx;
use crate::engine::run::Outcome;
use crate::engine::stop::StopReason;
use crate::outcome::error::{RunError, panic_message};
use crate::outcome::panics::{drop_each_quietly, drop_quietly};
use crate::stats::RunStats;
use crate::sync::{Mutex, lock};
use std::any::Any;
use std::panic::resume_unwind;

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
