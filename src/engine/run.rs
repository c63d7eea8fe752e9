//! One typed fan-out in progress: its slots, what its participants share, and how it
//! ends (the termination protocol's last step, leftovers, panics, the outcome). Each
//! participant's own loop is `super::participant`.
//!
//! A run owns one *slot* per possible participant (each pool worker, plus the caller).
//! A slot has a private stack (`PrivateStack`, touched only by its owner), a stealable
//! [`Deque`], a private accumulator and private statistics. Follow-on items go to the
//! private stack; they are moved to the deque only when the pool reports *demand*
//! (some thread is idle), so a busy run pays no atomic per item. A large share goes as
//! one deque entry (`Shared::Batch`); the termination rules count entries, and taking
//! an entry takes every item in it.
//!
//! # Termination
//!
//! The termination protocol's four rules, which the comments here and in
//! `super::participant` cite by number, why they suffice, what a stopped run does, and
//! how the caller's stack frame outlives every worker's access are stated once, in
//! ARCHITECTURE.md, "Termination". The `active` word they count with is
//! `super::active`.

use super::active::Left;
use super::ctx::Urgent;
use super::global_queue::GlobalQueue;
use super::seats::Seats;
use super::seeds::Seeds;
use super::share::Shared;
use super::stack::PrivateStack;
use super::stop::{Stop, StopReason};
use super::work::Work;
use crate::cancel::CancelToken;
use crate::deque::{Deque, Steal};
use crate::outcome::panics::drop_quietly;
use crate::pool::Shared as PoolShared;
use crate::pool::registry::Registry;
use crate::pool::sleep::{NOT_PINNED, Sleep};
use crate::pool::spare::Spares;
use crate::progress::Counters;
use crate::stats::{RunStats, SlotStats};
use crate::sync::{Arc, AtomicBool, Mutex, Ordering, Parker, UnsafeCell, current_cpu, lock};
use crossbeam_utils::CachePadded;
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

/// What the caller asks of a run beyond its work: when to stop early, how many items
/// may run at once, where to report progress.
#[derive(Clone, Default)]
pub(crate) struct Control<'c> {
    pub(crate) progress: Option<Arc<Counters>>,
    pub(crate) token: Option<&'c CancelToken>,
    pub(crate) deadline: Option<Instant>,
    /// At most this many participants active (so items in flight) at once.
    pub(crate) limit: Option<u32>,
    /// For blocking items: put the seeds in the run's shared queue rather than the
    /// caller's private stack, so that every thread can start one at once, and have
    /// range walks keep everything after their current index stealable.
    pub(crate) share_seeds: bool,
}

/// Capacity of each participant's stealable deque.
#[cfg(not(loom))]
pub(crate) const DEQUE_CAPACITY: usize = 256;
/// Small under loom so that wrap-around and overflow are explored.
#[cfg(loom)]
pub(crate) const DEQUE_CAPACITY: usize = 4;

/// Under loom, whether every run's caller steps back at its first checkpoint (no model
/// holds a core, and none waits on the clock): set once by a model file that checks
/// stepping back (`crate::__loom::callers_step_back`), which runs in a process of its
/// own.
#[cfg(loom)]
pub(crate) static CALLERS_STEP_BACK_IN_MODELS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

fn callers_step_back_in_models() -> bool {
    #[cfg(loom)]
    return CALLERS_STEP_BACK_IN_MODELS.load(std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(loom))]
    false
}

/// What only the slot's owner touches.
pub(super) struct Local<W: Work> {
    pub(super) stack: PrivateStack<W::Item>,
    pub(super) acc: Option<W::Acc>,
    pub(super) stats: SlotStats,
}

pub(super) struct Slot<W: Work> {
    pub(super) deque: Deque<Shared<W::Item>>,
    pub(super) local: UnsafeCell<Local<W>>,
}

// SAFETY: `local` is touched only by the slot's owner thread while it takes part, and by
// the caller after every participant has left (see `participant::take_part` and
// `into_outcome`); items and accumulators cross threads, hence the `Send` bounds.
unsafe impl<W: Work> Sync for Slot<W>
where
    W::Item: Send,
    W::Acc: Send,
{
}

/// One typed fan-out in progress.
pub(crate) struct Run<'p, W: Work> {
    pub(super) work: W,
    pub(super) sleep: &'p Sleep,
    spares: &'p Spares,
    /// The registry the run is registered in while its caller works on it.
    pub(super) registry: &'p Registry,
    slots: Box<[CachePadded<Slot<W>>]>,
    pub(super) global: GlobalQueue<Shared<W::Item>>,
    pub(super) urgent: Urgent<W::Item>,
    /// The `active` word, joined workers, the caller's seat and the limit.
    pub(super) seats: Seats,
    /// Stops the run early: a panic, a task's error, the cancel token, the deadline.
    pub(super) stop: Stop<'p>,
    /// Live progress counters, when a `Progress` handle watches the run.
    pub(super) progress: Option<Arc<Counters>>,
    /// Set once `active` reached zero.
    pub(super) done: AtomicBool,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Where the caller waits; reference-counted so a worker can wake it after its last
    /// access to the run.
    pub(super) caller: Arc<Parker>,
    /// `Control::share_seeds`.
    pub(super) blocking: bool,
    /// The caller holds a worker's core and hands it back once the run has gone on
    /// for a while (see `Participant::step_back`).
    pub(super) caller_may_step_back: bool,
}

