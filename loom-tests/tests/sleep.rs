#![cfg(loom)]
//! Model checks of the sleep/wake protocol (`fanout::__loom::Sleep`) on its own.
//!
//! A worker that finds nothing registers as a sleeper (`prepare`), looks for work once
//! more, and then either withdraws (`cancel`) or parks. A publisher makes work visible
//! and calls `notify_one`. A lost wake-up would leave the worker parked forever, which
//! loom reports as a deadlock; so these models only need to join the workers.
//!
//! The "work available" flag is accessed with plain Release/Acquire, as the real work
//! queues are: the protocol must not depend on the work's own orderings, only on the
//! `SeqCst` fences in `prepare` and `notify_one`. With the `mutant_sleep` feature
//! (those fences removed) the first two models deadlock.

use fanout::__loom::Sleep;
use fanout_loom_tests::{Bound, model};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;

/// Takes one unit of work from `available` if there is any.
fn take_one(available: &AtomicUsize) -> bool {
    let mut current = available.load(Ordering::Acquire);
    while current > 0 {
        match available.compare_exchange(current, current - 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(actual) => current = actual,
        }
    }
    false
}

/// The worker loop of the model: until it has consumed one unit of work, look for it,
/// and if there is none, register, re-check, and cancel or park.
fn consume_one(sleep: &Sleep, me: usize, available: &AtomicUsize) {
    loop {
        if take_one(available) {
            return;
        }
        sleep.prepare(me);
        if available.load(Ordering::Acquire) > 0 {
            sleep.cancel(me);
            continue;
        }
        sleep.park(me);
    }
}

/// The publisher's side: make one unit of work visible, then wake a sleeper.
fn publish_one(sleep: &Sleep, available: &AtomicUsize) {
    available.fetch_add(1, Ordering::Release);
    sleep.notify_one();
}

/// One worker, one unit of work. The worker must consume it: if the publisher misses
/// the registration and the worker's re-check misses the work, it parks forever.
#[test]
fn no_lost_wakeup() {
    model("sleep::no_lost_wakeup", Bound::Exactly(3), None, || {
        let sleep = Arc::new(Sleep::new(1));
        let available = Arc::new(AtomicUsize::new(0));
        let worker = {
            let (sleep, available) = (Arc::clone(&sleep), Arc::clone(&available));
            thread::spawn(move || consume_one(&sleep, 0, &available))
        };
        publish_one(&sleep, &available);
        worker.join().unwrap();
        assert_eq!(available.load(Ordering::Relaxed), 0, "the work was consumed");
    });
}

/// Two workers, two units of work published one after the other, each followed by one
/// `notify_one`. A wake-up may go to a worker that then finds its unit already taken by
/// the other (it parks again); every worker must still end up with one unit.
#[test]
fn no_lost_wakeup_two_workers() {
    model("sleep::no_lost_wakeup_two_workers", Bound::Exactly(3), None, || {
        let sleep = Arc::new(Sleep::new(2));
        let available = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..2)
            .map(|me| {
                let (sleep, available) = (Arc::clone(&sleep), Arc::clone(&available));
                thread::spawn(move || consume_one(&sleep, me, &available))
            })
            .collect();
        publish_one(&sleep, &available);
        publish_one(&sleep, &available);
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(available.load(Ordering::Relaxed), 0, "both units were consumed");
    });
}

/// Shutdown: workers with nothing to do sleep until a shutdown flag is set; after
/// setting it, `notify_all` must wake every one of them, whether it is parked,
/// between `prepare` and `park`, or not yet registered.
#[test]
fn shutdown_wakes_all() {
    model("sleep::shutdown_wakes_all", Bound::Exactly(3), None, || {
        let sleep = Arc::new(Sleep::new(2));
        let shutdown = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..2)
            .map(|me| {
                let (sleep, shutdown) = (Arc::clone(&sleep), Arc::clone(&shutdown));
                thread::spawn(move || {
                    while !shutdown.load(Ordering::Acquire) {
                        sleep.prepare(me);
                        if shutdown.load(Ordering::Acquire) {
                            sleep.cancel(me);
                            continue;
                        }
                        sleep.park(me);
                    }
                })
            })
            .collect();
        shutdown.store(true, Ordering::Release);
        sleep.notify_all();
        for worker in workers {
            worker.join().unwrap();
        }
    });
}

/// Work and shutdown together: a worker consumes the one unit of work, then sleeps
/// until shutdown. The work is published with `notify_one`, shutdown with
/// `notify_all`; the worker must see both and exit.
#[test]
fn work_then_shutdown() {
    model("sleep::work_then_shutdown", Bound::Exactly(3), None, || {
        let sleep = Arc::new(Sleep::new(1));
        let available = Arc::new(AtomicUsize::new(0));
        let shutdown = Arc::new(AtomicBool::new(false));
        let worker = {
            let (sleep, available, shutdown) = (Arc::clone(&sleep), Arc::clone(&available), Arc::clone(&shutdown));
            thread::spawn(move || {
                let mut consumed = 0;
                loop {
                    if take_one(&available) {
                        consumed += 1;
                        continue;
                    }
                    if shutdown.load(Ordering::Acquire) {
                        // Work published before the shutdown flag is visible now.
                        while take_one(&available) {
                            consumed += 1;
                        }
                        return consumed;
                    }
                    sleep.prepare(0);
                    if available.load(Ordering::Acquire) > 0 || shutdown.load(Ordering::Acquire) {
                        sleep.cancel(0);
                        continue;
                    }
                    sleep.park(0);
                }
            })
        };
        publish_one(&sleep, &available);
        shutdown.store(true, Ordering::Release);
        sleep.notify_all();
        assert_eq!(worker.join().unwrap(), 1, "the work published before shutdown was consumed");
    });
}
