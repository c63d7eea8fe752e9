//! Cancellation tokens: a shared flag that runs look at between items, and that long
//! tasks can wait on.

use crate::sync::{Arc, AtomicBool, Condvar, Mutex, Ordering, arc_into_inner, get_mut, lock, wait_timeout};
use std::time::{Duration, Instant};

/// A cheap, clonable cancellation flag, shared by every clone.
///
/// Hand it to a run with [`Runner::cancel_token`](crate::Runner::cancel_token): once
/// [`cancel`](CancelToken::cancel) is called, no new item of the run starts, and the run
/// returns [`RunError::Cancelled`](crate::RunError::Cancelled) as soon as the items
/// already running have finished. Runs look at the token between batches of items (one
/// relaxed load at most 8 follow-on items apart, after every item when items take over
/// a microsecond, or every block of a few microseconds of a range), so a token costs
/// nothing measurable; a task that blocks for long should watch the token itself, for
/// instance by waiting with [`wait_timeout`](CancelToken::wait_timeout) instead of
/// sleeping.
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
    /// Past this instant the token counts as cancelled.
    deadline: Option<Instant>,
    /// Tokens to cancel with this one ([`CancelToken::child`]). The lock also serves
    /// the wait/notify hand-shake of `wait_timeout`. Chains of children can be
    /// arbitrarily deep, so nothing walks them by recursion (`cancel`, `Drop`).
    children: Mutex<Vec<CancelToken>>,
    wake: Condvar,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::until(None)
    }

    /// A token that cancels itself at `deadline` (like Go's `context.WithDeadline`):
    /// [`is_cancelled`](CancelToken::is_cancelled) turns true then and
    /// [`wait_timeout`](CancelToken::wait_timeout) returns then. A run watching it stops
    /// with [`RunError::TimedOut`](crate::RunError::TimedOut).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let token = fanout::CancelToken::with_deadline(Instant::now() + Duration::from_millis(20));
    /// assert!(!token.is_cancelled());
    /// assert!(token.wait_timeout(Duration::from_secs(60)), "the deadline ends the wait");
    /// assert!(token.is_cancelled());
    /// ```
    pub fn with_deadline(deadline: Instant) -> Self {
        Self::until(Some(deadline))
    }

    fn until(deadline: Option<Instant>) -> Self {
        Self(Arc::new(Inner {
            cancelled: AtomicBool::new(false),
            deadline,
            children: Mutex::new(Vec::new()),
            wake: Condvar::new(),
        }))
    }

    /// A new token that is cancelled when this one is (but not the other way round),
    /// with this one's deadline: like Go's `context.WithCancel(parent)`. Use it to stop
    /// one part of the work on its own while the whole still obeys the parent.
    ///
    /// ```
    /// let parent = fanout::CancelToken::new();
    /// let child = parent.child();
    /// child.cancel();
    /// assert!(!parent.is_cancelled());
    /// let other = parent.child();
    /// parent.cancel();
    /// assert!(other.is_cancelled());
    /// ```
    pub fn child(&self) -> Self {
        self.child_until(None)
    }

    /// A child (see [`CancelToken::child`]) that also cancels itself at `deadline`.
    pub(crate) fn child_until(&self, deadline: Option<Instant>) -> Self {
        let child = Self::until(earlier(self.0.deadline, deadline));
        // Mutant: the flag read before the lock, which a `cancel` can pass between
        // this read and the push below (the child is then never cancelled).
        #[cfg(all(loom, feature = "mutant_cancel_unlocked"))]
        let cancelled = self.0.cancelled.load(Ordering::Relaxed);
        let mut children = lock(&self.0.children);
        tidy(&mut children);
        // Under the lock: either `cancel` already stored the flag (we see it here) or
        // it has yet to take the lock (and will find the child in the list).
        // Relaxed: the lock orders it.
        #[cfg(not(all(loom, feature = "mutant_cancel_unlocked")))]
        let cancelled = self.0.cancelled.load(Ordering::Relaxed);
        if cancelled {
            drop(children);
            child.cancel();
        } else {
            children.push(child.clone());
        }
        child
    }

    /// Cancels the token, its clones and its children. Idempotent; wakes every thread
    /// in [`wait_timeout`](CancelToken::wait_timeout).
    pub fn cancel(&self) {
        // A work list rather than recursion, for deep chains of children. A child is
        // dropped here with an empty list, so its drop is shallow.
        let mut pending = self.cancel_alone();
        while let Some(child) = pending.pop() {
            pending.append(&mut child.cancel_alone());
        }
    }

    /// Cancels this token but not its children, which it hands back.
    fn cancel_alone(&self) -> Vec<CancelToken> {
        // Release: whatever the canceller did before is visible to a thread that sees
        // the flag with Acquire (`is_cancelled`); runs only use the flag as a hint.
        self.0.cancelled.store(true, Ordering::Release);
        // Taking the lock orders the store before any waiter's check-then-wait, so a
        // waiter either sees the flag or is already waiting when we notify; and before
        // `child_until`'s look at the flag, so a child made meanwhile is either in the
        // list we take or sees the flag.
        let children = std::mem::take(&mut *lock(&self.0.children));
        self.0.wake.notify_all();
        children
    }

    /// Whether [`cancel`](CancelToken::cancel) has been called on this token, a clone or
    /// a parent, or the token's deadline has passed.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        // Acquire: pairs with the Release store in `cancel`.
        self.0.cancelled.load(Ordering::Acquire) || self.0.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The token's deadline, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.0.deadline
    }

    /// The flag itself, for the run engine's between-items checks (the engine watches
    /// the deadline separately).
    #[inline(always)]
    pub(crate) fn flag(&self) -> &AtomicBool {
        &self.0.cancelled
    }

    /// Blocks for up to `timeout`, returning early when the token is cancelled (or its
    /// deadline passes). Returns whether the token is cancelled. Use it in place of a
    /// sleep in tasks that simulate or wait for slow operations, so that cancelling the
    /// run also cuts the wait short.
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
        let end = earlier(Instant::now().checked_add(timeout), self.0.deadline);
        let mut guard = lock(&self.0.children);
        loop {
            if self.is_cancelled() {
                return true;
            }
            let now = Instant::now();
            let left = match end {
                Some(end) if end > now => end - now,
                Some(_) => return self.is_cancelled(),
                // A timeout too large to represent: wait in long steps.
                None => Duration::from_secs(3600),
            };
            guard = wait_timeout(&self.0.wake, guard, left);
        }
    }
}

