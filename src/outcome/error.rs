//! What fallible and controlled runs return when they end early.

use std::any::Any;
use std::fmt;

/// Why a fallible or controlled run ended before finishing its work.
///
/// Only the *first* reason in time is reported: the first task to fail or panic, or
/// the cancel token or deadline if they fired before any task failed. "First" is the
/// order in which the run recorded them, which on a multi-core machine can differ by
/// a few nanoseconds from the order in which the tasks returned.
///
/// ```
/// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
/// let err = pool.try_for_each(&[1, 2, 0, 4], |&x| if x == 0 { Err("zero") } else { Ok(()) })
///     .unwrap_err();
/// assert_eq!(err.to_string(), "item 2 failed: zero");
/// assert!(matches!(err, fanout::RunError::Failed { error: "zero", index: Some(2) }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunError<E> {
    /// A task returned `Err(error)`. The failing thread started no new item; the
    /// others stopped at their next check (after at most 8 follow-on items, or the
    /// rest of a block of indices: 4-8 us of work, longer on a slow clock source, and
    /// never more than 4096 indices); items already running finished.
    Failed {
        /// The task's error.
        error: E,
        /// The failing item's index, for slice and index-range runs; `None` for
        /// follow-on runs, whose items have no index (put what identifies the item in
        /// the error itself).
        index: Option<usize>,
    },
    /// A task panicked. Fallible runs hand the panic back as this value instead of
    /// unwinding the caller.
    Panicked {
        /// The panic message (`"<non-string panic payload>"` when it was not a string).
        message: String,
        /// The panicking item's index, as in [`RunError::Failed`].
        index: Option<usize>,
    },
    /// The run's [`CancelToken`](crate::CancelToken) was cancelled.
    Cancelled {
        /// Items that had completed (indices, for slice and index-range runs).
        completed: u64,
    },
    /// The run's deadline passed.
    TimedOut {
        /// Items that had completed (indices, for slice and index-range runs).
        completed: u64,
    },
    /// [`Runner::limit`](crate::Runner::limit) or
    /// [`Stream::parallelism`](crate::Stream::parallelism) was given 0: a run (or a stage)
    /// with no item allowed in flight could never finish, so it is refused before it
    /// starts.
    ZeroLimit,
}

impl<E> RunError<E> {
    /// Maps the task error, keeping everything else.
    ///
    /// ```
    /// let e: fanout::RunError<u8> = fanout::RunError::Failed { error: 7, index: None };
    /// assert!(matches!(e.map_err(u32::from), fanout::RunError::Failed { error: 7u32, .. }));
    /// ```
    pub fn map_err<F>(self, f: impl FnOnce(E) -> F) -> RunError<F> {
        match self {
            RunError::Failed { error, index } => RunError::Failed { error: f(error), index },
            RunError::Panicked { message, index } => RunError::Panicked { message, index },
            RunError::Cancelled { completed } => RunError::Cancelled { completed },
            RunError::TimedOut { completed } => RunError::TimedOut { completed },
            RunError::ZeroLimit => RunError::ZeroLimit,
        }
    }

    /// Whether the run was cancelled or timed out (rather than failed by a task).
    pub fn is_cancelled(&self) -> bool {
        matches!(self, RunError::Cancelled { .. } | RunError::TimedOut { .. })
    }
}

fn write_item(f: &mut fmt::Formatter<'_>, index: Option<usize>) -> fmt::Result {
    match index {
        Some(i) => write!(f, "item {i}"),
        None => f.write_str("an item"),
    }
}

impl<E> RunError<E> {
    /// The same error with its item index moved up by `by` (from a position in the
    /// output to the index the caller gave).
    pub(crate) fn shift_index(self, by: usize) -> Self {
        match self {
            RunError::Failed { error, index } => RunError::Failed { error, index: index.map(|i| i + by) },
            RunError::Panicked { message, index } => RunError::Panicked { message, index: index.map(|i| i + by) },
            other => other,
        }
    }
}

