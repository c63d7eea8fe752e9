//! Controlled runs: fallible calls (errgroup style), continue-on-error, cancellation,
//! deadlines, concurrency limits and first-success races, configured on a [`Runner`].

use super::calls::SendPtr;
use crate::cancel::CancelToken;
use crate::cancel::earlier;
use crate::engine::ctx::Ctx;
use crate::engine::run::Control;
use crate::engine::stop::outside_reason;
use crate::outcome::error::{AllFailed, ItemError, RunError, panic_message};
use crate::outcome::panics::{drop_quietly, reduce_or_error};
use crate::pool::Pool;
use crate::progress::Progress;
use crate::stats::RunStats;
use crate::stream::{Options as StreamOptions, Scope, Source, Stream};
use crate::sync::AtomicUsize;
use crate::sync::Ordering;
use crate::work::collect::{CollectCtx, Collected, Tagged, collect_one, in_tree_order, new_collected, tag};
use crate::work::failure::{Failure, cancelled_error, into_result};
use crate::work::follow_on::{FollowOn, TryRunFold, fold_in_place};
use crate::work::range::{OnStop, TryFold, map_range};
use std::convert::Infallible;
use std::marker::PhantomData;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Runs on a [`Pool`] with a cancel token, a deadline, a concurrency limit, a progress
/// watcher or blocking items; made by [`Pool::runner`]. It has every call `Pool` has
/// (`run`, `map`, `try_fold`, `first_ok`, ...), and each returns a `Result` whose error,
/// [`RunError`], says why the run ended early: a task's error or panic (the first in
/// time), cancellation, or the deadline. The calls whose tasks cannot fail have
/// `RunError<Infallible>`.
///
/// Cancellation is cooperative: the token and the deadline are looked at between items
/// (at most 8 items apart, after every item when items take over a microsecond; or
/// every block of indices: a few microseconds of work or one index, per thread), so no
/// new item starts after they fire while items already running finish. Looking costs
/// one relaxed load per batch, and the deadline's clock is read only every so often
/// (more often when items are slow), so neither costs anything measurable.
///
/// ```
/// use std::time::Duration;
///
/// let pool = fanout::Pool::builder().num_threads(2).build()?;
/// let token = fanout::CancelToken::new();
/// let runner = pool.runner().cancel_token(&token).timeout(Duration::from_secs(10)).limit(2);
/// let squares = runner.map(&[1, 2, 3], |&x| x * x).unwrap();
/// assert_eq!(squares, [1, 4, 9]);
///
/// token.cancel();
/// let err = runner.map(&[1, 2, 3], |&x| x * x).unwrap_err();
/// assert!(matches!(err, fanout::RunError::Cancelled { completed: 0 }));
/// # Ok::<(), fanout::BuildError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Runner<'p> {
    pool: &'p Pool,
    token: Option<CancelToken>,
    deadline: Option<Instant>,
    limit: Option<usize>,
    progress: Option<Progress>,
    blocking: bool,
}

impl Pool {
    /// A [`Runner`] on this pool, with no token, no deadline and no limit yet.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let sum = pool.runner().limit(1).try_fold_index(0..100, || 0, |a, i| Ok::<_, ()>(a + i), |a, b| a + b);
    /// assert_eq!(sum, Ok(4950));
    /// ```
    pub fn runner(&self) -> Runner<'_> {
        Runner { pool: self, token: None, deadline: None, limit: None, progress: None, blocking: false }
    }
}

impl<'p> Runner<'p> {
    /// Stops runs when `token` is cancelled: they return [`RunError::Cancelled`]. A
    /// token already cancelled makes every run return at once, having run nothing.
    pub fn cancel_token(mut self, token: &CancelToken) -> Self {
        self.token = Some(token.clone());
        self
    }

