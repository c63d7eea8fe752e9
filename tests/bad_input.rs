//! Bad input gets a clear error, never an abort or a hang: worker threads that cannot
//! start, panicking `identity` and `reduce` closures, panicking stream sinks and
//! consumers, pools used inside each other's tasks, and settings a demanding user
//! might try. Cases whose failure would abort the process, or that count the process's
//! threads, run in a child process of their own.

mod common;

use common::{thread_count, threads_left, threads_named};
use fanout::{BuildError, CancelToken, MAX_THREADS, MIN_STACK_SIZE, Pool, RunError};
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once, mpsc};
use std::time::{Duration, Instant};

/// How long any one case may take before it counts as a hang.
const HANG_LIMIT: Duration = Duration::from_secs(60);

/// The payload of the panics these tests plan, so that the caller can tell the
/// original payload from any other.
#[derive(Debug, PartialEq)]
struct Planned(&'static str);

/// Keeps the reports of planned panics out of the log (other panics still print).
fn quiet_planned_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let planned = payload.is::<Planned>()
                || payload.downcast_ref::<&str>().is_some_and(|m| m.starts_with("planned"))
                || payload.downcast_ref::<String>().is_some_and(|m| m.starts_with("planned"));
            if !planned {
                default_hook(info);
            }
        }));
    });
}

/// Panics with `Planned(what)`.
fn planned(what: &'static str) -> ! {
    std::panic::panic_any(Planned(what))
}

/// Asserts that `caught` is a panic whose payload is `Planned(what)`, the very one the
/// closure raised (not a message about it, not some other panic).
fn assert_planned<T>(caught: std::thread::Result<T>, what: &'static str, case: &str) {
    let payload: Box<dyn Any + Send> = match caught {
        Ok(_) => panic!("{case}: returned normally; the planned panic ({what}) never reached the caller"),
        Err(payload) => payload,
    };
    match payload.downcast::<Planned>() {
        Ok(p) => assert_eq!(*p, Planned(what), "{case}: another planned panic reached the caller"),
        Err(other) => {
            let message = other
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| other.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{case}: the caller got a panic that is not the original payload: {message:?}")
        }
    }
}

/// Runs `f` under a watchdog that aborts the process, naming `what`, if `f` has not
/// returned after `HANG_LIMIT`: a hang fails the test binary instead of stalling it.
/// The watchdog thread is joined before this returns, so it never shows up in a
/// thread count taken afterwards.
fn watchdog<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let (done, wait) = mpsc::channel::<()>();
    let what = what.to_owned();
    let dog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(HANG_LIMIT) {
            eprintln!("bad_input: {what} has not returned after {} s: it hangs", HANG_LIMIT.as_secs());
            std::process::abort();
        }
    });
    // If `f` panics, `done` is dropped while unwinding, which lets the watchdog go.
    let out = f();
    drop(done);
    dog.join().expect("the watchdog thread panicked");
    out
}

/// Set in the child process to the name of the test it runs.
const CHILD: &str = "FANOUT_BAD_INPUT_CHILD";

