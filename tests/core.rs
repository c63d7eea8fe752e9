//! Integration tests of the pool: exactly-once accounting, follow-ons, panics, nested
//! runs, concurrent callers, and threads joined on drop.

mod common;

use common::{Counted, Rng, spin, thread_count, within_a_minute};
use fanout::{BuildError, Pool};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

fn pool(n: usize) -> Pool {
    Pool::builder().num_threads(n).build().expect("pool")
}

#[test]
fn tree_runs_every_item_exactly_once() {
    let pool = pool(3);
    // Tree with fan-out 4 and depth 6: ids are unique, so a bitmap catches duplicates.
    let total = (0..=6).map(|d| 4usize.pow(d)).sum::<usize>();
    let seen: Vec<AtomicU64> = (0..total).map(|_| AtomicU64::new(0)).collect();
    let stats = pool.run([(0usize, 0u32)], |(id, depth), ctx| {
        seen[id].fetch_add(1, Ordering::Relaxed);
        if depth < 6 {
            for j in 0..4 {
                ctx.push((id * 4 + j + 1, depth + 1));
            }
        }
    });
    assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1), "some item ran twice or never");
    assert_eq!(stats.executed as usize, total);
    assert_eq!(stats.pushed as usize, total - 1);
}

#[test]
fn random_trees_run_exactly_once() {
    let pool = pool(4);
    for seed in 1..40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E3779B97F4A7C15));
        let limit = 1 + rng.below(20_000) as usize;
        let fanout = 1 + rng.below(6) as usize;
        let seeds = 1 + rng.below(50) as usize;
        // Items are ids; item `id` pushes `fanout` children `id*fanout + j + seeds`
        // while below `limit`. Count executions per id.
        let counts: Vec<AtomicU64> =
            (0..limit + seeds * fanout + fanout * limit + 1).map(|_| AtomicU64::new(0)).collect();
        let expected = Mutex::new(0usize);
        let stats = pool.run(0..seeds, |id, ctx| {
            counts[id].fetch_add(1, Ordering::Relaxed);
            for j in 0..fanout {
                let child = id * fanout + j + seeds;
                if child < limit {
                    ctx.push(child);
                }
            }
        });
        // Recompute sequentially which ids must have run.
        let mut want = vec![0u64; counts.len()];
        let mut stack: Vec<usize> = (0..seeds).collect();
        while let Some(id) = stack.pop() {
            want[id] += 1;
            *expected.lock().unwrap() += 1;
            for j in 0..fanout {
                let child = id * fanout + j + seeds;
                if child < limit {
                    stack.push(child);
                }
            }
        }
        for (i, c) in counts.iter().enumerate() {
            assert_eq!(c.load(Ordering::Relaxed), want[i], "seed {seed}: item {i}");
        }
        assert_eq!(stats.executed as usize, *expected.lock().unwrap(), "seed {seed}");
    }
}

#[test]
fn long_chain_completes() {
    let pool = pool(2);
    let count = AtomicU64::new(0);
    pool.run([100_000u32], |n, ctx| {
        count.fetch_add(1, Ordering::Relaxed);
        if n > 0 {
            ctx.push(n - 1);
        }
    });
    assert_eq!(count.into_inner(), 100_001);
}

#[test]
fn map_keeps_input_order_and_fold_sums() {
    let pool = pool(2);
    for n in [0usize, 1, 2, 3, 17, 1000, 100_003] {
        let v = pool.map_index(0..n, |i| i as u64 * 3);
        assert_eq!(v.len(), n);
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3));
        let sum = pool.fold_index(0..n, || 0u64, |a, i| a + i as u64, |a, b| a + b);
        assert_eq!(sum, (0..n as u64).sum::<u64>());
    }
    let words: Vec<String> = (0..500).map(|i| format!("w{i}")).collect();
    let lens = pool.map(&words, |w| w.len());
    assert_eq!(lens, words.iter().map(|w| w.len()).collect::<Vec<_>>());
    let offset = pool.map_index(10..15, |i| i);
    assert_eq!(offset, [10, 11, 12, 13, 14]);
}

