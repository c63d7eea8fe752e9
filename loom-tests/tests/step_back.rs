#![cfg(loom)]
//! Model checks of a run's caller stepping back (`Participant::step_back`): here every
//! caller steps back at its first checkpoint (`fanout::__loom::callers_step_back`, set
//! for this file's process only). It shares its private items and its unpulled seeds,
//! goes idle, frees its seat, wakes the worker and waits (coming back if it finds work
//! waiting with no worker inside; under loom that wait expires at once). Every item
//! must run exactly once, all before `run` returns, and in some executions the worker
//! runs all but the caller's first item. Nothing may stay parked (a loom deadlock).

use fanout::Pool;
use fanout_loom_tests::{Bound, model};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use std::sync::Arc as StdArc;
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};

/// One run on a one-worker pool over `seeds`, each item `id < items` pushing
/// `children(id)`; checks exactly-once and counts the executions in which the caller
/// ran only its first item (it stepped back, and the worker ran everything else).
fn step_back_model(
    name: &'static str,
    items: usize,
    seeds: std::ops::Range<usize>,
    children: fn(usize) -> std::ops::Range<usize>,
) {
    fanout::__loom::callers_step_back();
    let handed_over = StdArc::new(StdAtomicUsize::new(0));
    let seen = StdArc::clone(&handed_over);
    model(name, Bound::AtMost(2), Some(100_000), move || {
        let pool = Pool::builder().num_threads(1).build().expect("a pool");
        let caller = thread::current().id();
        let runs: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
        let by_caller = AtomicUsize::new(0);
        pool.run(seeds.clone(), |id, ctx| {
            runs[id].fetch_add(1, Ordering::Relaxed);
            if thread::current().id() == caller {
                by_caller.fetch_add(1, Ordering::Relaxed);
            }
            for child in children(id) {
                ctx.push(child);
            }
        });
        for (id, count) in runs.iter().enumerate() {
            assert_eq!(count.load(Ordering::Relaxed), 1, "item {id} must have run exactly once when run returns");
        }
        if by_caller.load(Ordering::Relaxed) == 1 {
            seen.fetch_add(1, StdOrdering::Relaxed);
        }
        drop(pool);
    });
    let n = handed_over.load(StdOrdering::Relaxed);
    eprintln!("loom model {name}: the caller ran one item and handed over the rest in {n} executions");
    assert!(n > 0, "{name}: the caller never stepped back after its first item");
}

/// One seed pushing two follow-ons: the caller steps back after the seed with both in
/// its private stack.
#[test]
fn step_back_with_follow_ons() {
    step_back_model("step_back::step_back_with_follow_ons", 3, 0..1, |id| if id == 0 { 1..3 } else { 0..0 });
}

/// Three seeds, pulled two at a time under loom: the caller steps back after the
/// first with one seed still in its stack and one unpulled, which it hands to the
/// global queue.
#[test]
fn step_back_with_seeds_left() {
    step_back_model("step_back::step_back_with_seeds_left", 3, 0..3, |_| 0..0);
}

/// The fallback for a worker that never comes: another thread's run on the same
/// one-worker pool may hold the worker in an item that waits until our run has
/// returned. Our caller steps back after its first item, and must come back for the
/// second (under loom its timed wait for a worker expires at once, so every order of
/// its return and the worker's arrival is explored). Checks exactly-once in both runs,
/// and that some execution has our caller run both items. Three threads and two runs:
/// about 630,000 executions at a preemption bound of 1 (a minute), so never more.
#[test]
fn caller_comes_back_when_no_worker_comes() {
    use loom::sync::{Arc, Notify};

    fanout::__loom::callers_step_back();
    let came_back = StdArc::new(StdAtomicUsize::new(0));
    let seen = StdArc::clone(&came_back);
    model("step_back::caller_comes_back_when_no_worker_comes", Bound::AtMost(1), Some(100_000), move || {
        let pool = Arc::new(Pool::builder().num_threads(1).build().expect("a pool"));
        let released = Arc::new(Notify::new());
        let other = {
            let (pool, released) = (Arc::clone(&pool), Arc::clone(&released));
            thread::spawn(move || {
                let runs: Vec<AtomicUsize> = (0..2).map(|_| AtomicUsize::new(0)).collect();
                pool.run(0..2, |id, _| {
                    runs[id].fetch_add(1, Ordering::Relaxed);
                    if id == 1 {
                        released.wait();
                    }
                });
                for (id, count) in runs.iter().enumerate() {
                    assert_eq!(count.load(Ordering::Relaxed), 1, "the other run's item {id} must run exactly once");
                }
            })
        };
        let caller = thread::current().id();
        let runs: Vec<AtomicUsize> = (0..2).map(|_| AtomicUsize::new(0)).collect();
        let by_caller = AtomicUsize::new(0);
        pool.run(0..2, |id, _| {
            runs[id].fetch_add(1, Ordering::Relaxed);
            if thread::current().id() == caller {
                by_caller.fetch_add(1, Ordering::Relaxed);
            }
        });
        for (id, count) in runs.iter().enumerate() {
            assert_eq!(count.load(Ordering::Relaxed), 1, "item {id} must have run exactly once when run returns");
        }
        if by_caller.load(Ordering::Relaxed) == 2 {
            seen.fetch_add(1, StdOrdering::Relaxed);
        }
        released.notify();
        other.join().expect("the other run");
    });
    let n = came_back.load(StdOrdering::Relaxed);
    eprintln!("loom model caller_comes_back_when_no_worker_comes: the caller ran both items in {n} executions");
    assert!(n > 0, "the caller never came back for its second item");
}
