//! Fan-out control: fallible runs (first error in time), panics as errors,
//! continue-on-error, cancellation, deadlines, concurrency limits, priorities and
//! first-success races.

mod common;

use common::Counted;
use fanout::{CancelToken, ItemError, Pool, RunError};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn pool(n: usize) -> Pool {
    Pool::builder().num_threads(n).build().expect("pool")
}

/// Items a thread may still start after the run stopped, when items are slow (a
/// millisecond, say): the rest of its current block, which for slow items is one
/// index, or 8 follow-on items; with room to spare.
const SLACK_PER_THREAD: usize = 16;

/// The same when items take nanoseconds: blocks are sized by time (4-8 us each), at
/// most 4096 indices.
const FAST_SLACK_PER_THREAD: usize = 4096;

#[test]
fn the_first_error_in_time_is_returned() {
    let pool = pool(3);
    for _ in 0..5 {
        // Every item fails. The first to fail returns at once; the others wait long
        // enough that the first is recorded before them.
        let order = AtomicUsize::new(0);
        let err = pool
            .try_for_each_index(0..64, |_| {
                let seq = order.fetch_add(1, Ordering::SeqCst);
                if seq > 0 {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(seq)
            })
            .unwrap_err();
        match err {
            RunError::Failed { error, index } => {
                assert_eq!(error, 0, "returned a later error");
                assert!(index.is_some_and(|i| i < 64));
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        assert!(order.into_inner() <= 1 + 3 * SLACK_PER_THREAD, "items kept starting after the error");
    }
}

#[test]
fn an_error_stops_new_items() {
    let pool = pool(2);
    // The item sets `failed` just before it returns its error, and the run records the
    // stop just after: a thread preempted in between (3 threads on 2 cores here) lets the
    // others run on for a while. So judge the median of several runs; an engine that
    // ignored errors, or checked for a stop rarely, would fail every one of them. The
    // error comes late in a long range, once every thread is busy on its own part.
    const N: usize = 1_000_000;
    const FAIL_AT: usize = 100_000;
    let mut afters = Vec::new();
    for _ in 0..7 {
        let failed = AtomicBool::new(false);
        let started_after = AtomicUsize::new(0);
        let started = AtomicUsize::new(0);
        let r = pool.try_for_each_index(0..N, |i| {
            started.fetch_add(1, Ordering::Relaxed);
            if failed.load(Ordering::SeqCst) {
                started_after.fetch_add(1, Ordering::Relaxed);
            }
            if i == FAIL_AT {
                failed.store(true, Ordering::SeqCst);
                return Err("stop");
            }
            std::hint::black_box(i);
            Ok(())
        });
        assert!(matches!(r, Err(RunError::Failed { error: "stop", index: Some(FAIL_AT) })));
        assert!(started.into_inner() < N, "the run did not stop");
        afters.push(started_after.into_inner());
    }
    afters.sort_unstable();
    let median = afters[afters.len() / 2];
    assert!(median <= 3 * FAST_SLACK_PER_THREAD, "items started after the error: {afters:?}");
}

#[test]
fn follow_on_errors_drop_pending_items() {
    let pool = pool(2);
    let made = AtomicUsize::new(1);
    let dropped = AtomicUsize::new(0);
    let r = pool.try_run([Counted(0, &dropped)], |item, ctx| {
        if item.0 == 5_000 {
            return Err(format!("item {} failed", item.0));
        }
        for k in 1..=2 {
            let c = 2 * item.0 + k;
            if c < 20_000 {
                made.fetch_add(1, Ordering::Relaxed);
                ctx.push(Counted(c, &dropped));
            }
        }
        Ok(())
    });
    assert_eq!(r.unwrap_err().to_string(), "an item failed: item 5000 failed");
    assert_eq!(made.into_inner(), dropped.into_inner(), "an item was lost or dropped twice");
    // The pool is still fine.
    assert_eq!(
        pool.try_run([3u32], |n, ctx| if n > 0 {
            ctx.push(n - 1);
            Ok::<_, ()>(())
        } else {
            Ok(())
        })
        .unwrap()
        .executed,
        4
    );
}

#[test]
fn a_panic_becomes_an_error_with_message_and_index() {
    let pool = pool(2);
    let r = pool.try_map_index(0..10_000, |i| {
        if i == 7777 {
            panic!("boom at {i}");
        }
        Ok::<_, ()>(Box::new(i))
    });
    match r {
        Err(RunError::Panicked { message, index }) => {
            assert_eq!(message, "boom at 7777");
            assert_eq!(index, Some(7777));
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    let r = pool.try_run([0u8], |_, _| -> Result<(), ()> { panic!("in a follow-on run") });
    assert!(matches!(r, Err(RunError::Panicked { ref message, index: None }) if message == "in a follow-on run"));
    // Infallible calls still unwind the caller with the original payload.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.map_index(0..100, |i| if i == 50 { panic!("plain map") } else { i })
    }));
    assert_eq!(caught.unwrap_err().downcast_ref::<&str>(), Some(&"plain map"));
    assert_eq!(pool.try_map(&[1, 2], |x| Ok::<_, ()>(x * 2)).unwrap(), [2, 4]);
}

#[test]
fn try_map_drops_exactly_what_it_wrote() {
    let pool = pool(2);
    let made = AtomicUsize::new(0);
    let dropped = AtomicUsize::new(0);
    let r = pool.try_map_index(0..50_000, |i| {
        if i == 33_333 {
            return Err(i);
        }
        made.fetch_add(1, Ordering::Relaxed);
        Ok(Counted(i as u32, &dropped))
    });
    assert!(matches!(r, Err(RunError::Failed { error: 33_333, index: Some(33_333) })));
    assert_eq!(made.load(Ordering::Relaxed), dropped.load(Ordering::Relaxed));
}

#[test]
fn continue_on_error_keeps_every_outcome_in_order() {
    let pool = pool(3);
    let items: Vec<u32> = (0..5_000).collect();
    let results = pool.try_map_all(&items, |&x| match x % 7 {
        0 => Err(x),
        3 if x % 1000 == 3 => panic!("item {x} panicked"),
        _ => Ok(x * 2),
    });
    assert_eq!(results.len(), items.len());
    for (x, r) in items.iter().zip(&results) {
        match (x % 7, r) {
            (0, Err(ItemError::Failed(e))) => assert_eq!(e, x),
            (3, Err(ItemError::Panicked(m))) if x % 1000 == 3 => assert_eq!(m, &format!("item {x} panicked")),
            (_, Ok(v)) => assert_eq!(*v, x * 2),
            (_, other) => panic!("item {x}: unexpected {other:?}"),
        }
    }
}

#[test]
fn cancelling_stops_new_items_and_reports_completed() {
    let pool = pool(2);
    let token = CancelToken::new();
    let ran = AtomicUsize::new(0);
    let started_after = AtomicUsize::new(0);
    let r = pool.runner().cancel_token(&token).try_for_each_index(0..1_000_000, |i| {
        if token.is_cancelled() {
            started_after.fetch_add(1, Ordering::Relaxed);
        }
        ran.fetch_add(1, Ordering::Relaxed);
        if i == 20_000 {
            token.cancel();
        }
        Ok::<_, ()>(())
    });
    let ran = ran.into_inner();
    match r {
        Err(RunError::Cancelled { completed }) => assert_eq!(completed as usize, ran),
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert!(started_after.into_inner() <= 3 * FAST_SLACK_PER_THREAD);
    assert!(ran < 1_000_000);

    // The same for a follow-on run, cancelled from another thread.
    let token = CancelToken::new();
    let executed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let t = token.clone();
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            t.cancel();
        });
        // An endless chain: only the token can end it.
        let r = pool.runner().cancel_token(&token).try_run([0u64], |n, ctx| {
            executed.fetch_add(1, Ordering::Relaxed);
            ctx.push(n + 1);
            Ok::<_, ()>(())
        });
        match r {
            Err(RunError::Cancelled { completed }) => assert_eq!(completed as usize, executed.load(Ordering::Relaxed)),
            other => panic!("expected Cancelled, got {other:?}"),
        }
    });
}

