//! `fanout`: a lock-free, high-throughput fan-out/fan-in runtime.
//!
//! A [`Pool`] owns one pinned worker thread per core, each with its own Chase-Lev
//! deque. A *run* fans out over items of one type with one closure; tasks may push
//! follow-on items of the same run through their [`Ctx`], and the run returns when all
//! of them have executed. The per-item path is monomorphized and touches no shared
//! atomic: follow-ons stay private to the thread that made them until another thread
//! is idle.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! let pool = fanout::Pool::new()?;
//! // A tree of tasks: each node pushes its children as follow-on work.
//! let visited = AtomicU64::new(0);
//! pool.run([(0u32, 0u32)], |(id, depth), ctx| {
//!     visited.fetch_add(1, Ordering::Relaxed);
//!     if depth < 5 {
//!         for j in 0..4 {
//!             ctx.push((id * 4 + j + 1, depth + 1));
//!         }
//!     }
//! });
//! assert_eq!(visited.into_inner(), (0..=5).map(|d| 4u64.pow(d)).sum());
//!
//! // Slices: results in input order, folds with per-thread accumulators.
//! let squares = pool.map_index(0..10, |i| i * i);
//! assert_eq!(squares[9], 81);
//! let total = pool.fold_index(0..10, || 0, |a, i| a + i, |a, b| a + b);
//! assert_eq!(total, 45);
//! # Ok::<(), fanout::BuildError>(())
//! ```
//!
//! See `ARCHITECTURE.md` for the protocols and their invariants.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
// Under loom the spin counts are 0 on purpose (the models explore the park paths), so
// the spin loops are empty ranges there.
#![cfg_attr(loom, allow(clippy::reversed_empty_ranges, clippy::absurd_extreme_comparisons))]

mod api;
mod cancel;
pub mod compare;
mod crew;
pub mod deque;
mod engine;
mod outcome;
mod pool;
mod progress;
mod reuse;
mod stats;
pub mod strategy;
pub mod stream;
mod sync;
#[cfg(test)]
mod test_util;
mod work;

pub use api::global_pool::{
    fold, fold_index, for_each, for_each_index, global, map, map_index, run, run_fold, scope, stream, try_for_each,
    try_map,
};
pub use api::runner::Runner;
pub use cancel::CancelToken;

pub use engine::ctx::Ctx;
pub use outcome::error::{AllFailed, ItemError, RunError};
pub use pool::local::WorkerLocal;
pub use pool::{BuildError, MAX_THREADS, MIN_STACK_SIZE, Pool, PoolBuilder};
pub use progress::{Progress, ProgressSnapshot};
pub use stats::RunStats;
pub use stream::{Scope, Stream, StreamIter, StreamStats};
pub use work::collect::CollectCtx;

/// Internals exposed for the loom model checks in `loom-tests/` (only under `cfg(loom)`).
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    /// Capacity of each run slot's deque under loom (see `engine::run::DEQUE_CAPACITY`).
    pub const DEQUE_CAPACITY: usize = crate::engine::run::DEQUE_CAPACITY;
    pub use crate::pool::registry::TestJob;

    /// Makes every run's caller step back at its first checkpoint from now on, in this
    /// process (see `engine::participant::Participant::step_back`).
    pub fn callers_step_back() {
        crate::engine::run::CALLERS_STEP_BACK_IN_MODELS.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    pub use crate::pool::sleep::Sleep;

    /// A stage gate letting `limit` threads in at once (see `stream::gate`).
    pub fn gate(limit: usize) -> crate::stream::Gate {
        crate::stream::Gate::new(limit)
    }

    /// Whether `gate` is at rest: nobody inside, no waiter counted, no token left.
    pub fn gate_at_rest(gate: &crate::stream::Gate) -> bool {
        gate.at_rest()
    }
}

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
