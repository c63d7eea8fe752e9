//! Streaming fan-out/fan-in: an ordered parallel map over any iterator, with a bounded
//! reorder window and backpressure.
//!
//! [`Pool::stream`] turns an iterator (of unknown length, possibly slow or blocking:
//! lines of a file, records from a socket) into a parallel stream. Stages (`map`,
//! `filter`, `filter_map`, `flat_map`, `inspect`, `try_map`) are fused into one function
//! per batch; the consumer gets an [`Iterator`] on the calling thread
//! ([`Stream::into_iter`]) or drives a sink ([`Stream::for_each`]). Every thread that
//! works on the stream runs every stage; [`Stream::parallelism`] caps how many run one
//! stage at once (for a stage that holds a scarce resource).
//!
//! ```
//! let pool = fanout::Pool::builder().num_threads(2).build()?;
//! let lines = ["3", "1", "x", "4"].into_iter();
//! let squares: Vec<u32> = pool
//!     .stream(lines)
//!     .filter_map(|s| s.parse::<u32>().ok())
//!     .map(|n| n * n)
//!     .into_iter()
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(squares, [9, 1, 16]); // input order
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The window
//!
//! The source is pulled by one thread at a time, in order, in batches (1, 2, 4, ... up
//! to 256 items, and about 200 us of stage work, so that slow items still spread over
//! the threads); each batch runs through the stages on whichever thread pulled it, and
//! its outputs wait in the *reorder window* until the consumer reaches them. The window
//! is counted in **source items**: the source is never more than `window` items ahead
//! of the consumer (items pulled and not yet yielded, including those in flight in the
//! stages and those waiting to be reordered). When the window is full, nobody pulls:
//! a slow consumer stalls the source instead of growing buffers.
//!
//! - *What it costs*: memory for `window` items and their outputs (times the expansion
//!   of a `flat_map`), whatever the input's length.
//! - *What it absorbs*: one slow item holds back the ordered output, but not the other
//!   threads, which keep pulling and processing until `window` items are waiting behind
//!   it. A slow item that costs as much as `s` ordinary ones stalls nothing as long as
//!   `window` is well above `s * threads`; a bursty consumer is absorbed up to `window`
//!   items. Unordered streams ([`Stream::unordered`]) hand batches out as they finish.
//! - *Default*: `1024 * (threads + 1)` items, enough for four full batches per thread
//!   so that batching never starves a thread; configure with [`Stream::window`]. A
//!   window below `2 * (threads + 1)` items forces batches of one item.
//!
//! # Errors, panics, early exit
//!
//! The consumer's items are `Result<T, RunError<E>>`. A panic in a stage (or in the
//! source) ends the stream with [`RunError::Panicked`] naming the item's sequence number
//! (its position in the source, from 0). A [`Stream::try_map`] stage that returns
//! `Err` stops the stream at the first error (errgroup style): the source is not pulled
//! again, the items before the failing one are still delivered (in order, for ordered
//! streams), then [`RunError::Failed`] with its sequence number, and the stream ends. To
//! let errors pass through instead, return a `Result` from [`Stream::map`]: the errors
//! travel in order like any other item.
//!
//! Dropping the iterator (or stopping after `take(n)`) stops the source and the workers
//! promptly: no new batch starts; batches in flight finish their stages, and the drop
//! waits for the workers to let go of the stream (it never waits for the source to be
//! exhausted).
//!
//! # Allocation-heavy stages
//!
//! A batch of items that each own heap memory (a `String` per line from
//! `BufRead::lines`, an output `String` per item) keeps a few hundred allocations
//! alive at once on the thread that pulled it, and the consumer frees outputs that
//! workers allocated. glibc's allocator serves that pattern slowly: in the stream
//! bench (2 cores) a `BufRead::lines` source costs about 80 ns more per line through
//! a stream than in a plain loop, and a read-rewrite-write pipeline ran at 1.10-1.27x
//! sequential, against 1.26-1.54x with mimalloc as the global allocator
//! (`examples/stream_allocator.rs`). The cause is glibc's per-thread cache, which
//! keeps 7 freed blocks per size class: the rest of a batch's blocks go through the
//! shared arena. Run alone on the consumer (`limit(1)`), the `BufRead::lines` source
//! cost 70-92 ns more per line than the plain loop under the default settings, and
//! 12-25 ns more with `GLIBC_TUNABLES=glibc.malloc.tcache_count=1000` in the
//! environment. For such pipelines, use a thread-caching allocator (mimalloc,
//! jemalloc) in the program, or raise glibc's cache with that variable; for items
//! that own nothing the allocator does not matter.
//!
//! # Run options
//!
//! [`Runner::stream`](crate::Runner::stream) starts a stream under a runner's cancel
//! token, deadline, limit and progress handle: a cancel or the deadline ends the stream
//! like an error does, with [`RunError::Cancelled`] or [`RunError::TimedOut`] after the
//! batch being yielded.
//!
//! # Borrowing: scoped streams
//!
//! The pool's workers use a stream's source and stages for as long as its iterator
//! lives, and an iterator may be leaked, so [`Pool::stream`] takes only what owns its
//! data (`'static`). Inside [`Pool::scope`] (or [`fanout::scope`](crate::scope) on the
//! default pool), [`Scope::stream`] takes sources and stages that borrow from the
//! caller's stack, as [`std::thread::scope`] does for threads: the scope ends every
//! stream left open when it returns. [`Runner::stream_scoped`](crate::Runner::stream_scoped)
//! does the same under run options.
//!
//! ```
//! let pool = fanout::Pool::builder().num_threads(2).build()?;
//! let stop_words = ["a", "the"];
//! let text = String::from("the fan and a pool");
//! let kept: Vec<&str> = pool.scope(|s| {
//!     s.stream(text.split(' ')).filter(|w| !stop_words.contains(w)).collect::<Vec<_>>()
//! })?;
//! assert_eq!(kept, ["fan", "and", "pool"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod gate;
mod pipe;
mod scope;
mod window;