#[test]
fn deadlines_stop_runs() {
    let pool = pool(2);
    let start = Instant::now();
    let ran = AtomicUsize::new(0);
    let r = pool.runner().timeout(Duration::from_millis(30)).try_for_each_index(0..100_000, |_| {
        ran.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(1));
        Ok::<_, ()>(())
    });
    assert!(matches!(r, Err(RunError::TimedOut { completed }) if completed as usize == ran.load(Ordering::Relaxed)));
    assert!(start.elapsed() < Duration::from_secs(20), "the deadline was not noticed");

    // A deadline noticed with fast items too (the clock is read rarely there).
    let r = pool.runner().timeout(Duration::from_millis(10)).try_run([0u64], |n, ctx| {
        ctx.push(n.wrapping_add(1));
        Ok::<_, ()>(())
    });
    assert!(matches!(r, Err(RunError::TimedOut { .. })));
}

#[test]
fn bad_settings_get_clear_outcomes_without_running_anything() {
    let pool = pool(2);
    let ran = AtomicUsize::new(0);
    let f = |_: usize| {
        ran.fetch_add(1, Ordering::Relaxed);
        Ok::<_, ()>(())
    };
    let cancelled = CancelToken::new();
    cancelled.cancel();
    assert!(matches!(
        pool.runner().cancel_token(&cancelled).try_for_each_index(0..10, f),
        Err(RunError::Cancelled { completed: 0 })
    ));
    let past = Instant::now() - Duration::from_millis(1);
    assert!(matches!(
        pool.runner().deadline(past).try_for_each_index(0..10, f),
        Err(RunError::TimedOut { completed: 0 })
    ));
    assert!(matches!(pool.runner().limit(0).try_for_each_index(0..10, f), Err(RunError::ZeroLimit)));
    assert_eq!(ran.load(Ordering::Relaxed), 0);
    let all = pool.runner().cancel_token(&cancelled).try_map_all(&[1, 2, 3], |&x| Ok::<_, ()>(x));
    assert_eq!(all, [Err(ItemError::NotRun), Err(ItemError::NotRun), Err(ItemError::NotRun)]);
    // Empty inputs succeed at once.
    assert_eq!(pool.try_map(&[] as &[u8], |&x| Ok::<_, ()>(x)).unwrap(), Vec::<u8>::new());
    assert_eq!(pool.try_fold_index(5..5, || 1, |a, _| Ok::<_, ()>(a), |a, b| a + b), Ok(1));
    assert_eq!(pool.try_run(Vec::<u8>::new(), |_, _| Ok::<_, ()>(())).unwrap().executed, 0);
    assert!(RunError::<String>::ZeroLimit.to_string().contains("at least 1"));
}

