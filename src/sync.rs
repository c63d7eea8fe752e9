//! The one door through which the concurrent core reaches atomics, cells, locks and
//! threads. Under `cfg(loom)` every item here is loom's model-checked twin, so the
//! deque, the termination protocol and the sleep/wake protocol can be explored by
//! `loom` without a line of them changing.
//!
//! Only the protocol code (deque, run engine, sleep, pool) goes through this module;
//! user-facing plumbing that never races (builders, errors) uses `std` directly.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};

/// A cell whose every access is visible to loom's race detector under `cfg(loom)`.
///
/// The API is loom's (`with`/`with_mut` taking raw pointers), so the std build and
/// the model agree on where each access starts and ends.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a read pointer to the contents.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a write pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// Tells the scheduler (or loom) that this thread is waiting on another one.
///
/// Under loom a spin loop must yield, or the model would explore it forever.
#[inline(always)]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Yields the processor to another thread.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// Locks `m`, ignoring poisoning: the core never holds a lock while running user code,
/// so a poisoned lock only means another thread died between two of our own lines,
/// and the data it guards is still consistent.
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(not(loom))]
    {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
    #[cfg(loom)]
    {
        m.lock().unwrap()
    }
}

/// A one-token parking spot (like `std::thread::park`, but owned, so a wake-up
/// delivered before the sleeper parks is kept rather than lost, and loom can see it).
#[derive(Debug, Default)]
pub(crate) struct Parker {
    token: Mutex<bool>,
    cond: Condvar,
}

impl Parker {
    pub(crate) fn new() -> Self {
        Self { token: Mutex::new(false), cond: Condvar::new() }
    }

    /// Blocks until a token is available, then consumes it.
    pub(crate) fn park(&self) {
        let mut token = lock(&self.token);
        while !*token {
            #[cfg(not(loom))]
            {
                token = self.cond.wait(token).unwrap_or_else(|e| e.into_inner());
            }
            #[cfg(loom)]
            {
                token = self.cond.wait(token).unwrap();
            }
        }
        *token = false;
    }

    /// Makes a token available, waking the parked thread if there is one.
    pub(crate) fn unpark(&self) {
        *lock(&self.token) = true;
        self.cond.notify_one();
    }
}