/// In the child process of test `name`, returns `true`: the test does its work there.
/// Otherwise runs test `name` of this binary alone in a child process, asserts that it
/// passed (an abort or a stack overflow there fails this test, and the other tests
/// still run; and its thread counts see no other test's threads), and returns `false`.
fn child_process(name: &str) -> bool {
    if std::env::var(CHILD).is_ok_and(|v| v == name) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(CHILD, name)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child process running {name} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// Waits (up to ten seconds) until the process has `n` threads; returns how many it has.
fn settle_thread_count(n: usize) -> usize {
    let start = Instant::now();
    loop {
        let now = thread_count();
        if now == n || start.elapsed() > Duration::from_secs(10) {
            return now;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn named_pool(threads: usize, name: &str) -> Pool {
    Pool::builder().num_threads(threads).pin(false).thread_name(name).build().expect("pool")
}

/// Asserts that the pool's workers are all alive (none unwound out of its loop) and
/// that the pool still runs work correctly, on every call kind.
fn assert_pool_works(pool: &Pool, prefix: &str, case: &str) {
    assert_eq!(threads_named(prefix), pool.num_threads(), "{case}: a worker thread died");
    assert_eq!(pool.fold_index(0..10_000, || 0u64, |a, i| a + i as u64, |a, b| a + b), 49_995_000, "{case}");
    assert_eq!(pool.map_index(0..100, |i| i * 3)[99], 297, "{case}");
    let stats = pool.run([12u32], |d, ctx| {
        if d > 0 {
            ctx.push(d - 1);
            ctx.push(d - 1);
        }
    });
    assert_eq!(stats.executed, (1 << 13) - 1, "{case}");
    let streamed: u64 = pool.stream(0..1000u64).map(|x| x + 1).into_iter().map(Result::unwrap).sum();
    assert_eq!(streamed, 500_500, "{case}");
}

// ---------------------------------------------------------------------------------
// Worker threads that cannot start
// ---------------------------------------------------------------------------------

/// Asserts that `r` is the error of a worker thread the OS refused to start, with a
/// message that says so and the OS's error as its source (and not in the message too,
/// or a chain of causes would print it twice).
fn assert_spawn_error(r: Result<Pool, BuildError>, case: &str) {
    let err = match r {
        Ok(pool) => panic!("{case}: the pool was built ({} threads) although no thread can start", pool.num_threads()),
        Err(e) => e,
    };
    assert!(matches!(err, BuildError::Spawn(_)), "{case}: {err:?}");
    let message = err.to_string();
    assert_eq!(message, "could not start a worker thread", "{case}");
    let source = std::error::Error::source(&err).expect("the OS error is the source");
    assert!(!source.to_string().is_empty(), "{case}: the OS error says nothing");
}

#[test]
fn a_worker_that_cannot_start_fails_the_build_with_a_clear_error() {
    if !child_process("a_worker_that_cannot_start_fails_the_build_with_a_clear_error") {
        return;
    }
    // Stacks no machine can map: the whole address space, half of it, the 47-bit user
    // half (Linux refuses these whatever its overcommit setting).
    for size in [usize::MAX, usize::MAX / 2, 1 << 47] {
        for threads in [1, 2, 5] {
            let case = format!("stack_size({size:#x}), {threads} threads");
            let before = thread_count();
            let r = watchdog(&case, || {
                Pool::builder().num_threads(threads).thread_name("bi-huge").stack_size(size).build()
            });
            assert_spawn_error(r, &case);
            assert_eq!(settle_thread_count(before), before, "{case}: threads were left behind");
        }
    }
    // The builder is unharmed by all that: a sane stack builds.
    let pool = Pool::builder().num_threads(2).pin(false).thread_name("bi-huge").stack_size(1 << 20).build().unwrap();
    assert_pool_works(&pool, "bi-huge", "after failed builds");
}

#[cfg(target_os = "linux")]
fn address_space_in_use() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).expect("VmSize in /proc/self/status");
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[cfg(target_os = "linux")]
fn set_address_space_limit(bytes: libc::rlim_t) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls on a valid, local `rlimit`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_AS, &mut limit), 0);
        limit.rlim_cur = bytes.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_AS, &limit), 0);
    }
}

/// The OS refuses a thread after some have started: those must be told to stop and
/// be joined, and the build must return the error.
#[cfg(target_os = "linux")]
#[test]
fn a_spawn_failing_midway_stops_and_joins_the_workers_already_started() {
    if !child_process("a_spawn_failing_midway_stops_and_joins_the_workers_already_started") {
        return;
    }
    const STACK: usize = 1 << 30;
    let before = thread_count();
    // Room for two 1 GiB worker stacks and some slack (malloc arenas, the watchdog),
    // not for three.
    let base = address_space_in_use();
    set_address_space_limit((base + 2 * STACK + STACK / 2) as libc::rlim_t);
    let builder = || Pool::builder().pin(false).thread_name("bi-midway").stack_size(STACK);
    // Two workers fit.
    let pool = watchdog("two workers under the limit", || builder().num_threads(2).build())
        .expect("two workers must fit in the address space left");
    assert_eq!(pool.fold_index(0..1000, || 0, |a, i| a + i, |a, b| a + b), 499_500);
    drop(pool);
    assert_eq!(settle_thread_count(before), before, "the two-worker pool left threads behind");
    assert!(address_space_in_use() < base + STACK / 2, "the stacks of the dropped pool were not released");
    // Sixteen do not: the third (or so) fails after two have started.
    for round in 0..3 {
        let case = format!("round {round}: 16 workers of 1 GiB under a 2.5 GiB limit");
        let r = watchdog(&case, || builder().num_threads(16).build());
        assert_spawn_error(r, &case);
        assert_eq!(settle_thread_count(before), before, "{case}: the workers started were not joined");
        assert_eq!(threads_named("bi-midway"), 0, "{case}");
    }
    set_address_space_limit(libc::RLIM_INFINITY);
    let pool = builder().num_threads(16).stack_size(1 << 20).build().expect("without the limit, 16 workers start");
    assert_eq!(pool.num_threads(), 16);
    assert_eq!(pool.map_index(0..64, |i| i)[63], 63);
}

// ---------------------------------------------------------------------------------
// Panicking `identity` and `reduce` closures
// ---------------------------------------------------------------------------------

/// Whether the current thread is a worker of the pool named `prefix`.
fn on_worker(prefix: &str) -> bool {
    std::thread::current().name().is_some_and(|n| n.starts_with(prefix))
}

