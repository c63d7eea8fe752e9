//! Randomized stress: seeded runs of random shapes, costs, stop causes, thread counts,
//! concurrent callers and nested runs, over follow-on trees, index ranges and streams.
//! Every item runs at most once (exactly once when nothing stops the run), every item
//! made is dropped exactly once (items own heap data), every run returns with the
//! outcome its stop causes allow, and dropping the pool leaves no thread.
//!
//! `FANOUT_STRESS_CASES=10000 cargo test --release --test stress` runs more cases
//! (default 300; CI runs 10,000); `FANOUT_STRESS_SEED=n` replays one case.

mod common;

use common::{Rng, thread_count};
use fanout::{Pool, RunError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Per id: how often an item was made, ran, and was dropped.
struct Ledger {
    made: Vec<AtomicU8>,
    ran: Vec<AtomicU8>,
    dropped: Vec<AtomicU8>,
    /// Items whose task returned, with or without an error (a stopped run's `completed`).
    completed: AtomicU64,
}

impl Ledger {
    fn new(n: usize) -> Self {
        let zeros = || (0..n).map(|_| AtomicU8::new(0)).collect();
        Ledger { made: zeros(), ran: zeros(), dropped: zeros(), completed: AtomicU64::new(0) }
    }

    fn item(&self, id: u32) -> Item<'_> {
        self.made[id as usize].fetch_add(1, Ordering::Relaxed);
        Item { id, heap: Box::new(id), ledger: self }
    }

    fn ran(&self, id: u32) -> u8 {
        self.ran[id as usize].load(Ordering::Relaxed)
    }

    fn ran_count(&self) -> usize {
        self.ran.iter().filter(|r| r.load(Ordering::Relaxed) > 0).count()
    }

    /// Nothing ran twice, nothing was made twice, everything made was dropped once.
    fn check(&self, what: &str) -> Result<(), String> {
        for id in 0..self.made.len() {
            let (m, r, d) = (
                self.made[id].load(Ordering::Relaxed),
                self.ran[id].load(Ordering::Relaxed),
                self.dropped[id].load(Ordering::Relaxed),
            );
            if m > 1 || r > m || d != m {
                return Err(format!("{what}: item {id} made {m}, ran {r}, dropped {d} times"));
            }
        }
        Ok(())
    }

    fn check_all_ran(&self, what: &str) -> Result<(), String> {
        match self.ran.iter().position(|r| r.load(Ordering::Relaxed) != 1) {
            Some(id) => Err(format!("{what}: item {id} ran {} times", self.ran(id as u32))),
            None => Ok(()),
        }
    }
}

/// A work item that owns heap data and reports its drop to its ledger.
struct Item<'a> {
    id: u32,
    heap: Box<u32>,
    ledger: &'a Ledger,
}

impl Item<'_> {
    /// Marks the item as running and returns its id (checking its heap data).
    fn start(&self) -> u32 {
        assert_eq!(*self.heap, self.id, "an item's heap data was overwritten");
        self.ledger.ran[self.id as usize].fetch_add(1, Ordering::Relaxed);
        self.id
    }
}

impl Drop for Item<'_> {
    fn drop(&mut self) {
        self.ledger.dropped[self.id as usize].fetch_add(1, Ordering::Relaxed);
    }
}

fn planned_panic(id: impl std::fmt::Display) -> ! {
    panic!("stress panic at {id}")
}

fn spin(cost: u16) -> u64 {
    let mut x = u64::from(cost) | 1;
    for _ in 0..cost {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x)
}

/// A task tree with dense ids: `children[id]` are pushed when `id` runs.
struct Tree {
    seeds: Vec<u32>,
    children: Vec<Vec<u32>>,
    cost: Vec<u16>,
    panic_at: Option<u32>,
    nested_every: Option<u32>,
    /// Run through `Runner::try_run` with these controls instead of `Pool::run`.
    controls: Option<Controls>,
    name: &'static str,
}

/// The run controls a tree may be run under; any number of stop causes at once.
#[derive(Clone, Debug)]
struct Controls {
    limit: Option<usize>,
    blocking: bool,
    /// This item returns an error.
    fail_at: Option<u32>,
    /// This item cancels the run's token.
    cancel_at: Option<u32>,
    /// This item panics (after cancelling, if it is also `cancel_at`).
    panic_at: Option<u32>,
    timeout: Option<Duration>,
    /// Every item whose id is a multiple of this pushes its children at high priority.
    high_every: Option<u32>,
}

