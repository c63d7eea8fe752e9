//! Streams whose source and stages borrow from the caller's stack.
//!
//! A stream's workers keep using its source and stages for as long as its state is
//! registered with the pool. Dropping the consumer's iterator ends that, but a
//! program may leak it (`mem::forget`, a reference cycle) instead, so a stream made by
//! [`Pool::stream`] must own everything it uses (`'static`). A [`Scope`] lifts that
//! limit the way [`std::thread::scope`] does for threads: the scope keeps a handle on
//! every stream started in it that is still open, and before [`Pool::scope`] returns
//! (or unwinds) it ends each of them and waits for their workers to leave, so nothing
//! a stream borrows can end while a worker may still use it.

use super::window::Window;
use super::{Options, Pipe, Source, Stream};
use crate::pool::Pool;
use crate::sync::{Arc, Mutex, lock};
use std::convert::Infallible;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// A scope in which streams may borrow from the caller's stack: made by
/// [`Pool::scope`] (or [`fanout::scope`](crate::scope) on the default pool), which
/// ends every stream started in it before returning.
///
/// ```
/// let pool = fanout::Pool::builder().num_threads(2).build()?;
/// let needle = String::from("an");
/// let words = vec!["fan", "out", "and", "in"];
/// let hits = pool.scope(|s| {
///     // Both the source (an iterator over `words`) and the stage borrow locals.
///     s.stream(words.iter()).filter(|w| w.contains(needle.as_str())).into_iter().count()
/// });
/// assert_eq!(hits, 2);
/// # Ok::<(), fanout::BuildError>(())
/// ```
pub struct Scope<'scope, 'env: 'scope> {
    pool: &'env Pool,
    open: OpenStreams<'scope>,
    /// Invariant in both, as `std::thread::Scope` is: a scope must not be taken for a
    /// longer- or shorter-lived one.
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope").field("open_streams", &lock(&self.open.list).len()).finish_non_exhaustive()
    }
}

impl Pool {
    /// Runs `f` with a [`Scope`] in which streams may borrow from the caller's stack,
    /// like [`std::thread::scope`]: their sources, stages and outputs need only outlive
    /// the call. Returns what `f` returns.
    ///
    /// A stream ends when its iterator is dropped, as any stream does. One whose
    /// iterator was leaked instead is ended when `f` returns (or unwinds): it pulls no
    /// more, and `scope` waits for the workers inside it to finish their batch (so a
    /// source that blocks, say on a channel whose sender outlives the scope, holds the
    /// scope until it yields). As with any leak, what a leaked stream holds (its
    /// source, its stages, the outputs it buffered) is never dropped.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let text = String::from("one two three four");
    /// let mut longest = "";
    /// pool.scope(|s| {
    ///     s.stream(text.split(' ')).for_each(|w| if w.len() > longest.len() { longest = w })
    /// })?;
    /// assert_eq!(longest, "three");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// The stream's iterator cannot leave the scope:
    ///
    /// ```compile_fail
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let v = vec![1, 2, 3];
    /// let it = pool.scope(|s| s.stream(v.iter()).into_iter());
    /// ```
    ///
    /// Nor can a stream borrow what lives only inside the scope's function, which ends
    /// before the scope closes the streams left open:
    ///
    /// ```compile_fail
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// pool.scope(|s| {
    ///     let v = vec![1, 2, 3];
    ///     std::mem::forget(s.stream(v.iter()).into_iter());
    /// });
    /// ```
    pub fn scope<'env, T>(&'env self, f: impl for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T) -> T {
        let scope = Scope { pool: self, open: OpenStreams::new(), _scope: PhantomData, _env: PhantomData };
        let _close = CloseOnExit(&scope.open);
        f(&scope)
    }
}

impl<'scope> Scope<'scope, '_> {
    /// A parallel stream over `source`, in input order, with the default window, like
    /// [`Pool::stream`]; the source and the stages may borrow anything that outlives
    /// the scope.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let table = [10, 20, 30];
    /// let v: Vec<i32> = pool.scope(|s| s.stream(0..3).map(|i| table[i]).into_iter().collect::<Result<_, _>>())?;
    /// assert_eq!(v, [10, 20, 30]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stream<S>(&'scope self, source: S) -> Stream<'scope, 'scope, S::IntoIter, Source, Infallible>
    where
        S: IntoIterator,
        S::IntoIter: Send + 'scope,
        S::Item: Send + 'scope,
    {
        self.stream_with(self.pool, source, Options::default())
    }

    /// A stream on `pool` (a runner's) under `options`, closed by this scope.
    pub(crate) fn stream_with<S>(
        &'scope self,
        pool: &'scope Pool,
        source: S,
        options: Options,
    ) -> Stream<'scope, 'scope, S::IntoIter, Source, Infallible>
    where
        S: IntoIterator,
        S::IntoIter: Send + 'scope,
        S::Item: Send + 'scope,
    {
        Stream::new_scoped(pool, &self.open, source.into_iter(), options)
    }
}