/// The item body of the fold cases: slow (1 ms) until `joined` is set, fast after, so
/// that a worker is sure to take part before the run ends (a lazily split range is
/// shared only with idle threads, between the caller's blocks).
fn slow_until(joined: &AtomicBool) {
    if !joined.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

const FOLD_ITEMS: usize = 5_000;

#[test]
fn a_panicking_identity_reaches_the_caller_and_every_worker_survives() {
    quiet_planned_panics();
    for threads in [1, 2] {
        let prefix = "bi-ident";
        let pool = named_pool(threads, prefix);
        let data: Vec<u64> = (0..FOLD_ITEMS as u64).collect();
        watchdog(&format!("panicking identity, {threads} threads"), || {
            // On the caller, from the first call.
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.fold_index(0..FOLD_ITEMS, || -> u64 { planned("identity") }, |a, i| a + i as u64, |a, b| a + b)
            }));
            assert_planned(r, "identity", "fold_index, identity panics on the caller");
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.fold(&data, || -> u64 { planned("identity") }, |a, x| a + x, |a, b| a + b)
            }));
            assert_planned(r, "identity", "fold, identity panics on the caller");
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.run_fold([0u32], || -> u64 { planned("identity") }, |a, _, _| a + 1, |a, b| a + b)
            }));
            assert_planned(r, "identity", "run_fold, identity panics on the caller");
            // An empty range calls `identity` for its result, on the caller.
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.fold_index(7..7, || -> u64 { planned("identity") }, |a, i| a + i as u64, |a, b| a + b)
            }));
            assert_planned(r, "identity", "fold_index over an empty range");
            assert_pool_works(&pool, prefix, "after identity panics on the caller");

            // On a worker only, once it joins: the caller's part runs fine meanwhile.
            let joined = AtomicBool::new(false);
            let identity = || -> u64 {
                if on_worker(prefix) {
                    joined.store(true, Ordering::SeqCst);
                    planned("identity on a worker");
                }
                0
            };
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.fold_index(
                    0..FOLD_ITEMS,
                    identity,
                    |a, i| {
                        slow_until(&joined);
                        a + i as u64
                    },
                    |a, b| a + b,
                )
            }));
            assert_planned(r, "identity on a worker", "fold_index, identity panics on a worker");
            joined.store(false, Ordering::SeqCst);
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.run_fold(
                    [None],
                    identity,
                    |a, item: Option<usize>, ctx| match item {
                        None => {
                            (0..FOLD_ITEMS).for_each(|i| ctx.push(Some(i)));
                            a
                        }
                        Some(i) => {
                            slow_until(&joined);
                            a + i as u64
                        }
                    },
                    |a, b| a + b,
                )
            }));
            assert_planned(r, "identity on a worker", "run_fold, identity panics on a worker");
            assert_pool_works(&pool, prefix, "after identity panics on a worker");

            // The fallible calls return the panic as an error instead.
            let message = |r: Result<u64, RunError<()>>, case: &str| match r {
                Err(RunError::Panicked { message, .. }) => message,
                other => panic!("{case}: expected Panicked, got {other:?}"),
            };
            let id = || -> u64 { panic!("planned: try identity") };
            let r = pool.try_fold_index(0..FOLD_ITEMS, id, |a, i| Ok(a + i as u64), |a, b| a + b);
            assert_eq!(message(r, "try_fold_index"), "planned: try identity");
            let r = pool.try_fold(&data, id, |a, x| Ok(a + x), |a, b| a + b);
            assert_eq!(message(r, "try_fold"), "planned: try identity");
            let r = pool.runner().try_run_fold([0u8], id, |a, _, _| Ok(a + 1), |a, b| a + b);
            assert_eq!(message(r, "try_run_fold"), "planned: try identity");
            let r = pool.try_fold_index(3..3, id, |a, i| Ok(a + i as u64), |a, b| a + b);
            assert_eq!(message(r, "try_fold_index over an empty range"), "planned: try identity");
            let r = pool.try_fold(&[] as &[u64], id, |a, x| Ok(a + x), |a, b| a + b);
            assert_eq!(message(r, "try_fold over an empty slice"), "planned: try identity");
            assert_pool_works(&pool, prefix, "after fallible identity panics");
        });
        drop(pool);
        assert_eq!(threads_left(prefix), 0, "{threads} threads: workers outlived their pool");
    }
}

