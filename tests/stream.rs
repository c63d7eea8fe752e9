//! Streams: order under random item costs, the window's memory bound, early drop,
//! errors (stop or pass through), panics, nesting, leaks; the pool stays usable.

mod common;

use common::{Rng, within_a_minute};
use fanout::{Pool, RunError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn pool(threads: usize) -> Pool {
    Pool::builder().num_threads(threads).pin(false).build().unwrap()
}

/// About `k` dependent multiply rounds of work.
fn burn(i: u64, k: u64) -> u64 {
    let mut x = std::hint::black_box(i) | 1;
    for _ in 0..k {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    }
    x
}

/// A source that counts how many items were pulled from it.
fn counted<I: Iterator>(iter: I, pulls: &Arc<AtomicU64>) -> impl Iterator<Item = I::Item> + use<I> {
    let pulls = Arc::clone(pulls);
    iter.inspect(move |_| {
        pulls.fetch_add(1, Ordering::SeqCst);
    })
}

#[test]
fn stream_order_is_kept_under_random_item_costs() {
    for threads in [1, 2, 3] {
        let pool = pool(threads);
        for (case, window) in [Some(1), Some(2), Some(7), Some(100), None].into_iter().enumerate() {
            let seed = (threads * 10 + case) as u64;
            let mut rng = Rng::new(seed);
            // Mostly cheap items, a few 100x dearer: dear ones finish late.
            let costs: Vec<u64> = (0..3000).map(|_| if rng.below(50) == 0 { 20_000 } else { rng.below(200) }).collect();
            let expected: Vec<u64> = costs.iter().enumerate().map(|(i, &k)| burn(i as u64, k)).collect();
            let src: Vec<(u64, u64)> = costs.iter().enumerate().map(|(i, &k)| (i as u64, k)).collect();
            let mut s = pool.stream(src).map(|(i, k)| burn(i, k));
            if let Some(w) = window {
                s = s.window(w);
            }
            let got: Vec<u64> = s.into_iter().collect::<Result<_, _>>().unwrap();
            assert_eq!(got, expected, "threads {threads}, window {window:?}, seed {seed}");
        }
    }
}

#[test]
fn stream_stages_match_sequential_iterators() {
    let pool = pool(2);
    let expected: Vec<String> = (0..5000u32)
        .filter(|x| x % 3 != 0)
        .map(|x| x * 7)
        .filter_map(|x| (x % 5 != 0).then_some(x + 1))
        .flat_map(|x| (0..x % 4).map(move |j| format!("{x}.{j}")))
        .collect();
    let seen = Arc::new(AtomicU64::new(0));
    let s2 = Arc::clone(&seen);
    let got: Vec<String> = pool
        .stream(0..5000u32)
        .window(50)
        .filter(|x| x % 3 != 0)
        .map(|x| x * 7)
        .filter_map(|x| (x % 5 != 0).then_some(x + 1))
        .inspect(move |_| {
            s2.fetch_add(1, Ordering::Relaxed);
        })
        .flat_map(|x| (0..x % 4).map(move |j| format!("{x}.{j}")))
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, expected);
    let inspected = (0..5000u32).filter(|x| x % 3 != 0).filter(|x| (x * 7) % 5 != 0).count() as u64;
    assert_eq!(seen.load(Ordering::Relaxed), inspected);
}

#[test]
fn stream_unordered_yields_every_item_once() {
    let pool = pool(2);
    let mut rng = Rng::new(7);
    let costs: Vec<u64> = (0..4000).map(|_| rng.below(500)).collect();
    let src: Vec<(u64, u64)> = costs.iter().enumerate().map(|(i, &k)| (i as u64, k)).collect();
    let mut got: Vec<u64> = pool
        .stream(src)
        .unordered()
        .window(64)
        .map(|(i, k)| {
            burn(i, k);
            i
        })
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    got.sort_unstable();
    assert!(got.iter().copied().eq(0..4000));
}

