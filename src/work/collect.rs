//! Follow-on runs whose tasks return values, collected in an order fixed by the seeds
//! and the pushes alone: each seed's value, then its children's in push order, and so
//! on depth-first (the order of a sequential walk over the same tree). Each thread
//! files its results with the position of their item in the tree (its parent's record
//! and its push number); the caller puts them in order at the end, in time linear in
//! the number of results.

use crate::engine::ctx::Ctx;
use crate::outcome::panics::drop_each_quietly;
use crate::sync::{AtomicUsize, Ordering};

/// An item with its place in the tree of pushes.
pub(crate) struct Tagged<T> {
    item: T,
    /// `Record::id` of the item that pushed this one, or `SEED`.
    parent: u64,
    /// Which push of its parent this was (for a seed: which seed).
    child: u64,
}

/// The parent of a seed.
const SEED: u64 = u64::MAX;
/// Bits of a record id that hold the record's position in its participant's list; the
/// bits above hold the participant (`Collected::id`).
const POSITION_BITS: u32 = 48;

/// One participant's results, in the order it ran the items. Dropped (when the run
/// failed) one value at a time, so that panicking `Drop`s cannot abort the process.
pub(crate) struct Collected<T, R> {
    /// Which participant this is, `0..` in the order the accumulators were made.
    id: usize,
    records: Vec<Record<R>>,
    /// The running task's pushes, handed to the run last first when it returns, so
    /// that its first push runs next here: a thread then runs what it keeps in tree
    /// order, and the final ordering reads its records nearly in sequence.
    pushes: Vec<Tagged<T>>,
}

impl<T, R> Drop for Collected<T, R> {
    fn drop(&mut self) {
        drop_each_quietly(std::mem::take(&mut self.records));
        drop_each_quietly(std::mem::take(&mut self.pushes));
    }
}

struct Record<R> {
    parent: u64,
    child: u64,
    value: R,
}

/// A task's handle on a collecting run
/// ([`Pool::run_collect`](crate::Pool::run_collect)): push follow-on items through it,
/// as through [`Ctx`]; each item's value is placed after its parent's and after the
/// values of the items its parent pushed before it.
pub struct CollectCtx<'c, 'r, T> {
    ctx: &'c mut Ctx<'r, Tagged<T>>,
    pushes: &'c mut Vec<Tagged<T>>,
    /// The id of the running item's record.
    me: u64,
    pushed: u64,
}

impl<T> CollectCtx<'_, '_, T> {
    /// Adds a follow-on item; its value comes after those of the items this task pushed
    /// before it.
    #[inline]
    pub fn push(&mut self, item: T) {
        self.pushes.push(Tagged { item, parent: self.me, child: self.pushed });
        self.pushed += 1;
    }

    /// Whether the run is stopping (see [`Ctx::is_stopping`]).
    pub fn is_stopping(&self) -> bool {
        self.ctx.is_stopping()
    }

    /// The index of the pool worker running this task (see [`Ctx::worker_index`]).
    pub fn worker_index(&self) -> Option<usize> {
        self.ctx.worker_index()
    }
}

/// Hands the task's pushes to the run, last first, when the task returns or unwinds
/// (so that a panicking run drops them like every pending item).
impl<T> Drop for CollectCtx<'_, '_, T> {
    fn drop(&mut self) {
        while let Some(pushed) = self.pushes.pop() {
            self.ctx.push(pushed);
        }
    }
}

impl<T> std::fmt::Debug for CollectCtx<'_, '_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectCtx").field("pushed", &self.pushed).finish_non_exhaustive()
    }
}

/// Runs `task` on `tagged` with its own record id, and files its value.
#[inline(always)]
pub(crate) fn collect_one<T, R, E>(
    acc: &mut Collected<T, R>,
    tagged: Tagged<T>,
    ctx: &mut Ctx<'_, Tagged<T>>,
    task: impl FnOnce(T, &mut CollectCtx<'_, '_, T>) -> Result<R, E>,
) -> Result<(), E> {
    let Tagged { item, parent, child } = tagged;
    // The record this item's value will take: nothing else is filed by this
    // participant while the task runs (a nested run has accumulators of its own).
    let me = ((acc.id as u64) << POSITION_BITS) | acc.records.len() as u64;
    let mut cctx = CollectCtx { ctx, pushes: &mut acc.pushes, me, pushed: 0 };
    let value = task(item, &mut cctx);
    drop(cctx);
    // After an error the run stops, so the id `me` is never seen again (the record
    // not filed here would otherwise leave its children without a parent).
    acc.records.push(Record { parent, child, value: value? });
    Ok(())
}

/// Tags the seeds with their positions.
pub(crate) fn tag<T>(seeds: impl IntoIterator<Item = T>) -> impl Iterator<Item = Tagged<T>> {
    seeds.into_iter().enumerate().map(|(i, item)| Tagged { item, parent: SEED, child: i as u64 })
}