#[test]
fn a_panicking_reduce_reaches_the_caller_and_every_worker_survives() {
    quiet_planned_panics();
    for threads in [1, 2] {
        let prefix = "bi-reduce";
        let pool = named_pool(threads, prefix);
        let data: Vec<u64> = (0..FOLD_ITEMS as u64).collect();
        watchdog(&format!("panicking reduce, {threads} threads"), || {
            // `reduce` runs once there are two accumulators: the identity a worker
            // makes when it joins says so.
            let joined = AtomicBool::new(false);
            let identity = || -> Vec<u64> {
                if on_worker(prefix) {
                    joined.store(true, Ordering::SeqCst);
                }
                Vec::new()
            };
            // Accumulators own heap data: Miri-style leak checks aside, this shows the
            // ones not yet reduced are dropped without trouble.
            let fold_item = |mut a: Vec<u64>, x: u64| {
                slow_until(&joined);
                a.push(x);
                a
            };
            let reduce = |_: Vec<u64>, _: Vec<u64>| -> Vec<u64> { planned("reduce") };
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.fold_index(0..FOLD_ITEMS, identity, |a, i| fold_item(a, i as u64), reduce)
            }));
            assert!(joined.swap(false, Ordering::SeqCst), "no worker joined the fold");
            assert_planned(r, "reduce", "fold_index");
            let r = catch_unwind(AssertUnwindSafe(|| pool.fold(&data, identity, |a, &x| fold_item(a, x), reduce)));
            assert!(joined.swap(false, Ordering::SeqCst), "no worker joined the fold");
            assert_planned(r, "reduce", "fold");
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.run_fold(
                    [None],
                    identity,
                    |a, item: Option<u64>, ctx| match item {
                        None => {
                            (0..FOLD_ITEMS as u64).for_each(|i| ctx.push(Some(i)));
                            a
                        }
                        Some(x) => fold_item(a, x),
                    },
                    reduce,
                )
            }));
            assert!(joined.swap(false, Ordering::SeqCst), "no worker joined the run");
            assert_planned(r, "reduce", "run_fold");
            assert_pool_works(&pool, prefix, "after reduce panics");

            // The fallible calls: the panic is an error, not an unwind out of the call.
            let try_reduce = |_: Vec<u64>, _: Vec<u64>| -> Vec<u64> { panic!("planned: try reduce") };
            let check = |r: Result<Vec<u64>, RunError<()>>, case: &str| {
                assert!(joined.swap(false, Ordering::SeqCst), "{case}: no worker joined");
                match r {
                    Err(RunError::Panicked { message, index: None }) => {
                        assert_eq!(message, "planned: try reduce", "{case}")
                    }
                    other => panic!("{case}: expected Panicked without an index, got {other:?}"),
                }
            };
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.try_fold_index(0..FOLD_ITEMS, identity, |a, i| Ok(fold_item(a, i as u64)), try_reduce)
            }));
            check(r.expect("try_fold_index unwound instead of returning the panic as an error"), "try_fold_index");
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.try_fold(&data, identity, |a, &x| Ok(fold_item(a, x)), try_reduce)
            }));
            check(r.expect("try_fold unwound instead of returning the panic as an error"), "try_fold");
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.runner().try_run_fold(
                    [None],
                    identity,
                    |a, item: Option<u64>, ctx| match item {
                        None => {
                            (0..FOLD_ITEMS as u64).for_each(|i| ctx.push(Some(i)));
                            Ok(a)
                        }
                        Some(x) => Ok(fold_item(a, x)),
                    },
                    try_reduce,
                )
            }));
            check(r.expect("try_run_fold unwound instead of returning the panic as an error"), "try_run_fold");
            assert_pool_works(&pool, prefix, "after fallible reduce panics");
        });
        drop(pool);
        assert_eq!(threads_left(prefix), 0, "{threads} threads: workers outlived their pool");
    }
}

/// A reduce that panics with accumulators still waiting, whose `Drop` panics too: the
/// panic reaches the caller, and the other drops neither abort nor replace it.
#[test]
fn a_panicking_reduce_with_accumulators_whose_drop_panics_never_aborts() {
    if !child_process("a_panicking_reduce_with_accumulators_whose_drop_panics_never_aborts") {
        return;
    }
    quiet_planned_panics();
    /// An accumulator whose drop panics (once it has folded something).
    struct Grumpy(u64);
    impl Drop for Grumpy {
        fn drop(&mut self) {
            if self.0 > 0 {
                panic!("planned: an accumulator's drop");
            }
        }
    }
    // More participants than the reduce call takes, so that some wait when it panics.
    let prefix = "bi-grumpy";
    let pool = named_pool(3, prefix);
    watchdog("reduce over accumulators whose drop panics", || {
        let joined = AtomicUsize::new(0);
        let identity = || {
            if on_worker(prefix) {
                joined.fetch_add(1, Ordering::SeqCst);
            }
            Grumpy(0)
        };
        let slow = |mut a: Grumpy, i: usize| {
            if joined.load(Ordering::SeqCst) < 2 {
                std::thread::sleep(Duration::from_millis(1));
            }
            a.0 += i as u64 + 1;
            a
        };
        let reduce = |a: Grumpy, b: Grumpy| -> Grumpy {
            std::mem::forget(a);
            std::mem::forget(b);
            planned("reduce")
        };
        let r = catch_unwind(AssertUnwindSafe(|| pool.fold_index(0..FOLD_ITEMS, identity, slow, reduce)));
        assert!(joined.swap(0, Ordering::SeqCst) >= 2, "fewer than two workers joined");
        assert_planned(r, "reduce", "fold_index");
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.try_fold_index(0..FOLD_ITEMS, identity, |a, i| Ok::<_, ()>(slow(a, i)), reduce)
        }));
        assert!(joined.swap(0, Ordering::SeqCst) >= 2, "fewer than two workers joined");
        assert!(
            matches!(r, Ok(Err(RunError::Panicked { index: None, .. }))),
            "try_fold_index: {:?}",
            r.map(|r| r.map(|g| g.0))
        );
        // A task panics (it forgets its own accumulator first) while the other
        // participants hold accumulators whose drop panics.
        let last_item = |a: Grumpy, i: usize| {
            let a = slow(a, i);
            if i == FOLD_ITEMS - 1 {
                std::mem::forget(a);
                planned("item");
            }
            a
        };
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.fold_index(0..FOLD_ITEMS, identity, last_item, |a, b| slow(a, b.0 as usize))
        }));
        assert!(joined.swap(0, Ordering::SeqCst) >= 2, "fewer than two workers joined");
        assert_planned(r, "item", "fold_index");
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.try_fold_index(
                0..FOLD_ITEMS,
                identity,
                |a, i| Ok::<_, ()>(last_item(a, i)),
                |a, b| slow(a, b.0 as usize),
            )
        }));
        assert!(joined.swap(0, Ordering::SeqCst) >= 2, "fewer than two workers joined");
        assert!(
            matches!(r, Ok(Err(RunError::Panicked { index: Some(i), .. })) if i == FOLD_ITEMS - 1),
            "try_fold_index: {:?}",
            r.map(|r| r.map(|g| g.0))
        );
        assert_pool_works(&pool, prefix, "after panics with grumpy accumulators");
    });
}

