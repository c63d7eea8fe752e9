//! The sleep/wake protocol: idle workers park, publishers wake them, and no wake-up
//! is ever lost; and the pool's *demand* signal (threads that would take published
//! work), which busy threads read to decide whether to share their private items.
//!
//! The protocol and its invariants (the Dekker pair of `prepare` and `notify_one`, whom
//! a waker picks and why, what `published` and `demand` count): ARCHITECTURE.md,
//! "Sleep/wake". Modelled in `loom-tests/tests/sleep.rs` and `pool.rs`.

use crate::sync::{AtomicUsize, Mutex, Ordering, Parker, current_cpu, fence, lock};
use crossbeam_utils::CachePadded;

/// Idle workers' registrations and parkers, and the demand signal (see the module docs).
pub struct Sleep {
    /// Threads that would take published work right now. Read on every item by busy
    /// threads, written only on idle/busy transitions, so it stays in their caches.
    demand: CachePadded<AtomicUsize>,
    /// Bumped whenever work may have become visible (every `notify_one`): idle
    /// workers that spin before sleeping look at the registry only when it moved.
    published: CachePadded<AtomicUsize>,
    /// `sleepers.len()`, readable without the lock by publishers.
    sleeper_count: CachePadded<AtomicUsize>,
    /// Workers registered to sleep, waiting to be woken (most recent last).
    sleepers: Mutex<Vec<usize>>,
    parkers: Box<[Parker]>,
    /// The CPU each worker is pinned to (`NOT_PINNED` if none).
    cores: Box<[AtomicUsize]>,
}

/// `Sleep::cores` of a worker the OS may run anywhere.
pub(crate) const NOT_PINNED: usize = usize::MAX;

impl Sleep {
    /// A sleep state for `workers` workers, all of which start idle (counted in demand).
    pub fn new(workers: usize) -> Self {
        Self {
            demand: CachePadded::new(AtomicUsize::new(workers)),
            published: CachePadded::new(AtomicUsize::new(0)),
            sleeper_count: CachePadded::new(AtomicUsize::new(0)),
            sleepers: Mutex::new(Vec::with_capacity(workers)),
            parkers: (0..workers).map(|_| Parker::new()).collect(),
            cores: (0..workers).map(|_| AtomicUsize::new(NOT_PINNED)).collect(),
        }
    }

