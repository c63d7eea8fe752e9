//! Randomized stress: seeded runs of random shapes, costs, panics, thread counts,
//! concurrent callers and nested runs. Every item must run exactly once (at most once
//! after a panic), every run must return, and dropping the pool must leave no thread.
//!
//! `FANOUT_STRESS_CASES=10000 cargo test --release --test stress` runs more cases
//! (default 300); `FANOUT_STRESS_SEED=n` replays one case.

mod common;

use common::{Rng, thread_count};
use fanout::Pool;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// xorshift64*: small, seedable, good enough to pick shapes.
#[derive(Clone)]
/// A task tree with dense ids: `children[id]` are pushed when `id` runs.
struct Tree {
    seeds: Vec<u32>,
    children: Vec<Vec<u32>>,
    cost: Vec<u16>,
    panic_at: Option<u32>,
    nested_every: Option<u32>,
    /// Run through `Runner::try_run` with these controls instead of `Pool::run`.
    controls: Option<Controls>,
    name: &'static str,
}

/// The run controls a tree may be run under (at most one way to stop early).
#[derive(Clone, Debug)]
struct Controls {
    limit: Option<usize>,
    /// This item returns an error.
    fail_at: Option<u32>,
    /// This item cancels the run's token.
    cancel_at: Option<u32>,
    /// Every item whose id is a multiple of this pushes its children at high priority.
    high_every: Option<u32>,
}

fn gen_tree(rng: &mut Rng) -> Tree {
    let n = 1 + rng.below(60_000) as usize;
    let mut children = vec![Vec::new(); n];
    let mut seeds = vec![0u32];
    let name = match rng.below(5) {
        0 => {
            // Wide: one root with every other node as its child.
            children[0] = (1..n as u32).collect();
            "wide"
        }
        1 => {
            // Chain: up to 100k long.
            let n = children.len();
            for (i, c) in children.iter_mut().enumerate().take(n - 1) {
                c.push(i as u32 + 1);
            }
            "chain"
        }
        2 => {
            // Binary tree in heap order.
            for (i, kids) in children.iter_mut().enumerate() {
                kids.extend([2 * i + 1, 2 * i + 2].into_iter().filter(|&c| c < n).map(|c| c as u32));
            }
            "binary"
        }
        3 => {
            // Random fan-out 0..=5, built breadth-first.
            let mut next = 1usize;
            let mut i = 0usize;
            while next < n {
                let k = if i + 1 >= next { 1 + rng.below(5) } else { rng.below(6) } as usize;
                for _ in 0..k {
                    if next < n {
                        children[i].push(next as u32);
                        next += 1;
                    }
                }
                i += 1;
            }
            "random"
        }
        _ => {
            // A forest: many seeds, each with a few children.
            let roots = 1 + rng.below(n as u64 / 2 + 1) as usize;
            seeds = (0..roots.min(n) as u32).collect();
            let mut next = seeds.len();
            // Only nodes already reached (ids below `next`) get children.
            for (i, kids) in children.iter_mut().enumerate() {
                while next < n && i < next && rng.below(3) == 0 {
                    kids.push(next as u32);
                    next += 1;
                }
            }
            // Unreached ids become seeds too, so every id runs once.
            seeds.extend(next as u32..n as u32);
            "forest"
        }
    };
    let heavy = rng.below(4) == 0;
    let cost = (0..n).map(|_| if heavy { rng.below(300) as u16 } else { 0 }).collect();
    let mut panic_at = (rng.below(8) == 0).then(|| rng.below(n as u64) as u32);
    let nested_every = (rng.below(8) == 0).then(|| 50 + rng.below(500) as u32);
    let controls = (rng.below(3) == 0).then(|| {
        let stop = rng.below(6);
        let at = rng.below(n as u64) as u32;
        Controls {
            limit: (rng.below(2) == 0).then(|| 1 + rng.below(3) as usize),
            fail_at: (stop == 0).then_some(at),
            cancel_at: (stop == 1).then_some(at),
            high_every: (rng.below(3) == 0).then(|| 1 + rng.below(20) as u32),
        }
    });
    if controls.as_ref().is_some_and(|c| c.fail_at.is_some() || c.cancel_at.is_some()) {
        // One way to stop early per tree, so the expected outcome is known.
        panic_at = None;
    }
    Tree { seeds, children, cost, panic_at, nested_every, controls, name }
}

