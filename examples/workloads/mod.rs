//! The benchmark workloads W1–W5, shared by `examples/tradeoffs.rs` and `benches/core.rs`.
#![allow(dead_code)]

pub mod text;

use std::hint::black_box;
use std::time::Instant;

/// About 1 ns of work: a multiply, a shift and a xor.
#[inline(always)]
pub fn tiny(i: u64) -> u64 {
    let i = black_box(i);
    (i.wrapping_mul(0x9E3779B97F4A7C15) >> 7) ^ i
}

/// `k` rounds of xorshift-multiply: a dependent chain, so cost grows linearly in `k`.
#[inline(always)]
pub fn mix(i: u64, k: u32) -> u64 {
    let mut x = black_box(i) ^ 0x9E3779B97F4A7C15;
    for _ in 0..k {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x = x.wrapping_mul(0x2545F4914F6CDD1D);
    }
    x
}

/// The `k` for which `mix(i, k)` costs about `target_ns` on this machine.
pub fn calibrate_mix(target_ns: f64) -> u32 {
    let k = 256u32;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut acc = 0u64;
        for i in 0..20_000u64 {
            acc = acc.wrapping_add(mix(i, k));
        }
        black_box(acc);
        best = best.min(start.elapsed().as_nanos() as f64 / 20_000.0);
    }
    ((target_ns / best) * f64::from(k)).round().max(1.0) as u32
}

pub const W1_N: u64 = 10_000_000;
pub const W2_N: u64 = 100_000;
pub const W3_N: u64 = 40_000;
/// W3: the first 5% of indices cost 50x.
pub const W3_HEAVY: u64 = W3_N / 20;
pub const W4_DEPTH: u32 = 10;
pub const W4_TASKS: u64 = 1_398_101;

/// W3's cost function.
#[inline(always)]
pub fn skewed(i: u64, k: u32) -> u64 {
    if i < W3_HEAVY { mix(i, 50 * k) } else { mix(i, k) }
}

/// W4's task: returns `tiny(id)` and the children to push.
#[inline(always)]
pub fn w4_children(id: u64, depth: u32) -> Option<impl Iterator<Item = (u64, u32)>> {
    (depth < W4_DEPTH).then(|| (0..4).map(move |j| (id * 4 + j + 1, depth + 1)))
}

/// W4 as plain recursion: the sequential baseline.
pub fn w4_recursive(id: u64, depth: u32) -> u64 {
    let mut sum = tiny(id);
    if depth < W4_DEPTH {
        for j in 0..4 {
            sum = sum.wrapping_add(w4_recursive(id * 4 + j + 1, depth + 1));
        }
    }
    sum
}

/// W4's task on a fanout pool: pushes the children, adds `tiny(id)` to the thread's sum.
#[inline(always)]
fn w4_task(sum: u64, (id, depth): (u64, u32), ctx: &mut fanout::Ctx<'_, (u64, u32)>) -> u64 {
    if let Some(children) = w4_children(id, depth) {
        for c in children {
            ctx.push(c);
        }
    }
    sum.wrapping_add(tiny(id))
}

/// W4 on a fanout pool: a follow-on run with a per-thread sum.
pub fn w4_fanout(pool: &fanout::Pool) -> u64 {
    pool.run_fold([(0u64, 0u32)], || 0u64, w4_task, u64::wrapping_add)
}

/// W4 through `run_collect`: each task returns `tiny(id)`, the values come back in tree
/// order and are summed after the run (the cost of a deterministic order over
/// `run_fold`'s per-thread sum).
pub fn w4_collect(pool: &fanout::Pool) -> u64 {
    let values = pool.run_collect([(0u64, 0u32)], |(id, depth), ctx| {
        if let Some(children) = w4_children(id, depth) {
            for c in children {
                ctx.push(c);
            }
        }
        tiny(id)
    });
    values.into_iter().fold(0, u64::wrapping_add)
}

/// W4 as a fallible follow-on run that never fails: the cost of `try_*` over the
/// infallible run.
pub fn w4_fanout_try(pool: &fanout::Pool) -> u64 {
    pool.runner()
        .try_run_fold([(0u64, 0u32)], || 0u64, |sum, item, ctx| Ok::<_, ()>(w4_task(sum, item, ctx)), u64::wrapping_add)
        .expect("nothing fails")
}

