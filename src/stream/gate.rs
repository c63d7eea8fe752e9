//! Per-stage parallelism: a counting gate around one stage's function.
//!
//! A stream's stages are fused, so every thread that pulls a batch runs every stage.
//! [`Stream::parallelism`](super::Stream::parallelism) caps one stage: its function
//! runs inside a [`Gate`] that lets at most `limit` threads in at once. A thread that
//! finds the gate full spins briefly, then sleeps on a condition variable until a
//! thread leaving the gate wakes it. Stages without a limit carry [`Free`], which
//! compiles to a plain call.
//!
//! # Protocol (no lost wake-up)
//!
//! - *Enter*: CAS `active` from `n < limit` to `n + 1`. On the slow path the thread
//!   takes `lock`, increments `waiters`, and only then retries the CAS, waiting on
//!   `cond` (which releases `lock`) after each failure.
//! - *Leave*: decrement `active`, then read `waiters`; if it is not zero, take `lock`
//!   and notify one waiter.
//!
//! `waiters += 1; fence; read active` against `active -= 1; fence; read waiters` is a
//! Dekker pair with `SeqCst` fences: either the leaver sees the waiter (and notifies it
//! under the lock, which the waiter holds from its increment until it is inside
//! `wait`, so the notification cannot fall between its check and its sleep), or the
//! waiter's retry comes after the leaver's fence and sees the free permit. A waiter
//! that loses the freed permit to a thread on the fast path waits again; that thread's
//! own leave will see it. Modelled in `loom-tests/tests/gate.rs`, including a mutant
//! without the fences (built with `--cfg fanout_mutant_sleep`).

use crate::sync::{AtomicUsize, Condvar, Mutex, Ordering, fence, lock, spin_hint};
use crossbeam_utils::CachePadded;

/// Rounds a thread retries a full gate before it sleeps (a few microseconds).
#[cfg(not(loom))]
const SPIN_BEFORE_SLEEP: u32 = 64;
/// None under loom: the model checks the sleep/wake protocol itself.
#[cfg(loom)]
const SPIN_BEFORE_SLEEP: u32 = 0;

mod sealed {
    pub trait Sealed {}
}

/// How a stage's function is called: freely ([`Free`]) or through a [`Gate`]. Sealed.
pub trait StageGate: sealed::Sealed + Send + Sync + 'static {
    /// Runs `f`, within the stage's limit.
    #[doc(hidden)]
    fn run<R>(&self, f: impl FnOnce() -> R) -> R;
}

/// A stage without a parallelism limit (the default): every thread runs it at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Free;

impl sealed::Sealed for Free {}

impl StageGate for Free {
    #[inline(always)]
    fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// A stage with a parallelism limit, set by
/// [`Stream::parallelism`](super::Stream::parallelism): at most `limit` threads run
/// its function at once.
pub struct Gate {
    limit: usize,
    /// Threads inside the gate. Padded: every thread entering or leaving writes it,
    /// and it must not share a line with the stage's read-only function.
    active: CachePadded<AtomicUsize>,
    /// Threads sleeping (or about to sleep) for a permit; changed under `lock`.
    waiters: AtomicUsize,
    lock: Mutex<()>,
    cond: Condvar,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("limit", &self.limit).finish_non_exhaustive()
    }
}

impl sealed::Sealed for Gate {}

impl StageGate for Gate {
    #[inline]
    fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        self.enter();
        // Leaves on unwind too: a panicking stage must not keep its permit.
        let _leave = Leave(self);
        f()
    }
}

/// Gives the permit back when dropped.
struct Leave<'a>(&'a Gate);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl Gate {
    /// A gate that lets `limit` threads in at once (`limit >= 1`).
    pub(crate) fn new(limit: usize) -> Self {
        debug_assert!(limit >= 1, "a gate of 0 would never open");
        Self {
            limit,
            active: CachePadded::new(AtomicUsize::new(0)),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cond: Condvar::new(),
        }
    }

    /// The most threads allowed in at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes a permit if one is free.
    fn try_enter(&self) -> bool {
        // Relaxed: a first look; the CAS decides.
        let mut n = self.active.load(Ordering::Relaxed);
        while n < self.limit {
            // Acquire: pairs with the Release decrement in `leave`, so what the previous
            // holder wrote in the stage happens before we run it (a stage limited to 1
            // may rely on mutual exclusion).
            match self.active.compare_exchange_weak(n, n + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => n = now,
            }
        }
        false
    }

    pub(crate) fn enter(&self) {
        if self.try_enter() {
            return;
        }
        for _ in 0..SPIN_BEFORE_SLEEP {
            spin_hint();
            if self.try_enter() {
                return;
            }
        }
        let mut guard = lock(&self.lock);
        // Relaxed: ordered before the retry by the fence below.
        self.waiters.fetch_add(1, Ordering::Relaxed);
        loop {
            // SeqCst fence: the waiter's half of the Dekker pair with `leave`. Either
            // its fence comes first and the leaver reads our increment, or ours does
            // and the retry reads its decrement.
            #[cfg(not(fanout_mutant_sleep))]
            fence(Ordering::SeqCst);
            if self.try_enter() {
                break;
            }
            #[cfg(not(loom))]
            {
                guard = self.cond.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            #[cfg(loom)]
            {
                guard = self.cond.wait(guard).unwrap();
            }
        }
        // Relaxed: under the lock; a leaver that still reads the old count only
        // notifies needlessly.
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        drop(guard);
    }

    pub(crate) fn leave(&self) {
        // Release: pairs with the Acquire CAS of the next thread to enter.
        self.active.fetch_sub(1, Ordering::Release);
        // SeqCst fence: the leaver's half of the Dekker pair (see `enter`).
        #[cfg(not(fanout_mutant_sleep))]
        fence(Ordering::SeqCst);
        // Relaxed: ordered after our decrement by the fence.
        if self.waiters.load(Ordering::Relaxed) != 0 {
            // Under the lock: a waiter holds it from its increment until it sleeps, so
            // the notification cannot fall between its retry and its sleep.
            let _guard = lock(&self.lock);
            self.cond.notify_one();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;

    #[test]
    fn a_panic_gives_the_permit_back() {
        let gate = Gate::new(1);
        let r = catch_unwind(AssertUnwindSafe(|| gate.run(|| panic!("stage failed"))));
        assert!(r.is_err());
        assert!(gate.try_enter(), "the permit was kept by the panicking stage");
    }

    #[test]
    fn never_more_than_the_limit_inside() {
        for limit in [1, 2, 3] {
            let gate = Gate::new(limit);
            let inside = StdAtomicUsize::new(0);
            let max = StdAtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..6 {
                    s.spawn(|| {
                        for _ in 0..200 {
                            gate.run(|| {
                                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                                max.fetch_max(now, Ordering::SeqCst);
                                std::thread::yield_now();
                                inside.fetch_sub(1, Ordering::SeqCst);
                            });
                        }
                    });
                }
            });
            let max = max.into_inner();
            assert!(max <= limit, "limit {limit}: {max} threads were inside at once");
            assert_eq!(gate.active.load(Ordering::SeqCst), 0);
            assert_eq!(gate.waiters.load(Ordering::SeqCst), 0);
        }
    }
}