fn spin(cost: u16) -> u64 {
    let mut x = u64::from(cost) | 1;
    for _ in 0..cost {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x)
}

/// Runs one tree through `Runner::try_run` under its controls and checks it: the limit
/// is never exceeded, no item runs twice, and the run ends as its controls say.
fn check_controlled(pool: &Pool, tree: &Tree, c: &Controls) -> Result<(), String> {
    let counts: Vec<AtomicU8> = (0..tree.children.len()).map(|_| AtomicU8::new(0)).collect();
    let in_flight = AtomicU64::new(0);
    let most = AtomicU64::new(0);
    let token = fanout::CancelToken::new();
    let mut runner = pool.runner().cancel_token(&token);
    if let Some(limit) = c.limit {
        runner = runner.limit(limit);
    }
    let result = runner.try_run(tree.seeds.iter().copied(), |id, ctx| {
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        counts[id as usize].fetch_add(1, Ordering::Relaxed);
        spin(tree.cost[id as usize]);
        let high = c.high_every.is_some_and(|every| id % every == 0);
        for &child in &tree.children[id as usize] {
            if high { ctx.push_high(child) } else { ctx.push(child) }
        }
        if c.cancel_at == Some(id) {
            token.cancel();
        }
        in_flight.fetch_sub(1, Ordering::SeqCst);
        if c.fail_at == Some(id) { Err(id) } else { Ok(()) }
    });
    let name = tree.name;
    if let Some(limit) = c.limit
        && most.load(Ordering::SeqCst) > limit as u64
    {
        return Err(format!("{name} {c:?}: {} items in flight", most.load(Ordering::SeqCst)));
    }
    if let Some(bad) = counts.iter().position(|n| n.load(Ordering::Relaxed) > 1) {
        return Err(format!("{name} {c:?}: item {bad} ran twice"));
    }
    let ran = counts.iter().filter(|n| n.load(Ordering::Relaxed) == 1).count();
    match (result, c.fail_at, c.cancel_at) {
        (Ok(stats), None, _) if ran == counts.len() && stats.executed as usize == ran => Ok(()),
        (Err(fanout::RunError::Failed { error, .. }), Some(at), _) if error == at => Ok(()),
        (Err(fanout::RunError::Cancelled { completed }), None, Some(_)) if completed as usize == ran => Ok(()),
        (other, _, _) => Err(format!("{name} {c:?}: ran {ran} of {}, got {other:?}", counts.len())),
    }
}

