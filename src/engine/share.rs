//! Publication: how a participant hands its oldest private items to the threads that
//! would take them, one at a time or as one batch.

use super::global_queue::GlobalQueue;
use super::seats::Seats;
use super::stack::{BurstSharer, PUSHES_BETWEEN_MARKS, PrivateStack};
use crate::deque::Owner;
use crate::pool::sleep::Sleep;
use crate::stats::SlotStats;
use std::cell::Cell;

/// What a deque or the global queue holds: one item, or a batch of a participant's
/// oldest private items shared at once. A thief's steal claims one entry at a time (a
/// fence and a CAS each), which costs more than a task of a few nanoseconds; a batch
/// costs that once for many items, and moves them with plain copies.
pub(crate) enum Shared<T> {
    One(T),
    Batch(Vec<T>),
}

impl<T> Shared<T> {
    /// Moves the item, or the batch's items, onto the taker's private stack. An empty
    /// stack takes a batch at least as large as its own allocation over whole
    /// (`PrivateStack::from_vec`), so the items are not copied again; a smaller one is
    /// copied, keeping the stack's larger allocation for the pushes to come.
    pub(super) fn unpack_onto(self, stack: &mut PrivateStack<T>) {
        match self {
            Shared::One(item) => stack.push(item),
            Shared::Batch(items) => {
                if stack.len() == 0 && items.capacity() >= stack.allocation() {
                    *stack = PrivateStack::from_vec(items);
                } else {
                    // In `from_vec`'s order: the first item on top.
                    let mut items = items.into_iter();
                    let first = items.next();
                    items.for_each(|item| stack.push(item));
                    first.into_iter().for_each(|item| stack.push(item));
                }
            }
        }
    }
}

/// Publications of at least this many items go as one batch (see `Shared`).
#[cfg(not(loom))]
const BATCH_AT_LEAST: usize = 64;
/// Small under loom, so that the models share batches too.
#[cfg(loom)]
const BATCH_AT_LEAST: usize = 2;

/// Moves the older half of `stack` to `deque` (as one batch when it is large), counts
/// it, and wakes a sleeper if one is wanted. Returns whether it went as a batch.
#[cold]
#[inline(never)]
pub(super) fn share_older_half<T>(
    stack: &mut PrivateStack<T>,
    deque: &Owner<'_, Shared<T>>,
    global: &GlobalQueue<Shared<T>>,
    sleep: &Sleep,
    seats: &Seats,
    compute_only: bool,
    stats: &mut SlotStats,
) -> bool {
    let count = (stack.len() / 2).min(BATCH_AT_MOST);
    let as_batch = count >= BATCH_AT_LEAST;
    if as_batch {
        share_batch(stack, count, deque, global, stats);
    } else {
        stack.drain_oldest(count, |item| deque.push_or_spill(Shared::One(item), |x| global.push(x)));
        stats.published += count as u64;
    }
    wake_if_wanted(sleep, seats, compute_only);
    as_batch
}

/// Wakes a sleeper for work just published, unless none is wanted. Nobody is woken
/// when a participant of the run is idle (it finds the items by itself) or when no
/// worker could join: a full limited run, or every seat taken; nor, for items taken
/// for computation (`compute_only`), when the active participants already fill the
/// CPUs. Whoever frees a place finds the items in our deque at once (and wakes a
/// sleeper itself when it goes idle, since work is visible).
fn wake_if_wanted(sleep: &Sleep, seats: &Seats, compute_only: bool) {
    let wanted = if compute_only { seats.wants_a_worker_for_compute() } else { seats.wants_a_worker() };
    if wanted {
        sleep.notify_one_avoiding(seats.kept_out_cpu());
    }
}

/// A participant's sharing from inside a task that pushes a long burst (see
/// `super::stack`), as its checkpoints share: the older half of the stack, at most a
/// batch, when a thread is hungry; then, once a thief has taken that batch, the next
/// one unasked (see `Participant::refill`). Registered for the span of the item loop,
/// whose participant is active all along (termination rule 1). The items' cost is not
/// measured here, so it wakes a sleeper as for short items (a wake-up for more
/// threads than CPUs waits for the checkpoint, which measures them), unless the run
/// is blocking (its items may wait on each other, whatever their cost).
pub(super) struct BurstShare<'a, T> {
    deque: &'a Owner<'a, Shared<T>>,
    global: &'a GlobalQueue<Shared<T>>,
    sleep: &'a Sleep,
    seats: &'a Seats,
    /// As `Checkpoint::batch_out`: our last batch went to a hungry thread.
    batch_out: Cell<bool>,
    /// The batch `how_many` asked for is for a hungry thread (wake a sleeper).
    fresh: Cell<bool>,
    /// Items shared, for `SlotStats::published` once the loop is over.
    published: Cell<u64>,
    /// Wake as for short items, taken for computation (see `share_older_half`).
    compute_only: bool,
}