pub use gate::{Free, Gate, StageGate};
pub use pipe::{Filter, FilterMap, FlatMap, Inspect, Limit, Map, Pipe, Source, TryMap};
pub use scope::Scope;

use crate::cancel::CancelToken;
use crate::outcome::error::RunError;
use crate::pool::Pool;
use crate::pool::registry::Registered;
use crate::progress::Counters;
use crate::progress::Progress;
use crate::sync::Arc;
use crate::work::failure::cancelled_error;
use scope::{InScope, OpenStreams};
use std::convert::Infallible;
use std::marker::PhantomData;
use std::time::Instant;
use window::{Batch, Config, Outside, Window};

/// The most items a batch may hold.
const MAX_BATCH: usize = 256;

/// A parallel stream over an iterator, being set up: add stages, then consume it with
/// [`Stream::into_iter`] or [`Stream::for_each`]. Made by [`Pool::stream`] or
/// [`Scope::stream`].
///
/// `'p` borrows the pool; `'s` is what the source and stages may borrow: `'static`
/// for [`Pool::stream`], the scope for [`Scope::stream`]. `I` is the source, `P` the
/// fused chain of stages and `E` the error type of its `try_map` stages
/// ([`Infallible`] when there are none).
///
/// `'s` cannot be shortened: a stream that no scope watches must not take borrowing
/// stages later.
///
/// ```compile_fail
/// use fanout::stream::{Source, Stream};
/// fn shorten<'p, 'a>(
///     s: Stream<'p, 'static, std::ops::Range<u32>, Source, std::convert::Infallible>,
/// ) -> Stream<'p, 'a, std::ops::Range<u32>, Source, std::convert::Infallible> {
///     s
/// }
/// ```
#[must_use = "a stream does nothing until it is consumed"]
pub struct Stream<'p, 's, I, P, E> {
    pool: &'p Pool,
    /// The scope that closes the stream if its iterator is leaked; `None` only when
    /// `'s` is `'static` (see [`Scope`]).
    scope: Option<&'p OpenStreams<'s>>,
    source: I,
    pipe: P,
    window: Option<usize>,
    ordered: bool,
    /// A stage was given a parallelism of 0: the stream yields `ZeroLimit` and stops.
    zero_parallelism: bool,
    /// The run options of the [`Runner`](crate::Runner) that made the stream.
    options: Options,
    _err: PhantomData<fn() -> E>,
    /// Invariant in `'s`: a `'static` stream must not be shortened to a scope's
    /// lifetime, or its stages could borrow what nothing closes it before.
    _borrows: PhantomData<fn(&'s ()) -> &'s ()>,
}

/// A runner's options, as a stream uses them (see [`Runner::stream`](crate::Runner::stream)).
#[derive(Clone, Debug, Default)]
pub(crate) struct Options {
    pub(crate) token: Option<CancelToken>,
    /// The runner's deadline or its token's, whichever comes first.
    pub(crate) deadline: Option<Instant>,
    pub(crate) limit: Option<usize>,
    pub(crate) progress: Option<Progress>,
}

impl<I, P, E> std::fmt::Debug for Stream<'_, '_, I, P, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("window", &self.window).field("ordered", &self.ordered).finish_non_exhaustive()
    }
}

