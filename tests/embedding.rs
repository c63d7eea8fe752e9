//! What an embedding compiler or analyzer relies on: worker indices, per-worker state,
//! thread hooks and their panics, the inline mode's fixed order, and nested runs that
//! never run an unrelated item while they wait.

mod common;

use common::{Rng, spin};
use fanout::{BuildError, Pool, WorkerLocal};
use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

fn pool(n: usize) -> Pool {
    Pool::builder().num_threads(n).build().expect("pool")
}

/// Runs `f` on a thread of its own and fails the test if it has not returned within
/// `limit` (a deadlock would otherwise hang the suite).
fn with_watchdog<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(r)) => r,
        Ok(Err(payload)) => std::panic::resume_unwind(payload),
        Err(_) => panic!("no result within {limit:?}: deadlock"),
    }
}

#[test]
fn worker_indices_are_per_thread_stable_and_in_range() {
    let pool = pool(3);
    let seen: Mutex<HashMap<ThreadId, Option<usize>>> = Mutex::new(HashMap::new());
    let me = std::thread::current().id();
    for _ in 0..5 {
        pool.run(0..2000u32, |i, ctx| {
            spin(Duration::from_micros(u64::from(i % 3)));
            let index = ctx.worker_index();
            assert_eq!(index, pool.current_thread_index());
            let thread = std::thread::current().id();
            let mut seen = seen.lock().unwrap();
            let first = *seen.entry(thread).or_insert(index);
            assert_eq!(first, index, "a thread's index changed");
        });
    }
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.get(&me), Some(&None), "the caller must report no index (and take part)");
    let mut indices: Vec<usize> = seen.values().filter_map(|i| *i).collect();
    indices.sort();
    indices.dedup();
    assert_eq!(indices.len(), seen.len() - 1, "two workers share an index");
    assert!(indices.iter().all(|&i| i < 3));
    assert_eq!(pool.current_thread_index(), None);
}

#[test]
fn a_nested_run_started_on_a_worker_reports_that_worker() {
    let pool = pool(2);
    let other = pool_with_name(2, "other");
    let mismatches = AtomicUsize::new(0);
    pool.run(0..64u32, |_, ctx| {
        let outer = ctx.worker_index();
        pool.run([0u32], |_, inner| {
            // The nested run's seed runs on its caller first, which is this thread.
            if inner.worker_index() != outer {
                mismatches.fetch_add(1, Ordering::Relaxed);
            }
        });
        // This thread is nobody's worker in `other`; `other`'s workers are nobody's in
        // `pool`.
        let me = std::thread::current().id();
        other.for_each_index(0..64, |_| {
            let on_me = std::thread::current().id() == me;
            let seen = (pool.current_thread_index(), other.current_thread_index());
            let fine = if on_me { seen == (outer, None) } else { seen.0.is_none() && seen.1.is_some() };
            if !fine {
                mismatches.fetch_add(1, Ordering::Relaxed);
            }
        });
    });
    assert_eq!(mismatches.into_inner(), 0);
}

fn pool_with_name(n: usize, name: &str) -> Pool {
    Pool::builder().num_threads(n).thread_name(name).build().expect("pool")
}

#[test]
fn worker_local_values_last_across_runs_and_are_gathered() {
    let pool = pool(2);
    let made = Arc::new(AtomicUsize::new(0));
    let counter = made.clone();
    let local = WorkerLocal::new(&pool, move || {
        counter.fetch_add(1, Ordering::Relaxed);
        (std::thread::current().id(), Cell::new(0u64))
    });
    let mut wrong_thread = 0;
    for round in 0..20u64 {
        let bad = AtomicUsize::new(0);
        pool.run(0..500u64, |i, ctx| {
            let (owner, count) = local.get();
            if *owner != std::thread::current().id() {
                bad.fetch_add(1, Ordering::Relaxed);
            }
            count.set(count.get() + i + round);
            if i < 500 && i % 100 == 0 {
                ctx.push(1000);
            }
        });
        wrong_thread += bad.into_inner();
    }
    assert_eq!(wrong_thread, 0);
    let values = local.into_vec();
    // One value per participating thread, made once each.
    assert_eq!(values.len(), made.load(Ordering::Relaxed));
    assert!((1..=3).contains(&values.len()));
    let want: u64 = (0..20u64).map(|r| (0..500u64).map(|i| i + r).sum::<u64>() + 5 * (1000 + r)).sum();
    assert_eq!(values.iter().map(|(_, c)| c.get()).sum::<u64>(), want);
}

