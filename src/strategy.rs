//! Interchangeable ways to run one workload with follow-on work, for comparisons.
//!
//! A [`Workload`] says what to do with one item and may push follow-on items through a
//! [`Spawner`]; a [`Strategy`] runs it from a list of seeds until every item, follow-ons
//! included, has executed exactly once. Four strategies are provided:
//!
//! | strategy | threads | shared state per item |
//! | --- | --- | --- |
//! | [`Sequential`] | the caller | none: a LIFO `Vec` |
//! | [`ChannelPool`] | scoped, per run | an MPMC channel send and receive, an atomic counter |
//! | [`MutexQueue`] | scoped, per run | a `Mutex<Vec<_>>` stack, locked once per batch (and per follow-on burst) |
//! | [`WorkStealing`] | a [`Pool`]'s | none until a thread is idle (see [`Pool::run`]) |
//!
//! Writing the workload as a type rather than a closure keeps
//! [`Workload::execute`] generic over the spawner, so every strategy gets its own
//! monomorphized copy of the per-item code and no call goes through `dyn`.
//!
//! All strategies share one contract: `run` returns once every seed and follow-on has
//! executed exactly once; if `execute` panics, no new item is started, the items not
//! yet executed are dropped, and the panic is resumed on the caller once every thread
//! of the run has stopped; the strategy can be used again afterwards.
//!
//! ```
//! use fanout::strategy::{ChannelPool, MutexQueue, Sequential, Spawner, Strategy, WorkStealing, Workload};
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! /// A complete binary tree: an item is a node's depth; each inner node has two children.
//! struct Tree {
//!     depth: u32,
//!     nodes: AtomicU64,
//! }
//!
//! impl Workload for Tree {
//!     type Item = u32;
//!     fn execute<S: Spawner<u32>>(&self, depth: u32, spawner: &mut S) {
//!         self.nodes.fetch_add(1, Ordering::Relaxed);
//!         if depth < self.depth {
//!             spawner.push(depth + 1);
//!             spawner.push(depth + 1);
//!         }
//!     }
//! }
//!
//! fn count_nodes<S: Strategy>(strategy: &S) -> u64 {
//!     let tree = Tree { depth: 12, nodes: AtomicU64::new(0) };
//!     let start = std::time::Instant::now();
//!     strategy.run(vec![0], &tree);
//!     println!("{}: {:?}", strategy.name(), start.elapsed());
//!     tree.nodes.into_inner()
//! }
//!
//! let pool = fanout::Pool::builder().num_threads(2).build()?;
//! assert_eq!(count_nodes(&Sequential), 8191);
//! assert_eq!(count_nodes(&ChannelPool::new(2)?), 8191);
//! assert_eq!(count_nodes(&MutexQueue::new(2, 1)?), 8191);
//! assert_eq!(count_nodes(&WorkStealing(&pool)), 8191);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::crew::Crew;
use crate::engine::ctx::Ctx;
use crate::outcome::panics::reduce_or_resume;
use crate::pool::Pool;
use crate::stats::RunStats;
use crossbeam_channel::{Receiver, Sender};
use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Where a task puts follow-on items.
///
/// Implemented by [`Ctx`] (for [`WorkStealing`]), by `Vec<T>` (a push onto the end,
/// which is handy for testing a [`Workload`] by hand) and by the strategies' own
/// spawners.
///
/// ```
/// use fanout::strategy::Spawner;
///
/// fn children<S: Spawner<u32>>(n: u32, spawner: &mut S) {
///     for child in 0..n {
///         spawner.push(child);
///     }
/// }
///
/// let mut collected = Vec::new();
/// children(3, &mut collected);
/// assert_eq!(collected, [0, 1, 2]);
/// ```
pub trait Spawner<T> {
    /// Adds a follow-on item; the run does not end before it has executed.
    fn push(&mut self, item: T);
}

impl<T> Spawner<T> for Ctx<'_, T> {
    #[inline]
    fn push(&mut self, item: T) {
        Ctx::push(self, item)
    }
}

impl<T> Spawner<T> for Vec<T> {
    #[inline]
    fn push(&mut self, item: T) {
        Vec::push(self, item)
    }
}

/// A workload: items of one type and what to do with each.
///
/// It is a type rather than a closure so that [`execute`](Workload::execute) can be
/// generic over the spawner: each [`Strategy`] runs its own monomorphized copy. The
/// workload is shared by reference between the threads of a run, hence `Sync`; results
/// go into fields with interior mutability (atomics, mutexes).
///
/// ```
/// use fanout::strategy::{Sequential, Spawner, Strategy, Workload};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// /// Collatz: each item is one step towards 1; counts the steps.
/// struct Collatz(AtomicU64);
///
/// impl Workload for Collatz {
///     type Item = u64;
///     fn execute<S: Spawner<u64>>(&self, n: u64, spawner: &mut S) {
///         if n != 1 {
///             self.0.fetch_add(1, Ordering::Relaxed);
///             spawner.push(if n % 2 == 0 { n / 2 } else { 3 * n + 1 });
///         }
///     }
/// }
///
/// let work = Collatz(AtomicU64::new(0));
/// Sequential.run(vec![6, 7], &work);
/// assert_eq!(work.0.into_inner(), 8 + 16);
/// ```
pub trait Workload: Sync {
    /// The items of the workload, seeds and follow-ons alike.
    type Item: Send;

    /// Executes one item; follow-on items go to `spawner`.
    fn execute<S: Spawner<Self::Item>>(&self, item: Self::Item, spawner: &mut S);
}

