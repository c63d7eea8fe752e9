#![cfg(loom)]
//! Model checks of the run controls: the concurrency limit (activation within the
//! limit), the high-priority queue (part of the termination protocol's "work visible"
//! check), a task's error and a concurrent cancel (both stop the run: it must still
//! terminate, run no item twice, and report what completed).

use fanout::{CancelToken, Pool, RunError};
use fanout_loom_tests::{Bound, model};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// Items of a binary tree of depth 1: `(level, id)`, ids 0..3.
fn push_children(level: usize, id: usize, ctx: &mut fanout::Ctx<'_, (usize, usize)>) {
    if level > 0 {
        ctx.push((level - 1, 2 * id + 1));
        ctx.push((level - 1, 2 * id + 2));
    }
}

/// With `limit`, at most `limit` items are in flight at any moment, and every item
/// still runs exactly once.
fn limit_model(name: &str, workers: usize, limit: usize, bound: Bound) {
    model(name, bound, Some(100_000), move || {
        let pool = Pool::builder().num_threads(workers).build().expect("a pool");
        let runs: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        let in_flight = AtomicUsize::new(0);
        let result = pool.runner().limit(limit).try_run([(1usize, 0usize)], |(level, id), ctx| {
            // SeqCst: the count is the model's own observation of overlap.
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            assert!(now <= limit, "{now} items in flight with limit {limit}");
            runs[id].fetch_add(1, Ordering::Relaxed);
            push_children(level, id, ctx);
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, ()>(())
        });
        assert!(result.is_ok());
        for (id, count) in runs.iter().enumerate() {
            assert_eq!(count.load(Ordering::Relaxed), 1, "item {id} must have run exactly once");
        }
        drop(pool);
    });
}

#[test]
fn limit_one() {
    limit_model("control::limit_one", 1, 1, Bound::AtMost(2));
}

/// Two workers and the caller, at most two active: the second worker's activation
/// races the first one's and the caller's idle transitions. Three participants are
/// costly to explore: preemption bound 1.
#[test]
fn limit_two_of_three() {
    limit_model("control::limit_two_of_three", 2, 2, Bound::AtMost(1));
}

/// A seed pushes one normal item and one high-priority item: both must run exactly once
/// before `run` returns, whoever takes them (the urgent queue is a shared queue the
/// termination check must see).
#[test]
fn high_priority_items_are_not_lost() {
    model("control::high_priority_items_are_not_lost", Bound::AtMost(2), Some(100_000), || {
        let pool = Pool::builder().num_threads(1).build().expect("a pool");
        let runs: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        pool.run([0usize], |id, ctx| {
            runs[id].fetch_add(1, Ordering::Relaxed);
            if id == 0 {
                ctx.push(1);
                ctx.push_high(2);
            }
        });
        for (id, count) in runs.iter().enumerate() {
            assert_eq!(count.load(Ordering::Relaxed), 1, "item {id} must have run exactly once when run returns");
        }
        drop(pool);
    });
}

/// A failing item stops the run: it terminates, returns that error, and runs no item
/// twice (the failing item's sibling may or may not have run).
#[test]
fn error_stops_the_run() {
    model("control::error_stops_the_run", Bound::AtMost(2), Some(100_000), || {
        let pool = Pool::builder().num_threads(1).build().expect("a pool");
        let runs: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        let result = pool.try_run([(1usize, 0usize)], |(level, id), ctx| {
            runs[id].fetch_add(1, Ordering::Relaxed);
            if id == 1 {
                return Err(id);
            }
            push_children(level, id, ctx);
            Ok(())
        });
        assert_eq!(result.unwrap_err(), RunError::Failed { error: 1, index: None });
        assert_eq!(runs[0].load(Ordering::Relaxed), 1);
        assert_eq!(runs[1].load(Ordering::Relaxed), 1);
        assert!(runs[2].load(Ordering::Relaxed) <= 1, "no item runs twice");
        drop(pool);
    });
}

/// A token cancelled by another thread while a chain of items runs: the run terminates,
/// either finished or cancelled, and a cancelled run reports exactly the items that ran.
#[test]
fn cancel_from_another_thread() {
    model("control::cancel_from_another_thread", Bound::AtMost(2), Some(100_000), || {
        let pool = Pool::builder().num_threads(1).build().expect("a pool");
        let token = CancelToken::new();
        let canceller = {
            let token = token.clone();
            thread::spawn(move || token.cancel())
        };
        let ran = Arc::new(AtomicUsize::new(0));
        let result = pool.runner().cancel_token(&token).try_run([0usize], |n, ctx| {
            ran.fetch_add(1, Ordering::Relaxed);
            if n < 2 {
                ctx.push(n + 1);
            }
            Ok::<_, ()>(())
        });
        let ran = ran.load(Ordering::Relaxed);
        match result {
            Ok(stats) => assert_eq!((stats.executed, ran), (3, 3)),
            Err(RunError::Cancelled { completed }) => {
                assert_eq!(completed as usize, ran);
                assert!(ran <= 3);
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
        canceller.join().unwrap();
        drop(pool);
    });
}