/// Runs one tree on `pool` and checks it. Returns an error text naming the problem.
fn check_tree(pool: &Pool, tree: &Tree) -> Result<(), String> {
    if let Some(c) = &tree.controls {
        return check_controlled(pool, tree, c);
    }
    let counts: Vec<AtomicU8> = (0..tree.children.len()).map(|_| AtomicU8::new(0)).collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.run(tree.seeds.iter().copied(), |id, ctx| {
            counts[id as usize].fetch_add(1, Ordering::Relaxed);
            spin(tree.cost[id as usize]);
            if tree.panic_at == Some(id) {
                panic!("stress panic at {id}");
            }
            if let Some(every) = tree.nested_every
                && id % every == 0
            {
                let s = pool.fold_index(0..200, || 0u64, |a, i| a + i as u64, |a, b| a + b);
                assert_eq!(s, 19_900, "nested fold");
            }
            for &c in &tree.children[id as usize] {
                ctx.push(c);
            }
        })
    }));
    match (result, tree.panic_at) {
        (Ok(stats), None) => {
            if let Some(bad) = counts.iter().position(|c| c.load(Ordering::Relaxed) != 1) {
                return Err(format!("{}: item {bad} ran {} times", tree.name, counts[bad].load(Ordering::Relaxed)));
            }
            if stats.executed as usize != counts.len() {
                return Err(format!("{}: stats.executed {} != {}", tree.name, stats.executed, counts.len()));
            }
            Ok(())
        }
        (Err(payload), Some(at)) => {
            let msg = payload.downcast_ref::<String>().cloned().unwrap_or_default();
            if msg != format!("stress panic at {at}") {
                return Err(format!("{}: wrong panic payload {msg:?}", tree.name));
            }
            if let Some(bad) = counts.iter().position(|c| c.load(Ordering::Relaxed) > 1) {
                return Err(format!("{}: item {bad} ran twice after a panic", tree.name));
            }
            Ok(())
        }
        (Ok(_), Some(at)) => Err(format!("{}: item {at} should have panicked", tree.name)),
        (Err(_), None) => Err(format!("{}: unexpected panic", tree.name)),
    }
}

/// One case: a pool of 1–4 threads, 1–3 concurrent callers, a few trees each.
fn run_case(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let threads = 1 + rng.below(4) as usize;
    let callers = 1 + rng.below(3) as usize;
    let pool = Pool::builder().num_threads(threads).pin(rng.below(2) == 0).build().map_err(|e| e.to_string())?;
    let trees: Vec<Vec<Tree>> =
        (0..callers).map(|_| (0..1 + rng.below(3)).map(|_| gen_tree(&mut rng)).collect()).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = trees
            .iter()
            .map(|mine| {
                let pool = &pool;
                s.spawn(move || mine.iter().try_for_each(|t| check_tree(pool, t)))
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err("caller thread died".into())))
    })
    .map_err(|e| format!("threads {threads}, callers {callers}: {e}"))
}

#[test]
fn randomized_runs() {
    let cases: u64 = std::env::var("FANOUT_STRESS_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let only: Option<u64> = std::env::var("FANOUT_STRESS_SEED").ok().and_then(|v| v.parse().ok());
    // The test harness runs tests in parallel threads; this test owns its own pools,
    // so the thread count check compares against the count at start.
    let before = thread_count();
    // Planned panics are part of the test; keep their reports out of the log.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let planned = info.payload().downcast_ref::<String>().is_some_and(|m| m.starts_with("stress panic at"));
        if !planned {
            default_hook(info);
        }
    }));
    // A hang fails the test with the seed: a watchdog aborts the process.
    let current = std::sync::Arc::new(AtomicU64::new(u64::MAX));
    let started = std::sync::Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    {
        let (current, started) = (current.clone(), started.clone());
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let seed = current.load(Ordering::Relaxed);
                let since = t0.elapsed().as_secs().saturating_sub(started.load(Ordering::Relaxed));
                if seed != u64::MAX && since > 120 {
                    eprintln!(
                        "stress: case with seed {seed} has not returned after 120 s; replay with FANOUT_STRESS_SEED={seed}"
                    );
                    std::process::abort();
                }
            }
        });
    }
    let seeds: Vec<u64> = match only {
        Some(s) => vec![s],
        None => (1..=cases).collect(),
    };
    let start = Instant::now();
    for &seed in &seeds {
        started.store(t0.elapsed().as_secs(), Ordering::Relaxed);
        current.store(seed, Ordering::Relaxed);
        if let Err(e) = run_case(seed) {
            panic!("stress case failed (replay with FANOUT_STRESS_SEED={seed}): {e}");
        }
    }
    current.store(u64::MAX, Ordering::Relaxed);
    let after = thread_count();
    // +1 for the watchdog; other tests in this binary: none.
    assert!(after <= before + 1, "threads before {before}, after {after}: a pool leaked threads");
    eprintln!("stress: {} cases passed in {:.1} s", seeds.len(), start.elapsed().as_secs_f64());
}