// ---------------------------------------------------------------------------------
// Panicking stream sinks and consumers
// ---------------------------------------------------------------------------------

/// A source that counts how many items were pulled from it.
fn counted(n: u64, pulls: &Arc<AtomicU64>, pause: Duration) -> impl Iterator<Item = u64> + Send + 'static {
    let pulls = Arc::clone(pulls);
    (0..n).inspect(move |_| {
        pulls.fetch_add(1, Ordering::SeqCst);
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    })
}

#[test]
fn a_panicking_stream_sink_or_consumer_reaches_the_caller_and_leaves_nothing_behind() {
    if !child_process("a_panicking_stream_sink_or_consumer_reaches_the_caller_and_leaves_nothing_behind") {
        return;
    }
    quiet_planned_panics();
    const WINDOW: usize = 64;
    const AT: u64 = 1_000;
    let before = thread_count();
    for threads in [1, 2] {
        let prefix = "bi-sink";
        let pool = named_pool(threads, prefix);
        for ordered in [true, false] {
            for pause in [Duration::ZERO, Duration::from_micros(50)] {
                let case = format!("{threads} threads, ordered {ordered}, source pause {pause:?}");
                watchdog(&case, || {
                    // The sink of `for_each` panics.
                    let pulls = Arc::new(AtomicU64::new(0));
                    let seen = AtomicU64::new(0);
                    let s = pool.stream(counted(1 << 40, &pulls, pause)).window(WINDOW).map(|x| x * 2);
                    let s = if ordered { s } else { s.unordered() };
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        s.for_each(|x| {
                            if seen.fetch_add(1, Ordering::SeqCst) == AT {
                                planned("sink");
                            }
                            std::hint::black_box(x);
                        })
                    }));
                    assert_planned(r, "sink", &case);
                    let (pulled, seen) = (pulls.load(Ordering::SeqCst), seen.into_inner());
                    assert!(
                        pulled <= seen + WINDOW as u64,
                        "{case}: the source ran on after the sink panicked: {pulled} pulled"
                    );
                    // Dropped during the unwind: nobody pulls any more.
                    std::thread::sleep(Duration::from_millis(5));
                    assert_eq!(pulls.load(Ordering::SeqCst), pulled, "{case}: the source is still pulled");

                    // The consumer panics while it iterates (a limited stage is busy too).
                    let pulls = Arc::new(AtomicU64::new(0));
                    let s = pool
                        .stream(counted(1 << 40, &pulls, pause))
                        .window(WINDOW)
                        .map(|x| x + 1)
                        .parallelism(1)
                        .filter(|x| x % 3 != 0);
                    let s = if ordered { s } else { s.unordered() };
                    let mut it = s.into_iter();
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        for (n, r) in it.by_ref().enumerate() {
                            r.unwrap();
                            if n as u64 == AT {
                                planned("consumer");
                            }
                        }
                    }));
                    assert_planned(r, "consumer", &case);
                    // The iterator survives its consumer's panic and may go on.
                    assert!(it.next().unwrap().is_ok(), "{case}: the stream broke after the consumer's panic");
                    drop(it);
                    let pulled = pulls.load(Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    assert_eq!(
                        pulls.load(Ordering::SeqCst),
                        pulled,
                        "{case}: the source is still pulled after the drop"
                    );

                    // The consumer panics inside `next`'s caller while the iterator is moved
                    // into the closure: the unwind drops it.
                    let pulls = Arc::new(AtomicU64::new(0));
                    let it = pool.stream(counted(1 << 40, &pulls, pause)).window(WINDOW).into_iter();
                    let r = catch_unwind(AssertUnwindSafe(move || {
                        for r in it {
                            if r.unwrap() == AT {
                                planned("consumer owning the iterator");
                            }
                        }
                    }));
                    assert_planned(r, "consumer owning the iterator", &case);
                    let pulled = pulls.load(Ordering::SeqCst);
                    assert!(pulled <= AT + 1 + WINDOW as u64, "{case}: {pulled} pulled");
                    std::thread::sleep(Duration::from_millis(5));
                    assert_eq!(
                        pulls.load(Ordering::SeqCst),
                        pulled,
                        "{case}: the source is still pulled after the unwind"
                    );
                    assert_pool_works(&pool, prefix, &case);
                });
            }
        }
        drop(pool);
        assert_eq!(threads_left(prefix), 0, "{threads} threads: workers outlived their pool");
    }
    assert_eq!(settle_thread_count(before), before, "threads were left behind");
}