fn gen_tree(rng: &mut Rng) -> Tree {
    // Mostly small trees (many runs per case), sometimes a big one.
    let most = if rng.below(10) == 0 { 60_000 } else { 4_000 };
    let n = 1 + rng.below(most) as usize;
    let mut children = vec![Vec::new(); n];
    let mut seeds = vec![0u32];
    let name = match rng.below(5) {
        0 => {
            // Wide: one root with every other node as its child.
            children[0] = (1..n as u32).collect();
            "wide"
        }
        1 => {
            for (i, c) in children.iter_mut().enumerate().take(n - 1) {
                c.push(i as u32 + 1);
            }
            "chain"
        }
        2 => {
            // Binary tree in heap order.
            for (i, kids) in children.iter_mut().enumerate() {
                kids.extend([2 * i + 1, 2 * i + 2].into_iter().filter(|&c| c < n).map(|c| c as u32));
            }
            "binary"
        }
        3 => {
            // Random fan-out 0..=5, built breadth-first.
            let mut next = 1usize;
            let mut i = 0usize;
            while next < n {
                let k = if i + 1 >= next { 1 + rng.below(5) } else { rng.below(6) } as usize;
                for _ in 0..k {
                    if next < n {
                        children[i].push(next as u32);
                        next += 1;
                    }
                }
                i += 1;
            }
            "random"
        }
        _ => {
            // A forest: many seeds, each with a few children.
            let roots = 1 + rng.below(n as u64 / 2 + 1) as usize;
            seeds = (0..roots.min(n) as u32).collect();
            let mut next = seeds.len();
            // Only nodes already reached (ids below `next`) get children.
            for (i, kids) in children.iter_mut().enumerate() {
                while next < n && i < next && rng.below(3) == 0 {
                    kids.push(next as u32);
                    next += 1;
                }
            }
            // Unreached ids become seeds too, so every id runs once.
            seeds.extend(next as u32..n as u32);
            "forest"
        }
    };
    let heavy = rng.below(4) == 0;
    let cost = (0..n).map(|_| if heavy { rng.below(300) as u16 } else { 0 }).collect();
    let mut pick = |one_in: u64| (rng.below(one_in) == 0).then(|| rng.below(n as u64) as u32);
    let panic_at = pick(8);
    let nested_every = (rng.below(8) == 0).then(|| 50 + rng.below(500) as u32);
    let controls = (rng.below(2) == 0).then(|| Controls {
        limit: (rng.below(3) == 0).then(|| 1 + rng.below(3) as usize),
        blocking: rng.below(6) == 0,
        fail_at: (rng.below(4) == 0).then(|| rng.below(n as u64) as u32),
        cancel_at: (rng.below(4) == 0).then(|| rng.below(n as u64) as u32),
        panic_at,
        timeout: (rng.below(6) == 0).then(|| Duration::from_micros(rng.below(3_000))),
        high_every: (rng.below(3) == 0).then(|| 1 + rng.below(20) as u32),
    });
    Tree { seeds, children, cost, panic_at, nested_every, controls, name }
}