/// The streams of a scope whose iterators are still alive (or leaked): each entry
/// holds the stream's window, so the window outlives the entry, and closes it.
pub(crate) struct OpenStreams<'s> {
    list: Mutex<Vec<Open<'s>>>,
}

struct Open<'s> {
    /// The window's address: how its iterator finds the entry to remove.
    id: usize,
    /// Dropped by hand (`Open::release`), so that the scope has no drop glue that could
    /// use `'s`: the scope is borrowed for `'s` itself, up to its own end.
    close: ManuallyDrop<Box<dyn Fn() + Send + 's>>,
}

impl Open<'_> {
    fn release(self) {
        drop(ManuallyDrop::into_inner(self.close));
    }
}

impl<'s> OpenStreams<'s> {
    fn new() -> Self {
        Self { list: Mutex::new(Vec::new()) }
    }

    /// Keeps `window` open until the returned entry is dropped or the scope ends.
    pub(crate) fn add<I, P, E>(&self, window: &Arc<Window<I, P, E>>) -> InScope<'_, 's>
    where
        I: Iterator + Send + 's,
        I::Item: Send,
        P: Pipe<I::Item, E> + 's,
        E: Send + 's,
    {
        let id = Arc::as_ptr(window).addr();
        let window = Arc::clone(window);
        lock(&self.list).push(Open { id, close: ManuallyDrop::new(Box::new(move || window.close())) });
        InScope { open: self, id }
    }
}

/// A stream's entry in its scope's list of open streams. Its iterator drops it after
/// withdrawing the stream, and the scope lets go of its handle on the window then.
pub(crate) struct InScope<'a, 's> {
    open: &'a OpenStreams<'s>,
    /// The window's address, which names the entry.
    id: usize,
}

impl Drop for InScope<'_, '_> {
    fn drop(&mut self) {
        let mut list = lock(&self.open.list);
        let gone = list.iter().position(|o| o.id == self.id).map(|i| list.swap_remove(i));
        drop(list);
        // Outside the lock: this may be the last handle on the window, whose source
        // and stages run user code when dropped.
        if let Some(open) = gone {
            open.release();
        }
    }
}

/// Closes every stream left open in a scope (their iterators were leaked) when the
/// scope's function returns or unwinds.
struct CloseOnExit<'a, 's>(&'a OpenStreams<'s>);

impl Drop for CloseOnExit<'_, '_> {
    fn drop(&mut self) {
        // A worker inside a stream being closed may start (and leak) another stream in
        // this scope (its stage can reach the scope), so take the list again until it
        // stays empty: closing a stream waits for the workers inside it, the only
        // threads that can still add one.
        let mut closed = Vec::new();
        loop {
            let open = std::mem::take(&mut *lock(&self.0.list));
            if open.is_empty() {
                break;
            }
            for stream in &open {
                (stream.close)();
            }
            closed.extend(open);
        }
        // Only now let go: this may drop a window's last handle (its iterator was
        // dropped meanwhile), running the source's and stages' `Drop`, which may panic.
        let mut panic = None;
        for stream in closed {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| stream.release())) {
                panic.get_or_insert(payload);
            }
        }
        if let Some(payload) = panic
            && !std::thread::panicking()
        {
            resume_unwind(payload);
        }
    }
}

/// Run under Miri too (`cargo +nightly miri test --lib -- stream::scope::`): the
/// streams borrow locals that are freed right after the scope, while the pool's
/// workers go on serving other runs, so a worker still inside a leaked stream, or
/// joining it later, would touch freed memory.
#[cfg(all(test, not(loom)))]
mod tests {
    use crate::pool::Pool;
    use crate::sync::lock;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Source items per stream: Miri interprets every instruction.
    const N: usize = if cfg!(miri) { 40 } else { 4_000 };

    fn pool() -> Pool {
        Pool::builder().num_threads(2).pin(false).build().unwrap()
    }

    /// Some work per item, so that workers are still pulling when the scope ends.
    fn slow(x: usize) -> usize {
        (0..if cfg!(miri) { 10 } else { 5_000 }).fold(x, |a, i| std::hint::black_box(a ^ i))
    }

    #[test]
    fn a_leaked_stream_is_ended_by_its_scope() {
        let pool = pool();
        for ordered in [true, false] {
            let data: Vec<usize> = (0..N).collect();
            let pulled = Arc::new(AtomicUsize::new(0));
            let p = Arc::clone(&pulled);
            pool.scope(|s| {
                // Endless: the workers would pull until the window is full.
                let source = (0..).map(|i| data[i % N]).inspect(move |_| {
                    p.fetch_add(1, Ordering::Relaxed);
                });
                let st = s.stream(source).window(N).map(|x| slow(x) + data[0]);
                let mut it = if ordered { st } else { st.unordered() }.into_iter();
                assert!(it.next().unwrap().is_ok());
                std::mem::forget(it);
            });
            // The scope waited for the workers: nothing is pulled any more.
            let at_exit = pulled.load(Ordering::Relaxed);
            drop(data);
            // Keep the workers busy elsewhere: one still inside the leaked stream, or
            // joining it, would read `data`.
            assert_eq!(pool.map_index(0..64, slow).len(), 64);
            assert_eq!(pulled.load(Ordering::Relaxed), at_exit);
        }
    }