impl Pool {
    /// A parallel stream over `source`, in input order, with the default window.
    ///
    /// The source is pulled by one thread at a time, in order; it may be slow or block
    /// (only the thread pulling it waits). It and the stages must be `Send + 'static`,
    /// because the pool's workers keep using them for as long as the consumer's
    /// iterator lives; to borrow from the stack, start the stream in a
    /// [`Pool::scope`].
    ///
    /// ```compile_fail
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let needle = String::from("x");
    /// let _ = pool.stream(0..3usize).map(|i| needle.len() + i).for_each(drop); // borrows: use a scope
    /// ```
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let mut total = 0u64;
    /// pool.stream(1..=100u64).map(|x| x * x).for_each(|sq| total += sq)?;
    /// assert_eq!(total, 338_350);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stream<S>(&self, source: S) -> Stream<'_, 'static, S::IntoIter, Source, Infallible>
    where
        S: IntoIterator,
        S::IntoIter: Send + 'static,
        S::Item: Send + 'static,
    {
        self.stream_with(source, Options::default())
    }

    /// A stream under a runner's `options`.
    pub(crate) fn stream_with<S>(
        &self,
        source: S,
        options: Options,
    ) -> Stream<'_, 'static, S::IntoIter, Source, Infallible>
    where
        S: IntoIterator,
        S::IntoIter: Send + 'static,
        S::Item: Send + 'static,
    {
        Stream::new_static(self, source.into_iter(), options)
    }
}

impl<'p, I> Stream<'p, 'static, I, Source, Infallible> {
    /// A stream that borrows nothing, which no scope needs to watch.
    fn new_static(pool: &'p Pool, source: I, options: Options) -> Self {
        Stream::new(pool, None, source, options)
    }
}

impl<'p, 's, I> Stream<'p, 's, I, Source, Infallible> {
    /// A stream that may borrow for `'s`, ended by `scope` if its iterator is leaked.
    fn new_scoped(pool: &'p Pool, scope: &'p OpenStreams<'s>, source: I, options: Options) -> Self {
        Stream::new(pool, Some(scope), source, options)
    }

    /// A stream with no stages yet. Only `new_static` passes no scope: a stream without
    /// one has `'s = 'static`, which the `SAFETY` argument in `into_iter` relies on.
    fn new(pool: &'p Pool, scope: Option<&'p OpenStreams<'s>>, source: I, options: Options) -> Self {
        Stream {
            pool,
            scope,
            source,
            pipe: Source,
            window: None,
            ordered: true,
            zero_parallelism: false,
            options,
            _err: PhantomData,
            _borrows: PhantomData,
        }
    }
}

