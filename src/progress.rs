//! Live progress of a run, readable from any thread while the run goes on.
//!
//! Each participant owns one padded slot of counters and updates it with plain relaxed
//! stores (no read-modify-write, no shared line) every few items; a reader sums the
//! slots. The numbers are therefore a few items stale and not a consistent snapshot
//! across threads, which is what a progress bar needs and all it needs.

use crate::sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering, lock};
use crossbeam_utils::CachePadded;

/// A handle to watch runs' progress from another thread.
///
/// Attach it to runs with [`Runner::progress`](crate::Runner::progress); read it any
/// time with [`Progress::snapshot`]. It follows the latest run it was attached to and
/// keeps that run's final numbers after it ends. Updating it costs a run one store to
/// a cache line private to each thread every few items.
///
/// ```
/// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
/// let progress = fanout::Progress::new();
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         // A reader: poll while the run goes on.
///         let snap = progress.snapshot();
///         assert!(snap.completed <= 100_000);
///     });
///     pool.runner().progress(&progress).try_for_each_index(0..100_000, |_| Ok::<_, ()>(())).unwrap();
/// });
/// let done = progress.snapshot();
/// assert_eq!((done.completed, done.total, done.in_flight), (100_000, Some(100_000), 0));
/// ```
#[derive(Clone)]
pub struct Progress(Arc<Mutex<Option<Arc<Counters>>>>);

/// What a [`Progress`] saw at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProgressSnapshot {
    /// Items (indices, for slice and index-range runs) completed so far.
    pub completed: u64,
    /// Threads working on the run right now (each runs at most one item at a time).
    pub in_flight: usize,
    /// Items waiting: for slice and index-range runs, those not yet completed; for
    /// follow-on runs, the items queued on each thread when it last reported (a batch
    /// of items shared at once with other threads counts as one until it is taken).
    pub queued: u64,
    /// How many items the run has in all, when known up front (slices and ranges).
    pub total: Option<u64>,
}

impl ProgressSnapshot {
    /// `completed / total`, when the total is known (1.0 for an empty run).
    ///
    /// ```
    /// let snap = fanout::ProgressSnapshot::default();
    /// assert_eq!(snap.fraction(), None);
    /// ```
    pub fn fraction(&self) -> Option<f64> {
        self.total.map(|t| if t == 0 { 1.0 } else { self.completed as f64 / t as f64 })
    }
}

impl Progress {
    /// A handle not attached to any run yet (its snapshot is all zeros).
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(None)))
    }

    /// The latest numbers of the run this handle follows.
    pub fn snapshot(&self) -> ProgressSnapshot {
        match lock(&self.0).as_ref() {
            Some(counters) => counters.snapshot(),
            None => ProgressSnapshot::default(),
        }
    }

    /// Starts following a new run with `participants` slots.
    pub(crate) fn attach(&self, participants: usize, total: Option<u64>) -> Arc<Counters> {
        let counters = Arc::new(Counters {
            slots: (0..participants)
                .map(|_| {
                    CachePadded::new(SlotProgress {
                        completed: AtomicU64::new(0),
                        queued: AtomicU64::new(0),
                        active: AtomicBool::new(false),
                    })
                })
                .collect(),
            total,
        });
        *lock(&self.0) = Some(Arc::clone(&counters));
        counters
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Progress").field(&self.snapshot()).finish()
    }
}

/// The counters of one run, one padded slot per participant.
pub(crate) struct Counters {
    slots: Box<[CachePadded<SlotProgress>]>,
    total: Option<u64>,
}

impl Counters {
    pub(crate) fn slot(&self, i: usize) -> &SlotProgress {
        &self.slots[i]
    }

    fn snapshot(&self) -> ProgressSnapshot {
        // Relaxed throughout: each counter is a monotone (or idle-transition) value its
        // owner stores; a reader needs no ordering between them, only eventual freshness.
        let completed = self.slots.iter().map(|s| s.completed.load(Ordering::Relaxed)).sum();
        let in_flight = self.slots.iter().filter(|s| s.active.load(Ordering::Relaxed)).count();
        let queued = match self.total {
            Some(total) => total.saturating_sub(completed),
            None => self.slots.iter().map(|s| s.queued.load(Ordering::Relaxed)).sum(),
        };
        ProgressSnapshot { completed, in_flight, queued, total: self.total }
    }
}

/// One participant's counters; written only by that participant.
pub(crate) struct SlotProgress {
    completed: AtomicU64,
    queued: AtomicU64,
    active: AtomicBool,
}

impl SlotProgress {
    /// Adds `n` completed items (owner only: a load and a store, no read-modify-write).
    #[inline]
    pub(crate) fn add_completed(&self, n: u64) {
        // Relaxed: see `Counters::snapshot`; only the owner writes, so load+store is exact.
        let now = self.completed.load(Ordering::Relaxed);
        self.completed.store(now + n, Ordering::Relaxed);
    }

    /// Reports the items queued on this participant.
    #[inline]
    pub(crate) fn set_queued(&self, n: u64) {
        // Relaxed: see `Counters::snapshot`.
        self.queued.store(n, Ordering::Relaxed);
    }

    /// Reports whether this participant is working on the run.
    #[inline]
    pub(crate) fn set_active(&self, active: bool) {
        // Relaxed: see `Counters::snapshot`.
        self.active.store(active, Ordering::Relaxed);
    }
}
