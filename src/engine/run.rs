//! The run engine: one typed fan-out, its participants, and the termination protocol.
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
//! The termination protocol's four rules, which the comments below cite by number, why
//! they suffice, what a stopped run does, and how the caller's stack frame outlives
//! every worker's access are stated once, in ARCHITECTURE.md, "Termination". The
//! `active` word they count with is `super::active`.

use super::active::Left;
use super::cadence::Cadence;
use super::ctx::{Checkpoint, Ctx, Urgent};
use super::global_queue::GlobalQueue;
use super::seats::Seats;
use super::seeds::{SeedSource, Seeds};
use super::share::{BATCH_AT_MOST, Shared, share_batch, share_older_half};
use super::stack::PrivateStack;
use super::stop::{Clock, Stop, StopReason};
use super::work::Work;
use crate::cancel::CancelToken;
use crate::deque::{Deque, Owner, Steal};
use crate::outcome::panics::drop_quietly;
use crate::pool::Shared as PoolShared;
use crate::pool::registry::{Job, Leave, Participants};
use crate::pool::sleep::{NOT_PINNED, Sleep};
use crate::pool::spare::Spares;
use crate::progress::{Counters, SlotProgress};
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

/// Idle rounds a participant spends looking for work before it leaves the run.
#[cfg(not(loom))]
const IDLE_ROUNDS: u32 = 64;
#[cfg(loom)]
const IDLE_ROUNDS: u32 = 1;

/// Why `Run::run_private_items` returned.
enum Paused {
    /// The private stack is empty.
    Empty,
    /// An item asked for the checkpoint between items (see `Run::run_private_items`).
    Checkpoint,
    /// A task panicked.
    Panic(Box<dyn Any + Send>),
}

/// What only the slot's owner touches.
struct Local<W: Work> {
    stack: PrivateStack<W::Item>,
    acc: Option<W::Acc>,
    stats: SlotStats,
}

struct Slot<W: Work> {
    deque: Deque<Shared<W::Item>>,
    local: UnsafeCell<Local<W>>,
}

// SAFETY: `local` is touched only by the slot's owner thread while it takes part, and by
// the caller after every participant has left (see `take_part` and
// `into_outcome`); items and accumulators cross threads, hence the `Send` bounds.
unsafe impl<W: Work> Sync for Slot<W>
where
    W::Item: Send,
    W::Acc: Send,
{
}

