#![cfg(loom)]
//! Model checks of the whole pool: termination, sleep/wake and the deque together.
//!
//! Under loom, `Pool::builder().num_threads(1).build()` starts one loom worker thread;
//! the model's main thread is the run's caller. Follow-on work is a binary tree: item
//! `(depth, id)` pushes `(depth - 1, 2 id + 1)` and `(depth - 1, 2 id + 2)` while
//! `depth > 0`, so the ids of a tree of depth `d` are exactly `0..2^(d+1) - 1`. The
//! caller publishes part of its private work once the worker is idle, so the worker
//! wakes, steals and runs items while the caller runs the rest.
//!
//! Executions are counted with loom atomics, incremented and read with `Relaxed`: the
//! counts are correct after `run` returns only if the termination protocol orders every
//! execution before the return (loom would otherwise let the read see an older value).
//! Dropping the pool must stop and join the worker; a worker parked forever would be a
//! loom deadlock.

use fanout::{Pool, RunError};
use fanout_loom_tests::{Bound, model};
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any, resume_unwind};
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
use std::sync::{Arc as StdArc, Once};

/// The payload of the panic a task raises on purpose.
struct ItemPanic;

/// Keeps the deliberate panics quiet (loom explores them many times); every other
/// panic goes to the hook that was installed before.
fn quiet_item_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<ItemPanic>() {
                previous(info);
            }
        }));
    });
}

fn tree_size(depth: usize) -> usize {
    (1 << (depth + 1)) - 1
}

/// Counts, across all executions of a model, those in which some item ran on a thread
/// other than the run's caller: a check that the model really exercises the worker
/// (publishing, waking, stealing) and not just the caller running everything alone.
#[derive(Clone, Default)]
struct WorkerRan(StdArc<StdAtomicUsize>);

impl WorkerRan {
    fn record(&self) {
        self.0.fetch_add(1, StdOrdering::Relaxed);
    }

    fn assert_seen(&self, name: &str) {
        let n = self.0.load(StdOrdering::Relaxed);
        eprintln!("loom model {name}: the worker ran an item in {n} executions");
        assert!(n > 0, "{name}: the worker never ran an item; the model does not exercise it");
    }
}

/// One run of the tree of depth `depth`; every item must have run exactly once, all of
/// them before `run` returns. Says whether the worker ran any of them.
fn run_tree(pool: &Pool, depth: usize) -> bool {
    let caller = thread::current().id();
    let runs: Vec<AtomicUsize> = (0..tree_size(depth)).map(|_| AtomicUsize::new(0)).collect();
    let on_worker = AtomicBool::new(false);
    pool.run([(depth, 0usize)], |(level, id), ctx| {
        runs[id].fetch_add(1, Ordering::Relaxed);
        if thread::current().id() != caller {
            on_worker.store(true, Ordering::Relaxed);
        }
        if level > 0 {
            ctx.push((level - 1, 2 * id + 1));
            ctx.push((level - 1, 2 * id + 2));
        }
    });
    for (id, count) in runs.iter().enumerate() {
        assert_eq!(count.load(Ordering::Relaxed), 1, "item {id} must have run exactly once when run returns");
    }
    on_worker.load(Ordering::Relaxed)
}

/// Runs the tree of depth `depth` `runs` times in a row on a pool of `workers`
/// workers, then drops the pool.
fn tree_model(name: &str, workers: usize, depth: usize, runs: usize, bound: Bound) {
    let worker_ran = WorkerRan::default();
    let seen = worker_ran.clone();
    model(name, bound, Some(100_000), move || {
        let pool = Pool::builder().num_threads(workers).build().expect("a pool");
        let mut on_worker = false;
        for _ in 0..runs {
            on_worker |= run_tree(&pool, depth);
        }
        if on_worker {
            seen.record();
        }
        drop(pool);
    });
    worker_ran.assert_seen(name);
}