#[test]
fn for_each_visits_each_index_once() {
    let pool = pool(3);
    let n = 200_000;
    let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
    pool.for_each_index(0..n, |i| {
        hits[i].fetch_add(1, Ordering::Relaxed);
    });
    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    let mut v: Vec<u32> = (0..10_000).collect();
    pool.for_each_mut(&mut v, |x| *x += 1);
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32 + 1));
}

#[test]
fn panic_is_resumed_on_caller_and_pool_survives() {
    let pool = pool(2);
    let executed = AtomicU64::new(0);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.run(0..10_000u32, |i, ctx| {
            executed.fetch_add(1, Ordering::Relaxed);
            if i == 5_000 {
                panic!("boom at {i}");
            }
            if i < 100 {
                ctx.push(i + 20_000);
            }
        });
    }));
    let payload = result.expect_err("the panic must reach the caller");
    let msg = payload.downcast_ref::<String>().cloned().unwrap_or_default();
    assert_eq!(msg, "boom at 5000");
    assert!(executed.load(Ordering::Relaxed) <= 10_100);
    // The pool still works, with every worker alive.
    let sum = pool.fold_index(0..10_000, || 0u64, |a, i| a + i as u64, |a, b| a + b);
    assert_eq!(sum, 49_995_000);
    // A panicking map drops what it wrote and resumes.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.map_index(0..100_000, |i| {
            assert!(i != 77_777, "map panic");
            vec![i]
        })
    }));
    assert!(r.is_err());
    assert_eq!(pool.map_index(0..4, |i| i), [0, 1, 2, 3]);
}

#[test]
fn panic_drops_pending_follow_ons() {
    // Items count their drops: after a panic, every item created is executed or dropped.
    let pool = pool(2);
    let created = AtomicUsize::new(0);
    let dropped = AtomicUsize::new(0);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        created.fetch_add(1, Ordering::Relaxed);
        pool.run([Counted(0, &dropped)], |item, ctx| {
            if item.0 == 12 {
                panic!("stop");
            }
            for _ in 0..3 {
                created.fetch_add(1, Ordering::Relaxed);
                ctx.push(Counted(item.0 + 1, &dropped));
            }
        });
    }));
    assert!(r.is_err());
    assert_eq!(created.load(Ordering::Relaxed), dropped.load(Ordering::Relaxed));
}

#[test]
fn nested_runs_do_not_deadlock() {
    let pool = pool(2);
    let total = AtomicU64::new(0);
    pool.run(0..8u64, |i, _ctx| {
        let inner = pool.fold_index(0..1000, || 0u64, |a, j| a + j as u64 + i, |a, b| a + b);
        total.fetch_add(inner, Ordering::Relaxed);
    });
    let want: u64 = (0..8).map(|i| 499_500 + 1000 * i).sum();
    assert_eq!(total.into_inner(), want);
}