/// A workload whose items fold into a per-thread accumulator: what a strategy needs to
/// produce a result without a shared atomic per item.
///
/// Each thread of a run starts from [`identity`](FoldWorkload::identity), folds the
/// items it executes into its own accumulator, and the run combines the threads'
/// accumulators with [`reduce`](FoldWorkload::reduce) (in an unspecified grouping, so
/// `reduce` should be associative and commutative with `identity` as its unit). Every
/// [`Workload`] is a `FoldWorkload` with `()` as its accumulator.
///
/// ```
/// use fanout::strategy::{FoldWorkload, MutexQueue, Sequential, Spawner, Strategy};
///
/// /// Sums the depths of the nodes of a complete binary tree.
/// struct DepthSum(u32);
///
/// impl FoldWorkload for DepthSum {
///     type Item = u32;
///     type Acc = u64;
///     fn identity(&self) -> u64 {
///         0
///     }
///     fn execute<S: Spawner<u32>>(&self, depth: u32, sum: &mut u64, spawner: &mut S) {
///         *sum += u64::from(depth);
///         if depth < self.0 {
///             spawner.push(depth + 1);
///             spawner.push(depth + 1);
///         }
///     }
///     fn reduce(&self, a: u64, b: u64) -> u64 {
///         a + b
///     }
/// }
///
/// let expected = Sequential.run_fold(vec![0], &DepthSum(10));
/// assert_eq!(MutexQueue::new(2, 4)?.run_fold(vec![0], &DepthSum(10)), expected);
/// # Ok::<(), fanout::strategy::StrategyError>(())
/// ```
pub trait FoldWorkload: Sync {
    /// The items of the workload, seeds and follow-ons alike.
    type Item: Send;
    /// What each thread accumulates.
    type Acc: Send;

    /// A fresh accumulator, for each thread of a run.
    fn identity(&self) -> Self::Acc;

    /// Executes one item, folding its result into `acc`; follow-on items go to
    /// `spawner`. Unlike the fold closures of [`Pool`], which take the accumulator and
    /// return it, this method updates it in place: it executes an item against its
    /// thread's state (as rayon's `for_each_with` closures do), and the strategies
    /// hold that state across the call, also when the item panics.
    fn execute<S: Spawner<Self::Item>>(&self, item: Self::Item, acc: &mut Self::Acc, spawner: &mut S);

    /// Combines two threads' accumulators.
    fn reduce(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
}

impl<W: Workload> FoldWorkload for W {
    type Item = W::Item;
    type Acc = ();

    #[inline]
    fn identity(&self) {}

    #[inline]
    fn execute<S: Spawner<Self::Item>>(&self, item: Self::Item, _: &mut (), spawner: &mut S) {
        Workload::execute(self, item, spawner)
    }

    #[inline]
    fn reduce(&self, (): (), (): ()) {}
}

/// A way to run a [`Workload`] or a [`FoldWorkload`], follow-ons included, to
/// completion.
///
/// The contract every implementation here keeps: [`run_fold`](Strategy::run_fold)
/// returns once every seed and every follow-on item has executed exactly once. If an
/// `execute` call panics, no new item is started, the items not yet executed are
/// dropped, and the panic is resumed on the caller after every thread of the run has
/// stopped; the strategy can be used again afterwards.
///
/// The trait has generic methods, so it is not object safe; for a list of strategies
/// over one workload type, box them as [`dyn StrategyFor<W>`](StrategyFor).
///
/// ```
/// use fanout::strategy::{MutexQueue, Spawner, Strategy, Workload};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// /// Sums `0..n` by splitting ranges in halves down to single numbers.
/// struct Sum(AtomicU64);
///
/// impl Workload for Sum {
///     type Item = (u64, u64);
///     fn execute<S: Spawner<(u64, u64)>>(&self, (lo, hi): (u64, u64), spawner: &mut S) {
///         if hi - lo == 1 {
///             self.0.fetch_add(lo, Ordering::Relaxed);
///         } else {
///             let mid = lo + (hi - lo) / 2;
///             spawner.push((lo, mid));
///             spawner.push((mid, hi));
///         }
///     }
/// }
///
/// fn sum_below<S: Strategy>(strategy: &S, n: u64) -> u64 {
///     let work = Sum(AtomicU64::new(0));
///     strategy.run(vec![(0, n)], &work);
///     work.0.into_inner()
/// }
///
/// let queue = MutexQueue::new(2, 4)?;
/// assert_eq!(queue.name(), "mutex-queue");
/// assert_eq!(sum_below(&queue, 1000), 499_500);
/// # Ok::<(), fanout::strategy::StrategyError>(())
/// ```
pub trait Strategy {
    /// A short name for reports, such as `"channel"` (the configuration is not included).
    fn name(&self) -> &str;

    /// Executes every seed and every follow-on item, folding them into per-thread
    /// accumulators, and returns their reduction; see the trait docs.
    fn run_fold<W: FoldWorkload>(&self, seeds: Vec<W::Item>, work: &W) -> W::Acc;

    /// [`run_fold`](Strategy::run_fold), with the run's [`RunStats`] where the strategy
    /// keeps them (only [`WorkStealing`] does; the others return `None`).
    fn run_fold_with_stats<W: FoldWorkload>(&self, seeds: Vec<W::Item>, work: &W) -> (W::Acc, Option<RunStats>) {
        (self.run_fold(seeds, work), None)
    }