/// Keeps a child list short, under its lock: cancelled children need no more
/// cancelling, and a child only this list holds can be neither cancelled nor observed
/// by itself, so it is replaced by its own children (which someone may still hold).
fn tidy(children: &mut Vec<CancelToken>) {
    let mut i = 0;
    while i < children.len() {
        // Relaxed: a stale "not cancelled" only keeps an entry (or its children) longer.
        if children[i].flag().load(Ordering::Relaxed) {
            children.swap_remove(i);
        } else if let Some(unheld) = Arc::get_mut(&mut children[i].0) {
            // Only this list reaches the child, and we hold its lock: nobody can clone
            // it meanwhile. Its children are looked at in turn, later in this loop.
            let mut adopted = std::mem::take(get_mut(&mut unheld.children));
            children.swap_remove(i);
            children.append(&mut adopted);
        } else {
            i += 1;
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Plain field drops would recurse once per level of a chain of children. Take
        // the list apart instead: a child whose last handle this is hands its own
        // children to the work list, then drops with an empty one.
        let mut pending = std::mem::take(get_mut(&mut self.children));
        while let Some(child) = pending.pop() {
            if let Some(mut last) = arc_into_inner(child.0) {
                pending.append(get_mut(&mut last.children));
            }
        }
    }
}

/// The earlier of two optional instants (`None` is "never").
pub(crate) fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
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
