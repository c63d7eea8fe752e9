//! Compare scheduling designs on your own workload: a sequential loop, a Go-style
//! channel pool, the Go compiler's mutex queue, a static split and this crate's work
//! stealing, timed the way a program meets them.
//!
//! A [`Compare`] holds every pooled strategy's threads, started once (outside the
//! timing) and parked between runs; the static split spawns its threads in every run,
//! as a program that splits its work that way does. It turns a workload into a [`Group`] of variants
//! ([`Compare::follow_on`] for work that pushes follow-on items, [`Compare::flat`] for
//! a range folded into a result; [`Group::variant`] adds any code of your own), then
//! [`measure`](Compare::measure)s the group:
//!
//! - every variant in every [`PoolState`] — *parked* (idle for a while, nothing warmed),
//!   *after others* (right after other threads ran), *hot* (right after an untimed run
//!   of the same variant) — interleaved round by round, in a new shuffled order each
//!   round, so that a noisy machine shifts all variants alike;
//! - the median of the rounds for each cell, with the rounds' spread, ns per item, the
//!   speedup over the group's first variant (the baseline) in the same state, and a
//!   rank;
//! - every result compared with the baseline's: a variant that returns something else
//!   is marked wrong in the report and left out of the ranks, never averaged in;
//! - optionally a time [budget](Group::budget), so that one strategy a hundred times
//!   slower than the rest does fewer rounds instead of setting the comparison's length.
//!
//! A [`Report`] prints as a table ([`Display`](std::fmt::Display)), and writes JSON
//! lines ([`Report::to_json`]), CSV ([`Report::to_csv`]) and, with the `svg` feature, a
//! chart (`Report::write_svg`). [`Compare::sweep`] finds, for a workload whose
//! per-item cost is a parameter, the cost at which each strategy comes within 90% of
//! work stealing on this machine ([`Sweep`]).
//!
//! ```
//! use fanout::compare::{Compare, PoolState};
//! use fanout::strategy::{FoldWorkload, Spawner};
//!
//! /// A binary tree of the given depth; counts its nodes.
//! struct Tree(u32);
//!
//! impl FoldWorkload for Tree {
//!     type Item = u32;
//!     type Acc = u64;
//!     fn identity(&self) -> u64 { 0 }
//!     fn execute<S: Spawner<u32>>(&self, depth: u32, nodes: &mut u64, spawner: &mut S) {
//!         *nodes += 1;
//!         if depth < self.0 {
//!             spawner.push(depth + 1);
//!             spawner.push(depth + 1);
//!         }
//!     }
//!     fn reduce(&self, a: u64, b: u64) -> u64 { a + b }
//! }
//!
//! let cmp = Compare::builder().threads(2).rounds(3).states(&[PoolState::Hot]).build()?;
//! let tree = Tree(12);
//! let mut report = cmp.report("my workloads");
//! report.push(cmp.measure(cmp.follow_on("tree", "binary tree, depth 12", || vec![0], &tree)));
//! report.push(cmp.measure(cmp.flat("squares", "sum of squares", 0..100_000, 1000, || 0u64, |a, i| a + (i * i) as u64, |a, b| a + b)));
//! assert!(report.wrong_results().is_empty());
//! assert!(report.cell("tree", "static split", PoolState::Hot).is_some());
//! println!("{report}");
//! # Ok::<(), fanout::compare::CompareError>(())
//! ```

mod report;
#[cfg(feature = "svg")]
mod svg;
mod sweep;

pub use report::{Cell, Report, Row, Table};
pub use sweep::{Crossing, Sweep};

use crate::pool::BuildError;
use crate::pool::Pool;
use crate::stats::RunStats;
use crate::strategy::{
    ChannelPool, FoldWorkload, MutexQueue, Sequential, Spawner, StaticSplit, Strategy, StrategyError, StrategyFor,
};
use std::fmt;
use std::io::Write;
use std::ops::Range;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The state of the machine right before a timed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PoolState {
    /// After the builder's park time of idleness, nothing warmed: a program's runs
    /// between phases or files.
    Parked,
    /// Right after other threads ran (by default `threads` freshly spawned threads
    /// spinning for about 50 us; see [`CompareBuilder::after_others`]).
    AfterOthers,
    /// Right after an untimed run of the same variant: back-to-back runs.
    Hot,
}

