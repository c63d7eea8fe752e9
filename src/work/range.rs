//! Index-range fan-outs: `for_each`, `map` and `fold` over a range of indices, with lazy
//! splitting.
//!
//! A range run starts as one item, the whole range, on the caller. Whoever executes a
//! range walks it in small blocks; between blocks, if some thread is idle and our
//! previous split has been taken, it hands the upper half of what is left to its deque
//! and wakes a sleeper. Nobody splits while everyone is busy, and skewed item costs are
//! balanced by whoever runs dry asking again; there is no grain-size knob.

use crate::engine::ctx::Ctx;
use crate::engine::run::Control;
use crate::engine::work::Work;
use crate::outcome::error::RunError;
use crate::pool::Pool;
use crate::work::failure::{Failure, Fault, into_result};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::{ControlFlow, Range};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// When the first index shows fast items, blocks double up to this without reading the
/// clock (a short range of fast items reads it twice in all); beyond it, and from the
/// start for slow items, blocks are sized by time.
const RAMP_BLOCK: usize = 16;

/// The most indices in one block, whatever the clock says: a bound on what a thread
/// may still start after the run stopped.
#[cfg(not(loom))]
const MAX_BLOCK: usize = 4096;

/// Beyond the ramp, blocks are sized by time: doubled while a block takes less than
/// this, halved when it takes more than twice this (so a steady block lasts one to two
/// targets). Long enough that the clock read and the looks between blocks are noise
/// for 1 ns items; short enough that an idle thread, a stop or a cancel is answered
/// within microseconds.
#[cfg(not(loom))]
fn block_target() -> std::time::Duration {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};
    static TARGET: OnceLock<Duration> = OnceLock::new();
    *TARGET.get_or_init(|| {
        // 128 clock reads' worth, at least 4 us and at most 50 us: a slow clock source
        // (some VMs) then gets longer blocks rather than a large overhead. The fastest
        // of a few samples, so that a preemption during one does not count.
        let per_read = (0..5)
            .map(|_| {
                let start = Instant::now();
                let mut last = start;
                for _ in 0..32 {
                    last = std::hint::black_box(Instant::now());
                }
                (last - start) / 32
            })
            .min()
            .unwrap_or_default();
        (per_read * 128).clamp(Duration::from_micros(4), Duration::from_micros(50))
    })
}

/// The least work, by the walk's own measure, worth splitting off to an idle thread:
/// about what waking one costs the thread that shares (a system call), so that a run
/// too small to share runs as a plain loop. A sleeper takes far longer to arrive
/// (tens of microseconds), but a spinning one does not.
#[cfg(not(loom))]
const SHARE_AT_LEAST_NS: u128 = 2_000;

/// Whether a first index that took `took` is fast enough to ramp up without the clock;
/// records its cost in `index_ns` either way (read before the target, whose first
/// use in a process measures the clock).
#[cfg(not(loom))]
#[inline]
fn is_fast(took: std::time::Duration, index_ns: &mut u64) -> bool {
    *index_ns = took.as_nanos() as u64;
    took * (RAMP_BLOCK as u32) < block_target()
}

/// The size of the block after one of `block` indices that took `took`.
#[cfg(not(loom))]
#[inline]
fn next_block(block: usize, took: std::time::Duration) -> usize {
    let target = block_target();
    if took < target {
        (block * 2).min(MAX_BLOCK)
    } else if took > target * 2 {
        // In proportion, so that items that suddenly got much slower are looked
        // after within one block again.
        let scaled = block as u128 * target.as_nanos() / took.as_nanos().max(1);
        (scaled as usize).clamp(1, (block / 2).max(1))
    } else {
        block
    }
}