// ---------------------------------------------------------------------------------
// Pools used inside each other's tasks
// ---------------------------------------------------------------------------------

/// `width^depth` leaves, counted through runs nested `depth` deep: each level is a run
/// on `pools[at]` whose tasks run the next level, on the other pool except every third
/// level (which stays on the same pool: nested in its own task). The call kind changes
/// from level to level.
fn nested(pools: &[&Pool; 2], at: usize, depth: u32, width: usize) -> u64 {
    if depth == 0 {
        return 1;
    }
    let pool = pools[at];
    let next = if depth.is_multiple_of(3) { at } else { 1 - at };
    let down = || nested(pools, next, depth - 1, width);
    match depth % 5 {
        0 => pool.fold_index(0..width, || 0, |a, _| a + down(), |a, b| a + b),
        1 => {
            let total = AtomicU64::new(0);
            pool.run(0..width, |_, _| {
                total.fetch_add(down(), Ordering::Relaxed);
            });
            total.into_inner()
        }
        2 => pool.map_index(0..width, |_| down()).into_iter().sum(),
        3 => {
            pool.runner().limit(1).try_fold_index(0..width, || 0, |a, _| Ok::<_, ()>(a + down()), |a, b| a + b).unwrap()
        }
        _ => pool.run_fold(
            [width],
            || 0,
            |a, k, ctx| {
                // One level as a chain of follow-ons.
                if k > 1 {
                    ctx.push(k - 1);
                }
                a + down()
            },
            |a, b| a + b,
        ),
    }
}

#[test]
fn pools_used_inside_each_others_tasks_give_correct_results_without_deadlock() {
    const DEPTH: u32 = 7;
    const WIDTH: usize = 3;
    let leaves = (WIDTH as u64).pow(DEPTH);
    for (ta, tb) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
        let a = named_pool(ta, "bi-nest-a");
        let b = named_pool(tb, "bi-nest-b");
        let pools = [&a, &b];
        watchdog(&format!("pools of {ta} and {tb} threads nested in each other"), || {
            assert_eq!(nested(&pools, 0, DEPTH, WIDTH), leaves, "{ta}/{tb}: starting on A");
            assert_eq!(nested(&pools, 1, DEPTH, WIDTH), leaves, "{ta}/{tb}: starting on B");
            // Both ways at once, from outside callers: A's tasks wait on B's runs while
            // B's tasks wait on A's.
            std::thread::scope(|s| {
                let callers: Vec<_> = (0..4)
                    .map(|c| {
                        let pools = &pools;
                        s.spawn(move || (0..3).map(|_| nested(pools, c % 2, DEPTH - 1, WIDTH)).collect::<Vec<_>>())
                    })
                    .collect();
                for c in callers {
                    assert!(
                        c.join().unwrap().iter().all(|&n| n == leaves / WIDTH as u64),
                        "{ta}/{tb}: concurrent callers"
                    );
                }
            });
        });
    }
}

#[test]
fn streams_and_runs_across_two_pools_do_not_deadlock() {
    for (ta, tb) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
        let a = Arc::new(named_pool(ta, "bi-snest-a"));
        let b = Arc::new(named_pool(tb, "bi-snest-b"));
        watchdog(&format!("streams across pools of {ta} and {tb} threads"), || {
            // A's tasks consume streams on B, whose stages run folds on A, whose items
            // consume a short stream on B.
            let (a2, b2) = (Arc::clone(&a), Arc::clone(&b));
            let sums = a.map_index(0..4, move |k| {
                let (a3, b3) = (Arc::clone(&a2), Arc::clone(&b2));
                b2.stream(0..64u64)
                    .window(8)
                    .map(move |x| {
                        let inner = a3.fold_index(
                            0..4,
                            || 0u64,
                            |acc, j| {
                                acc + b3
                                    .stream(0..8u64)
                                    .map(move |y| y + j as u64)
                                    .into_iter()
                                    .map(Result::unwrap)
                                    .sum::<u64>()
                            },
                            |p, q| p + q,
                        );
                        x + inner + k as u64
                    })
                    .into_iter()
                    .map(Result::unwrap)
                    .sum::<u64>()
            });
            // Per x: inner = sum over j < 4 of (28 + 8 j) = 160.
            for (k, s) in sums.iter().enumerate() {
                assert_eq!(*s, (0..64u64).map(|x| x + 160 + k as u64).sum::<u64>(), "{ta}/{tb}: task {k}");
            }
        });
    }
}

// ---------------------------------------------------------------------------------
// Settings and inputs a demanding user might try
// ---------------------------------------------------------------------------------