impl PoolState {
    /// Every state, headline first.
    pub const ALL: [PoolState; 3] = [PoolState::Parked, PoolState::AfterOthers, PoolState::Hot];

    /// The state's name in reports: `parked`, `after others`, `hot`.
    pub fn name(self) -> &'static str {
        match self {
            PoolState::Parked => "parked",
            PoolState::AfterOthers => "after others",
            PoolState::Hot => "hot",
        }
    }
}

impl fmt::Display for PoolState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a [`Compare`] could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum CompareError {
    /// `threads(0)`.
    ZeroThreads,
    /// `rounds(0)`.
    ZeroRounds,
    /// `states(&[])`.
    NoStates,
    /// The work-stealing pool could not be built (the error is the source).
    Pool(BuildError),
    /// A comparison strategy could not be built (the error is the source).
    Strategy(StrategyError),
}

impl fmt::Display for CompareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompareError::ZeroThreads => f.write_str("a comparison needs at least one thread"),
            CompareError::ZeroRounds => f.write_str("a comparison needs at least one round"),
            CompareError::NoStates => f.write_str("a comparison needs at least one pool state"),
            CompareError::Pool(_) => f.write_str("could not build the work-stealing pool"),
            CompareError::Strategy(_) => f.write_str("could not build a comparison strategy"),
        }
    }
}

impl std::error::Error for CompareError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CompareError::Pool(e) => Some(e),
            CompareError::Strategy(e) => Some(e),
            _ => None,
        }
    }
}

type OthersHook = Box<dyn Fn(&str, &Pool) + Send + Sync>;

/// Configures a [`Compare`]; see [`Compare::builder`].
pub struct CompareBuilder {
    threads: Option<usize>,
    rounds: usize,
    states: Vec<PoolState>,
    park: Duration,
    progress: bool,
    others: Option<OthersHook>,
    pool: Option<Pool>,
    budget: Option<Duration>,
}

impl fmt::Debug for CompareBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompareBuilder")
            .field("threads", &self.threads)
            .field("rounds", &self.rounds)
            .field("states", &self.states)
            .field("park", &self.park)
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

impl CompareBuilder {
    /// Threads per strategy, the caller included (default: the available parallelism).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Timed rounds per group (default 11); each round times every variant in every
    /// state once. [`Group::rounds`] overrides it for one group.
    pub fn rounds(mut self, rounds: usize) -> Self {
        self.rounds = rounds;
        self
    }

    /// The pool states to time, in report order (default [`PoolState::ALL`]); the
    /// first is the headline, the one ranks and [`Compare::sweep`] use.
    pub fn states(mut self, states: &[PoolState]) -> Self {
        self.states = states.to_vec();
        self
    }

    /// How long everything idles before a [`PoolState::Parked`] run (default 10 ms,
    /// well past every runtime's spinning).
    pub fn park_time(mut self, park: Duration) -> Self {
        self.park = park;
        self
    }

    /// The time a group should take (default: no limit). Variants other than the
    /// baseline that cannot do every round within it do fewer, at least one; see
    /// [`Group::budget`].
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Prints a progress bar on stderr while measuring (default off).
    pub fn progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// What runs right before an [`PoolState::AfterOthers`] run, given the variant's
    /// name and the comparison's pool: for example a short run of another runtime than
    /// the variant's own.
    pub fn after_others(mut self, hook: impl Fn(&str, &Pool) + Send + Sync + 'static) -> Self {
        self.others = Some(Box::new(hook));
        self
    }