/// Runs one tree through `Runner::try_run` under its controls and checks it: the limit
/// is never exceeded, no item runs twice, every item is dropped once, and the run ends
/// with one of the outcomes its stop causes allow.
fn check_controlled(pool: &Pool, tree: &Tree, c: &Controls) -> Result<(), String> {
    let ledger = Ledger::new(tree.children.len());
    let in_flight = AtomicU64::new(0);
    let most = AtomicU64::new(0);
    let token = fanout::CancelToken::new();
    let mut runner = pool.runner().cancel_token(&token);
    if let Some(limit) = c.limit {
        runner = runner.limit(limit);
    }
    if c.blocking {
        runner = runner.blocking();
    }
    if let Some(t) = c.timeout {
        runner = runner.timeout(t);
    }
    let result = runner.try_run(tree.seeds.iter().map(|&id| ledger.item(id)), |item, ctx| {
        let id = item.start();
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        spin(tree.cost[id as usize]);
        let high = c.high_every.is_some_and(|every| id % every == 0);
        for &child in &tree.children[id as usize] {
            let child = ledger.item(child);
            if high { ctx.push_high(child) } else { ctx.push(child) }
        }
        if c.cancel_at == Some(id) {
            token.cancel();
        }
        in_flight.fetch_sub(1, Ordering::SeqCst);
        if c.panic_at == Some(id) {
            planned_panic(id);
        }
        // A task that returns, even with an error, has completed.
        ledger.completed.fetch_add(1, Ordering::Relaxed);
        if c.fail_at == Some(id) { Err(id) } else { Ok(()) }
    });
    let what = format!("{} of {} {c:?}", tree.name, tree.children.len());
    ledger.check(&what)?;
    if let Some(limit) = c.limit
        && most.load(Ordering::SeqCst) > limit as u64
    {
        return Err(format!("{what}: {} items in flight", most.load(Ordering::SeqCst)));
    }
    let ran = |at: Option<u32>| at.is_some_and(|id| ledger.ran(id) == 1);
    let completed = ledger.completed.load(Ordering::Relaxed);
    let fine = match &result {
        Ok(stats) => {
            ledger.check_all_ran(&what)?;
            !ran(c.fail_at) && !ran(c.panic_at) && !ran(c.cancel_at) && stats.executed as usize == ledger.ran.len()
        }
        Err(RunError::Failed { error, index: None }) => c.fail_at == Some(*error) && ran(c.fail_at),
        Err(RunError::Panicked { message, index: None }) => {
            ran(c.panic_at) && *message == format!("stress panic at {}", c.panic_at.unwrap_or(0))
        }
        Err(RunError::Cancelled { completed: n }) => ran(c.cancel_at) && *n == completed,
        Err(RunError::TimedOut { completed: n }) => c.timeout.is_some() && *n == completed,
        Err(_) => false,
    };
    if fine { Ok(()) } else { Err(format!("{what}: ran {} items, got {result:?}", ledger.ran_count())) }
}

/// Runs one tree on `pool` and checks it. Returns an error text naming the problem.
fn check_tree(pool: &Pool, tree: &Tree) -> Result<(), String> {
    if let Some(c) = &tree.controls {
        return check_controlled(pool, tree, c);
    }
    let ledger = Ledger::new(tree.children.len());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.run(tree.seeds.iter().map(|&id| ledger.item(id)), |item, ctx| {
            let id = item.start();
            spin(tree.cost[id as usize]);
            if tree.panic_at == Some(id) {
                planned_panic(id);
            }
            if let Some(every) = tree.nested_every
                && id % every == 0
            {
                let s = pool.fold_index(0..200, || 0u64, |a, i| a + i as u64, |a, b| a + b);
                assert_eq!(s, 19_900, "nested fold");
            }
            for &c in &tree.children[id as usize] {
                ctx.push(ledger.item(c));
            }
        })
    }));
    let what = format!("{} of {}", tree.name, tree.children.len());
    ledger.check(&what)?;
    match (result, tree.panic_at) {
        (Ok(stats), None) => {
            ledger.check_all_ran(&what)?;
            if stats.executed as usize != ledger.ran.len() {
                return Err(format!("{what}: stats.executed {} != {}", stats.executed, ledger.ran.len()));
            }
            Ok(())
        }
        (Err(payload), Some(at)) => {
            let msg = payload.downcast_ref::<String>().cloned().unwrap_or_default();
            if msg != format!("stress panic at {at}") {
                return Err(format!("{what}: wrong panic payload {msg:?}"));
            }
            Ok(())
        }
        (Ok(_), Some(at)) => Err(format!("{what}: item {at} should have panicked")),
        (Err(_), None) => Err(format!("{what}: unexpected panic")),
    }
}

/// An index-range call and how it may stop.
#[derive(Debug)]
struct RangeJob {
    n: usize,
    call: RangeCall,
    cost: u16,
    fail_at: Option<usize>,
    panic_at: Option<usize>,
    blocking: bool,
}

#[derive(Debug, Clone, Copy)]
enum RangeCall {
    ForEach,
    Map,
    Fold,
    TryForEach,
    TryMap,
}