#[test]
fn stream_never_pulls_more_than_the_window_ahead_of_the_consumer() {
    for (threads, window, ordered) in [(2, 16, true), (3, 5, true), (2, 1, true), (2, 40, false)] {
        let pool = pool(threads);
        let pulls = Arc::new(AtomicU64::new(0));
        let s = pool.stream(counted(0..2000u64, &pulls)).window(window).map(|i| {
            // Item 100 is slow: the others run ahead until the window is full.
            burn(i, if i == 100 { 200_000 } else { 50 })
        });
        let mut it = if ordered { s.into_iter() } else { s.unordered().into_iter() };
        let mut consumed = 0u64;
        for r in it.by_ref() {
            r.unwrap();
            consumed += 1;
            // A slow consumer: the workers fill the window and must stop there.
            burn(consumed, 300);
            let ahead = pulls.load(Ordering::SeqCst) - consumed;
            assert!(ahead <= window as u64, "pulled {ahead} items ahead of the consumer, window {window}");
        }
        assert_eq!(consumed, 2000);
        let stats = it.stats();
        assert!(stats.max_buffered <= window, "{stats:?}");
        assert_eq!(stats.window, window);
        assert_eq!(stats.pulled, 2000);
    }
}

#[test]
fn stream_memory_is_bounded_for_a_long_input() {
    // A million items through a window of 256: the buffer never grows with the input.
    let pool = pool(2);
    let mut it = pool.stream(0..1_000_000u64).window(256).map(|x| x ^ 1).into_iter();
    let mut n = 0u64;
    for r in it.by_ref() {
        assert_eq!(r.unwrap(), n ^ 1);
        n += 1;
    }
    assert_eq!(n, 1_000_000);
    assert!(it.stats().max_buffered <= 256);
}

#[test]
fn dropping_the_iterator_early_stops_the_source() {
    for threads in [1, 2, 3] {
        let pool = pool(threads);
        for window in [1, 8, 100] {
            let pulls = Arc::new(AtomicU64::new(0));
            let taken: Vec<u64> = pool
                .stream(counted(0u64.., &pulls)) // endless
                .window(window)
                .map(|x| burn(x, 100))
                .into_iter()
                .take(25)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(taken.len(), 25);
            // The iterator is dropped: no worker may pull any more.
            let at_drop = pulls.load(Ordering::SeqCst);
            assert!(at_drop <= 25 + window as u64, "pulled {at_drop}, consumed 25, window {window}");
            // Give the workers every chance to (wrongly) pull more.
            pool.for_each_index(0..10_000, |i| {
                burn(i as u64, 10);
            });
            assert_eq!(pulls.load(Ordering::SeqCst), at_drop, "the source was pulled after the drop");
        }
    }
}

#[test]
fn first_error_stops_the_stream_in_order() {
    let pool = pool(2);
    for window in [1, 4, 64] {
        let pulls = Arc::new(AtomicU64::new(0));
        let results: Vec<Result<u64, RunError<String>>> = pool
            .stream(counted(0..100_000u64, &pulls))
            .window(window)
            .try_map(|x| if x >= 300 && x % 7 == 0 { Err(format!("bad {x}")) } else { Ok(x * 2) })
            .map(|x| x + 1)
            .into_iter()
            .collect();
        // Everything before the first failing item (301), in order, then its error.
        assert_eq!(results.len(), 302, "window {window}");
        for (i, r) in results[..301].iter().enumerate() {
            assert_eq!(*r.as_ref().unwrap(), i as u64 * 2 + 1);
        }
        match &results[301] {
            Err(RunError::Failed { error, index }) => {
                assert_eq!(error, "bad 301");
                assert_eq!(*index, Some(301));
            }
            other => panic!("expected the first error, got {other:?}"),
        }
        // The source stopped: nothing pulled beyond the window after the failing item.
        let pulled = pulls.load(Ordering::SeqCst);
        assert!(pulled <= 302 + window as u64, "pulled {pulled}, window {window}");
    }
}