    /// The work-stealing pool to compare (default: one whose runs use `threads`
    /// threads, the caller included, with default settings).
    pub fn pool(mut self, pool: Pool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Starts every pooled strategy's threads.
    pub fn build(self) -> Result<Compare, CompareError> {
        let threads = self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads == 0 {
            return Err(CompareError::ZeroThreads);
        }
        if self.rounds == 0 {
            return Err(CompareError::ZeroRounds);
        }
        if self.states.is_empty() {
            return Err(CompareError::NoStates);
        }
        let pool = match self.pool {
            Some(pool) => pool,
            None => {
                // `threads` threads at work, as for every other strategy: a pool with a
                // worker per core seats its caller in a worker's place; a smaller one
                // has its caller work beside the workers, so it gets one worker fewer.
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let workers = if threads >= cores { threads } else { threads - 1 };
                let builder = Pool::builder();
                let builder = if workers == 0 { builder.inline(true) } else { builder.num_threads(workers) };
                builder.build().map_err(CompareError::Pool)?
            }
        };
        Ok(Compare {
            threads,
            rounds: self.rounds,
            states: self.states,
            park: self.park,
            progress: self.progress,
            others: self.others,
            budget: self.budget,
            channel: ChannelPool::new(threads).map_err(CompareError::Strategy)?,
            mutex: MutexQueue::new(threads, 1).map_err(CompareError::Strategy)?,
            mutex_batch: MutexQueue::new(threads, Compare::MUTEX_BATCH).map_err(CompareError::Strategy)?,
            split: StaticSplit::new(threads).map_err(CompareError::Strategy)?,
            #[cfg(feature = "rayon")]
            rayon: crate::strategy::rayon_pair(threads).map_err(CompareError::Strategy)?,
            pool,
        })
    }
}

/// The strategies of a comparison, with their threads, and how to time them; see the
/// [module docs](self).
pub struct Compare {
    threads: usize,
    rounds: usize,
    states: Vec<PoolState>,
    park: Duration,
    progress: bool,
    others: Option<OthersHook>,
    budget: Option<Duration>,
    pool: Pool,
    channel: ChannelPool,
    mutex: MutexQueue,
    mutex_batch: MutexQueue,
    split: StaticSplit,
    #[cfg(feature = "rayon")]
    rayon: (crate::strategy::RayonJoin, crate::strategy::RayonScope),
}

impl fmt::Debug for Compare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compare")
            .field("threads", &self.threads)
            .field("rounds", &self.rounds)
            .field("states", &self.states)
            .finish_non_exhaustive()
    }
}

/// One variant of a [`Group`]: a name and the code it times.
struct Variant<'a, R> {
    name: String,
    run: Box<dyn FnMut() -> (R, Option<RunStats>) + 'a>,
}

/// The variants of one workload, measured together by [`Compare::measure`]. The first
/// variant is the baseline: speedups are over it, and every other variant's result
/// must equal its result.
///
/// ```
/// use fanout::compare::{Compare, Group, PoolState};
///
/// let cmp = Compare::builder().threads(2).rounds(3).states(&[PoolState::Hot]).build()?;
/// let n = 1_000_000u64;
/// let group = Group::new("sum", "sum of 0..n", n)
///     .variant("sequential", move || (0..n).sum::<u64>())
///     .variant("closed form", move || n * (n - 1) / 2)
///     .variant("off by one", move || (0..=n).sum::<u64>());
/// let table = cmp.measure(group);
/// assert!(table.row("closed form").unwrap().wrong.is_none());
/// assert!(table.row("off by one").unwrap().wrong.is_some());
/// # Ok::<(), fanout::compare::CompareError>(())
/// ```
pub struct Group<'a, R> {
    id: String,
    title: String,
    items: u64,
    rounds: Option<usize>,
    budget: Option<Duration>,
    variants: Vec<Variant<'a, R>>,
}

impl<R> fmt::Debug for Group<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.variants.iter().map(|v| v.name.as_str()).collect();
        f.debug_struct("Group").field("id", &self.id).field("items", &self.items).field("variants", &names).finish()
    }
}

impl<'a, R> Group<'a, R> {
    /// An empty group: a short id (`"W1"`), a title for the report, and the number of
    /// items a run handles (for ns per item).
    pub fn new(id: impl Into<String>, title: impl Into<String>, items: u64) -> Self {
        Self { id: id.into(), title: title.into(), items, rounds: None, budget: None, variants: Vec::new() }
    }