#[test]
fn the_limit_is_never_exceeded() {
    let pool = pool(4);
    for limit in [1, 2, 3] {
        let now = AtomicUsize::new(0);
        let max = AtomicUsize::new(0);
        pool.runner()
            .limit(limit)
            .try_for_each_index(0..200, |_| {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(100));
                now.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, ()>(())
            })
            .unwrap();
        let max = max.into_inner();
        assert!(max <= limit, "limit {limit}: {max} items in flight");
        assert!(max >= 1);
    }
    // Follow-on runs too, with nested limited runs inside (must not deadlock).
    let now = AtomicUsize::new(0);
    let max = AtomicUsize::new(0);
    let inner_total = AtomicUsize::new(0);
    pool.runner()
        .limit(2)
        .try_run([0u32], |depth, ctx| {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(n, Ordering::SeqCst);
            let s =
                pool.runner().limit(1).try_fold_index(0..100, || 0, |a, i| Ok::<_, ()>(a + i), |a, b| a + b).unwrap();
            inner_total.fetch_add(s, Ordering::Relaxed);
            if depth < 6 {
                ctx.push(depth + 1);
                ctx.push(depth + 1);
            }
            now.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, ()>(())
        })
        .unwrap();
    assert!(max.into_inner() <= 2);
    assert_eq!(inner_total.into_inner(), 127 * 4950);
}

#[test]
fn high_priority_items_jump_the_line() {
    let pool = pool(2);
    for _ in 0..5 {
        let position = AtomicUsize::new(0);
        let high_positions = Mutex::new(Vec::new());
        // (kind, id): kind 0 = root, 1 = normal, 2 = high.
        pool.run([(0u8, 0u32)], |(kind, _), ctx| {
            let pos = position.fetch_add(1, Ordering::SeqCst);
            match kind {
                0 => {
                    // Normal items on both sides of the high ones: neither LIFO pops nor
                    // FIFO steals would reach the high ones early by accident.
                    (0..300).for_each(|i| ctx.push((1, i)));
                    (0..10).for_each(|i| ctx.push_high((2, i)));
                    (300..600).for_each(|i| ctx.push((1, i)));
                }
                2 => high_positions.lock().unwrap().push(pos),
                _ => std::thread::sleep(Duration::from_micros(20)),
            }
        });
        let high = high_positions.into_inner().unwrap();
        assert_eq!(high.len(), 10);
        let last = *high.iter().max().unwrap();
        assert!(last < 1 + 10 + 3 * SLACK_PER_THREAD, "high-priority items ran as late as position {last}");
    }
}

#[test]
fn first_ok_returns_the_fastest_success_and_cancels_the_rest() {
    let pool = pool(4);
    let start = Instant::now();
    let latencies = [400u64, 10, 300, 500];
    let gave_up = AtomicUsize::new(0);
    let (winner, value) = pool
        .runner()
        .first_ok(latencies.len(), |i, token| {
            if token.wait_timeout(Duration::from_millis(latencies[i])) {
                gave_up.fetch_add(1, Ordering::Relaxed);
                Err(i)
            } else {
                Ok(latencies[i] * 2)
            }
        })
        .unwrap();
    assert_eq!((winner, value), (1, 20));
    assert!(start.elapsed() < Duration::from_millis(300), "losers were not cancelled: {:?}", start.elapsed());

    // All fail: every error, in index order.
    let r = pool.runner().first_ok(3, |i, _| Err::<(), _>(format!("replica {i} down")));
    match r {
        Err(RunError::Failed { error, index: None }) => {
            assert_eq!(
                error.errors,
                vec![(0, "replica 0 down".into()), (1, "replica 1 down".into()), (2, "replica 2 down".into())]
            );
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn fallible_paths_agree_with_sequential_on_random_inputs() {
    let pool = pool(3);
    let mut seed = 0x1234_5678_9abc_def1u64;
    for _ in 0..30 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 20_000) as usize;
        let bad = (seed >> 20) as usize % (len + len / 2 + 1);
        let f = |i: usize| if i == bad { Err(i) } else { Ok(i as u64 * 3) };
        let got = pool.try_map_index(0..len, f);
        let want: Result<Vec<u64>, usize> = (0..len).map(f).collect();
        match (got, want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w),
            (Err(RunError::Failed { error, index }), Err(w)) => {
                assert_eq!(error, w);
                assert_eq!(index, Some(w));
            }
            (g, w) => panic!("len {len}, bad {bad}: got {g:?}, want {w:?}"),
        }
        let sum = pool.try_fold_index(0..len, || 0u64, |a, i| f(i).map(|v| a + v), |a, b| a + b);
        let want_sum: Result<u64, usize> = (0..len).map(f).sum();
        assert_eq!(
            sum.map_err(|e| match e {
                RunError::Failed { error, .. } => error,
                other => panic!("{other:?}"),
            }),
            want_sum
        );
    }
}