#[test]
fn first_error_via_for_each_and_unordered() {
    let pool = pool(2);
    let mut sum = 0u64;
    let err = pool
        .stream(0..10_000u64)
        .try_map(|x| if x == 5000 { Err(x) } else { Ok(x) })
        .for_each(|x| sum += x)
        .unwrap_err();
    assert_eq!(err, RunError::Failed { error: 5000, index: Some(5000) });
    assert_eq!(sum, (0..5000).sum::<u64>());

    let results: Vec<_> =
        pool.stream(0..10_000u64).unordered().try_map(|x| if x == 777 { Err(x) } else { Ok(x) }).into_iter().collect();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    assert!(matches!(results.last(), Some(Err(RunError::Failed { error: 777, index: Some(777) }))));
}

#[test]
fn errors_pass_through_when_returned_as_items() {
    let pool = pool(2);
    let got: Vec<Result<u64, String>> = pool
        .stream(0..1000u64)
        .map(|x| if x % 10 == 3 { Err(format!("odd {x}")) } else { Ok(x) })
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got.len(), 1000);
    for (i, r) in got.iter().enumerate() {
        if i % 10 == 3 {
            assert_eq!(r.as_ref().unwrap_err(), &format!("odd {i}"));
        } else {
            assert_eq!(*r.as_ref().unwrap(), i as u64);
        }
    }
}

#[test]
fn a_panicking_stage_ends_the_stream_with_its_sequence_number() {
    for threads in [1, 2] {
        let pool = pool(threads);
        for ordered in [true, false] {
            let s = pool.stream(0..100_000u64).window(32).map(|x| {
                if x == 4321 {
                    panic!("stage failed on {x}");
                }
                x
            });
            let s = if ordered { s } else { s.unordered() };
            let results: Vec<_> = s.into_iter().collect();
            let errs: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
            assert_eq!(errs.len(), 1);
            match results.last() {
                Some(Err(RunError::Panicked { message, index })) => {
                    assert_eq!(*index, Some(4321));
                    assert!(message.contains("stage failed on 4321"), "{message}");
                }
                other => panic!("expected a panic error last, got {other:?}"),
            }
            if ordered {
                assert_eq!(results.len(), 4322);
            }
        }
        // The pool is still usable.
        assert_eq!(pool.map_index(0..100, |i| i * 2)[99], 198);
    }
}

#[test]
fn a_panicking_source_ends_the_stream_with_its_sequence_number() {
    let pool = pool(2);
    let source = (0..1000u64).map(|x| if x == 600 { panic!("source broke") } else { x });
    let results: Vec<_> = pool.stream(source).window(16).into_iter().collect();
    assert_eq!(results.len(), 601);
    assert!(matches!(results.last(), Some(Err(RunError::Panicked { index: Some(600), .. }))));
}

#[test]
fn a_stream_inside_a_pool_task_does_not_deadlock() {
    let pool = Arc::new(pool(2));
    let p2 = Arc::clone(&pool);
    // Every worker (and the caller) consumes a stream of its own on the same pool.
    let sums = pool.map_index(0..8, move |k| {
        p2.stream(0..2000u64)
            .window(8)
            .map(move |x| burn(x, 20) % 1000 + k as u64)
            .into_iter()
            .map(Result::unwrap)
            .sum::<u64>()
    });
    for (k, s) in sums.iter().enumerate() {
        let expected: u64 = (0..2000u64).map(|x| burn(x, 20) % 1000 + k as u64).sum();
        assert_eq!(*s, expected);
    }
}

#[test]
fn a_leaked_iterator_leaves_the_pool_usable() {
    let pool = pool(2);
    let pulls = Arc::new(AtomicU64::new(0));
    let mut it = pool.stream(counted(0u64.., &pulls)).window(4).into_iter();
    assert_eq!(it.next().unwrap().unwrap(), 0);
    // Leaked: the state stays registered and valid; workers fill the window and stop.
    std::mem::forget(it);
    assert_eq!(pool.fold_index(0..1000, || 0, |a, i| a + i, |a, b| a + b), 499_500);
    assert!(pulls.load(Ordering::SeqCst) <= 1 + 4);
    drop(pool); // joins the workers: none may be stuck in the leaked stream
}

#[test]
fn empty_and_tiny_streams() {
    let pool = pool(2);
    assert_eq!(pool.stream(std::iter::empty::<u8>()).into_iter().count(), 0);
    let v: Vec<_> = pool.stream([42]).into_iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(v, [42]);
    // A stream built and never consumed does nothing.
    let pulls = Arc::new(AtomicU64::new(0));
    drop(pool.stream(counted(0..10u64, &pulls)).map(|x| x + 1));
    assert_eq!(pulls.load(Ordering::SeqCst), 0);
}