#[test]
fn bad_builder_settings_get_clear_errors() {
    let err = Pool::builder().num_threads(0).build().unwrap_err();
    assert!(matches!(err, BuildError::ZeroThreads));
    assert_eq!(
        err.to_string(),
        "a pool needs at least one thread (`inline(true)` builds one that runs on its callers)"
    );
    for n in [MAX_THREADS + 1, usize::MAX] {
        let err = Pool::builder().num_threads(n).build().unwrap_err();
        assert!(matches!(err, BuildError::TooManyThreads { requested, max: MAX_THREADS } if requested == n), "{err:?}");
        assert_eq!(err.to_string(), format!("{n} threads requested, at most {MAX_THREADS} are supported"));
    }
    for size in [0, 1, MIN_STACK_SIZE - 1] {
        let err = Pool::builder().num_threads(1).stack_size(size).build().unwrap_err();
        assert!(
            matches!(err, BuildError::StackTooSmall { requested, min: MIN_STACK_SIZE } if requested == size),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("stack size of {size} bytes requested, at least {MIN_STACK_SIZE} are needed")
        );
    }
    // A thread name the OS cannot take (std's thread builder panics on it).
    let r = catch_unwind(|| Pool::builder().num_threads(2).thread_name("bad\0name").build());
    let err = r.expect("a NUL in the thread name panicked instead of returning an error").unwrap_err();
    assert!(matches!(err, BuildError::InvalidThreadName { .. }), "{err:?}");
    assert!(err.to_string().contains("thread name") && err.to_string().contains("NUL"), "{err}");
    // Errors carry no source except the OS's.
    assert!(std::error::Error::source(&err).is_none());
}

#[test]
fn the_extreme_builder_settings_that_are_allowed_work() {
    if !child_process("the_extreme_builder_settings_that_are_allowed_work") {
        return;
    }
    quiet_planned_panics();
    let before = thread_count();
    watchdog("the smallest stack the builder allows", || {
        // The smallest stack allowed must be enough for the pool itself, for every
        // call kind, for nested runs and for streams (an overflow would abort).
        let pool = Pool::builder()
            .num_threads(2)
            .pin(false)
            .thread_name("bi-small")
            .stack_size(MIN_STACK_SIZE)
            .build()
            .unwrap();
        assert_pool_works(&pool, "bi-small", "MIN_STACK_SIZE");
        let pools = [&pool, &pool];
        assert_eq!(nested(&pools, 0, 3, 3), 27);
        let _ = pool.try_map_index(0..1000, |i| if i == 500 { panic!("planned: small stack") } else { Ok::<_, ()>(i) });
        let r = pool
            .stream(0..10_000u64)
            .map(|x| if x == 77 { panic!("planned: small stack stream") } else { x })
            .for_each(drop);
        assert!(matches!(r, Err(RunError::Panicked { index: Some(77), .. })));
    });
    watchdog("the most threads the builder allows", || {
        let pool = Pool::builder().num_threads(MAX_THREADS).thread_name("bi-max").build().unwrap();
        assert_eq!(pool.num_threads(), MAX_THREADS);
        assert_eq!(threads_named("bi-max"), MAX_THREADS);
        assert!(pool.pinned_workers() <= std::thread::available_parallelism().map_or(1, |n| n.get()));
        assert_pool_works(&pool, "bi-max", "MAX_THREADS");
        // A blocking run reaches many of them at once.
        let most = AtomicUsize::new(0);
        let now = AtomicUsize::new(0);
        pool.runner()
            .blocking()
            .try_for_each_index(0..256, |_| {
                most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                now.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, ()>(())
            })
            .unwrap();
        assert!(most.into_inner() > 16, "a blocking run on 1024 threads ran few items at once");
    });
    assert_eq!(settle_thread_count(before), before, "threads were left behind");
}

