#![cfg(loom)]
//! Model checks of what the run engine assumes about the deque when a participant goes
//! idle (see the termination invariant in `src/engine/run.rs`): once the owner's `pop` returns
//! `None`, its deque is empty, so a participant that also found nothing elsewhere may
//! leave without stranding an item.
//!
//! Kept apart from `deque.rs` so that a failure here (these models are about a contract
//! between the deque and the run engine, not about exactly-once delivery) never hides
//! the results of the other deque models.
//!
//! Found with these models: `pop`'s last-item CAS on `head` can fail although no thief
//! claimed the item, because a thief that was still copying an older item finished
//! meanwhile (its `release` moved `steal` up to `real`). `pop` then returns `None` and
//! restores `bottom`, with the item still in the deque. A thief that looked while
//! `bottom` was lowered saw the deque empty, so both sides can go idle and the run can
//! finish with the item never executed.

use fanout::__loom::DEQUE_CAPACITY as CAP;
use fanout::deque::{Steal, Stealer, Worker};
use fanout_loom_tests::{Bound, assert_exactly_once, model, thief};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Owner-side push; the model's main thread owns the deque.
fn push(deque: &Worker<usize>, item: usize) {
    let pushed = deque.push(item);
    assert!(pushed.is_ok(), "push of {item} must fit");
}

/// `pop` returning `None` must mean the deque is empty: only the owner adds items, so
/// thieves can only make it emptier afterwards. (A participant of a run goes idle once
/// its own `pop` and its steals come back empty; an item left in its deque then depends
/// on another participant noticing it.)
#[test]
fn pop_none_means_empty() {
    model("deque_idle::pop_none_means_empty", Bound::Exactly(3), None, || {
        let deque = Worker::new(CAP);
        push(&deque, 0);
        push(&deque, 1);
        let stealer = thief(deque.stealer(), 1);

        let mut got = Vec::new();
        while let Some(item) = deque.pop() {
            got.push(item);
        }
        let left = deque.len();
        assert_eq!(left, 0, "pop returned None with {left} item(s) still in the deque");

        got.extend(stealer.join().unwrap());
        assert_exactly_once(got, 2);
    });
}

/// What the run engine relies on when a participant goes idle: once the owner's `pop`
/// has returned `None` and a thief's `steal` has returned `Empty`, the deque is empty.
/// No final drain here: every item must have been taken by one of the two.
#[test]
fn pop_none_and_steal_empty_mean_empty() {
    model("deque_idle::pop_none_and_steal_empty_mean_empty", Bound::Exactly(3), None, || {
        let deque = Worker::new(CAP);
        push(&deque, 0);
        push(&deque, 1);
        let stealer = thief(deque.stealer(), 2);

        let mut got = Vec::new();
        while let Some(item) = deque.pop() {
            got.push(item);
        }

        got.extend(stealer.join().unwrap());
        assert_exactly_once(got, 2);
    });
}

/// The same contract seen through the termination protocol: two participants, each
/// owning one real deque, follow the idle transition of `Run::take_part` and
/// `Run::work_until_idle` (src/engine/run.rs), transcribed: take items (own deque first, then a batch
/// steal from the other) until none is found; go idle (`active -= 1`, and whoever
/// brings it to zero sets `done`); then leave if `done`, re-join if any deque shows
/// work, or leave after the idle rounds (one under loom, as in the engine).
///
/// The whole-pool models in `pool.rs` run the real engine, but loom's bounded search did
/// not reach this interleaving there; this sketch keeps only the steps that matter.
/// When both participants have left, `done` must be set and both items must have run.
#[test]
fn idle_transition_strands_no_item() {
    struct Sketch {
        /// Each participant owns its deque's `Worker`; these are the thieves' ends.
        deques: [Stealer<usize>; 2],
        active: AtomicUsize,
        done: AtomicBool,
        ran: [AtomicUsize; 2],
    }

    fn take(sketch: &Sketch, me: usize, own: &Worker<usize>) -> Option<usize> {
        if let Some(item) = own.pop() {
            return Some(item);
        }
        loop {
            match sketch.deques[1 - me].steal_batch_and_pop(own) {
                Steal::Success(item) => return Some(item),
                Steal::Empty => return None,
                Steal::Retry => loom::thread::yield_now(),
            }
        }
    }

    fn participate(sketch: &Sketch, me: usize, own: &Worker<usize>) {
        let mut active = true;
        let mut idle_rounds = 0;
        loop {
            if active {
                while let Some(item) = take(sketch, me, own) {
                    sketch.ran[item].fetch_add(1, Ordering::Relaxed);
                }
                active = false;
                if sketch.active.fetch_sub(1, Ordering::AcqRel) == 1 {
                    sketch.done.store(true, Ordering::Release);
                }
                idle_rounds = 0;
            }
            if sketch.done.load(Ordering::Acquire) {
                return;
            }
            if sketch.deques.iter().any(|d| !d.is_empty()) {
                sketch.active.fetch_add(1, Ordering::AcqRel);
                active = true;
                continue;
            }
            idle_rounds += 1;
            if idle_rounds > 1 {
                return;
            }
            loom::thread::yield_now();
        }
    }

    model("deque_idle::idle_transition_strands_no_item", Bound::Exactly(3), None, || {
        let owners = [Worker::new(CAP), Worker::new(CAP)];
        let sketch = Arc::new(Sketch {
            deques: [owners[0].stealer(), owners[1].stealer()],
            // Both participants start active (the worker has joined).
            active: AtomicUsize::new(2),
            done: AtomicBool::new(false),
            ran: [AtomicUsize::new(0), AtomicUsize::new(0)],
        });
        // Participant 0 published two items before the worker joined.
        let [own0, own1] = owners;
        push(&own0, 0);
        push(&own0, 1);
        let worker = {
            let sketch = Arc::clone(&sketch);
            loom::thread::spawn(move || participate(&sketch, 1, &own1))
        };
        participate(&sketch, 0, &own0);
        worker.join().unwrap();
        assert!(sketch.done.load(Ordering::Acquire), "both left, so the last one to go idle set done");
        for (item, ran) in sketch.ran.iter().enumerate() {
            assert_eq!(ran.load(Ordering::Relaxed), 1, "item {item} must have run exactly once when the run is done");
        }
    });
}