/// Walks `range`, splitting off halves on demand; returns the state and the end of the
/// part this call executed (`range.start..end`). A body that breaks ends the walk at
/// once, without a state (a failed fold has consumed it); `end` is then the index after
/// the one that broke.
#[inline(always)]
pub(crate) fn walk<S>(
    range: Range<usize>,
    ctx: &mut Ctx<'_, Range<usize>>,
    mut state: S,
    mut body: impl FnMut(S, usize) -> ControlFlow<(), S>,
) -> (Option<S>, usize) {
    let (mut i, mut end) = (range.start, range.end);
    let mut block = 1;
    // When the current block began, while blocks are sized by time: from the first
    // index on, so that slow items (a blocking call, say) keep blocks of one index and
    // a stop or an idle thread is seen after every item. Never under loom, whose models
    // must not depend on time.
    #[cfg(not(loom))]
    let mut block_began: Option<std::time::Instant> = Some(std::time::Instant::now());
    // What one index costs, in nanoseconds, as last measured (the first index, then
    // every timed block): splitting off less work than a wake-up costs only slows the
    // run down.
    #[cfg(not(loom))]
    let mut index_ns: u64 = 0;
    while i < end {
        if ctx.shares_each_index() && end - i >= 2 {
            // Blocking items: the rest of the range is stealable while this index runs,
            // so a free thread never waits for a blocked one (one item per thread at
            // most, however long the range).
            ctx.share(i + 1..end);
            end = i + 1;
        }
        // Not `i + block`, which could overflow for a range ending near `usize::MAX`.
        let stop = i + block.min(end - i);
        let block_start = i;
        while i < stop {
            state = match body(state, i) {
                ControlFlow::Continue(next) => next,
                ControlFlow::Break(()) => {
                    ctx.report_completed(i - block_start);
                    return (None, i + 1);
                }
            };
            i += 1;
        }
        ctx.report_completed(i - block_start);
        #[cfg(not(loom))]
        match block_began {
            // A first index (only the walk's first block starts at its start) well
            // under the target: fast items, which ramp up without the clock until
            // blocks are worth timing.
            Some(began) if block_start == range.start && is_fast(began.elapsed(), &mut index_ns) => {
                block = 2;
                block_began = None;
            }
            Some(began) => {
                let now = std::time::Instant::now();
                index_ns = ((now - began).as_nanos() / (i - block_start) as u128) as u64;
                block = next_block(block, now - began);
                block_began = Some(now);
            }
            None => {
                block = (block * 2).min(RAMP_BLOCK);
                if block == RAMP_BLOCK {
                    block_began = Some(std::time::Instant::now());
                }
            }
        }
        #[cfg(loom)]
        {
            block = (block * 2).min(RAMP_BLOCK);
        }
        #[cfg(not(loom))]
        let worth_sharing = (end - i) as u128 * u128::from(index_ns) >= SHARE_AT_LEAST_NS;
        #[cfg(loom)]
        let worth_sharing = true;
        if end - i >= 2 && worth_sharing && ctx.should_split() {
            let mid = i + (end - i) / 2;
            ctx.share(mid..end);
            end = mid;
            // The wake-up that sharing cost belongs to no block.
            #[cfg(not(loom))]
            if block_began.is_some() {
                block_began = Some(std::time::Instant::now());
            }
        }
        if ctx.poll_stop() {
            break;
        }
    }
    (Some(state), i)
}

/// Walks `range` like [`walk`], with a body that may fail: an `Err` or a panic stops
/// the run and is recorded in `failure` with the item's index. Returns the state (none
/// after a failure) and the number of indices that completed.
///
/// Each item runs inside its own `catch_unwind`: with the body inlined that costs
/// nothing on the happy path (no store per item), and the panicking index is known.
#[inline(always)]
pub(crate) fn try_walk<S, E>(
    range: Range<usize>,
    ctx: &mut Ctx<'_, Range<usize>>,
    state: S,
    failure: &Failure<E>,
    mut body: impl FnMut(S, usize) -> Result<S, E>,
) -> (Option<S>, u64) {
    let start = range.start;
    let mut fault = None;
    let (state, end) = walk(range, ctx, state, |s, i| match catch_unwind(AssertUnwindSafe(|| body(s, i))) {
        Ok(Ok(next)) => ControlFlow::Continue(next),
        Ok(Err(e)) => {
            fault = Some((Fault::Error(e), i));
            ControlFlow::Break(())
        }
        Err(payload) => {
            fault = Some((Fault::Panic(payload), i));
            ControlFlow::Break(())
        }
    });
    match fault {
        Some((fault, at)) => {
            failure.record(ctx, fault, Some(at));
            (None, (at - start) as u64)
        }
        None => (state, (end - start) as u64),
    }
}

/// `try_fold` over indices: one accumulator per participant, and the count of indices
/// it completed (for the `completed` count of a cancelled run).
pub(crate) struct TryFold<A, E, Id, F> {
    pub(crate) identity: Id,
    pub(crate) fold: F,
    pub(crate) failure: Failure<E>,
    pub(crate) _acc: PhantomData<fn() -> A>,
}

impl<A, E, Id, F> Work for TryFold<A, E, Id, F>
where
    A: Send,
    E: Send,
    Id: Fn() -> A + Sync,
    F: Fn(A, usize) -> Result<A, E> + Sync,
{
    type Item = Range<usize>;
    type Acc = (Option<A>, u64);
    fn new_acc(&self) -> (Option<A>, u64) {
        (None, 0)
    }
    #[inline]
    fn execute(&self, item: Range<usize>, ctx: &mut Ctx<'_, Range<usize>>, acc: &mut (Option<A>, u64)) {
        let start = acc.0.take().unwrap_or_else(&self.identity);
        let (folded, completed) = try_walk(item, ctx, start, &self.failure, &self.fold);
        *acc = (folded, acc.1 + completed);
    }
}