    /// Stops runs once `deadline` has passed: they return [`RunError::TimedOut`]. A
    /// deadline already past makes every run return at once, having run nothing.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Like [`Runner::deadline`], `timeout` from now.
    pub fn timeout(self, timeout: Duration) -> Self {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.deadline(deadline),
            // Too far away to represent: no deadline.
            None => self,
        }
    }

    /// Lets at most `n` items of a run execute at once (like errgroup's `SetLimit`),
    /// for items that hold a scarce resource. Threads beyond the limit are not
    /// blocked: they leave the run and serve other runs or sleep, so a limit can never
    /// deadlock nested runs. `limit(0)` makes every run return [`RunError::ZeroLimit`].
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let pool = fanout::Pool::builder().num_threads(4).build().unwrap();
    /// let (now, max) = (AtomicUsize::new(0), AtomicUsize::new(0));
    /// pool.runner().limit(2).try_for_each_index(0..64, |_| {
    ///     let n = now.fetch_add(1, Ordering::SeqCst) + 1;
    ///     max.fetch_max(n, Ordering::SeqCst);
    ///     std::thread::sleep(std::time::Duration::from_micros(200));
    ///     now.fetch_sub(1, Ordering::SeqCst);
    ///     Ok::<_, ()>(())
    /// }).unwrap();
    /// assert!(max.into_inner() <= 2);
    /// ```
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// For items that block (I/O, sleeps, waiting on others): every item not yet started
    /// is stealable by any thread and starts as soon as one is free, instead of ranges
    /// being split lazily when a thread is idle (which starts a blocking item's
    /// neighbours only after it returns). A range walk shares what is left of its range
    /// before each index, so a run holds one pending range per thread at most, however
    /// long its range is; this costs a deque push and pop per index, noise next to a
    /// blocking call. Blocking items also want more threads than cores: run
    /// them on a pool of their own, built with more threads and `pin(false)`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let io_pool = fanout::Pool::builder().num_threads(4).pin(false).build().unwrap();
    /// let start = Instant::now();
    /// io_pool.runner().blocking().try_for_each_index(0..4, |_| {
    ///     std::thread::sleep(Duration::from_millis(50));
    ///     Ok::<_, ()>(())
    /// }).unwrap();
    /// // The four waits overlap (4 threads + the caller).
    /// assert!(start.elapsed() < Duration::from_millis(190));
    /// ```
    pub fn blocking(mut self) -> Self {
        self.blocking = true;
        self
    }

    /// Reports each run's progress to `progress`, which another thread can read while the
    /// run goes on (see [`Progress`]).
    pub fn progress(mut self, progress: &Progress) -> Self {
        self.progress = Some(progress.clone());
        self
    }

    /// The earlier of the runner's deadline and its token's.
    fn deadline_with_token(&self) -> Option<Instant> {
        earlier(self.deadline, self.token.as_ref().and_then(CancelToken::deadline))
    }

    /// The engine's view of the settings for a run of `total` items (if known), or why
    /// the run must not start.
    fn control<E>(&self, total: Option<u64>) -> Result<Control<'_>, RunError<E>> {
        let limit = match self.limit {
            Some(0) => return Err(RunError::ZeroLimit),
            Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
            None => None,
        };
        let token = self.token.as_ref();
        let deadline = self.deadline_with_token();
        // Already cancelled or past the deadline: run nothing at all.
        if let Some(reason) = outside_reason(token, deadline) {
            return Err(cancelled_error(reason, 0));
        }
        let progress = self.progress.as_ref().map(|p| p.attach(self.pool.num_threads() + 1, total));
        Ok(Control { token, deadline, limit, share_seeds: self.blocking, progress })
    }

    /// The fallible follow-on run behind `try_run` and `try_run_fold`.
    pub(crate) fn run_catching<T, A, E, I, Id, F>(
        &self,
        seeds: I,
        identity: Id,
        f: F,
    ) -> Result<(Vec<A>, RunStats), RunError<E>>
    where
        T: Send,
        A: Send,
        E: Send,
        I: IntoIterator<Item = T>,
        Id: Fn() -> A + Sync,
        F: Fn(&mut A, T, &mut Ctx<'_, T>) -> Result<(), E> + Sync,
    {
        let control = self.control(None)?;
        let work = TryRunFold { identity, f, failure: Failure::new(), _item: PhantomData };
        let outcome = self.pool.run_work_under(&work, control, seeds);
        into_result(outcome, &work.failure, false, |_, stats| stats.executed)
    }

    /// A stream over `source` (as [`Pool::stream`]) under this runner's options:
    ///
    /// - the cancel token and the deadline stop it: no batch starts after the stop is
    ///   seen, the consumer gets the rest of the batch it is yielding, then
    ///   [`RunError::Cancelled`] or [`RunError::TimedOut`] with the number of source
    ///   items whose outputs it received, and the stream ends (a consumer waiting for
    ///   a batch notices a cancel within about 2 ms, a deadline on time);
    /// - `limit(n)`: at most `n` threads work on the stream at once, the consumer
    ///   included (`limit(1)`: the consumer alone; `limit(0)`: `ZeroLimit`);
    /// - `progress`: `completed` counts the source items whose outputs were yielded,
    ///   `in_flight` is 1 while the stream runs;
    /// - `blocking` changes nothing (a stream's threads always pull batch by batch).
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let token = fanout::CancelToken::new();
    /// let mut seen = 0u64;
    /// // An endless source, stopped from the sink through the token.
    /// let r = pool.runner().cancel_token(&token).stream(0u64..).map(|x| x * 2).for_each(|_| {
    ///     seen += 1;
    ///     if seen == 1000 {
    ///         token.cancel();
    ///     }
    /// });
    /// assert!(matches!(r, Err(fanout::RunError::Cancelled { completed }) if completed == seen));
    /// # Ok::<(), fanout::BuildError>(())
    /// ```
    pub fn stream<S>(&self, source: S) -> Stream<'p, 'static, S::IntoIter, Source, Infallible>
    where
        S: IntoIterator,
        S::IntoIter: Send + 'static,
        S::Item: Send + 'static,
    {
        self.pool.stream_with(source, self.stream_options())
    }

    /// A stream over `source` started in `scope` (see [`Pool::scope`]), so that the
    /// source and stages may borrow from the caller's stack, under this runner's
    /// options as for [`Runner::stream`]; like `std::thread::Builder::spawn_scoped`.
    /// The stream runs on this runner's pool.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let limits = [3u64, 5, 7];
    /// let runner = pool.runner().limit(2).deadline(Instant::now() + Duration::from_secs(60));
    /// let total: u64 = pool.scope(|s| runner.stream_scoped(s, 0..3).map(|i| limits[i]).into_iter().sum::<Result<_, _>>())?;
    /// assert_eq!(total, 15);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stream_scoped<'scope, S>(
        &self,
        scope: &'scope Scope<'scope, '_>,
        source: S,
    ) -> Stream<'scope, 'scope, S::IntoIter, Source, Infallible>
    where
        'p: 'scope,
        S: IntoIterator,
        S::IntoIter: Send + 'scope,
        S::Item: Send + 'scope,
    {
        scope.stream_with(self.pool, source, self.stream_options())
    }

    fn stream_options(&self) -> StreamOptions {
        StreamOptions {
            token: self.token.clone(),
            deadline: self.deadline_with_token(),
            limit: self.limit,
            progress: self.progress.clone(),
        }
    }
}