impl<W: Work> Drop for Run<'_, W> {
    fn drop(&mut self) {
        // The slot array goes back to this thread for its next run (see `crate::reuse`);
        // the slots themselves are dropped on the way.
        crate::reuse::recycle(std::mem::take(&mut self.slots).into_vec());
    }
}

/// Everything a finished run hands back.
pub(crate) struct Outcome<A> {
    pub(crate) accs: Vec<A>,
    pub(crate) stats: RunStats,
    pub(crate) panic: Option<Box<dyn Any + Send>>,
    /// Why the run stopped early, if it did.
    pub(crate) stopped: Option<StopReason>,
}

impl<'p, W: Work> Run<'p, W> {
    /// A run for `workers` pool workers plus the caller. With `control.share_seeds`,
    /// every seed goes to the shared queue now; otherwise the caller pulls them as it
    /// runs (`run_as_caller`), first seed first. If `caller_holds_a_core`, the caller
    /// takes the place of one worker while it takes part (see `try_join`), unless the
    /// run is for blocking items.
    pub(crate) fn new<I: Iterator<Item = W::Item>>(
        work: W,
        pool: &'p PoolShared,
        caller_holds_a_core: bool,
        control: Control<'p>,
        seeds: &mut Seeds<I>,
    ) -> Self {
        let (sleep, spares, workers, cpus) = (pool.sleep(), pool.spares(), pool.threads(), pool.cpus());
        // Stacks start in the buffers earlier runs left (the largest for the caller,
        // whose stack takes the seeds); the rest in no allocation at all.
        let mut buffers = spares.take::<W::Item>(workers + 1).into_iter();
        let caller_buffer = buffers.next().unwrap_or_default();
        // In an allocation an earlier run left to this thread, if any (see `crate::reuse`).
        let mut slots = crate::reuse::vec_with_capacity(workers + 1);
        slots.extend((0..=workers).map(|i| {
            let stack = if i < workers {
                buffers.next().map_or_else(PrivateStack::new, PrivateStack::in_buffer)
            } else {
                PrivateStack::new()
            };
            CachePadded::new(Slot {
                deque: Deque::new(DEQUE_CAPACITY),
                local: UnsafeCell::new(Local { stack, acc: None, stats: SlotStats::default() }),
            })
        }));
        let slots = slots.into_boxed_slice();
        let global = GlobalQueue::new();
        if control.share_seeds {
            for seed in seeds.iter.by_ref() {
                global.push(Shared::One(seed));
                seeds.pulled += 1;
            }
            seeds.done = true;
        }
        // SAFETY: the run is not shared yet; nobody else can touch the caller's slot.
        slots[workers].local.with_mut(|p| unsafe { (*p).stack = PrivateStack::in_buffer(caller_buffer) });
        Self {
            work,
            sleep,
            spares,
            registry: pool.registry(),
            slots,
            global,
            urgent: Urgent::new(),
            // Blocking items hold no core while they wait: every worker may join.
            seats: if caller_holds_a_core && !control.share_seeds {
                Seats::new(workers.saturating_sub(1), control.limit, current_cpu().unwrap_or(NOT_PINNED), cpus)
            } else {
                Seats::new(workers, control.limit, NOT_PINNED, cpus)
            },
            stop: Stop::new(control.token, control.deadline),
            progress: control.progress,
            done: AtomicBool::new(false),
            panic: Mutex::new(None),
            caller: Arc::new(Parker::new()),
            blocking: control.share_seeds,
            // Not when workers need jobserver tokens: none may come.
            caller_may_step_back: (caller_holds_a_core && !control.share_seeds && !pool.workers_need_tokens())
                || callers_step_back_in_models(),
        }
    }

    pub(super) fn caller_slot(&self) -> usize {
        self.slots.len() - 1
    }

    /// Slot `i` (worker `i`'s, or the caller's, the last).
    pub(super) fn slot(&self, i: usize) -> &Slot<W> {
        &self.slots[i]
    }

    /// How many slots the run has: the pool's workers and the caller.
    pub(super) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Wakes `n` sleepers for work made visible before the run started (shared seeds).
    /// Call after the run is registered.
    pub(crate) fn wake_for_shared_seeds(&self, n: u64) {
        for _ in 0..n {
            self.sleep.notify_one();
        }
    }

