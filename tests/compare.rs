//! The comparison API: results checked across strategies, wrong results reported,
//! strategies' threads kept between runs, the output formats.

mod common;

use fanout::compare::{Compare, CompareError, Group, PoolState};
use fanout::strategy::{
    ChannelPool, FoldWorkload, MutexQueue, RayonJoin, RayonScope, Sequential, Spawner, StaticSplit, Strategy,
    StrategyFor, WorkStealing,
};
use std::error::Error;

/// A tree of `fanout` children to `depth`; folds the sum of node ids.
struct Tree {
    fanout: u64,
    depth: u32,
}

impl FoldWorkload for Tree {
    type Item = (u64, u32);
    type Acc = (u64, u64);
    fn identity(&self) -> (u64, u64) {
        (0, 0)
    }
    fn execute<S: Spawner<(u64, u32)>>(&self, (id, depth): (u64, u32), acc: &mut (u64, u64), spawner: &mut S) {
        acc.0 = acc.0.wrapping_add(id.wrapping_mul(0x9E37_79B9));
        acc.1 += 1;
        if depth < self.depth {
            for c in 0..self.fanout {
                spawner.push((id * self.fanout + c + 1, depth + 1));
            }
        }
    }
    fn reduce(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0.wrapping_add(b.0), a.1 + b.1)
    }
}

/// A strategy with a bug: it forgets the last seed.
struct DropsLastSeed;

impl Strategy for DropsLastSeed {
    fn name(&self) -> &str {
        "drops last seed"
    }
    fn run_fold<W: FoldWorkload>(&self, mut seeds: Vec<W::Item>, work: &W) -> W::Acc {
        seeds.pop();
        Sequential.run_fold(seeds, work)
    }
}

fn quick(threads: usize) -> Compare {
    Compare::builder().threads(threads).rounds(2).states(&[PoolState::Hot, PoolState::Parked]).build().unwrap()
}

#[test]
fn every_strategy_folds_the_same_result_as_sequential() {
    let pool = fanout::Pool::builder().num_threads(3).pin(false).build().unwrap();
    let strategies: Vec<Box<dyn StrategyFor<Tree>>> = vec![
        Box::new(ChannelPool::new(3).unwrap()),
        Box::new(MutexQueue::new(3, 1).unwrap()),
        Box::new(MutexQueue::new(3, 7).unwrap()),
        Box::new(StaticSplit::new(3).unwrap()),
        Box::new(StaticSplit::new(1).unwrap()),
        Box::new(WorkStealing(&pool)),
        Box::new(RayonJoin::new(2).unwrap()),
        Box::new(RayonScope::new(3).unwrap()),
    ];
    for (fanout, depth) in [(1, 300), (2, 9), (5, 4), (40, 2)] {
        let tree = Tree { fanout, depth };
        let seeds = || vec![(0, 0), (1_000_000, 1)];
        let expected = Sequential.run_fold(seeds(), &tree);
        for s in &strategies {
            assert_eq!(s.run_workload(seeds(), &tree), expected, "{} on fanout {fanout} depth {depth}", s.label());
        }
    }
    assert_eq!(
        StrategyFor::<Tree>::run_workload_with_stats(&WorkStealing(&pool), vec![(0, 0)], &Tree { fanout: 2, depth: 3 })
            .1
            .map(|s| s.executed),
        Some(15)
    );
}

#[test]
fn a_wrong_result_is_reported_and_left_out_of_the_ranks() {
    let cmp = quick(2);
    let tree = Tree { fanout: 3, depth: 6 };
    let seeds = || vec![(0, 0), (5_000, 2)];
    let group = cmp.follow_on("tree", "a tree", seeds, &tree).strategy("buggy", &DropsLastSeed, seeds, &tree);
    let mut report = cmp.report("test");
    report.push(cmp.measure(group));
    let wrong = report.wrong_results();
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert_eq!((wrong[0].0, wrong[0].1), ("tree", "buggy"));
    let table = report.table("tree").unwrap();
    let buggy = table.row("buggy").unwrap();
    assert!(buggy.cells.iter().all(|c| c.rank.is_none()));
    // The other rows (six, and rayon's two) are ranked with no gap for the wrong one.
    for state in [PoolState::Hot, PoolState::Parked] {
        let mut ranks: Vec<usize> = table.rows.iter().filter_map(|r| r.cell(state)?.rank).collect();
        ranks.sort_unstable();
        assert_eq!(ranks, (1..=8).collect::<Vec<_>>());
    }
    let text = report.to_string();
    assert!(text.contains("WRONG RESULT"), "{text}");
    assert!(report.to_json().contains("\"wrong\":\"returned"));
    // The tree has 1 + 3 + ... + 729 nodes plus the second seed's 1 + 3 + ... + 81.
    assert_eq!(table.items, 1093 + 121);
    assert!(table.row("fanout").unwrap().stats.as_ref().is_some_and(|s| s.executed == 1214));
    assert!(report.to_json().contains("\"stats\":{\"executed\":1214,"));
}

