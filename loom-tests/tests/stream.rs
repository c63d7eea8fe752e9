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
//!
//! A worker that leaves the stream unparks the consumer too (for the consumer's wait
//! for workers to leave), which also ends a consumer's wait for a deposit: so a lost
//! deposit wake-up only shows when the worker stays in the stream afterwards. The
//! model with a waiting stage makes it stay; it catches `mutant_window_handoff`
//! (the deposit of the consumer's next batch does not wake it), the others do not.

use fanout::Pool;
use fanout_loom_tests::{Bound, model};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;
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
/// `take >= items`), then drops the iterator and the pool. With `stage_waits`, the
/// stage yields on item 0 and, on item 1, waits until the consumer has received item 0.
fn window_model(name: &'static str, workers: usize, items: usize, take: usize, stage_waits: bool, bound: Bound) {
    let seen = StdArc::new(StdAtomicUsize::new(0));
    let seen2 = StdArc::clone(&seen);
    model(name, bound, Some(200_000), move || {
        let pool = Pool::builder().num_threads(workers).build().expect("a pool");
        let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..items).map(|_| AtomicUsize::new(0)).collect());
        let counts = Arc::clone(&runs);
        let first_received = Arc::new(AtomicBool::new(false));
        let first_seen = Arc::clone(&first_received);
        let mut it = pool
            .stream(0..items)
            .window(2)
            .map(move |i| {
                counts[i].fetch_add(1, Ordering::Relaxed);
                if stage_waits && i == 0 {
                    // A slow item: whoever runs it lets the others go first.
                    thread::yield_now();
                }
                if stage_waits && i == 1 {
                    // Acquire: pairs with the consumer's Release below. Bounded, so
                    // that a consumer never woken fails with this message rather than
                    // with loom running out of steps.
                    let mut spins = 0;
                    while !first_seen.load(Ordering::Acquire) {
                        spins += 1;
                        assert!(spins < 1000, "the consumer never received item 0: a hand-off wake-up was lost");
                        thread::yield_now();
                    }
                }
                i * 10
            })
            .into_iter();
        let mut got = Vec::new();
        for r in it.by_ref().take(take) {
            got.push(r.expect("no item fails"));
            first_received.store(true, Ordering::Release);
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
    window_model("stream::window_2_one_worker", 1, 2, usize::MAX, false, Bound::AtMost(2));
}

/// The same with two workers racing for the source and the window (preemption bound
/// 1: the pool's two worker loops multiply the interleavings).
#[test]
fn window_2_two_workers() {
    window_model("stream::window_2_two_workers", 2, 2, usize::MAX, false, Bound::AtMost(1));
}

/// The consumer takes one item of two and drops the iterator while the worker may
/// be pulling or processing: the drop must wait for it and nothing may hang.
#[test]
fn window_2_early_drop() {
    window_model("stream::window_2_early_drop", 1, 2, 1, false, Bound::AtMost(2));
}

/// One worker; the stage yields on item 0 (a slow item) and, on item 1, waits until
/// the consumer has received item 0. When the worker processes item 0, the consumer
/// finds its batch in flight and parks; the worker deposits item 0 and claims item 1,
/// and then stays in the job (waiting in the stage), so its leaving cannot unpark the
/// consumer: only the deposit's wake-up can. A lost hand-off wake-up fails the stage's
/// bounded wait. (With two workers the consumer may claim item 1 itself while the
/// other worker holds item 0, and wait on itself: one worker only.)
#[test]
fn window_2_stage_waits_for_consumer() {
    window_model("stream::window_2_stage_waits_for_consumer", 1, 2, usize::MAX, true, Bound::AtMost(1));
}