fn gen_range(rng: &mut Rng) -> RangeJob {
    let most = if rng.below(10) == 0 { 300_000 } else { 5_000 };
    let n = rng.below(most) as usize;
    let call = [RangeCall::ForEach, RangeCall::Map, RangeCall::Fold, RangeCall::TryForEach, RangeCall::TryMap]
        [rng.below(5) as usize];
    let pick = |rng: &mut Rng| (rng.below(4) == 0).then(|| rng.below(n as u64 + 1) as usize);
    let fail_at = pick(rng);
    let panic_at = pick(rng);
    // Blocking ranges share before each index: keep them short.
    let blocking = n < 3_000 && rng.below(4) == 0;
    let cost = if rng.below(3) == 0 { rng.below(200) as u16 } else { 0 };
    RangeJob { n, call, cost, fail_at, panic_at, blocking }
}

/// Runs one index-range call and checks which indices ran, the result, and the drops of
/// the values a map made.
fn check_range(pool: &Pool, job: &RangeJob) -> Result<(), String> {
    let what = format!("{job:?}");
    let ledger = Ledger::new(job.n);
    let mut runner = pool.runner();
    if job.blocking {
        runner = runner.blocking();
    }
    // Runs index i; the range's stop causes apply to the try_* calls, the panic to all.
    let visit = |i: usize| -> Result<Item<'_>, usize> {
        let item = ledger.item(i as u32);
        item.start();
        spin(job.cost);
        if job.panic_at == Some(i) {
            planned_panic(i);
        }
        if job.fail_at == Some(i) { Err(i) } else { Ok(item) }
    };
    let panicked = |i: usize| job.panic_at == Some(i) && ledger.ran(i as u32) == 1;
    let failed = |i: usize| job.fail_at == Some(i) && ledger.ran(i as u32) == 1;
    // The infallible calls: `Some(problem)` names a wrong result.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match job.call {
        RangeCall::ForEach => {
            pool.for_each_index(0..job.n, |i| drop(visit(i)));
            None
        }
        RangeCall::Map => {
            let out = pool.map_index(0..job.n, |i| visit(i).map_or(u32::MAX, |item| item.id));
            let bad = out.iter().enumerate().position(|(i, &v)| v != i as u32 && !failed(i));
            (out.len() != job.n || bad.is_some()).then(|| format!("map: {} values, wrong at {bad:?}", out.len()))
        }
        RangeCall::Fold => {
            let sum = pool.fold_index(0..job.n, || 0u64, |a, i| a + visit(i).map_or(i, |_| i) as u64, |a, b| a + b);
            let n = job.n as u64;
            (sum != n * n.saturating_sub(1) / 2).then(|| format!("fold: sum {sum}"))
        }
        RangeCall::TryForEach | RangeCall::TryMap => None,
    }));
    let fallible = matches!(job.call, RangeCall::TryForEach | RangeCall::TryMap);
    match caught {
        Ok(Some(problem)) => return Err(format!("{what}: {problem}")),
        Ok(None) if !fallible => {
            ledger.check(&what)?;
            if job.panic_at.is_some_and(|i| i < job.n) {
                return Err(format!("{what}: the planned panic did not reach the caller"));
            }
            return ledger.check_all_ran(&what);
        }
        Ok(None) => {}
        Err(payload) => {
            ledger.check(&what)?;
            let msg = payload.downcast_ref::<String>().cloned().unwrap_or_default();
            let at = job.panic_at.unwrap_or(usize::MAX);
            return if !fallible && panicked(at) && msg == format!("stress panic at {at}") {
                Ok(())
            } else {
                Err(format!("{what}: unexpected panic {msg:?}"))
            };
        }
    }
    let result: Result<Option<Vec<Item<'_>>>, RunError<usize>> = match job.call {
        RangeCall::TryForEach => runner.try_for_each_index(0..job.n, |i| visit(i).map(drop)).map(|()| None),
        _ => runner.try_map_index(0..job.n, visit).map(Some),
    };
    let fine = match &result {
        Ok(out) => {
            let in_order =
                out.as_ref().is_none_or(|v| v.len() == job.n && v.iter().enumerate().all(|(i, it)| it.id == i as u32));
            let stop = |at: Option<usize>| at.is_some_and(|i| i < job.n);
            in_order && !stop(job.fail_at) && !stop(job.panic_at)
        }
        Err(RunError::Failed { error, index }) => failed(*error) && *index == Some(*error),
        Err(RunError::Panicked { message, index }) => {
            let at = job.panic_at.unwrap_or(usize::MAX);
            panicked(at) && *index == Some(at) && *message == format!("stress panic at {at}")
        }
        Err(_) => false,
    };
    let all_ran = result.is_ok();
    drop(result);
    ledger.check(&what)?;
    if all_ran {
        ledger.check_all_ran(&what)?;
    }
    if fine { Ok(()) } else { Err(format!("{what}: ran {} indices, wrong result", ledger.ran_count())) }
}