#[test]
fn concurrent_callers_share_one_pool() {
    let pool = Arc::new(pool(2));
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for round in 0..20u64 {
                    let n = 1000 + (t * 37 + round * 11) as usize;
                    let sum = pool.fold_index(0..n, || 0u64, |a, i| a + i as u64, |a, b| a + b);
                    assert_eq!(sum, (0..n as u64).sum::<u64>());
                    let count = AtomicU64::new(0);
                    pool.run([10u32], |d, ctx| {
                        count.fetch_add(1, Ordering::Relaxed);
                        if d > 0 {
                            ctx.push(d - 1);
                            ctx.push(d - 1);
                        }
                    });
                    assert_eq!(count.into_inner(), (1 << 11) - 1);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Threads of this process whose name starts with `prefix` (Linux `/proc`; names are
/// cut to 15 bytes by the kernel).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with(prefix))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn drop_joins_every_worker_thread() {
    // Named threads, so that pools of tests running in parallel do not count.
    for round in 0..5 {
        let pool = Pool::builder().num_threads(4).thread_name("dropjoin").build().unwrap();
        pool.for_each_index(0..1000, |_| {});
        assert_eq!(threads_named("dropjoin-"), 4, "round {round}: the workers should be running");
        drop(pool);
        // `drop` joins, so every worker has finished when it returns. The kernel may list
        // an exited thread for a moment after `join` returns (it wakes the joiner before
        // it removes the task), so allow it a short while to go; a worker still alive
        // (parked, never joined) would stay listed.
        let gone = (0..1000).any(|_| {
            let n = threads_named("dropjoin-");
            if n != 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            n == 0
        });
        assert!(gone, "round {round}: a worker outlived its pool");
    }
    // And the process-wide count agrees once this test's pools are gone (other tests may
    // come and go, so only a gross leak of 20 threads would show).
    assert!(thread_count() < 64);
}

#[test]
fn builder_rejects_bad_settings() {
    assert!(matches!(Pool::builder().num_threads(0).build(), Err(BuildError::ZeroThreads)));
    assert!(matches!(Pool::builder().num_threads(1 << 20).build(), Err(BuildError::TooManyThreads { .. })));
    assert!(matches!(Pool::builder().stack_size(10).build(), Err(BuildError::StackTooSmall { .. })));
    let err = Pool::builder().num_threads(0).build().unwrap_err();
    assert!(err.to_string().starts_with("a pool needs at least one thread"), "{err}");
    let pool = Pool::builder().num_threads(1).pin(false).thread_name("x").build().unwrap();
    assert_eq!(pool.pinned_workers(), 0);
    assert_eq!(pool.num_threads(), 1);
}

#[test]
fn stats_are_summed() {
    let pool = pool(2);
    let stats = pool.run([(0u32, 0u32)], |(_, depth), ctx| {
        if depth < 8 {
            ctx.push((0, depth + 1));
            ctx.push((0, depth + 1));
        }
    });
    assert_eq!(stats.executed, (1 << 9) - 1);
    assert_eq!(stats.pushed, (1 << 9) - 2);
    assert_eq!(stats.busy.len(), 3);
    assert!(stats.participants >= 1);
}

#[test]
fn wide_fan_outs_run_every_item_once_and_drop_it_once() {
    // One task pushes many items that own heap data: they are shared in batches (one
    // deque entry for many items), so this checks that batches lose, repeat and leak
    // nothing, also when a panic stops the run with batches still queued.
    const N: u32 = 200_000;
    for threads in [1, 2, 3] {
        let pool = pool(threads);
        let runs: Vec<AtomicUsize> = (0..N).map(|_| AtomicUsize::new(0)).collect();
        let drops = AtomicUsize::new(0);
        let stats = pool.run([None], |item: Option<Counted<'_>>, ctx| match item {
            None => (0..N).for_each(|i| ctx.push(Some(Counted(i, &drops)))),
            Some(c) => {
                runs[c.0 as usize].fetch_add(1, Ordering::Relaxed);
            }
        });
        assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1), "{threads} threads: an item ran twice or never");
        assert_eq!(drops.load(Ordering::Relaxed), N as usize, "{threads} threads");
        assert_eq!(stats.executed, u64::from(N) + 1);

        let drops = AtomicUsize::new(0);
        let started = AtomicUsize::new(0);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run([None], |item: Option<Counted<'_>>, ctx| match item {
                None => (0..N).for_each(|i| ctx.push(Some(Counted(i, &drops)))),
                Some(c) => {
                    if started.fetch_add(1, Ordering::Relaxed) == 50_000 {
                        panic!("planned, item {}", c.0);
                    }
                }
            })
        }));
        assert!(r.is_err(), "{threads} threads: the panic must reach the caller");
        assert_eq!(drops.load(Ordering::Relaxed), N as usize, "{threads} threads: every item dropped exactly once");
    }
}