    /// Records that `worker` is pinned to CPU `cpu`.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn set_pinned(&self, worker: usize, cpu: usize) {
        // Relaxed: a placement hint for wakers; a stale value only picks a worse sleeper.
        self.cores[worker].store(cpu, Ordering::Relaxed);
    }

    /// Whether `worker` is pinned to CPU `cpu`.
    pub(crate) fn pinned_to(&self, worker: usize, cpu: usize) -> bool {
        // Relaxed: see `set_pinned`.
        cpu != NOT_PINNED && self.cores[worker].load(Ordering::Relaxed) == cpu
    }

    /// Takes the sleeper to wake from `sleepers`, passing over any pinned to CPU
    /// `avoid` (a run's seat rule keeps that one out) unless no other sleeps: the most
    /// recent one pinned to another CPU than the one this thread runs on, else the most
    /// recent one not pinned to it, else the most recent one.
    fn pick(&self, sleepers: &mut Vec<usize>, avoid: usize) -> Option<usize> {
        let last = sleepers.len().checked_sub(1)?;
        let here = current_cpu().unwrap_or(NOT_PINNED);
        let free = |w: usize| !self.pinned_to(w, avoid);
        let elsewhere = |&w: &usize| free(w) && !self.pinned_to(w, here);
        // Relaxed: see `set_pinned`.
        let pinned = |w: usize| self.cores[w].load(Ordering::Relaxed) != NOT_PINNED;
        let pinned_elsewhere = |&w: &usize| here != NOT_PINNED && pinned(w) && elsewhere(&w);
        let at = sleepers
            .iter()
            .rposition(pinned_elsewhere)
            .or_else(|| sleepers.iter().rposition(elsewhere))
            .or_else(|| sleepers.iter().rposition(|&w| free(w)))
            .unwrap_or(last);
        Some(sleepers.remove(at))
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

    /// A count that moves whenever work may have become visible: a spinning worker
    /// that sees it unchanged knows nothing was published since its last look.
    #[inline]
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn published(&self) -> usize {
        // Relaxed: a hint for spinning; sleeping goes through `prepare`'s re-check,
        // which looks at the work itself.
        self.published.load(Ordering::Relaxed)
    }

    /// Moves [`Sleep::published`] (work was published).
    #[inline]
    fn signal_published(&self) {
        // Relaxed: see `published`.
        self.published.fetch_add(1, Ordering::Relaxed);
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
        #[cfg(not(all(loom, feature = "mutant_sleep")))]
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
    /// re-check), then withdraws its registration if it is still listed: a wake-up
    /// token left by an earlier registration (taken by a waker after the worker had
    /// cancelled it) makes `park` return at once, and the worker, awake, must not stay
    /// on the list, or a later `notify_one` would wake it instead of a sleeper.
    pub fn park(&self, worker: usize) {
        self.parkers[worker].park();
        self.cancel(worker);
    }

    /// Wakes one sleeping worker, if any. Call after making work visible.
    #[inline]
    pub fn notify_one(&self) {
        self.notify_one_avoiding(NOT_PINNED);
    }

    /// Wakes one sleeping worker, if any, preferring one not pinned to CPU `avoid`
    /// (`NOT_PINNED`: no preference): a run whose caller took the seat of the worker
    /// pinned there would not admit it, and a wake-up spent on it would be lost to the
    /// run (the caller may have moved to another CPU since). Call after making work
    /// visible.
    #[inline]
    pub(crate) fn notify_one_avoiding(&self, avoid: usize) {
        self.signal_published();
        // SeqCst fence: the publisher's half of the Dekker pair with `prepare`.
        #[cfg(not(all(loom, feature = "mutant_sleep")))]
        fence(Ordering::SeqCst);
        // Relaxed: ordered after our publication by the fence above.
        if self.sleeper_count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let woken = {
            let mut sleepers = lock(&self.sleepers);
            let woken = self.pick(&mut sleepers, avoid);
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{NOT_PINNED, Sleep};
    use crate::sync::Ordering;

    #[test]
    fn a_stale_wake_up_leaves_no_registration_behind() {
        let sleep = Sleep::new(2);
        // Worker 0 registers; a waker takes it off the list (leaving a token) while
        // the worker's re-check finds work, so its cancel finds nothing to remove.
        sleep.prepare(0);
        sleep.notify_one();
        sleep.cancel(0);
        // Next time round it registers again; park returns at once on the old token.
        sleep.prepare(0);
        sleep.park(0);
        // Awake and working, it must not be listed: a wake-up would go to it.
        assert_eq!(sleep.sleeper_count.load(Ordering::Relaxed), 0);
        assert!(sleep.sleepers.lock().unwrap().is_empty());
    }

    #[test]
    fn a_waker_prefers_a_sleeper_pinned_elsewhere() {
        // Pin this thread to the first CPU, so that "here" stays put.
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        if cores.len() < 2 || !core_affinity::set_for_current(cores[0]) {
            eprintln!("skipped: needs two CPUs and pinning");
            return;
        }
        let Some(here) = crate::sync::current_cpu() else {
            eprintln!("skipped: the OS does not say which CPU runs this thread");
            return;
        };
        let elsewhere = cores.iter().map(|c| c.id).find(|&c| c != here).expect("a second CPU");
        let sleep = Sleep::new(4);
        sleep.set_pinned(0, elsewhere);
        sleep.set_pinned(1, here);
        // Workers 2 and 3 are not pinned. The most recent sleeper is last.
        let mut sleepers = vec![2, 0, 3, 1];
        let any = NOT_PINNED;
        assert_eq!(sleep.pick(&mut sleepers, any), Some(0), "pinned elsewhere, before the unpinned");
        assert_eq!(sleep.pick(&mut sleepers, any), Some(3), "the most recent sleeper not on this CPU");
        assert_eq!(sleep.pick(&mut sleepers, any), Some(2));
        assert_eq!(sleep.pick(&mut sleepers, any), Some(1), "only one left: it is taken anyway");
        assert_eq!(sleep.pick(&mut sleepers, any), None);
        // A run whose caller took the seat of the worker pinned elsewhere (it ran there,
        // and has since moved here) passes that worker over, even for one pinned here.
        let mut sleepers = vec![1, 0];
        assert_eq!(sleep.pick(&mut sleepers, elsewhere), Some(1), "the worker the run would admit");
        assert_eq!(sleep.pick(&mut sleepers, elsewhere), Some(0), "only one left: it is taken anyway");
    }
}