/// A stream over `0..n` and how it is consumed.
#[derive(Debug)]
struct StreamJob {
    n: u64,
    ordered: bool,
    window: Option<usize>,
    filter: bool,
    take: Option<usize>,
    panic_at: Option<u64>,
}

fn gen_stream(rng: &mut Rng) -> StreamJob {
    let most = if rng.below(10) == 0 { 100_000 } else { 3_000 };
    let n = rng.below(most);
    StreamJob {
        n,
        ordered: rng.below(3) != 0,
        window: (rng.below(2) == 0).then(|| 1 + rng.below(64) as usize),
        filter: rng.below(3) == 0,
        take: (rng.below(4) == 0).then(|| rng.below(n + 1) as usize),
        panic_at: (rng.below(5) == 0).then(|| rng.below(n + 1)),
    }
}

/// Drop counts of a stream's values, shared with its 'static stages.
struct StreamValue {
    id: u64,
    _heap: Box<u64>,
    counts: Arc<(AtomicU64, AtomicU64)>,
}

impl Drop for StreamValue {
    fn drop(&mut self) {
        self.counts.1.fetch_add(1, Ordering::Relaxed);
    }
}

/// Consumes one stream and checks what arrived (order, gaps, the panic) and that every
/// value made was dropped once the iterator is gone.
fn check_stream(pool: &Pool, job: &StreamJob) -> Result<(), String> {
    let what = format!("{job:?}");
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let (panic_at, filter) = (job.panic_at, job.filter);
    let made = counts.clone();
    let mut stream = pool
        .stream(0..job.n)
        .map(move |id| {
            if panic_at == Some(id) {
                planned_panic(id);
            }
            made.0.fetch_add(1, Ordering::Relaxed);
            StreamValue { id, _heap: Box::new(id), counts: made.clone() }
        })
        .filter(move |v| !filter || v.id % 3 != 0);
    if let Some(w) = job.window {
        stream = stream.window(w);
    }
    stream = if job.ordered { stream.ordered() } else { stream.unordered() };
    let wanted = |id: u64| !job.filter || !id.is_multiple_of(3);
    let mut got = Vec::new();
    let mut error = None;
    for item in stream.into_iter().take(job.take.unwrap_or(usize::MAX)) {
        match item {
            Ok(v) => got.push(v.id),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    // The iterator is gone: no stage runs any more, and every value is dropped.
    let (m, d) = (counts.0.load(Ordering::Relaxed), counts.1.load(Ordering::Relaxed));
    if m != d {
        return Err(format!("{what}: {m} values made, {d} dropped"));
    }
    if job.ordered {
        let expected = (0..job.n).filter(|&id| wanted(id));
        if !got.iter().copied().eq(expected.take(got.len())) {
            return Err(format!("{what}: ordered output out of order or with gaps"));
        }
    } else {
        got.sort_unstable();
        if got.windows(2).any(|w| w[0] == w[1]) || got.iter().any(|&id| !wanted(id) || id >= job.n) {
            return Err(format!("{what}: unordered output with duplicates or strays"));
        }
    }
    let planned = job.panic_at.filter(|&at| at < job.n);
    match error {
        Some(RunError::Panicked { message, index }) => {
            let at = planned.unwrap_or(u64::MAX);
            if index != Some(at as usize) || message != format!("stress panic at {at}") {
                return Err(format!("{what}: panic reported as {message:?} at {index:?}"));
            }
            if job.ordered && got.iter().any(|&id| id > at) {
                return Err(format!("{what}: ordered output went past the panic"));
            }
        }
        Some(other) => return Err(format!("{what}: unexpected error {other:?}")),
        None => {
            let cut = job.take.is_some_and(|t| t <= got.len());
            let all = (0..job.n).filter(|&id| wanted(id)).count();
            if !cut && (got.len() != all || planned.is_some()) {
                return Err(format!("{what}: {} of {all} values, no error", got.len()));
            }
        }
    }
    Ok(())
}

enum Job {
    Tree(Tree),
    Range(RangeJob),
    Stream(StreamJob),
}

fn gen_job(rng: &mut Rng) -> Job {
    match rng.below(4) {
        0 | 1 => Job::Tree(gen_tree(rng)),
        2 => Job::Range(gen_range(rng)),
        _ => Job::Stream(gen_stream(rng)),
    }
}

fn check_job(pool: &Pool, job: &Job) -> Result<(), String> {
    match job {
        Job::Tree(t) => check_tree(pool, t),
        Job::Range(r) => check_range(pool, r),
        Job::Stream(s) => check_stream(pool, s),
    }
}

/// One case: a pool of 1–4 threads (by seed, so every count gets a quarter of the
/// cases; every eighth case has one thread per core, which makes the caller hold a
/// core's seat on any host), 1–3 concurrent callers, a few jobs each.
fn run_case(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = if seed % 8 == 7 { cores.min(16) } else { 1 + (seed % 4) as usize };
    let callers = 1 + rng.below(3) as usize;
    let pool = Pool::builder().num_threads(threads).pin(rng.below(2) == 0).build().map_err(|e| e.to_string())?;
    let jobs: Vec<Vec<Job>> =
        (0..callers).map(|_| (0..1 + rng.below(3)).map(|_| gen_job(&mut rng)).collect()).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|mine| {
                let pool = &pool;
                s.spawn(move || mine.iter().try_for_each(|job| check_job(pool, job)))
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err("caller thread died".into())))
    })
    .map_err(|e| format!("threads {threads}, callers {callers}: {e}"))
}