    /// Adds a variant: code that runs the whole workload once and returns its result.
    pub fn variant(self, name: impl Into<String>, mut run: impl FnMut() -> R + 'a) -> Self {
        self.variant_with_stats(name, move || (run(), None))
    }

    /// Adds a variant that also reports its run's [`RunStats`].
    pub fn variant_with_stats(
        mut self,
        name: impl Into<String>,
        run: impl FnMut() -> (R, Option<RunStats>) + 'a,
    ) -> Self {
        self.variants.push(Variant { name: name.into(), run: Box::new(run) });
        self
    }

    /// Runs this group for `rounds` rounds (at least one) instead of the comparison's
    /// default.
    pub fn rounds(mut self, rounds: usize) -> Self {
        self.rounds = Some(rounds.max(1));
        self
    }

    /// Caps the time this group takes (instead of the comparison's
    /// [`budget`](CompareBuilder::budget)), so that a strategy that is far slower than
    /// the others does not set the length of the whole comparison.
    ///
    /// The untimed first run of each variant gives its cost. The first variant, the
    /// baseline of every speedup, always does every round; what is left of the budget
    /// is shared out among the others from the cheapest up: each takes as many rounds
    /// as fit its equal share of what is left (every round, if it can), and what a
    /// cheap variant does not use passes to the dearer ones. A variant does at least
    /// one round; [`Cell::rounds`] says how many it did, and the text table marks the
    /// rows with fewer. The slow rounds come first, interleaved with the others as
    /// usual.
    ///
    /// ```
    /// use fanout::compare::{Compare, Group, PoolState};
    /// use std::time::Duration;
    ///
    /// let cmp = Compare::builder().threads(1).rounds(5).states(&[PoolState::Hot]).build()?;
    /// let group = Group::new("W", "cheap against dear", 1)
    ///     .budget(Duration::from_millis(60))
    ///     .variant("cheap", || 1)
    ///     .variant("dear", || {
    ///         std::thread::sleep(Duration::from_millis(20));
    ///         1
    ///     });
    /// let table = cmp.measure(group);
    /// assert_eq!(table.row("cheap").unwrap().cells[0].rounds, 5);
    /// assert!(table.row("dear").unwrap().cells[0].rounds < 5);
    /// # Ok::<(), fanout::compare::CompareError>(())
    /// ```
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Adds a variant that runs `seeds()` through `strategy` (seeds are made inside the
    /// timing, for every strategy alike).
    pub fn strategy<W, S>(
        self,
        name: impl Into<String>,
        strategy: &'a S,
        seeds: impl Fn() -> Vec<W::Item> + 'a,
        work: &'a W,
    ) -> Self
    where
        W: FoldWorkload<Acc = R>,
        S: Strategy,
    {
        self.variant_with_stats(name, move || Strategy::run_fold_with_stats(strategy, seeds(), work))
    }
}

/// Counts the items a [`FoldWorkload`] executes (for [`Compare::follow_on`]).
struct Counting<'w, W>(&'w W);

impl<W: FoldWorkload> FoldWorkload for Counting<'_, W> {
    type Item = W::Item;
    type Acc = u64;
    fn identity(&self) -> u64 {
        0
    }
    fn execute<S: Spawner<W::Item>>(&self, item: W::Item, count: &mut u64, spawner: &mut S) {
        *count += 1;
        let mut scratch = self.0.identity();
        self.0.execute(item, &mut scratch, spawner);
    }
    fn reduce(&self, a: u64, b: u64) -> u64 {
        a + b
    }
}

/// A range folded chunk by chunk, as a follow-on workload without follow-ons (for
/// [`Compare::flat`]'s strategy rows).
struct RangeFold<Id, F, Red> {
    identity: Id,
    fold: F,
    reduce: Red,
}

impl<A, Id, F, Red> FoldWorkload for RangeFold<Id, F, Red>
where
    A: Send,
    Id: Fn() -> A + Sync,
    F: Fn(A, usize) -> A + Sync,
    Red: Fn(A, A) -> A + Sync,
{
    type Item = Range<usize>;
    type Acc = A;
    fn identity(&self) -> A {
        (self.identity)()
    }
    fn execute<S: Spawner<Range<usize>>>(&self, range: Range<usize>, acc: &mut A, _: &mut S) {
        let start = std::mem::replace(acc, (self.identity)());
        *acc = range.fold(start, &self.fold);
    }
    fn reduce(&self, a: A, b: A) -> A {
        (self.reduce)(a, b)
    }
}