impl<'p, 's, I, P, E> Stream<'p, 's, I, P, E>
where
    I: Iterator + Send,
    I::Item: Send,
    P: Pipe<I::Item, E>,
    E: Send,
{
    /// The most source items that may be pulled ahead of the consumer (at least 1; see
    /// the module docs for what it costs and absorbs).
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let v: Vec<_> = pool.stream(0..10).window(4).map(|x| x + 1).into_iter().collect::<Result<_, _>>()?;
    /// assert_eq!(v, (1..=10).collect::<Vec<_>>());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn window(mut self, items: usize) -> Self {
        self.window = Some(items.max(1));
        self
    }

    /// Output in input order (the default): outputs wait in the window until every
    /// earlier item's outputs have been yielded.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let v: Vec<_> = pool.stream(0..1000).unordered().ordered().into_iter().collect::<Result<_, _>>()?;
    /// assert!(v.iter().copied().eq(0..1000));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ordered(mut self) -> Self {
        self.ordered = true;
        self
    }

    /// Output in completion order: each batch is yielded as soon as it is done, so a
    /// slow item holds back only its own batch. Items of one batch stay in order.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let mut v: Vec<_> = pool.stream(0..1000).unordered().into_iter().collect::<Result<_, _>>()?;
    /// v.sort();
    /// assert!(v.iter().copied().eq(0..1000));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unordered(mut self) -> Self {
        self.ordered = false;
        self
    }

    /// Applies `f` to every item.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let v: Vec<_> = pool.stream(["a", "bb"]).map(str::len).into_iter().collect::<Result<_, _>>()?;
    /// assert_eq!(v, [1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn map<U, F>(self, f: F) -> Stream<'p, 's, I, Map<P, F>, E>
    where
        F: Fn(P::Out) -> U + Send + Sync + 's,
        U: Send + 's,
    {
        self.stage(|p| Map::new(p, f))
    }

    /// Applies a fallible `f` to every item; the first `Err` ends the stream (see the
    /// module docs). All `try_map` stages of a stream share one error type.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let mut it = pool.stream(["1", "2", "x", "4"]).try_map(|s| s.parse::<u8>()).into_iter();
    /// assert_eq!(it.next().unwrap()?, 1);
    /// assert_eq!(it.next().unwrap()?, 2);
    /// let err = it.next().unwrap().unwrap_err();
    /// assert!(matches!(err, fanout::RunError::Failed { index: Some(2), .. }));
    /// assert!(it.next().is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_map<U, E2, F>(self, f: F) -> Stream<'p, 's, I, TryMap<P, F>, E2>
    where
        P: Pipe<I::Item, E2>,
        F: Fn(<P as Pipe<I::Item, E2>>::Out) -> Result<U, E2> + Send + Sync + 's,
        U: Send + 's,
        E2: Send + 's,
    {
        self.stage(|p| TryMap::new(p, f))
    }

    /// Keeps the items for which `f` returns `true`.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let v: Vec<_> = pool.stream(0..10).filter(|x| x % 3 == 0).into_iter().collect::<Result<_, _>>()?;
    /// assert_eq!(v, [0, 3, 6, 9]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn filter<F>(self, f: F) -> Stream<'p, 's, I, Filter<P, F>, E>
    where
        F: Fn(&P::Out) -> bool + Send + Sync + 's,
    {
        self.stage(|p| Filter::new(p, f))
    }

    /// Maps every item to an `Option`, keeping the `Some` values.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let v: Vec<i32> = pool.stream(["1", "x", "3"]).filter_map(|s| s.parse().ok()).into_iter().collect::<Result<_, _>>()?;
    /// assert_eq!(v, [1, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn filter_map<U, F>(self, f: F) -> Stream<'p, 's, I, FilterMap<P, F>, E>
    where
        F: Fn(P::Out) -> Option<U> + Send + Sync + 's,
        U: Send + 's,
    {
        self.stage(|p| FilterMap::new(p, f))
    }

    /// Maps every item to an iterable and yields its items, in order.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let v: Vec<_> = pool.stream(1..4).flat_map(|n| 0..n).into_iter().collect::<Result<_, _>>()?;
    /// assert_eq!(v, [0, 0, 1, 0, 1, 2]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flat_map<J, F>(self, f: F) -> Stream<'p, 's, I, FlatMap<P, F, J>, E>
    where
        F: Fn(P::Out) -> J + Send + Sync + 's,
        J: IntoIterator + 's,
        J::Item: Send + 's,
    {
        self.stage(|p| FlatMap::new(p, f))
    }

    /// Calls `f` on every item as it passes (on a worker thread), and passes it on.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let s = Arc::clone(&seen);
    /// let n = pool.stream(0..50).inspect(move |_| { s.fetch_add(1, Ordering::Relaxed); }).into_iter().count();
    /// assert_eq!((n, seen.load(Ordering::Relaxed)), (50, 50));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn inspect<F>(self, f: F) -> Stream<'p, 's, I, Inspect<P, F>, E>
    where
        F: Fn(&P::Out) + Send + Sync + 's,
    {
        self.stage(|p| Inspect::new(p, f))
    }

    /// Lets at most `n` threads run the stage just added at the same time, like a
    /// semaphore around its function; the other stages stay as parallel as the pool.
    ///
    /// For stages that use a scarce resource (connections, a device, file handles),
    /// or that are not worth running on every core. The limit covers the call of the
    /// stage's function only: a resource must be used up and let go inside it, not
    /// returned in the output (for a `flat_map`, not walked lazily by the iterable it
    /// returns; collect inside the function if the resource is needed while
    /// iterating).
    ///
    /// A thread that finds the stage full spins briefly, then sleeps until a thread
    /// leaving the stage wakes it, holding its batch meanwhile (while it waits, a pool
    /// worker serves no other run). Entering and leaving cost two shared atomic
    /// operations per item (30-45 ns when never full, measured on 2 cores), so give a
    /// limited stage items of a microsecond or more. When every thread contends for a
    /// stage limited to 1, each hand-over wakes a sleeping thread, as a contended
    /// `Mutex` would: on 2 cores, 5 us items ran at 0.7x their sequential speed (a
    /// `std::sync::Mutex` taken in the closure: 0.8x) and 20 us items at 0.9x. A limit
    /// of the pool's thread count plus one (the consumer) or more changes nothing.
    /// Like any semaphore, a limited stage must not wait for work that needs the same
    /// stage.
    ///
    /// `n == 0` would never let an item through: the stream then yields
    /// [`RunError::ZeroLimit`] and pulls nothing. The bare source cannot be limited
    /// (one thread pulls it at a time already), nor a stage twice: both fail to
    /// compile.
    ///
    /// ```compile_fail
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let _ = pool.stream(0..10).parallelism(1); // no stage to limit
    /// ```
    ///
    /// ```compile_fail
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let _ = pool.stream(0..10).map(|x| x + 1).parallelism(1).parallelism(2); // twice
    /// ```
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    /// let (i, m) = (Arc::clone(&inside), Arc::clone(&most));
    /// let out: Vec<u64> = pool
    ///     .stream(0..200u64)
    ///     .map(move |x| {
    ///         // Say this stage holds the one connection we have.
    ///         m.fetch_max(i.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
    ///         i.fetch_sub(1, Ordering::SeqCst);
    ///         x + 1
    ///     })
    ///     .parallelism(1)
    ///     .map(|x| x * x) // runs on every thread
    ///     .into_iter()
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(out[9], 100);
    /// assert_eq!(most.load(Ordering::SeqCst), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parallelism(self, n: usize) -> Stream<'p, 's, I, P::Limited, E>
    where
        P: Limit,
    {
        let zero = n == 0;
        let mut s = self.stage(|p| p.limit(Gate::new(n.max(1))));
        s.zero_parallelism |= zero;
        s
    }

    /// Runs the stream, calling `sink` on the calling thread for every output, in order
    /// (or completion order for unordered streams). Returns the error or panic that
    /// ended the stream, if any; `sink` may borrow from the caller.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let mut out = String::new();
    /// pool.stream("fan out".chars()).map(|c| c.to_ascii_uppercase()).for_each(|c| out.push(c))?;
    /// assert_eq!(out, "FAN OUT");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_each(self, mut sink: impl FnMut(P::Out)) -> Result<(), RunError<E>>
    where
        I: 's,
        P: 's,
        E: 's,
    {
        for item in self {
            sink(item?);
        }
        Ok(())
    }

    /// Like [`Stream::for_each`], with a sink that may fail (a write, a send): the
    /// sink's first error ends the stream (the source is not pulled again, and the
    /// workers stop as when the iterator is dropped) and is returned. An error or panic
    /// of the stream itself comes back converted into the sink's error type, so a sink
    /// returning `Box<dyn Error + Send + Sync>` (or `anyhow::Error`) takes both.
    ///
    /// ```
    /// use std::io::Write;
    ///
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let mut out = Vec::new();
    /// pool.stream(1..=3u32)
    ///     .map(|n| n * n)
    ///     .try_for_each(|sq| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    ///         Ok(writeln!(out, "{sq}")?)
    ///     })?;
    /// assert_eq!(out, b"1\n4\n9\n");
    /// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    /// ```
    pub fn try_for_each<F>(self, mut sink: impl FnMut(P::Out) -> Result<(), F>) -> Result<(), F>
    where
        F: From<RunError<E>>,
        I: 's,
        P: 's,
        E: 's,
    {
        for item in self {
            sink(item?)?;
        }
        Ok(())
    }

    /// Runs the stream and collects its outputs, in order (or completion order for
    /// unordered streams), into any collection; the error or panic that ended the
    /// stream comes back instead, as from `into_iter().collect::<Result<C, _>>()`.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let squares = pool.stream(1..=4u32).map(|n| n * n).collect::<Vec<_>>()?;
    /// assert_eq!(squares, [1, 4, 9, 16]);
    /// let parsed = pool.stream(["1", "x"]).try_map(|s| s.parse::<u8>()).collect::<Vec<_>>();
    /// assert!(matches!(parsed, Err(fanout::RunError::Failed { index: Some(1), .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn collect<C>(self) -> Result<C, RunError<E>>
    where
        C: FromIterator<P::Out>,
        I: 's,
        P: 's,
        E: 's,
    {
        self.into_iter().collect()
    }

    fn config(&self) -> Config {
        let threads = self.pool.num_threads();
        let window = self.window.unwrap_or(1024 * (threads + 1)).max(1);
        let max_batch = (window / (2 * (threads + 1))).clamp(1, MAX_BATCH);
        // The consumer is one of the `limit` threads.
        let worker_limit = self.options.limit.map(|n| n.saturating_sub(1));
        Config { window, max_batch, ordered: self.ordered, workers: threads, worker_limit }
    }
}