/// Counts threads inside a stage and remembers the most at once.
#[derive(Default)]
struct Occupancy {
    inside: AtomicU64,
    most: AtomicU64,
}

impl Occupancy {
    fn visit(&self, work: impl FnOnce()) {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        work();
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn a_limited_stage_never_runs_on_more_threads_than_its_limit() {
    // Two workers and the consumer: three threads could be in any stage at once.
    let pool = pool(2);
    for limit in [1, 2] {
        for ordered in [true, false] {
            let limited = Arc::new(Occupancy::default());
            let (l, pulls) = (Arc::clone(&limited), Arc::new(AtomicU64::new(0)));
            let stream = pool
                .stream(counted(0..300u64, &pulls))
                .window(32)
                .map(move |x| {
                    l.visit(|| std::thread::sleep(std::time::Duration::from_micros(50)));
                    x * 3
                })
                .parallelism(limit)
                .filter(|x| x % 2 == 0)
                .map(|x| burn(x, 100) ^ burn(x, 100) ^ x);
            let stream = if ordered { stream.ordered() } else { stream.unordered() };
            let mut out: Vec<u64> = stream.into_iter().collect::<Result<_, _>>().unwrap();
            if !ordered {
                out.sort_unstable();
            }
            let expected: Vec<u64> = (0..300u64).map(|x| x * 3).filter(|x| x % 2 == 0).collect();
            assert_eq!(out, expected, "limit {limit}, ordered {ordered}");
            let most = limited.most.load(Ordering::SeqCst);
            assert!(most <= limit as u64, "limit {limit}: {most} threads were in the stage at once");
            assert_eq!(pulls.load(Ordering::SeqCst), 300);
        }
    }
}

#[test]
fn every_stage_kind_can_be_limited() {
    let pool = pool(2);
    let occupancy: Vec<Arc<Occupancy>> = (0..6).map(|_| Arc::new(Occupancy::default())).collect();
    let o = occupancy.clone();
    let spin = |x: u64| std::hint::black_box(burn(x, 200));
    let out: Vec<u64> = pool
        .stream(0..2000u64)
        .map(move |x| {
            o[0].visit(|| {
                spin(x);
            });
            x
        })
        .parallelism(1)
        .filter({
            let o = occupancy[1].clone();
            move |x| {
                o.visit(|| {
                    spin(*x);
                });
                x % 5 != 0
            }
        })
        .parallelism(1)
        .filter_map({
            let o = occupancy[2].clone();
            move |x| {
                o.visit(|| {
                    spin(x);
                });
                (x % 7 != 0).then_some(x)
            }
        })
        .parallelism(1)
        .inspect({
            let o = occupancy[3].clone();
            move |x| {
                o.visit(|| {
                    spin(*x);
                })
            }
        })
        .parallelism(1)
        .flat_map({
            let o = occupancy[4].clone();
            move |x| {
                o.visit(|| {
                    spin(x);
                });
                [x, x + 1]
            }
        })
        .parallelism(1)
        .try_map({
            let o = occupancy[5].clone();
            move |x| {
                o.visit(|| {
                    spin(x);
                });
                Ok::<_, ()>(x * 2)
            }
        })
        .parallelism(1)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<u64> =
        (0..2000u64).filter(|x| x % 5 != 0 && x % 7 != 0).flat_map(|x| [x, x + 1]).map(|x| x * 2).collect();
    assert_eq!(out, expected);
    for (stage, o) in occupancy.iter().enumerate() {
        assert_eq!(o.most.load(Ordering::SeqCst), 1, "stage {stage} ran on several threads at once");
    }
}

#[test]
fn a_parallelism_of_zero_yields_zero_limit_and_pulls_nothing() {
    let pool = pool(2);
    let pulls = Arc::new(AtomicU64::new(0));
    let mut it = pool.stream(counted(0..100u64, &pulls)).map(|x| x + 1).parallelism(0).into_iter();
    assert!(matches!(it.next(), Some(Err(RunError::ZeroLimit))));
    assert!(it.next().is_none());
    drop(it);
    assert_eq!(pulls.load(Ordering::SeqCst), 0, "the source was pulled");
    // The same through `for_each`.
    let r = pool.stream(0..10u64).filter(|_| true).parallelism(0).for_each(|_| panic!("no item may come out"));
    assert!(matches!(r, Err(RunError::ZeroLimit)));
}

#[test]
fn a_panic_in_a_limited_stage_ends_the_stream_and_frees_the_stage() {
    let pool = pool(2);
    for _ in 0..5 {
        let mut it = pool
            .stream(0..10_000u64)
            .window(16)
            .map(|x| {
                if x == 500 {
                    panic!("stage failed at {x}");
                }
                burn(x, 50)
            })
            .parallelism(1)
            .into_iter();
        let ok = it.by_ref().take_while(|r| r.is_ok()).count();
        assert_eq!(ok, 500, "the items before the panic come out, in order");
        assert!(it.next().is_none(), "the stream ended after the panic");
        // Dropping returns: every thread that waited at the stage got through it.
        drop(it);
    }
    // The pool still runs streams with limited stages.
    let n = pool.stream(0..1000u64).map(|x| x).parallelism(1).into_iter().count();
    assert_eq!(n, 1000);
}

#[test]
fn a_limited_stage_may_run_nested_pool_work() {
    // The stage holds the only permit while it runs a nested run on the same pool;
    // the threads waiting at the gate cannot help it, so its caller must be able to
    // finish the nested run alone.
    let pool = Arc::new(pool(2));
    let inner = Arc::clone(&pool);
    let out: Vec<u64> = pool
        .stream(0..64u64)
        .window(8)
        .map(move |x| inner.fold_index(0..1000, || 0u64, |a, i| a + i as u64 * x, |a, b| a + b))
        .parallelism(1)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<u64> = (0..64u64).map(|x| 499_500 * x).collect();
    assert_eq!(out, expected);
}

#[test]
fn the_consumer_of_a_one_worker_pool_pulls_batches_itself() {
    // With one worker on two or more cores, the consumer has a core of its own: when
    // its next batch is not ready it must pull and process batches too, not wait for
    // the worker (which left the consumer a handful of ~800 batches before).
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: needs two cores");
        return;
    }
    let pool = pool(1);
    let n = 60_000u64;
    let mut it = pool.stream(0..n).map(|i| burn(i, 200)).into_iter();
    let mut sum = 0u64;
    for item in &mut it {
        sum = sum.wrapping_add(item.unwrap());
    }
    assert_eq!(sum, (0..n).map(|i| burn(i, 200)).fold(0, u64::wrapping_add));
    let st = it.stats();
    let total = st.batches_by_consumer + st.batches_by_workers;
    assert!(
        st.batches_by_consumer * 4 >= total,
        "the consumer processed {} of {total} batches (expected at least a quarter)",
        st.batches_by_consumer
    );
}

/// A sink error for `try_for_each`, which also takes the stream's own errors.
#[derive(Debug, PartialEq)]
enum SinkError {
    Full(u64),
    Stream(String),
}

impl From<RunError<std::convert::Infallible>> for SinkError {
    fn from(e: RunError<std::convert::Infallible>) -> Self {
        SinkError::Stream(e.to_string())
    }
}

#[test]
fn try_for_each_stops_at_the_sinks_first_error_and_passes_stream_errors_through() {
    let pool = pool(2);
    let pulls = Arc::new(AtomicU64::new(0));
    let mut seen = Vec::new();
    let result = pool.stream(counted(0..1_000_000u64, &pulls)).window(64).map(|i| i * 2).try_for_each(|x| {
        if x == 200 {
            return Err(SinkError::Full(x));
        }
        seen.push(x);
        Ok(())
    });
    assert_eq!(result, Err(SinkError::Full(200)));
    assert_eq!(seen, (0..100).map(|i| i * 2).collect::<Vec<_>>(), "outputs before the error, in order");
    // The stream stopped: the source was not run to its end.
    assert!(pulls.load(Ordering::SeqCst) < 1_000, "pulled {} items", pulls.load(Ordering::SeqCst));

    // A panic in a stage ends the stream; it reaches the sink's error type.
    let result = pool
        .stream(0..100u64)
        .map(|i| if i == 7 { panic!("stage panic") } else { i })
        .try_for_each(|_| Ok::<(), SinkError>(()));
    match result {
        Err(SinkError::Stream(message)) => assert!(message.contains("stage panic"), "{message}"),
        other => panic!("expected the stage's panic, got {other:?}"),
    }
    // The pool is still fine.
    assert_eq!(pool.stream(0..10u64).try_for_each(|_| Ok::<(), SinkError>(())), Ok(()));
}

#[test]
fn a_runners_token_stops_an_endless_stream_with_what_it_completed() {
    let pool = pool(2);
    let token = fanout::CancelToken::new();
    let mut seen = 0u64;
    let r = pool.runner().cancel_token(&token).stream(0u64..).map(|x| x + 1).for_each(|y| {
        seen += 1;
        assert_eq!(y, seen, "in order");
        if seen == 5_000 {
            token.cancel();
        }
    });
    assert!(matches!(r, Err(RunError::Cancelled { completed }) if completed == seen), "{r:?} after {seen}");
    // At most the rest of the batch being yielded when the cancel came.
    assert!(seen < 5_000 + 256, "{seen} items after the cancel");
    // A token cancelled before the stream starts: nothing is pulled.
    let pulls = Arc::new(AtomicU64::new(0));
    let r: Vec<_> = pool.runner().cancel_token(&token).stream(counted(0..100u64, &pulls)).into_iter().collect();
    assert!(matches!(r[..], [Err(RunError::Cancelled { completed: 0 })]), "{r:?}");
    assert_eq!(pulls.load(Ordering::SeqCst), 0);
    assert_eq!(pool.stream(0..10u64).into_iter().count(), 10, "the pool stays usable");
}

#[test]
fn a_runners_deadline_ends_an_endless_stream() {
    let r = within_a_minute(|| {
        let pool = pool(2);
        pool.runner()
            .timeout(std::time::Duration::from_millis(20))
            .stream(0u64..)
            .map(|x| {
                std::thread::sleep(std::time::Duration::from_micros(50));
                x
            })
            .for_each(drop)
    });
    assert!(matches!(r, Err(RunError::TimedOut { .. })), "{r:?}");
}

/// The consumer waits for a batch that a worker holds in a stage that only returns
/// after the stream has ended: only the consumer's own look at the token can end the
/// wait.
#[test]
fn a_consumer_waiting_on_a_stuck_stage_notices_the_cancel() {
    use std::sync::{Condvar, Mutex};
    let mut exercised = false;
    for _ in 0..20 {
        let stuck = within_a_minute(|| {
            let pool = Arc::new(pool(2));
            let token = fanout::CancelToken::new();
            // (released, a worker is stuck)
            let gate = Arc::new((Mutex::new((false, false)), Condvar::new()));
            let (g, p) = (Arc::clone(&gate), Arc::clone(&pool));
            let mut it = pool
                .runner()
                .cancel_token(&token)
                .stream(0..1_000u64)
                .map(move |x| {
                    if x == 5 && p.current_thread_index().is_some() {
                        let (lock, cv) = &*g;
                        let mut st = lock.lock().unwrap();
                        st.1 = true;
                        cv.notify_all();
                        while !st.0 {
                            st = cv.wait(st).unwrap();
                        }
                    }
                    x
                })
                .into_iter();
            // Cancel once a worker is stuck on item 5 (or soon, if none gets stuck).
            let canceller = {
                let (token, gate) = (token.clone(), Arc::clone(&gate));
                std::thread::spawn(move || {
                    let (lock, cv) = &*gate;
                    let st = lock.lock().unwrap();
                    let (st, _) = cv.wait_timeout_while(st, std::time::Duration::from_millis(200), |s| !s.1).unwrap();
                    let stuck = st.1;
                    drop(st);
                    token.cancel();
                    stuck
                })
            };
            let mut last = None;
            for r in it.by_ref() {
                last = Some(r);
                if matches!(last, Some(Err(_))) {
                    break;
                }
            }
            let stuck = canceller.join().unwrap();
            if stuck {
                assert!(matches!(last, Some(Err(RunError::Cancelled { completed })) if completed <= 5), "{last:?}");
            }
            // Let the stuck stage return, so the iterator's drop can wait for it.
            gate.0.lock().unwrap().0 = true;
            gate.1.notify_all();
            drop(it);
            stuck
        });
        if stuck {
            exercised = true;
            break;
        }
    }
    assert!(exercised, "no worker ever got stuck on item 5: the test did not exercise the wait");
}

#[test]
fn a_runners_limit_and_progress_apply_to_streams() {
    let pool = pool(2);
    let caller = std::thread::current().id();
    let on_caller = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&on_caller);
    let progress = fanout::Progress::new();
    let out: Vec<u64> = pool
        .runner()
        .limit(1)
        .progress(&progress)
        .stream(0..20_000u64)
        .map(move |x| {
            if std::thread::current().id() == caller {
                c.fetch_add(1, Ordering::Relaxed);
            }
            burn(x, 4)
        })
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(out, (0..20_000).map(|x| burn(x, 4)).collect::<Vec<_>>());
    assert_eq!(on_caller.load(Ordering::Relaxed), 20_000, "limit(1): the consumer alone works on the stream");
    let snap = progress.snapshot();
    assert_eq!((snap.completed, snap.in_flight), (20_000, 0));
    let r: Vec<_> = pool.runner().limit(0).stream(0..10u64).into_iter().collect();
    assert!(matches!(r[..], [Err(RunError::ZeroLimit)]), "{r:?}");
}

