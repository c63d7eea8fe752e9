//! The tradeoffs table: the same workloads through a sequential loop, `fanout`'s
//! work-stealing pool and `rayon`, with ns/item, speedup over sequential, and rank.
//!
//! ```text
//! cargo run --release --example tradeoffs               # full table (< 60 s on 2 cores)
//! cargo run --release --example tradeoffs -- --quick    # fewer rounds (< 20 s)
//! cargo run --release --example tradeoffs -- --json     # one JSON object per cell
//! cargo run --release --example tradeoffs -- --threads 4 --workload W1,W4
//! ```
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

mod workloads;

/// Strategies pay per item (a channel send, a lock); W1's 1 ns items go to them in
/// ranges of this many indices, as a Go programmer would batch them.
const W1_CHUNK: u64 = 1000;

use fanout::Pool;
use fanout::strategy::{ChannelPool, MutexQueue, Spawner, Strategy, Workload as StrategyWorkload};
use rayon::prelude::*;
use std::io::Write;
use std::time::Instant;
use workloads::*;

/// W1–W3 and W5 for the strategies: an item is an index range, the checksum sharded.
struct RangeSum<'a, F> {
    f: F,
    sum: &'a Checksum,
}

impl<F: Fn(u64) -> u64 + Sync> StrategyWorkload for RangeSum<'_, F> {
    type Item = std::ops::Range<u64>;
    fn execute<S: Spawner<Self::Item>>(&self, r: Self::Item, _: &mut S) {
        self.sum.add(r.map(&self.f).fold(0, u64::wrapping_add));
    }
}

/// W4 for the strategies: each task adds `tiny(id)` and pushes its children.
struct Tree<'a> {
    sum: &'a Checksum,
}

impl StrategyWorkload for Tree<'_> {
    type Item = (u64, u32);
    fn execute<S: Spawner<Self::Item>>(&self, (id, depth): Self::Item, spawner: &mut S) {
        self.sum.add(tiny(id));
        if let Some(children) = w4_children(id, depth) {
            for c in children {
                spawner.push(c);
            }
        }
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
    s: S,
    sum: &'a Checksum,
    n: u64,
    chunk: u64,
    f: F,
) -> Variant<'a> {
    Variant {
        name,
        run: Box::new(move || {
            s.run(chunks(n, chunk), &RangeSum { f, sum });
            sum.take()
        }),
    }
}

fn strategy_tree<'a, S: Strategy + 'a>(name: &'static str, s: S, sum: &'a Checksum) -> Variant<'a> {
    Variant {
        name,
        run: Box::new(move || {
            s.run(vec![(0u64, 0u32)], &Tree { sum });
            sum.take()
        }),
    }
}

struct Options {
    quick: bool,
    json: bool,
    threads: usize,
    workloads: Vec<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut opts = Options {
        quick: false,
        json: false,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        workloads: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--json" => opts.json = true,
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
                println!("usage: tradeoffs [--quick] [--json] [--threads N] [--workload W1,W2,W3,W4,W5,W6,W7]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other} (try --help)")),
        }
    }
    for w in &opts.workloads {
        if !["W1", "W2", "W3", "W4", "W5", "W6", "W7"].contains(&w.as_str()) {
            return Err(format!("unknown workload {w}; known: W1, W2, W3, W4, W5, W6, W7"));
        }
    }
    Ok(opts)
}

/// How long the pool idles before a *parked* run: well past every runtime's spinning.
const PARK_TIME: std::time::Duration = std::time::Duration::from_millis(10);

/// The pool state a variant is timed in (see the module docs).
#[derive(Clone, Copy, PartialEq)]
enum State {
    Parked,
    AfterOthers,
    Hot,
}

const STATES: [State; 3] = [State::Parked, State::AfterOthers, State::Hot];

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Parked => "parked",
            State::AfterOthers => "after others",
            State::Hot => "hot",
        }
    }
}

/// One way of running a workload; returns a checksum compared across variants.
struct Variant<'a> {
    name: &'static str,
    run: Box<dyn Fn() -> u64 + 'a>,
}

/// What puts the machine in a state before a timed run: short runs of other runtimes.
struct Others<'a> {
    pool: &'a Pool,
    rayon: &'a rayon::ThreadPool,
}

