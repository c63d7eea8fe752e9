//! Per-thread state that outlives a run: one value for each thread that takes part in
//! a pool's runs, made on that thread's first use and gathered afterwards.

use super::worker_index::{pool_id, worker_index_in};
use super::{Pool, Shared};
use crossbeam_utils::CachePadded;
use std::cell::{Cell, OnceCell};
use std::fmt;
// Plain std types: nothing here is part of a protocol the models check (a worker's value
// is its own; the list of outside threads' values is only behind a lock).
use std::sync::{Mutex, PoisonError};
use std::thread::ThreadId;

/// One value of `T` for each thread that works on a pool's runs: each worker, and each
/// other thread that takes part (the callers of runs). A task reaches its thread's
/// value with [`get`](WorkerLocal::get); the values last across runs, and
/// [`into_vec`](WorkerLocal::into_vec) gathers them at the end. This is how a compiler
/// keeps an arena, an interner or a cache per thread without a lock per use (rustc's
/// `WorkerLocal`).
///
/// A value is made by `init` on its thread's first `get`. A worker finds its value by
/// its index (a thread-local read and a bounds-checked load); a thread outside the pool
/// finds its own through a thread-local cache of the last four `WorkerLocal`s it used,
/// and takes a lock only the first time (or when it uses more than four in turn).
///
/// Values are shared references: put a `Cell`, a `RefCell` or an `UnsafeCell`-based
/// type inside to mutate them. `T` need not be `Sync`, since each value is only ever
/// reached from one thread (`get` gives each thread its own).
///
/// ```
/// use std::cell::RefCell;
/// use std::collections::HashSet;
///
/// let pool = fanout::Pool::builder().num_threads(2).build()?;
/// // A per-thread set of the names each thread has seen.
/// let seen = fanout::WorkerLocal::new(&pool, || RefCell::new(HashSet::new()));
/// for round in 0..3 {
///     pool.for_each_index(0..1000, |i| {
///         seen.get().borrow_mut().insert(format!("name{}", (i + round) % 50));
///     });
/// }
/// let all: HashSet<String> = seen.into_vec().into_iter().flat_map(RefCell::into_inner).collect();
/// assert_eq!(all.len(), 50);
/// # Ok::<(), fanout::BuildError>(())
/// ```
pub struct WorkerLocal<T> {
    /// `pool_id` of the pool; `_pool` keeps it from being reused while we live. A weak
    /// handle: it keeps the address, not what the pool holds (its spare buffers, its
    /// jobserver helper), which go when the pool is dropped.
    pool: usize,
    #[cfg(not(loom))]
    _pool: std::sync::Weak<Shared>,
    #[cfg(loom)]
    _pool: crate::sync::Arc<Shared>,
    /// Worker `i`'s value, touched only by worker `i` (through `get`).
    workers: Box<[CachePadded<OnceCell<T>>]>,
    /// Every other thread's value, in the order of first use, each in a box of its
    /// own (`Box::into_raw`; freed by `Drop` or taken by `into_vec`). Raw pointers, not
    /// boxes: a box moved with the `Vec` would claim unique access and invalidate the
    /// pointer its thread keeps. The boxes never go away while `self` is shared.
    others: Mutex<Vec<(ThreadId, *mut OnceCell<T>)>>,
    init: Box<dyn Fn() -> T + Send + Sync>,
    /// Unique among all `WorkerLocal`s ever made, for the cache in `RECENT`.
    id: u64,
}

// SAFETY: through `&self`, each value is reached by one thread only: worker `i`'s slot
// by the thread that `super::worker_index` says is worker `i` of this (live) pool, and an
// outside thread's box by the thread whose `ThreadId` it is filed under (ids are never
// reused). `&T` handed to that thread cannot reach another unless `T: Sync`. Values
// made on one thread and dropped or gathered on another need `T: Send`.
unsafe impl<T: Send> Sync for WorkerLocal<T> {}

// SAFETY: the raw pointers are owned boxes of `T`s (see `others`); sending the owner
// sends the values, which `T: Send` allows.
unsafe impl<T: Send> Send for WorkerLocal<T> {}

