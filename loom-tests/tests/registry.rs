#![cfg(loom)]
//! Model check of withdrawing a job from the pool's registry (`pool::registry`): two
//! threads withdraw the same job at once (a stream's iterator dropped on a worker while
//! its scope closes the stream) while the one worker inside leaves. Both must return
//! (one parked for good is a loom deadlock), and only once the worker has left.

use fanout::__loom::TestJob;
use fanout_loom_tests::{Bound, model};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

#[test]
fn two_withdrawers_and_a_leaving_worker() {
    model("registry::two_withdrawers_and_a_leaving_worker", Bound::Exactly(3), None, || {
        let job = TestJob::with_a_worker_inside();
        let left = Arc::new(AtomicBool::new(false));
        let withdrawers: Vec<_> = (0..2)
            .map(|_| {
                let (job, left) = (Arc::clone(&job), Arc::clone(&left));
                thread::spawn(move || {
                    job.withdraw();
                    assert!(left.load(Ordering::SeqCst), "withdraw returned with the worker still inside");
                    assert_eq!(job.workers_inside(), 0);
                })
            })
            .collect();
        left.store(true, Ordering::SeqCst);
        job.leave();
        for w in withdrawers {
            w.join().unwrap();
        }
    });
}
