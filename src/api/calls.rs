//! The fan-out/fan-in calls on [`Pool`]: follow-on runs, `for_each`, `map`, `fold`.

use crate::engine::ctx::Ctx;
use crate::outcome::error::RunError;
use crate::outcome::panics::reduce_or_resume;
use crate::pool::Pool;
use crate::stats::RunStats;
use crate::sync::AtomicUsize;
use crate::work::collect::{CollectCtx, Collected, Tagged, collect_one, in_tree_order, new_collected, tag};
use crate::work::failure::Failure;
use crate::work::follow_on::{FollowOn, TryRunFold, fold_in_place};
use crate::work::range::{Fold, ForEach, OnStop, map_range};
use std::convert::Infallible;
use std::marker::PhantomData;
use std::ops::Range;

impl Pool {
    /// Runs `f` on every seed and on every follow-on item pushed through [`Ctx::push`],
    /// until none is left; returns what the run did.
    ///
    /// This is the Go compiler's work queue done without a lock: a task that discovers
    /// more work pushes it, and the run ends when all work, follow-ons included, has
    /// executed exactly once. `f` may borrow from the caller's stack. If a task panics,
    /// no new item starts, pending follow-ons are dropped, and the panic is resumed on
    /// this thread once every worker has let go of the run; the pool stays usable.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// // Collatz: every number below 1000 walks down to 1, one step per item.
    /// let steps = AtomicU64::new(0);
    /// let stats = pool.run(1..1000u64, |n, ctx| {
    ///     if n != 1 {
    ///         steps.fetch_add(1, Ordering::Relaxed);
    ///         ctx.push(if n % 2 == 0 { n / 2 } else { 3 * n + 1 });
    ///     }
    /// });
    /// assert_eq!(stats.executed, 999 + stats.pushed);
    /// assert_eq!(steps.into_inner(), stats.pushed);
    /// ```
    pub fn run<T, I, F>(&self, seeds: I, f: F) -> RunStats
    where
        T: Send,
        I: IntoIterator<Item = T>,
        F: Fn(T, &mut Ctx<'_, T>) + Sync,
    {
        self.run_work(FollowOn { f, _item: PhantomData }, seeds).1
    }

    /// Like [`Pool::run`], but each task also folds into an accumulator private to the
    /// thread running it: `f(acc, item, ctx)` takes the thread's accumulator (started
    /// from `identity()`) and returns it, as [`Iterator::fold`] and every other fold of
    /// this crate do; the accumulators of all threads are combined with `reduce` at the
    /// end. Use it to sum or collect over a follow-on run without a shared atomic per
    /// item.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// // Count the nodes of a binary tree of depth 10 without any shared counter.
    /// let nodes = pool.run_fold([10u32], || 0u64, |count, depth, ctx| {
    ///     if depth > 0 {
    ///         ctx.push(depth - 1);
    ///         ctx.push(depth - 1);
    ///     }
    ///     count + 1
    /// }, |a, b| a + b);
    /// assert_eq!(nodes, (1 << 11) - 1);
    /// ```
    pub fn run_fold<T, A, I, Id, F, Red>(&self, seeds: I, identity: Id, f: F, reduce: Red) -> A
    where
        T: Send,
        A: Send,
        I: IntoIterator<Item = T>,
        Id: Fn() -> A + Sync,
        F: Fn(A, T, &mut Ctx<'_, T>) -> A + Sync,
        Red: Fn(A, A) -> A,
    {
        // The fallible work with an error that cannot happen: one engine path for both.
        let f = |acc, item, ctx: &mut Ctx<'_, T>| Ok::<A, Infallible>(f(acc, item, ctx));
        let work = TryRunFold {
            identity: || None,
            f: fold_in_place(&identity, &f),
            failure: Failure::new(),
            _item: PhantomData,
        };
        let (accs, _) = self.run_work(work, seeds);
        reduce_or_resume(accs.into_iter().flatten(), identity, reduce)
    }

    /// A follow-on run whose tasks update their thread's accumulator in place (the
    /// form of [`crate::strategy::FoldWorkload::execute`], and the engine's); returns
    /// every thread's accumulator, unreduced, and what the run did.
    pub(crate) fn run_fold_in_place<T, A, I, Id, F>(&self, seeds: I, identity: Id, f: F) -> (Vec<A>, RunStats)
    where
        T: Send,
        A: Send,
        I: IntoIterator<Item = T>,
        Id: Fn() -> A + Sync,
        F: Fn(&mut A, T, &mut Ctx<'_, T>) + Sync,
    {
        let work = TryRunFold {
            identity,
            f: |acc: &mut A, item, ctx: &mut Ctx<'_, T>| {
                f(acc, item, ctx);
                Ok::<(), Infallible>(())
            },
            failure: Failure::new(),
            _item: PhantomData,
        };
        self.run_work(work, seeds)
    }

    /// Calls `f(i)` for every `i` in `range`, in parallel; returns what the run did.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let sum = AtomicUsize::new(0);
    /// pool.for_each_index(0..100, |i| {
    ///     sum.fetch_add(i, Ordering::Relaxed);
    /// });
    /// assert_eq!(sum.into_inner(), 4950);
    /// ```
    pub fn for_each_index<F>(&self, range: Range<usize>, f: F) -> RunStats
    where
        F: Fn(usize) + Sync,
    {
        let Range { start, end } = range;
        if start >= end {
            return RunStats::default();
        }
        self.run_work(ForEach(&f), std::iter::once(start..end)).1
    }

    /// Calls `f(&item)` for every item of `items`, in parallel.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let total = AtomicU32::new(0);
    /// pool.for_each(&[1, 2, 3, 4], |x| {
    ///     total.fetch_add(*x, Ordering::Relaxed);
    /// });
    /// assert_eq!(total.into_inner(), 10);
    /// ```
    pub fn for_each<T, F>(&self, items: &[T], f: F) -> RunStats
    where
        T: Sync,
        F: Fn(&T) + Sync,
    {
        self.for_each_index(0..items.len(), |i| f(&items[i]))
    }

    /// Calls `f(&mut item)` for every item of `items`, in parallel.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let mut v = vec![1, 2, 3];
    /// pool.for_each_mut(&mut v, |x| *x *= 10);
    /// assert_eq!(v, [10, 20, 30]);
    /// ```
    pub fn for_each_mut<T, F>(&self, items: &mut [T], f: F) -> RunStats
    where
        T: Send,
        F: Fn(&mut T) + Sync,
    {
        let len = items.len();
        let base = SendPtr(items.as_mut_ptr());
        self.for_each_index(0..len, move |i| {
            let base = &base;
            // SAFETY: `i < len`, and every index is visited at most once, so each
            // `&mut` is unique; the slice outlives the run.
            f(unsafe { &mut *base.0.add(i) })
        })
    }

    /// Returns `[f(i) for i in range]`, computed in parallel and written in place in
    /// input order. Panics, before any item runs, if the output cannot be allocated.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// assert_eq!(pool.map_index(0..5, |i| i * i), [0, 1, 4, 9, 16]);
    /// ```
    pub fn map_index<R, F>(&self, range: Range<usize>, f: F) -> Vec<R>
    where
        R: Send,
        F: Fn(usize) -> R + Sync,
    {
        let Range { start, end } = range;
        let len = end.saturating_sub(start);
        // A panic is resumed inside; no other stop is possible without a token.
        match map_range(
            self,
            Default::default(),
            len,
            |i| Ok::<R, Infallible>(f(start + i)),
            OnStop::Fail { resume_panics: true },
        ) {
            Ok(out) => out,
            Err(RunError::Failed { error, .. }) => match error {},
            Err(other) => unreachable!("an uncontrolled map stopped: {:?}", other.map_err(|e| match e {})),
        }
    }

    /// Returns `items.map(f)` as a `Vec`, computed in parallel, in input order.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// assert_eq!(pool.map(&["a", "bb"], |s| s.len()), [1, 2]);
    /// ```
    pub fn map<T, R, F>(&self, items: &[T], f: F) -> Vec<R>
    where
        T: Sync,
        R: Send,
        F: Fn(&T) -> R + Sync,
    {
        self.map_index(0..items.len(), |i| f(&items[i]))
    }

    /// Folds every index of `range` into per-thread accumulators started from
    /// `identity()`, then combines them with `reduce` (in no particular order, so
    /// `reduce` should be associative and commutative). A panic in any of the three
    /// closures reaches the caller with its payload once the run has quiesced.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let sum = pool.fold_index(0..1000, || 0u64, |acc, i| acc + i as u64, |a, b| a + b);
    /// assert_eq!(sum, 499_500);
    /// ```
    pub fn fold_index<A, Id, F, Red>(&self, range: Range<usize>, identity: Id, fold: F, reduce: Red) -> A
    where
        A: Send,
        Id: Fn() -> A + Sync,
        F: Fn(A, usize) -> A + Sync,
        Red: Fn(A, A) -> A,
    {
        let Range { start, end } = range;
        if start >= end {
            return identity();
        }
        let work = Fold { identity: &identity, fold: &fold, _acc: PhantomData };
        let (accs, _) = self.run_work(work, std::iter::once(start..end));
        reduce_or_resume(accs.into_iter().flatten(), identity, reduce)
    }

    /// Folds every item of `items` like [`Pool::fold_index`].
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
    /// let longest = pool.fold(&["a", "abc", "ab"], || 0, |m, s| m.max(s.len()), usize::max);
    /// assert_eq!(longest, 3);
    /// ```
    pub fn fold<T, A, Id, F, Red>(&self, items: &[T], identity: Id, fold: F, reduce: Red) -> A
    where
        T: Sync,
        A: Send,
        Id: Fn() -> A + Sync,
        F: Fn(A, &T) -> A + Sync,
        Red: Fn(A, A) -> A,
    {
        self.fold_index(0..items.len(), identity, |a, i| fold(a, &items[i]), reduce)
    }
}

/// A raw pointer that may cross threads; used where disjoint indices make it sound.
pub(super) struct SendPtr<T>(pub(super) *mut T);

// SAFETY: only used by `for_each_mut` and `try_for_each_mut`, which hand out one
// `&mut T` per index, each index at most once; `T: Send` is required there.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl Pool {
    /// Like [`Pool::run`], but each task returns a value, and the values come back in an
    /// order that depends only on the seeds and the pushes, never on which thread ran
    /// what: each seed's value, then the values of the items it pushed (in push order),
    /// each followed by those of its own pushes, and so on (depth-first, as a sequential
    /// walk of the same tree would make them). A compiler's diagnostics or symbols come
    /// out the same on every run and thread count.
    ///
    /// Each thread files its values in a list of its own (no lock, no shared atomic per
    /// item); the caller orders them at the end, in time linear in their number. The
    /// price: each pending item carries its place in the tree (two `u64`s), each value
    /// is filed with it, and the ordering needs about 12 bytes per value more; on a tree
    /// of 1.4M tasks of a few nanoseconds each that is tens of nanoseconds per value on
    /// top of `run_fold`'s cost (BENCHMARKS.md), nothing next to microsecond tasks. A
    /// panic is resumed as in `run`.
    ///
    /// # Panics
    ///
    /// Besides resuming a task's panic: if the run made `u32::MAX` values or more.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// // Each "module" reports itself, then its submodules, depth-first.
    /// let report = pool.run_collect([("a", 2u32), ("b", 0)], |(name, children), ctx| {
    ///     for i in 0..children {
    ///         ctx.push((["a1", "a2"][i as usize], 0));
    ///     }
    ///     format!("{name}:{children}")
    /// });
    /// assert_eq!(report, ["a:2", "a1:0", "a2:0", "b:0"]);
    /// # Ok::<(), fanout::BuildError>(())
    /// ```
    pub fn run_collect<T, R, I, F>(&self, seeds: I, f: F) -> Vec<R>
    where
        T: Send,
        R: Send,
        I: IntoIterator<Item = T>,
        F: Fn(T, &mut CollectCtx<'_, '_, T>) -> R + Sync,
    {
        let next = AtomicUsize::new(0);
        let work = TryRunFold {
            identity: || new_collected(&next),
            f: |acc: &mut Collected<T, R>, tagged, ctx: &mut Ctx<'_, Tagged<T>>| {
                collect_one(acc, tagged, ctx, |item, cctx| Ok::<R, Infallible>(f(item, cctx)))
            },
            failure: Failure::new(),
            _item: PhantomData,
        };
        let (accs, _) = self.run_work(work, tag(seeds));
        in_tree_order(accs)
    }
}

