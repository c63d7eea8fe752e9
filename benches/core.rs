//! Criterion benchmarks of the workloads W1–W4 (see `examples/workloads/`), one group
//! per workload with one line per variant, so criterion's report plots them side by
//! side. `cargo bench --bench core`; report in `target/criterion/report/index.html`.

#[path = "../examples/workloads/mod.rs"]
mod workloads;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanout::Pool;
use rayon::prelude::*;
use std::time::Duration;
use workloads::*;

fn configure<'c>(
    c: &'c mut Criterion,
    name: &str,
    items: u64,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(items));
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    g
}

fn benches(c: &mut Criterion) {
    let pool = Pool::new().expect("pool");
    let k = calibrate_mix(1000.0);

    let mut g = configure(c, "W1_tiny_sum", W1_N);
    g.bench_function(BenchmarkId::new("sequential", W1_N), |b| {
        b.iter(|| (0..W1_N).map(tiny).fold(0, u64::wrapping_add))
    });
    g.bench_function(BenchmarkId::new("fanout", W1_N), |b| {
        b.iter(|| pool.fold_index(0..W1_N as usize, || 0u64, |a, i| a.wrapping_add(tiny(i as u64)), u64::wrapping_add))
    });
    g.bench_function(BenchmarkId::new("fanout_try", W1_N), |b| {
        b.iter(|| {
            pool.try_fold_index(
                0..W1_N as usize,
                || 0u64,
                |a, i| Ok::<_, ()>(a.wrapping_add(tiny(i as u64))),
                u64::wrapping_add,
            )
        })
    });
    g.bench_function(BenchmarkId::new("rayon", W1_N), |b| {
        b.iter(|| (0..W1_N).into_par_iter().map(tiny).reduce(|| 0, u64::wrapping_add))
    });
    g.finish();

    let mut g = configure(c, "W2_mix_1us", W2_N);
    g.bench_function(BenchmarkId::new("sequential", W2_N), |b| {
        b.iter(|| (0..W2_N).map(|i| mix(i, k)).fold(0, u64::wrapping_add))
    });
    g.bench_function(BenchmarkId::new("fanout", W2_N), |b| {
        b.iter(|| {
            pool.fold_index(0..W2_N as usize, || 0u64, |a, i| a.wrapping_add(mix(i as u64, k)), u64::wrapping_add)
        })
    });
    g.bench_function(BenchmarkId::new("rayon", W2_N), |b| {
        b.iter(|| (0..W2_N).into_par_iter().map(|i| mix(i, k)).reduce(|| 0, u64::wrapping_add))
    });
    g.finish();

    let mut g = configure(c, "W3_skewed", W2_N);
    g.bench_function(BenchmarkId::new("sequential", W2_N), |b| {
        b.iter(|| (0..W2_N).map(|i| skewed(i, k)).fold(0, u64::wrapping_add))
    });
    g.bench_function(BenchmarkId::new("fanout", W2_N), |b| {
        b.iter(|| {
            pool.fold_index(0..W2_N as usize, || 0u64, |a, i| a.wrapping_add(skewed(i as u64, k)), u64::wrapping_add)
        })
    });
    g.bench_function(BenchmarkId::new("rayon", W2_N), |b| {
        b.iter(|| (0..W2_N).into_par_iter().map(|i| skewed(i, k)).reduce(|| 0, u64::wrapping_add))
    });
    g.finish();

    let mut g = configure(c, "W4_follow_on_tree", W4_TASKS);
    g.bench_function(BenchmarkId::new("sequential", W4_TASKS), |b| b.iter(|| w4_recursive(0, 0)));
    g.bench_function(BenchmarkId::new("fanout", W4_TASKS), |b| b.iter(|| w4_fanout(&pool)));
    g.bench_function(BenchmarkId::new("fanout_try", W4_TASKS), |b| b.iter(|| w4_fanout_try(&pool)));
    g.bench_function(BenchmarkId::new("fanout_collect", W4_TASKS), |b| b.iter(|| w4_collect(&pool)));
    g.bench_function(BenchmarkId::new("rayon_join", W4_TASKS), |b| b.iter(|| w4_rayon_join(0, 0)));
    g.finish();

    // Single-thread follow-on push+pop: a chain on a 1-thread pool whose worker never
    // joins (the caller runs it alone), so this is the private-buffer path per item.
    let mut g = configure(c, "follow_on_chain_per_item", 1_000_000);
    let solo = Pool::builder().num_threads(1).build().expect("pool");
    g.bench_function("fanout_chain_1M", |b| {
        b.iter(|| {
            solo.run_fold(
                [1_000_000u32],
                || 0u32,
                |n, d, ctx| {
                    if d > 0 {
                        ctx.push(d - 1);
                    }
                    n + 1
                },
                |a, b| a + b,
            )
        })
    });
    g.finish();

    // A run too small to share, back to back (a hot pool): what a run costs over the
    // plain loop it replaces.
    let mut g = configure(c, "tiny_run_of_4", 4);
    g.bench_function("loop", |b| b.iter(|| (0..4u64).map(|i| std::hint::black_box(i) + 1).sum::<u64>()));
    g.bench_function("fanout_fold_index", |b| {
        b.iter(|| pool.fold_index(0..4, || 0u64, |a, i| a + std::hint::black_box(i as u64) + 1, |a, b| a + b))
    });
    g.bench_function("fanout_run_fold", |b| {
        b.iter(|| pool.run_fold(0..4u64, || 0u64, |a, i, _| a + std::hint::black_box(i) + 1, |a, b| a + b))
    });
    g.bench_function("rayon", |b| {
        b.iter(|| (0..4u64).into_par_iter().map(|i| std::hint::black_box(i) + 1).sum::<u64>())
    });
    g.finish();
}

criterion_group!(core, benches);
criterion_main!(core);