#[test]
fn progress_is_live_and_exact_at_the_end() {
    let pool = pool(2);
    let progress = fanout::Progress::new();
    let done = AtomicBool::new(false);
    let seen = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                seen.lock().unwrap().push(progress.snapshot());
                std::thread::sleep(Duration::from_micros(500));
            }
        });
        pool.runner()
            .progress(&progress)
            .try_for_each_index(0..2_000, |_| {
                std::thread::sleep(Duration::from_micros(50));
                Ok::<_, ()>(())
            })
            .unwrap();
        done.store(true, Ordering::SeqCst);
    });
    let seen = seen.into_inner().unwrap();
    assert!(seen.windows(2).all(|w| w[0].completed <= w[1].completed || w[1].total != w[0].total), "went backwards");
    assert!(seen.iter().any(|s| s.completed > 0 && s.completed < 2_000), "never saw the run in progress");
    assert!(seen.iter().all(|s| s.in_flight <= 3));
    assert!(seen.iter().all(|s| s.total.is_none_or(|t| s.completed + s.queued == t)));
    let end = progress.snapshot();
    assert_eq!((end.completed, end.queued, end.in_flight, end.total), (2_000, 0, 0, Some(2_000)));
    assert_eq!(end.fraction(), Some(1.0));

    // A follow-on run: completed counts items, follow-ons included.
    let stats = pool
        .runner()
        .progress(&progress)
        .try_run([12u32], |d, ctx| {
            if d > 0 {
                ctx.push(d - 1);
                ctx.push(d - 1);
            }
            Ok::<_, ()>(())
        })
        .unwrap();
    let end = progress.snapshot();
    assert_eq!(end.completed, stats.executed);
    assert_eq!(end.completed, (1 << 13) - 1);
    assert_eq!((end.queued, end.in_flight, end.total), (0, 0, None));
}

#[test]
fn blocking_runs_start_every_item_at_once() {
    // Five workers plus the caller: six threads for six items that each wait until all
    // six are in flight (or give up after two seconds).
    let pool = Pool::builder().num_threads(5).pin(false).build().unwrap();
    let now = AtomicUsize::new(0);
    let max = AtomicUsize::new(0);
    let results = pool.runner().blocking().try_map_all(&[0u8; 6], |_| {
        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(n, Ordering::SeqCst);
        let start = Instant::now();
        while max.load(Ordering::SeqCst) < 6 && start.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(1));
        }
        now.fetch_sub(1, Ordering::SeqCst);
        Ok::<_, ()>(())
    });
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(max.into_inner(), 6, "blocking items did not all start at once");
}

#[test]
fn first_ok_obeys_the_runners_token_and_deadline_and_panics() {
    let pool = Pool::builder().num_threads(3).pin(false).build().unwrap();
    let slow = |_: usize, token: &CancelToken| -> Result<(), String> {
        if token.wait_timeout(Duration::from_secs(30)) { Err("gave up".into()) } else { Ok(()) }
    };
    // The runner's token, cancelled mid-race, wakes every alternative in flight.
    let token = CancelToken::new();
    let start = Instant::now();
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            token.cancel();
        });
        pool.runner().cancel_token(&token).first_ok(3, slow)
    });
    assert!(matches!(r, Err(RunError::Cancelled { .. })), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(10), "alternatives did not give up");

    // The runner's deadline does the same, reported as a timeout.
    let start = Instant::now();
    let r = pool.runner().timeout(Duration::from_millis(20)).first_ok(3, slow);
    assert!(matches!(r, Err(RunError::TimedOut { .. })), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(10), "alternatives did not give up");

    // A panic ends the race.
    let r = pool.runner().first_ok(3, |i, token| if i == 0 { panic!("replica {i} crashed") } else { slow(i, token) });
    assert!(
        matches!(r, Err(RunError::Panicked { ref message, index: Some(0) }) if message == "replica 0 crashed"),
        "{r:?}"
    );

    // No alternatives: nothing succeeded, no errors.
    assert!(
        matches!(pool.runner().first_ok(0, slow), Err(RunError::Failed { ref error, .. }) if error.errors.is_empty())
    );
}

