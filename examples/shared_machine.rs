//! Two processes on one machine, as under `make -j2` or two analyzers at once: each runs
//! the same follow-on workload (W4, a tree of 1.4M tiny tasks, many times) on a pool
//! with a worker per core, pinned or unpinned, started at the same moment. Prints the
//! median wall time of the pair for each setting, next to one process alone, so the
//! pinning default can be judged where it matters.
//!
//! ```text
//! cargo run --release --example shared_machine             # 9 rounds
//! cargo run --release --example shared_machine -- --quick  # 3 rounds
//! ```
//!
//! Each round runs the settings in a new order; every child checks its results.

mod workloads;

use std::process::Command;
use std::time::{Duration, Instant};

/// Runs of the workload per process.
const RUNS: usize = 40;

fn child(pin: bool) {
    let pool = fanout::Pool::builder().pin(pin).build().expect("pool");
    let want = workloads::w4_recursive(0, 0);
    for _ in 0..RUNS {
        assert_eq!(workloads::w4_fanout(&pool), want, "wrong result");
    }
}

/// Starts `count` copies of this program as children with `pin`, waits for all, and
/// returns the wall time from the first start to the last exit.
fn pair(count: usize, pin: bool) -> Duration {
    let me = std::env::current_exe().expect("own path");
    let start = Instant::now();
    let children: Vec<_> = (0..count)
        .map(|_| Command::new(&me).arg(if pin { "--child-pinned" } else { "--child-unpinned" }).spawn().expect("spawn"))
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success(), "a child failed");
    }
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--child-pinned") => return child(true),
        Some("--child-unpinned") => return child(false),
        _ => {}
    }
    let rounds = if args.iter().any(|a| a == "--quick") { 3 } else { 9 };
    let cases = [
        ("1 process, pinned", 1, true),
        ("1 process, unpinned", 1, false),
        ("2 processes, pinned", 2, true),
        ("2 processes, unpinned", 2, false),
    ];
    let mut times = vec![Vec::new(); cases.len()];
    let mut order: Vec<usize> = (0..cases.len()).collect();
    for round in 0..rounds {
        order.rotate_left(1 + round % (cases.len() - 1));
        for &c in &order {
            std::thread::sleep(Duration::from_millis(20));
            times[c].push(pair(cases[c].1, cases[c].2));
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("shared_machine: {RUNS} W4 runs per process, a worker per core ({cores}), median of {rounds} rounds");
    let solo = median(times[0].clone());
    for ((name, _, _), t) in cases.iter().zip(times) {
        let t = median(t);
        println!("  {name:<24} {t:>10.2?}   {:.2}x the pinned process alone", t.as_secs_f64() / solo.as_secs_f64());
    }
}
