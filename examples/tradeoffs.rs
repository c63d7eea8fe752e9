//! The tradeoffs table: the same workloads through a sequential loop, `fanout`'s
//! work-stealing pool and `rayon`, with ns/item, speedup over sequential, and rank.
//!
//! ```text
//! cargo run --release --example tradeoffs               # full table (< 60 s on 2 cores)
//! cargo run --release --example tradeoffs -- --quick    # parked only, fewer rounds (~15 s)
//! cargo run --release --example tradeoffs -- --json     # one JSON object per cell
//! cargo run --release --example tradeoffs -- --csv      # the same as CSV
//! cargo run --release --example tradeoffs -- --svg FILE # also write the chart
//! cargo run --release --example tradeoffs -- --sweep    # item cost where strategies cross over
//! cargo run --release --example tradeoffs -- --threads 4 --workload W1,W4
//! ```
//!
//! The harness (states, interleaved shuffled rounds, medians, ranks, result checks,
//! the printers) is the library's `fanout::compare`; this file only defines W1-W8.
//!
//! Every variant is timed in three pool states, because a program meets all three:
//!
//! - *parked*: after 10 ms of idleness, nothing warmed (a program's runs between
//!   phases, between files); the headline figure;
//! - *after others*: right after another runtime's threads ran (a short rayon run
//!   before fanout, static-split and strategy variants; a short fanout run before rayon);
//! - *hot*: right after an untimed run of the variant itself (back-to-back runs).
//!
//! Variants and states are interleaved round by round, in a new (seeded, shuffled)
//! order every round, and each cell reports the median, so that a noisy machine shifts
//! all variants alike. Every variant's result is checked against the sequential one.
//! W4 and W6 get a time budget (8 and 12 s): a variant far slower than the rest there
//! (a channel or a lock per tiny task, a rayon scope spawn per item) does fewer
//! rounds, and its row says so. `--quick` times the parked state alone, in fewer
//! rounds.

mod workloads;

/// Strategies pay per item (a channel send, a lock); W1's 1 ns items go to them in
/// ranges of this many indices, as a Go programmer would batch them.
const W1_CHUNK: u64 = 1000;

use fanout::Pool;
use fanout::compare::{Compare, Group, PoolState, Report};
use fanout::strategy::{ChannelPool, FoldWorkload, MutexQueue, Spawner, Strategy};
use rayon::prelude::*;
use std::time::Instant;
use workloads::*;

/// W1–W3 and W5 for the strategies: an item is an index range, summed into the
/// thread's own accumulator.
struct RangeSum<F> {
    f: F,
}