/// `range` cut into pieces of `chunk` indices.
fn chunks(range: Range<usize>, chunk: usize) -> Vec<Range<usize>> {
    let chunk = chunk.max(1);
    (range.start..range.end).step_by(chunk).map(|s| s..s.saturating_add(chunk).min(range.end)).collect()
}

impl Compare {
    /// Items the `mutex-queue/16` row takes per lock.
    pub const MUTEX_BATCH: usize = 16;

    /// A builder with the defaults: threads = available parallelism, 11 rounds, every
    /// [`PoolState`], 10 ms park time, no progress bar.
    ///
    /// ```
    /// use fanout::compare::{Compare, CompareError};
    ///
    /// assert!(matches!(Compare::builder().threads(0).build(), Err(CompareError::ZeroThreads)));
    /// assert!(matches!(Compare::builder().rounds(0).build(), Err(CompareError::ZeroRounds)));
    /// assert!(matches!(Compare::builder().states(&[]).build(), Err(CompareError::NoStates)));
    /// ```
    pub fn builder() -> CompareBuilder {
        CompareBuilder {
            threads: None,
            rounds: 11,
            states: PoolState::ALL.to_vec(),
            park: Duration::from_millis(10),
            progress: false,
            others: None,
            pool: None,
            budget: None,
        }
    }

    /// Threads per strategy, the caller included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The pool states timed, headline first.
    pub fn states(&self) -> &[PoolState] {
        &self.states
    }

    /// The work-stealing pool (for variants of your own).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The channel pool strategy.
    pub fn channel(&self) -> &ChannelPool {
        &self.channel
    }

    /// The mutex queue taking one item per lock (the Go compiler's design).
    pub fn mutex_queue(&self) -> &MutexQueue {
        &self.mutex
    }

    /// The mutex queue taking [`MUTEX_BATCH`](Compare::MUTEX_BATCH) items per lock.
    pub fn mutex_queue_batched(&self) -> &MutexQueue {
        &self.mutex_batch
    }

    /// The static split (threads spawned per run).
    pub fn static_split(&self) -> &StaticSplit {
        &self.split
    }

    /// An empty report headed with `title`, this machine and this configuration.
    pub fn report(&self, title: impl Into<String>) -> Report {
        Report::new(
            title.into(),
            self.threads,
            self.pool.pinned_workers(),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )
    }