/// One seed with two follow-ons (three items).
#[test]
fn run_tree_depth_1() {
    tree_model("pool::run_tree_depth_1", 1, 1, 1, Bound::Exactly(3));
}

/// Seed 2: seven items, two levels of follow-ons.
#[test]
fn run_tree_depth_2() {
    tree_model("pool::run_tree_depth_2", 1, 2, 1, Bound::AtMost(2));
}

/// Two runs in a row on the same pool: the worker leaves the first run (the caller
/// waits for it), goes back to sleep, and must be woken for the second.
#[test]
fn two_runs_in_a_row() {
    tree_model("pool::two_runs_in_a_row", 1, 1, 2, Bound::AtMost(2));
}

/// Two workers and the caller on the three-item tree.
#[test]
fn run_tree_two_workers() {
    tree_model("pool::run_tree_two_workers", 2, 1, 1, Bound::AtMost(2));
}

/// One seed with two follow-ons, the first of which panics. The caller publishes that
/// one, so it runs on the worker or on the caller, depending on who gets it; either way
/// `run` must return (the run terminates) and resume the panic on the caller.
#[test]
fn run_resumes_panic() {
    quiet_item_panics();
    // Executions in which the panic was raised on the worker rather than the caller.
    let worker_ran = WorkerRan::default();
    let seen = worker_ran.clone();
    model("pool::run_resumes_panic", Bound::Exactly(2), Some(100_000), move || {
        let pool = Pool::builder().num_threads(1).build().expect("a one-worker pool");
        let caller = thread::current().id();
        let runs: Vec<AtomicUsize> = (0..tree_size(1)).map(|_| AtomicUsize::new(0)).collect();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            pool.run([(1usize, 0usize)], |(level, id), ctx| {
                runs[id].fetch_add(1, Ordering::Relaxed);
                if id == 1 {
                    if thread::current().id() != caller {
                        seen.record();
                    }
                    panic_any(ItemPanic);
                }
                if level > 0 {
                    ctx.push((level - 1, 2 * id + 1));
                    ctx.push((level - 1, 2 * id + 2));
                }
            })
        }));
        match outcome {
            Ok(_) => panic!("run returned normally although an item panicked"),
            // Anything but our payload is a failure of the model itself (loom's own
            // panics included): pass it on.
            Err(payload) if !payload.is::<ItemPanic>() => resume_unwind(payload),
            Err(_) => {}
        }
        assert_eq!(runs[0].load(Ordering::Relaxed), 1, "the seed ran once");
        assert_eq!(runs[1].load(Ordering::Relaxed), 1, "the panicking item ran once");
        assert!(runs[2].load(Ordering::Relaxed) <= 1, "no item runs twice");
        drop(pool);
    });
    worker_ran.assert_seen("pool::run_resumes_panic");
}

/// One run on a one-worker pool of the items `0..items`: `seeds`, and what each item
/// pushes (`children`). Every item must run exactly once before `run` returns, and
/// the worker must run some item in some execution.
fn one_worker_model(
    name: &'static str,
    items: usize,
    seeds: std::ops::Range<usize>,
    children: fn(usize) -> std::ops::Range<usize>,
) {
    let worker_ran = WorkerRan::default();
    let seen = worker_ran.clone();
    model(name, Bound::AtMost(2), Some(100_000), move || {
        let pool = Pool::builder().num_threads(1).build().expect("a pool");
        let caller = thread::current().id();
        let runs: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
        let on_worker = AtomicBool::new(false);
        pool.run(seeds.clone(), |id, ctx| {
            runs[id].fetch_add(1, Ordering::Relaxed);
            if thread::current().id() != caller {
                on_worker.store(true, Ordering::Relaxed);
            }
            for child in children(id) {
                ctx.push(child);
            }
        });
        for (id, count) in runs.iter().enumerate() {
            assert_eq!(count.load(Ordering::Relaxed), 1, "item {id} must have run exactly once when run returns");
        }
        if on_worker.load(Ordering::Relaxed) {
            seen.record();
        }
        drop(pool);
    });
    worker_ran.assert_seen(name);
}

