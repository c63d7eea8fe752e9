//! One conformance suite for every `fanout::strategy::Strategy`: exactly-once execution
//! with follow-ons, deep chains, many seeds, empty runs, and panics that surface on the
//! caller and leave the strategy usable.

mod common;

use common::Rng;
use fanout::Pool;
use fanout::strategy::{ChannelPool, MutexQueue, Sequential, Spawner, Strategy, StrategyError, WorkStealing, Workload};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A stateless hash of one id, for per-item random decisions.
fn mix(seed: u64, id: usize) -> u64 {
    let mut x = seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    x
}

/// Aborts the test process if a case has not finished in time (a hung strategy would
/// otherwise hang the whole test run).
struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    fn new(what: String) -> Self {
        let finished = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&finished);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Acquire) {
                if Instant::now() > deadline {
                    // Straight to stderr: the test harness's capture would swallow it.
                    let _ = writeln!(std::io::stderr(), "{what} did not finish within 120 s: a strategy hangs");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self(finished)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Counts live items, so that leaks and double drops show up.
struct Tracked<'a> {
    id: usize,
    live: &'a AtomicUsize,
}

impl<'a> Tracked<'a> {
    fn new(id: usize, live: &'a AtomicUsize) -> Self {
        live.fetch_add(1, Ordering::Relaxed);
        Self { id, live }
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A random tree: each item gets `min_children..=max_children` children, whose ids come from a
/// shared counter (so they are unique) while it is below `limit`. Optionally panics
/// on item `panic_at`.
struct RandomTree<'a> {
    seed: u64,
    min_children: u64,
    max_children: u64,
    limit: usize,
    next_id: AtomicUsize,
    runs: Vec<AtomicU32>,
    live: &'a AtomicUsize,
    panic_at: Option<usize>,
}

impl<'a> RandomTree<'a> {
    fn new(seed: u64, max_children: u64, limit: usize, seeds: usize, live: &'a AtomicUsize) -> Self {
        Self {
            seed,
            min_children: 0,
            max_children,
            limit,
            next_id: AtomicUsize::new(seeds),
            runs: (0..limit).map(|_| AtomicU32::new(0)).collect(),
            live,
            panic_at: None,
        }
    }

    fn seeds(&self, n: usize) -> Vec<Tracked<'a>> {
        (0..n).map(|id| Tracked::new(id, self.live)).collect()
    }

    /// Checks that ids `0..created` ran exactly once and no other id ran.
    fn check(&self, context: &str) -> usize {
        let created = self.next_id.load(Ordering::Relaxed).min(self.limit);
        for (id, runs) in self.runs.iter().enumerate() {
            let runs = runs.load(Ordering::Relaxed);
            let expected = u32::from(id < created);
            assert_eq!(runs, expected, "{context}: item {id} of {created} ran {runs} times");
        }
        created
    }
}

impl<'a> Workload for RandomTree<'a> {
    type Item = Tracked<'a>;

    fn execute<S: Spawner<Tracked<'a>>>(&self, item: Tracked<'a>, spawner: &mut S) {
        self.runs[item.id].fetch_add(1, Ordering::Relaxed);
        if self.panic_at == Some(item.id) {
            panic!("planned panic at item {}", item.id);
        }
        let spread = self.max_children - self.min_children + 1;
        let children = (self.min_children + mix(self.seed, item.id) % spread) as usize;
        let first = self.next_id.fetch_add(children, Ordering::Relaxed);
        for id in first..(first + children).min(self.limit) {
            spawner.push(Tracked::new(id, self.live));
        }
    }
}

/// Each item pushes the next one until `len` items have run.
struct Chain {
    len: usize,
    runs: Vec<AtomicU32>,
}

impl Workload for Chain {
    type Item = usize;

    fn execute<S: Spawner<usize>>(&self, i: usize, spawner: &mut S) {
        self.runs[i].fetch_add(1, Ordering::Relaxed);
        if i + 1 < self.len {
            spawner.push(i + 1);
        }
    }
}