std::thread_local! {
    /// The last few `WorkerLocal`s (their `id`s) this thread used from outside their
    /// pools, each with its value's cell there, newest first: a caller whose tasks use
    /// an arena and an interner in turn finds both without the lock.
    static RECENT: [Cell<(u64, *const ())>; RECENT_LEN] =
        const { [const { Cell::new((0, std::ptr::null())) }; RECENT_LEN] };
}

/// How many `WorkerLocal`s each thread remembers in `RECENT`.
const RECENT_LEN: usize = 4;

/// Source of `WorkerLocal::id`; 0 is never handed out (the cache's empty state).
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl<T> WorkerLocal<T> {
    /// Per-thread values for `pool`'s runs, each made by `init` on its thread's first
    /// [`get`](WorkerLocal::get).
    pub fn new(pool: &Pool, init: impl Fn() -> T + Send + Sync + 'static) -> Self {
        let shared = pool.shared();
        let workers = (0..pool.num_threads()).map(|_| CachePadded::new(OnceCell::new())).collect();
        Self {
            pool: pool_id(shared.sleep()),
            #[cfg(not(loom))]
            _pool: std::sync::Arc::downgrade(shared),
            #[cfg(loom)]
            _pool: shared.clone(),
            workers,
            others: Mutex::new(Vec::new()),
            init: Box::new(init),
            // Relaxed: only uniqueness matters.
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The current thread's value, made by `init` if this is the thread's first use.
    /// Works on any thread: a worker of the pool, the caller of a run, any other.
    ///
    /// # Panics
    ///
    /// If `init` panics (the next `get` on this thread calls it again), or reaches
    /// `get` on the same `WorkerLocal` on the same thread: directly, or through a
    /// nested run on the pool, whose items this thread runs too. The same goes for a
    /// `RefCell` inside: a borrow held across a nested run whose items borrow it again
    /// panics.
    pub fn get(&self) -> &T {
        let cell = match worker_index_in(self.pool) {
            Some(i) => &*self.workers[i],
            None => self.other_cell(),
        };
        cell.get_or_init(&self.init)
    }

    /// The current thread's cell, when it is not one of the pool's workers.
    fn other_cell(&self) -> &OnceCell<T> {
        let cached = RECENT.with(|recent| recent.iter().map(Cell::get).find(|&(id, _)| id == self.id));
        let ptr = if let Some((_, ptr)) = cached {
            ptr.cast::<OnceCell<T>>()
        } else {
            let me = std::thread::current().id();
            let mut others = self.others.lock().unwrap_or_else(PoisonError::into_inner);
            let ptr = match others.iter().find(|(thread, _)| *thread == me) {
                Some(&(_, cell)) => cell.cast_const(),
                None => {
                    let cell = Box::into_raw(Box::new(OnceCell::new()));
                    others.push((me, cell));
                    cell.cast_const()
                }
            };
            // In front; the oldest entry falls out.
            RECENT.with(|recent| {
                for i in (1..RECENT_LEN).rev() {
                    recent[i].set(recent[i - 1].get());
                }
                recent[0].set((self.id, ptr.cast()));
            });
            ptr
        };
        // SAFETY: `ptr` is a box in `self.others` filed under this thread's id:
        // found or made just now, or remembered by this thread for this `id`, which no other
        // `WorkerLocal` has. Boxes stay put while `self` is borrowed (only `&mut self`
        // and `self` methods take them out), and only this thread uses this one (see
        // the `Sync` impl).
        unsafe { &*ptr }
    }

    /// Every value made so far, mutably: the workers' by index, then the other
    /// threads' in the order they first used theirs.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        let others = self.others.get_mut().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: each pointer is a live box of ours (see `others`), and `&mut self`
        // rules out any other use of it while the borrow lasts.
        let others = others.iter().filter_map(|&(_, cell)| unsafe { &mut *cell }.get_mut());
        self.workers.iter_mut().filter_map(|cell| cell.get_mut()).chain(others)
    }

    /// Every value made so far: the workers' by index, then the other threads' in the
    /// order they first used theirs.
    pub fn into_vec(mut self) -> Vec<T> {
        let others = std::mem::take(self.others.get_mut().unwrap_or_else(PoisonError::into_inner));
        let workers = std::mem::take(&mut self.workers);
        let workers = workers.into_vec().into_iter().filter_map(|cell| CachePadded::into_inner(cell).into_inner());
        // SAFETY: each pointer is a box of ours, taken out of `self` above so that its
        // `Drop` does not free it again.
        let others = others.into_iter().filter_map(|(_, cell)| unsafe { Box::from_raw(cell) }.into_inner());
        workers.chain(others).collect()
    }
}

impl<T> Drop for WorkerLocal<T> {
    fn drop(&mut self) {
        for (_, cell) in self.others.get_mut().unwrap_or_else(PoisonError::into_inner).drain(..) {
            // SAFETY: a box of ours (see `others`), freed once: `drain` removes it.
            drop(unsafe { Box::from_raw(cell) });
        }
    }
}

impl<T> fmt::Debug for WorkerLocal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the values, nor whether they exist: each is its own thread's to read.
        f.debug_struct("WorkerLocal").field("workers", &self.workers.len()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn each_thread_gets_its_own_value_across_runs() {
        let pool = Pool::builder().num_threads(2).build().unwrap();
        let made = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let local = WorkerLocal::new(&pool, move || {
            counter.fetch_add(1, Ordering::Relaxed);
            (std::thread::current().id(), Cell::new(0u64))
        });
        // Under Miri (slow): fewer items and runs.
        let (items, runs) = if cfg!(miri) { (40, 2) } else { (10_000, 5) };
        for _ in 0..runs {
            pool.for_each_index(0..items, |_| {
                let (owner, count) = local.get();
                assert_eq!(*owner, std::thread::current().id());
                count.set(count.get() + 1);
            });
        }
        // The caller used its own value too.
        let (owner, _) = local.get();
        assert_eq!(*owner, std::thread::current().id());
        let values = local.into_vec();
        assert_eq!(values.len(), made.load(Ordering::Relaxed));
        assert!(values.len() <= 3);
        let total: u64 = values.iter().map(|(_, c)| c.get()).sum();
        assert_eq!(total, runs * items as u64);
    }

    #[test]
    fn outside_threads_alternating_between_locals_keep_their_values() {
        let pool = Pool::builder().num_threads(1).build().unwrap();
        let a = WorkerLocal::new(&pool, || Cell::new(0u32));
        let b = WorkerLocal::new(&pool, || Cell::new(100u32));
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..10 {
                        a.get().set(a.get().get() + 1);
                        b.get().set(b.get().get() + 1);
                    }
                });
            }
        });
        let mut a: Vec<u32> = a.into_vec().into_iter().map(Cell::into_inner).collect();
        let mut b: Vec<u32> = b.into_vec().into_iter().map(Cell::into_inner).collect();
        a.sort();
        b.sort();
        assert_eq!(a, [10, 10, 10]);
        assert_eq!(b, [110, 110, 110]);
    }

    #[test]
    fn more_locals_in_turn_than_the_cache_holds() {
        let pool = Pool::builder().num_threads(1).build().unwrap();
        let locals: Vec<WorkerLocal<Cell<u32>>> =
            (0..6).map(|k| WorkerLocal::new(&pool, move || Cell::new(k))).collect();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for round in 0..5 {
                        for (k, local) in locals.iter().enumerate() {
                            let v = local.get();
                            assert_eq!(v.get(), k as u32 + 100 * round);
                            v.set(v.get() + 100);
                        }
                    }
                });
            }
        });
        for (k, local) in locals.into_iter().enumerate() {
            assert_eq!(local.into_vec().into_iter().map(Cell::into_inner).collect::<Vec<_>>(), [k as u32 + 500; 2]);
        }
    }

    #[test]
    fn a_local_of_another_pool_treats_its_workers_as_outsiders() {
        let first = Pool::builder().num_threads(2).build().unwrap();
        let second = Pool::builder().num_threads(2).build().unwrap();
        let local = WorkerLocal::new(&first, || Cell::new(0u32));
        let items = if cfg!(miri) { 40 } else { 1000 };
        second.for_each_index(0..items, |_| local.get().set(local.get().get() + 1));
        assert_eq!(local.into_vec().into_iter().map(Cell::into_inner).sum::<u32>(), items as u32);
    }
}