#[test]
fn a_result_wrong_only_in_later_rounds_is_caught() {
    let cmp = quick(1);
    let mut calls = 0u32;
    let group = Group::new("flaky", "flaky", 1).variant("sequential", || 7).variant("flaky", move || {
        calls += 1;
        if calls == 3 { 8 } else { 7 }
    });
    let table = cmp.measure(group);
    assert_eq!(table.row("flaky").unwrap().wrong.as_deref(), Some("returned 8, the baseline 7"));
}

#[test]
fn flat_rows_agree_and_formats_hold_every_cell() {
    let cmp = quick(2);
    let group = cmp.flat("sum", "sum of squares", 3..10_003, 7, || 0u64, |a, i| a + (i * i) as u64, |a, b| a + b);
    let mut report = cmp.report("flat");
    report.push(cmp.measure(group));
    assert!(report.wrong_results().is_empty());
    let table = report.table("sum").unwrap();
    let names: Vec<&str> = table.rows.iter().map(|r| r.variant.as_str()).collect();
    assert_eq!(names, ["sequential", "fanout", "channel", "mutex-queue", "mutex-queue/16", "static split", "rayon"]);
    let cells = names.len() * 2;
    assert_eq!(report.to_json().lines().count(), cells);
    let csv = report.to_csv();
    assert_eq!(csv.lines().count(), cells + 1);
    assert!(csv.lines().all(|l| l.split(',').count() == 12), "{csv}");
    let base = report.cell("sum", "sequential", PoolState::Hot).unwrap();
    assert!((base.speedup - 1.0).abs() < 1e-9);
    assert!(base.min_ns <= base.median_ns && base.median_ns <= base.max_ns);
}