    #[test]
    fn a_stream_started_by_a_stream_being_closed_is_closed_too() {
        let pool = pool();
        let data: Vec<usize> = (0..N).collect();
        let inner_pulled = AtomicUsize::new(0);
        let (started, go) = (std::sync::atomic::AtomicBool::new(false), std::sync::atomic::AtomicBool::new(false));
        pool.scope(|s| {
            // The first item a worker runs waits until the consumer has leaked the outer
            // iterator and the scope is ending, then starts and leaks a stream of its
            // own, reading `data` without end. The consumer keeps the outer stream going
            // (workers only help a stream whose consumer pulls) until a worker has it.
            let mut outer = s
                .stream(0usize..)
                .window(64)
                .unordered()
                .map(|i| {
                    if pool.current_thread_index().is_some() && !started.swap(true, Ordering::AcqRel) {
                        while !go.load(Ordering::Acquire) {
                            std::thread::yield_now();
                        }
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        let inner = (0..).map(|j| data[j % N]).inspect(|_| {
                            inner_pulled.fetch_add(1, Ordering::Relaxed);
                        });
                        std::mem::forget(s.stream(inner).window(N).map(slow).into_iter());
                    }
                    slow(i)
                })
                .into_iter();
            while !started.load(Ordering::Acquire) {
                assert!(outer.next().unwrap().is_ok());
            }
            std::mem::forget(outer);
            go.store(true, Ordering::Release);
        });
        let at_exit = inner_pulled.load(Ordering::Relaxed);
        drop(data);
        assert_eq!(pool.map_index(0..64, slow).len(), 64);
        std::thread::sleep(std::time::Duration::from_millis(if cfg!(miri) { 1 } else { 20 }));
        assert_eq!(inner_pulled.load(Ordering::Relaxed), at_exit, "the inner stream still runs");
    }

    #[test]
    fn a_leaked_stream_whose_stage_panicked_is_closed_quietly() {
        let pool = pool();
        let data: Vec<usize> = (0..N).collect();
        pool.scope(|s| {
            let mut it = s
                .stream(data.iter())
                .window(4)
                .map(|x| {
                    assert!(*x != 2, "stage failed");
                    *x
                })
                .into_iter();
            assert_eq!(it.next().unwrap().unwrap(), 0);
            std::mem::forget(it);
        });
        drop(data);
        assert_eq!(pool.map_index(0..64, slow).len(), 64);
    }

    #[test]
    fn a_dropped_stream_lets_go_of_its_source_before_the_scope_ends() {
        struct Source<'a>(std::ops::Range<usize>, &'a AtomicUsize);
        impl Iterator for Source<'_> {
            type Item = usize;
            fn next(&mut self) -> Option<usize> {
                self.0.next()
            }
        }
        impl Drop for Source<'_> {
            fn drop(&mut self) {
                self.1.fetch_add(1, Ordering::Relaxed);
            }
        }
        let pool = pool();
        let dropped = AtomicUsize::new(0);
        pool.scope(|s| {
            for round in 1..=3 {
                let count = s.stream(Source(0..N, &dropped)).map(slow).into_iter().map(Result::unwrap).count();
                assert_eq!(count, N);
                // Ended normally: the scope no longer holds it, nor its source.
                assert_eq!(dropped.load(Ordering::Relaxed), round);
                assert_eq!(lock(&s.open.list).len(), 0);
            }
            let mut it = s.stream(Source(0..N, &dropped)).into_iter();
            assert!(it.next().is_some());
            assert_eq!(lock(&s.open.list).len(), 1);
            drop(it);
            assert_eq!(lock(&s.open.list).len(), 0);
            assert_eq!(dropped.load(Ordering::Relaxed), 4);
        });
    }

    #[test]
    fn a_panic_in_the_scope_still_ends_its_leaked_streams() {
        let pool = pool();
        let data: Vec<usize> = (0..N).collect();
        let pulled = AtomicUsize::new(0);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.scope(|s| {
                let source = data.iter().inspect(|_| {
                    pulled.fetch_add(1, Ordering::Relaxed);
                });
                let mut it = s.stream(source).window(N).map(|x| slow(*x)).into_iter();
                assert!(it.next().unwrap().is_ok());
                std::mem::forget(it);
                panic!("the scope's function failed");
            })
        }));
        assert!(r.is_err());
        let at_exit = pulled.load(Ordering::Relaxed);
        assert_eq!(pool.map_index(0..64, slow).len(), 64);
        assert_eq!(pulled.load(Ordering::Relaxed), at_exit);
    }
}
