//! The global pool: configured once before first use, refused afterwards, and used by
//! the free functions. One test, since the global pool is one per process.

mod common;

use common::{threads_left, threads_named};
use fanout::{BuildError, Pool};

#[test]
fn the_global_pool_is_configured_once_and_serves_the_free_functions() {
    let pool = Pool::builder().num_threads(3).thread_name("fo-global").build_global().expect("the first configuration");
    assert_eq!(pool.num_threads(), 3);
    assert!(std::ptr::eq(pool, fanout::global()), "global() returns the configured pool");
    assert_eq!(threads_named("fo-global"), 3);

    // A second configuration is refused, and the pool it built is joined.
    let err = Pool::builder().num_threads(2).thread_name("fo-late").build_global().unwrap_err();
    assert!(matches!(err, BuildError::GlobalAlreadyBuilt), "{err:?}");
    assert_eq!(err.to_string(), "the global pool is already built");
    assert_eq!(threads_left("fo-late"), 0, "the refused pool's threads are joined");

    // The free functions, on the global pool.
    assert_eq!(fanout::map_index(0..5, |i| i * i), [0, 1, 4, 9, 16]);
    assert_eq!(fanout::map(&[1u8, 2, 3], |x| u32::from(*x) * 2), [2, 4, 6]);
    assert_eq!(fanout::fold_index(0..1001, || 0u64, |a, i| a + i as u64, |a, b| a + b), 500_500);
    assert_eq!(fanout::fold(&[3, 9, 4], || 0, |m, x| m.max(*x), i32::max), 9);
    let sum = fanout::run_fold(
        [0u64],
        || 0u64,
        |s, n, ctx| {
            if n < 1000 {
                ctx.push(n + 1);
            }
            s + n
        },
        |a, b| a + b,
    );
    assert_eq!(sum, 500_500);
    let stats = fanout::run(0..100u32, |n, ctx| {
        if n % 2 == 0 {
            ctx.push(n + 1);
        }
    });
    assert_eq!((stats.executed, stats.pushed), (150, 50));
    let seen = std::sync::atomic::AtomicUsize::new(0);
    fanout::for_each_index(0..100, |i| {
        seen.fetch_add(i, std::sync::atomic::Ordering::Relaxed);
    });
    fanout::for_each(&[1usize, 2], |x| {
        seen.fetch_add(*x, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(seen.into_inner(), 4950 + 3);
    let err = fanout::try_for_each(&[1, -2, 3], |x| if *x < 0 { Err(*x) } else { Ok(()) }).unwrap_err();
    assert!(matches!(err, fanout::RunError::Failed { error: -2, index: Some(1) }), "{err:?}");
    assert_eq!(fanout::try_map(&["7", "8"], |s| s.parse::<u8>()).unwrap(), [7, 8]);
    let mut squares = Vec::new();
    fanout::stream(0..10u64).map(|x| x * x).for_each(|sq| squares.push(sq)).unwrap();
    assert_eq!(squares, (0..10).map(|x| x * x).collect::<Vec<_>>());
}