    /// A follow-on workload through every strategy: `sequential` (the baseline),
    /// `fanout` (work stealing, with its [`RunStats`]), `channel`, `mutex-queue`,
    /// `mutex-queue/16` and `static split`, and with the `rayon` feature `rayon join`
    /// and `rayon scope` (`strategy::RayonJoin`, `strategy::RayonScope`). `seeds` makes a
    /// run's seeds (inside the timing, for every strategy alike); the item count is
    /// taken from an untimed sequential run (which also runs the workload's side
    /// effects once more).
    pub fn follow_on<'a, W>(
        &'a self,
        id: impl Into<String>,
        title: impl Into<String>,
        seeds: impl Fn() -> Vec<W::Item> + Copy + 'a,
        work: &'a W,
    ) -> Group<'a, W::Acc>
    where
        W: FoldWorkload,
    {
        let items = Strategy::run_fold(&Sequential, seeds(), &Counting(work));
        let group = Group::new(id, title, items)
            .strategy("sequential", &Sequential, seeds, work)
            .variant_with_stats("fanout", move || {
                Strategy::run_fold_with_stats(&crate::strategy::WorkStealing(&self.pool), seeds(), work)
            })
            .strategy("channel", &self.channel, seeds, work)
            .strategy("mutex-queue", &self.mutex, seeds, work)
            .strategy("mutex-queue/16", &self.mutex_batch, seeds, work)
            .strategy("static split", &self.split, seeds, work);
        #[cfg(feature = "rayon")]
        let group = group.strategy("rayon join", &self.rayon.0, seeds, work).strategy(
            "rayon scope",
            &self.rayon.1,
            seeds,
            work,
        );
        group
    }

    /// A flat workload, `range` folded into a result, through every strategy: a
    /// `sequential` fold (the baseline), `fanout` ([`Pool::fold_index`]), `static split`
    /// (the range in equal shares on threads spawned per run), and `channel`,
    /// `mutex-queue` and `mutex-queue/16` receiving items of `chunk` indices (1 = one
    /// message per index; a Go programmer would batch fine items), and with the `rayon`
    /// feature `rayon` (`into_par_iter().fold(..).reduce(..)`).
    #[allow(clippy::too_many_arguments)]
    pub fn flat<'a, A, Id, F, Red>(
        &'a self,
        id: impl Into<String>,
        title: impl Into<String>,
        range: Range<usize>,
        chunk: usize,
        identity: Id,
        fold: F,
        reduce: Red,
    ) -> Group<'a, A>
    where
        A: Send + 'a,
        Id: Fn() -> A + Sync + 'a,
        F: Fn(A, usize) -> A + Sync + 'a,
        Red: Fn(A, A) -> A + Sync + 'a,
    {
        let items = range.len() as u64;
        // Shared by the variants' closures, which the group owns.
        let work = Rc::new(RangeFold { identity, fold, reduce });
        let shares = (self.threads * 8).max(1);
        let share = range.len().div_ceil(shares).max(1);
        let on = |strategy: &'a dyn StrategyFor<RangeFold<Id, F, Red>>, chunk: usize| {
            let (work, range) = (Rc::clone(&work), range.clone());
            move || strategy.run_workload_with_stats(chunks(range.clone(), chunk), &work)
        };
        let group = Group::new(id, title, items)
            .variant_with_stats("channel", on(&self.channel, chunk))
            .variant_with_stats("mutex-queue", on(&self.mutex, chunk))
            .variant_with_stats("mutex-queue/16", on(&self.mutex_batch, chunk))
            .variant_with_stats("static split", on(&self.split, share));
        let (w1, r1) = (Rc::clone(&work), range.clone());
        #[cfg(feature = "rayon")]
        let (w2_for_rayon, r_for_rayon) = (Rc::clone(&work), range.clone());
        let (w2, r2) = (work, range);
        let mut group = group
            .variant("sequential", move || r1.clone().fold((w1.identity)(), &w1.fold))
            .variant("fanout", move || self.pool.fold_index(r2.clone(), &w2.identity, &w2.fold, &w2.reduce));
        // The sequential fold is the baseline, so it goes first; then fanout.
        let tail = group.variants.split_off(4);
        group.variants.splice(0..0, tail);
        #[cfg(feature = "rayon")]
        let group = {
            use rayon::prelude::*;
            let (w, r, rayon) = (Rc::clone(&w2_for_rayon), r_for_rayon, self.rayon.0.thread_pool());
            group.variant("rayon", move || {
                let w = &*w;
                rayon.install(|| r.clone().into_par_iter().fold(&w.identity, &w.fold).reduce(&w.identity, &w.reduce))
            })
        };
        group
    }

    /// What runs before an [`PoolState::AfterOthers`] run of `variant`.
    fn run_others(&self, variant: &str) {
        if let Some(hook) = &self.others {
            hook(variant, &self.pool);
            return;
        }
        std::thread::scope(|scope| {
            for _ in 0..self.threads {
                scope.spawn(|| {
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_micros(50) {
                        std::hint::spin_loop();
                    }
                });
            }
        });
    }

    /// Times every variant of `group` in every state; see the [module docs](self).
    ///
    /// Results are compared through `R`: for a [`crate::strategy::Workload`] (whose
    /// accumulator is `()`) there is nothing to compare, so write a [`FoldWorkload`]
    /// to have its results checked. Folds over floating point may differ between
    /// strategies by rounding alone, and are then reported wrong. A group with no
    /// variant gives an empty table.
    pub fn measure<R: PartialEq + fmt::Debug>(&self, mut group: Group<'_, R>) -> Table {
        let states = self.states.clone();
        if group.variants.is_empty() {
            return Table::from_samples(
                group.id,
                group.title,
                group.items,
                0,
                &states,
                Vec::new(),
                &[],
                Vec::new(),
                Vec::new(),
                Vec::new(),
            );
        }
        let rounds = group.rounds.unwrap_or(self.rounds);
        let n = group.variants.len();
        let runs: Vec<(usize, PoolState)> = states.iter().flat_map(|&state| (0..n).map(move |v| (v, state))).collect();
        let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); runs.len()];
        let mut wrong: Vec<Option<String>> = vec![None; n];
        let mut stats: Vec<Option<RunStats>> = vec![None; n];
        // An untimed round first, which also takes the reference result.
        let mut reference: Option<R> = None;
        let mut cost_ns = vec![0.0; n];
        for (i, v) in group.variants.iter_mut().enumerate() {
            let start = Instant::now();
            let (result, _) = (v.run)();
            cost_ns[i] = start.elapsed().as_nanos() as f64;
            match &reference {
                None => reference = Some(result),
                Some(r) => check(r, &result, &mut wrong[i]),
            }
        }
        let rounds_of = match group.budget.or(self.budget) {
            None => vec![rounds; n],
            Some(budget) => {
                // A round of a variant: one run per state, a second one in the hot
                // state, and the idle time before a parked run.
                let per_round: Vec<f64> = cost_ns
                    .iter()
                    .map(|&c| {
                        states
                            .iter()
                            .map(|s| match s {
                                PoolState::Hot => 2.0 * c,
                                PoolState::Parked => c + self.park.as_nanos() as f64,
                                PoolState::AfterOthers => c,
                            })
                            .sum::<f64>()
                            .max(1.0)
                    })
                    .collect();
                let left = budget.as_nanos() as f64 - rounds as f64 * per_round[0];
                let mut of = share_rounds(&per_round[1..], left, rounds);
                of.insert(0, rounds);
                of
            }
        };
        let mut order: Vec<usize> = (0..runs.len()).collect();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for round in 0..rounds {
            // A new order every round (a seeded shuffle), so that no variant always
            // follows the same one.
            for k in (1..order.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                order.swap(k, (seed % (k as u64 + 1)) as usize);
            }
            for &r in &order {
                let (i, state) = runs[r];
                if round >= rounds_of[i] {
                    continue;
                }
                let v = &mut group.variants[i];
                match state {
                    PoolState::Parked => std::thread::sleep(self.park),
                    PoolState::AfterOthers => self.run_others(&v.name),
                    PoolState::Hot => {
                        let (result, _) = (v.run)();
                        if let Some(r) = &reference {
                            check(r, &result, &mut wrong[i]);
                        }
                    }
                }
                let start = Instant::now();
                let (result, run_stats) = (v.run)();
                samples[r].push(start.elapsed().as_nanos() as f64);
                if let Some(r) = &reference {
                    check(r, &result, &mut wrong[i]);
                }
                if run_stats.is_some() {
                    stats[i] = run_stats;
                }
            }
            if self.progress {
                let width = 30;
                let filled = width * (round + 1) / rounds;
                eprint!(
                    "\r{:<8} [{}{}] {}/{} rounds",
                    group.id,
                    "#".repeat(filled),
                    " ".repeat(width - filled),
                    round + 1,
                    rounds
                );
                if round + 1 == rounds {
                    eprintln!();
                }
                let _ = std::io::stderr().flush();
            }
        }
        Table::from_samples(
            group.id,
            group.title,
            group.items,
            rounds,
            &states,
            group.variants.into_iter().map(|v| v.name).collect(),
            &runs,
            samples,
            wrong,
            stats,
        )
    }

    /// For a workload whose per-item cost is a parameter, measures the group
    /// `group_for(cost)` at each cost (in ns per item, ascending) in the headline state,
    /// and finds where each variant comes within a fraction of `reference`'s speed.
    ///
    /// # Panics
    ///
    /// If no group has a variant named `reference`, or if `costs_ns` is not ascending
    /// and positive.
    ///
    /// ```
    /// use fanout::compare::{Compare, PoolState};
    ///
    /// fn spin(ns: f64) -> u64 {
    ///     let start = std::time::Instant::now();
    ///     let mut x = 0u64;
    ///     while (start.elapsed().as_nanos() as f64) < ns {
    ///         x = x.wrapping_add(1);
    ///     }
    ///     x.min(1)
    /// }
    ///
    /// let cmp = Compare::builder().threads(2).rounds(3).states(&[PoolState::Hot]).build()?;
    /// let sweep = cmp.sweep(&[200.0, 2000.0], "fanout", |cost| {
    ///     cmp.flat(format!("{cost} ns"), "spin", 0..2000, 1, || 0u64, move |a, _| a + spin(cost), |a, b| a + b)
    /// });
    /// assert_eq!(sweep.costs(), &[200.0, 2000.0]);
    /// println!("{sweep}");
    /// # Ok::<(), fanout::compare::CompareError>(())
    /// ```
    pub fn sweep<'a, R, G>(&'a self, costs_ns: &[f64], reference: &str, mut group_for: G) -> Sweep
    where
        R: PartialEq + fmt::Debug,
        G: FnMut(f64) -> Group<'a, R>,
    {
        assert!(
            costs_ns.iter().all(|&c| c > 0.0) && costs_ns.windows(2).all(|w| w[0] < w[1]),
            "sweep costs must be positive and ascending: {costs_ns:?}"
        );
        let headline = self.states[0];
        let tables: Vec<Table> = costs_ns.iter().map(|&cost| self.measure(group_for(cost))).collect();
        Sweep::from_tables(costs_ns, reference, headline, &tables)
    }
}