/// A task that pushes a long burst shares it on the way, not only once it returns:
/// here the root pushes half its items, then waits (up to 20 s) for another thread to
/// run one of them before pushing the rest. Without sharing from inside the task,
/// nothing it pushed is visible until it returns, and the wait times out.
#[test]
fn a_long_burst_of_pushes_is_shared_before_the_task_returns() {
    const N: u64 = 200_000;
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        // Short items wake nobody once the active threads fill the CPUs: on one CPU
        // the burst's batches wait for an idle thread, as a checkpoint's would.
        eprintln!("skipped: needs 2 CPUs");
        return;
    }
    let pool = pool(2);
    let root_thread = Mutex::new(None);
    let elsewhere = AtomicU64::new(0);
    let timed_out = std::sync::atomic::AtomicBool::new(false);
    let stats = pool.run([u64::MAX], |i, ctx| {
        if i != u64::MAX {
            if *root_thread.lock().unwrap() != Some(std::thread::current().id()) {
                elsewhere.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
        *root_thread.lock().unwrap() = Some(std::thread::current().id());
        (0..N / 2).for_each(|j| ctx.push(j));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while elsewhere.load(Ordering::SeqCst) == 0 {
            if std::time::Instant::now() > deadline {
                timed_out.store(true, Ordering::SeqCst);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        (N / 2..N).for_each(|j| ctx.push(j));
    });
    assert!(!timed_out.into_inner(), "nothing the root pushed reached another thread while it ran");
    assert_eq!(stats.executed, N + 1);
    assert!(stats.published > 0);
}

/// Seeds come from their iterator as the run goes, a chunk at a time, not all before
/// the first item runs: a run over N seeds holds a bounded number of them.
#[test]
fn seeds_are_pulled_as_the_run_goes() {
    const N: u64 = 1_000_000;
    let pool = pool(2);
    let pulled = AtomicU64::new(0);
    let seeds = (0..N).inspect(|_| {
        pulled.fetch_add(1, Ordering::Relaxed);
    });
    let most_ahead = AtomicU64::new(0);
    let executed = AtomicU64::new(0);
    let sum = pool.run_fold(
        seeds,
        || 0u64,
        |sum, i, _| {
            executed.fetch_add(1, Ordering::Relaxed);
            // How far the iterator ran ahead of the items executed: the executed count
            // is read last, so a preemption between the reads can only shrink it.
            let seen = pulled.load(Ordering::Relaxed);
            most_ahead.fetch_max(seen.saturating_sub(executed.load(Ordering::Relaxed)), Ordering::Relaxed);
            sum + i
        },
        |a, b| a + b,
    );
    assert_eq!(sum, N * (N - 1) / 2);
    assert_eq!(pulled.into_inner(), N);
    let ahead = most_ahead.into_inner();
    assert!(ahead < N / 10, "the seeds ran {ahead} ahead of the items executed");
}

/// A run's caller shares its seeds after the first slow one, not after a fixed count:
/// here the caller's second item waits for a worker to run one, which happens only if
/// the caller shared after its first item (20 ms). Sharing after 8 items, as a fixed
/// count would, leaves the second item waiting until its timeout.
#[test]
fn slow_seeds_are_shared_after_the_first() {
    let pool = pool(2);
    let timed_out = caller_waits_for_a_worker(&pool, || std::thread::sleep(std::time::Duration::from_millis(20)));
    assert!(!timed_out, "the caller kept every seed to itself after a 20 ms item");
}

/// Runs 16 seeds on `pool` from this thread: its first item runs `first`, its later
/// ones wait (up to 20 s) until a worker has run an item. Returns whether they gave up.
fn caller_waits_for_a_worker(pool: &Pool, first: impl Fn() + Sync) -> bool {
    let caller = std::thread::current().id();
    let worker_ran = std::sync::atomic::AtomicBool::new(false);
    let caller_items = AtomicUsize::new(0);
    let timed_out = std::sync::atomic::AtomicBool::new(false);
    pool.run(0..16u32, |_, _| {
        if std::thread::current().id() != caller {
            worker_ran.store(true, Ordering::SeqCst);
            return;
        }
        if caller_items.fetch_add(1, Ordering::SeqCst) == 0 {
            first();
            return;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !worker_ran.load(Ordering::SeqCst) && !timed_out.load(Ordering::SeqCst) {
            if std::time::Instant::now() > deadline {
                timed_out.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    timed_out.into_inner()
}

/// A run that fails on its first seed returns without making the rest, and a run over
/// far more seeds than memory could hold starts at once.
#[test]
fn a_failing_run_over_a_huge_seed_iterator_returns_at_once() {
    let pool = pool(2);
    let err = pool.try_run(0..u64::MAX, |i, _| if i == 0 { Err("first") } else { Ok(()) }).unwrap_err();
    assert!(matches!(err, fanout::RunError::Failed { error: "first", .. }), "{err:?}");
    // Seeds that own memory and are never pulled are not made at all; those pulled
    // and left pending are each dropped exactly once.
    let drops = AtomicUsize::new(0);
    let made = AtomicUsize::new(0);
    let seeds = (0..100_000u32).map(|i| {
        made.fetch_add(1, Ordering::Relaxed);
        Counted(i, &drops)
    });
    let err = pool.try_run(seeds, |c, _| if c.0 == 0 { Err(()) } else { Ok(()) }).unwrap_err();
    assert!(matches!(err, fanout::RunError::Failed { .. }), "{err:?}");
    assert_eq!(drops.load(Ordering::Relaxed), made.load(Ordering::Relaxed), "each seed made is dropped once");
}

/// A seed iterator that panics stops the run like a panicking task: the infallible
/// call resumes the panic, the fallible one reports it, and the pool stays usable.
#[test]
fn a_panicking_seed_iterator_is_a_run_panic() {
    let pool = pool(2);
    let ran = AtomicU64::new(0);
    let seeds = || (0..100_000u64).map(|i| if i == 50_000 { panic!("seed 50000") } else { i });
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.run(seeds(), |_, _| {
            ran.fetch_add(1, Ordering::Relaxed);
        })
    }));
    let payload = caught.expect_err("the iterator's panic reaches the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"seed 50000"));
    assert!(ran.load(Ordering::Relaxed) <= 50_000, "no item after the panic's seed was made");
    let err = pool.try_run(seeds(), |_, _| Ok::<_, ()>(())).unwrap_err();
    assert!(matches!(&err, fanout::RunError::Panicked { message, .. } if message == "seed 50000"), "{err:?}");
    assert_eq!(pool.run_fold(0..10u64, || 0, |s, i, _| s + i, |a, b| a + b), 45);
}

/// A stopped run never drains its seed iterator, which may be endless or wait on a
/// channel; and an iterator that came up short is not asked again (it may not be
/// fused).
#[test]
fn a_stopped_run_leaves_an_endless_seed_iterator_alone() {
    let err = within_a_minute(|| {
        let pool = pool(2);
        pool.try_run((0u64..).map(|i| i.to_string()), |s, _| if s == "3" { Err(s) } else { Ok(()) })
    })
    .unwrap_err();
    assert!(matches!(err, fanout::RunError::Failed { ref error, .. } if error == "3"), "{err:?}");

    // Three items, then `None`, then items again: the run takes the first three only.
    let pool = pool(2);
    let mut calls = 0u32;
    let unfused = std::iter::from_fn(move || {
        calls += 1;
        (calls != 4).then_some(calls)
    });
    let ran = AtomicU64::new(0);
    pool.run(unfused, |_, _| {
        ran.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(ran.into_inner(), 3);
}

/// A run's wake-ups pass over the worker its caller's seat keeps out, even when the
/// caller has moved to another core since the run started: here the caller starts on
/// the first core (whose worker sits out), moves to the second during its first item,
/// and its second item waits for a worker to run one. Waking the worker of the core
/// the caller left, which the run does not admit, left that item waiting until its
/// timeout on a 2-CPU machine.
#[test]
fn a_caller_that_moved_to_another_core_still_gets_a_worker() {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.len() < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let pool = pool(cores.len());
    if pool.pinned_workers() < cores.len() {
        eprintln!("skipped: the workers could not be pinned");
        return;
    }
    // On a thread of its own, so that the test harness's thread keeps its affinity.
    let timed_out = std::thread::scope(|s| {
        s.spawn(|| {
            if !core_affinity::set_for_current(cores[0]) {
                eprintln!("skipped: this thread could not be pinned");
                return false;
            }
            caller_waits_for_a_worker(&pool, || {
                assert!(core_affinity::set_for_current(cores[1]), "the caller could not move");
                std::thread::sleep(std::time::Duration::from_millis(2));
            })
        })
        .join()
        .unwrap()
    });
    assert!(!timed_out, "the run woke only the worker its caller's seat keeps out");
}

/// A pool with a worker per core (so a run's caller holds one of their seats, and a
/// long run's caller steps back), and the number of cores; `None` on one core, where
/// there is no seat to hand back.
#[cfg(target_os = "linux")]
fn pool_with_a_worker_per_core() -> Option<(Pool, usize)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores >= 2).then(|| (pool(cores), cores))
}

/// A long run's caller that holds a worker's core hands it back after about 2 ms: it
/// shares its work (the unpulled seeds too), stops working and waits, and the workers
/// run the rest. Here, items of 100 us for about 20 ms on every core: a caller that
/// kept working would run about one item in every `cores`, not a handful.
#[test]
#[cfg(target_os = "linux")]
fn a_long_runs_caller_steps_back() {
    let Some((pool, cores)) = pool_with_a_worker_per_core() else { return };
    let items = 200 * cores as u64;
    let by_caller = AtomicU64::new(0);
    let sum = pool.run_fold(
        0..items,
        || 0u64,
        |sum, i, ctx| {
            if ctx.worker_index().is_none() {
                by_caller.fetch_add(1, Ordering::Relaxed);
            }
            spin(std::time::Duration::from_micros(100));
            sum + i
        },
        |a, b| a + b,
    );
    assert_eq!(sum, items * (items - 1) / 2, "every item ran once");
    let by_caller = by_caller.into_inner();
    assert!(by_caller < 100, "the caller ran {by_caller} of {items} items: it did not step back");
}

/// A caller that stepped back comes back and finishes its run alone when no worker can
/// come: here every worker holds an item of another thread's blocking run, and those
/// items wait until this run is done (at most 60 s). Without coming back, this run
/// would wait for them.
#[test]
#[cfg(target_os = "linux")]
fn a_caller_that_stepped_back_finishes_alone_when_no_worker_comes() {
    use std::time::{Duration, Instant};
    let Some((pool, cores)) = pool_with_a_worker_per_core() else { return };
    let started = AtomicUsize::new(0);
    let ours_done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            // One item for each worker and one for this thread's caller.
            pool.runner()
                .blocking()
                .for_each_index(0..cores + 1, |_| {
                    started.fetch_add(1, Ordering::SeqCst);
                    let start = Instant::now();
                    while !ours_done.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(60) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
                .unwrap();
        });
        let start = Instant::now();
        while started.load(Ordering::SeqCst) < cores + 1 {
            assert!(start.elapsed() < Duration::from_secs(10), "the blocking run never held every worker");
            std::thread::sleep(Duration::from_millis(1));
        }
        let start = Instant::now();
        let sum = pool.run_fold(
            0..200u64,
            || 0u64,
            |sum, i, _| {
                spin(Duration::from_micros(100));
                sum + i
            },
            |a, b| a + b,
        );
        let took = start.elapsed();
        ours_done.store(true, Ordering::SeqCst);
        assert_eq!(sum, 200 * 199 / 2);
        assert!(took < Duration::from_secs(5), "the run waited {took:?} for workers that could not come");
    });
}