#[test]
fn randomized_runs() {
    let cases: u64 = std::env::var("FANOUT_STRESS_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let only: Option<u64> = std::env::var("FANOUT_STRESS_SEED").ok().and_then(|v| v.parse().ok());
    // The test harness runs tests in parallel threads; this test owns its own pools,
    // so the thread count check compares against the count at start.
    let before = thread_count();
    // Planned panics are part of the test; keep their reports out of the log.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let planned = info.payload().downcast_ref::<String>().is_some_and(|m| m.starts_with("stress panic at"));
        if !planned {
            default_hook(info);
        }
    }));
    // A hang fails the test with the seed: a watchdog aborts the process.
    let current = Arc::new(AtomicU64::new(u64::MAX));
    let started = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    {
        let (current, started) = (current.clone(), started.clone());
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let seed = current.load(Ordering::Relaxed);
                let since = t0.elapsed().as_secs().saturating_sub(started.load(Ordering::Relaxed));
                if seed != u64::MAX && since > 120 {
                    eprintln!(
                        "stress: case with seed {seed} has not returned after 120 s; replay with FANOUT_STRESS_SEED={seed}"
                    );
                    std::process::abort();
                }
            }
        });
    }
    let seeds: Vec<u64> = match only {
        Some(s) => vec![s],
        None => (1..=cases).collect(),
    };
    let start = Instant::now();
    for &seed in &seeds {
        started.store(t0.elapsed().as_secs(), Ordering::Relaxed);
        current.store(seed, Ordering::Relaxed);
        if let Err(e) = run_case(seed) {
            panic!("stress case failed (replay with FANOUT_STRESS_SEED={seed}): {e}");
        }
    }
    current.store(u64::MAX, Ordering::Relaxed);
    // +1 for the watchdog; other tests in this binary: none. A thread just joined may
    // still show in /proc for a moment: wait up to ten seconds for the count to settle.
    let settle = Instant::now();
    let mut after = thread_count();
    while after > before + 1 && settle.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
        after = thread_count();
    }
    assert!(after <= before + 1, "threads before {before}, after {after}: a pool leaked threads");
    eprintln!("stress: {} cases passed in {:.1} s", seeds.len(), start.elapsed().as_secs_f64());
}