#[test]
fn token_deadlines_and_children() {
    let pool = pool(2);
    let token = CancelToken::with_deadline(Instant::now() + Duration::from_millis(20));
    let r = pool.runner().cancel_token(&token).try_for_each_index(0..1_000_000, |_| {
        std::thread::sleep(Duration::from_micros(100));
        Ok::<_, ()>(())
    });
    assert!(matches!(r, Err(RunError::TimedOut { .. })), "{r:?}");

    let parent = CancelToken::new();
    let child = parent.child();
    let grandchild = child.child();
    let waiter = std::thread::spawn(move || grandchild.wait_timeout(Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(5));
    parent.cancel();
    assert!(waiter.join().unwrap(), "a parent's cancel reaches its grandchildren");
    assert!(child.is_cancelled());
    assert!(parent.child().is_cancelled(), "a child of a cancelled token is born cancelled");
}

#[test]
fn progress_counts_the_callers_first_stint() {
    let pool = pool(2);
    let progress = fanout::Progress::new();
    let busy_seen = AtomicBool::new(false);
    pool.runner()
        .limit(1)
        .progress(&progress)
        .try_for_each_index(0..50, |_| {
            std::thread::sleep(Duration::from_millis(1));
            if progress.snapshot().in_flight == 1 {
                busy_seen.store(true, Ordering::Relaxed);
            }
            Ok::<_, ()>(())
        })
        .unwrap();
    assert!(busy_seen.into_inner(), "a working run never showed an item in flight");
}

#[test]
fn errors_name_the_index_itself_for_ranges_not_starting_at_zero() {
    let pool = pool(2);
    let fail_at_7 = |i: usize| if i == 7 { Err("seven") } else { Ok(i) };
    let r = pool.try_for_each_index(5..10, |i| fail_at_7(i).map(drop));
    assert!(matches!(r, Err(RunError::Failed { error: "seven", index: Some(7) })), "{r:?}");
    let r = pool.try_fold_index(5..10, || 0, |a, i| fail_at_7(i).map(|i| a + i), |a, b| a + b);
    assert!(matches!(r, Err(RunError::Failed { error: "seven", index: Some(7) })), "{r:?}");
    let r = pool.try_map_index(5..10, fail_at_7);
    assert!(matches!(r, Err(RunError::Failed { error: "seven", index: Some(7) })), "{r:?}");
    let r = pool.try_map_index(1000..1010, |i| if i == 1003 { panic!("at {i}") } else { Ok::<_, ()>(i) });
    assert!(matches!(r, Err(RunError::Panicked { index: Some(1003), .. })), "{r:?}");
    // And the infallible calls still see the right indices.
    assert_eq!(pool.fold_index(5..10, || 0, |a, i| a + i, |a, b| a + b), 35);
    let seen = Mutex::new(Vec::new());
    pool.for_each_index(3..6, |i| seen.lock().unwrap().push(i));
    let mut seen = seen.into_inner().unwrap();
    seen.sort_unstable();
    assert_eq!(seen, [3, 4, 5]);
    assert_eq!(pool.map_index(3..6, |i| i * 2), [6, 8, 10]);
}

#[test]
fn ranges_anywhere_in_usize_run_each_index_once() {
    let pool = pool(2);
    for range in [usize::MAX - 10_000..usize::MAX, 1 << 40..(1 << 40) + 100_000, usize::MAX - 1..usize::MAX] {
        let len = range.end - range.start;
        let count = AtomicUsize::new(0);
        let sum = pool.fold_index(
            range.clone(),
            || 0usize,
            |a, i| {
                count.fetch_add(1, Ordering::Relaxed);
                a.wrapping_add(i - range.start)
            },
            usize::wrapping_add,
        );
        assert_eq!(count.into_inner(), len, "{range:?}");
        assert_eq!(sum, len * (len - 1) / 2, "{range:?}");
        let out = pool.map_index(range.clone(), |i| i - range.start);
        assert!(out.iter().copied().eq(0..len), "{range:?}");
    }
    // Blocking runs walk the range from its own start, one index at a time.
    let seen = Mutex::new(Vec::new());
    pool.runner()
        .blocking()
        .try_for_each_index(1000..1010, |i| {
            seen.lock().unwrap().push(i);
            Ok::<_, ()>(())
        })
        .unwrap();
    let mut seen = seen.into_inner().unwrap();
    seen.sort_unstable();
    assert!(seen.iter().copied().eq(1000..1010));
}

#[test]
fn slow_range_items_are_stopped_after_the_current_one() {
    // Items of 200 us: blocks of one index, so after the error each other thread
    // finishes the item it is running and starts no other (blocks of a few indices,
    // as a count-based ramp would give, fail this).
    let pool = pool(2);
    let mut afters = Vec::new();
    for _ in 0..5 {
        let failed = AtomicBool::new(false);
        let started_after = AtomicUsize::new(0);
        let r = pool.try_for_each_index(0..2000, |i| {
            if failed.load(Ordering::SeqCst) {
                started_after.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_micros(200));
            if i == 30 {
                failed.store(true, Ordering::SeqCst);
                return Err(i);
            }
            Ok(())
        });
        assert!(matches!(r, Err(RunError::Failed { error: 30, .. })));
        afters.push(started_after.into_inner());
    }
    afters.sort_unstable();
    // Three threads (two workers and the caller), at most one item each, judged by the
    // median of five runs (a thread preempted between the item's flag and the run's
    // stop lets the others start one more item each).
    assert!(afters[afters.len() / 2] <= 3, "items started after the error: {afters:?}");
}

#[test]
fn a_huge_blocking_range_holds_one_pending_range_per_thread() {
    // 2^40 indices: one pending item per index would exhaust memory long before the
    // run could stop, so this returns only if the run holds O(threads) items. Every
    // index runs at most once; the run stops on its first error, wherever it lands.
    let pool = Pool::builder().num_threads(3).pin(false).build().unwrap();
    for fail_at in [0usize, 1, 5000] {
        let mut counts: Vec<usize> = (0..5)
            .map(|_| {
                let started = AtomicUsize::new(0);
                let r = pool.runner().blocking().try_for_each_index(0..1 << 40, |i| {
                    started.fetch_add(1, Ordering::Relaxed);
                    if i == fail_at { Err(i) } else { Ok(()) }
                });
                assert!(matches!(r, Err(RunError::Failed { error, .. }) if error == fail_at), "{r:?}");
                started.into_inner()
            })
            .collect();
        counts.sort_unstable();
        // Four threads walk the range from its start, one index at a time: each may
        // start a few more after the error before it sees the stop. Judged by the
        // median of five runs: a thread preempted between taking the failing index and
        // returning its error lets the others walk on for the length of a time slice.
        let median = counts[counts.len() / 2];
        assert!(median <= fail_at + 1 + 4 * SLACK_PER_THREAD, "fail at {fail_at}: {counts:?} started");
    }
    // A blocking map keeps one written range per thread's stretch, not one per index.
    let out = pool.runner().blocking().try_map_index(0..100_000, |i| Ok::<_, ()>(i * 2)).unwrap();
    assert!(out.iter().copied().eq((0..100_000).map(|i| i * 2)));
}

/// Set in the child process of `deep_token_chains_cancel_and_drop_without_recursion`.
const DEEP_CHAIN_CHILD: &str = "FANOUT_TEST_DEEP_CHAIN_CHILD";

#[test]
fn deep_token_chains_cancel_and_drop_without_recursion() {
    if std::env::var_os(DEEP_CHAIN_CHILD).is_none() {
        // A stack overflow aborts the whole process: run the chains in a child process,
        // so that it shows up as this test's failure and the other tests still run.
        run_in_child("deep_token_chains_cancel_and_drop_without_recursion", DEEP_CHAIN_CHILD);
        return;
    }
    const DEPTH: usize = 200_000;
    let chain = || {
        let root = CancelToken::new();
        let mut deepest = root.child();
        // Only the parent's child list holds each link in between.
        for _ in 1..DEPTH {
            deepest = deepest.child();
        }
        (root, deepest)
    };
    let small_stack = std::thread::Builder::new().stack_size(2 << 20).spawn(move || {
        let (root, deepest) = chain();
        assert!(!deepest.is_cancelled());
        root.cancel();
        assert!(deepest.is_cancelled(), "the cancel did not reach the end of the chain");
        drop(root);
        drop(deepest);
        // Dropped without a cancel, the links are all still in place.
        let (root, deepest) = chain();
        drop(deepest);
        drop(root);
    });
    small_stack.unwrap().join().unwrap();
}

#[test]
fn a_grandchild_whose_parent_is_unheld_still_sees_the_cancel() {
    let root = CancelToken::new();
    // The middle token is held only by `root`'s child list.
    let grandchild = root.child().child();
    // Making another child tidies `root`'s list.
    let _sibling = root.child();
    root.cancel();
    assert!(grandchild.is_cancelled(), "the tidy-up cut the grandchild off");
}

/// A panic payload whose `Drop` panics in turn, `.0` more times with a `Bomb` payload.
struct Bomb(u32);

impl Drop for Bomb {
    fn drop(&mut self) {
        match self.0 {
            0 => panic!("a panic payload's drop panicked"),
            n => std::panic::panic_any(Bomb(n - 1)),
        }
    }
}

/// Runs `f` on its own thread and returns what it returns; fails if it takes more than
/// a minute (a run that hangs) or panics.
fn returns_in_time<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(value) => value,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("the run hung"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the run panicked instead of returning"),
    }
}

