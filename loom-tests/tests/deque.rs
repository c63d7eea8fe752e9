#![cfg(loom)]
//! Model checks of the work-stealing deque (`fanout::deque`) with the loom capacity
//! (`DEQUE_CAPACITY` = 4): the owner pushes and pops while one or two thieves steal.
//! Each model gathers every item from wherever it ended up (owner pops, steals, a
//! thief's own deque, the spill) and checks that it was obtained exactly once. Slot
//! accesses go through loom's `UnsafeCell`, so loom also fails a model on any data race
//! on a slot.
//!
//! With the `mutant_deque` feature (the Dekker fences in `pop` and `claim` removed),
//! the owner can take an item from the bottom while a thief claims the same index: the
//! first three models catch it (a duplicated item, or loom's race detector on the slot).
//! With the `mutant_deque_release` feature (`push` stores `bottom` Relaxed), a thief
//! that sees the new `bottom` reads a slot whose write does not happen before its read:
//! loom's causality check on the slot fails `owner_vs_one_thief` and `wrap_around`, the
//! models that push while a thief is already running (the others push every item
//! before spawning the thieves, and the spawn orders those writes). The other ordering
//! mutants (`mutant_deque_push_acquire`, `mutant_deque_steal_acquire`,
//! `mutant_deque_release_cas`) are caught the same way; `loom-tests/run.sh` lists which
//! models catch each.
//!
//! The cheap models here use a preemption bound of 3 whatever `LOOM_MAX_PREEMPTIONS`
//! says; all of them together take well under a minute.

use fanout::__loom::DEQUE_CAPACITY as CAP;
use fanout::deque::{Steal, Worker};
use fanout_loom_tests::{Bound, assert_exactly_once, model, thief};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// Owner-side helpers: the model's main thread owns the deque.
fn push(deque: &Worker<usize>, item: usize) {
    let pushed = deque.push(item);
    assert!(pushed.is_ok(), "push of {item} must fit: the model never fills the deque");
}

fn pop(deque: &Worker<usize>, got: &mut Vec<usize>) {
    if let Some(item) = deque.pop() {
        got.push(item);
    }
}

/// Everything still in the deque once every other thread has been joined.
fn drain(deque: &Worker<usize>, got: &mut Vec<usize>) {
    while let Some(item) = deque.pop() {
        got.push(item);
    }
    assert!(deque.is_empty());
}

/// The owner pops and pushes while one thief steals twice. The interesting runs are
/// those where the thief has taken item 0 and goes for item 1 while the owner pops it:
/// only the fence pair makes the owner notice the first steal and race for the last
/// item through the CAS instead of taking it unconditionally.
#[test]
fn owner_vs_one_thief() {
    model("deque::owner_vs_one_thief", Bound::Exactly(3), None, || {
        let deque = Worker::new(CAP);
        push(&deque, 0);
        push(&deque, 1);
        let stealer = thief(deque.stealer(), 2);

        let mut got = Vec::new();
        pop(&deque, &mut got);
        push(&deque, 2);
        pop(&deque, &mut got);
        pop(&deque, &mut got);

        got.extend(stealer.join().unwrap());
        drain(&deque, &mut got);
        assert_exactly_once(got, 3);
    });
}

/// Two thieves race each other (one copier at a time) and the owner (last item).
#[test]
fn owner_vs_two_thieves() {
    model("deque::owner_vs_two_thieves", Bound::Exactly(3), None, || {
        let deque = Worker::new(CAP);
        push(&deque, 0);
        push(&deque, 1);
        push(&deque, 2);
        let first = thief(deque.stealer(), 1);
        let second = thief(deque.stealer(), 1);

        let mut got = Vec::new();
        pop(&deque, &mut got);
        push(&deque, 3);
        pop(&deque, &mut got);
        pop(&deque, &mut got);

        got.extend(first.join().unwrap());
        got.extend(second.join().unwrap());
        drain(&deque, &mut got);
        assert_exactly_once(got, 4);
    });
}

/// A batch steal from a full deque into the thief's own deque, against an owner that
/// pops from the other end: each extra claim of the batch races the owner's pops.
#[test]
fn steal_batch_and_pop_vs_owner() {
    model("deque::steal_batch_and_pop_vs_owner", Bound::Exactly(3), None, || {
        let deque = Worker::new(CAP);
        for item in 0..CAP {
            push(&deque, item);
        }
        let source = deque.stealer();
        let batcher = thread::spawn(move || {
            // The thief's own deque.
            let own = Worker::new(CAP);
            let mut got = Vec::new();
            loop {
                match source.steal_batch_and_pop(&own) {
                    Steal::Success(item) => {
                        got.push(item);
                        break;
                    }
                    Steal::Empty => break,
                    Steal::Retry => thread::yield_now(),
                }
            }
            assert!(own.len() < CAP, "a batch never fills the destination");
            drain(&own, &mut got);
            got
        });

        let mut got = Vec::new();
        pop(&deque, &mut got);
        pop(&deque, &mut got);

        got.extend(batcher.join().unwrap());
        drain(&deque, &mut got);
        assert_exactly_once(got, CAP);
    });
}

/// More pushes than slots (six through a ring of four), so indices wrap around the ring
/// while a thief copies out of slots the owner is about to reuse.
///
/// A push may be refused even though fewer than four items are in the deque: while a
/// thief is still copying out of a slot, the owner must not write that slot again, so
/// the ring counts as full. The owner then keeps the item (as the run engine keeps
/// follow-ons in its private stack).
#[test]
fn wrap_around() {
    model("deque::wrap_around", Bound::Exactly(3), None, || {
        let deque = Worker::new(CAP);
        let stealer = thief(deque.stealer(), 2);

        let mut got = Vec::new();
        let total = CAP + 2;
        for item in 0..total {
            if let Err(item) = deque.push(item) {
                got.push(item);
            }
            if item % 2 == 1 {
                pop(&deque, &mut got);
            }
        }

        got.extend(stealer.join().unwrap());
        drain(&deque, &mut got);
        assert_exactly_once(got, total);
    });
}

/// A push into a full deque spills its older half into a (loom) mutex-protected vector
/// through the thieves' path, while a real thief steals from the same end. (If the
/// thief got there first, the push fits and nothing spills; both cases are explored.)
#[test]
fn push_or_spill_vs_thief() {
    model("deque::push_or_spill_vs_thief", Bound::Exactly(3), None, || {
        let deque = Worker::new(CAP);
        for item in 0..CAP {
            push(&deque, item);
        }
        let spill = Arc::new(Mutex::new(Vec::new()));
        let stealer = thief(deque.stealer(), 1);

        let mut got = Vec::new();
        deque.push_or_spill(CAP, |item| spill.lock().unwrap().push(item));
        pop(&deque, &mut got);

        got.extend(stealer.join().unwrap());
        drain(&deque, &mut got);
        let spilled = std::mem::take(&mut *spill.lock().unwrap());
        assert!(spilled.len() <= CAP / 2 + 1, "at most half the ring plus the new item spill: {spilled:?}");
        got.extend(spilled);
        assert_exactly_once(got, CAP + 1);
    });
}