#[test]
fn a_stream_that_delivered_everything_ends_cleanly_after_its_deadline() {
    let pool = pool(2);
    let mut it = pool.runner().timeout(std::time::Duration::from_millis(20)).stream(0..10u64).into_iter();
    for i in 0..10 {
        assert_eq!(it.next().unwrap().unwrap(), i);
    }
    std::thread::sleep(std::time::Duration::from_millis(40));
    assert!(it.next().is_none(), "every item was delivered: no TimedOut after the fact");
}

#[test]
fn a_stage_error_keeps_its_place_when_the_deadline_passes_later() {
    let pool = pool(2);
    let mut it = pool
        .runner()
        .timeout(std::time::Duration::from_millis(200))
        .stream(0..10u64)
        .try_map(|x| if x == 5 { Err("five") } else { Ok(x) })
        .into_iter();
    assert_eq!(it.next().unwrap().unwrap(), 0);
    // Past the deadline; the failing batch was deposited long before.
    std::thread::sleep(std::time::Duration::from_millis(400));
    let rest: Vec<_> = it.collect();
    assert_eq!(rest.len(), 5, "{rest:?}");
    assert!(rest[..4].iter().zip(1..).all(|(r, i)| matches!(r, Ok(x) if *x == i)), "{rest:?}");
    assert!(matches!(rest[4], Err(RunError::Failed { error: "five", index: Some(5) })), "{rest:?}");
}

