#![cfg(loom)]
//! Model checks of a stream's reorder window: the source pulled by whoever holds it,
//! one or two pool workers and the consumer (the model's main thread), window 2.
//!
//! Under loom, a window of 2 makes every batch one item, so the
//! items are pulled, processed and deposited one by one by whichever thread gets
//! there, and the window is full as soon as two items are out. Each model asserts
//! that the consumer sees the outputs in input order, that every item went through
//! the stage exactly once, and that everything terminates: the stream ends, dropping
//! the iterator returns (it waits for the workers to let go), and dropping the pool
//! joins the workers. A thread parked forever would be a loom deadlock.

use fanout::Pool;
use fanout_loom_tests::{Bound, model};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc as StdArc;
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};

/// Counts, across all executions, those in which a worker processed a batch: a check
/// that the model exercises the hand-off and not only the consumer working alone.
fn worker_batches_seen(name: &str, n: &StdAtomicUsize) {
    let n = n.load(StdOrdering::Relaxed);
    eprintln!("loom model {name}: a worker processed a batch in {n} executions");
    assert!(n > 0, "{name}: no worker ever processed a batch; the model does not exercise them");
}

/// Streams `items` items through a window of 2 and consumes `take` of them (all when
/// `take >= items`), then drops the iterator and the pool.
fn window_model(name: &'static str, workers: usize, items: usize, take: usize, bound: Bound) {
    let seen = StdArc::new(StdAtomicUsize::new(0));
    let seen2 = StdArc::clone(&seen);
    model(name, bound, Some(200_000), move || {
        let pool = Pool::builder().num_threads(workers).build().expect("a pool");
        let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..items).map(|_| AtomicUsize::new(0)).collect());
        let counts = Arc::clone(&runs);
        let mut it = pool
            .stream(0..items)
            .window(2)
            .map(move |i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
                i * 10
            })
            .into_iter();
        let mut got = Vec::new();
        for r in it.by_ref().take(take) {
            got.push(r.expect("no item fails"));
        }
        let expected: Vec<usize> = (0..items.min(take)).map(|i| i * 10).collect();
        assert_eq!(got, expected, "outputs in input order, none lost or repeated");
        let stats = it.stats();
        assert!(stats.max_buffered <= 2, "the window bounds what is pulled ahead: {stats:?}");
        if stats.batches_by_workers > 0 {
            seen2.fetch_add(1, StdOrdering::Relaxed);
        }
        drop(it);
        // After the drop no worker touches the stream: the counts are final.
        for (i, c) in runs.iter().enumerate() {
            let c = c.load(Ordering::Relaxed);
            if i < take {
                assert_eq!(c, 1, "item {i} was consumed, so it went through the stage exactly once");
            } else {
                assert!(c <= 1, "item {i} went through the stage {c} times");
            }
        }
        drop(pool);
    });
    worker_batches_seen(name, &seen);
}

/// Two items through a window of two, one worker: the window fills, so the pull that
/// finds the end of the source must wait for the consumer to free room; the stream
/// ends. (Three items: 1.8 million executions, 145 s; two keep the model cheap.)
#[test]
fn window_2_one_worker() {
    window_model("stream::window_2_one_worker", 1, 2, usize::MAX, Bound::AtMost(2));
}

/// The same with two workers racing for the source and the window (preemption bound
/// 1: the pool's two worker loops multiply the interleavings).
#[test]
fn window_2_two_workers() {
    window_model("stream::window_2_two_workers", 2, 2, usize::MAX, Bound::AtMost(1));
}

/// The consumer takes one item of two and drops the iterator while the worker may
/// be pulling or processing: the drop must wait for it and nothing may hang.
#[test]
fn window_2_early_drop() {
    window_model("stream::window_2_early_drop", 1, 2, 1, Bound::AtMost(2));
}