/// One typed fan-out in progress.
pub(crate) struct Run<'p, W: Work> {
    work: W,
    sleep: &'p Sleep,
    spares: &'p Spares,
    slots: Box<[CachePadded<Slot<W>>]>,
    global: GlobalQueue<Shared<W::Item>>,
    urgent: Urgent<W::Item>,
    /// The `active` word, joined workers, the caller's seat and the limit.
    seats: Seats,
    /// Stops the run early: a panic, a task's error, the cancel token, the deadline.
    stop: Stop<'p>,
    /// Live progress counters, when a `Progress` handle watches the run.
    progress: Option<Arc<Counters>>,
    /// Set once `active` reached zero.
    done: AtomicBool,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Where the caller waits; reference-counted so a worker can wake it after its last
    /// access to the run.
    caller: Arc<Parker>,
    /// `Control::share_seeds`.
    blocking: bool,
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
        let slots: Box<[_]> = (0..=workers)
            .map(|i| {
                let stack = if i < workers {
                    buffers.next().map_or_else(PrivateStack::new, PrivateStack::in_buffer)
                } else {
                    PrivateStack::new()
                };
                CachePadded::new(Slot {
                    deque: Deque::new(DEQUE_CAPACITY),
                    local: UnsafeCell::new(Local { stack, acc: None, stats: SlotStats::default() }),
                })
            })
            .collect();
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
        }
    }

    fn caller_slot(&self) -> usize {
        self.slots.len() - 1
    }

    /// Wakes `n` sleepers for work made visible before the run started (shared seeds).
    /// Call after the run is registered.
    pub(crate) fn wake_for_shared_seeds(&self, n: u64) {
        for _ in 0..n {
            self.sleep.notify_one();
        }
    }

    /// The caller's part: work on the run, pulling `seeds` as it goes, then wait until
    /// it is done. The caller must then withdraw the run from the registry (see
    /// `crate::pool::registry::Registered`) before it takes the outcome.
    pub(crate) fn run_as_caller(&self, seeds: &mut dyn SeedSource<W::Item>) {
        self.take_part(self.caller_slot(), true, Some(seeds));
        self.seats.caller_left();
        // Acquire: pairs with `finish`. Our seat is free: a worker kept out by it may be
        // asleep while work waits.
        if !self.done.load(Ordering::Acquire) && self.work_visible() {
            self.sleep.notify_one();
        }
        // The caller counted itself as demand while idle; it is not waiting for work now.
        self.sleep.remove_demand();
        // Acquire: pairs with the Release store in `finish`.
        while !self.done.load(Ordering::Acquire) {
            self.caller.park();
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
    fn try_finish(&self, left: Left) {
        // The re-check's loads happen after our AcqRel decrement, which acquired every
        // other participant's: they see every push made before any decrement.
        if !self.work_visible() && self.seats.active.unchanged_since(left) {
            self.finish();
        }
    }

    fn finish(&self) {
        // Release: pairs with the caller's Acquire; the AcqRel decrement that got us
        // here already acquired every other participant's last decrement.
        self.done.store(true, Ordering::Release);
        self.caller.unpark();
    }

    /// Stops the run for a panic and keeps its payload if it is the first. Never
    /// unwinds, whatever the payload's `Drop` does: most calls are outside any
    /// `catch_unwind`, and a worker unwinding out of `participate` would never `leave`.
    /// Drops an item the run will not execute (it stopped early). Each is dropped
    /// under its own `catch_unwind`, its panic recorded like a task's: a panicking
    /// `Drop` never escapes a `try_*` call as an unwind, and two of them never abort
    /// the process (as two panicking drops in one `Vec` would).
    fn drop_pending(&self, item: W::Item) {
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

    fn record_panic(&self, payload: Box<dyn Any + Send>) {
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

    fn work_visible(&self) -> bool {
        // A stale `false` from the stop hint only delays joining.
        !self.stop.is_set()
            && (!self.urgent.is_empty() || !self.global.is_empty() || self.slots.iter().any(|s| !s.deque.is_empty()))
    }

    /// Tells the run's progress watcher, if any, whether participant `me` is working.
    fn report_active(&self, me: usize, active: bool) {
        if let Some(p) = &self.progress {
            p.slot(me).set_active(active);
        }
    }

    /// The termination protocol, from one participant's side; the caller brings the
    /// run's seeds.
    fn take_part(&self, me: usize, mut active: bool, mut seeds: Option<&mut dyn SeedSource<W::Item>>) {
        let slot = &self.slots[me];
        slot.local.with_mut(|p| {
            // SAFETY: slot `me` belongs to this thread for the whole call: worker `i`
            // only ever uses slot `i` and takes part in a run at most once at a time,
            // and the last slot belongs to the run's caller.
            let local = unsafe { &mut *p };
            // SAFETY: as above, the slot and so its deque are ours for this call, and
            // this is the one owner handle made for the deque during it.
            let owner = unsafe { Owner::new(&slot.deque) };
            local.stats.joined = true;
            let mut idle_rounds = 0;
            // Whether we are counted in the pool's demand: workers join idle (counted),
            // the caller starts with work. A participant is counted again when it goes
            // idle, and uncounted only once it actually obtains an item, so a failed
            // attempt does not write the demand line that busy threads read.
            let mut in_demand = !active;
            if active {
                self.report_active(me, true);
            }
            loop {
                if active {
                    let start = Instant::now();
                    self.work_until_idle(me, local, &owner, &mut in_demand, &mut seeds, start);
                    local.stats.busy += start.elapsed();
                    local.stats.idle_transitions += 1;
                    active = false;
                    self.report_active(me, false);
                    if !in_demand {
                        self.sleep.add_demand();
                        in_demand = true;
                    }
                    let left = self.seats.active.deactivate();
                    if left.nobody_active() {
                        self.try_finish(left);
                    } else if self.seats.limited() && self.work_visible() {
                        // A worker turned away at the limit may be asleep: our place is
                        // free now.
                        self.sleep.notify_one_avoiding(self.seats.kept_out_cpu());
                    }
                    idle_rounds = 0;
                }
                // Mutant: the caller pulls its next seeds only after going idle (rule 3
                // broken), so the run can be declared done with seeds still to run.
                #[cfg(all(loom, feature = "mutant_seeds_late"))]
                if let Some(source) = seeds.as_deref_mut()
                    && matches!(source.pull(&mut local.stack), Ok(true))
                    && self.seats.try_activate()
                {
                    active = true;
                    continue;
                }
                // Acquire: pairs with `finish`.
                if self.done.load(Ordering::Acquire) {
                    return;
                }
                // Join the count *before* taking anything (rule 2), bumping the epoch.
                #[cfg(not(all(loom, feature = "mutant_activate_late")))]
                let found = self.work_visible();
                // Mutant: take an item first (into the private stack), then activate.
                #[cfg(all(loom, feature = "mutant_activate_late"))]
                let found =
                    self.find_remote(me, &owner, &mut local.stats).map(|s| s.unpack_onto(&mut local.stack)).is_some()
                        || local.stack.len() > 0;
                if found && self.seats.try_activate() {
                    active = true;
                    self.report_active(me, true);
                    continue;
                }
                idle_rounds += 1;
                if idle_rounds > IDLE_ROUNDS {
                    local.stats.leaves += 1;
                    return;
                }
                idle_pause(idle_rounds);
            }
        });
    }

    /// Executes items until none can be found (seeds included). Catches a panic from a
    /// task or from the seed iterator, records it and stops the run. `started` is when
    /// the participant became active (the cadence's first read times the first item
    /// from it).
    fn work_until_idle(
        &self,
        me: usize,
        local: &mut Local<W>,
        deque: &Owner<'_, Shared<W::Item>>,
        in_demand: &mut bool,
        seeds: &mut Option<&mut dyn SeedSource<W::Item>>,
        started: Instant,
    ) {
        let Local { stack: slot_stack, acc: acc_slot, stats } = local;
        let mut own_stack = std::mem::take(slot_stack);
        let progress = self.progress.as_deref().map(|p| p.slot(me));
        let result = catch_unwind(AssertUnwindSafe(|| {
            // The per-item loop is `run_private_items`; this loop does the checkpoints'
            // work and what comes once the private items are out.
            let stack = &mut own_stack;
            let mut acc = acc_slot.take().unwrap_or_else(|| self.work.new_acc());
            let mut executed = 0u64;
            let mut reported = 0u64;
            // The stop state, the urgent queue and demand are looked at every few items
            // (see `super::cadence`): they are hints, and the loads would otherwise sit
            // on every item. The cadence is kept apart from `checkpoint`, which tasks
            // reach, so that `run_private_items` knows reading the clock leaves
            // `checkpoint.due_now` alone.
            let mut cadence = Cadence::new(started);
            let mut countdown = cadence.every();
            let mut checkpoint = Checkpoint { due_now: false, batch_out: false, clock: Clock::new() };
            'work: loop {
                loop {
                    // Run private items out of line, where the register allocator sees
                    // only the hot loop, until one asks for a checkpoint or none is left.
                    let end;
                    (acc, countdown, end) = self.run_private_items(
                        stack,
                        acc,
                        countdown,
                        &mut executed,
                        &mut checkpoint,
                        &mut cadence,
                        stats,
                        deque,
                        progress,
                    );
                    match end {
                        Paused::Checkpoint => {}
                        Paused::Empty => break,
                        Paused::Panic(payload) => {
                            self.record_panic(payload);
                            break 'work;
                        }
                    }
                    if countdown != 0 && !checkpoint.due_now {
                        continue;
                    }
                    countdown = cadence.every();
                    checkpoint.due_now = false;
                    if let Some(p) = progress {
                        if W::FOLLOW_ON {
                            p.add_completed(executed - reported);
                            reported = executed;
                        }
                        p.set_queued((stack.len() + deque.len()) as u64);
                    }
                    if self.stop.poll(&mut checkpoint.clock) {
                        break 'work;
                    }
                    if let Some(item) = self.urgent.maybe_pop() {
                        stats.global_pops += 1;
                        // Next in line, ahead of every private item; check again right
                        // after it, in case more high-priority items are waiting.
                        stack.push(item);
                        checkpoint.due_now = true;
                        continue;
                    }
                    // Nothing is shared when too little is in sight to be worth a wake-up
                    // (see `super::cadence`).
                    if cadence.worth_sharing(stack.len()) {
                        if self.should_publish(stack.len(), deque) {
                            // A run declared blocking wakes for any item cost: its
                            // items may wait on each other, however short they were.
                            let compute_only = cadence.compute_only() && !self.blocking;
                            checkpoint.batch_out = self.publish(deque, stack, compute_only, stats);
                        } else if Self::should_refill(checkpoint.batch_out, stack.len(), deque) {
                            self.refill(deque, stack, stats);
                        }
                    }
                }
                // Out of private work: look at the stop state before taking any more (the
                // countdown may be far from zero when items come one at a time).
                if self.stop.poll(&mut checkpoint.clock) {
                    break;
                }
                // High-priority items first, then our own deque, then elsewhere.
                let next = match self.urgent.maybe_pop() {
                    Some(item) => Some(Shared::One(item)),
                    None => match deque.pop() {
                        Some(shared) => {
                            // Taken back by ourselves: nobody wanted it, so share no
                            // more batches until someone asks.
                            checkpoint.batch_out = false;
                            Some(shared)
                        }
                        None => {
                            // The next seeds, before anyone else's work (rule 3).
                            #[cfg(not(all(loom, feature = "mutant_seeds_late")))]
                            if let Some(source) = seeds.as_deref_mut() {
                                match source.pull(stack) {
                                    Ok(true) => continue 'work,
                                    Ok(false) => *seeds = None,
                                    Err(payload) => {
                                        *seeds = None;
                                        self.record_panic(payload);
                                        break 'work;
                                    }
                                }
                            }
                            self.find_remote(me, deque, stats)
                        }
                    },
                };
                match next {
                    Some(shared) => {
                        if *in_demand {
                            self.sleep.remove_demand();
                            *in_demand = false;
                        }
                        shared.unpack_onto(stack);
                    }
                    None => break,
                }
            }
            // A task's panic is caught in `run_private_items`, so these survive it (a panicking run
            // hands no accumulator to its caller; its counts include the items run
            // before the panic). Only a panic outside tasks (the identity closure of
            // `new_acc`) loses them with the closure.
            *acc_slot = Some(acc);
            stats.executed += executed;
            if let Some(p) = progress {
                if W::FOLLOW_ON {
                    p.add_completed(executed - reported);
                }
                p.set_queued(0);
            }
        }));
        if let Err(payload) = result {
            self.record_panic(payload);
        }
        if self.stop.is_set() {
            // Drop the private follow-ons one at a time (see `drop_pending`).
            while let Some(item) = own_stack.pop() {
                self.drop_pending(item);
            }
        }
        *slot_stack = own_stack;
    }

    /// Pops and executes private items until the stack is empty ([`Paused::Empty`]), a
    /// task panics, or an item leaves something to check ([`Paused::Checkpoint`]): the
    /// countdown reached 0, the cadence did not skip the checkpoint (see
    /// `super::cadence`) and `checkpoint_due` says so, or a task set `due_now`.
    ///
    /// Out of line, so the register allocator sees only this loop. The stack and the
    /// accumulator are moved into locals, growing the stack passes plain values, and a
    /// panic is caught per item, so once the task's closure is inlined here nothing
    /// keeps them in memory, for a call or for unwinding. A follow-on pushed by one
    /// task can then reach the next in a register (when the closure leaves registers
    /// to spare).
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn run_private_items(
        &self,
        stack_slot: &mut PrivateStack<W::Item>,
        mut acc: W::Acc,
        mut countdown: u32,
        executed: &mut u64,
        checkpoint: &mut Checkpoint,
        cadence: &mut Cadence,
        stats: &mut SlotStats,
        deque: &Owner<'_, Shared<W::Item>>,
        progress: Option<&SlotProgress>,
    ) -> (W::Acc, u32, Paused) {
        let mut stack = std::mem::take(stack_slot);
        // Items executed are counted as countdown laps, so no counter is bumped per item:
        // `start`, plus the laps begun here, less what is left of the last.
        let start = countdown;
        let mut lapped = 0u64;
        let mut lap = cadence.lap();
        let end = loop {
            let Some(item) = stack.pop() else { break Paused::Empty };
            // What `done` promises (see the termination rules), checked by the models.
            #[cfg(loom)]
            debug_assert!(!self.done.load(Ordering::Relaxed), "an item ran after its run was declared done");
            let mut ctx = Ctx {
                stack: &mut stack,
                stats: &mut *stats,
                checkpoint: &mut *checkpoint,
                deque,
                global: &self.global,
                urgent: &self.urgent,
                sleep: self.sleep,
                stop: &self.stop,
                progress,
                blocking: self.blocking,
                seats: &self.seats,
            };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.work.execute(item, &mut ctx, &mut acc))) {
                break Paused::Panic(payload);
            }
            countdown -= 1;
            if countdown == 0 {
                // The checkpoint, reduced to its loads: go back to `work_until_idle` only
                // if one of its checks has something to do.
                if lap.checkpoint(cadence)
                    && self.checkpoint_due(stack.len(), deque, progress, checkpoint.batch_out, cadence)
                {
                    break Paused::Checkpoint;
                }
                countdown = lap.every();
                lapped += u64::from(countdown);
            }
            if checkpoint.due_now {
                break Paused::Checkpoint;
            }
        };
        *stack_slot = stack;
        cadence.set_lap(lap);
        *executed += lapped + u64::from(start) - u64::from(countdown);
        (acc, countdown, end)
    }

    /// Whether the checkpoint between items has something to do
    /// (`Run::run_private_items` checks every few items, see `super::cadence`):
    /// loads only, out of line so the loop keeps its registers.
    #[inline(never)]
    fn checkpoint_due(
        &self,
        private: usize,
        deque: &Owner<'_, Shared<W::Item>>,
        progress: Option<&SlotProgress>,
        batch_out: bool,
        cadence: &Cadence,
    ) -> bool {
        progress.is_some()
            || self.stop.needs_poll()
            || self.urgent.in_use()
            || ((self.should_publish(private, deque) || Self::should_refill(batch_out, private, deque))
                && cadence.worth_sharing(private))
    }

    /// Whether sharing private items now would feed a hungry thread: at least two
    /// (one stays here), some thread idle, what we shared last time already taken, and
    /// someone able to take it (`Seats::has_taker`).
    #[inline(always)]
    fn should_publish(&self, private: usize, deque: &Owner<'_, Shared<W::Item>>) -> bool {
        private >= 2 && self.sleep.has_demand() && deque.is_empty() && self.seats.has_taker()
    }

    /// Shares the older half of the private stack with hungry threads (when
    /// `should_publish`); returns whether it went as a batch.
    #[cold]
    fn publish(
        &self,
        deque: &Owner<'_, Shared<W::Item>>,
        stack: &mut PrivateStack<W::Item>,
        compute_only: bool,
        stats: &mut SlotStats,
    ) -> bool {
        share_older_half(stack, deque, &self.global, self.sleep, &self.seats, compute_only, stats)
    }

    /// Whether to share the next batch before anyone asks: our last batch was taken
    /// (the deque is empty again, and we did not take it back), and enough is left that
    /// the next one is a full batch with as much again staying here.
    #[inline(always)]
    fn should_refill(batch_out: bool, private: usize, deque: &Owner<'_, Shared<W::Item>>) -> bool {
        batch_out && private >= 2 * BATCH_AT_MOST && deque.is_empty()
    }

    /// Shares the next batch for the thief that took the last one, without waking
    /// anybody: it is busy with that batch now, and when it runs out it finds this one
    /// at once, instead of going idle and waiting for us to see its demand (about two
    /// batch copies and a hand-shake per batch, which on 20 ns items cost the thief a
    /// fifth of its time). A batch nobody takes is taken back by us, which ends this.
    #[cold]
    fn refill(&self, deque: &Owner<'_, Shared<W::Item>>, stack: &mut PrivateStack<W::Item>, stats: &mut SlotStats) {
        share_batch(stack, BATCH_AT_MOST, deque, &self.global, stats);
    }

    /// Looks for work outside our own slot: the global queue, then the other deques.
    fn find_remote(
        &self,
        me: usize,
        deque: &Owner<'_, Shared<W::Item>>,
        stats: &mut SlotStats,
    ) -> Option<Shared<W::Item>> {
        if let Some(shared) = self.urgent.queue.pop().map(Shared::One).or_else(|| self.global.pop()) {
            stats.global_pops += 1;
            return Some(shared);
        }
        let n = self.slots.len();
        for _ in 0..4 {
            let mut contended = false;
            for k in 1..n {
                let victim = &self.slots[(me + k) % n].deque;
                match deque.steal_batch_from(victim) {
                    Steal::Success(item) => {
                        stats.steals += 1;
                        stats.stolen_extra += deque.len() as u64;
                        return Some(item);
                    }
                    Steal::Retry => contended = true,
                    Steal::Empty => {}
                }
            }
            if !contended {
                break;
            }
            crate::sync::spin_hint();
        }
        None
    }
}

/// One idle round: spin briefly at first, then yield the core.
fn idle_pause(round: u32) {
    if round <= 6 {
        for _ in 0..(1u32 << round) {
            crate::sync::spin_hint();
        }
    } else {
        crate::sync::yield_now();
    }
}

impl<W: Work> Job for Run<'_, W> {
    fn try_join(&self) -> bool {
        // Acquire: pairs with `finish`; a finished run takes no one.
        if self.done.load(Ordering::Acquire) {
            return false;
        }
        if !self.seats.admit_worker() {
            return false;
        }
        self.seats.participants.join();
        true
    }

    fn has_work(&self, worker: usize) -> bool {
        // A snapshot; `try_activate` enforces the limit, `try_join` the seats.
        self.seats.admit_worker()
            && !self.seats.shares_the_callers_core(worker, self.sleep)
            && self.work_visible()
            && self.seats.has_room()
    }

    fn participate(&self, worker: usize) -> Leave {
        self.take_part(worker, false, None);
        self.seats.participants.leave(&self.caller)
    }

    fn participants(&self) -> &Participants {
        &self.seats.participants
    }

    fn owner(&self) -> &Parker {
        &self.caller
    }
}