/// A seed with four leaf follow-ons. With four items in its private stack the caller
/// publishes two at once, so its deque holds two items that the worker and the caller
/// (popping its own deque) take from opposite ends.
#[test]
fn run_fan_out_4() {
    one_worker_model("pool::run_fan_out_4", 5, 0..1, |id| if id == 0 { 1..5 } else { 0..0 });
}

/// Three seeds, each with one follow-on, on one worker. Under loom the caller pulls
/// seeds two at a time, so it pulls a second chunk once its stack has run dry; the
/// unpulled seed must keep the run from being declared done (rule 3), and the worker
/// may steal from either chunk. Every item runs exactly once before `run` returns.
#[test]
fn seeds_pulled_in_chunks() {
    one_worker_model("pool::seeds_pulled_in_chunks", 6, 0..3, |id| if id < 3 { id + 3..id + 4 } else { 0..0 });
}

/// `runs` runs in a row of the three-item tree, each of which the worker must take part
/// in: the caller publishes leaf 1 (the worker counts as demand whenever it holds no
/// item, and its deque is empty, so `should_publish` holds) and then, in item 2, waits
/// until leaf 1 has run, which only the worker can do. So each run makes the worker,
/// idle since the previous run (or since the pool started), find the run, steal the
/// leaf, run dry and leave; between runs it goes back through the sleep registry
/// (`prepare`, re-check, `park`), racing the next run's publication, which must wake
/// it. A lost wake-up leaves the caller spinning in item 2 for good, which its bounded
/// wait reports (`mutant_sleep` is caught so); every item must run exactly once
/// before each `run` returns. The model leans on the publication policy: a caller that
/// kept both children would fail the bounded wait too.
fn worker_every_run_model(name: &str, runs: usize, bound: Bound) {
    model(name, bound, Some(100_000), move || {
        let pool = Pool::builder().num_threads(1).build().expect("a pool");
        let caller = thread::current().id();
        for round in 0..runs {
            let counts: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
            pool.run([0usize], |id, ctx| {
                counts[id].fetch_add(1, Ordering::Relaxed);
                match id {
                    0 => {
                        ctx.push(1);
                        ctx.push(2);
                    }
                    1 => assert_ne!(thread::current().id(), caller, "run {round}: the caller ran the shared leaf"),
                    // Relaxed: only whether the leaf ran; `run`'s return orders the rest.
                    // Bounded, so that a worker never woken fails with this message
                    // rather than with loom running out of steps.
                    _ => {
                        let mut spins = 0;
                        while counts[1].load(Ordering::Relaxed) == 0 {
                            spins += 1;
                            assert!(spins < 1000, "run {round}: the worker was never woken for the shared leaf");
                            thread::yield_now();
                        }
                    }
                }
            });
            for (id, count) in counts.iter().enumerate() {
                assert_eq!(count.load(Ordering::Relaxed), 1, "run {round}: item {id} must have run exactly once");
            }
        }
        drop(pool);
    });
}

/// Three runs in a row, each fed to the worker by a wake-up (see
/// `worker_every_run_model`): three park / wake cycles of one worker. Preemption bound
/// 1: the cycles happen without any preemption, and bound 2 costs over four minutes
/// (two runs at bound 2: 25 s).
#[test]
fn worker_woken_for_three_runs() {
    worker_every_run_model("pool::worker_woken_for_three_runs", 3, Bound::AtMost(1));
}

/// The range of `range_split_map`. The caller's first block is index 0; it then shares
/// `3..6` and keeps `1..3`, and whoever walks `3..6` may share `5..6` in turn.
const N_SPLIT: usize = 6;