    /// Executes every seed and every follow-on item of a workload without an
    /// accumulator, then returns; see the trait docs.
    fn run<W: Workload>(&self, seeds: Vec<W::Item>, work: &W) {
        self.run_fold(seeds, work)
    }
}

/// One [`Strategy`] for one workload type, as a trait object: `Vec<Box<dyn
/// StrategyFor<W>>>` holds strategies of different types. Every `Strategy` is one; the
/// per-item path stays monomorphized inside each, only the call per run is dynamic.
///
/// ```
/// use fanout::strategy::{ChannelPool, FoldWorkload, Sequential, Spawner, StrategyFor};
///
/// struct Countdown;
/// impl FoldWorkload for Countdown {
///     type Item = u32;
///     type Acc = u32;
///     fn identity(&self) -> u32 { 0 }
///     fn execute<S: Spawner<u32>>(&self, n: u32, count: &mut u32, spawner: &mut S) {
///         *count += 1;
///         if n > 0 {
///             spawner.push(n - 1);
///         }
///     }
///     fn reduce(&self, a: u32, b: u32) -> u32 { a + b }
/// }
///
/// let strategies: Vec<Box<dyn StrategyFor<Countdown>>> =
///     vec![Box::new(Sequential), Box::new(ChannelPool::new(2)?)];
/// for s in &strategies {
///     assert_eq!(s.run_workload(vec![9], &Countdown), 10, "{}", s.label());
/// }
/// # Ok::<(), fanout::strategy::StrategyError>(())
/// ```
pub trait StrategyFor<W: FoldWorkload> {
    /// [`Strategy::name`] (named apart so that a type with both traits in scope is
    /// not ambiguous).
    fn label(&self) -> &str;
    /// [`Strategy::run_fold`].
    fn run_workload(&self, seeds: Vec<W::Item>, work: &W) -> W::Acc;
    /// [`Strategy::run_fold_with_stats`].
    fn run_workload_with_stats(&self, seeds: Vec<W::Item>, work: &W) -> (W::Acc, Option<RunStats>);
}

impl<S: Strategy, W: FoldWorkload> StrategyFor<W> for S {
    fn label(&self) -> &str {
        self.name()
    }
    fn run_workload(&self, seeds: Vec<W::Item>, work: &W) -> W::Acc {
        self.run_fold(seeds, work)
    }
    fn run_workload_with_stats(&self, seeds: Vec<W::Item>, work: &W) -> (W::Acc, Option<RunStats>) {
        self.run_fold_with_stats(seeds, work)
    }
}

/// Why a strategy could not be configured.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StrategyError {
    /// A thread count of zero was requested.
    ZeroThreads,
    /// A batch size of zero was requested.
    ZeroBatch,
    /// A helper thread could not be started (the OS's reason).
    SpawnFailed(String),
}

impl fmt::Display for StrategyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StrategyError::ZeroThreads => f.write_str("a strategy needs at least one thread"),
            StrategyError::ZeroBatch => f.write_str("a batch must hold at least one item"),
            StrategyError::SpawnFailed(reason) => write!(f, "could not start a strategy's thread: {reason}"),
        }
    }
}

impl std::error::Error for StrategyError {}

// ---------------------------------------------------------------------------------
// Sequential
// ---------------------------------------------------------------------------------

/// The baseline: a LIFO `Vec` stack on the calling thread, no synchronization at all.
///
/// Seeds start in order; follow-ons run depth-first (the last one pushed runs next). A
/// panic unwinds straight out of [`run`](Strategy::run), dropping the items left.
///
/// ```
/// use fanout::strategy::{Sequential, Spawner, Strategy, Workload};
/// use std::sync::Mutex;
///
/// struct Log(Mutex<Vec<u32>>);
/// impl Workload for Log {
///     type Item = u32;
///     fn execute<S: Spawner<u32>>(&self, n: u32, spawner: &mut S) {
///         self.0.lock().unwrap().push(n);
///         if n < 3 {
///             spawner.push(n * 10);
///         }
///     }
/// }
///
/// let log = Log(Mutex::new(Vec::new()));
/// Sequential.run(vec![1, 2, 3], &log);
/// assert_eq!(log.0.into_inner().unwrap(), [1, 10, 2, 20, 3]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Sequential;

impl Strategy for Sequential {
    fn name(&self) -> &str {
        "sequential"
    }

    fn run_fold<W: FoldWorkload>(&self, seeds: Vec<W::Item>, work: &W) -> W::Acc {
        let mut stack = seeds;
        // First seed on top, so that seeds start in order.
        stack.reverse();
        let mut acc = work.identity();
        while let Some(item) = stack.pop() {
            work.execute(item, &mut acc, &mut stack);
        }
        acc
    }
}

// ---------------------------------------------------------------------------------
// Shared by the pooled strategies
// ---------------------------------------------------------------------------------

/// The first panic of a run, and the flag that stops it.
struct Failure {
    stop: AtomicBool,
    payload: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Failure {
    fn new() -> Self {
        Self { stop: AtomicBool::new(false), payload: Mutex::new(None) }
    }

    /// Whether a panic has stopped the run.
    #[inline]
    fn is_stopping(&self) -> bool {
        // Relaxed: a hint to stop starting items; the payload itself is read after the
        // threads are joined, which orders everything.
        self.stop.load(Ordering::Relaxed)
    }

    /// Keeps the first panic and stops the run.
    fn record(&self, payload: Box<dyn Any + Send>) {
        let mut first = self.payload.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(payload);
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Drops items that will not run; a panicking `Drop` is kept like a task's panic.
    fn discard<T>(&self, items: T) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| drop(items))) {
            self.record(payload);
        }
    }

    /// Resumes the recorded panic, if any. Call after every thread has stopped.
    fn resume(self) {
        if let Some(payload) = self.payload.into_inner().unwrap_or_else(PoisonError::into_inner) {
            resume_unwind(payload);
        }
    }
}

/// The threads' accumulators of one run, reduced as they arrive.
struct Accs<A>(Mutex<Option<A>>);