impl<'p, 's, I, P, E> Stream<'p, 's, I, P, E> {
    /// Adds a stage (and, for `try_map`, fixes the error type).
    fn stage<Q, E2>(self, make: impl FnOnce(P) -> Q) -> Stream<'p, 's, I, Q, E2> {
        Stream {
            pool: self.pool,
            scope: self.scope,
            source: self.source,
            pipe: make(self.pipe),
            window: self.window,
            ordered: self.ordered,
            zero_parallelism: self.zero_parallelism,
            options: self.options,
            _err: PhantomData,
            _borrows: PhantomData,
        }
    }
}

impl<'p, 's, I, P, E> IntoIterator for Stream<'p, 's, I, P, E>
where
    I: Iterator + Send + 's,
    I::Item: Send,
    P: Pipe<I::Item, E> + 's,
    E: Send + 's,
{
    type Item = Result<P::Out, RunError<E>>;
    type IntoIter = StreamIter<'p, 's, I, P, E>;

    /// Starts the stream: the pool's workers may pull and process from now on. The
    /// iterator yields the outputs on the calling thread, which also pulls and processes
    /// batches itself whenever the next output is not ready.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let mut it = pool.stream(0u64..).map(|x| x * 2).into_iter(); // an endless source
    /// assert_eq!(it.next().unwrap()?, 0);
    /// let first: Vec<u64> = it.take(3).collect::<Result<_, _>>()?; // dropping it stops the source
    /// assert_eq!(first, [2, 4, 6]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn into_iter(self) -> StreamIter<'p, 's, I, P, E> {
        let cfg = self.config();
        let shared = Arc::clone(self.pool.shared());
        let Options { token, deadline, limit, progress } = self.options;
        let outside = Outside { token, deadline };
        // Already cancelled or past the deadline: the stream pulls nothing.
        let stopped = outside.reason().map(|reason| cancelled_error(reason, 0));
        let end = if self.zero_parallelism || limit == Some(0) { Some(RunError::ZeroLimit) } else { stopped };
        let window = Arc::new(Window::new(shared, self.source, self.pipe, cfg, outside));
        if end.is_some() {
            // Before registering: no worker may ever join, so no item is pulled.
            window.stop();
        }
        let progress = progress.map(|p| {
            let counters = p.attach(1, None);
            counters.slot(0).set_active(end.is_none());
            counters
        });
        let in_scope = self.scope.map(|scope| scope.add(&window));
        // SAFETY: the window is owned by the `Arc` the guard holds, and the iterator's
        // drop withdraws it (the guard's `Drop`) before letting go of that `Arc`. If the
        // iterator is leaked instead, so is the `Arc`, and: without a scope, `'s` is
        // `'static` (`Stream::new_static`; `'s` is invariant), so the leaked window and
        // all it borrows stay valid for good; with one, the scope holds an `Arc` too and
        // withdraws the window when it ends, before `'s` does.
        let window = unsafe { Registered::new(window) };
        StreamIter {
            window,
            _in_scope: in_scope,
            current: Vec::new().into_iter(),
            release: 0,
            end,
            finished: false,
            delivered: 0,
            progress,
        }
    }
}

