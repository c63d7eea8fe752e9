//! The process-wide default pool, built on first use, and free functions that run on
//! it, for programs that would rather not pass a `&Pool` around.
//!
//! The pool lives until the process exits (its workers are parked while there is no
//! work). It is set once: by [`PoolBuilder::build_global`] before first use, or with
//! the default settings by the first call to [`global`] or to a free function.

use crate::engine::ctx::Ctx;
use crate::outcome::error::RunError;
use crate::pool::BuildError;
use crate::pool::Pool;
use crate::pool::PoolBuilder;
use crate::stats::RunStats;
use crate::stream::{Scope, Source, Stream};
use std::convert::Infallible;
use std::ops::Range;
use std::sync::OnceLock;

static GLOBAL: OnceLock<Pool> = OnceLock::new();

/// The global pool, built with [`Pool::new`]'s defaults (a pinned worker per core) on
/// first use unless [`PoolBuilder::build_global`] built it before.
///
/// # Panics
///
/// If the pool is not built yet and building it fails (the operating system refuses
/// to start a thread). Call [`PoolBuilder::build_global`] first to handle that error.
///
/// ```
/// let squares = fanout::global().map_index(0..4, |i| i * i);
/// assert_eq!(squares, [0, 1, 4, 9]);
/// ```
pub fn global() -> &'static Pool {
    GLOBAL.get_or_init(|| match Pool::new() {
        Ok(pool) => pool,
        Err(e) => panic!("fanout: could not build the global pool: {e}"),
    })
}

impl PoolBuilder {
    /// Builds the pool and makes it the [`global`] one, which the free functions
    /// ([`fanout::run`](crate::run), [`fanout::map`](crate::map), ...) use. Call it
    /// once, before anything uses the global pool.
    ///
    /// # Errors
    ///
    /// [`BuildError::GlobalAlreadyBuilt`] if the global pool exists already (built by
    /// an earlier call, or with the defaults by a first use); the pool this call
    /// built is then stopped and joined. Any error of [`build`](PoolBuilder::build).
    ///
    /// ```standalone_crate
    /// let pool = fanout::Pool::builder().num_threads(2).build_global()?;
    /// assert_eq!(pool.num_threads(), 2);
    /// assert!(std::ptr::eq(pool, fanout::global()));
    /// // Set once: a second configuration is refused.
    /// assert!(matches!(
    ///     fanout::Pool::builder().num_threads(3).build_global(),
    ///     Err(fanout::BuildError::GlobalAlreadyBuilt)
    /// ));
    /// # Ok::<(), fanout::BuildError>(())
    /// ```
    pub fn build_global(self) -> Result<&'static Pool, BuildError> {
        if GLOBAL.get().is_some() {
            return Err(BuildError::GlobalAlreadyBuilt);
        }
        // Built outside the `OnceLock`, so that a worker's start hook that uses the
        // global pool cannot wait on this initialization; the loser of a race is
        // dropped, which joins its threads.
        let mut built = Some(self.build()?);
        let global = GLOBAL.get_or_init(|| built.take().expect("taken once"));
        match built {
            None => Ok(global),
            Some(_lost) => Err(BuildError::GlobalAlreadyBuilt),
        }
    }
}