impl<F: Fn(u64) -> u64 + Sync> FoldWorkload for RangeSum<F> {
    type Item = std::ops::Range<u64>;
    type Acc = u64;
    fn identity(&self) -> u64 {
        0
    }
    fn execute<S: Spawner<Self::Item>>(&self, r: Self::Item, sum: &mut u64, _: &mut S) {
        *sum = r.map(&self.f).fold(*sum, u64::wrapping_add);
    }
    fn reduce(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

/// W4 for the strategies: each task adds `tiny(id)` and pushes its children.
struct Tree;

impl FoldWorkload for Tree {
    type Item = (u64, u32);
    type Acc = u64;
    fn identity(&self) -> u64 {
        0
    }
    fn execute<S: Spawner<Self::Item>>(&self, (id, depth): Self::Item, sum: &mut u64, spawner: &mut S) {
        *sum = sum.wrapping_add(tiny(id));
        if let Some(children) = w4_children(id, depth) {
            for c in children {
                spawner.push(c);
            }
        }
    }
    fn reduce(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

/// One item of `mix(i, k)` per seed, for the sweep: every strategy hands out every item.
struct PerItem {
    k: u32,
}

impl FoldWorkload for PerItem {
    type Item = u64;
    type Acc = u64;
    fn identity(&self) -> u64 {
        0
    }
    fn execute<S: Spawner<u64>>(&self, i: u64, sum: &mut u64, _: &mut S) {
        *sum = sum.wrapping_add(mix(i, self.k));
    }
    fn reduce(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

/// The reference ceiling for flat loops: `threads` plain scoped threads, each summing an
/// equal share of `0..n` (thread start-up included). No scheduler can do much better.
fn static_split<'a, F: Fn(u64) -> u64 + Send + Sync + Copy + 'a>(threads: usize, n: u64, f: F) -> Variant<'a> {
    Variant {
        name: "static split",
        run: Box::new(move || {
            let share = n.div_ceil(threads as u64);
            std::thread::scope(|s| {
                let handles: Vec<_> = (1..threads as u64)
                    .map(|t| s.spawn(move || (t * share..((t + 1) * share).min(n)).map(f).fold(0, u64::wrapping_add)))
                    .collect();
                let mine = (0..share.min(n)).map(f).fold(0, u64::wrapping_add);
                handles.into_iter().fold(mine, |acc, h| acc.wrapping_add(h.join().unwrap()))
            })
        }),
    }
}

/// W4's ceiling: the tree's subtrees dealt out evenly to `threads` plain scoped threads
/// up front (possible only because the shape is known in advance), each walking its
/// share depth-first with a `Vec` stack.
fn w4_static_split(threads: usize) -> u64 {
    // Enough subtrees at depth 3 (64) to deal them out evenly.
    let mut frontier = vec![(0u64, 0u32)];
    let mut sum = 0u64;
    while frontier.first().is_some_and(|&(_, d)| d < 3) {
        let mut next = Vec::new();
        for (id, depth) in frontier {
            sum = sum.wrapping_add(tiny(id));
            next.extend(w4_children(id, depth).into_iter().flatten());
        }
        frontier = next;
    }
    let walk = |mut stack: Vec<(u64, u32)>| {
        let mut acc = 0u64;
        while let Some((id, depth)) = stack.pop() {
            acc = acc.wrapping_add(tiny(id));
            if let Some(children) = w4_children(id, depth) {
                for c in children {
                    stack.push(c);
                }
            }
        }
        acc
    };
    let shares: Vec<Vec<(u64, u32)>> =
        (0..threads).map(|t| frontier.iter().copied().skip(t).step_by(threads).collect()).collect();
    std::thread::scope(|s| {
        let mut shares = shares.into_iter();
        let mine = shares.next().unwrap_or_default();
        let handles: Vec<_> = shares.map(|share| s.spawn(move || walk(share))).collect();
        handles.into_iter().fold(sum.wrapping_add(walk(mine)), |acc, h| acc.wrapping_add(h.join().unwrap()))
    })
}

/// Seeds for a strategy run: `0..n` in items of `chunk` indices.
fn chunks(n: u64, chunk: u64) -> Vec<std::ops::Range<u64>> {
    (0..n.div_ceil(chunk)).map(|c| c * chunk..((c + 1) * chunk).min(n)).collect()
}

/// A strategy variant over index ranges.
fn strategy_sum<'a, S: Strategy + 'a, F: Fn(u64) -> u64 + Sync + Copy + 'a>(
    name: &'static str,
    s: &'a S,
    n: u64,
    chunk: u64,
    f: F,
) -> Variant<'a> {
    Variant { name, run: Box::new(move || s.run_fold(chunks(n, chunk), &RangeSum { f })) }
}

fn strategy_tree<'a, S: Strategy + 'a>(name: &'static str, s: &'a S) -> Variant<'a> {
    Variant { name, run: Box::new(move || s.run_fold(vec![(0u64, 0u32)], &Tree)) }
}

struct Options {
    quick: bool,
    json: bool,
    csv: bool,
    svg: Option<String>,
    sweep: bool,
    threads: usize,
    workloads: Vec<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        quick: false,
        json: false,
        csv: false,
        svg: None,
        sweep: false,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        workloads: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--json" => opts.json = true,
            "--csv" => opts.csv = true,
            "--sweep" => opts.sweep = true,
            "--svg" => opts.svg = Some(args.next().ok_or("--svg needs a file name")?),
            "--threads" => {
                let v = args.next().ok_or("--threads needs a number")?;
                opts.threads = v.parse().map_err(|_| format!("--threads: not a number: {v}"))?;
                if opts.threads == 0 {
                    return Err("--threads must be at least 1".into());
                }
            }
            "--workload" => {
                let v = args.next().ok_or("--workload needs a list, e.g. W1,W4")?;
                opts.workloads = v.split(',').map(|w| w.trim().to_uppercase()).collect();
            }
            "-h" | "--help" => {
                println!(
                    "usage: tradeoffs [--quick] [--json | --csv] [--svg FILE] [--sweep] [--threads N] [--workload W1,W2,W3,W4,W5,W6,W7,W8]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other} (try --help)")),
        }
    }
    for w in &opts.workloads {
        if !["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"].contains(&w.as_str()) {
            return Err(format!("unknown workload {w}; known: W1, W2, W3, W4, W5, W6, W7, W8"));
        }
    }
    Ok(opts)
}