/// Small-scale tests of the whole core, sized to also run under Miri
/// (`cargo +nightly miri test --lib`).
#[cfg(all(test, not(loom)))]
mod tests {
    use crate::pool::Pool;
    use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

    /// Items per test: Miri interprets every instruction, so keep it small there.
    const N: usize = if cfg!(miri) { 60 } else { 5_000 };

    fn pool() -> Pool {
        Pool::builder().num_threads(2).pin(false).build().unwrap()
    }

    #[test]
    fn follow_ons_run_exactly_once() {
        let pool = pool();
        let seen: Vec<AtomicU8> = (0..N).map(|_| AtomicU8::new(0)).collect();
        // Binary tree in heap order over ids 0..N.
        let stats = pool.run([0usize], |id, ctx| {
            seen[id].fetch_add(1, Ordering::Relaxed);
            for c in [2 * id + 1, 2 * id + 2] {
                if c < N {
                    ctx.push(c);
                }
            }
        });
        assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1));
        assert_eq!(stats.executed as usize, N);
    }

    #[test]
    fn map_fold_and_for_each_mut() {
        let pool = pool();
        let v = pool.map_index(0..N, |i| i * 2);
        assert!(v.iter().enumerate().all(|(i, &x)| x == 2 * i));
        let strings = pool.map_index(0..N, |i| i.to_string());
        assert_eq!(strings[N - 1], (N - 1).to_string());
        let sum = pool.fold_index(0..N, || 0usize, |a, i| a + i, |a, b| a + b);
        assert_eq!(sum, N * (N - 1) / 2);
        let mut data = vec![1u32; N];
        pool.for_each_mut(&mut data, |x| *x += 1);
        assert!(data.iter().all(|&x| x == 2));
        let nodes = pool.run_fold(
            [6u32],
            || 0u32,
            |c, d, ctx| {
                if d > 0 {
                    ctx.push(d - 1);
                    ctx.push(d - 1);
                }
                c + 1
            },
            |a, b| a + b,
        );
        assert_eq!(nodes, 127);
    }

    #[test]
    fn panic_reaches_caller_and_drops_everything() {
        struct Counted<'a>(usize, &'a AtomicUsize);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.1.fetch_add(1, Ordering::Relaxed);
            }
        }
        let pool = pool();
        let made = AtomicUsize::new(1);
        let dropped = AtomicUsize::new(0);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run([Counted(0, &dropped)], |item, ctx| {
                assert!(item.0 != N / 2, "planned");
                for k in 1..=2 {
                    let c = 2 * item.0 + k;
                    if c < N {
                        made.fetch_add(1, Ordering::Relaxed);
                        ctx.push(Counted(c, &dropped));
                    }
                }
            });
        }));
        assert!(r.is_err());
        assert_eq!(made.load(Ordering::Relaxed), dropped.load(Ordering::Relaxed));
        // A panicking map drops every result it wrote: Miri reports leaks and double
        // drops alike.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.map_index(0..N, |i| {
                assert!(i != N - 3, "planned");
                Box::new(i)
            })
        }));
        assert!(r.is_err());
        assert_eq!(pool.map_index(0..3, |i| i), [0, 1, 2]);
    }

    #[test]
    fn nested_and_concurrent_callers() {
        let pool = pool();
        std::thread::scope(|s| {
            for t in 0..2 {
                let pool = &pool;
                s.spawn(move || {
                    let total = pool.fold_index(
                        0..8,
                        || 0usize,
                        |a, i| a + pool.fold_index(0..N / 8, || 0usize, |b, j| b + j + t, |x, y| x + y) + i,
                        |a, b| a + b,
                    );
                    let inner = (0..N / 8).map(|j| j + t).sum::<usize>();
                    assert_eq!(total, 8 * inner + 28);
                });
            }
        });
    }
}
