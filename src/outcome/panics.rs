//! Panics a run must not let escape: values whose `Drop` may panic are dropped quietly,
//! and the accumulators of a finished run are combined under `catch_unwind`.

use super::error::{RunError, panic_message};
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

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