/// One way of running a workload; returns a checksum compared across variants.
struct Variant<'a> {
    name: &'static str,
    run: Box<dyn Fn() -> u64 + 'a>,
}

struct Workload<'a> {
    id: &'static str,
    title: String,
    items: u64,
    rounds: usize,
    /// Seconds, for workloads with rows far slower than the rest (see the module
    /// docs); a quarter of it with `--quick`, which times one state instead of four
    /// runs a round.
    budget_s: Option<f64>,
    variants: Vec<Variant<'a>>,
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tradeoffs: {e}");
            std::process::exit(2);
        }
    };
    let threads = opts.threads;
    let rayon_pool =
        std::sync::Arc::new(rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("rayon pool"));
    let rayon_for_others = std::sync::Arc::clone(&rayon_pool);
    // Every strategy's threads start here, once, outside the timing. "After others":
    // a short run (about 50 us of work) of another runtime than the variant's own.
    let cmp = Compare::builder()
        .threads(threads)
        .progress(!opts.json && !opts.csv)
        .states(if opts.quick { &[PoolState::Parked] } else { &PoolState::ALL })
        .after_others(move |variant, pool| {
            let n = 1usize << 16;
            let sum = if variant.starts_with("rayon") {
                pool.fold_index(0..n, || 0u64, |a, i| a.wrapping_add(tiny(i as u64)), u64::wrapping_add)
            } else {
                rayon_for_others.install(|| (0..n as u64).into_par_iter().map(tiny).reduce(|| 0, u64::wrapping_add))
            };
            std::hint::black_box(sum);
        })
        .build()
        .expect("the comparison's strategies");
    if opts.sweep {
        sweep(threads, opts.quick);
        return;
    }
    let k = calibrate_mix(1000.0);
    let k20 = calibrate_mix(20.0);
    let k50us = calibrate_mix(50_000.0);
    let r = |full: usize, quick: usize| if opts.quick { quick } else { full };
    let (channel, mutex, mutex_batch) = (cmp.channel(), cmp.mutex_queue(), cmp.mutex_queue_batched());
    // For blocking work, more threads than cores: the strategies and a second pool.
    let many = threads * 8;
    let channel_many = ChannelPool::new(many).expect("threads > 0");
    let mutex_many = MutexQueue::new(many, 1).expect("threads > 0");
    let pool_many = Pool::builder().num_threads(many).pin(false).build().expect("fanout pool");

    let pool = cmp.pool();
    let pool_many = &pool_many;
    let rp = &*rayon_pool;
    let mut all = vec![
        Workload {
            id: "W1",
            title: format!("sum of tiny(i), {W1_N} items (~1 ns each; strategies get items of {W1_CHUNK})"),
            items: W1_N,
            rounds: r(15, 7),
            budget_s: None,
            variants: vec![
                Variant { name: "sequential", run: Box::new(|| (0..W1_N).map(tiny).fold(0, u64::wrapping_add)) },
                Variant {
                    name: "fanout",
                    run: Box::new(|| {
                        pool.fold_index(
                            0..W1_N as usize,
                            || 0u64,
                            |a, i| a.wrapping_add(tiny(i as u64)),
                            u64::wrapping_add,
                        )
                    }),
                },
                Variant {
                    name: "fanout try",
                    run: Box::new(|| {
                        pool.try_fold_index(
                            0..W1_N as usize,
                            || 0u64,
                            |a, i| Ok::<_, ()>(a.wrapping_add(tiny(i as u64))),
                            u64::wrapping_add,
                        )
                        .expect("nothing fails")
                    }),
                },
                Variant {
                    name: "rayon",
                    run: Box::new(|| {
                        rp.install(|| (0..W1_N).into_par_iter().map(tiny).reduce(|| 0, u64::wrapping_add))
                    }),
                },
                static_split(threads, W1_N, tiny),
                strategy_sum("channel", channel, W1_N, W1_CHUNK, tiny),
                strategy_sum("mutex-queue", mutex, W1_N, W1_CHUNK, tiny),
            ],
        },
        Workload {
            id: "W2",
            title: format!("sum of mix(i, {k}), {W2_N} items (~1 us each)"),
            items: W2_N,
            rounds: r(7, 3),
            budget_s: None,
            variants: vec![
                Variant {
                    name: "sequential",
                    run: Box::new(move || (0..W2_N).map(|i| mix(i, k)).fold(0, u64::wrapping_add)),
                },
                Variant {
                    name: "fanout",
                    run: Box::new(move || {
                        pool.fold_index(
                            0..W2_N as usize,
                            || 0u64,
                            |a, i| a.wrapping_add(mix(i as u64, k)),
                            u64::wrapping_add,
                        )
                    }),
                },
                Variant {
                    name: "rayon",
                    run: Box::new(move || {
                        rp.install(|| (0..W2_N).into_par_iter().map(|i| mix(i, k)).reduce(|| 0, u64::wrapping_add))
                    }),
                },
                static_split(threads, W2_N, move |i| mix(i, k)),
                strategy_sum("channel", channel, W2_N, 1, move |i| mix(i, k)),
                strategy_sum("mutex-queue", mutex, W2_N, 1, move |i| mix(i, k)),
            ],
        },
        Workload {
            id: "W3",
            title: format!("mix(i, {k}) with the first 5% of items 50x dearer, {W3_N} items (~3.5 us on average)"),
            items: W3_N,
            rounds: r(5, 3),
            budget_s: None,
            variants: vec![
                Variant {
                    name: "sequential",
                    run: Box::new(move || (0..W3_N).map(|i| skewed(i, k)).fold(0, u64::wrapping_add)),
                },
                Variant {
                    name: "fanout",
                    run: Box::new(move || {
                        pool.fold_index(
                            0..W3_N as usize,
                            || 0u64,
                            |a, i| a.wrapping_add(skewed(i as u64, k)),
                            u64::wrapping_add,
                        )
                    }),
                },
                Variant {
                    name: "rayon",
                    run: Box::new(move || {
                        rp.install(|| (0..W3_N).into_par_iter().map(|i| skewed(i, k)).reduce(|| 0, u64::wrapping_add))
                    }),
                },
                strategy_sum("channel", channel, W3_N, 1, move |i| skewed(i, k)),
                strategy_sum("mutex-queue", mutex, W3_N, 1, move |i| skewed(i, k)),
            ],
        },
        Workload {
            id: "W4",
            title: format!("follow-on tree, 4 children to depth {W4_DEPTH}, {W4_TASKS} tasks"),
            items: W4_TASKS,
            rounds: r(21, 7),
            budget_s: Some(8.0),
            variants: vec![
                Variant { name: "sequential", run: Box::new(|| w4_recursive(0, 0)) },
                Variant { name: "fanout", run: Box::new(|| w4_fanout(pool)) },
                Variant { name: "fanout try", run: Box::new(|| w4_fanout_try(pool)) },
                Variant { name: "rayon join", run: Box::new(|| rp.install(|| w4_rayon_join(0, 0))) },
                Variant { name: "rayon scope", run: Box::new(|| rp.install(w4_rayon_scope)) },
                Variant { name: "static split", run: Box::new(move || w4_static_split(threads)) },
                strategy_tree("channel", channel),
                strategy_tree("mutex-queue", mutex),
                strategy_tree("mutex-queue/16", mutex_batch),
            ],
        },
        Workload {
            id: "W6",
            title: format!("wide fan-out: one task pushes {W6_N} follow-ons of mix(i, {k20}) (~20 ns each)"),
            items: W6_N,
            rounds: r(9, 5),
            budget_s: Some(12.0),
            variants: vec![
                Variant {
                    name: "sequential",
                    run: Box::new(move || (0..W6_N).map(|i| mix(i, k20)).fold(0, u64::wrapping_add)),
                },
                Variant {
                    // The sequential program with the same shape: push every index on a
                    // `Vec`, then pop them (on this VM the fresh memory costs as much
                    // as the work).
                    name: "sequential Vec",
                    run: Box::new(move || {
                        let mut stack: Vec<u64> = (0..W6_N).collect();
                        let mut sum = 0u64;
                        while let Some(i) = stack.pop() {
                            sum = sum.wrapping_add(mix(i, k20));
                        }
                        sum
                    }),
                },
                Variant { name: "fanout", run: Box::new(move || w6_fanout(pool, k20)) },
                Variant { name: "rayon scope", run: Box::new(move || rp.install(|| w6_rayon_scope(k20))) },
                static_split(threads, W6_N, move |i| mix(i, k20)),
            ],
        },
        Workload {
            id: "W7",
            title: format!("{W7_RUNS} small runs back to back, each of {W7_ITEMS} x mix(i, {k}) (~1 us each)"),
            items: W7_RUNS * W7_ITEMS,
            rounds: r(15, 5),
            budget_s: None,
            variants: vec![
                Variant {
                    name: "sequential",
                    run: Box::new(move || {
                        (0..W7_RUNS).fold(0, |acc, _| (0..W7_ITEMS).map(|i| mix(i, k)).fold(acc, u64::wrapping_add))
                    }),
                },
                Variant {
                    name: "fanout",
                    run: Box::new(move || {
                        (0..W7_RUNS).fold(0, |acc, _| {
                            let run = pool.fold_index(
                                0..W7_ITEMS as usize,
                                || 0u64,
                                |a, i| a.wrapping_add(mix(i as u64, k)),
                                u64::wrapping_add,
                            );
                            acc.wrapping_add(run)
                        })
                    }),
                },
                Variant {
                    name: "fanout run",
                    run: Box::new(move || {
                        (0..W7_RUNS).fold(0, |acc, _| {
                            let run = pool.run_fold(
                                0..W7_ITEMS,
                                || 0u64,
                                |a, i, _| a.wrapping_add(mix(i, k)),
                                u64::wrapping_add,
                            );
                            acc.wrapping_add(run)
                        })
                    }),
                },
                Variant {
                    name: "rayon",
                    run: Box::new(move || {
                        (0..W7_RUNS).fold(0, |acc, _| {
                            let run = rp.install(|| {
                                (0..W7_ITEMS).into_par_iter().map(|i| mix(i, k)).reduce(|| 0, u64::wrapping_add)
                            });
                            acc.wrapping_add(run)
                        })
                    }),
                },
            ],
        },
        Workload {
            id: "W8",
            title: format!("one run of {W8_SEEDS} seeds of mix(i, {k50us}) (~50 us each)"),
            items: W8_SEEDS,
            rounds: r(15, 7),
            budget_s: None,
            variants: vec![
                Variant {
                    name: "sequential",
                    run: Box::new(move || (0..W8_SEEDS).map(|i| mix(i, k50us)).fold(0, u64::wrapping_add)),
                },
                Variant {
                    name: "fanout",
                    run: Box::new(move || {
                        pool.run_fold(0..W8_SEEDS, || 0u64, |a, i, _| a.wrapping_add(mix(i, k50us)), u64::wrapping_add)
                    }),
                },
                Variant {
                    name: "rayon",
                    run: Box::new(move || {
                        rp.install(|| {
                            (0..W8_SEEDS).into_par_iter().map(|i| mix(i, k50us)).reduce(|| 0, u64::wrapping_add)
                        })
                    }),
                },
                static_split(threads, W8_SEEDS, move |i| mix(i, k50us)),
            ],
        },
        Workload {
            id: "W5",
            title: format!("{W5_N} items that block ~50 us each (I/O-like); x8 = 8 threads per core ({many} threads)"),
            items: W5_N,
            rounds: r(5, 3),
            budget_s: None,
            variants: vec![
                Variant { name: "sequential", run: Box::new(|| (0..W5_N).map(blocking).fold(0, u64::wrapping_add)) },
                Variant {
                    name: "fanout",
                    run: Box::new(|| {
                        pool.fold_index(
                            0..W5_N as usize,
                            || 0u64,
                            |a, i| a.wrapping_add(blocking(i as u64)),
                            u64::wrapping_add,
                        )
                    }),
                },
                Variant {
                    name: "rayon",
                    run: Box::new(|| {
                        rp.install(|| (0..W5_N).into_par_iter().map(blocking).reduce(|| 0, u64::wrapping_add))
                    }),
                },
                strategy_sum("channel", channel, W5_N, 1, blocking),
                strategy_sum("mutex-queue", mutex, W5_N, 1, blocking),
                Variant {
                    name: "fanout x8",
                    run: Box::new(|| {
                        pool_many.fold_index(
                            0..W5_N as usize,
                            || 0u64,
                            |a, i| a.wrapping_add(blocking(i as u64)),
                            u64::wrapping_add,
                        )
                    }),
                },
                Variant {
                    name: "fanout x8 blocking",
                    run: Box::new(|| {
                        // `blocking()` keeps every index not yet started stealable
                        // instead of splitting lazily, so all threads start at once.
                        pool_many
                            .runner()
                            .blocking()
                            .try_fold_index(
                                0..W5_N as usize,
                                || 0u64,
                                |a, i| Ok::<_, ()>(a.wrapping_add(blocking(i as u64))),
                                u64::wrapping_add,
                            )
                            .expect("nothing fails")
                    }),
                },
                strategy_sum("channel x8", &channel_many, W5_N, 1, blocking),
                strategy_sum("mutex-queue x8", &mutex_many, W5_N, 1, blocking),
            ],
        },
    ];
    if !opts.workloads.is_empty() {
        all.retain(|w| opts.workloads.iter().any(|x| x == w.id));
    }

    let started = Instant::now();
    let mut report = cmp.report("fanout tradeoffs");
    for w in all {
        let mut group = Group::new(w.id, w.title, w.items).rounds(w.rounds);
        if let Some(budget) = w.budget_s {
            group = group.budget(std::time::Duration::from_secs_f64(if opts.quick { budget / 4.0 } else { budget }));
        }
        for v in w.variants {
            group = group.variant(v.name, v.run);
        }
        report.push(cmp.measure(group));
    }
    for (w, v, what) in report.wrong_results() {
        eprintln!("tradeoffs: {w} {v}: wrong result: {what}");
    }
    if let Some(path) = &opts.svg {
        report.write_svg(path).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
    if opts.json {
        print!("{}", report.to_json());
    } else if opts.csv {
        print!("{}", report.to_csv());
    } else {
        print!("{report}");
        println!();
        for line in verdicts(&report) {
            println!("{line}");
        }
        println!("\n(measured in {:.1} s)", started.elapsed().as_secs_f64());
    }
    if !report.wrong_results().is_empty() {
        std::process::exit(1);
    }
}