#[test]
fn strategies_keep_their_threads_between_runs() {
    // Thread names are counted process-wide, so this runs alone in a child process.
    if std::env::var_os("FANOUT_COMPARE_CHILD").is_none() {
        let name = "strategies_keep_their_threads_between_runs";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1"])
            .env("FANOUT_COMPARE_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let channel = ChannelPool::new(3).unwrap();
    let queue = MutexQueue::new(3, 2).unwrap();
    let tree = Tree { fanout: 2, depth: 8 };
    // (A new thread names itself once it runs, so the count is taken after a run.)
    for _ in 0..20 {
        channel.run_fold(vec![(0, 0)], &tree);
        queue.run_fold(vec![(0, 0)], &tree);
        assert_eq!(common::threads_named("fanout-channel"), 2);
        assert_eq!(common::threads_named("fanout-mutex-q"), 2);
    }
    let clone = channel.clone();
    drop(channel);
    assert_eq!(clone.run_fold(vec![(0, 0)], &tree).1, 511);
    drop((clone, queue));
    assert_eq!(common::threads_left("fanout-channel"), 0);
    assert_eq!(common::threads_left("fanout-mutex-q"), 0);
}

#[test]
fn bad_configurations_are_errors() {
    assert!(matches!(Compare::builder().threads(0).build(), Err(CompareError::ZeroThreads)));
    assert!(matches!(Compare::builder().rounds(0).build(), Err(CompareError::ZeroRounds)));
    assert!(matches!(Compare::builder().states(&[]).build(), Err(CompareError::NoStates)));
    let e = Compare::builder().threads(fanout::MAX_THREADS + 10).build().unwrap_err();
    assert!(matches!(e, CompareError::Pool(_)), "{e:?}");
    // Display or source, not both.
    let source = e.source().expect("the pool's error is the source").to_string();
    assert!(!e.to_string().contains(&source));
}

#[test]
fn an_after_others_hook_runs_before_each_after_others_run() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let cmp = Compare::builder()
        .threads(1)
        .rounds(3)
        .states(&[PoolState::AfterOthers])
        .after_others(move |_, _| {
            seen.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .unwrap();
    cmp.measure(Group::new("g", "g", 1).variant("a", || 1).variant("b", || 1));
    assert_eq!(calls.load(Ordering::Relaxed), 2 * 3);
}

#[test]
fn the_svg_chart_names_every_workload_and_variant() {
    let cmp = quick(2);
    let tree = Tree { fanout: 2, depth: 6 };
    let mut report = cmp.report("chart");
    report.push(cmp.measure(cmp.follow_on("W-tree", "tree", || vec![(0, 0)], &tree)));
    report.push(cmp.measure(Group::new("W-flat", "flat", 10).variant("sequential", || 1).variant("other", || 1)));
    let path = std::env::temp_dir().join(format!("fanout-compare-{}.svg", std::process::id()));
    report.write_svg(&path).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{}", &svg[..svg.len().min(80)]);
    for name in ["W-tree", "W-flat", "mutex-queue/16", "static split", "rayon scope", "other"] {
        assert!(svg.contains(name), "{name} missing from the chart");
    }
}

#[test]
fn a_panic_in_any_strategy_reaches_the_caller_and_the_strategy_stays_usable() {
    struct Bomb;
    impl FoldWorkload for Bomb {
        type Item = u32;
        type Acc = u32;
        fn identity(&self) -> u32 {
            0
        }
        fn execute<S: Spawner<u32>>(&self, n: u32, acc: &mut u32, spawner: &mut S) {
            assert!(n != 500, "boom");
            *acc += 1;
            if n < 1000 {
                spawner.push(n + 1);
            }
        }
        fn reduce(&self, a: u32, b: u32) -> u32 {
            a + b
        }
    }
    let strategies: Vec<Box<dyn StrategyFor<Bomb>>> = vec![
        Box::new(ChannelPool::new(2).unwrap()),
        Box::new(MutexQueue::new(2, 3).unwrap()),
        Box::new(StaticSplit::new(2).unwrap()),
        Box::new(RayonJoin::new(2).unwrap()),
        Box::new(RayonScope::new(2).unwrap()),
    ];
    for s in &strategies {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.run_workload(vec![0, 10], &Bomb)));
        let payload = caught.expect_err(s.label());
        assert!(payload.downcast_ref::<&str>().is_some_and(|m| m.contains("boom")), "{}", s.label());
        assert_eq!(s.run_workload(vec![501, 900], &Bomb), 500 + 101, "{} after a panic", s.label());
    }
}

/// Runs `f` on a thread and fails (instead of hanging) if it takes over 60 s.
fn within_a_minute(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(()) => handle.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => std::panic::resume_unwind(handle.join().unwrap_err()),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("hung"),
    }
}

#[test]
fn a_nested_run_on_the_same_strategy_completes() {
    /// Each item runs a small tree through the same strategy from inside `execute`.
    struct Nested<S: 'static>(&'static S);
    impl<S: Strategy + Sync> FoldWorkload for Nested<S> {
        type Item = u32;
        type Acc = u64;
        fn identity(&self) -> u64 {
            0
        }
        fn execute<Sp: Spawner<u32>>(&self, _: u32, acc: &mut u64, _: &mut Sp) {
            *acc += self.0.run_fold(vec![(0, 0)], &Tree { fanout: 2, depth: 4 }).1;
        }
        fn reduce(&self, a: u64, b: u64) -> u64 {
            a + b
        }
    }
    within_a_minute(|| {
        let channel: &'static ChannelPool = Box::leak(Box::new(ChannelPool::new(2).unwrap()));
        let queue: &'static MutexQueue = Box::leak(Box::new(MutexQueue::new(2, 1).unwrap()));
        assert_eq!(channel.run_fold((0..8).collect(), &Nested(channel)), 8 * 31);
        assert_eq!(queue.run_fold((0..8).collect(), &Nested(queue)), 8 * 31);
    });
}