/// Counts itself in and waits (up to ten seconds) until `n` threads have.
fn meet(arrived: &AtomicUsize, n: usize) {
    arrived.fetch_add(1, Ordering::SeqCst);
    let start = Instant::now();
    while arrived.load(Ordering::SeqCst) < n && start.elapsed() < Duration::from_secs(10) {
        std::thread::yield_now();
    }
}

/// The run keeps one payload and drops the other: that drop panics, and so does the
/// drop of that panic's payload. Neither may unwind a worker or the caller out of the
/// run.
#[test]
fn payloads_whose_drop_panics_from_two_tasks_at_once() {
    let arrived = returns_in_time(|| {
        // One worker and the caller: the worker takes item 1 while item 0 waits for it.
        let pool = pool(1);
        let arrived = AtomicUsize::new(0);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run([0u8], |n, ctx| {
                if n == 0 {
                    ctx.push_high(1);
                }
                meet(&arrived, 2);
                std::panic::panic_any(Bomb(1));
            })
        }));
        let payload = caught.expect_err("the run did not panic");
        assert!(payload.is::<Bomb>(), "the run resumed some other panic");
        // Dropping it would panic again.
        std::mem::forget(payload);
        // The pool still works.
        assert_eq!(pool.map_index(0..3, |i| i), [0, 1, 2]);
        arrived.into_inner()
    });
    assert_eq!(arrived, 2, "the second task never started");
}

