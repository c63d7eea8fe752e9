//! The sleep/wake protocol: idle workers park, publishers wake them, and no wake-up
//! is ever lost.
//!
//! A worker that found no work registers as a sleeper (`prepare`), issues a `SeqCst`
//! fence, looks for work once more, and only then parks. A thread that makes work
//! visible issues a `SeqCst` fence and then reads the sleeper count (`notify_one`).
//! This is a Dekker pair: either the publisher sees the sleeper's registration and
//! unparks someone, or the sleeper's re-check sees the new work. Parkers keep a token,
//! so an unpark that lands between the re-check and `park` is not lost either.
//!
//! The module also keeps the pool's *demand* signal: how many threads would take work
//! if some were published (idle and sleeping workers, idle callers). Busy threads read
//! it with one relaxed load per item to decide whether to share their private work.

use crate::sync::{AtomicUsize, Mutex, Ordering, Parker, fence, lock};
use crossbeam_utils::CachePadded;

/// Idle workers' registrations and parkers, and the demand signal (see the module docs).
pub struct Sleep {
    /// Threads that would take published work right now. Read on every item by busy
    /// threads, written only on idle/busy transitions, so it stays in their caches.
    demand: CachePadded<AtomicUsize>,
    /// `sleepers.len()`, readable without the lock by publishers.
    sleeper_count: CachePadded<AtomicUsize>,
    /// Workers registered to sleep, waiting to be woken (most recent last).
    sleepers: Mutex<Vec<usize>>,
    parkers: Box<[Parker]>,
}

impl Sleep {
    /// A sleep state for `workers` workers, all of which start idle (counted in demand).
    pub fn new(workers: usize) -> Self {
        Self {
            demand: CachePadded::new(AtomicUsize::new(workers)),
            sleeper_count: CachePadded::new(AtomicUsize::new(0)),
            sleepers: Mutex::new(Vec::with_capacity(workers)),
            parkers: (0..workers).map(|_| Parker::new()).collect(),
        }
    }

    /// Whether any thread is waiting for work. A hint: stale values only delay or
    /// add one publication, never lose work.
    #[inline(always)]
    pub(crate) fn has_demand(&self) -> bool {
        // Relaxed: a hint; the work itself is handed over through the deque's own
        // synchronization.
        self.demand.load(Ordering::Relaxed) != 0
    }

    /// This thread stopped finding work.
    #[inline]
    pub(crate) fn add_demand(&self) {
        // Relaxed: a counter read only as a hint (see `has_demand`).
        self.demand.fetch_add(1, Ordering::Relaxed);
    }

    /// This thread found work again.
    #[inline]
    pub(crate) fn remove_demand(&self) {
        // Relaxed: as in `add_demand`.
        self.demand.fetch_sub(1, Ordering::Relaxed);
    }

    /// Registers `worker` as about to sleep. The caller must then look for work once
    /// more and call either [`Sleep::cancel`] (found some) or [`Sleep::park`].
    pub fn prepare(&self, worker: usize) {
        {
            let mut sleepers = lock(&self.sleepers);
            sleepers.push(worker);
            // Relaxed: ordered before the re-check by the fence below.
            self.sleeper_count.store(sleepers.len(), Ordering::Relaxed);
        }
        // SeqCst fence: the sleeper's half of the Dekker pair with `notify_one`. After it,
        // either our re-check sees the publisher's work, or the publisher sees our count.
        #[cfg(not(fanout_mutant_sleep))]
        fence(Ordering::SeqCst);
    }

    /// Withdraws a registration made by [`Sleep::prepare`].
    ///
    /// If a waker already took `worker` off the list, its token stays in the parker and
    /// the next `park` returns at once: a spurious wake-up, which the worker loop absorbs.
    pub fn cancel(&self, worker: usize) {
        let mut sleepers = lock(&self.sleepers);
        if let Some(pos) = sleepers.iter().position(|&w| w == worker) {
            sleepers.swap_remove(pos);
            // Relaxed: the count is only a hint for wakers, the list is the truth.
            self.sleeper_count.store(sleepers.len(), Ordering::Relaxed);
        }
    }

    /// Parks `worker` until it is woken (after [`Sleep::prepare`] and a fruitless
    /// re-check).
    pub fn park(&self, worker: usize) {
        self.parkers[worker].park();
    }

    /// Wakes one sleeping worker, if any. Call after making work visible.
    #[inline]
    pub fn notify_one(&self) {
        // SeqCst fence: the publisher's half of the Dekker pair with `prepare`.
        #[cfg(not(fanout_mutant_sleep))]
        fence(Ordering::SeqCst);
        // Relaxed: ordered after our publication by the fence above.
        if self.sleeper_count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let woken = {
            let mut sleepers = lock(&self.sleepers);
            let woken = sleepers.pop();
            self.sleeper_count.store(sleepers.len(), Ordering::Relaxed);
            woken
        };
        if let Some(worker) = woken {
            self.parkers[worker].unpark();
        }
    }

    /// Wakes every worker (shutdown). Each one re-checks the shutdown flag.
    pub fn notify_all(&self) {
        fence(Ordering::SeqCst);
        lock(&self.sleepers).clear();
        self.sleeper_count.store(0, Ordering::Relaxed);
        for parker in self.parkers.iter() {
            parker.unpark();
        }
    }
}
