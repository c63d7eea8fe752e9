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
#[repr(transparent)]
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

/// The CPU this thread is running on, where the OS tells it cheaply (Linux: a vDSO
/// call, no system call); `None` elsewhere, under Miri and under loom.
#[inline]
pub(crate) fn current_cpu() -> Option<usize> {
    #[cfg(all(target_os = "linux", not(loom), not(miri)))]
    {
        // SAFETY: `sched_getcpu` takes no arguments and touches no memory of ours.
        let cpu = unsafe { libc::sched_getcpu() };
        usize::try_from(cpu).ok()
    }
    #[cfg(not(all(target_os = "linux", not(loom), not(miri))))]
    {
        None
    }
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

/// Mutable access to `m`'s contents without locking (we own it), ignoring poisoning
/// as [`lock`] does.
#[inline]
pub(crate) fn get_mut<T>(m: &mut Mutex<T>) -> &mut T {
    #[cfg(not(loom))]
    {
        m.get_mut().unwrap_or_else(|e| e.into_inner())
    }
    #[cfg(loom)]
    {
        m.get_mut().unwrap()
    }
}

/// `Arc::into_inner`: the value if `arc` is its last handle, else just drops `arc`.
/// loom only has `try_unwrap`, which differs when another handle is dropped at the same
/// time: then the value may be dropped by that plain `Arc` drop instead of returned.
#[inline]
pub(crate) fn arc_into_inner<T>(arc: Arc<T>) -> Option<T> {
    #[cfg(not(loom))]
    {
        Arc::into_inner(arc)
    }
    #[cfg(loom)]
    {
        Arc::try_unwrap(arc).ok()
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

    /// Like `park`, but returns by `deadline` at the latest (consuming the token if
    /// one came). Under loom, a plain `park`: no model waits on a clock.
    pub(crate) fn park_until(&self, deadline: std::time::Instant) {
        #[cfg(loom)]
        {
            let _ = deadline;
            self.park();
        }
        #[cfg(not(loom))]
        {
            let mut token = lock(&self.token);
            while !*token {
                let now = std::time::Instant::now();
                if now >= deadline {
                    return;
                }
                token = self.cond.wait_timeout(token, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
            }
            *token = false;
        }
    }

    /// Makes a token available, waking the parked thread if there is one.
    pub(crate) fn unpark(&self) {
        *lock(&self.token) = true;
        self.cond.notify_one();
    }
}