/// The same for panics the engine catches outside tasks.
#[test]
fn payloads_whose_drop_panics_from_two_identities_at_once() {
    let arrived = returns_in_time(|| {
        // A blocking run shares its seeds, so the worker can start while the caller is
        // still in `identity`; both panic outside any task.
        let pool = pool(1);
        let arrived = AtomicUsize::new(0);
        let r = pool.runner().blocking().try_run_fold(
            [0u8, 1],
            || -> u8 {
                meet(&arrived, 2);
                std::panic::panic_any(Bomb(1))
            },
            |a, _, _| Ok::<_, ()>(a),
            |a, _| a,
        );
        assert!(matches!(r, Err(RunError::Panicked { index: None, .. })), "{r:?}");
        assert_eq!(pool.map_index(0..3, |i| i), [0, 1, 2]);
        arrived.into_inner()
    });
    assert_eq!(arrived, 2, "the second identity never started");
}

#[test]
fn a_range_too_small_to_share_wakes_nobody() {
    // Four ~1 ns items: splitting them off would cost the caller a wake-up system call
    // and save nothing, so the caller walks them alone although the workers are idle.
    // The walk judges by the measured cost of the first index, so this is judged over
    // twenty warm runs: a preemption (or a cold cache) during that index can make a
    // run look worth sharing now and then; the old rule shared in every run.
    let pool = pool(2);
    let mut published = Vec::new();
    for _ in 0..20 {
        let stats = pool.for_each_index(0..4, |i| {
            std::hint::black_box(i);
        });
        published.push(stats.published);
    }
    assert!(published.iter().filter(|&&p| p == 0).count() >= 15, "published per run: {published:?}");
}

#[test]
fn a_seed_run_too_small_to_share_wakes_nobody() {
    // Four seeds of ~2 us: items this slow are looked after one at a time, but the 6 us
    // left in sight after the first is not worth waking a sleeper for, so the caller
    // runs them alone. Judged over twenty runs, as above: a preemption during the first
    // item can make a run look worth sharing now and then; sharing on every early look
    // shared in every run.
    let pool = pool(2);
    let mut published = Vec::new();
    for _ in 0..20 {
        let stats = pool.run(0..4u32, |i, _| {
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_micros(2) {
                std::hint::black_box(i);
            }
        });
        published.push(stats.published);
    }
    assert!(published.iter().filter(|&&p| p == 0).count() >= 15, "published per run: {published:?}");
}

/// Set in the child process of `pending_items_whose_drop_panics_never_abort`.
const DROP_PANIC_CHILD: &str = "FANOUT_TEST_DROP_PANIC_CHILD";

#[test]
fn pending_items_whose_drop_panics_never_abort() {
    if std::env::var_os(DROP_PANIC_CHILD).is_none() {
        // Two panicking drops in one cleanup abort the process: run the case in a child
        // process, so that an abort shows up as this test's failure.
        run_in_child("pending_items_whose_drop_panics_never_abort", DROP_PANIC_CHILD);
        return;
    }
    // Thousands of panicking drops would print thousands of messages.
    std::panic::set_hook(Box::new(|_| {}));
    /// Panics when dropped unless defused (a task that runs it defuses it).
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("a pending item's drop panicked");
        }
    }
    const PENDING: u32 = 5_000;
    for threads in [1, 2] {
        let pool = pool(threads);
        // A fallible run that fails with thousands of bombs pending: the error comes
        // back as an `Err`, never as an unwind from a drop, and nothing aborts.
        let r = pool.try_run([None], |item: Option<Bomb>, ctx| match item {
            None => {
                (0..PENDING).for_each(|_| ctx.push(Some(Bomb)));
                Err("stop")
            }
            Some(bomb) => {
                std::mem::forget(bomb);
                Ok(())
            }
        });
        assert!(matches!(r, Err(RunError::Failed { error: "stop", .. })), "{threads} threads: {r:?}");
        // An infallible run whose task panics with bombs pending: the panic is resumed
        // on the caller (one of them), and nothing aborts.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run([None], |item: Option<Bomb>, ctx| match item {
                None => {
                    (0..PENDING).for_each(|_| ctx.push(Some(Bomb)));
                    panic!("the task panicked");
                }
                Some(bomb) => std::mem::forget(bomb),
            })
        }));
        assert!(r.is_err(), "{threads} threads: the panic must reach the caller");
        // The pool still works.
        assert_eq!(pool.map_index(0..10, |i| i), (0..10).collect::<Vec<_>>());
    }
}

