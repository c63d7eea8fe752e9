//! Which pool's worker the current thread is: set once when a worker starts, read by
//! `Ctx::worker_index`, `Pool::current_thread_index` and `WorkerLocal`.

use super::sleep::Sleep;
use std::cell::Cell;

std::thread_local! {
    /// The pool's identity (`pool_id`) and the worker's index, on a pool's worker;
    /// `(0, 0)` on every other thread.
    static WORKER: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// A pool's identity: the address of its sleep state, which a `Ctx` can see too.
/// Unique among live pools; a pool's workers are joined before it is freed.
pub(crate) fn pool_id(sleep: &Sleep) -> usize {
    std::ptr::from_ref(sleep) as usize
}

/// Records that the current thread is worker `index` of the pool `pool_id`.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn set_current(pool_id: usize, index: usize) {
    WORKER.with(|w| w.set((pool_id, index)));
}

/// The index of the current thread among the workers of the pool `pool_id`, if it is
/// one of them.
pub(crate) fn worker_index_in(pool_id: usize) -> Option<usize> {
    let (pool, index) = WORKER.with(Cell::get);
    (pool == pool_id).then_some(index)
}