impl<A> Accs<A> {
    fn new() -> Self {
        Self(Mutex::new(None))
    }

    /// Adds one thread's accumulator (once per thread per run, not per item).
    fn add<W: FoldWorkload<Acc = A>>(&self, work: &W, acc: A) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *all = Some(match all.take() {
            None => acc,
            Some(other) => work.reduce(other, acc),
        });
    }

    fn into_result<W: FoldWorkload<Acc = A>>(self, work: &W) -> A {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner).unwrap_or_else(|| work.identity())
    }
}

/// Starts the helper threads of a strategy; a spawn failure becomes a [`StrategyError`].
fn start_crew(threads: usize, name: &str) -> Result<Crew, StrategyError> {
    Crew::new(threads, name).map_err(|e| StrategyError::SpawnFailed(e.to_string()))
}

// ---------------------------------------------------------------------------------
// ChannelPool
// ---------------------------------------------------------------------------------

/// Go style: workers receive items from one unbounded MPMC channel
/// ([`crossbeam_channel`]) and send follow-ons back into it.
///
/// `threads - 1` helper threads are started by [`new`](ChannelPool::new) and park
/// between runs (as a [`Pool`]'s workers do); the calling thread works as the last one.
/// Clones share the threads, which are joined when the last clone is dropped. A run
/// with no seeds wakes no thread.
///
/// Termination: a pending counter starts at the number of seeds, is incremented before
/// each follow-on is sent and decremented after each item has executed. The worker that
/// brings it to zero sends one stop message per thread, so idle workers block in
/// `recv` and never spin. After a panic the same stop messages are sent at once; items
/// received from then on are dropped unexecuted.
///
/// ```
/// use fanout::strategy::{ChannelPool, Sequential, Spawner, Strategy, StrategyError, Workload};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// struct Countdown(AtomicU64);
/// impl Workload for Countdown {
///     type Item = u32;
///     fn execute<S: Spawner<u32>>(&self, n: u32, spawner: &mut S) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         if n > 0 {
///             spawner.push(n - 1);
///         }
///     }
/// }
///
/// let channel = ChannelPool::new(4)?;
/// assert_eq!(channel.threads(), 4);
/// let work = Countdown(AtomicU64::new(0));
/// channel.run(vec![10, 20], &work);
/// assert_eq!(work.0.into_inner(), 11 + 21);
///
/// assert_eq!(ChannelPool::new(0).unwrap_err(), StrategyError::ZeroThreads);
/// # Ok::<(), StrategyError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ChannelPool {
    threads: usize,
    crew: Crew,
}

impl ChannelPool {
    /// A channel pool of `threads` threads (the caller included); fails if it is zero
    /// or if a thread cannot be started.
    pub fn new(threads: usize) -> Result<Self, StrategyError> {
        if threads == 0 {
            return Err(StrategyError::ZeroThreads);
        }
        Ok(Self { threads, crew: start_crew(threads, "fanout-channel")? })
    }

    /// Number of threads that work on a run (the caller included).
    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// What travels on a [`ChannelPool`]'s channel.
enum Msg<T> {
    Item(T),
    Stop,
}

/// Shared by the threads of one [`ChannelPool`] run.
struct ChannelRun<'w, W: FoldWorkload> {
    work: &'w W,
    tx: Sender<Msg<W::Item>>,
    rx: Receiver<Msg<W::Item>>,
    /// Items sent and not yet executed.
    pending: AtomicUsize,
    threads: usize,
    failure: Failure,
    accs: Accs<W::Acc>,
}

/// A [`ChannelPool`] worker's spawner: counts, then sends.
struct ChannelSpawner<'r, 'w, W: FoldWorkload> {
    run: &'r ChannelRun<'w, W>,
}

impl<W: FoldWorkload> Spawner<W::Item> for ChannelSpawner<'_, '_, W> {
    #[inline]
    fn push(&mut self, item: W::Item) {
        // Relaxed: the increment is sequenced before our own item's decrement, and the
        // counter's modification order respects that, so it can never read zero early.
        self.run.pending.fetch_add(1, Ordering::Relaxed);
        self.run.send(Msg::Item(item));
    }
}

impl<W: FoldWorkload> ChannelRun<'_, W> {
    fn send(&self, msg: Msg<W::Item>) {
        // The receiver lives in `self`, so the channel cannot be disconnected here.
        if self.tx.send(msg).is_err() {
            unreachable!("the run owns the receiving end");
        }
    }

    /// Tells every thread to leave the run.
    fn stop_all(&self) {
        for _ in 0..self.threads {
            self.send(Msg::Stop);
        }
    }

    fn worker(&self) {
        let mut spawner = ChannelSpawner { run: self };
        let mut acc = self.work.identity();
        // `recv` cannot fail while `self.tx` is alive; treat it like a stop anyway.
        while let Ok(Msg::Item(item)) = self.rx.recv() {
            if self.failure.is_stopping() {
                self.failure.discard(item);
                continue;
            }
            match catch_unwind(AssertUnwindSafe(|| self.work.execute(item, &mut acc, &mut spawner))) {
                Ok(()) => {
                    // AcqRel: whoever sees zero has seen every item's effects (the
                    // crew's broadcast orders them for the caller anyway).
                    if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                        self.stop_all();
                    }
                }
                Err(payload) => {
                    // The panicking item never decrements, so the counter cannot reach
                    // zero any more: stop everyone explicitly.
                    self.failure.record(payload);
                    self.stop_all();
                }
            }
        }
        self.accs.add(self.work, acc);
    }
}

impl Strategy for ChannelPool {
    fn name(&self) -> &str {
        "channel"
    }