#[test]
fn start_hooks_run_once_per_worker_on_that_worker_before_build_returns() {
    let calls: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let log = calls.clone();
    let pool = Pool::builder()
        .num_threads(3)
        .thread_name("hooked")
        .on_thread_start(move |i| {
            let name = std::thread::current().name().unwrap_or_default().to_owned();
            log.lock().unwrap().push((i, name));
        })
        .build()
        .unwrap();
    let mut calls = calls.lock().unwrap().clone();
    calls.sort();
    assert_eq!(calls, (0..3).map(|i| (i, format!("hooked-{i}"))).collect::<Vec<_>>());
    drop(pool);
}

#[test]
fn stop_hooks_run_once_per_worker_before_drop_returns() {
    let calls: Arc<Mutex<Vec<usize>>> = Arc::default();
    let log = calls.clone();
    let pool = Pool::builder().num_threads(3).on_thread_stop(move |i| log.lock().unwrap().push(i)).build().unwrap();
    pool.for_each_index(0..1000, |_| {});
    assert!(calls.lock().unwrap().is_empty());
    drop(pool);
    let mut calls = calls.lock().unwrap().clone();
    calls.sort();
    assert_eq!(calls, [0, 1, 2]);
}

#[test]
fn a_panicking_start_hook_fails_build_and_the_started_workers_are_joined() {
    let stopped = Arc::new(AtomicUsize::new(0));
    let counter = stopped.clone();
    let err = Pool::builder()
        .num_threads(4)
        .thread_name("hookfail")
        .on_thread_start(|i| {
            if i == 2 {
                panic!("no arena for worker {i}");
            }
        })
        .on_thread_stop(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .unwrap_err();
    match &err {
        BuildError::StartHookPanicked { worker, message } => {
            assert_eq!(*worker, 2);
            assert_eq!(message, "no arena for worker 2");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("no arena for worker 2"));
    // The three workers whose hooks returned ran and stopped; none is left behind
    // (`build` joins them before it returns; a joined thread may still show in /proc
    // for a moment).
    assert_eq!(stopped.load(Ordering::Relaxed), 3);
    assert_eq!(common::threads_left("hookfail"), 0, "a worker thread outlived the failed build");
}

#[test]
fn a_panicking_stop_hook_panics_the_drop_after_every_worker_stopped() {
    let stopped = Arc::new(AtomicUsize::new(0));
    let counter = stopped.clone();
    let pool = Pool::builder()
        .num_threads(3)
        .on_thread_stop(move |i| {
            counter.fetch_add(1, Ordering::Relaxed);
            if i == 1 {
                panic!("flush failed on {i}");
            }
        })
        .build()
        .unwrap();
    let payload = catch_unwind(AssertUnwindSafe(|| drop(pool))).unwrap_err();
    assert_eq!(payload.downcast_ref::<String>().map(String::as_str), Some("flush failed on 1"));
    assert_eq!(stopped.load(Ordering::Relaxed), 3);
}

#[test]
fn a_stop_hook_panic_during_an_unwind_does_not_abort() {
    let stopped = Arc::new(AtomicUsize::new(0));
    let counter = stopped.clone();
    let payload = catch_unwind(AssertUnwindSafe(|| {
        let _pool = Pool::builder()
            .num_threads(2)
            .on_thread_stop(move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
                panic!("stop hook");
            })
            .build()
            .unwrap();
        panic!("the program's own panic");
    }))
    .unwrap_err();
    // The program's panic is the one that arrives; the hook's was printed.
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"the program's own panic"));
    assert_eq!(stopped.load(Ordering::Relaxed), 2);
}

/// The order a sequential program with a `Vec` as its stack visits the same tree in.
fn sequential_order(seeds: &[u64], children: impl Fn(u64) -> Vec<u64>) -> Vec<u64> {
    let mut stack: Vec<u64> = seeds.iter().rev().copied().collect();
    let mut order = Vec::new();
    while let Some(n) = stack.pop() {
        order.push(n);
        stack.extend(children(n));
    }
    order
}

#[test]
fn inline_runs_on_the_caller_alone_in_the_sequential_order() {
    let pool = Pool::builder().inline(true).build().unwrap();
    assert_eq!(pool.num_threads(), 0);
    for seed in 0..20u64 {
        let children = |n: u64| -> Vec<u64> {
            let mut rng = Rng::new(n ^ (seed << 40));
            if n > 1 << 30 { Vec::new() } else { (0..rng.below(4)).map(|_| (n << 2) + rng.below(4) + 1).collect() }
        };
        let seeds: Vec<u64> = (1..=(1 + seed % 5)).collect();
        let me = std::thread::current().id();
        let order = Mutex::new(Vec::new());
        let stats = pool.run(seeds.iter().copied(), |n, ctx| {
            assert_eq!(std::thread::current().id(), me);
            assert_eq!(ctx.worker_index(), None);
            order.lock().unwrap().push(n);
            for c in children(n) {
                ctx.push(c);
            }
        });
        let want = sequential_order(&seeds, children);
        assert_eq!(stats.executed as usize, want.len());
        assert_eq!(order.into_inner().unwrap(), want, "seed {seed}");
    }
}