impl<E: fmt::Display> fmt::Display for RunError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Failed { error, index } => {
                write_item(f, *index)?;
                write!(f, " failed: {error}")
            }
            RunError::Panicked { message, index } => {
                write_item(f, *index)?;
                write!(f, " panicked: {message}")
            }
            RunError::Cancelled { completed } => write!(f, "run cancelled after {completed} items"),
            RunError::TimedOut { completed } => write!(f, "run timed out after {completed} items"),
            RunError::ZeroLimit => f.write_str("a run's concurrency limit must be at least 1"),
        }
    }
}

/// An error for any task error that prints. The task's error is part of the message
/// rather than the `source`, so that a chain of causes shows it once, and a task error
/// that is only `Display` (a `&str`, a `String`) still makes an `Error`.
///
/// ```
/// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
/// let err: Box<dyn std::error::Error> =
///     pool.try_for_each(&[1, 0], |&x| if x == 0 { Err("zero") } else { Ok(()) }).unwrap_err().into();
/// assert_eq!(err.to_string(), "item 1 failed: zero");
/// assert!(err.source().is_none());
/// ```
impl<E: fmt::Debug + fmt::Display> std::error::Error for RunError<E> {}

/// The outcome of one item that did not produce a value, in the continue-on-error calls
/// ([`Runner::try_map_all`](crate::Runner::try_map_all)).
///
/// ```
/// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
/// let results = pool.try_map_all(&[4, 0, 2], |&x| if x == 0 { Err("zero") } else { Ok(8 / x) });
/// assert!(matches!(results[..], [Ok(2), Err(fanout::ItemError::Failed("zero")), Ok(4)]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ItemError<E> {
    /// The item's task returned this error.
    Failed(E),
    /// The item's task panicked with this message.
    Panicked(String),
    /// The item never ran: the run was cancelled or timed out first.
    NotRun,
}

impl<E: fmt::Display> fmt::Display for ItemError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemError::Failed(e) => write!(f, "failed: {e}"),
            ItemError::Panicked(m) => write!(f, "panicked: {m}"),
            ItemError::NotRun => f.write_str("not run: the run was cancelled or timed out"),
        }
    }
}

/// As for [`RunError`]: the task's error is part of the message, not the `source`.
impl<E: fmt::Debug + fmt::Display> std::error::Error for ItemError<E> {}

/// The text of a panic payload (what `panic!` was given, if it was a string).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

/// Every alternative of a [`Runner::first_ok`](crate::Runner::first_ok) race failed:
/// their errors, in index order. It displays them all, so the race's `RunError` can
/// be printed or passed on with `?` like any other error.
///
/// ```
/// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
/// let err = pool.runner().first_ok(2, |i, _| Err::<(), _>(format!("replica {i} down"))).unwrap_err();
/// assert_eq!(err.to_string(), "an item failed: 2 alternatives failed: #0: replica 0 down; #1: replica 1 down");
/// if let fanout::RunError::Failed { error, .. } = err {
///     assert_eq!(error.errors[1], (1, "replica 1 down".to_string()));
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllFailed<E> {
    /// `(index, error)` of every alternative that ran and failed, in index order.
    pub errors: Vec<(usize, E)>,
}

impl<E: fmt::Display> fmt::Display for AllFailed<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Errors spelled out; the rest are counted.
        const SHOWN: usize = 8;
        write!(f, "{} alternatives failed", self.errors.len())?;
        for (n, (index, error)) in self.errors.iter().take(SHOWN).enumerate() {
            let sep = if n == 0 { ": " } else { "; " };
            write!(f, "{sep}#{index}: {error}")?;
        }
        if self.errors.len() > SHOWN {
            write!(f, "; and {} more", self.errors.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// As for [`RunError`]: the alternatives' errors are in the message (the first 8 of
/// them, then a count), not the `source`.
impl<E: fmt::Debug + fmt::Display> std::error::Error for AllFailed<E> {}