/// The consumer's side of a running stream: yields the outputs on the calling thread.
/// Dropping it stops the stream (see the [`stream`](self) module docs).
pub struct StreamIter<'p, 's, I, P, E>
where
    I: Iterator + Send,
    I::Item: Send,
    P: Pipe<I::Item, E>,
    E: Send,
{
    /// The stream's window, registered with the pool while this lives. Declared
    /// before `_in_scope`, so that it is withdrawn (every worker out of it) before the
    /// scope forgets it: a scope never ends while a worker may use what a stream
    /// borrows.
    window: Registered<Arc<Window<I, P, E>>>,
    /// The stream's entry in the scope it was started in (see [`Scope`]).
    _in_scope: Option<InScope<'p, 's>>,
    current: std::vec::IntoIter<P::Out>,
    /// Source items of the batch being yielded, released when it is done.
    release: usize,
    /// The error that ends the stream after `current`.
    end: Option<RunError<E>>,
    finished: bool,
    /// Source items whose outputs were all yielded.
    delivered: u64,
    /// Where the stream reports progress (`Runner::progress`): one slot, the consumer's.
    progress: Option<Arc<Counters>>,
}

impl<I, P, E> std::fmt::Debug for StreamIter<'_, '_, I, P, E>
where
    I: Iterator + Send,
    I::Item: Send,
    P: Pipe<I::Item, E>,
    E: Send,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamIter").field("finished", &self.finished).finish_non_exhaustive()
    }
}