#[test]
fn a_static_split_of_few_heavy_seeds_uses_every_thread() {
    /// Leaf seeds that each take a millisecond; records which threads ran them.
    struct Heavy;
    impl FoldWorkload for Heavy {
        type Item = u32;
        type Acc = Vec<std::thread::ThreadId>;
        fn identity(&self) -> Self::Acc {
            Vec::new()
        }
        fn execute<S: Spawner<u32>>(&self, _: u32, acc: &mut Self::Acc, _: &mut S) {
            std::thread::sleep(std::time::Duration::from_millis(1));
            acc.push(std::thread::current().id());
        }
        fn reduce(&self, mut a: Self::Acc, b: Self::Acc) -> Self::Acc {
            a.extend(b);
            a
        }
    }
    let mut ran = StaticSplit::new(2).unwrap().run_fold((0..15).collect(), &Heavy);
    assert_eq!(ran.len(), 15);
    ran.sort_unstable_by_key(|id| format!("{id:?}"));
    ran.dedup();
    assert_eq!(ran.len(), 2, "15 seeds on 2 threads ran on {} thread(s)", ran.len());
}

#[test]
fn rayon_join_walks_a_long_chain_without_overflowing_its_stack() {
    struct Chain;
    impl FoldWorkload for Chain {
        type Item = u32;
        type Acc = u64;
        fn identity(&self) -> u64 {
            0
        }
        fn execute<S: Spawner<u32>>(&self, n: u32, acc: &mut u64, spawner: &mut S) {
            *acc += 1;
            if n > 0 {
                spawner.push(n - 1);
            }
        }
        fn reduce(&self, a: u64, b: u64) -> u64 {
            a + b
        }
    }
    assert_eq!(RayonJoin::new(2).unwrap().run_fold(vec![1_000_000], &Chain), 1_000_001);
}

#[test]
fn every_strategy_of_a_comparison_runs_on_its_thread_count() {
    for threads in [1, 2] {
        let cmp = Compare::builder().threads(threads).rounds(1).states(&[PoolState::Hot]).build().unwrap();
        let tree = Tree { fanout: 3, depth: 7 };
        let table = cmp.measure(cmp.follow_on("t", "t", || vec![(0, 0)], &tree));
        let stats = table.row("fanout").unwrap().stats.clone().expect("work stealing keeps stats");
        assert!(stats.participants <= threads, "{threads} threads asked, {} took part", stats.participants);
    }
}

#[test]
fn a_budget_cuts_the_rounds_of_a_dear_variant_and_the_report_says_so() {
    use std::time::Duration;
    let dear = || {
        std::thread::sleep(Duration::from_millis(15));
        7
    };
    let group = |budget: Option<Duration>| {
        let g = Group::new("g", "g", 1).rounds(6).variant("cheap", || 7).variant("dear", dear);
        match budget {
            Some(b) => g.budget(b),
            None => g,
        }
    };
    let cmp = Compare::builder()
        .threads(1)
        .states(&[PoolState::Hot, PoolState::Parked])
        .park_time(Duration::from_millis(1))
        .build()
        .unwrap();
    // A round of "dear" takes about 3 x 15 ms (two hot runs, one parked) and 1 ms idle,
    // one of "cheap" about 1 ms: a 120 ms budget holds six of "cheap" and two of
    // "dear", not six.
    let cut = cmp.measure(group(Some(Duration::from_millis(120))));
    let full = cmp.measure(group(None));
    for state in [PoolState::Hot, PoolState::Parked] {
        assert_eq!(cut.row("cheap").unwrap().cell(state).unwrap().rounds, 6);
        let dear_rounds = cut.row("dear").unwrap().cell(state).unwrap().rounds;
        assert!((1..6).contains(&dear_rounds), "{dear_rounds} rounds under the budget");
        assert_eq!(full.row("dear").unwrap().cell(state).unwrap().rounds, 6);
    }
    let mut report = cmp.report("budget");
    report.push(cut);
    let text = report.to_string();
    assert!(text.contains("of 6 rounds: budget"), "{text}");
    assert!(report.to_json().contains("\"rounds\":6"));
    assert!(
        report.to_csv().starts_with(
            "workload,variant,state,threads,median_ns,min_ns,max_ns,ns_per_item,speedup,rank,rounds,wrong\n"
        )
    );
}
