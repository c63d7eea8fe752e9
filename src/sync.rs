//! The one door through which the concurrent core reaches atomics, cells, locks and
//! threads. Under `cfg(loom)` every item here is loom's model-checked twin, so the
//! deque, the termination protocol and the sleep/wake protocol can be explored by
//! `loom` without a line of them changing.
//!
//! Only the protocol code (deque, run engine, sleep, pool) goes through this module;
//! user-facing plumbing that never races (builders, errors) uses `std` directly.

use std::time::Duration;

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

/// Locks `m`, ignoring poisoning. The one lock held around user code, a stream's
/// source (`stream::window`), is held across a call made inside `catch_unwind`, so a
/// panic there poisons nothing; every other lock guards only the core's own lines, so a
/// poisoned lock means another thread died between two of them, and the data it guards
/// is still consistent.
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

/// Waits on `cv`, giving up and retaking `guard`'s lock, and ignores poisoning as
/// [`lock`] does. The caller re-checks its condition: wake-ups may be spurious.
#[inline]
pub(crate) fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    #[cfg(not(loom))]
    {
        cv.wait(guard).unwrap_or_else(|e| e.into_inner())
    }
    #[cfg(loom)]
    {
        cv.wait(guard).unwrap()
    }
}

/// [`wait`] for at most `timeout`.
#[inline]
pub(crate) fn wait_timeout<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>, timeout: Duration) -> MutexGuard<'a, T> {
    #[cfg(not(loom))]
    {
        cv.wait_timeout(guard, timeout).map_or_else(|e| e.into_inner().0, |(g, _)| g)
    }
    #[cfg(loom)]
    {
        cv.wait_timeout(guard, timeout).unwrap().0
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
    state: Mutex<ParkState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct ParkState {
    token: bool,
    /// Threads inside `Condvar::wait`: `unpark` notifies only when there is one, since
    /// a notification is a system call even with nobody to wake.
    waiting: u32,
}

impl Parker {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Blocks until a token is available, then consumes it.
    pub(crate) fn park(&self) {
        let mut state = lock(&self.state);
        while !state.token {
            state.waiting += 1;
            state = wait(&self.cond, state);
            state.waiting -= 1;
        }
        state.token = false;
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
            let mut state = lock(&self.state);
            while !state.token {
                let now = std::time::Instant::now();
                if now >= deadline {
                    return;
                }
                state.waiting += 1;
                state = self.cond.wait_timeout(state, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
                state.waiting -= 1;
            }
            state.token = false;
        }
    }

    /// Like `park_until`, for a wait whose deadline is a fallback: the wake-up it
    /// waits for may never come, and the deadline is when the thread stops counting on
    /// it. Under loom the deadline passes at once (a token that came is consumed, as
    /// `park_until` does, then the thread yields), so the models explore the fallback
    /// racing with the wake-up; the caller must loop.
    pub(crate) fn park_until_fallback(&self, deadline: std::time::Instant) {
        #[cfg(loom)]
        {
            let _ = deadline;
            lock(&self.state).token = false;
            loom::thread::yield_now();
        }
        #[cfg(not(loom))]
        self.park_until(deadline);
    }

    /// Makes a token available, waking a parked thread if there is one.
    pub(crate) fn unpark(&self) {
        let wake = {
            let mut state = lock(&self.state);
            state.token = true;
            // Read under the lock: a thread that has not begun waiting yet sees the
            // token before it would wait.
            state.waiting > 0
        };
        if wake {
            self.cond.notify_one();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Arc, Parker, lock};
    use std::time::{Duration, Instant};

    #[test]
    fn a_token_given_before_park_is_kept_and_a_parked_thread_is_woken() {
        let p = Parker::new();
        // Nobody waits: the token is kept (and no notification is needed).
        p.unpark();
        p.park();
        assert!(!lock(&p.state).token, "park consumes the token");
        // A thread parked first is woken by a later unpark.
        let p = Arc::new(Parker::new());
        let q = Arc::clone(&p);
        let waiter = std::thread::spawn(move || q.park());
        while lock(&p.state).waiting == 0 {
            std::thread::yield_now();
        }
        p.unpark();
        waiter.join().unwrap();
        assert_eq!(lock(&p.state).waiting, 0);
        // Two waiters, two tokens given one at a time: both wake.
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let q = Arc::clone(&p);
                std::thread::spawn(move || q.park())
            })
            .collect();
        while lock(&p.state).waiting < 2 {
            std::thread::yield_now();
        }
        for _ in 0..2 {
            p.unpark();
            while lock(&p.state).token {
                std::thread::yield_now();
            }
        }
        waiters.into_iter().for_each(|w| w.join().unwrap());
        // A deadline passes without a token.
        let start = Instant::now();
        p.park_until(start + Duration::from_millis(5));
        assert!(start.elapsed() >= Duration::from_millis(5));
    }
}
