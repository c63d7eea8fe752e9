//! Controlled runs: fallible calls (errgroup style), continue-on-error, cancellation,
//! deadlines, concurrency limits and first-success races, configured on a [`Runner`].

use crate::api::FollowOn;
use crate::cancel::earlier;
use crate::error::{AllFailed, ItemError, RunError, panic_message};
use crate::fallible::{Failure, TryFold, TryRunFold, cancelled_error, drop_quietly, into_result, reduce_or_error};
use crate::range::{Map, Output};
use crate::run::{Control, Ctx};
use crate::stats::RunStats;
use crate::stop::outside_reason;
use crate::stream::{Options as StreamOptions, Scope, Source, Stream};
use crate::sync::Ordering;
use crate::{CancelToken, Pool, Progress};
use std::convert::Infallible;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Runs on a [`Pool`] with a cancel token, a deadline and a concurrency limit; made by
/// [`Pool::runner`]. Every call returns a `Result` whose error, [`RunError`], says why the
/// run ended early: a task's error or panic (the first in time), cancellation, or the
/// deadline.
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
/// let squares = runner.try_map(&[1, 2, 3], |&x| Ok::<_, std::io::Error>(x * x)).unwrap();
/// assert_eq!(squares, [1, 4, 9]);
///
/// token.cancel();
/// let err = runner.try_map(&[1, 2, 3], |&x| Ok::<_, std::io::Error>(x * x)).unwrap_err();
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
    where
        T: Send,
        E: Send,
        I: IntoIterator<Item = T>,
        F: Fn(T, &mut Ctx<'_, T>) -> Result<(), E> + Sync,
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
    ///     *count += 1;
    ///     if depth > 12 {
    ///         return Err("too deep");
    ///     }
    ///     if depth > 0 {
    ///         ctx.push(depth - 1);
    ///         ctx.push(depth - 1);
    ///     }
    ///     Ok(())
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
    where
        T: Send,
        A: Send,
        E: Send,
        I: IntoIterator<Item = T>,
        Id: Fn() -> A + Sync,
        F: Fn(&mut A, T, &mut Ctx<'_, T>) -> Result<(), E> + Sync,
        Red: Fn(A, A) -> A,
    {
        let (accs, _) = self.run_catching(seeds, &identity, f)?;
        // A panic in `reduce` (or in the `identity` of a run without accumulators) is an
        // error too, like a task's.
        reduce_or_error(accs, identity, reduce)
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
        let outcome = self.pool.execute_catching(&work, control, seeds);
        into_result(outcome, &work.failure, false, |_, stats| stats.executed)
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
    where
        E: Send,
        F: Fn(usize) -> Result<(), E> + Sync,
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
    where
        T: Sync,
        E: Send,
        F: Fn(&T) -> Result<(), E> + Sync,
    {
        self.try_for_each_index(0..items.len(), |i| f(&items[i]))
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
    where
        R: Send,
        E: Send,
        F: Fn(usize) -> Result<R, E> + Sync,
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
    where
        T: Sync,
        R: Send,
        E: Send,
        F: Fn(&T) -> Result<R, E> + Sync,
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
    where
        A: Send,
        E: Send,
        Id: Fn() -> A + Sync,
        F: Fn(A, usize) -> Result<A, E> + Sync,
        Red: Fn(A, A) -> A,
    {
        let Range { start, end } = range;
        let control = self.control(Some(end.saturating_sub(start) as u64))?;
        if start >= end {
            return reduce_or_error(std::iter::empty(), identity, reduce);
        }
        // The walk runs over the indices themselves, so errors name them.
        let work = TryFold { identity: &identity, fold: &fold, failure: Failure::new(), _acc: PhantomData };
        let seeds = std::iter::once(start..end);
        let outcome = self.pool.execute_catching(&work, control, seeds);
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
    where
        T: Sync,
        A: Send,
        E: Send,
        Id: Fn() -> A + Sync,
        F: Fn(A, &T) -> Result<A, E> + Sync,
        Red: Fn(A, A) -> A,
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
    where
        T: Sync,
        R: Send,
        E: Send,
        F: Fn(&T) -> Result<R, E> + Sync,
    {
        let settle = |i: usize| Ok::<_, std::convert::Infallible>(settle(|| f(&items[i])));
        let control = match self.control::<()>(Some(items.len() as u64)) {
            Ok(control) => control,
            Err(RunError::ZeroLimit) => panic!("Runner::limit(0): a run needs at least one item in flight"),
            Err(_) => return items.iter().map(|_| Err(ItemError::NotRun)).collect(),
        };
        match map_range(self.pool, control, items.len(), settle, OnStop::Fill(|| Err(ItemError::NotRun))) {
            Ok(results) => results,
            Err(RunError::Failed { error, .. }) => match error {},
            Err(other) => unreachable!("continue-on-error runs fill the items a stop left: {other:?}"),
        }
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
    pub fn first_ok<R, E, F>(&self, alternatives: usize, f: F) -> Result<(usize, R), RunError<AllFailed<E>>>
    where
        R: Send,
        E: Send,
        F: Fn(usize, &CancelToken) -> Result<R, E> + Sync,
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
                let result = settle(|| f(i, &race));
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
        self.pool.execute_catching(run, control, 0..alternatives);
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
}

/// One alternative's outcome in a `first_ok` race, once it has run.
type RaceSlot<R, E> = Mutex<Option<Result<R, ItemError<E>>>>;

/// Runs one task for continue-on-error calls: its error or panic becomes the item's
/// outcome instead of stopping the run.
fn settle<R, E>(task: impl FnOnce() -> Result<R, E>) -> Result<R, ItemError<E>> {
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

/// What [`map_range`] does when the run stops early.
pub(crate) enum OnStop<R> {
    /// Drop what was written and return why the run stopped (resuming a panic on this
    /// thread if `resume_panics`).
    Fail { resume_panics: bool },
    /// Fill the indices that never ran with this value and return the whole `Vec`
    /// (continue-on-error: only a token or a deadline can stop such a run).
    Fill(fn() -> R),
}

/// Runs `f` over `0..len` into a new `Vec` in input order; if the run stops early,
/// does what `on_stop` says.
pub(crate) fn map_range<R, E, F>(
    pool: &Pool,
    control: Control<'_>,
    len: usize,
    f: F,
    on_stop: OnStop<R>,
) -> Result<Vec<R>, RunError<E>>
where
    R: Send,
    E: Send,
    F: Fn(usize) -> Result<R, E> + Sync,
{
    let mut out: Vec<R> = Vec::new();
    if len == 0 {
        return Ok(out);
    }
    // A length whose output cannot be allocated is bad input: say so (as a panic, or as
    // the error of a fallible map) rather than abort the process as `with_capacity`
    // would, before any item runs.
    if let Err(e) = out.try_reserve_exact(len) {
        let message = format!("cannot allocate the output of a map over {len} items: {e}");
        match on_stop {
            OnStop::Fail { resume_panics: false } => return Err(RunError::Panicked { message, index: None }),
            _ => panic!("{message}"),
        }
    }
    let work = Map { f, out: Output(out.as_mut_ptr().cast::<MaybeUninit<R>>()), failure: Failure::new() };
    let seeds = std::iter::once(0..len);
    let outcome = pool.execute_catching(&work, control, seeds);
    if outcome.stopped.is_none() {
        debug_assert_eq!(outcome.accs.iter().flatten().map(|r| r.len()).sum::<usize>(), len);
        // SAFETY: the run was not stopped, so every index in `0..len` was written exactly
        // once (the written ranges partition `0..len`).
        unsafe { out.set_len(len) };
        return Ok(out);
    }
    match on_stop {
        OnStop::Fill(hole) => {
            let mut ranges: Vec<Range<usize>> = outcome.accs.iter().flatten().cloned().collect();
            ranges.sort_by_key(|r| r.start);
            let mut next = 0;
            for r in ranges.iter().chain(std::iter::once(&(len..len))) {
                for i in next..r.start {
                    // SAFETY: `i < len` lies in no written range, so it is uninitialized;
                    // each hole is filled once.
                    unsafe { out.as_mut_ptr().add(i).write(hole()) };
                }
                next = r.end;
            }
            // SAFETY: every index was written, by the run or by the hole filling above.
            unsafe { out.set_len(len) };
            Ok(out)
        }
        OnStop::Fail { resume_panics } => {
            let written: usize = outcome.accs.iter().flatten().map(|r| r.len()).sum();
            for range in outcome.accs.iter().flatten() {
                for i in range.clone() {
                    // SAFETY: recorded ranges were fully written, each index once, and
                    // nothing else reads them.
                    unsafe { out.as_mut_ptr().add(i).drop_in_place() };
                }
            }
            match into_result(outcome, &work.failure, resume_panics, |_, _| written as u64) {
                Ok(_) => unreachable!("a stopped run returns an error"),
                Err(e) => Err(e),
            }
        }
    }
}

/// `map_range`'s in-place writes, sized to run under Miri too (`cargo +nightly miri
/// test --lib -- runner::tests::`): outputs own heap memory and count their drops, so
/// an index written twice, never written, or dropped twice shows up as a leak, a read
/// of uninitialized memory or a double free.
#[cfg(all(test, not(loom)))]
mod tests {
    use crate::{CancelToken, ItemError, Pool, RunError};
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Items per map: Miri interprets every instruction.
    const N: usize = if cfg!(miri) { 40 } else { 5_000 };

    fn pool() -> Pool {
        Pool::builder().num_threads(2).pin(false).build().unwrap()
    }

    /// An output that owns heap memory and counts its drops.
    struct Out<'a>(Box<usize>, &'a AtomicUsize);

    impl Drop for Out<'_> {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn maps_write_every_index_once_in_input_order() {
        let pool = pool();
        let v = pool.map_index(0..N, Box::new);
        assert!(v.iter().enumerate().all(|(i, b)| **b == i));
        // A range not starting at 0 is written from output position 0.
        let v = pool.try_map_index(7..7 + N, |i| Ok::<_, ()>(i.to_string())).unwrap();
        assert!(v.iter().enumerate().all(|(k, s)| *s == (k + 7).to_string()));
        // Blocking runs take the range one index at a time, each from a shared range.
        let v = pool.runner().blocking().try_map_index(0..N, |i| Ok::<_, ()>(vec![i; 2])).unwrap();
        assert!(v.iter().enumerate().all(|(i, x)| *x == [i, i]));
        // Zero-sized outputs and a single item.
        assert_eq!(pool.map_index(0..N, |_| ()).len(), N);
        assert_eq!(pool.map_index(3..4, Box::new).into_iter().map(|b| *b).collect::<Vec<_>>(), [3]);
        let dropped = AtomicUsize::new(0);
        let v = pool.map_index(0..N, |i| Out(Box::new(i), &dropped));
        assert_eq!(dropped.load(Ordering::Relaxed), 0, "an output was dropped inside the map");
        drop(v);
        assert_eq!(dropped.load(Ordering::Relaxed), N);
    }

    #[test]
    fn a_map_stopped_midway_drops_exactly_what_it_wrote() {
        let pool = pool();
        let stop_at = N / 2;
        // An infallible map whose item panics: the panic reaches the caller, and the
        // outputs written so far are dropped, once each.
        let (made, dropped) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let make = |i: usize| {
            made.fetch_add(1, Ordering::Relaxed);
            Out(Box::new(i), &dropped)
        };
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.map_index(0..N, |i| {
                assert!(i != stop_at, "planned");
                make(i)
            })
        }));
        assert!(r.is_err());
        assert_eq!(made.load(Ordering::Relaxed), dropped.load(Ordering::Relaxed));
        // A fallible map whose item fails, or panics.
        for panics in [false, true] {
            let (made, dropped) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let r = pool.try_map_index(0..N, |i| {
                if i == stop_at {
                    assert!(!panics, "planned");
                    return Err("failed");
                }
                made.fetch_add(1, Ordering::Relaxed);
                Ok(Out(Box::new(i), &dropped))
            });
            match r {
                Err(RunError::Failed { error: "failed", index: Some(i) }) if !panics => assert_eq!(i, stop_at),
                Err(RunError::Panicked { index: Some(i), .. }) if panics => assert_eq!(i, stop_at),
                other => panic!("expected the item's failure, got {:?}", other.map(|v| v.len())),
            }
            assert_eq!(made.load(Ordering::Relaxed), dropped.load(Ordering::Relaxed));
        }
    }

    #[test]
    fn a_cancelled_continue_on_error_map_fills_the_holes() {
        let pool = pool();
        let items: Vec<usize> = (0..N).collect();
        let (made, dropped) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let token = CancelToken::new();
        // Cancelled early, within the caller's third block of indices (blocks start at
        // one index and double): whatever else runs, most indices are left as holes.
        let results = pool.runner().cancel_token(&token).try_map_all(&items, |&i| {
            if i == 3 {
                token.cancel();
            }
            if i % 7 == 3 {
                return Err(i);
            }
            made.fetch_add(1, Ordering::Relaxed);
            Ok(Out(Box::new(i), &dropped))
        });
        assert_eq!(results.len(), N);
        let mut not_run = 0;
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(out) => assert_eq!(*out.0, i),
                Err(ItemError::Failed(e)) => assert_eq!(*e, i),
                Err(ItemError::NotRun) => not_run += 1,
                Err(ItemError::Panicked(m)) => panic!("item {i} panicked: {m}"),
            }
        }
        assert!(results[0].is_ok() && not_run > 0, "expected outputs and holes, {not_run} holes");
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
        drop(results);
        assert_eq!(made.load(Ordering::Relaxed), dropped.load(Ordering::Relaxed));
    }
}