/// Only counts; pushes nothing.
struct Flat {
    runs: Vec<AtomicU32>,
}

impl Workload for Flat {
    type Item = usize;

    fn execute<S: Spawner<usize>>(&self, i: usize, _: &mut S) {
        self.runs[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Fails the test if it runs at all.
struct MustNotRun;

impl Workload for MustNotRun {
    type Item = u8;

    fn execute<S: Spawner<u8>>(&self, _: u8, _: &mut S) {
        panic!("an item of an empty run was executed");
    }
}

fn assert_each_ran_once(runs: &[AtomicU32], context: &str) {
    for (i, r) in runs.iter().enumerate() {
        let r = r.load(Ordering::Relaxed);
        assert_eq!(r, 1, "{context}: item {i} ran {r} times");
    }
}

fn exactly_once_on_random_trees<S: Strategy>(s: &S) {
    for case in 0..12u64 {
        let mut rng = Rng(0x5EED_0000 + case * 0x9E37_79B9);
        let limit = 1000 + rng.below(30_000) as usize;
        let max_children = 1 + rng.below(5);
        let seeds = 1 + rng.below(40) as usize;
        let live = AtomicUsize::new(0);
        let tree = RandomTree::new(rng.next(), max_children, limit, seeds, &live);
        s.run(tree.seeds(seeds), &tree);
        let context = format!("{}: tree case {case}", s.name());
        let created = tree.check(&context);
        assert!(created >= seeds, "{context}: fewer items than seeds");
        assert_eq!(live.load(Ordering::Relaxed), 0, "{context}: items leaked or dropped twice");
    }
}

fn long_chain<S: Strategy>(s: &S) {
    let chain = Chain { len: 20_000, runs: (0..20_000).map(|_| AtomicU32::new(0)).collect() };
    s.run(vec![0], &chain);
    assert_each_ran_once(&chain.runs, &format!("{}: chain", s.name()));
}

fn many_seeds<S: Strategy>(s: &S) {
    let n = 100_000;
    let flat = Flat { runs: (0..n).map(|_| AtomicU32::new(0)).collect() };
    s.run((0..n).collect(), &flat);
    assert_each_ran_once(&flat.runs, &format!("{}: many seeds", s.name()));
}

fn empty_seeds<S: Strategy>(s: &S) {
    let start = Instant::now();
    s.run(Vec::new(), &MustNotRun);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "{}: an empty run took {took:?}", s.name());
}

/// A panic deep in a tree surfaces on the caller with its payload, after which every
/// item was dropped exactly once, and the strategy runs the next workload correctly.
fn panic_surfaces_and_strategy_recovers<S: Strategy>(s: &S) {
    for case in 0..4u64 {
        let context = format!("{}: panic case {case}", s.name());
        let live = AtomicUsize::new(0);
        let mut tree = RandomTree::new(0xBAD + case, 3, 20_000, 3, &live);
        // Every item has a child while ids last, so the tree is sure to reach `target`.
        tree.min_children = 1;
        let target = 500 + case as usize * 4000;
        tree.panic_at = Some(target);
        let seeds = tree.seeds(3);
        let payload = match catch_unwind(AssertUnwindSafe(|| s.run(seeds, &tree))) {
            Ok(()) => panic!("{context}: the panic was swallowed"),
            Err(payload) => payload,
        };
        let message = payload.downcast_ref::<String>().map(String::as_str).unwrap_or("<not a String>");
        assert_eq!(message, format!("planned panic at item {target}"), "{context}: wrong payload");
        assert_eq!(tree.runs[target].load(Ordering::Relaxed), 1, "{context}: panicking item ran twice");
        for (id, runs) in tree.runs.iter().enumerate() {
            assert!(runs.load(Ordering::Relaxed) <= 1, "{context}: item {id} ran twice");
        }
        assert_eq!(live.load(Ordering::Relaxed), 0, "{context}: items leaked or dropped twice after a panic");

        // Usable again, with the same strategy value.
        exactly_once_on_random_trees(s);
        long_chain(s);
    }

    // Many items panic at once (every item whose hash says so): still one payload, no hang.
    struct Volatile<'a>(RandomTree<'a>);
    impl<'a> Workload for Volatile<'a> {
        type Item = Tracked<'a>;
        fn execute<Sp: Spawner<Tracked<'a>>>(&self, item: Tracked<'a>, spawner: &mut Sp) {
            if item.id > 100 && mix(99, item.id).is_multiple_of(7) {
                std::panic::panic_any(item.id);
            }
            self.0.execute(item, spawner);
        }
    }
    let live = AtomicUsize::new(0);
    let mut tree = RandomTree::new(3, 3, 50_000, 8, &live);
    tree.min_children = 1;
    let work = Volatile(tree);
    let seeds = work.0.seeds(8);
    let payload = catch_unwind(AssertUnwindSafe(|| s.run(seeds, &work))).expect_err("no panic surfaced");
    let id = *payload.downcast_ref::<usize>().expect("payload is an item id");
    assert!(id > 100 && mix(99, id).is_multiple_of(7), "{}: unexpected payload {id}", s.name());
    assert_eq!(live.load(Ordering::Relaxed), 0, "{}: items leaked after many panics", s.name());
    many_seeds(s);
}