/// One alternative's outcome in a `first_ok` race, once it has run.
type RaceSlot<R, E> = Mutex<Option<Result<R, ItemError<E>>>>;

/// Runs one task for continue-on-error calls: its error or panic becomes the item's
/// outcome instead of stopping the run.
fn item_outcome<R, E>(task: impl FnOnce() -> Result<R, E>) -> Result<R, ItemError<E>> {
    match catch_unwind(AssertUnwindSafe(task)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(ItemError::Failed(e)),
        Err(payload) => {
            let message = panic_message(&*payload);
            drop_quietly(payload);
            Err(ItemError::Panicked(message))
        }
    }
}

calls_on_runner_and_pool! {
    /// [`Pool::run`] with fallible tasks: the first `Err` (or panic) stops the run and is
    /// returned; follow-on items not yet started are dropped. On success, returns what
    /// the run did.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// // Walk a "directory tree"; a missing entry fails the whole walk.
    /// let err = pool.runner().try_run([0u32], |n, ctx| {
    ///     if n == 13 {
    ///         return Err(format!("entry {n} is missing"));
    ///     }
    ///     if n < 20 {
    ///         ctx.push(2 * n + 1);
    ///         ctx.push(2 * n + 2);
    ///     }
    ///     Ok(())
    /// }).unwrap_err();
    /// assert_eq!(err.to_string(), "an item failed: entry 13 is missing");
    /// ```
    pub fn try_run<T, E, I, F>(&self, seeds: I, f: F) -> Result<RunStats, RunError<E>>
    where [
        T: Send,
        E: Send,
        I: IntoIterator<Item = T>,
        F: Fn(T, &mut Ctx<'_, T>) -> Result<(), E> + Sync,
    ]
    {
        self.run_catching(seeds, || (), |(), item, ctx| f(item, ctx)).map(|(_, stats)| stats)
    }

    /// [`Pool::run_fold`] with fallible tasks: each task folds into a per-thread
    /// accumulator and may push follow-on items; the first `Err` (or panic) stops the run.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// // Count the nodes of a binary tree, refusing trees deeper than 12.
    /// let nodes = pool.runner().try_run_fold([10u32], || 0u64, |count, depth, ctx| {
    ///     if depth > 12 {
    ///         return Err("too deep");
    ///     }
    ///     if depth > 0 {
    ///         ctx.push(depth - 1);
    ///         ctx.push(depth - 1);
    ///     }
    ///     Ok(count + 1)
    /// }, |a, b| a + b);
    /// assert_eq!(nodes, Ok((1 << 11) - 1));
    /// ```
    pub fn try_run_fold<T, A, E, I, Id, F, Red>(
        &self,
        seeds: I,
        identity: Id,
        f: F,
        reduce: Red,
    ) -> Result<A, RunError<E>>
    where [
        T: Send,
        A: Send,
        E: Send,
        I: IntoIterator<Item = T>,
        Id: Fn() -> A + Sync,
        F: Fn(A, T, &mut Ctx<'_, T>) -> Result<A, E> + Sync,
        Red: Fn(A, A) -> A,
    ]
    {
        let (accs, _) = self.run_catching(seeds, || None, fold_in_place(&identity, &f))?;
        // A panic in `reduce` (or in the `identity` of a run without accumulators) is an
        // error too, like a task's.
        reduce_or_error(accs.into_iter().flatten(), identity, reduce)
    }

    /// Calls `f(i)` for every `i` in `range`; the first `Err` (or panic) stops the run
    /// and is returned with its index.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let r = pool.runner().try_for_each_index(0..1000, |i| if i == 500 { Err("bad") } else { Ok(()) });
    /// assert!(matches!(r, Err(fanout::RunError::Failed { error: "bad", index: Some(500) })));
    /// ```
    pub fn try_for_each_index<E, F>(&self, range: Range<usize>, f: F) -> Result<(), RunError<E>>
    where [
        E: Send,
        F: Fn(usize) -> Result<(), E> + Sync,
    ]
    {
        self.try_fold_index(range, || (), |(), i| f(i), |(), ()| ())
    }

    /// Calls `f(&item)` for every item of `items`, like [`Runner::try_for_each_index`].
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let paths = ["a.txt", "b.txt", ""];
    /// let r = pool.runner().try_for_each(&paths, |p| if p.is_empty() { Err("empty path") } else { Ok(()) });
    /// assert_eq!(r.unwrap_err().to_string(), "item 2 failed: empty path");
    /// ```
    pub fn try_for_each<T, E, F>(&self, items: &[T], f: F) -> Result<(), RunError<E>>
    where [
        T: Sync,
        E: Send,
        F: Fn(&T) -> Result<(), E> + Sync,
    ]
    {
        self.try_for_each_index(0..items.len(), |i| f(&items[i]))
    }

    /// Calls `f(&mut item)` for every item of `items`, like
    /// [`Runner::try_for_each_index`].
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let mut levels = vec![1u8, 2, 255];
    /// let r = pool.runner().try_for_each_mut(&mut levels, |x| {
    ///     *x = x.checked_add(1).ok_or("overflow")?;
    ///     Ok(())
    /// });
    /// assert!(matches!(r, Err(fanout::RunError::Failed { error: "overflow", index: Some(2) })));
    /// ```
    pub fn try_for_each_mut<T, E, F>(&self, items: &mut [T], f: F) -> Result<(), RunError<E>>
    where [
        T: Send,
        E: Send,
        F: Fn(&mut T) -> Result<(), E> + Sync,
    ]
    {
        let len = items.len();
        let base = SendPtr(items.as_mut_ptr());
        self.try_for_each_index(0..len, move |i| {
            let base = &base;
            // SAFETY: `i < len`, and every index is visited at most once, so each
            // `&mut` is unique; the slice outlives the run.
            f(unsafe { &mut *base.0.add(i) })
        })
    }

    /// Returns `[f(i)? for i in range]` in input order, or the first error (or panic)
    /// with its index; the results already computed are dropped. An output too large to
    /// allocate is [`RunError::Panicked`] without an index, before any item runs.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let r = pool.runner().try_map_index(0..4, |i| u8::try_from(i * 100));
    /// assert!(matches!(r, Err(fanout::RunError::Failed { index: Some(3), .. })));
    /// ```
    pub fn try_map_index<R, E, F>(&self, range: Range<usize>, f: F) -> Result<Vec<R>, RunError<E>>
    where [
        R: Send,
        E: Send,
        F: Fn(usize) -> Result<R, E> + Sync,
    ]
    {
        let Range { start, end } = range;
        let control = self.control(Some(end.saturating_sub(start) as u64))?;
        // `map_range` works on output positions; errors name the index itself.
        map_range(
            self.pool,
            control,
            end.saturating_sub(start),
            |i| f(start + i),
            OnStop::Fail { resume_panics: false },
        )
        .map_err(|e| e.shift_index(start))
    }

    /// Returns `items.map(f)` in input order, or the first error (or panic) with its index.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let parsed = pool.runner().try_map(&["1", "2", "3"], |s| s.parse::<u32>());
    /// assert_eq!(parsed.unwrap(), [1, 2, 3]);
    /// ```
    pub fn try_map<T, R, E, F>(&self, items: &[T], f: F) -> Result<Vec<R>, RunError<E>>
    where [
        T: Sync,
        R: Send,
        E: Send,
        F: Fn(&T) -> Result<R, E> + Sync,
    ]
    {
        self.try_map_index(0..items.len(), |i| f(&items[i]))
    }

    /// Folds every index of `range` like [`Pool::fold_index`] with a fallible `fold`; the
    /// first error (or panic) stops the run and is returned with its index. A panic in
    /// `identity` or `reduce` is returned as [`RunError::Panicked`] too.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let total = pool.runner().try_fold_index(0..100, || 0u8, |a, i| a.checked_add(i as u8).ok_or(i), |a, b| a.saturating_add(b));
    /// assert!(matches!(total, Err(fanout::RunError::Failed { .. })), "overflows a u8");
    /// ```
    pub fn try_fold_index<A, E, Id, F, Red>(
        &self,
        range: Range<usize>,
        identity: Id,
        fold: F,
        reduce: Red,
    ) -> Result<A, RunError<E>>
    where [
        A: Send,
        E: Send,
        Id: Fn() -> A + Sync,
        F: Fn(A, usize) -> Result<A, E> + Sync,
        Red: Fn(A, A) -> A,
    ]
    {
        let Range { start, end } = range;
        let control = self.control(Some(end.saturating_sub(start) as u64))?;
        if start >= end {
            return reduce_or_error(std::iter::empty(), identity, reduce);
        }
        // The walk runs over the indices themselves, so errors name them.
        let work = TryFold { identity: &identity, fold: &fold, failure: Failure::new(), _acc: PhantomData };
        let seeds = std::iter::once(start..end);
        let outcome = self.pool.run_work_under(&work, control, seeds);
        let completed = |accs: &[(Option<A>, u64)], _: &RunStats| accs.iter().map(|a| a.1).sum();
        let (accs, _) = into_result(outcome, &work.failure, false, completed)?;
        reduce_or_error(accs.into_iter().filter_map(|a| a.0), identity, reduce)
    }

    /// Folds every item of `items` like [`Runner::try_fold_index`].
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let sum = pool.runner().try_fold(&["1", "2", "x"], || 0, |a, s| Ok(a + s.parse::<i32>()?), |a, b| a + b);
    /// let err: fanout::RunError<std::num::ParseIntError> = sum.unwrap_err();
    /// assert!(matches!(err, fanout::RunError::Failed { index: Some(2), .. }));
    /// ```
    pub fn try_fold<T, A, E, Id, F, Red>(
        &self,
        items: &[T],
        identity: Id,
        fold: F,
        reduce: Red,
    ) -> Result<A, RunError<E>>
    where [
        T: Sync,
        A: Send,
        E: Send,
        Id: Fn() -> A + Sync,
        F: Fn(A, &T) -> Result<A, E> + Sync,
        Red: Fn(A, A) -> A,
    ]
    {
        self.try_fold_index(0..items.len(), identity, |a, i| fold(a, &items[i]), reduce)
    }

    /// Continue-on-error: runs `f` on every item and returns every item's outcome in
    /// input order. A failing or panicking item does not stop the others; its slot
    /// holds [`ItemError::Failed`] or [`ItemError::Panicked`]. If the token or deadline
    /// fires, items that had not started hold [`ItemError::NotRun`]: nothing is lost.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let results = pool.runner().try_map_all(&["1", "x", "3"], |s| s.parse::<u32>());
    /// assert_eq!(results.len(), 3);
    /// assert_eq!(results[0], Ok(1));
    /// assert!(matches!(results[1], Err(fanout::ItemError::Failed(_))));
    /// ```
    ///
    /// # Panics
    ///
    /// If the runner's [`limit`](Runner::limit) is 0 (the other calls return
    /// [`RunError::ZeroLimit`]; this one has no error to return).
    pub fn try_map_all<T, R, E, F>(&self, items: &[T], f: F) -> Vec<Result<R, ItemError<E>>>
    where [
        T: Sync,
        R: Send,
        E: Send,
        F: Fn(&T) -> Result<R, E> + Sync,
    ]
    {
        let item_outcome = |i: usize| Ok::<_, std::convert::Infallible>(item_outcome(|| f(&items[i])));
        let control = match self.control::<()>(Some(items.len() as u64)) {
            Ok(control) => control,
            Err(RunError::ZeroLimit) => panic!("Runner::limit(0): a run needs at least one item in flight"),
            Err(_) => return items.iter().map(|_| Err(ItemError::NotRun)).collect(),
        };
        match map_range(self.pool, control, items.len(), item_outcome, OnStop::Fill(|| Err(ItemError::NotRun))) {
            Ok(results) => results,
            Err(RunError::Failed { error, .. }) => match error {},
            Err(other) => unreachable!("continue-on-error runs fill the items a stop left: {other:?}"),
        }
    }

    /// First success: runs the `alternatives` (say, the same request to `n` replicas)
    /// and returns the index and value of the first to return `Ok`. Every alternative
    /// starts as soon as a thread is free (they are shared with all threads up front,
    /// not split lazily). Each is handed a token that is cancelled once the race is
    /// decided (a winner, a panic), when the runner's token is cancelled, and at the
    /// runner's deadline; alternatives should wait on it
    /// ([`CancelToken::wait_timeout`]) or poll it, so that losers give up at once.
    /// Alternatives that have not started by then never start.
    ///
    /// Returns, in this order of precedence: the winner; [`RunError::Panicked`] if an
    /// alternative panicked (that ends the race); [`RunError::Cancelled`] or
    /// [`RunError::TimedOut`] if the runner's token or deadline ended it; otherwise
    /// [`RunError::Failed`] with [`AllFailed`]: every alternative's error and index, in
    /// index order (none for zero alternatives).
    ///
    /// At most as many alternatives run at once as the pool has threads (plus the
    /// caller); for hedging slow I/O, use a pool with a thread per alternative.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = fanout::Pool::builder().num_threads(3).build().unwrap();
    /// let latencies = [300u64, 5, 200];
    /// let (winner, value) = pool.runner().first_ok(latencies.len(), |i, token| {
    ///     // A replica that answers after its latency, unless told to give up first.
    ///     if token.wait_timeout(Duration::from_millis(latencies[i])) {
    ///         Err(format!("replica {i} gave up"))
    ///     } else {
    ///         Ok(latencies[i])
    ///     }
    /// }).unwrap();
    /// assert_eq!((winner, value), (1, 5));
    /// ```
    pub fn first_ok<R, E, F>(
        &self,
        alternatives: usize,
        f: F,
    ) -> Result<(usize, R), RunError<AllFailed<E>>>
    where [
        R: Send,
        E: Send,
        F: Fn(usize, &CancelToken) -> Result<R, E> + Sync,
    ]
    {
        let mut control = self.control(Some(alternatives as u64))?;
        // The race's own token: cancelled by the runner's token, at the deadline, and
        // by whoever decides the race. The run watches it, so that alternatives not
        // started when the race is decided never start.
        let race = match &self.token {
            Some(parent) => parent.child_until(control.deadline),
            None => match control.deadline {
                Some(deadline) => CancelToken::with_deadline(deadline),
                None => CancelToken::new(),
            },
        };
        control.token = Some(&race);
        control.share_seeds = true;
        let results: Vec<RaceSlot<R, E>> = (0..alternatives).map(|_| Mutex::new(None)).collect();
        // The index of the first alternative to succeed, in time.
        let first_ok = Mutex::new(None);
        let run = FollowOn {
            f: |i: usize, _: &mut Ctx<'_, usize>| {
                if race.is_cancelled() {
                    return;
                }
                let result = item_outcome(|| f(i, &race));
                if result.is_ok() {
                    first_ok.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(i);
                }
                if !matches!(result, Err(ItemError::Failed(_))) {
                    // A winner, or a panic: either way the race is over.
                    race.cancel();
                }
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
            },
            _item: PhantomData,
        };
        // Every alternative catches its own panic: the outcome holds nothing to report.
        self.pool.run_work_under(run, control, 0..alternatives);
        // Without a winner or a panic, only the runner's token or the deadline can have
        // cancelled the race by now (a cancel after this point does not count).
        let ended_early = race.is_cancelled();
        // Done with it (a cancelled child is dropped from its parent's list).
        race.cancel();
        let first = *first_ok.lock().unwrap_or_else(|e| e.into_inner());
        let mut errors = Vec::new();
        let mut winner = None;
        let mut panicked = None;
        let mut ran = 0;
        for (i, slot) in results.into_iter().enumerate() {
            let result = slot.into_inner().unwrap_or_else(|e| e.into_inner());
            ran += usize::from(result.is_some());
            match result {
                // Several may succeed before the cancel is seen: the first in time wins.
                Some(Ok(value)) if first == Some(i) => winner = Some((i, value)),
                Some(Err(ItemError::Failed(e))) => errors.push((i, e)),
                Some(Err(ItemError::Panicked(message))) if panicked.is_none() => panicked = Some((i, message)),
                _ => {}
            }
        }
        if let Some(w) = winner {
            return Ok(w);
        }
        if let Some((index, message)) = panicked {
            return Err(RunError::Panicked { message, index: Some(index) });
        }
        if ended_early {
            let completed = ran as u64;
            // Acquire: pairs with the Release store in `CancelToken::cancel`.
            if self.token.as_ref().is_some_and(|t| t.flag().load(Ordering::Acquire)) {
                return Err(RunError::Cancelled { completed });
            }
            return Err(RunError::TimedOut { completed });
        }
        Err(RunError::Failed { error: AllFailed { errors }, index: None })
    }

    /// [`Pool::run_collect`] with fallible tasks, under this runner's settings: the
    /// first `Err` (or panic) stops the run and is returned.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let r = pool.runner().try_run_collect([0u32], |n, ctx| {
    ///     if n == 5 {
    ///         return Err(format!("bad node {n}"));
    ///     }
    ///     if n < 10 {
    ///         ctx.push(2 * n + 1);
    ///         ctx.push(2 * n + 2);
    ///     }
    ///     Ok(n)
    /// });
    /// assert_eq!(r.unwrap_err().to_string(), "an item failed: bad node 5");
    /// # Ok::<(), fanout::BuildError>(())
    /// ```
    pub fn try_run_collect<T, R, E, I, F>(&self, seeds: I, f: F) -> Result<Vec<R>, RunError<E>>
    where [
        T: Send,
        R: Send,
        E: Send,
        I: IntoIterator<Item = T>,
        F: Fn(T, &mut CollectCtx<'_, '_, T>) -> Result<R, E> + Sync,
    ]
    {
        let next = AtomicUsize::new(0);
        let (accs, _) = self.run_catching(
            tag(seeds),
            || new_collected(&next),
            |acc: &mut Collected<T, R>, tagged, ctx: &mut Ctx<'_, Tagged<T>>| collect_one(acc, tagged, ctx, &f),
        )?;
        Ok(in_tree_order(accs))
    }
}

/// The calls of [`Pool`] whose tasks cannot fail, under this runner's settings. They
/// return a `Result` because the settings can stop a run: the cancel token
/// ([`RunError::Cancelled`]), the deadline ([`RunError::TimedOut`]), a zero limit
/// ([`RunError::ZeroLimit`]); and, as from every call that returns a `Result`, a task's
/// panic comes back as [`RunError::Panicked`] rather than unwinding.
impl Runner<'_> {
    /// [`Pool::run`] under this runner's settings.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let progress = fanout::Progress::new();
    /// let stats = pool.runner().progress(&progress).run(0..100u32, |n, ctx| {
    ///     if n < 10 {
    ///         ctx.push(n + 100);
    ///     }
    /// })?;
    /// assert_eq!(stats.executed, 110);
    /// assert_eq!(progress.snapshot().completed, 110);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run<T, I, F>(&self, seeds: I, f: F) -> Result<RunStats, RunError<Infallible>>
    where
        T: Send,
        I: IntoIterator<Item = T>,
        F: Fn(T, &mut Ctx<'_, T>) + Sync,
    {
        self.try_run(seeds, |item, ctx| {
            f(item, ctx);
            Ok(())
        })
    }

    /// [`Pool::run_fold`] under this runner's settings.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let nodes = pool.runner().timeout(Duration::from_secs(60)).run_fold([8u32], || 0u64, |count, depth, ctx| {
    ///     if depth > 0 {
    ///         ctx.push(depth - 1);
    ///         ctx.push(depth - 1);
    ///     }
    ///     count + 1
    /// }, |a, b| a + b)?;
    /// assert_eq!(nodes, (1 << 9) - 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run_fold<T, A, I, Id, F, Red>(
        &self,
        seeds: I,
        identity: Id,
        f: F,
        reduce: Red,
    ) -> Result<A, RunError<Infallible>>
    where
        T: Send,
        A: Send,
        I: IntoIterator<Item = T>,
        Id: Fn() -> A + Sync,
        F: Fn(A, T, &mut Ctx<'_, T>) -> A + Sync,
        Red: Fn(A, A) -> A,
    {
        self.try_run_fold(seeds, identity, |acc, item, ctx| Ok(f(acc, item, ctx)), reduce)
    }

    /// [`Pool::run_collect`] under this runner's settings.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let names = pool.runner().limit(1).run_collect(["a", "b"], |name, _| name.to_uppercase())?;
    /// assert_eq!(names, ["A", "B"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run_collect<T, R, I, F>(&self, seeds: I, f: F) -> Result<Vec<R>, RunError<Infallible>>
    where
        T: Send,
        R: Send,
        I: IntoIterator<Item = T>,
        F: Fn(T, &mut CollectCtx<'_, '_, T>) -> R + Sync,
    {
        self.try_run_collect(seeds, |item, ctx| Ok(f(item, ctx)))
    }

    /// [`Pool::for_each_index`] under this runner's settings.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let token = fanout::CancelToken::new();
    /// token.cancel();
    /// let r = pool.runner().cancel_token(&token).for_each_index(0..1000, |_| {});
    /// assert!(matches!(r, Err(fanout::RunError::Cancelled { .. })));
    /// # Ok::<(), fanout::BuildError>(())
    /// ```
    pub fn for_each_index<F>(&self, range: Range<usize>, f: F) -> Result<(), RunError<Infallible>>
    where
        F: Fn(usize) + Sync,
    {
        self.try_for_each_index(range, |i| {
            f(i);
            Ok(())
        })
    }

    /// [`Pool::for_each`] under this runner's settings.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let in_flight = AtomicU32::new(0);
    /// let most = AtomicU32::new(0);
    /// pool.runner().limit(1).for_each(&[1, 2, 3, 4], |_| {
    ///     let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    ///     most.fetch_max(now, Ordering::SeqCst);
    ///     in_flight.fetch_sub(1, Ordering::SeqCst);
    /// })?;
    /// assert_eq!(most.into_inner(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_each<T, F>(&self, items: &[T], f: F) -> Result<(), RunError<Infallible>>
    where
        T: Sync,
        F: Fn(&T) + Sync,
    {
        self.try_for_each(items, |item| {
            f(item);
            Ok(())
        })
    }

    /// [`Pool::for_each_mut`] under this runner's settings.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let mut v = vec![1, 2, 3];
    /// pool.runner().blocking().for_each_mut(&mut v, |x| *x *= 10)?;
    /// assert_eq!(v, [10, 20, 30]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_each_mut<T, F>(&self, items: &mut [T], f: F) -> Result<(), RunError<Infallible>>
    where
        T: Send,
        F: Fn(&mut T) + Sync,
    {
        self.try_for_each_mut(items, |item| {
            f(item);
            Ok(())
        })
    }

    /// [`Pool::map_index`] under this runner's settings; an output too large to
    /// allocate is [`RunError::Panicked`], before any item runs.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let squares = pool.runner().limit(2).map_index(0..5, |i| i * i)?;
    /// assert_eq!(squares, [0, 1, 4, 9, 16]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map_index<R, F>(&self, range: Range<usize>, f: F) -> Result<Vec<R>, RunError<Infallible>>
    where
        R: Send,
        F: Fn(usize) -> R + Sync,
    {
        self.try_map_index(range, |i| Ok(f(i)))
    }

    /// [`Pool::map`] under this runner's settings.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let lengths = pool.runner().map(&["a", "bcd"], |s| s.len())?;
    /// assert_eq!(lengths, [1, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map<T, R, F>(&self, items: &[T], f: F) -> Result<Vec<R>, RunError<Infallible>>
    where
        T: Sync,
        R: Send,
        F: Fn(&T) -> R + Sync,
    {
        self.try_map(items, |item| Ok(f(item)))
    }

    /// [`Pool::fold_index`] under this runner's settings.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let sum = pool.runner().fold_index(0..100, || 0, |a, i| a + i, |a, b| a + b)?;
    /// assert_eq!(sum, 4950);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fold_index<A, Id, F, Red>(
        &self,
        range: Range<usize>,
        identity: Id,
        fold: F,
        reduce: Red,
    ) -> Result<A, RunError<Infallible>>
    where
        A: Send,
        Id: Fn() -> A + Sync,
        F: Fn(A, usize) -> A + Sync,
        Red: Fn(A, A) -> A,
    {
        self.try_fold_index(range, identity, |a, i| Ok(fold(a, i)), reduce)
    }

    /// [`Pool::fold`] under this runner's settings.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let longest = pool.runner().fold(&["ab", "c"], || 0, |m, s| m.max(s.len()), usize::max)?;
    /// assert_eq!(longest, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fold<T, A, Id, F, Red>(
        &self,
        items: &[T],
        identity: Id,
        fold: F,
        reduce: Red,
    ) -> Result<A, RunError<Infallible>>
    where
        T: Sync,
        A: Send,
        Id: Fn() -> A + Sync,
        F: Fn(A, &T) -> A + Sync,
        Red: Fn(A, A) -> A,
    {
        self.try_fold(items, identity, |a, item| Ok(fold(a, item)), reduce)
    }
}