/// W4 with `rayon::join`, splitting the four children in two pairs.
pub fn w4_rayon_join(id: u64, depth: u32) -> u64 {
    let own = tiny(id);
    if depth >= W4_DEPTH {
        return own;
    }
    let c = |j: u64| w4_rayon_join(id * 4 + j + 1, depth + 1);
    let ((a, b), (x, y)) = rayon::join(|| rayon::join(|| c(0), || c(1)), || rayon::join(|| c(2), || c(3)));
    own.wrapping_add(a).wrapping_add(b).wrapping_add(x).wrapping_add(y)
}

/// W4 with `rayon::scope` and one `spawn` per task, summing into an atomic.
pub fn w4_rayon_scope() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    fn go<'s>(s: &rayon::Scope<'s>, sum: &'s AtomicU64, id: u64, depth: u32) {
        sum.fetch_add(tiny(id), Ordering::Relaxed);
        if depth < W4_DEPTH {
            for j in 0..4 {
                s.spawn(move |s| go(s, sum, id * 4 + j + 1, depth + 1));
            }
        }
    }
    let sum = AtomicU64::new(0);
    rayon::scope(|s| go(s, &sum, 0, 0));
    sum.into_inner()
}

/// W6: one task pushes this many follow-ons.
pub const W6_N: u64 = 3_000_000;

/// W7: back-to-back small runs, the shape of a program that fans out a few dozen
/// microsecond items at a time (a phase per file, a batch per request).
pub const W7_RUNS: u64 = 200;
/// W7: items per run.
pub const W7_ITEMS: u64 = 64;

/// W8: one run of this many seeds of ~50 us each, the shape of a phase that hands out
/// a few dozen units of real work at once (files to compile, requests to answer).
pub const W8_SEEDS: u64 = 32;

/// W6 on a fanout pool: the root (`u64::MAX`) pushes every index, each of which adds
/// `mix(i, k)` to its thread's sum.
pub fn w6_fanout(pool: &fanout::Pool, k: u32) -> u64 {
    pool.run_fold(
        [u64::MAX],
        || 0u64,
        |sum, i, ctx| {
            if i == u64::MAX {
                for j in 0..W6_N {
                    ctx.push(j);
                }
                sum
            } else {
                sum.wrapping_add(mix(i, k))
            }
        },
        u64::wrapping_add,
    )
}

/// W6 with `rayon::scope`: one task spawns every index.
pub fn w6_rayon_scope(k: u32) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    let sum = AtomicU64::new(0);
    rayon::scope(|s| {
        for j in 0..W6_N {
            let sum = &sum;
            s.spawn(move |_| {
                sum.fetch_add(mix(j, k), Ordering::Relaxed);
            });
        }
    });
    sum.into_inner()
}

/// W5: items that block (sleep) about 50 µs each, like a call to a slow service.
pub const W5_N: u64 = 400;
pub const W5_BLOCK: std::time::Duration = std::time::Duration::from_micros(50);

/// W5's item: blocks, then returns a value derived from `i`.
pub fn blocking(i: u64) -> u64 {
    std::thread::sleep(W5_BLOCK);
    tiny(i)
}

/// A checksum that threads add to without sharing a cache line: each thread picks a
/// shard once. Used by the strategy variants, whose `Workload` has no per-thread
/// accumulator; it costs every strategy the same few nanoseconds per item.
pub struct Checksum {
    shards: Vec<crossbeam_utils::CachePadded<std::sync::atomic::AtomicU64>>,
}

impl Checksum {
    pub fn new() -> Self {
        Self { shards: (0..64).map(|_| Default::default()).collect() }
    }

    #[inline(always)]
    pub fn add(&self, x: u64) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        std::thread_local!(static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % 64);
        let shard = SHARD.with(|s| *s);
        self.shards[shard].fetch_add(x, Ordering::Relaxed);
    }

    /// Reads and resets the sum.
    pub fn take(&self) -> u64 {
        self.shards.iter().map(|s| s.swap(0, std::sync::atomic::Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }
}