/// `--sweep`: at which item cost each strategy comes within 10% of work stealing, and
/// at which it is as fast, on this machine (every item handed out on its own).
fn sweep(threads: usize, quick: bool) {
    let cmp = Compare::builder()
        .threads(threads)
        .rounds(if quick { 3 } else { 7 })
        .states(&[PoolState::Parked])
        .build()
        .expect("the comparison's strategies");
    let costs = [10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0];
    let works: Vec<PerItem> = costs.iter().map(|&ns| PerItem { k: calibrate_mix(ns) }).collect();
    let mut next = works.iter();
    let sweep = cmp.sweep(&costs, "fanout", |ns| {
        let work = next.next().expect("one workload per cost");
        // About 20 ms of work per run, at least 2,000 items.
        let n = ((2e7 / ns) as u64).clamp(2_000, 1_000_000);
        cmp.follow_on(format!("{ns} ns"), format!("{n} items of ~{ns} ns"), move || (0..n).collect(), work)
    });
    println!(
        "fanout sweep: {threads} threads, pool parked before each run; each of n items handed out on its own, \
         ~20 ms of work per run; speed relative to fanout's work stealing"
    );
    print!("{sweep}");
    println!("\nspeed relative to fanout at each cost (ns): {costs:?}");
    for (name, relative) in sweep.relative() {
        let cells: Vec<String> = relative.iter().map(|r| format!("{r:.2}")).collect();
        println!("  {name:<16} {}", cells.join("  "));
    }
}