/// Records the first mismatch of a variant's result against the reference.
fn check<R: PartialEq + fmt::Debug>(reference: &R, result: &R, wrong: &mut Option<String>) {
    if wrong.is_none() && result != reference {
        *wrong = Some(format!("returned {result:?}, the baseline {reference:?}"));
    }
}

/// Rounds per variant under a budget (see [`Group::budget`]): from the cheapest round
/// up, each variant takes what fits its equal share of the budget left, between one
/// round and `rounds`.
fn share_rounds(per_round_ns: &[f64], budget_ns: f64, rounds: usize) -> Vec<usize> {
    let mut by_cost: Vec<usize> = (0..per_round_ns.len()).collect();
    by_cost.sort_by(|&a, &b| per_round_ns[a].total_cmp(&per_round_ns[b]));
    let mut left = budget_ns;
    let mut out = vec![rounds; per_round_ns.len()];
    for (k, &v) in by_cost.iter().enumerate() {
        let share = left / (by_cost.len() - k) as f64;
        let fit = (share / per_round_ns[v]).floor();
        let r = if fit >= rounds as f64 { rounds } else { (fit as usize).max(1) };
        out[v] = r;
        left = (left - r as f64 * per_round_ns[v]).max(0.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::share_rounds;

    #[test]
    fn cheap_variants_keep_every_round_and_pass_what_they_leave_to_dear_ones() {
        // Budget 100: the two cheap ones take 10 rounds of 1 (20 in all), the dear one
        // gets the 80 left: 8 rounds of 10, not a third of the budget (3).
        assert_eq!(share_rounds(&[1.0, 10.0, 1.0], 100.0, 10), vec![10, 8, 10]);
        // Two dear ones share what is left equally.
        assert_eq!(share_rounds(&[1.0, 40.0, 40.0], 90.0, 10), vec![10, 1, 1]);
        assert_eq!(share_rounds(&[1.0, 20.0, 20.0], 90.0, 10), vec![10, 2, 2]);
        // At least one round, even over the budget or with none; never more than asked.
        assert_eq!(share_rounds(&[1000.0], 1.0, 5), vec![1]);
        assert_eq!(share_rounds(&[1000.0], -5.0, 5), vec![1]);
        assert_eq!(share_rounds(&[1.0, 1.0], 1e9, 5), vec![5, 5]);
    }
}