#[test]
fn inline_ranges_blocking_runs_and_streams_run_in_index_order() {
    let pool = Pool::builder().inline(true).num_threads(8).build().unwrap();
    let order = Mutex::new(Vec::new());
    pool.for_each_index(0..5000, |i| order.lock().unwrap().push(i));
    assert_eq!(order.into_inner().unwrap(), (0..5000).collect::<Vec<_>>());
    let order = Mutex::new(Vec::new());
    pool.runner()
        .blocking()
        .try_for_each_index(0..300, |i| {
            order.lock().unwrap().push(i);
            Ok::<_, ()>(())
        })
        .unwrap();
    assert_eq!(order.into_inner().unwrap(), (0..300).collect::<Vec<_>>());
    assert_eq!(pool.fold_index(0..1000, || 0u64, |a, i| a + i as u64, |a, b| a + b), 499_500);
    let streamed: Vec<usize> = with_watchdog(Duration::from_secs(60), move || {
        let out: Result<Vec<usize>, _> = pool.stream(0..10_000usize).map(|i| i * 2).into_iter().collect();
        drop(pool);
        out.unwrap()
    });
    assert_eq!(streamed, (0..10_000).map(|i| i * 2).collect::<Vec<_>>());
}

#[test]
fn inline_nested_runs_and_worker_locals_work() {
    let pool = Pool::builder().inline(true).build().unwrap();
    let local = WorkerLocal::new(&pool, || Cell::new(0u64));
    pool.run(0..10u64, |i, _| {
        let inner = pool.fold_index(0..100, || 0u64, |a, j| a + j as u64, |a, b| a + b);
        local.get().set(local.get().get() + inner + i);
    });
    let values: Vec<u64> = local.into_vec().into_iter().map(Cell::into_inner).collect();
    assert_eq!(values, [10 * 4950 + 45]);
}

thread_local! {
    /// Whether this thread is inside an outer item (for the nested-run tests).
    static IN_OUTER: Cell<bool> = const { Cell::new(false) };
}

/// One outer item: it holds `lock` (every other item) while its nested run waits for
/// other threads to finish the nested items. A thread that, while waiting, started
/// another outer item would find `IN_OUTER` set, and for the items that take the lock
/// would block on a lock it holds itself; such an item is counted in `reentered` and
/// returns at once instead.
fn outer_item(i: u32, lock: &Mutex<u64>, reentered: &AtomicUsize, nested: impl FnOnce()) {
    if IN_OUTER.get() {
        reentered.fetch_add(1, Ordering::Relaxed);
        return;
    }
    IN_OUTER.set(true);
    let mut guard = i.is_multiple_of(2).then(|| lock.lock().unwrap());
    nested();
    if let Some(g) = guard.as_mut() {
        **g += 1;
    }
    drop(guard);
    IN_OUTER.set(false);
}

/// Slow nested items, so that other threads take some and the nested caller waits.
const NESTED: usize = 16;
const NESTED_ITEM: Duration = Duration::from_micros(50);

#[test]
fn a_task_waiting_on_a_nested_run_never_starts_an_unrelated_item() {
    let (reentered, locked) = with_watchdog(Duration::from_secs(120), || {
        // Four threads, as below: with two, a thread whose nested item was taken finds
        // nothing else left to take (a thief takes the oldest work first).
        let pool = pool(4);
        let lock = Mutex::new(0u64);
        let reentered = AtomicUsize::new(0);
        for _ in 0..20 {
            pool.run(0..32u32, |i, _| {
                outer_item(i, &lock, &reentered, || {
                    pool.for_each_index(0..NESTED, |_| spin(NESTED_ITEM));
                });
            });
        }
        (reentered.into_inner(), lock.into_inner().unwrap())
    });
    assert_eq!(reentered, 0, "an outer item started on a thread waiting inside another");
    assert_eq!(locked, 20 * 16);
}