    fn run_fold<W: FoldWorkload>(&self, seeds: Vec<W::Item>, work: &W) -> W::Acc {
        if seeds.is_empty() {
            return work.identity();
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let run = ChannelRun {
            work,
            tx,
            rx,
            pending: AtomicUsize::new(seeds.len()),
            threads: self.threads,
            failure: Failure::new(),
            accs: Accs::new(),
        };
        for seed in seeds {
            run.send(Msg::Item(seed));
        }
        self.crew.broadcast(&|| run.worker());
        let ChannelRun { tx, rx, failure, accs, .. } = run;
        // Follow-ons sent after a panic's stop messages are still queued: drop them
        // (a panicking `Drop` is kept like a task's panic) before resuming the panic.
        failure.discard((tx, rx));
        let acc = accs.into_result(work);
        failure.resume();
        acc
    }
}

// ---------------------------------------------------------------------------------
// MutexQueue
// ---------------------------------------------------------------------------------

/// The Go compiler's design: one `Mutex<Vec<_>>` stack, a `Condvar` for idle workers,
/// and a pending count for termination.
///
/// A worker takes up to `batch` items from the top of the stack under one lock and
/// executes them newest first; `batch == 1` is the Go compiler's exact design.
/// Follow-ons pushed during an item go to a buffer private to the worker (no lock in
/// `push`). After each item that pushed something, the buffer is appended to the shared
/// stack under one lock, and sleeping workers are woken for it; at the end of a batch,
/// the same lock that hands back the buffer and the finished items also takes the next
/// batch, so with `batch == 1` a worker locks once per item.
///
/// The pending count (items pushed and not yet finished, kept under the lock) reaches
/// zero only when the stack and every buffer are empty; the worker that brings it there
/// wakes everyone to leave. Idle workers sleep on the condvar, never spin.
///
/// Like [`ChannelPool`], `threads - 1` helper threads are started by
/// [`new`](MutexQueue::new) and park between runs; the calling thread works as the last
/// one.
///
/// ```
/// use fanout::strategy::{MutexQueue, Spawner, Strategy, StrategyError, Workload};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// struct Fib(AtomicU64);
/// impl Workload for Fib {
///     type Item = u32;
///     // fib(n) as the number of leaves of the call tree.
///     fn execute<S: Spawner<u32>>(&self, n: u32, spawner: &mut S) {
///         if n < 2 {
///             self.0.fetch_add(u64::from(n), Ordering::Relaxed);
///         } else {
///             spawner.push(n - 1);
///             spawner.push(n - 2);
///         }
///     }
/// }
///
/// let go = MutexQueue::new(2, 1)?;
/// let work = Fib(AtomicU64::new(0));
/// go.run(vec![20], &work);
/// assert_eq!(work.0.into_inner(), 6765);
///
/// assert_eq!(MutexQueue::new(2, 0).unwrap_err(), StrategyError::ZeroBatch);
/// # Ok::<(), StrategyError>(())
/// ```
#[derive(Debug, Clone)]
pub struct MutexQueue {
    threads: usize,
    batch: usize,
    crew: Crew,
}

impl MutexQueue {
    /// A mutex queue of `threads` threads (the caller included) taking up to `batch`
    /// items per lock; fails if either is zero (`threads` is checked first) or if a
    /// thread cannot be started.
    pub fn new(threads: usize, batch: usize) -> Result<Self, StrategyError> {
        if threads == 0 {
            return Err(StrategyError::ZeroThreads);
        }
        if batch == 0 {
            return Err(StrategyError::ZeroBatch);
        }
        Ok(Self { threads, batch, crew: start_crew(threads, "fanout-mutex-queue")? })
    }

    /// Number of threads that work on a run (the caller included).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Most items a worker takes per lock.
    pub fn batch(&self) -> usize {
        self.batch
    }
}

/// What a [`MutexQueue`] run keeps under its lock.
struct QueueState<T> {
    stack: Vec<T>,
    /// Items on the stack, taken by a worker, or executing; follow-ons are added when
    /// their buffer is handed back, in the same critical section that counts their
    /// parent as finished.
    pending: usize,
    /// Workers waiting on the condvar.
    sleeping: usize,
    /// The run is over (all done, or a panic): everyone leaves.
    done: bool,
}

/// Shared by the threads of one [`MutexQueue`] run.
struct QueueRun<'w, W: FoldWorkload> {
    work: &'w W,
    batch: usize,
    state: Mutex<QueueState<W::Item>>,
    wake: Condvar,
    failure: Failure,
    accs: Accs<W::Acc>,
}