/// `map_index` over `0..N_SPLIT` on the caller and one worker. The caller's walk splits
/// the upper half of what is left off to the idle worker (under loom every split is
/// worth a wake-up, `range::walk`), and the worker's walk may split its part again for
/// the caller once the caller runs dry. Every index runs exactly once, all before
/// `map_index` returns, and the results land in input order. Counts the executions in
/// which the worker ran an index, and those in which the shared half `3..6` was itself
/// split between the two threads.
#[test]
fn range_split_map() {
    let worker_ran = WorkerRan::default();
    let seen = worker_ran.clone();
    let split_again = StdArc::new(StdAtomicUsize::new(0));
    let split_again2 = StdArc::clone(&split_again);
    model("pool::range_split_map", Bound::AtMost(2), Some(100_000), move || {
        let pool = Pool::builder().num_threads(1).build().expect("a pool");
        let caller = thread::current().id();
        let runs: Vec<AtomicUsize> = (0..N_SPLIT).map(|_| AtomicUsize::new(0)).collect();
        let on_worker: Vec<AtomicBool> = (0..N_SPLIT).map(|_| AtomicBool::new(false)).collect();
        let out = pool.map_index(0..N_SPLIT, |i| {
            runs[i].fetch_add(1, Ordering::Relaxed);
            if thread::current().id() != caller {
                on_worker[i].store(true, Ordering::Relaxed);
            }
            i * 10
        });
        let expected: Vec<usize> = (0..N_SPLIT).map(|i| i * 10).collect();
        assert_eq!(out, expected, "every index's result, in input order");
        for (i, count) in runs.iter().enumerate() {
            assert_eq!(count.load(Ordering::Relaxed), 1, "index {i} must have run exactly once when map_index returns");
        }
        let where_ran: Vec<bool> = on_worker.iter().map(|w| w.load(Ordering::Relaxed)).collect();
        if where_ran.contains(&true) {
            seen.record();
        }
        if where_ran[3..].contains(&true) && where_ran[3..].contains(&false) {
            split_again2.fetch_add(1, StdOrdering::Relaxed);
        }
        drop(pool);
    });
    worker_ran.assert_seen("pool::range_split_map");
    let n = split_again.load(StdOrdering::Relaxed);
    eprintln!("loom model pool::range_split_map: the shared half was split again in {n} executions");
    assert!(n > 0, "pool::range_split_map: the shared half was never split again");
}

/// A blocking run (`runner().blocking()`: the seed range in the run's shared queue,
/// every walk sharing the rest of its range before each index) over `0..3` whose index
/// 1 fails. The call returns that error with its index; indices 0 (the walk that
/// shares 1.. runs it first) and 1 ran once, index 2 at most once; and nothing runs
/// after the call returned: the counts read right after it equal those read once the
/// pool's drop has joined the worker (loom would let the first reads miss an
/// increment that does not happen before the return).
#[test]
fn blocking_range_with_a_failure() {
    let worker_ran = WorkerRan::default();
    let seen = worker_ran.clone();
    model("pool::blocking_range_with_a_failure", Bound::AtMost(2), Some(100_000), move || {
        let pool = Pool::builder().num_threads(1).build().expect("a pool");
        let caller = thread::current().id();
        let runs: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        let on_worker = AtomicBool::new(false);
        let result = pool.runner().blocking().try_for_each_index(0..3, |i| {
            runs[i].fetch_add(1, Ordering::Relaxed);
            if thread::current().id() != caller {
                on_worker.store(true, Ordering::Relaxed);
            }
            if i == 1 { Err(i) } else { Ok(()) }
        });
        assert_eq!(result, Err(RunError::Failed { error: 1, index: Some(1) }), "the failing index's error");
        let at_return: Vec<usize> = runs.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(at_return[..2], [1, 1], "indices 0 and 1 ran exactly once before the call returned");
        assert!(at_return[2] <= 1, "index 2 ran {} times", at_return[2]);
        if on_worker.load(Ordering::Relaxed) {
            seen.record();
        }
        drop(pool);
        let after_join: Vec<usize> = runs.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(at_return, after_join, "an index ran after the call had returned");
    });
    worker_ran.assert_seen("pool::blocking_range_with_a_failure");
}