/// Plain-language conclusions drawn from this run's numbers only.
fn verdicts(report: &Report) -> Vec<String> {
    let get = |w: &str, v: &str| report.cell(w, v, PoolState::Parked);
    // The fastest variant of a workload, parked: (name, cell).
    let fastest = |w: &str| {
        report
            .table(w)?
            .rows
            .iter()
            .filter(|r| r.wrong.is_none())
            .filter_map(|r| Some((r.variant.as_str(), r.cell(PoolState::Parked)?)))
            .min_by(|a, b| a.1.median_ns.total_cmp(&b.1.median_ns))
    };
    let mut out = Vec::new();
    out.push("Pool parked (10 ms idle, nothing warmed) unless a line says otherwise:".into());
    for w in ["W1", "W2", "W3", "W4", "W6", "W7", "W8", "W5"] {
        let Some((best, cell)) = fastest(w) else {
            continue;
        };
        let ours = get(w, "fanout").map_or(0.0, |c| c.speedup);
        out.push(format!(
            "- {w}: fastest is {best} ({:.2}x sequential); fanout runs at {:.2}x sequential.",
            cell.speedup, ours
        ));
    }
    let in_state = |w: &str, v: &str, state: PoolState| report.cell(w, v, state).map_or(0.0, |c| c.speedup);
    for w in ["W4", "W6"] {
        let Some(states) = report.table(w).map(|t| &t.states) else { continue };
        if get(w, "fanout").is_some() && states.len() > 1 {
            let ours: Vec<String> =
                states.iter().map(|&st| format!("{} {:.2}x", st.name(), in_state(w, "fanout", st))).collect();
            let split: Vec<String> =
                states.iter().map(|&st| format!("{} {:.2}x", st.name(), in_state(w, "static split", st))).collect();
            out.push(format!(
                "- {w} by pool state: fanout {}; the static split (threads spawned per run) {}.",
                ours.join(", "),
                split.join(", ")
            ));
        }
    }
    if let (Some(f), Some(j), Some(c), Some(m), Some(mb)) = (
        get("W4", "fanout"),
        get("W4", "rayon join"),
        get("W4", "channel"),
        get("W4", "mutex-queue"),
        get("W4", "mutex-queue/16"),
    ) {
        out.push(format!(
            "- Follow-on work with tiny tasks (W4): work stealing costs {:.1} ns/task, rayon::join {:.1}, \
             mutex queue {:.1} ({:.1} popping 16 at a time), channel {:.1}. A lock or a channel send per task \
             costs more than the task; fanout keeps follow-ons in a private buffer until a thread is idle.",
            f.ns_per_item, j.ns_per_item, m.ns_per_item, mb.ns_per_item, c.ns_per_item
        ));
    }
    if let (Some(f), Some(c), Some(m)) = (get("W2", "fanout"), get("W2", "channel"), get("W2", "mutex-queue")) {
        out.push(format!(
            "- Per-item overhead on ~1 us items (W2): the channel pool spends {:+.0} ns/item and the mutex queue \
             {:+.0} ns/item relative to work stealing; below ~{:.0} us per item, prefer work stealing or batch items.",
            c.ns_per_item - f.ns_per_item,
            m.ns_per_item - f.ns_per_item,
            ((c.ns_per_item - f.ns_per_item).max(m.ns_per_item - f.ns_per_item) * 10.0 / 1000.0).max(0.1)
        ));
    }
    let try_costs: Vec<String> = ["W1", "W4"]
        .iter()
        .filter_map(|w| Some((w, get(w, "fanout")?, get(w, "fanout try")?)))
        .map(|(w, f, t)| format!("{w} {:+.0}%", (t.median_ns / f.median_ns - 1.0) * 100.0))
        .collect();
    if !try_costs.is_empty() {
        out.push(format!(
            "- Fallible runs (`try_*`, nothing failing) against the infallible ones, same run: {} \
             (medians; the two rows differ by noise alone when within a few percent).",
            try_costs.join(", ")
        ));
    }
    if let Some((best_name, best)) = fastest("W5") {
        let fan = get("W5", "fanout").map_or(0.0, |c| c.speedup);
        let lazy = get("W5", "fanout x8").map_or(0.0, |c| c.speedup);
        let eager = get("W5", "fanout x8 blocking").map_or(0.0, |c| c.speedup);
        out.push(format!(
            "- Blocking items (W5): threads beyond the core count pay off: {} reaches {:.1}x sequential, while a \
             one-per-core pool reaches {:.1}x. Here a channel's per-item cost is noise next to the wait, so channels \
             are a fine choice; give blocking work its own oversized pool rather than the pinned one, and run it \
             with `runner().blocking()` (every index stealable while one blocks: {:.1}x) rather than lazy splitting ({:.1}x), \
             which reaches the threads one split at a time.",
            best_name, best.speedup, fan, eager, lazy
        ));
    }
    out
}