impl<W: FoldWorkload> QueueRun<'_, W> {
    fn lock(&self) -> MutexGuard<'_, QueueState<W::Item>> {
        // No user code runs under the lock, so poisoning cannot carry a broken state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands back a worker's follow-ons and finished items (under the lock), ends the
    /// run if nothing is pending, and wakes sleepers for the new items. `taking` says
    /// whether the caller takes a batch itself right after.
    fn settle(&self, state: &mut QueueState<W::Item>, spawned: &mut Vec<W::Item>, finished: usize, taking: bool) {
        let added = spawned.len();
        state.pending = state.pending + added - finished;
        state.stack.append(spawned);
        if state.pending == 0 {
            state.done = true;
            self.wake.notify_all();
        } else if added > 0 && state.sleeping > 0 {
            let batches = state.stack.len().div_ceil(self.batch) - usize::from(taking);
            for _ in 0..batches.min(state.sleeping) {
                self.wake.notify_one();
            }
        }
    }

    /// Records a panic and ends the run for everyone.
    fn abort(&self, payload: Box<dyn Any + Send>) {
        self.failure.record(payload);
        self.lock().done = true;
        self.wake.notify_all();
    }

    fn worker(&self) {
        let mut acc = self.work.identity();
        self.work_into(&mut acc);
        self.accs.add(self.work, acc);
    }

    fn work_into(&self, acc: &mut W::Acc) {
        let mut mine: Vec<W::Item> = Vec::with_capacity(self.batch);
        let mut spawned: Vec<W::Item> = Vec::new();
        let mut finished = 0;
        loop {
            {
                let mut state = self.lock();
                self.settle(&mut state, &mut spawned, finished, true);
                finished = 0;
                loop {
                    if state.done {
                        return;
                    }
                    if !state.stack.is_empty() {
                        break;
                    }
                    state.sleeping += 1;
                    state = self.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
                    state.sleeping -= 1;
                }
                let from = state.stack.len().saturating_sub(self.batch);
                mine.extend(state.stack.drain(from..));
            }
            while let Some(item) = mine.pop() {
                if self.failure.is_stopping() {
                    self.failure.discard(item);
                    break;
                }
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.work.execute(item, acc, &mut spawned))) {
                    self.abort(payload);
                    break;
                }
                finished += 1;
                if !spawned.is_empty() && !mine.is_empty() {
                    // Share the follow-ons now rather than after the whole batch.
                    self.settle(&mut self.lock(), &mut spawned, finished, false);
                    finished = 0;
                }
            }
            if self.failure.is_stopping() {
                // A panic ended the run: whoever caught it sets `done` under the lock,
                // so this worker leaves at its next lock or wake-up.
                self.failure.discard(std::mem::take(&mut mine));
                self.failure.discard(std::mem::take(&mut spawned));
            }
        }
    }
}

impl Strategy for MutexQueue {
    fn name(&self) -> &str {
        "mutex-queue"
    }

    fn run_fold<W: FoldWorkload>(&self, seeds: Vec<W::Item>, work: &W) -> W::Acc {
        if seeds.is_empty() {
            return work.identity();
        }
        let mut stack = seeds;
        // First seed on top, so that seeds start in order.
        stack.reverse();
        let run = QueueRun {
            work,
            batch: self.batch,
            state: Mutex::new(QueueState { pending: stack.len(), stack, sleeping: 0, done: false }),
            wake: Condvar::new(),
            failure: Failure::new(),
            accs: Accs::new(),
        };
        self.crew.broadcast(&|| run.worker());
        let QueueRun { state, failure, accs, .. } = run;
        // After a panic, items may be left on the stack: drop them before resuming it.
        failure.discard(state);
        let acc = accs.into_result(work);
        failure.resume();
        acc
    }
}

// ---------------------------------------------------------------------------------
// WorkStealing
// ---------------------------------------------------------------------------------

/// This crate's work-stealing [`Pool`], through [`Pool::run_fold`]; the [`Ctx`] is
/// the spawner, so nothing is boxed or dynamically dispatched.
///
/// The pool's threads are started once and kept between runs. The caller works on its
/// run too: in its own seat when the pool has a worker per core (`n` threads at work),
/// beside the workers otherwise (up to `n + 1`).
///
/// ```
/// use fanout::strategy::{Spawner, Strategy, WorkStealing, Workload};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// struct Squares(AtomicU64);
/// impl Workload for Squares {
///     type Item = u64;
///     fn execute<S: Spawner<u64>>(&self, n: u64, _: &mut S) {
///         self.0.fetch_add(n * n, Ordering::Relaxed);
///     }
/// }
///
/// let pool = fanout::Pool::builder().num_threads(2).build()?;
/// let stealing = WorkStealing(&pool);
/// let work = Squares(AtomicU64::new(0));
/// stealing.run((1..=10).collect(), &work);
/// assert_eq!(work.0.into_inner(), 385);
/// # Ok::<(), fanout::BuildError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct WorkStealing<'p>(pub &'p Pool);

impl Strategy for WorkStealing<'_> {
    fn name(&self) -> &str {
        "work-stealing"
    }

    fn run_fold<W: FoldWorkload>(&self, seeds: Vec<W::Item>, work: &W) -> W::Acc {
        self.run_fold_with_stats(seeds, work).0
    }

    fn run_fold_with_stats<W: FoldWorkload>(&self, seeds: Vec<W::Item>, work: &W) -> (W::Acc, Option<RunStats>) {
        let (accs, stats) =
            self.0.run_fold_in_place(seeds, || work.identity(), |acc, item, ctx| work.execute(item, acc, ctx));
        (reduce_or_resume(accs, || work.identity(), |a, b| work.reduce(a, b)), Some(stats))
    }
}

// ---------------------------------------------------------------------------------
// StaticSplit
// ---------------------------------------------------------------------------------

/// The reference ceiling a user compares a scheduler with: the work dealt out once, up
/// front, to `threads` plain threads spawned for the run, with no scheduling after.
///
/// With fewer seeds than threads, the caller first expands them breadth-first, one
/// level at a time, until there is an item per thread (or nothing is left); it then
/// deals the items round-robin to freshly spawned scoped threads and itself, and each
/// walks its share depth-first with a private `Vec` stack. Thread start-up is part of
/// every run, as it is for a program that splits its work this way. A shape that never
/// widens (a chain) runs on the caller alone, and no thread is spawned for an empty
/// share.
///
/// ```
/// use fanout::strategy::{Sequential, Spawner, StaticSplit, Strategy, FoldWorkload};
///
/// struct Leaves(u32);
/// impl FoldWorkload for Leaves {
///     type Item = u32;
///     type Acc = u64;
///     fn identity(&self) -> u64 { 0 }
///     fn execute<S: Spawner<u32>>(&self, depth: u32, leaves: &mut u64, spawner: &mut S) {
///         if depth == self.0 {
///             *leaves += 1;
///         } else {
///             spawner.push(depth + 1);
///             spawner.push(depth + 1);
///         }
///     }
///     fn reduce(&self, a: u64, b: u64) -> u64 { a + b }
/// }
///
/// let split = StaticSplit::new(2)?;
/// assert_eq!(split.run_fold(vec![0], &Leaves(12)), 4096);
/// # Ok::<(), fanout::strategy::StrategyError>(())
/// ```
#[derive(Debug, Clone)]
pub struct StaticSplit {
    threads: usize,
}