/// A fresh participant's accumulator; `next` hands out the ids.
pub(crate) fn new_collected<T, R>(next: &AtomicUsize) -> Collected<T, R> {
    // Relaxed: only the uniqueness of the ids matters; the caller reads the accumulators
    // after the run, through its end's synchronization.
    let id = next.fetch_add(1, Ordering::Relaxed);
    assert!(id < 1 << (64 - POSITION_BITS), "too many participants for a collecting run");
    Collected { id, records: Vec::new(), pushes: Vec::new() }
}

/// Puts the results of a finished run (every pushed item ran) in tree order.
pub(crate) fn in_tree_order<T, R>(mut accs: Vec<Collected<T, R>>) -> Vec<R> {
    accs.sort_unstable_by_key(|acc| acc.id);
    // Global index of each participant's first record.
    let mut base = Vec::with_capacity(accs.len());
    let mut total = 0usize;
    for acc in &accs {
        assert_eq!(acc.id, base.len(), "participant ids are 0..n");
        base.push(total);
        total += acc.records.len();
    }
    // Indices as `u32`, to halve the memory (and page faults) of the passes below; the
    // values alone of that many items would fill a machine.
    assert!(total < u32::MAX as usize, "too many values for one collecting run");
    let global = |id: u64| base[(id >> POSITION_BITS) as usize] + (id & ((1 << POSITION_BITS) - 1)) as usize;
    // Children of each record (and the seeds), laid out contiguously: count, then
    // place each at its parent's start plus its push number.
    let mut seeds = 0u32;
    let mut first_child = vec![0u32; total + 1];
    for record in accs.iter().flat_map(|acc| &acc.records) {
        if record.parent == SEED {
            seeds += 1;
        } else {
            first_child[global(record.parent)] += 1;
        }
    }
    let mut start = seeds;
    for slot in &mut first_child {
        let count = *slot;
        *slot = start;
        start += count;
    }
    let mut order_slots = vec![0u32; total];
    let mut values = Vec::with_capacity(total);
    for record in accs.iter_mut().flat_map(|acc| std::mem::take(&mut acc.records)) {
        let at = if record.parent == SEED {
            record.child as usize
        } else {
            first_child[global(record.parent)] as usize + record.child as usize
        };
        order_slots[at] = values.len() as u32;
        values.push(Some(record.value));
    }
    // `order_slots[..seeds]` are the seeds; record `g`'s children are at
    // `order_slots[first_child[g]..first_child[g + 1]]`. Walk depth-first.
    let mut out = Vec::with_capacity(total);
    let mut stack: Vec<u32> = order_slots[..seeds as usize].iter().rev().copied().collect();
    while let Some(g) = stack.pop() {
        let g = g as usize;
        out.push(values[g].take().expect("each record is visited once"));
        stack.extend(order_slots[first_child[g] as usize..first_child[g + 1] as usize].iter().rev());
    }
    assert_eq!(out.len(), total, "every record belongs to the tree");
    out
}

#[cfg(test)]
mod tests {
    use crate::outcome::error::RunError;
    use crate::pool::Pool;

    /// Values of the tree below `n` in depth-first order, sequentially.
    fn sequential(seeds: &[u64], children: &impl Fn(u64) -> Vec<u64>) -> Vec<u64> {
        let mut stack: Vec<u64> = seeds.iter().rev().copied().collect();
        let mut out = Vec::new();
        while let Some(n) = stack.pop() {
            out.push(n * 3);
            stack.extend(children(n).into_iter().rev());
        }
        out
    }

    #[test]
    fn values_come_in_tree_order_whatever_the_threads() {
        let children = |n: u64| -> Vec<u64> {
            let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60;
            if n > 1 << 20 { Vec::new() } else { (0..h % 5).map(|j| n * 5 + j + 1).collect() }
        };
        let seeds = [1u64, 2, 3, 4];
        let want = sequential(&seeds, &children);
        assert!(want.len() > 100, "a tree worth the name");
        // Under Miri (slow): one pool, one run.
        for threads in if cfg!(miri) { &[2][..] } else { &[1, 2, 3][..] } {
            let pool = Pool::builder().num_threads(*threads).build().unwrap();
            for _ in 0..if cfg!(miri) { 1 } else { 10 } {
                let got = pool.run_collect(seeds, |n, ctx| {
                    for c in children(n) {
                        ctx.push(c);
                    }
                    // Slow enough that the workers join and take part of the tree.
                    let start = std::time::Instant::now();
                    while !cfg!(miri) && start.elapsed() < std::time::Duration::from_micros(5) {}
                    n * 3
                });
                assert_eq!(got, want, "{threads} threads");
            }
        }
    }

    #[test]
    fn no_seeds_no_values_and_a_failure_is_returned() {
        let pool = Pool::builder().num_threads(2).build().unwrap();
        assert!(pool.run_collect(Vec::<u32>::new(), |n, _| n).is_empty());
        let r = pool.runner().try_run_collect(0..100u32, |n, ctx| {
            if n == 150 {
                return Err(n);
            }
            if n < 100 {
                ctx.push(n + 100);
            }
            Ok(n)
        });
        assert!(matches!(r, Err(RunError::Failed { error: 150, .. })));
        let ok = pool.runner().try_run_collect(0..3u32, |n, _| Ok::<_, ()>(n));
        assert_eq!(ok.unwrap(), [0, 1, 2]);
    }
}
