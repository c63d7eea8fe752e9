//! Cancellation tokens: a shared flag that runs look at between items, and that long
//! tasks can wait on.

use crate::sync::{Arc, AtomicBool, Condvar, Mutex, Ordering, lock};
use std::time::{Duration, Instant};

/// A cheap, clonable cancellation flag, shared by every clone.
///
/// Hand it to a run with [`Runner::cancel_token`](crate::Runner::cancel_token): once
/// [`cancel`](CancelToken::cancel) is called, no new item of the run starts, and the run
/// returns [`RunError::Cancelled`](crate::RunError::Cancelled) as soon as the items
/// already running have finished. Runs look at the token between batches of items (one
/// relaxed load every few items), so a token costs nothing measurable; a task that
/// blocks for long should watch the token itself, for instance by waiting with
/// [`wait_timeout`](CancelToken::wait_timeout) instead of sleeping.
///
/// ```
/// use std::time::Duration;
///
/// let token = fanout::CancelToken::new();
/// let remote = token.clone();
/// let waiter = std::thread::spawn(move || remote.wait_timeout(Duration::from_secs(60)));
/// token.cancel();
/// assert!(waiter.join().unwrap(), "woken by the cancel, long before the minute is up");
/// assert!(token.is_cancelled());
/// ```
#[derive(Clone)]
pub struct CancelToken(Arc<Inner>);

struct Inner {
    cancelled: AtomicBool,
    /// Guards nothing but the wait/notify hand-shake of `wait_timeout`.
    lock: Mutex<()>,
    wake: Condvar,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self(Arc::new(Inner { cancelled: AtomicBool::new(false), lock: Mutex::new(()), wake: Condvar::new() }))
    }

    /// Cancels the token (and every clone). Idempotent; wakes every thread in
    /// [`wait_timeout`](CancelToken::wait_timeout).
    pub fn cancel(&self) {
        // Release: whatever the canceller did before is visible to a thread that sees
        // the flag with Acquire (`wait_timeout`); runs only use the flag as a hint.
        self.0.cancelled.store(true, Ordering::Release);
        // Taking the lock orders the store before any waiter's check-then-wait, so a
        // waiter either sees the flag or is already waiting when we notify.
        drop(lock(&self.0.lock));
        self.0.wake.notify_all();
    }

    /// Whether [`cancel`](CancelToken::cancel) has been called on this token or a clone.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        // Acquire: pairs with the Release store in `cancel`.
        self.0.cancelled.load(Ordering::Acquire)
    }

    /// The flag itself, for the run engine's between-items checks.
    #[inline(always)]
    pub(crate) fn flag(&self) -> &AtomicBool {
        &self.0.cancelled
    }

    /// Blocks for up to `timeout`, returning early when the token is cancelled.
    /// Returns whether the token is cancelled. Use it in place of a sleep in tasks that
    /// simulate or wait for slow operations, so that cancelling the run also cuts the
    /// wait short.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let token = fanout::CancelToken::new();
    /// assert!(!token.wait_timeout(Duration::from_millis(1)), "not cancelled: waited it out");
    /// token.cancel();
    /// assert!(token.wait_timeout(Duration::from_secs(60)), "cancelled: returns at once");
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let end = Instant::now().checked_add(timeout);
        let mut guard = lock(&self.0.lock);
        loop {
            if self.is_cancelled() {
                return true;
            }
            let now = Instant::now();
            let left = match end {
                Some(end) if end > now => end - now,
                Some(_) => return false,
                // A timeout too large to represent: wait in long steps.
                None => Duration::from_secs(3600),
            };
            guard = wait_timeout(&self.0.wake, guard, left);
        }
    }
}

#[cfg(not(loom))]
fn wait_timeout<'a>(
    cv: &Condvar,
    guard: crate::sync::MutexGuard<'a, ()>,
    d: Duration,
) -> crate::sync::MutexGuard<'a, ()> {
    cv.wait_timeout(guard, d).map_or_else(|e| e.into_inner().0, |(g, _)| g)
}

#[cfg(loom)]
fn wait_timeout<'a>(
    cv: &Condvar,
    guard: crate::sync::MutexGuard<'a, ()>,
    d: Duration,
) -> crate::sync::MutexGuard<'a, ()> {
    cv.wait_timeout(guard, d).unwrap().0
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken").field("cancelled", &self.is_cancelled()).finish()
    }
}