/// The check above can fail: a work-stealing pool whose waiting threads steal any work
/// (rayon's `join`, the cause of rayon issue 592) starts outer items inside outer items.
#[test]
fn the_reentry_check_sees_a_pool_whose_waiting_threads_steal_anything() {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
    let lock = Mutex::new(0u64);
    let reentered = AtomicUsize::new(0);
    with_watchdog(Duration::from_secs(120), move || {
        for _ in 0..200 {
            pool.install(|| {
                (0..32u32).into_par_iter().for_each(|i| {
                    // No lock here: it would deadlock rayon for real.
                    outer_item(i | 1, &lock, &reentered, || {
                        (0..NESTED).into_par_iter().for_each(|_| spin(NESTED_ITEM));
                    });
                });
            });
            if reentered.load(Ordering::Relaxed) > 0 {
                return;
            }
        }
        panic!("rayon never started an outer item inside another in 200 rounds");
    });
}

#[test]
fn run_collect_gives_the_same_values_parallel_and_inline() {
    let children = |n: u64| -> Vec<u64> {
        let mut rng = Rng::new(n);
        if n > 1 << 24 { Vec::new() } else { (0..rng.below(5)).map(|_| (n << 3) + rng.below(8)).collect() }
    };
    let task = |n: u64, ctx: &mut fanout::CollectCtx<'_, '_, u64>| {
        for c in children(n) {
            ctx.push(c);
        }
        spin(Duration::from_micros(n % 4));
        format!("{n:x}")
    };
    // The reference: a sequential depth-first walk, each node's pushes in push order.
    let mut want = Vec::new();
    let mut stack: Vec<u64> = (1..6u64).rev().collect();
    while let Some(n) = stack.pop() {
        want.push(format!("{n:x}"));
        stack.extend(children(n).into_iter().rev());
    }
    assert!(want.len() > 200, "a tree worth the name: {}", want.len());
    let inline = Pool::builder().inline(true).build().unwrap();
    assert_eq!(inline.run_collect(1..6u64, task), want);
    for threads in [1, 2, 4] {
        let pool = pool(threads);
        for _ in 0..5 {
            assert_eq!(pool.run_collect(1..6u64, task), want, "{threads} threads");
            let r = pool.runner().try_run_collect(1..6u64, |n, ctx| Ok::<_, ()>(task(n, ctx)));
            assert_eq!(r.unwrap(), want);
        }
    }
}

/// Counts the threads inside tasks at once and keeps the most seen.
#[derive(Default)]
struct Busy {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Busy {
    fn work(&self, d: Duration) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(n, Ordering::SeqCst);
        spin(d);
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn a_jobserver_caps_the_threads_at_work_across_pools() {
    let (most, done) = with_watchdog(Duration::from_secs(120), || {
        // Two tokens in all: one for the second caller, one for any worker of either pool.
        let client = jobserver::Client::new(2).unwrap();
        let first = Pool::builder().num_threads(4).jobserver(client.clone()).build().unwrap();
        let second = Pool::builder().num_threads(4).jobserver(client.clone()).build().unwrap();
        let busy = Busy::default();
        let done = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let (busy, done) = (&busy, &done);
            // This thread is the process's main thread (the implicit token); the other
            // caller takes a token of its own, as a well-behaved thread would.
            s.spawn(|| {
                let _token = client.acquire().unwrap();
                for _ in 0..20 {
                    second.for_each_index(0..200, |_| {
                        busy.work(Duration::from_micros(20));
                        done.fetch_add(1, Ordering::Relaxed);
                    });
                }
            });
            for _ in 0..20 {
                first.run(0..100u32, |i, ctx| {
                    busy.work(Duration::from_micros(20));
                    done.fetch_add(1, Ordering::Relaxed);
                    if i < 100 {
                        ctx.push(i + 100);
                    }
                });
            }
        });
        (busy.most.into_inner(), done.into_inner())
    });
    assert_eq!(done, 20 * 200 + 20 * 200);
    // Two callers and one token-holding worker; twelve threads would otherwise work.
    assert!(most <= 3, "{most} threads worked at once on 2 tokens and one implicit token");
}

#[test]
fn a_jobserver_without_free_tokens_leaves_the_work_to_the_callers() {
    let (most, sum) = with_watchdog(Duration::from_secs(120), || {
        let client = jobserver::Client::new(0).unwrap();
        let pool = Pool::builder().num_threads(3).jobserver(client).build().unwrap();
        let busy = Busy::default();
        let mut sum = 0;
        for round in 0..5u64 {
            sum += pool.fold_index(
                0..500,
                || 0u64,
                |a, i| {
                    busy.work(Duration::from_micros(10));
                    a + i as u64 + round
                },
                |a, b| a + b,
            );
            // Blocking runs and streams too: nobody may wait for a worker.
            pool.runner()
                .blocking()
                .try_for_each_index(0..50, |_| {
                    busy.work(Duration::from_micros(10));
                    Ok::<_, ()>(())
                })
                .unwrap();
            let n: u64 = pool.stream(0..300u64).map(|i| i + 1).into_iter().map(|r| r.unwrap()).sum();
            assert_eq!(n, 300 * 301 / 2);
        }
        drop(pool);
        (busy.most.into_inner(), sum)
    });
    assert_eq!(sum, 5 * 124_750 + 500 * 10);
    assert_eq!(most, 1, "a worker worked without a token");
}