#[test]
fn zero_limits_and_extreme_run_settings_get_clear_outcomes() {
    let pool = named_pool(2, "bi-limits");
    let ran = AtomicUsize::new(0);
    let count = || -> Result<(), ()> {
        ran.fetch_add(1, Ordering::Relaxed);
        Ok(())
    };
    let zero = pool.runner().limit(0);
    assert!(matches!(zero.try_run([1u8], |_, _| count()), Err(RunError::ZeroLimit)));
    assert!(matches!(
        zero.try_run_fold([1u8], || 0, |a, _, _| count().map(|()| a), |a, b| a + b),
        Err(RunError::ZeroLimit)
    ));
    assert!(matches!(zero.try_map_index(0..5, |_| count()), Err(RunError::ZeroLimit)));
    assert!(matches!(zero.try_fold(&[1, 2], || 0, |a, _| Ok::<_, ()>(a), |a, b| a + b), Err(RunError::ZeroLimit)));
    // Even with nothing to do: the setting is wrong whatever the input.
    assert!(matches!(zero.try_for_each_index(3..3, |_| count()), Err(RunError::ZeroLimit)));
    assert!(matches!(zero.try_map(&[] as &[u8], |_| count()), Err(RunError::ZeroLimit)));
    assert!(matches!(zero.first_ok(3, |_, _| count()), Err(RunError::ZeroLimit)));
    // The one call without an error type says why it panics.
    let r = catch_unwind(AssertUnwindSafe(|| zero.try_map_all(&[1, 2], |&x| Ok::<_, ()>(x))));
    let payload = r.expect_err("try_map_all with limit(0) must panic");
    let message =
        payload.downcast_ref::<String>().cloned().or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()));
    assert!(message.is_some_and(|m| m.contains("limit(0)")), "unclear panic for try_map_all with limit(0)");
    // A stage limited to zero threads.
    let r = pool.stream(0..10u64).map(|x| x).parallelism(0).for_each(|_| count().unwrap());
    assert!(matches!(r, Err(RunError::ZeroLimit)));
    assert_eq!(ran.load(Ordering::Relaxed), 0, "a zero limit ran something");
    assert!(RunError::<String>::ZeroLimit.to_string().contains("at least 1"));

    // Limits, timeouts and deadlines far out of range mean "no limit".
    let big = pool.runner().limit(usize::MAX).timeout(Duration::MAX);
    assert_eq!(big.try_map_index(0..1000, Ok::<_, ()>).unwrap()[999], 999);
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let token = CancelToken::with_deadline(far);
    let r = pool.runner().deadline(far).cancel_token(&token).try_fold_index(
        0..100,
        || 0,
        |a, i| Ok::<_, ()>(a + i),
        |a, b| a + b,
    );
    assert_eq!(r, Ok(4950));
    // A window of zero items is a window of one.
    let mut it = pool.stream(0..500u64).window(0).map(|x| x * 2).into_iter();
    assert!(it.by_ref().map(Result::unwrap).eq((0..500).map(|x| x * 2)));
    assert_eq!(it.stats().window, 1);
    assert!(it.stats().max_buffered <= 1);
    // A huge window costs nothing up front.
    let v: Vec<u64> = pool.stream(0..100u64).window(usize::MAX).into_iter().map(Result::unwrap).collect();
    assert!(v.iter().copied().eq(0..100));
}

#[test]
fn reversed_and_empty_ranges_run_nothing() {
    let pool = named_pool(2, "bi-empty");
    let ran = AtomicUsize::new(0);
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 10..5;
    let stats = pool.for_each_index(reversed.clone(), |_| {
        ran.fetch_add(1, Ordering::Relaxed);
    });
    assert_eq!(stats.executed, 0);
    assert!(pool.map_index(reversed.clone(), |i| i).is_empty());
    assert_eq!(pool.fold_index(reversed.clone(), || 7, |a, i| a + i, |a, b| a + b), 7);
    assert_eq!(pool.try_map_index(reversed.clone(), Ok::<_, ()>).unwrap(), Vec::<usize>::new());
    assert_eq!(pool.try_fold_index(reversed.clone(), || 7, |a, i| Ok::<_, ()>(a + i), |a, b| a + b), Ok(7));
    assert_eq!(pool.try_for_each_index(reversed, |_| Err(())), Ok(()));
    assert_eq!(pool.run(std::iter::empty::<u8>(), |_, _| panic!("no item")).executed, 0);
    assert_eq!(pool.run_fold(std::iter::empty::<u8>(), || 3, |_, _, _| panic!("no item"), |a, b| a + b), 3);
    assert_eq!(ran.into_inner(), 0);
}

/// A map whose output cannot be allocated panics with a clear message (a fallible
/// map returns it as an error) instead of aborting the process.
#[test]
fn a_map_too_large_to_allocate_panics_instead_of_aborting() {
    if !child_process("a_map_too_large_to_allocate_panics_instead_of_aborting") {
        return;
    }
    quiet_planned_panics();
    let pool = named_pool(2, "bi-huge-map");
    // 2^45 u64s: 256 TiB, more than a 47-bit address space holds; the length itself is
    // fine (below `isize::MAX` bytes), so only the allocation fails.
    const LEN: usize = 1 << 45;
    let ran = AtomicUsize::new(0);
    let r = watchdog("map_index of 2^45 u64s", || {
        catch_unwind(AssertUnwindSafe(|| {
            pool.map_index(0..LEN, |i| {
                ran.fetch_add(1, Ordering::Relaxed);
                i as u64
            })
        }))
    });
    let payload = r.expect_err("the map cannot have succeeded");
    let message = payload.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains(&LEN.to_string()) && message.contains("allocate"), "unclear panic: {message:?}");
    let r = pool.try_map_index(0..LEN, |i| Ok::<_, ()>(i as u64));
    assert!(
        matches!(&r, Err(RunError::Panicked { message, index: None }) if message.contains("allocate")),
        "try_map_index: {:?}",
        r.map(|v| v.len())
    );
    // A length whose byte size overflows `isize` too.
    let r = catch_unwind(AssertUnwindSafe(|| pool.map_index(0..usize::MAX, |i| i as u64)));
    assert!(r.is_err());
    assert_eq!(ran.into_inner(), 0, "items ran although the output could not be allocated");
    assert_pool_works(&pool, "bi-huge-map", "after maps too large to allocate");
}