#[test]
fn a_tokens_own_deadline_times_a_stream_out() {
    let r = within_a_minute(|| {
        let pool = pool(2);
        let token =
            fanout::CancelToken::with_deadline(std::time::Instant::now() + std::time::Duration::from_millis(20));
        pool.runner().cancel_token(&token).stream(0u64..).for_each(|_| {})
    });
    assert!(matches!(r, Err(RunError::TimedOut { .. })), "{r:?}");
}

#[test]
fn scoped_streams_borrow_their_source_and_stages() {
    for threads in [1, 2, 3] {
        let pool = pool(threads);
        let lines: Vec<String> = (0..20_000u64).map(|i| format!("{i} {}", burn(i, 2) % 97)).collect();
        let needle = String::from("7");
        let table: Vec<u64> = (0..97).map(|i| burn(i, 1)).collect();
        let expected: Vec<u64> = lines
            .iter()
            .filter(|l| l.contains(needle.as_str()))
            .map(|l| table[l.split(' ').nth(1).unwrap().parse::<usize>().unwrap()])
            .collect();
        for ordered in [true, false] {
            let mut got: Vec<u64> = pool.scope(|s| {
                let st = s
                    .stream(lines.iter())
                    .window(64)
                    .filter(|l| l.contains(needle.as_str()))
                    .map(|l| table[l.split(' ').nth(1).unwrap().parse::<usize>().unwrap()]);
                let st = if ordered { st } else { st.unordered() };
                st.into_iter().collect::<Result<_, _>>().unwrap()
            });
            if ordered {
                assert_eq!(got, expected, "{threads} threads");
            } else {
                let mut want = expected.clone();
                want.sort_unstable();
                got.sort_unstable();
                assert_eq!(got, want, "{threads} threads, unordered");
            }
        }
        // Several streams at once in one scope, one consumed on another thread.
        let (a, b) = pool.scope(|s| {
            let a = s.stream(lines.iter()).map(|l| l.len()).into_iter();
            let b = s.stream(table.iter()).map(|x| x % 7).into_iter();
            std::thread::scope(|t| {
                let a = t.spawn(move || a.map(Result::unwrap).sum::<usize>());
                let b: u64 = b.map(Result::unwrap).sum();
                (a.join().unwrap(), b)
            })
        });
        assert_eq!(a, lines.iter().map(|l| l.len()).sum::<usize>());
        assert_eq!(b, table.iter().map(|x| x % 7).sum::<u64>());
    }
}

