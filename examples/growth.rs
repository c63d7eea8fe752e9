//! Cost per item as runs grow: ns/item at 10^4 .. 10^7 items of ~20 ns for four
//! shapes of follow-on work, next to the sequential loop in the same round.
//!
//! ```text
//! cargo run --release --example growth             # 10^4 .. 10^7 (about a minute)
//! cargo run --release --example growth -- --quick  # 10^4 .. 10^6
//! ```
//!
//! Shapes: `seeds` (every item a seed), `root` (one task pushes all), `chain` (each
//! task pushes the next), `tree` (each task pushes two children); `seeds, 1 worker` is
//! `seeds` on a pool of one worker (plus the caller). Each fanout run is timed from a
//! parked pool (10 ms idle before it, nothing warmed) and hot (right after an untimed
//! run of its own); the sequential loop runs in the same rotation. A per-item cost
//! that stays flat as `n` grows means no step of the engine costs more than the work.

mod workloads;

use fanout::Pool;
use std::time::{Duration, Instant};
use workloads::{calibrate_mix, mix};

#[derive(Clone, Copy)]
enum Shape {
    Seeds,
    Root,
    Chain,
    Tree,
}

/// The shape on a pool: every item `i < n` runs once and adds `mix(i, k)`.
fn run_fanout(pool: &Pool, shape: Shape, n: u64, k: u32) -> u64 {
    const ROOT: u64 = u64::MAX;
    let task = |sum: u64, i: u64, ctx: &mut fanout::Ctx<'_, u64>| {
        if i == ROOT {
            for j in 0..n {
                ctx.push(j);
            }
            return sum;
        }
        match shape {
            Shape::Chain if i + 1 < n => ctx.push(i + 1),
            Shape::Tree => {
                for c in [2 * i + 1, 2 * i + 2] {
                    if c < n {
                        ctx.push(c);
                    }
                }
            }
            _ => {}
        }
        sum.wrapping_add(mix(i, k))
    };
    match shape {
        Shape::Seeds => pool.run_fold(0..n, || 0u64, task, u64::wrapping_add),
        Shape::Root => pool.run_fold([ROOT], || 0u64, task, u64::wrapping_add),
        Shape::Chain | Shape::Tree => pool.run_fold([0], || 0u64, task, u64::wrapping_add),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = Pool::builder().num_threads(threads).build().expect("pool");
    let pool1 = Pool::builder().num_threads(1).build().expect("pool");
    let k = calibrate_mix(20.0);
    let sizes: &[u64] = if quick { &[10_000, 100_000, 1_000_000] } else { &[10_000, 100_000, 1_000_000, 10_000_000] };
    let cases: Vec<(&str, &Pool, Shape)> = vec![
        ("seeds", &pool, Shape::Seeds),
        ("root", &pool, Shape::Root),
        ("chain", &pool, Shape::Chain),
        ("tree", &pool, Shape::Tree),
        ("seeds, 1 worker", &pool1, Shape::Seeds),
    ];
    println!(
        "fanout growth: {threads} workers ({} pinned) and a 1-worker pool, mix(i, {k}) items (~20 ns); \
         ns/item, medians; speedup over the sequential loop in the same rotation",
        pool.pinned_workers()
    );
    println!("  {:<16} {:>10} {:>12} {:>16} {:>16}", "shape", "n", "seq ns/item", "parked", "hot");
    for &(name, p, shape) in &cases {
        let mut parked_costs = Vec::new();
        for &n in sizes {
            let expect = (0..n).map(|i| mix(i, k)).fold(0, u64::wrapping_add);
            // Keep each cell near a second or less: fewer rounds for larger runs.
            let rounds = if quick { 3 } else { (2_000_000 / n).clamp(5, 41) as usize };
            let (mut seq, mut parked, mut hot) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                let start = Instant::now();
                let s = (0..n).map(|i| mix(i, k)).fold(0, u64::wrapping_add);
                seq.push(start.elapsed().as_nanos() as f64);
                assert_eq!(s, expect);
                std::thread::sleep(Duration::from_millis(10));
                let start = Instant::now();
                assert_eq!(run_fanout(p, shape, n, k), expect, "{name} n={n}: wrong result");
                parked.push(start.elapsed().as_nanos() as f64);
                run_fanout(p, shape, n, k);
                let start = Instant::now();
                assert_eq!(run_fanout(p, shape, n, k), expect, "{name} n={n}: wrong result");
                hot.push(start.elapsed().as_nanos() as f64);
            }
            let (seq, parked, hot) = (median(seq), median(parked), median(hot));
            let per = |t: f64| t / n as f64;
            parked_costs.push(per(parked));
            println!(
                "  {:<16} {:>10} {:>12.2} {:>8.2} ({:.2}x) {:>8.2} ({:.2}x)",
                name,
                n,
                per(seq),
                per(parked),
                seq / parked,
                per(hot),
                seq / hot
            );
        }
        let (lo, hi) = parked_costs.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &c| (lo.min(c), hi.max(c)));
        println!("  {:<16} parked ns/item spread over the sizes: {:.2}x (largest / smallest)", name, hi / lo);
    }
}