impl StaticSplit {
    /// A static split over `threads` threads (the caller included); fails if it is zero.
    pub fn new(threads: usize) -> Result<Self, StrategyError> {
        if threads == 0 {
            return Err(StrategyError::ZeroThreads);
        }
        Ok(Self { threads })
    }

    /// Number of threads that work on a run (the caller included).
    pub fn threads(&self) -> usize {
        self.threads
    }
}

/// One thread's share of a [`StaticSplit`] run, walked depth-first.
fn walk_share<W: FoldWorkload>(work: &W, mut stack: Vec<W::Item>, acc: &mut W::Acc, failure: &Failure) {
    stack.reverse();
    while let Some(item) = stack.pop() {
        if failure.is_stopping() {
            break;
        }
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| work.execute(item, acc, &mut stack))) {
            failure.record(payload);
            break;
        }
    }
    failure.discard(stack);
}

impl Strategy for StaticSplit {
    fn name(&self) -> &str {
        "static split"
    }

    fn run_fold<W: FoldWorkload>(&self, seeds: Vec<W::Item>, work: &W) -> W::Acc {
        let failure = Failure::new();
        let mut acc = work.identity();
        let mut frontier = seeds;
        while self.threads > 1 && !frontier.is_empty() && frontier.len() < self.threads && !failure.is_stopping() {
            let mut next = Vec::new();
            let mut level = frontier.into_iter();
            for item in level.by_ref() {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| work.execute(item, &mut acc, &mut next))) {
                    failure.record(payload);
                    break;
                }
            }
            failure.discard(level);
            frontier = next;
        }
        let mut shares: Vec<Vec<W::Item>> = (0..self.threads).map(|_| Vec::new()).collect();
        for (i, item) in frontier.into_iter().enumerate() {
            shares[i % self.threads].push(item);
        }
        let accs = Accs::new();
        let mut shares = shares.into_iter();
        let mine = shares.next().unwrap_or_default();
        std::thread::scope(|scope| {
            for share in shares.filter(|share| !share.is_empty()) {
                let (accs, failure) = (&accs, &failure);
                scope.spawn(move || {
                    // `identity` and `reduce` may panic too: keep their payload, which
                    // the scope would replace with its own.
                    let whole = catch_unwind(AssertUnwindSafe(|| {
                        let mut acc = work.identity();
                        walk_share(work, share, &mut acc, failure);
                        accs.add(work, acc);
                    }));
                    if let Err(payload) = whole {
                        failure.record(payload);
                    }
                });
            }
            walk_share(work, mine, &mut acc, &failure);
        });
        let acc = work.reduce(acc, accs.into_result(work));
        failure.resume();
        acc
    }
}

// ---------------------------------------------------------------------------------
// rayon (feature `rayon`)
// ---------------------------------------------------------------------------------

#[cfg(feature = "rayon")]
pub(crate) use with_rayon::rayon_pair;
#[cfg(feature = "rayon")]
pub use with_rayon::{RayonJoin, RayonScope};

#[cfg(feature = "rayon")]
mod with_rayon {
    use super::{Failure, FoldWorkload, Strategy, StrategyError};
    use crossbeam_utils::CachePadded;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::{Arc, Mutex, PoisonError};

    fn build(threads: usize) -> Result<Arc<rayon::ThreadPool>, StrategyError> {
        if threads == 0 {
            return Err(StrategyError::ZeroThreads);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("fanout-rayon-{i}"))
            .build()
            .map_err(|e| StrategyError::SpawnFailed(e.to_string()))?;
        Ok(Arc::new(pool))
    }

    /// Runs one item; its follow-ons come back in `children`. Skips the item once the
    /// run is stopping.
    fn execute_one<W: FoldWorkload>(work: &W, item: W::Item, acc: &mut W::Acc, failure: &Failure) -> Vec<W::Item> {
        let mut children = Vec::new();
        if failure.is_stopping() {
            failure.discard(item);
        } else if let Err(payload) = catch_unwind(AssertUnwindSafe(|| work.execute(item, acc, &mut children))) {
            failure.record(payload);
        }
        children
    }

    /// rayon's `join`, as a rayon user writes a follow-on workload: each task runs,
    /// collects its follow-ons in a `Vec`, and the `Vec` is halved recursively with
    /// `rayon::join`. Accumulators are per task, reduced up the join tree. The rayon
    /// pool of `threads` threads is built by [`new`](RayonJoin::new) and kept; the
    /// caller waits in `install` (it does not work on the run).
    ///
    /// ```
    /// use fanout::strategy::{RayonJoin, Sequential, Spawner, Strategy, FoldWorkload};
    ///
    /// struct Nodes(u32);
    /// impl FoldWorkload for Nodes {
    ///     type Item = u32;
    ///     type Acc = u64;
    ///     fn identity(&self) -> u64 { 0 }
    ///     fn execute<S: Spawner<u32>>(&self, depth: u32, n: &mut u64, spawner: &mut S) {
    ///         *n += 1;
    ///         if depth < self.0 {
    ///             spawner.push(depth + 1);
    ///             spawner.push(depth + 1);
    ///         }
    ///     }
    ///     fn reduce(&self, a: u64, b: u64) -> u64 { a + b }
    /// }
    ///
    /// assert_eq!(RayonJoin::new(2)?.run_fold(vec![0, 0], &Nodes(9)), 2 * 1023);
    /// # Ok::<(), fanout::strategy::StrategyError>(())
    /// ```
    #[derive(Debug, Clone)]
    pub struct RayonJoin {
        pool: Arc<rayon::ThreadPool>,
    }