/// `for_each` over indices.
pub(crate) struct ForEach<F>(pub(crate) F);

impl<F: Fn(usize) + Sync> Work for ForEach<F> {
    type Item = Range<usize>;
    type Acc = ();
    fn new_acc(&self) {}
    #[inline]
    fn execute(&self, item: Range<usize>, ctx: &mut Ctx<'_, Range<usize>>, _acc: &mut ()) {
        walk(item, ctx, (), |(), i| {
            (self.0)(i);
            ControlFlow::Continue(())
        });
    }
}

/// `fold` over indices: one accumulator per participant.
pub(crate) struct Fold<A, Id, F> {
    pub(crate) identity: Id,
    pub(crate) fold: F,
    pub(crate) _acc: PhantomData<fn() -> A>,
}

impl<A, Id, F> Work for Fold<A, Id, F>
where
    A: Send,
    Id: Fn() -> A + Sync,
    F: Fn(A, usize) -> A + Sync,
{
    type Item = Range<usize>;
    type Acc = Option<A>;
    fn new_acc(&self) -> Option<A> {
        None
    }
    #[inline]
    fn execute(&self, item: Range<usize>, ctx: &mut Ctx<'_, Range<usize>>, acc: &mut Option<A>) {
        let start = acc.take().unwrap_or_else(&self.identity);
        let (folded, _) = walk(item, ctx, start, |a, i| ControlFlow::Continue((self.fold)(a, i)));
        *acc = folded;
    }
}

/// The output buffer of a `map`, written in place by index.
pub(crate) struct Output<R>(pub(crate) *mut MaybeUninit<R>);

// SAFETY: each index is written by exactly one participant (ranges are disjoint), and
// the buffer is read only after the run has quiesced; `R: Send` because results are
// created on workers and handed to the caller.
unsafe impl<R: Send> Sync for Output<R> {}

/// `map` over indices, writing `f(i)` to `out[i]` when it is `Ok` (infallible maps use
/// an uninhabited `E`). Each participant records the sub-ranges it wrote, also when `f`
/// fails or panics, so that a stopped run can drop exactly what was written.
pub(crate) struct Map<R, E, F> {
    pub(crate) f: F,
    pub(crate) out: Output<R>,
    pub(crate) failure: Failure<E>,
}

impl<R: Send, E: Send, F: Fn(usize) -> Result<R, E> + Sync> Work for Map<R, E, F> {
    type Item = Range<usize>;
    type Acc = Vec<Range<usize>>;
    fn new_acc(&self) -> Vec<Range<usize>> {
        Vec::new()
    }
    #[inline]
    fn execute(&self, item: Range<usize>, ctx: &mut Ctx<'_, Range<usize>>, done: &mut Vec<Range<usize>>) {
        let out = self.out.0;
        // Records what was written when the walk ends, whether it ran out, failed or
        // caught a panic.
        let mut written = Written { done, start: item.start, end: item.start };
        try_walk(item, ctx, (), &self.failure, |(), i| {
            let value = (self.f)(i)?;
            // SAFETY: `i` is below the buffer's length (the run covers `0..len`) and is
            // visited exactly once, by this call.
            unsafe { (*out.add(i)).write(value) };
            written.end = i + 1;
            Ok(())
        });
    }
}

/// Pushes `start..end` (the indices written so far) to the completed list when dropped,
/// on return or on unwind.
struct Written<'a> {
    done: &'a mut Vec<Range<usize>>,
    start: usize,
    end: usize,
}

impl Drop for Written<'_> {
    fn drop(&mut self) {
        if self.end > self.start {
            // Joined to the previous range when it ends here, so that a walk taken one
            // index at a time (blocking runs) keeps a short list.
            match self.done.last_mut() {
                Some(last) if last.end == self.start => last.end = self.end,
                _ => self.done.push(self.start..self.end),
            }
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
    let outcome = pool.run_work_under(&work, control, seeds);
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
/// test --lib -- work::range::tests::`): outputs own heap memory and count their drops, so
/// an index written twice, never written, or dropped twice shows up as a leak, a read
/// of uninitialized memory or a double free.
#[cfg(all(test, not(loom)))]
mod tests {
    use crate::cancel::CancelToken;
    use crate::outcome::error::ItemError;
    use crate::outcome::error::RunError;
    use crate::pool::Pool;
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