/// Counters of a running stream, from [`StreamIter::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StreamStats {
    /// Source items in batches that went through the stages so far.
    pub pulled: u64,
    /// The largest number of source items that were ever pulled (or reserved for
    /// pulling) and not yet yielded: never above the window.
    pub max_buffered: usize,
    /// The window in force, in source items.
    pub window: usize,
    /// Batches processed by the consumer's thread while it waited for its next output.
    pub batches_by_consumer: u64,
    /// Batches processed by the pool's workers.
    pub batches_by_workers: u64,
}

impl<I, P, E> StreamIter<'_, '_, I, P, E>
where
    I: Iterator + Send,
    I::Item: Send,
    P: Pipe<I::Item, E>,
    E: Send,
{
    /// The stream's counters so far.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let mut it = pool.stream(0..10_000).window(64).into_iter();
    /// assert_eq!(it.by_ref().count(), 10_000);
    /// let stats = it.stats();
    /// assert_eq!(stats.pulled, 10_000);
    /// assert!(stats.max_buffered <= 64);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> StreamStats {
        let c = self.window.counts();
        StreamStats {
            pulled: c.pulled,
            max_buffered: c.max_outstanding,
            window: self.window.window(),
            batches_by_consumer: c.by_consumer,
            batches_by_workers: c.by_workers,
        }
    }

    fn take_batch(&mut self, batch: Batch<P::Out, E>) {
        self.release = batch.inputs;
        self.current = batch.outs.into_iter();
        self.end = batch.end;
    }
}

impl<I, P, E> Iterator for StreamIter<'_, '_, I, P, E>
where
    I: Iterator + Send,
    I::Item: Send,
    P: Pipe<I::Item, E>,
    E: Send,
{
    type Item = Result<P::Out, RunError<E>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(x) = self.current.next() {
                return Some(Ok(x));
            }
            if let Some(e) = self.end.take() {
                self.finished = true;
                return Some(Err(e));
            }
            if self.finished {
                return None;
            }
            let release = std::mem::take(&mut self.release);
            self.delivered += release as u64;
            if let Some(p) = &self.progress {
                p.slot(0).add_completed(release as u64);
            }
            match self.window.next_batch(release) {
                Some(batch) => self.take_batch(batch),
                None => {
                    self.finished = true;
                    if let Some(p) = &self.progress {
                        p.slot(0).set_active(false);
                    }
                    // Halted by the token or the deadline: say so, with what was done.
                    return self.window.halted().map(|reason| Err(cancelled_error(reason, self.delivered)));
                }
            }
        }
    }
}

impl<I, P, E> Drop for StreamIter<'_, '_, I, P, E>
where
    I: Iterator + Send,
    I::Item: Send,
    P: Pipe<I::Item, E>,
    E: Send,
{
    fn drop(&mut self) {
        if let Some(p) = &self.progress {
            p.slot(0).set_active(false);
        }
        // No batch starts after this; the fields' drops then withdraw the window and
        // take it off its scope's list, in that order.
        self.window.stop();
    }
}

/// Small streams, sized to run under Miri too (`cargo +nightly miri test --lib --
/// stream::tests::`): the iterator hands a raw pointer to its heap-allocated window to
/// the pool's registry, and workers reach the window only through it. Miri checks that
/// no worker touches the window after the iterator's drop (early, at the end, after a
/// panic) has freed it, and that every item and output is dropped exactly once.
#[cfg(all(test, not(loom)))]
mod tests {
    use crate::outcome::error::RunError;
    use crate::pool::Pool;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Source items per stream: Miri interprets every instruction.
    const N: u64 = if cfg!(miri) { 24 } else { 2_000 };