/// The whole suite, for one strategy.
fn conformance<S: Strategy>(s: &S) {
    let _watchdog = Watchdog::new(format!("conformance of {}", s.name()));
    empty_seeds(s);
    exactly_once_on_random_trees(s);
    long_chain(s);
    many_seeds(s);
    panic_surfaces_and_strategy_recovers(s);
    empty_seeds(s);
}

#[test]
fn sequential() {
    conformance(&Sequential);
}

#[test]
fn channel_pool() {
    for threads in [1, 2, 4] {
        let s = ChannelPool::new(threads).unwrap();
        assert_eq!(s.threads(), threads);
        conformance(&s);
    }
}

#[test]
fn mutex_queue() {
    for threads in [1, 2, 4] {
        for batch in [1, 8] {
            let s = MutexQueue::new(threads, batch).unwrap();
            assert_eq!((s.threads(), s.batch()), (threads, batch));
            conformance(&s);
        }
    }
}

#[test]
fn work_stealing() {
    for threads in [1, 2, 4] {
        let pool = Pool::builder().num_threads(threads).pin(false).build().unwrap();
        conformance(&WorkStealing(&pool));
    }
}

#[test]
fn bad_configurations_are_rejected() {
    assert_eq!(ChannelPool::new(0).unwrap_err(), StrategyError::ZeroThreads);
    assert_eq!(MutexQueue::new(0, 1).unwrap_err(), StrategyError::ZeroThreads);
    assert_eq!(MutexQueue::new(2, 0).unwrap_err(), StrategyError::ZeroBatch);
    assert_eq!(MutexQueue::new(0, 0).unwrap_err(), StrategyError::ZeroThreads);
    assert!(StrategyError::ZeroThreads.to_string().contains("thread"));
    assert!(StrategyError::ZeroBatch.to_string().contains("batch"));
}

#[test]
fn names_are_distinct() {
    let pool = Pool::builder().num_threads(1).pin(false).build().unwrap();
    let names = [
        Sequential.name().to_owned(),
        ChannelPool::new(1).unwrap().name().to_owned(),
        MutexQueue::new(1, 1).unwrap().name().to_owned(),
        WorkStealing(&pool).name().to_owned(),
    ];
    for (i, a) in names.iter().enumerate() {
        assert!(!a.is_empty());
        assert!(names[i + 1..].iter().all(|b| a != b), "duplicate name {a}");
    }
}