impl<'a, T> BurstShare<'a, T> {
    /// Shares into `deque`; `batch_out` is the checkpoints' flag so far, `blocking`
    /// whether the run was declared blocking.
    pub(super) fn new(
        deque: &'a Owner<'a, Shared<T>>,
        global: &'a GlobalQueue<Shared<T>>,
        sleep: &'a Sleep,
        seats: &'a Seats,
        batch_out: bool,
        blocking: bool,
    ) -> Self {
        let (batch_out, fresh, published) = (Cell::new(batch_out), Cell::new(false), Cell::new(0));
        Self { deque, global, sleep, seats, batch_out, fresh, published, compute_only: !blocking }
    }

    /// The checkpoints' flag after the loop, and the items shared.
    pub(super) fn finish(self) -> (bool, u64) {
        (self.batch_out.get(), self.published.get())
    }
}

impl<T> BurstSharer<T> for BurstShare<'_, T> {
    fn how_many(&self, private: usize) -> usize {
        // A burst: a full stride of pushes at least, so the batch is worth its copy;
        // and what we shared last has been taken.
        if private < PUSHES_BETWEEN_MARKS || !self.deque.is_empty() {
            return 0;
        }
        let fresh = self.sleep.has_demand() && self.seats.has_taker();
        self.fresh.set(fresh);
        if fresh {
            (private / 2).min(BATCH_AT_MOST)
        } else if self.batch_out.get() && private >= 2 * BATCH_AT_MOST {
            BATCH_AT_MOST
        } else {
            0
        }
    }

    fn take(&self, items: Vec<T>) {
        self.published.set(self.published.get() + items.len() as u64);
        self.deque.push_or_spill(Shared::Batch(items), |x| self.global.push(x));
        if self.fresh.get() {
            self.batch_out.set(true);
            wake_if_wanted(self.sleep, self.seats, self.compute_only);
        }
    }
}

/// Moves the `count` oldest items of `stack` (`count < stack.len()`) to `deque` as one
/// batch, and counts them; wakes nobody.
pub(super) fn share_batch<T>(
    stack: &mut PrivateStack<T>,
    count: usize,
    deque: &Owner<'_, Shared<T>>,
    global: &GlobalQueue<Shared<T>>,
    stats: &mut SlotStats,
) {
    let batch = stack.split_off_oldest(count);
    deque.push_or_spill(Shared::Batch(batch), |x| global.push(x));
    stats.published += count as u64;
}

/// The most items one publication shares: enough that a thief's steal is noise next to
/// running them, few enough that the batch is copied within the caches (a larger one
/// lands in fresh memory, whose page faults cost more than the copy) and that the
/// sharer keeps work of its own to share again soon.
#[cfg(not(loom))]
pub(super) const BATCH_AT_MOST: usize = 4096;
#[cfg(loom)]
pub(super) const BATCH_AT_MOST: usize = 4;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn pop_all(stack: &mut PrivateStack<u32>) -> Vec<u32> {
        std::iter::from_fn(|| stack.pop()).collect()
    }

    #[test]
    fn an_empty_stack_takes_a_large_batch_over_whole() {
        let mut stack = PrivateStack::new();
        Shared::Batch((0..100).collect()).unpack_onto(&mut stack);
        assert_eq!(stack.allocation(), 100);
        let items = pop_all(&mut stack);
        assert_eq!(items.len(), 100);
        assert_eq!(items[..3], [0, 99, 98], "the first item, then the newest");
        // The batch's allocation became the stack's: a push lands in it.
        stack.push(5);
        assert_eq!(stack.pop(), Some(5));
    }

    #[test]
    fn a_small_batch_or_a_busy_stack_copies() {
        // A batch smaller than the stack's allocation is copied into it.
        let mut stack = PrivateStack::new();
        (0..64).for_each(|x| stack.push(x));
        pop_all(&mut stack);
        let before = stack.allocation();
        Shared::Batch(vec![1, 2, 3]).unpack_onto(&mut stack);
        assert_eq!(stack.allocation(), before, "kept its own allocation");
        assert_eq!(pop_all(&mut stack), [1, 3, 2], "as from_vec would pop them");
        // A stack that holds items takes a batch on top of them.
        stack.push(7);
        Shared::Batch((10..200).collect()).unpack_onto(&mut stack);
        let items = pop_all(&mut stack);
        assert_eq!(items.len(), 191);
        assert_eq!((items[0], items[1], items[189], items[190]), (10, 199, 11, 7));
    }
}