#[test]
fn a_runner_starts_scoped_streams_under_its_options() {
    let pool = pool(2);
    let data: Vec<u64> = (0..50_000).collect();
    let token = fanout::CancelToken::new();
    let mut seen = 0u64;
    let r = pool.scope(|s| {
        pool.runner().cancel_token(&token).stream_scoped(s, data.iter()).map(|x| burn(*x, 2)).for_each(|y| {
            seen += 1;
            assert_eq!(y, burn(seen - 1, 2), "in order");
            if seen == 1_000 {
                token.cancel();
            }
        })
    });
    assert!(matches!(r, Err(RunError::Cancelled { completed }) if completed == seen), "{r:?} after {seen}");
    // limit(1): the consumer alone works on the stream.
    let caller = std::thread::current().id();
    let on_caller = std::sync::atomic::AtomicUsize::new(0);
    let n = pool.scope(|s| {
        pool.runner()
            .limit(1)
            .stream_scoped(s, data.iter())
            .inspect(|_| {
                if std::thread::current().id() == caller {
                    on_caller.fetch_add(1, Ordering::Relaxed);
                }
            })
            .into_iter()
            .count()
    });
    assert_eq!((n, on_caller.load(Ordering::Relaxed)), (data.len(), data.len()));
}

#[test]
fn stream_iterators_can_be_sent_to_other_threads() {
    fn send<T: Send>(_: &T) {}
    let pool = pool(2);
    let it = pool.stream(0..10u64).map(|x| x + 1).into_iter();
    send(&it);
    let local = [1u64, 2, 3];
    pool.scope(|s| send(&s.stream(local.iter()).into_iter()));
}

#[test]
fn a_scoped_stream_may_run_on_a_runners_other_pool() {
    let (a, b) = (pool(2), pool(1));
    let words = ["fan", "out", "fan", "in"];
    let n = a.scope(|s| b.runner().stream_scoped(s, words.iter()).filter(|w| **w == "fan").into_iter().count());
    assert_eq!(n, 2);
    // A leaked one is ended by the scope as well.
    let pulls = std::sync::atomic::AtomicUsize::new(0);
    a.scope(|s| {
        let source = (0..).map(|i| words[i % 4]).inspect(|_| {
            pulls.fetch_add(1, Ordering::Relaxed);
        });
        let mut it = b.runner().stream_scoped(s, source).window(64).into_iter();
        assert!(it.next().is_some());
        std::mem::forget(it);
    });
    let at_exit = pulls.load(Ordering::Relaxed);
    assert_eq!(b.map_index(0..8, |i| i).len(), 8);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(pulls.load(Ordering::Relaxed), at_exit);
}