    /// Collects accumulators, statistics and any panic. Call once the run is withdrawn,
    /// with the seeds the run was given.
    pub(crate) fn into_outcome<I: Iterator<Item = W::Item>>(self, seeds: Seeds<I>) -> Outcome<W::Acc> {
        self.drop_leftovers();
        // A stopped run's unpulled seeds are never made: the iterator is dropped as it
        // is (it may be endless, or wait on a channel). What it owns goes with it.
        let Seeds { iter, pulled, .. } = seeds;
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| drop(iter))) {
            self.record_panic(payload);
        }
        let mut stats = RunStats { busy: Vec::with_capacity(self.slots.len()), ..RunStats::default() };
        let mut accs = Vec::with_capacity(self.slots.len());
        for slot in self.slots.iter() {
            // SAFETY: every participant has left (the run was withdrawn); the run is ours.
            slot.local.with_mut(|p| {
                let local = unsafe { &mut *p };
                stats.add_slot(&local.stats);
                if let Some(acc) = local.acc.take() {
                    accs.push(acc);
                }
            });
        }
        // Every stack is empty now (the run finished, or its leftovers were dropped).
        // Small buffers are freed on the way, without the spares' lock.
        self.spares.give(self.slots.iter().filter_map(|slot| {
            // SAFETY: as above.
            slot.local.with_mut(|p| std::mem::take(unsafe { &mut (*p).stack }).into_buffer())
        }));
        if W::FOLLOW_ON {
            stats.pushed = stats.executed.saturating_sub(pulled);
        }
        let panic = lock(&self.panic).take();
        Outcome { accs, stats, panic, stopped: self.stop.reason() }
    }

    /// Rule 4: called by whoever brought the count to zero, leaving `active == left`.
    /// The run is over unless work is still visible (a caller that stepped back leaves
    /// its items in its deque) or someone activated meanwhile; in both cases somebody
    /// will come back here.
    pub(super) fn try_finish(&self, left: Left, by_caller: bool) {
        // The re-check's loads happen after our AcqRel decrement, which acquired every
        // other participant's: they see every push made before any decrement.
        if !self.work_visible() && self.seats.active.unchanged_since(left) {
            self.finish(by_caller);
        }
    }

    /// Declares the run done; wakes the caller unless it is the one finishing (it
    /// looks at `done` before it ever parks for it, and so sees its own store).
    fn finish(&self, by_caller: bool) {
        // Release: pairs with the caller's Acquire; the AcqRel decrement that got us
        // here already acquired every other participant's last decrement.
        self.done.store(true, Ordering::Release);
        if !by_caller {
            self.caller.unpark();
        }
    }

    /// Stops the run for a panic and keeps its payload if it is the first. Never
    /// unwinds, whatever the payload's `Drop` does: most calls are outside any
    /// `catch_unwind`, and a worker unwinding out of `participate` would never `leave`.
    /// Drops an item the run will not execute (it stopped early). Each is dropped
    /// under its own `catch_unwind`, its panic recorded like a task's: a panicking
    /// `Drop` never escapes a `try_*` call as an unwind, and two of them never abort
    /// the process (as two panicking drops in one `Vec` would).
    pub(super) fn drop_pending(&self, item: W::Item) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| drop(item))) {
            self.record_panic(payload);
        }
    }

    /// Drops, one at a time, the items still queued in deques and shared queues after
    /// a stopped run has quiesced (every participant has left).
    fn drop_leftovers(&self) {
        // A run that was not stopped has none: it was declared done only once no work
        // was visible (rule 4), and only active participants make more. Skipping the
        // look saves a cache miss on every other thread's deque at the end of each run.
        // Read after every participant has left (the withdrawal ordered their stops).
        if !self.stop.is_set() {
            debug_assert!(!self.work_visible(), "a run declared done left work behind");
            return;
        }
        let drop_shared = |shared: Shared<W::Item>| match shared {
            Shared::One(item) => self.drop_pending(item),
            Shared::Batch(items) => items.into_iter().for_each(|item| self.drop_pending(item)),
        };
        for slot in self.slots.iter() {
            loop {
                match slot.deque.steal() {
                    Steal::Success(shared) => drop_shared(shared),
                    Steal::Empty => break,
                    Steal::Retry => crate::sync::spin_hint(),
                }
            }
        }
        while let Some(shared) = self.global.pop() {
            drop_shared(shared);
        }
        while let Some(item) = self.urgent.queue.pop() {
            self.drop_pending(item);
        }
    }

    pub(super) fn record_panic(&self, payload: Box<dyn Any + Send>) {
        let loser = {
            let mut first = lock(&self.panic);
            if first.is_none() {
                *first = Some(payload);
                None
            } else {
                Some(payload)
            }
        };
        self.stop.claim(StopReason::Panic);
        // Not under the lock: a payload's `Drop` is user code.
        if let Some(loser) = loser {
            drop_quietly(loser);
        }
    }

    pub(super) fn work_visible(&self) -> bool {
        // A stale `false` from the stop hint only delays joining.
        !self.stop.is_set()
            && (!self.urgent.is_empty() || !self.global.is_empty() || self.slots.iter().any(|s| !s.deque.is_empty()))
    }

    /// Tells the run's progress watcher, if any, whether participant `me` is working.
    pub(super) fn report_active(&self, me: usize, active: bool) {
        if let Some(p) = &self.progress {
            p.slot(me).set_active(active);
        }
    }
}