    fn pool() -> Pool {
        Pool::builder().num_threads(2).pin(false).build().unwrap()
    }

    /// An item that owns heap memory and counts its drops.
    struct Tracked(Box<u64>, Arc<AtomicUsize>);

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn tracked(drops: &Arc<AtomicUsize>) -> impl Iterator<Item = Tracked> + Send + 'static {
        let drops = Arc::clone(drops);
        (0..N).map(move |i| Tracked(Box::new(i), Arc::clone(&drops)))
    }

    #[test]
    fn a_stream_run_to_the_end_frees_everything() {
        let pool = pool();
        for ordered in [true, false] {
            let drops = Arc::new(AtomicUsize::new(0));
            // A small window, so that workers and the consumer hand batches back and forth.
            let s = pool.stream(tracked(&drops)).window(4).map(|t| Tracked(Box::new(*t.0 * 2), Arc::clone(&t.1)));
            let s = if ordered { s } else { s.unordered() };
            let mut it = s.into_iter();
            let mut seen: Vec<u64> = it.by_ref().map(|r| *r.unwrap().0).collect();
            assert!(it.next().is_none());
            let stats = it.stats();
            drop(it);
            seen.sort_unstable();
            assert!(seen.iter().copied().eq((0..N).map(|i| i * 2)));
            assert_eq!(stats.pulled, N);
            assert!(stats.max_buffered <= 4);
            // Every source item and every output, once each.
            assert_eq!(drops.load(Ordering::Relaxed), 2 * N as usize);
        }
    }

    #[test]
    fn a_stream_dropped_early_frees_everything() {
        let pool = pool();
        for take in [0, 1, 5] {
            let drops = Arc::new(AtomicUsize::new(0));
            let pulled = Arc::new(AtomicUsize::new(0));
            let p = Arc::clone(&pulled);
            let source = tracked(&drops).inspect(move |_| {
                p.fetch_add(1, Ordering::Relaxed);
            });
            let mut it = pool.stream(source).window(6).filter(|t| *t.0 % 3 != 1).into_iter();
            for _ in 0..take {
                assert!(it.next().unwrap().is_ok());
            }
            // Dropped with batches in flight and outputs waiting in the window.
            drop(it);
            let pulled = pulled.load(Ordering::Relaxed);
            assert!(pulled <= take * 2 + 6, "{pulled} pulled");
            // Each pulled item was dropped once (as an output or by the filter).
            assert_eq!(drops.load(Ordering::Relaxed), pulled);
        }
        // The pool is unharmed.
        assert_eq!(pool.map_index(0..4, |i| i), [0, 1, 2, 3]);
    }

    #[test]
    fn a_stream_ended_by_a_panic_frees_everything() {
        let pool = pool();
        let drops = Arc::new(AtomicUsize::new(0));
        let s = pool.stream(tracked(&drops)).window(4).map(|t| {
            assert!(*t.0 != N / 2, "stage failed");
            t
        });
        let results: Vec<_> = s.into_iter().collect();
        assert!(matches!(results.last(), Some(Err(RunError::Panicked { index: Some(i), .. })) if *i as u64 == N / 2));
        drop(results);
        let pulled = drops.load(Ordering::Relaxed);
        assert!(pulled as u64 > N / 2);

        // The consumer panics while it iterates: the unwind drops the iterator.
        let drops = Arc::new(AtomicUsize::new(0));
        let it = pool.stream(tracked(&drops)).window(4).into_iter();
        let r = catch_unwind(AssertUnwindSafe(move || {
            for (n, t) in it.enumerate() {
                assert!(n != 3 || *t.unwrap().0 != 3, "consumer failed");
            }
        }));
        assert!(r.is_err());
        assert!(drops.load(Ordering::Relaxed) >= 4);
        // A stream that never pulls (a stage limited to zero threads) frees its window too.
        let drops = Arc::new(AtomicUsize::new(0));
        let r = pool.stream(tracked(&drops)).map(|t| t).parallelism(0).for_each(drop);
        assert!(matches!(r, Err(RunError::ZeroLimit)));
        assert_eq!(drops.load(Ordering::Relaxed), 0);
    }
}