/// [`Pool::run`] on the [`global`] pool: runs `f` on every seed and on every
/// follow-on item a task pushes.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// let visited = AtomicU64::new(0);
/// fanout::run([1u32], |depth, ctx| {
///     visited.fetch_add(1, Ordering::Relaxed);
///     if depth < 4 {
///         ctx.push(depth + 1);
///         ctx.push(depth + 1);
///     }
/// });
/// assert_eq!(visited.into_inner(), 15);
/// ```
pub fn run<T, I, F>(seeds: I, f: F) -> RunStats
where
    T: Send,
    I: IntoIterator<Item = T>,
    F: Fn(T, &mut Ctx<'_, T>) + Sync,
{
    global().run(seeds, f)
}

/// [`Pool::run_fold`] on the [`global`] pool: a follow-on run that folds into one
/// accumulator per thread, then reduces them.
///
/// ```
/// let sum = fanout::run_fold(0..100u64, || 0, |sum, i, _ctx| sum + i, |a, b| a + b);
/// assert_eq!(sum, 4950);
/// ```
pub fn run_fold<T, A, I, Id, F, Red>(seeds: I, identity: Id, f: F, reduce: Red) -> A
where
    T: Send,
    A: Send,
    I: IntoIterator<Item = T>,
    Id: Fn() -> A + Sync,
    F: Fn(A, T, &mut Ctx<'_, T>) -> A + Sync,
    Red: Fn(A, A) -> A,
{
    global().run_fold(seeds, identity, f, reduce)
}

/// [`Pool::for_each_index`] on the [`global`] pool.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// let total = AtomicUsize::new(0);
/// fanout::for_each_index(0..10, |i| {
///     total.fetch_add(i, Ordering::Relaxed);
/// });
/// assert_eq!(total.into_inner(), 45);
/// ```
pub fn for_each_index<F>(range: Range<usize>, f: F) -> RunStats
where
    F: Fn(usize) + Sync,
{
    global().for_each_index(range, f)
}

/// [`Pool::for_each`] on the [`global`] pool.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// let total = AtomicU32::new(0);
/// fanout::for_each(&[1, 2, 3], |x| {
///     total.fetch_add(*x, Ordering::Relaxed);
/// });
/// assert_eq!(total.into_inner(), 6);
/// ```
pub fn for_each<T, F>(items: &[T], f: F) -> RunStats
where
    T: Sync,
    F: Fn(&T) + Sync,
{
    global().for_each(items, f)
}

/// [`Pool::map_index`] on the [`global`] pool: results in index order.
///
/// ```
/// assert_eq!(fanout::map_index(0..4, |i| i * 10), [0, 10, 20, 30]);
/// ```
pub fn map_index<R, F>(range: Range<usize>, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(usize) -> R + Sync,
{
    global().map_index(range, f)
}

/// [`Pool::map`] on the [`global`] pool: results in input order.
///
/// ```
/// let lengths = fanout::map(&["a", "bb", "ccc"], |s| s.len());
/// assert_eq!(lengths, [1, 2, 3]);
/// ```
pub fn map<T, R, F>(items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    global().map(items, f)
}

/// [`Pool::fold_index`] on the [`global`] pool.
///
/// ```
/// let sum = fanout::fold_index(0..1000, || 0u64, |a, i| a + i as u64, |a, b| a + b);
/// assert_eq!(sum, 499_500);
/// ```
pub fn fold_index<A, Id, F, Red>(range: Range<usize>, identity: Id, fold: F, reduce: Red) -> A
where
    A: Send,
    Id: Fn() -> A + Sync,
    F: Fn(A, usize) -> A + Sync,
    Red: Fn(A, A) -> A,
{
    global().fold_index(range, identity, fold, reduce)
}

/// [`Pool::fold`] on the [`global`] pool.
///
/// ```
/// let longest = fanout::fold(&["a", "ccc", "bb"], || 0, |m, s| m.max(s.len()), usize::max);
/// assert_eq!(longest, 3);
/// ```
pub fn fold<T, A, Id, F, Red>(items: &[T], identity: Id, fold: F, reduce: Red) -> A
where
    T: Sync,
    A: Send,
    Id: Fn() -> A + Sync,
    F: Fn(A, &T) -> A + Sync,
    Red: Fn(A, A) -> A,
{
    global().fold(items, identity, fold, reduce)
}

/// [`Pool::try_for_each`] on the [`global`] pool: the first error stops the run.
///
/// ```
/// let r = fanout::try_for_each(&[1, 2, -3], |x| if *x < 0 { Err(*x) } else { Ok(()) });
/// assert!(matches!(r, Err(fanout::RunError::Failed { error: -3, index: Some(2) })));
/// ```
pub fn try_for_each<T, E, F>(items: &[T], f: F) -> Result<(), RunError<E>>
where
    T: Sync,
    E: Send,
    F: Fn(&T) -> Result<(), E> + Sync,
{
    global().try_for_each(items, f)
}

/// [`Pool::try_map`] on the [`global`] pool: all results in input order, or the first
/// error.
///
/// ```
/// let parsed = fanout::try_map(&["1", "2", "3"], |s| s.parse::<u32>());
/// assert_eq!(parsed.unwrap(), [1, 2, 3]);
/// ```
pub fn try_map<T, R, E, F>(items: &[T], f: F) -> Result<Vec<R>, RunError<E>>
where
    T: Sync,
    R: Send,
    E: Send,
    F: Fn(&T) -> Result<R, E> + Sync,
{
    global().try_map(items, f)
}

/// [`Pool::stream`] on the [`global`] pool: a parallel stream over `source`, in input
/// order.
///
/// ```
/// let mut total = 0u64;
/// fanout::stream(1..=100u64).map(|x| x * x).for_each(|sq| total += sq)?;
/// assert_eq!(total, 338_350);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn stream<S>(source: S) -> Stream<'static, 'static, S::IntoIter, Source, Infallible>
where
    S: IntoIterator,
    S::IntoIter: Send + 'static,
    S::Item: Send + 'static,
{
    global().stream(source)
}

/// [`Pool::scope`] on the [`global`] pool: runs `f` with a [`Scope`] whose streams may
/// borrow from the caller's stack.
///
/// ```
/// let words = ["fan", "out", "fan", "in"];
/// let fans = fanout::scope(|s| s.stream(words.iter()).filter(|w| **w == "fan").into_iter().count());
/// assert_eq!(fans, 2);
/// ```
pub fn scope<'env, T>(f: impl for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T) -> T {
    global().scope(f)
}
