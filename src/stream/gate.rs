//! Per-stage parallelism: a counting gate around one stage's function.
//!
//! A stream's stages are fused, so every thread that pulls a batch runs every stage.
//! [`Stream::parallelism`](super::Stream::parallelism) caps one stage: its function
//! runs inside a [`Gate`] that lets at most `limit` threads in at once. A thread that
//! finds the gate full spins briefly, then sleeps on a condition variable until a
//! thread leaving the gate wakes it. Stages without a limit carry [`Free`], which
//! compiles to a plain call.
//!
//! The protocol and why no wake-up is lost: ARCHITECTURE.md, "Streams: per-stage
//! parallelism". Modelled in `loom-tests/tests/gate.rs`, with a mutant that forgets to
//! count waiters (the `mutant_gate` feature, under `--cfg loom`).

use crate::sync::{AtomicU64, Condvar, Mutex, Ordering, lock, spin_hint, wait};
use crossbeam_utils::CachePadded;

/// Rounds a thread retries a full gate before it sleeps (a brief spin).
#[cfg(not(loom))]
const SPIN_BEFORE_SLEEP: u32 = 64;
/// None under loom: the model checks the sleep/wake protocol itself.
#[cfg(loom)]
const SPIN_BEFORE_SLEEP: u32 = 0;

mod sealed {
    pub trait Sealed {}
}

/// How a stage's function is called: freely ([`Free`]) or through a [`Gate`]. Sealed.
pub trait StageGate: sealed::Sealed + Send + Sync {
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

/// The semaphore of a stage with a parallelism limit, set by
/// [`Stream::parallelism`](super::Stream::parallelism): at most `limit` threads run
/// the stage's function at once.
pub struct Gate {
    limit: u64,
    /// Threads inside (low 32 bits) and counted waiters (high 32 bits). Padded: every
    /// thread entering or leaving writes it, and it must not share a line with the
    /// stage's read-only function.
    state: CachePadded<AtomicU64>,
    /// Wake-up tokens: waiters un-counted by a leaver and not yet woken.
    tokens: Mutex<u64>,
    cond: Condvar,
}

/// One counted waiter in `Gate::state`.
const ONE_WAITER: u64 = 1 << 32;
/// The threads-inside half of `Gate::state`.
const ACTIVE: u64 = ONE_WAITER - 1;

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
    /// A gate that lets `limit` threads in at once (`1 <= limit < 2^32`, clamped).
    pub(crate) fn new(limit: usize) -> Self {
        debug_assert!(limit >= 1, "a gate of 0 would never open");
        Self {
            limit: (limit as u64).clamp(1, ACTIVE),
            state: CachePadded::new(AtomicU64::new(0)),
            tokens: Mutex::new(0),
            cond: Condvar::new(),
        }
    }

    /// Takes a permit if one is free.
    fn try_enter(&self) -> bool {
        // Relaxed: a first look; the CAS decides. On the slow path this load comes
        // after the waiter's own count in program order, so it reads the word no
        // older than that count (read-read coherence on one location).
        let mut s = self.state.load(Ordering::Relaxed);
        while s & ACTIVE < self.limit {
            // Acquire: pairs with the Release decrement in `leave` (the relaxed waiter
            // counts and token conversions in between are read-modify-writes, which
            // continue its release sequence), so what the previous holder wrote in the
            // stage happens before we run it (a stage limited to 1 may rely on mutual
            // exclusion).
            match self.state.compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => s = now,
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
        let mut tokens = lock(&self.tokens);
        // Relaxed: a read-modify-write of the one word leavers decrement; its place in
        // that word's order is all the protocol needs (ARCHITECTURE.md, "Streams:
        // per-stage parallelism").
        #[cfg(not(all(loom, feature = "mutant_gate")))]
        self.state.fetch_add(ONE_WAITER, Ordering::Relaxed);
        loop {
            if self.try_enter() {
                // Relaxed: as above. We were counted (a retry always is).
                #[cfg(not(all(loom, feature = "mutant_gate")))]
                self.state.fetch_sub(ONE_WAITER, Ordering::Relaxed);
                return;
            }
            tokens = wait(&self.cond, tokens);
            if *tokens > 0 {
                // A leaver un-counted a waiter to wake it: take that turn and count
                // ourselves again before the retry.
                *tokens -= 1;
                #[cfg(not(all(loom, feature = "mutant_gate")))]
                self.state.fetch_add(ONE_WAITER, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn leave(&self) {
        // Release: pairs with the Acquire CAS of the next thread to enter.
        let before = self.state.fetch_sub(1, Ordering::Release);
        if before >= ONE_WAITER {
            let mut tokens = lock(&self.tokens);
            // Under the lock, so no waiter is between its count and its sleep. The
            // waiter half may have changed since our decrement (waiters that got in,
            // new ones, another leaver's token): look again.
            let mut s = self.state.load(Ordering::Relaxed);
            while s >= ONE_WAITER {
                // Relaxed: a read-modify-write of the same word (see `enter`).
                match self.state.compare_exchange_weak(s, s - ONE_WAITER, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => {
                        *tokens += 1;
                        // The token is recorded under the lock; notifying after
                        // unlocking spares the woken thread a wait for the lock. A
                        // waiter that wakes in between takes the token itself.
                        drop(tokens);
                        self.cond.notify_one();
                        return;
                    }
                    Err(now) => s = now,
                }
            }
        }
    }
}

/// For the loom models: whether the gate is back at rest (nobody inside, no waiter
/// counted, no token left).
#[cfg(loom)]
impl Gate {
    pub(crate) fn at_rest(&self) -> bool {
        self.state.load(Ordering::SeqCst) == 0 && *lock(&self.tokens) == 0
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
    fn the_limit_is_reached() {
        // Two threads inside a gate of two at once: each waits, inside, for the other.
        // A gate that let only one in would fail here (after the timeout), not hang.
        let gate = Gate::new(2);
        let inside = StdAtomicUsize::new(0);
        let met = StdAtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    gate.run(|| {
                        inside.fetch_add(1, Ordering::SeqCst);
                        let start = std::time::Instant::now();
                        while inside.load(Ordering::SeqCst) < 2 && start.elapsed().as_secs() < 10 {
                            std::thread::yield_now();
                        }
                        if inside.load(Ordering::SeqCst) == 2 {
                            met.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                });
            }
        });
        assert_eq!(met.into_inner(), 2, "a gate of 2 never had both threads inside");
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
            assert_eq!(gate.state.load(Ordering::SeqCst), 0, "threads or waiters still counted");
            assert_eq!(*gate.tokens.lock().unwrap(), 0, "a wake-up token was left over");
        }
    }
}