    impl RayonJoin {
        /// A rayon pool of `threads` threads; fails if it is zero or cannot be built.
        pub fn new(threads: usize) -> Result<Self, StrategyError> {
            Ok(Self { pool: build(threads)? })
        }
    }

    /// Both rayon strategies on one rayon pool (for `compare`).
    pub(crate) fn rayon_pair(threads: usize) -> Result<(RayonJoin, RayonScope), StrategyError> {
        let pool = build(threads)?;
        Ok((RayonJoin { pool: Arc::clone(&pool) }, RayonScope { pool }))
    }

    impl RayonJoin {
        /// The rayon pool it runs on.
        pub fn thread_pool(&self) -> &rayon::ThreadPool {
            &self.pool
        }
    }

    fn join_walk<W: FoldWorkload>(work: &W, mut items: Vec<W::Item>, failure: &Failure) -> W::Acc {
        if items.len() > 1 {
            let right = items.split_off(items.len() / 2);
            let (a, b) = rayon::join(|| join_walk(work, items, failure), || join_walk(work, right, failure));
            return work.reduce(a, b);
        }
        let mut acc = work.identity();
        // A run of single follow-ons (a chain) loops here: recursing per item would
        // overflow the stack on a long chain.
        let mut next = items.pop();
        while let Some(item) = next.take() {
            let mut children = execute_one(work, item, &mut acc, failure);
            if children.len() == 1 {
                next = children.pop();
            } else if !children.is_empty() {
                let below = join_walk(work, children, failure);
                acc = work.reduce(acc, below);
            }
        }
        acc
    }

    impl Strategy for RayonJoin {
        fn name(&self) -> &str {
            "rayon join"
        }

        fn run_fold<W: FoldWorkload>(&self, seeds: Vec<W::Item>, work: &W) -> W::Acc {
            let failure = Failure::new();
            let acc = self.pool.install(|| join_walk(work, seeds, &failure));
            failure.resume();
            acc
        }
    }

    /// rayon's `scope`: every follow-on is a `scope.spawn`. Each rayon thread folds
    /// into its own slot (a mutex no other thread takes, once per task). The rayon
    /// pool of `threads` threads is built by [`new`](RayonScope::new) and kept.
    ///
    /// ```
    /// use fanout::strategy::{RayonScope, Spawner, Strategy, FoldWorkload};
    ///
    /// struct Countdown;
    /// impl FoldWorkload for Countdown {
    ///     type Item = u32;
    ///     type Acc = u32;
    ///     fn identity(&self) -> u32 { 0 }
    ///     fn execute<S: Spawner<u32>>(&self, n: u32, count: &mut u32, spawner: &mut S) {
    ///         *count += 1;
    ///         if n > 0 {
    ///             spawner.push(n - 1);
    ///         }
    ///     }
    ///     fn reduce(&self, a: u32, b: u32) -> u32 { a + b }
    /// }
    ///
    /// assert_eq!(RayonScope::new(2)?.run_fold(vec![99, 9], &Countdown), 110);
    /// # Ok::<(), fanout::strategy::StrategyError>(())
    /// ```
    #[derive(Debug, Clone)]
    pub struct RayonScope {
        pool: Arc<rayon::ThreadPool>,
    }

    impl RayonScope {
        /// A rayon pool of `threads` threads; fails if it is zero or cannot be built.
        pub fn new(threads: usize) -> Result<Self, StrategyError> {
            Ok(Self { pool: build(threads)? })
        }
    }

    type Slots<A> = [CachePadded<Mutex<Option<A>>>];

    fn scope_task<'s, W: FoldWorkload>(
        scope: &rayon::Scope<'s>,
        item: W::Item,
        work: &'s W,
        slots: &'s Slots<W::Acc>,
        failure: &'s Failure,
    ) {
        scope.spawn(move |scope| {
            let mut acc = work.identity();
            let children = execute_one(work, item, &mut acc, failure);
            let slot = &slots[rayon::current_thread_index().unwrap_or(0) % slots.len()];
            let mut mine = slot.lock().unwrap_or_else(PoisonError::into_inner);
            *mine = Some(match mine.take() {
                None => acc,
                Some(before) => work.reduce(before, acc),
            });
            drop(mine);
            for child in children {
                scope_task(scope, child, work, slots, failure);
            }
        });
    }

    impl Strategy for RayonScope {
        fn name(&self) -> &str {
            "rayon scope"
        }

        fn run_fold<W: FoldWorkload>(&self, seeds: Vec<W::Item>, work: &W) -> W::Acc {
            let failure = Failure::new();
            let slots: Vec<CachePadded<Mutex<Option<W::Acc>>>> =
                (0..self.pool.current_num_threads()).map(|_| CachePadded::new(Mutex::new(None))).collect();
            self.pool.install(|| {
                rayon::scope(|scope| {
                    for seed in seeds {
                        scope_task(scope, seed, work, &slots, &failure);
                    }
                })
            });
            let acc = slots
                .into_iter()
                .filter_map(|slot| CachePadded::into_inner(slot).into_inner().unwrap_or_else(PoisonError::into_inner))
                .fold(work.identity(), |a, b| work.reduce(a, b));
            failure.resume();
            acc
        }
    }
}