#[test]
fn a_jobserver_token_comes_back_when_the_worker_sleeps() {
    let client = jobserver::Client::new(1).unwrap();
    let pool = Pool::builder().num_threads(2).jobserver(client.clone()).build().unwrap();
    let busy = Busy::default();
    pool.for_each_index(0..2000, |_| busy.work(Duration::from_micros(20)));
    assert_eq!(busy.most.load(Ordering::SeqCst), 2, "the worker never got the token");
    // Idle workers give the token back within their spin time (about 100 us); a
    // blocking acquire gets it then, or the watchdog fails the test.
    let token = with_watchdog(Duration::from_secs(20), move || client.acquire().unwrap());
    drop(token);
    drop(pool);
}

/// Pins the current thread to `cpu` (Linux).
#[cfg(target_os = "linux")]
fn restrict_to(cpu: usize) {
    // SAFETY: a zeroed `cpu_set_t` is a valid empty set, filled and passed by pointer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
}

#[cfg(target_os = "linux")]
#[test]
fn workers_pin_only_to_the_cores_the_process_may_use() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        return;
    }
    // A thread (and the threads it starts) limited to the last CPU, as under `taskset`.
    let last = (0..1024).rev().find(|&c| {
        // SAFETY: as in `restrict_to`; only reads the mask.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0
                && libc::CPU_ISSET(c, &set)
        }
    });
    let Some(last) = last else { return };
    let (pinned, cpus) = std::thread::spawn(move || {
        restrict_to(last);
        let pool = Pool::builder().num_threads(2).pin(true).build().unwrap();
        // SAFETY: `sched_getcpu` has no preconditions.
        let cpus = pool.map_index(0..200, |_| unsafe { libc::sched_getcpu() });
        (pool.pinned_workers(), cpus)
    })
    .join()
    .unwrap();
    assert_eq!(pinned, 1, "one allowed core, so one pinned worker");
    assert!(cpus.iter().all(|&c| c == last as i32), "a worker ran outside the allowed CPU set: {cpus:?}");
}

#[test]
fn a_jobserver_pool_is_unpinned_unless_asked() {
    let client = jobserver::Client::new(1).unwrap();
    let pool = Pool::builder().num_threads(1).jobserver(client.clone()).build().unwrap();
    assert_eq!(pool.pinned_workers(), 0);
    drop(pool);
    if core_affinity_works() {
        let pool = Pool::builder().num_threads(1).jobserver(client).pin(true).build().unwrap();
        assert_eq!(pool.pinned_workers(), 1);
    }
}

/// Whether this machine lets a thread pin itself (containers may refuse).
fn core_affinity_works() -> bool {
    Pool::builder().num_threads(1).build().is_ok_and(|p| p.pinned_workers() == 1)
}

#[test]
fn a_panicking_collecting_run_drops_every_item_and_value_once() {
    let pool = pool(2);
    for seed in 0..20u32 {
        let made = AtomicUsize::new(0);
        let dropped = AtomicUsize::new(0);
        let values_dropped = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run_collect([common::Counted(0, &dropped)], |item, ctx| {
                let n = item.0;
                if n < 400 {
                    for j in 1..=3 {
                        made.fetch_add(1, Ordering::Relaxed);
                        ctx.push(common::Counted(n * 3 + j, &dropped));
                    }
                }
                // Panics after pushing: the pushes must still be dropped exactly once.
                if n == 100 + seed {
                    panic!("task {n}");
                }
                common::Counted(n, &values_dropped)
            })
        }));
        let Err(payload) = r else { panic!("the run did not panic") };
        assert_eq!(payload.downcast_ref::<String>().map(String::as_str), Some(&*format!("task {}", 100 + seed)));
        // Every item (the seed too) dropped once, whether run or pending.
        assert_eq!(dropped.load(Ordering::Relaxed), made.load(Ordering::Relaxed) + 1, "seed {seed}");
        assert!(values_dropped.load(Ordering::Relaxed) > 0);
    }
}
