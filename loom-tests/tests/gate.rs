#![cfg(loom)]
//! Model checks of the gate behind `Stream::parallelism`: threads entering a stage
//! limited to `limit` at once. Each model asserts that no more than `limit` threads
//! are ever inside, that every thread gets through exactly once, that nothing sleeps
//! forever (a waiter that misses its wake-up is a loom deadlock), and that the gate
//! ends at rest (no permit, waiter count or wake-up token left over).

use fanout::stream::StageGate;
use fanout_loom_tests::{Bound, model};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// `threads` threads (the model's main thread among them) each pass the gate `rounds`
/// times.
fn gate_model(name: &str, limit: usize, threads: usize, rounds: usize, bound: Bound) {
    model(name, bound, None, move || {
        let gate = Arc::new(fanout::__loom::gate(limit));
        let inside = Arc::new(AtomicUsize::new(0));
        let passed = Arc::new(AtomicUsize::new(0));
        let pass = {
            let (gate, inside, passed) = (Arc::clone(&gate), Arc::clone(&inside), Arc::clone(&passed));
            move || {
                for _ in 0..rounds {
                    gate.run(|| {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(now <= limit, "{now} threads inside a gate of {limit}");
                        inside.fetch_sub(1, Ordering::SeqCst);
                    });
                    passed.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        let others: Vec<_> = (1..threads).map(|_| thread::spawn(pass.clone())).collect();
        pass();
        for t in others {
            t.join().unwrap();
        }
        assert_eq!(passed.load(Ordering::Relaxed), threads * rounds, "a pass was lost");
        assert!(fanout::__loom::gate_at_rest(&gate), "a permit, a waiter count or a token was left over");
    });
}

/// One permit, three threads: two of them must wait and be woken.
#[test]
fn gate_of_one_three_threads() {
    gate_model("gate::gate_of_one_three_threads", 1, 3, 1, Bound::Exactly(3));
}

/// One permit, two threads passing twice each: a leaver re-enters while the other
/// waits, so a wake-up can go to a thread that then loses the permit.
#[test]
fn gate_of_one_two_threads_twice() {
    gate_model("gate::gate_of_one_two_threads_twice", 1, 2, 2, Bound::Exactly(3));
}

/// Two permits, three threads.
#[test]
fn gate_of_two_three_threads() {
    gate_model("gate::gate_of_two_three_threads", 2, 3, 1, Bound::Exactly(3));
}

/// One permit, three threads passing twice each: wake-up tokens pile up while the
/// holder barges back in (preemption bound 2: this one is costly).
#[test]
fn gate_of_one_three_threads_twice() {
    gate_model("gate::gate_of_one_three_threads_twice", 1, 3, 2, Bound::AtMost(2));
}