impl Others<'_> {
    /// Runs another runtime than `variant`'s for a moment (about 50 us of work).
    fn run_before(&self, variant: &str) {
        let n = 1u64 << 16;
        let sum = if variant.starts_with("rayon") {
            self.pool.fold_index(0..n as usize, || 0u64, |a, i| a.wrapping_add(tiny(i as u64)), u64::wrapping_add)
        } else {
            self.rayon.install(|| (0..n).into_par_iter().map(tiny).reduce(|| 0, u64::wrapping_add))
        };
        std::hint::black_box(sum);
    }
}

struct Workload<'a> {
    id: &'static str,
    title: String,
    items: u64,
    rounds: usize,
    variants: Vec<Variant<'a>>,
}

struct Cell {
    workload: &'static str,
    variant: &'static str,
    state: State,
    median_ns: f64,
    ns_per_item: f64,
    speedup: f64,
    rank: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn measure(w: &Workload<'_>, others: &Others<'_>, progress: &mut Progress) -> Vec<Cell> {
    let runs: Vec<(usize, State)> =
        STATES.iter().flat_map(|&state| (0..w.variants.len()).map(move |v| (v, state))).collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    // One untimed round, which also checks every variant's result.
    let mut reference: Option<u64> = None;
    for v in &w.variants {
        let sum = (v.run)();
        match reference {
            None => reference = Some(sum),
            Some(r) => assert_eq!(sum, r, "{} {}: wrong result", w.id, v.name),
        }
    }
    let mut order: Vec<usize> = (0..runs.len()).collect();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..w.rounds {
        // A new order every round (a seeded shuffle), so that no variant always follows
        // the same one.
        for k in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(k, (seed % (k as u64 + 1)) as usize);
        }
        for &r in &order {
            let (i, state) = runs[r];
            let v = &w.variants[i];
            match state {
                State::Parked => std::thread::sleep(PARK_TIME),
                State::AfterOthers => others.run_before(v.name),
                State::Hot => {
                    (v.run)();
                }
            }
            let start = Instant::now();
            let sum = (v.run)();
            samples[r].push(start.elapsed().as_nanos() as f64);
            assert_eq!(Some(sum), reference, "{} {}: wrong result", w.id, v.name);
        }
        progress.step();
    }
    let medians: Vec<f64> = samples.into_iter().map(median).collect();
    let mut cells = Vec::new();
    for &state in &STATES {
        let of_state: Vec<usize> = (0..runs.len()).filter(|&r| runs[r].1 == state).collect();
        // Variant 0 is the sequential baseline, timed in the same state.
        let seq = medians[of_state[0]];
        let mut ranked = of_state.clone();
        ranked.sort_by(|&a, &b| medians[a].total_cmp(&medians[b]));
        for &r in &of_state {
            cells.push(Cell {
                workload: w.id,
                variant: w.variants[runs[r].0].name,
                state,
                median_ns: medians[r],
                ns_per_item: medians[r] / w.items as f64,
                speedup: seq / medians[r],
                rank: ranked.iter().position(|&o| o == r).unwrap() + 1,
            });
        }
    }
    cells
}

struct Progress {
    done: usize,
    total: usize,
    enabled: bool,
}

impl Progress {
    fn step(&mut self) {
        self.done += 1;
        if self.enabled {
            let width = 30;
            let filled = width * self.done / self.total.max(1);
            eprint!("\r[{}{}] {}/{} rounds", "#".repeat(filled), " ".repeat(width - filled), self.done, self.total);
            let _ = std::io::stderr().flush();
            if self.done == self.total {
                eprintln!();
            }
        }
    }
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
    let pool = Pool::builder().num_threads(threads).build().expect("fanout pool");
    let rayon_pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("rayon pool");
    let k = calibrate_mix(1000.0);
    let k20 = calibrate_mix(20.0);
    let r = |full: usize, quick: usize| if opts.quick { quick } else { full };
    let channel = ChannelPool::new(threads).expect("threads > 0");
    let mutex = MutexQueue::new(threads, 1).expect("threads > 0");
    let mutex_batch = MutexQueue::new(threads, 16).expect("threads > 0");
    // For blocking work, more threads than cores: the strategies and a second pool.
    let many = threads * 8;
    let channel_many = ChannelPool::new(many).expect("threads > 0");
    let mutex_many = MutexQueue::new(many, 1).expect("threads > 0");
    let pool_many = Pool::builder().num_threads(many).pin(false).build().expect("fanout pool");
    let sum = &Checksum::new();