/// Runs the test `name` of this binary in a child process with `env` set (the test
/// then does the real work), and asserts that it passed: an abort or a stack overflow
/// there shows up as this test's failure, and the other tests still run.
fn run_in_child(name: &str, env: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1"])
        .env(env, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child process failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn short_items_on_an_oversized_pool_wake_no_more_threads_than_cpus() {
    // A tree of 131k items of a few nanoseconds on a pool with eight threads more than
    // CPUs, each run from a parked pool: once as many participants are active as there
    // are CPUs, publications wake nobody more. Waking a sleeper at every publication
    // brought 5-10 participants into such runs on 2 CPUs. The median over fifteen runs
    // allows two more: a participant that leaves lets another join, and a run slow
    // enough to last 2 ms (under ThreadSanitizer) has its caller step back and hand
    // its seat to a worker.
    if cfg!(debug_assertions) {
        eprintln!("skipped: unoptimized items may take over a microsecond, beyond the rule");
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = pool(cpus + 8);
    let mut participants = Vec::new();
    for _ in 0..15 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        let stats = pool.run([0u32], |depth, ctx| {
            if depth < 16 {
                ctx.push(depth + 1);
                ctx.push(depth + 1);
            }
        });
        assert_eq!(stats.executed, (1 << 17) - 1);
        participants.push(stats.participants);
    }
    participants.sort_unstable();
    assert!(participants[7] <= cpus + 2, "participants per run: {participants:?} on {cpus} CPUs");
}

/// Every call `Pool` has, `Runner` has too: the calls whose tasks cannot fail stop on
/// the runner's token before any item runs, and hand a task's panic back as an error.
#[test]
fn the_infallible_calls_follow_the_runners_settings() {
    let pool = pool(2);
    let cancelled = CancelToken::new();
    cancelled.cancel();
    let stopped = pool.runner().cancel_token(&cancelled);
    let ran = AtomicUsize::new(0);
    let count = |_: &dyn std::any::Any| {
        ran.fetch_add(1, Ordering::Relaxed);
    };
    let items = [1u32, 2, 3];
    let mut mutable = [1u32, 2, 3];
    let is_cancelled = |r: Result<(), RunError<std::convert::Infallible>>| matches!(r, Err(RunError::Cancelled { .. }));
    assert!(is_cancelled(stopped.run([0u32], |n, _| count(&n)).map(drop)));
    assert!(is_cancelled(stopped.run_fold([0u32], || (), |_, n, _| count(&n), |_, _| ()).map(drop)));
    assert!(is_cancelled(stopped.run_collect([0u32], |n, _| count(&n)).map(drop)));
    assert!(is_cancelled(stopped.for_each_index(0..3, |i| count(&i))));
    assert!(is_cancelled(stopped.for_each(&items, |x| count(x))));
    assert!(is_cancelled(stopped.for_each_mut(&mut mutable, |x| count(x))));
    assert!(is_cancelled(stopped.map_index(0..3, |i| count(&i)).map(drop)));
    assert!(is_cancelled(stopped.map(&items, |x| count(x)).map(drop)));
    assert!(is_cancelled(stopped.fold_index(0..3, || (), |(), i| count(&i), |_, _| ()).map(drop)));
    assert!(is_cancelled(stopped.fold(&items, || (), |(), x| count(x), |_, _| ()).map(drop)));
    assert_eq!(ran.load(Ordering::Relaxed), 0, "no item starts after the token fired");

    let free = pool.runner();
    assert_eq!(free.map(&items, |x| x * 2).unwrap(), [2, 4, 6]);
    assert_eq!(free.fold_index(0..10, || 0, |a, i| a + i, |a, b| a + b).unwrap(), 45);
    free.for_each_mut(&mut mutable, |x| *x += 1).unwrap();
    assert_eq!(mutable, [2, 3, 4]);
    let panicked = free.for_each_index(0..10, |i| assert!(i != 7, "item seven"));
    assert!(matches!(panicked, Err(RunError::Panicked { index: Some(7), .. })), "{panicked:?}");
}

/// The fallible calls that used to exist only on `Runner` run on `Pool` too, with the
/// default settings.
#[test]
fn the_pool_has_every_fallible_call() {
    let pool = pool(2);
    let nodes = pool.try_run_fold(
        [6u32],
        || 0u64,
        |n, d, ctx| {
            if d > 0 {
                ctx.push(d - 1);
                ctx.push(d - 1);
            }
            Ok::<_, &str>(n + 1)
        },
        |a, b| a + b,
    );
    assert_eq!(nodes, Ok(127));
    let mut v = vec![1u8, 250, 3];
    let r = pool.try_for_each_mut(&mut v, |x| {
        *x = x.checked_add(10).ok_or("overflow")?;
        Ok(())
    });
    assert!(matches!(r, Err(RunError::Failed { error: "overflow", index: Some(1) })), "{r:?}");
    let won = pool.first_ok(3, |i, _| if i == 1 { Ok(i * 10) } else { Err(i) });
    assert_eq!(won, Ok((1, 10)));
    let ordered = pool.try_run_collect([0u32], |n, ctx| {
        if n < 2 {
            ctx.push(n + 1);
        }
        Ok::<_, ()>(n)
    });
    assert_eq!(ordered, Ok(vec![0, 1, 2]));
}