    let pool = &pool;
    let pool_many = &pool_many;
    let rp = &rayon_pool;
    let mut all = vec![
        Workload {
            id: "W1",
            title: format!("sum of tiny(i), {W1_N} items (~1 ns each; strategies get items of {W1_CHUNK})"),
            items: W1_N,
            rounds: r(21, 7),
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
                strategy_sum("channel", channel.clone(), sum, W1_N, W1_CHUNK, tiny),
                strategy_sum("mutex-queue", mutex.clone(), sum, W1_N, W1_CHUNK, tiny),
            ],
        },
        Workload {
            id: "W2",
            title: format!("sum of mix(i, {k}), {W2_N} items (~1 us each)"),
            items: W2_N,
            rounds: r(7, 3),
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
                strategy_sum("channel", channel.clone(), sum, W2_N, 1, move |i| mix(i, k)),
                strategy_sum("mutex-queue", mutex.clone(), sum, W2_N, 1, move |i| mix(i, k)),
            ],
        },
        Workload {
            id: "W3",
            title: format!("W2 with the first 5% of items 50x dearer, {W2_N} items"),
            items: W2_N,
            rounds: r(5, 3),
            variants: vec![
                Variant {
                    name: "sequential",
                    run: Box::new(move || (0..W2_N).map(|i| skewed(i, k)).fold(0, u64::wrapping_add)),
                },
                Variant {
                    name: "fanout",
                    run: Box::new(move || {
                        pool.fold_index(
                            0..W2_N as usize,
                            || 0u64,
                            |a, i| a.wrapping_add(skewed(i as u64, k)),
                            u64::wrapping_add,
                        )
                    }),
                },
                Variant {
                    name: "rayon",
                    run: Box::new(move || {
                        rp.install(|| (0..W2_N).into_par_iter().map(|i| skewed(i, k)).reduce(|| 0, u64::wrapping_add))
                    }),
                },
                strategy_sum("channel", channel.clone(), sum, W2_N, 1, move |i| skewed(i, k)),
                strategy_sum("mutex-queue", mutex.clone(), sum, W2_N, 1, move |i| skewed(i, k)),
            ],
        },
        Workload {
            id: "W4",
            title: format!("follow-on tree, 4 children to depth {W4_DEPTH}, {W4_TASKS} tasks"),
            items: W4_TASKS,
            rounds: r(21, 7),
            variants: vec![
                Variant { name: "sequential", run: Box::new(|| w4_recursive(0, 0)) },
                Variant { name: "fanout", run: Box::new(|| w4_fanout(pool)) },
                Variant { name: "fanout try", run: Box::new(|| w4_fanout_try(pool)) },
                Variant { name: "rayon join", run: Box::new(|| rp.install(|| w4_rayon_join(0, 0))) },
                Variant { name: "rayon scope", run: Box::new(|| rp.install(w4_rayon_scope)) },
                Variant { name: "static split", run: Box::new(move || w4_static_split(threads)) },
                strategy_tree("channel", channel.clone(), sum),
                strategy_tree("mutex-queue", mutex.clone(), sum),
                strategy_tree("mutex-queue/16", mutex_batch.clone(), sum),
            ],
        },
        Workload {
            id: "W6",
            title: format!("wide fan-out: one task pushes {W6_N} follow-ons of mix(i, {k20}) (~20 ns each)"),
            items: W6_N,
            rounds: r(11, 5),
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
                                |a, i, _| *a = a.wrapping_add(mix(i, k)),
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
            id: "W5",
            title: format!("{W5_N} items that block ~50 us each (I/O-like); x8 = 8 threads per core ({many} threads)"),
            items: W5_N,
            rounds: r(5, 3),
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
                strategy_sum("channel", channel.clone(), sum, W5_N, 1, blocking),
                strategy_sum("mutex-queue", mutex.clone(), sum, W5_N, 1, blocking),
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
                strategy_sum("channel x8", channel_many.clone(), sum, W5_N, 1, blocking),
                strategy_sum("mutex-queue x8", mutex_many.clone(), sum, W5_N, 1, blocking),
            ],
        },
    ];
    if !opts.workloads.is_empty() {
        all.retain(|w| opts.workloads.iter().any(|x| x == w.id));
    }

    let total: usize = all.iter().map(|w| w.rounds).sum();
    let mut progress = Progress { done: 0, total, enabled: !opts.json };
    let started = Instant::now();
    let mut cells = Vec::new();
    let others = Others { pool, rayon: rp };
    for w in &all {
        cells.extend(measure(w, &others, &mut progress));
    }

    if opts.json {
        for c in &cells {
            println!(
                "{{\"workload\":\"{}\",\"variant\":\"{}\",\"state\":\"{}\",\"threads\":{},\"median_ns\":{:.0},\"ns_per_item\":{:.4},\"speedup\":{:.4},\"rank\":{}}}",
                c.workload,
                c.variant,
                c.state.name(),
                threads,
                c.median_ns,
                c.ns_per_item,
                c.speedup,
                c.rank
            );
        }
        return;
    }
    println!(
        "fanout tradeoffs: {threads} worker threads ({} pinned), {} cores; medians of interleaved rounds; \
         speedup over sequential in the same state",
        pool.pinned_workers(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for w in &all {
        println!("\n{}  {}", w.id, w.title);
        println!(
            "  {:<18} {:>10} {:>8} {:>5} {:>13} {:>8}",
            "variant", "ns/item", "parked", "rank", "after others", "hot"
        );
        for c in cells.iter().filter(|c| c.workload == w.id && c.state == State::Parked) {
            let other = |state| {
                cells
                    .iter()
                    .find(|o| o.workload == w.id && o.variant == c.variant && o.state == state)
                    .map_or(0.0, |o| o.speedup)
            };
            println!(
                "  {:<18} {:>10.3} {:>7.2}x {:>5} {:>12.2}x {:>7.2}x",
                c.variant,
                c.ns_per_item,
                c.speedup,
                c.rank,
                other(State::AfterOthers),
                other(State::Hot)
            );
        }
    }
    println!();
    for line in verdicts(&cells) {
        println!("{line}");
    }
    println!("\n(measured in {:.1} s)", started.elapsed().as_secs_f64());
}

/// Plain-language conclusions drawn from this run's numbers only.
fn verdicts(all_cells: &[Cell]) -> Vec<String> {
    let parked: Vec<&Cell> = all_cells.iter().filter(|c| c.state == State::Parked).collect();
    let cells = &parked[..];
    let get = |w: &str, v: &str| cells.iter().copied().find(|c| c.workload == w && c.variant == v);
    let mut out = Vec::new();
    out.push("Pool parked (10 ms idle, nothing warmed) unless a line says otherwise:".into());
    for w in ["W1", "W2", "W3", "W4", "W6", "W7", "W5"] {
        let Some(best) = cells.iter().filter(|c| c.workload == w).min_by(|a, b| a.median_ns.total_cmp(&b.median_ns))
        else {
            continue;
        };
        let ours = get(w, "fanout").map_or(0.0, |c| c.speedup);
        out.push(format!(
            "- {w}: fastest is {} ({:.2}x sequential); fanout runs at {:.2}x sequential.",
            best.variant, best.speedup, ours
        ));
    }
    let in_state = |w: &str, v: &str, state: State| {
        all_cells.iter().find(|c| c.workload == w && c.variant == v && c.state == state).map_or(0.0, |c| c.speedup)
    };
    for w in ["W4", "W6"] {
        if get(w, "fanout").is_some() {
            let ours: Vec<String> =
                STATES.iter().map(|&st| format!("{} {:.2}x", st.name(), in_state(w, "fanout", st))).collect();
            let split: Vec<String> =
                STATES.iter().map(|&st| format!("{} {:.2}x", st.name(), in_state(w, "static split", st))).collect();
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
    if let Some(best) = cells.iter().filter(|c| c.workload == "W5").min_by(|a, b| a.median_ns.total_cmp(&b.median_ns)) {
        let fan = get("W5", "fanout").map_or(0.0, |c| c.speedup);
        let lazy = get("W5", "fanout x8").map_or(0.0, |c| c.speedup);
        let eager = get("W5", "fanout x8 blocking").map_or(0.0, |c| c.speedup);
        out.push(format!(
            "- Blocking items (W5): threads beyond the core count pay off: {} reaches {:.1}x sequential, while a \
             one-per-core pool reaches {:.1}x. Here a channel's per-item cost is noise next to the wait, so channels \
             are a fine choice; give blocking work its own oversized pool rather than the pinned one, and run it \
             with `runner().blocking()` (every index stealable while one blocks: {:.1}x) rather than lazy splitting ({:.1}x), \
             which reaches the threads one split at a time.",
            best.variant, best.speedup, fan, eager, lazy
        ));
    }
    out
}
