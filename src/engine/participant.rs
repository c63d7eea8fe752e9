//! One thread's part in a run: a participant in its own slot, from the per-item loop
//! to going idle and leaving (its side of the termination protocol, whose rules the
//! comments cite by number: ARCHITECTURE.md, "Termination").

use super::cadence::Cadence;
use super::ctx::{Checkpoint, Ctx};
use super::run::{Local, Run};
use super::seeds::{SEED_CHUNK, SeedSource};
use super::share::{BATCH_AT_MOST, BurstShare, Shared, share_batch, share_older_half};
use super::stack::{BurstScope, PrivateStack};
use super::stop::Clock;
use super::work::Work;
use crate::deque::{Owner, Steal};
use crate::pool::registry::{Job, Leave, Participants, Registry};
use crate::progress::SlotProgress;
use crate::stats::SlotStats;
use crate::sync::{Ordering, Parker};
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// How long a run's caller that holds a worker's core takes part before it hands that
/// core back (see `Participant::step_back`): long next to waking the worker (tens of
/// microseconds), short next to the runs that gain from it (the caller's allocations
/// contend with the workers' frees under glibc for as long as it works).
const STEP_BACK_AFTER: Duration = Duration::from_millis(2);
/// How long a caller that stepped back waits for a worker to come before it takes
/// the work back, when no worker is idle (see `Run::run_as_caller`); doubled while one
/// is (it is on its way, if slowly), up to `STEP_BACK_PATIENCE_MOST`.
#[cfg(not(loom))]
const STEP_BACK_PATIENCE: Duration = Duration::from_millis(1);
/// Under loom, where the wait expires at once, the doubling is only more yields:
/// models explore one expiry.
#[cfg(loom)]
const STEP_BACK_PATIENCE: Duration = STEP_BACK_PATIENCE_MOST;
const STEP_BACK_PATIENCE_MOST: Duration = Duration::from_millis(64);
/// Most unpulled seeds a caller stepping back hands to the shared queue, four of the
/// chunks it pulls at a time, so that a run still holds a bounded number of seeds; a
/// run with more (or an iterator that cannot say) steps back once they are pulled.
const STEP_BACK_SEEDS_AT_MOST: usize = 4 * SEED_CHUNK;

/// Idle rounds a participant spends looking for work before it leaves the run.
#[cfg(not(loom))]
const IDLE_ROUNDS: u32 = 64;
#[cfg(loom)]
const IDLE_ROUNDS: u32 = 1;

/// A thread taking part in a run, in its own slot: the slot's deque, which it owns,
/// its private state, and whether the pool counts it as demand. Lives for one
/// `take_part`, on that thread.
struct Participant<'a, 'p, W: Work> {
    run: &'a Run<'p, W>,
    /// The slot's index in the run.
    me: usize,
    deque: Owner<'a, Shared<W::Item>>,
    local: &'a mut Local<W>,
    /// Where this participant reports progress, if anyone watches.
    progress: Option<&'a SlotProgress>,
    /// Whether we are counted in the pool's demand: workers join idle (counted), the
    /// caller starts with work. A participant is counted again when it goes idle, and
    /// uncounted only once it actually obtains an item, so a failed attempt does not
    /// write the demand line that busy threads read.
    in_demand: bool,
    /// When this participant (a long run's caller) is to step back; `None`: never.
    step_back_at: Option<Instant>,
    /// It stepped back: it leaves the run as soon as it is idle.
    stepped_back: bool,
}

/// What one activation of a participant carries from one run of its private items to
/// the next.
struct Activation {
    /// Items left before the next checkpoint.
    countdown: u32,
    /// Items executed so far, and how many of them progress has been told about.
    executed: u64,
    reported: u64,
    /// When checkpoints come (see `super::cadence`). Kept apart from `checkpoint`, which
    /// tasks reach, so that `run_private_items` knows reading the clock leaves
    /// `checkpoint.due_now` alone.
    cadence: Cadence,
    checkpoint: Checkpoint,
}

/// Why `run_private_items` returned.
enum Paused {
    /// The private stack is empty.
    Empty,
    /// An item asked for the checkpoint between items.
    Checkpoint,
    /// A task panicked.
    Panic(Box<dyn Any + Send>),
}

/// Takes part in `run` in slot `me` until idle for good or the run is done; the
/// caller starts `active` and brings the run's seeds. A caller with `may_step_back`
/// steps back once the run has gone on for a while (`Participant::step_back`);
/// returns whether it did.
pub(super) fn take_part<W: Work>(
    run: &Run<'_, W>,
    me: usize,
    active: bool,
    seeds: Option<&mut dyn SeedSource<W::Item>>,
    may_step_back: bool,
) -> bool {
    let slot = run.slot(me);
    slot.local.with_mut(|p| {
        // SAFETY: slot `me` belongs to this thread for the whole call: worker `i` only
        // ever uses slot `i` and takes part in a run at most once at a time, and the
        // last slot belongs to the run's caller.
        let local = unsafe { &mut *p };
        // SAFETY: as above, the slot and so its deque are ours for this call, and this
        // is the one owner handle made for the deque during it.
        let deque = unsafe { Owner::new(&slot.deque) };
        local.stats.joined = true;
        let progress = run.progress.as_deref().map(|p| p.slot(me));
        let step_back_at = may_step_back.then(|| Instant::now() + STEP_BACK_AFTER);
        let mut me =
            Participant { run, me, deque, local, progress, in_demand: !active, step_back_at, stepped_back: false };
        me.until_left(active, seeds);
        me.stepped_back
    })
}

impl<W: Work> Run<'_, W> {
    /// The caller's part: work on the run, pulling `seeds` as it goes, then wait until
    /// it is done. The caller must then withdraw the run from the registry (see
    /// `crate::pool::registry::Registered`) before it takes the outcome.
    pub(crate) fn run_as_caller(&self, seeds: &mut dyn SeedSource<W::Item>) {
        let mut stepped_back = take_part(self, self.caller_slot(), true, Some(seeds), self.caller_may_step_back);
        loop {
            self.seats.caller_left();
            // Acquire: pairs with `finish`. Our seat is free: a worker kept out by it
            // may be asleep while work waits.
            if !self.done.load(Ordering::Acquire) && self.work_visible() {
                self.sleep.notify_one();
            }
            // The caller counted itself as demand while idle; it is not waiting for
            // work now.
            self.sleep.remove_demand();
            if !stepped_back {
                // Idle with nothing in sight: whatever is left runs on workers inside.
                // Acquire: pairs with the Release store in `finish`.
                while !self.done.load(Ordering::Acquire) {
                    self.caller.park();
                }
                return;
            }
            // We stepped back with work left for the workers, so the run now needs
            // one of them to come. None may (all busy elsewhere, or waiting for this
            // thread, say at a stage gate it holds): if work still waits with no
            // worker inside, and no worker is idle (none is on its way) or we have
            // waited long, come back and finish it ourselves.
            let mut patience = STEP_BACK_PATIENCE;
            loop {
                // Acquire: pairs with the Release store in `finish`.
                if self.done.load(Ordering::Acquire) {
                    return;
                }
                // Mutant: wait for a worker as if one were inside, so a caller whose
                // worker never comes waits for good.
                if self.seats.participants.count() > 0 || cfg!(all(loom, feature = "mutant_no_come_back")) {
                    // The last worker to leave wakes us, as the run's end does.
                    self.caller.park();
                    continue;
                }
                self.caller.park_until_fallback(Instant::now() + patience);
                if !self.done.load(Ordering::Acquire) && self.seats.participants.count() == 0 && self.work_visible() {
                    if !self.sleep.has_demand() || patience >= STEP_BACK_PATIENCE_MOST {
                        break;
                    }
                    patience *= 2;
                }
            }
            self.seats.caller_back();
            // Counted as demand again, as an idle participant is.
            self.sleep.add_demand();
            stepped_back = take_part(self, self.caller_slot(), false, None, false);
        }
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
        take_part(self, worker, false, None, false);
        self.seats.participants.leave(&self.caller)
    }

    fn participants(&self) -> &Participants {
        &self.seats.participants
    }

    fn owner(&self) -> &Parker {
        &self.caller
    }

    fn registry(&self) -> &Registry {
        self.registry
    }
}

impl<W: Work> Participant<'_, '_, W> {
    /// The termination protocol, from one participant's side (rules 2 to 4).
    fn until_left(&mut self, mut active: bool, mut seeds: Option<&mut dyn SeedSource<W::Item>>) {
        let run = self.run;
        let mut idle_rounds = 0;
        if active {
            run.report_active(self.me, true);
        }
        loop {
            if active {
                let start = Instant::now();
                self.work_until_idle(&mut seeds, start);
                self.local.stats.busy += start.elapsed();
                self.local.stats.idle_transitions += 1;
                active = false;
                run.report_active(self.me, false);
                if !self.in_demand {
                    run.sleep.add_demand();
                    self.in_demand = true;
                }
                let left = run.seats.active.deactivate();
                if left.nobody_active() {
                    run.try_finish(left, self.me == run.caller_slot());
                } else if run.seats.limited() && run.work_visible() {
                    // A worker turned away at the limit may be asleep: our place is
                    // free now.
                    run.sleep.notify_one_avoiding(run.seats.kept_out_cpu());
                }
                if self.stepped_back {
                    // Mutant: share the private items after going idle (rule 1 broken),
                    // so the run can be declared done before they are visible.
                    #[cfg(all(loom, feature = "mutant_step_back_early"))]
                    {
                        let mut stack = std::mem::take(&mut self.local.stack);
                        self.share_everything(&mut stack);
                        self.local.stack = stack;
                    }
                    // Our work is all shared; `run_as_caller` frees the seat, wakes a
                    // worker for it and waits for the run to be done.
                    return;
                }
                idle_rounds = 0;
            }
            // Mutant: the caller pulls its next seeds only after going idle (rule 3
            // broken), so the run can be declared done with seeds still to run.
            #[cfg(all(loom, feature = "mutant_seeds_late"))]
            if let Some(source) = seeds.as_deref_mut()
                && matches!(source.pull(&mut self.local.stack), Ok(true))
                && run.seats.try_activate()
            {
                active = true;
                continue;
            }
            // Acquire: pairs with `Run::finish`.
            if run.done.load(Ordering::Acquire) {
                return;
            }
            // Join the count *before* taking anything (rule 2), bumping the epoch.
            #[cfg(not(all(loom, feature = "mutant_activate_late")))]
            let found = run.work_visible();
            // Mutant: take an item first (into the private stack), then activate.
            #[cfg(all(loom, feature = "mutant_activate_late"))]
            let found = {
                let remote = Self::find_remote(run, self.me, &self.deque, &mut self.local.stats);
                remote.map(|s| s.unpack_onto(&mut self.local.stack)).is_some() || self.local.stack.len() > 0
            };
            if found && run.seats.try_activate() {
                active = true;
                run.report_active(self.me, true);
                continue;
            }
            idle_rounds += 1;
            if idle_rounds > IDLE_ROUNDS {
                self.local.stats.leaves += 1;
                return;
            }
            idle_pause(idle_rounds);
        }
    }

    /// Executes items until none can be found (seeds included). Catches a panic from a
    /// task or from the seed iterator, records it and stops the run. `started` is when
    /// the participant became active (the cadence's first read times the first item
    /// from it).
    fn work_until_idle(&mut self, seeds: &mut Option<&mut dyn SeedSource<W::Item>>, started: Instant) {
        let run = self.run;
        let mut own_stack = std::mem::take(&mut self.local.stack);
        let result = catch_unwind(AssertUnwindSafe(|| {
            // The per-item loop is `run_private_items`; this loop does the checkpoints'
            // work and what comes once the private items are out.
            let stack = &mut own_stack;
            let mut acc = self.local.acc.take().unwrap_or_else(|| run.work.new_acc());
            let mut cadence = Cadence::new(started);
            if let Some(at) = self.step_back_at {
                cadence.step_back_at(at);
            }
            let mut now = Activation {
                countdown: cadence.every(),
                executed: 0,
                reported: 0,
                cadence,
                checkpoint: Checkpoint { due_now: false, batch_out: false, clock: Clock::new() },
            };
            'work: loop {
                loop {
                    let paused;
                    (acc, paused) = self.run_private_items(stack, acc, &mut now);
                    match paused {
                        Paused::Checkpoint => {}
                        Paused::Empty => break,
                        Paused::Panic(payload) => {
                            run.record_panic(payload);
                            break 'work;
                        }
                    }
                    if now.countdown != 0 && !now.checkpoint.due_now {
                        continue;
                    }
                    if !self.checkpoint(stack, &mut now) {
                        break 'work;
                    }
                    if now.cadence.step_back_due() && self.step_back(stack, seeds, &mut now.cadence) {
                        break 'work;
                    }
                }
                // Out of private work: look at the stop state before taking any more (the
                // countdown may be far from zero when items come one at a time).
                if run.stop.poll(&mut now.checkpoint.clock) {
                    break;
                }
                if !self.next_shared(stack, seeds, &mut now.checkpoint) {
                    break;
                }
            }
            // A task's panic is caught in `run_private_items`, so these survive it (a
            // panicking run hands no accumulator to its caller; its counts include the
            // items run before the panic). Only a panic outside tasks (the identity
            // closure of `new_acc`) loses them with the closure.
            self.local.acc = Some(acc);
            self.local.stats.executed += now.executed;
            if let Some(p) = self.progress {
                if W::FOLLOW_ON {
                    p.add_completed(now.executed - now.reported);
                }
                p.set_queued(0);
            }
        }));
        if let Err(payload) = result {
            run.record_panic(payload);
        }
        if run.stop.is_set() {
            // Drop the private follow-ons one at a time (see `Run::drop_pending`).
            while let Some(item) = own_stack.pop() {
                run.drop_pending(item);
            }
        }
        self.local.stack = own_stack;
    }

    /// The full checkpoint between items, which `run_private_items` asked for: progress,
    /// the stop state, high-priority items, publishing. Returns `false` if the run is
    /// stopping.
    fn checkpoint(&mut self, stack: &mut PrivateStack<W::Item>, now: &mut Activation) -> bool {
        let run = self.run;
        now.countdown = now.cadence.every();
        now.checkpoint.due_now = false;
        if let Some(p) = self.progress {
            if W::FOLLOW_ON {
                p.add_completed(now.executed - now.reported);
                now.reported = now.executed;
            }
            p.set_queued((stack.len() + self.deque.len()) as u64);
        }
        if run.stop.poll(&mut now.checkpoint.clock) {
            return false;
        }
        if let Some(item) = run.urgent.maybe_pop() {
            self.local.stats.global_pops += 1;
            // Next in line, ahead of every private item; check again right after it, in
            // case more high-priority items are waiting.
            stack.push(item);
            now.checkpoint.due_now = true;
            return true;
        }
        // Nothing is shared when too little is in sight to be worth a wake-up (see
        // `super::cadence`).
        if now.cadence.worth_sharing(stack.len()) {
            if Self::should_publish(run, stack.len(), &self.deque) {
                // A run declared blocking wakes for any item cost: its items may wait on
                // each other, however short they were.
                let compute_only = now.cadence.compute_only() && !run.blocking;
                now.checkpoint.batch_out = self.publish(stack, compute_only);
            } else if Self::should_refill(now.checkpoint.batch_out, stack.len(), &self.deque) {
                self.refill(stack);
            }
        }
        true
    }

    /// A long run's caller that holds a worker's core hands that core back: it shares
    /// every private item, then hands its unpulled seeds to the global queue, and goes
    /// idle, so that `run_as_caller` frees its seat, wakes the worker kept out
    /// and waits for the run to end, as rayon's caller waits through its runs (coming
    /// back if no worker comes). The workers then run on their own cores, and the
    /// caller's thread, which allocates in an allocator arena of its own, no longer
    /// works beside them. Everything is shared while we are still active (rule 1), and
    /// our decrement comes after, so whoever brings the count to zero sees it (rule 4).
    /// Our items go first: the seed iterator may wait for what they produce. Returns
    /// whether to stop working: we stepped back, or the seed iterator panicked (the run
    /// stops). Not while the run is stopping (no seed is made then), nor while the
    /// iterator may hold more than `STEP_BACK_SEEDS_AT_MOST` seeds (tried again later).
    #[cold]
    #[inline(never)]
    fn step_back(
        &mut self,
        stack: &mut PrivateStack<W::Item>,
        seeds: &mut Option<&mut dyn SeedSource<W::Item>>,
        cadence: &mut Cadence,
    ) -> bool {
        let run = self.run;
        let again = Some(cadence.last_read() + STEP_BACK_AFTER);
        cadence.stepped_back_or_retry(None);
        if run.stop.is_set_or_cancelled() {
            return false;
        }
        let seed_panic = |seeds: &mut Option<&mut dyn SeedSource<W::Item>>, payload| {
            *seeds = None;
            run.record_panic(payload);
            true
        };
        if let Some(source) = seeds.as_deref_mut() {
            match source.at_most_left(STEP_BACK_SEEDS_AT_MOST) {
                Ok(true) => {}
                Ok(false) => {
                    cadence.stepped_back_or_retry(again);
                    return false;
                }
                Err(payload) => return seed_panic(seeds, payload),
            }
        }
        // Mutant: the items are shared only after we go idle (see `until_left`).
        #[cfg(not(all(loom, feature = "mutant_step_back_early")))]
        self.share_everything(stack);
        #[cfg(all(loom, feature = "mutant_step_back_early"))]
        let _ = stack;
        if let Some(source) = seeds.as_deref_mut() {
            match source.hand_over(STEP_BACK_SEEDS_AT_MOST, &mut |batch| run.global.push(Shared::Batch(batch))) {
                Ok(true) => *seeds = None,
                Ok(false) => {
                    // The size hint was low: keep pulling as before (what we shared
                    // stays shared, and we take it back if nobody else does).
                    cadence.stepped_back_or_retry(again);
                    return false;
                }
                Err(payload) => return seed_panic(seeds, payload),
            }
        }
        self.stepped_back = true;
        true
    }

    /// Moves every private item to our deque (spilling to the global queue when it is
    /// full) as one batch in the stack's own allocation, without copying them: a
    /// stepping-back caller may hold millions (a wide fan-out's root), and the thief
    /// that takes them shares them on as any participant does.
    fn share_everything(&mut self, stack: &mut PrivateStack<W::Item>) {
        let count = stack.len();
        if count > 0 {
            let run = self.run;
            let items = std::mem::take(stack).into_vec();
            self.deque.push_or_spill(Shared::Batch(items), |x| run.global.push(x));
            self.local.stats.published += count as u64;
        }
    }

    /// Out of private items: takes the next work, high-priority items first, then our
    /// own deque, then the next seeds, then anyone else's. Returns whether items are on
    /// the private stack again (`false`: nothing to take, or the seed iterator panicked).
    fn next_shared(
        &mut self,
        stack: &mut PrivateStack<W::Item>,
        seeds: &mut Option<&mut dyn SeedSource<W::Item>>,
        checkpoint: &mut Checkpoint,
    ) -> bool {
        let run = self.run;
        let next = match run.urgent.maybe_pop() {
            Some(item) => Some(Shared::One(item)),
            None => match self.deque.pop() {
                Some(shared) => {
                    // Taken back by ourselves: nobody wanted it, so share no more
                    // batches until someone asks.
                    checkpoint.batch_out = false;
                    Some(shared)
                }
                None => {
                    // The next seeds, before anyone else's work (rule 3).
                    #[cfg(not(all(loom, feature = "mutant_seeds_late")))]
                    if let Some(source) = seeds.as_deref_mut() {
                        match source.pull(stack) {
                            Ok(true) => return true,
                            Ok(false) => *seeds = None,
                            Err(payload) => {
                                *seeds = None;
                                run.record_panic(payload);
                                return false;
                            }
                        }
                    }
                    #[cfg(all(loom, feature = "mutant_seeds_late"))]
                    let _ = &seeds;
                    Self::find_remote(run, self.me, &self.deque, &mut self.local.stats)
                }
            },
        };
        match next {
            Some(shared) => {
                if self.in_demand {
                    run.sleep.remove_demand();
                    self.in_demand = false;
                }
                shared.unpack_onto(stack);
                true
            }
            None => false,
        }
    }

    /// Pops and executes private items until the stack is empty ([`Paused::Empty`]), a
    /// task panics, or an item leaves something to check ([`Paused::Checkpoint`]): the
    /// countdown reached 0, the cadence did not skip the checkpoint (see
    /// `super::cadence`) and `checkpoint_due` says so, or a task set `due_now`.
    ///
    /// Out of line, so the register allocator sees only this loop. The stack, the
    /// accumulator and the countdown are moved into locals, and the participant's
    /// fields into local references, growing the stack passes plain values, and a
    /// panic is caught per item, so once the task's closure is inlined here nothing
    /// keeps them in memory, for a call or for unwinding. A follow-on pushed by one task
    /// can then reach the next in a register (when the closure leaves registers to
    /// spare).
    #[inline(never)]
    fn run_private_items(
        &mut self,
        stack_slot: &mut PrivateStack<W::Item>,
        mut acc: W::Acc,
        now: &mut Activation,
    ) -> (W::Acc, Paused) {
        let Participant { run, deque, local, progress, .. } = self;
        let (run, deque, stats, progress) = (*run, &*deque, &mut local.stats, *progress);
        let Activation { countdown, executed, cadence, checkpoint, .. } = now;
        let mut stack = std::mem::take(stack_slot);
        // Items executed are counted as countdown laps, so no counter is bumped per item:
        // `start`, plus the laps begun here, less what is left of the last.
        let start = *countdown;
        let mut left = start;
        let mut lapped = 0u64;
        let mut lap = cadence.lap();
        let burst = BurstShare::new(deque, &run.global, run.sleep, &run.seats, checkpoint.batch_out, run.blocking);
        // SAFETY: dropped below, before the stack leaves this function; the loop only
        // pushes and pops the stack, which keeps its allocation meanwhile, and only on
        // this thread (the `Ctx` that pushes is neither `Send` nor `Sync`).
        let sharing = unsafe { BurstScope::enter(&stack, &burst) };
        let paused = loop {
            let Some(item) = stack.pop() else { break Paused::Empty };
            // What `done` promises (see the termination rules), checked by the models.
            #[cfg(loom)]
            debug_assert!(!run.done.load(Ordering::Relaxed), "an item ran after its run was declared done");
            let mut ctx = Ctx {
                stack: &mut stack,
                stats: &mut *stats,
                checkpoint: &mut *checkpoint,
                deque,
                global: &run.global,
                urgent: &run.urgent,
                sleep: run.sleep,
                stop: &run.stop,
                progress,
                blocking: run.blocking,
                seats: &run.seats,
            };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| run.work.execute(item, &mut ctx, &mut acc))) {
                break Paused::Panic(payload);
            }
            left -= 1;
            if left == 0 {
                // The checkpoint, reduced to its loads: go back to `work_until_idle` only
                // if one of its checks has something to do.
                if lap.checkpoint(cadence)
                    && Self::checkpoint_due(run, stack.len(), deque, progress, checkpoint.batch_out, cadence)
                {
                    break Paused::Checkpoint;
                }
                left = lap.every();
                lapped += u64::from(left);
            }
            if checkpoint.due_now {
                break Paused::Checkpoint;
            }
        };
        drop(sharing);
        let published;
        (checkpoint.batch_out, published) = burst.finish();
        stats.published += published;
        *stack_slot = stack;
        cadence.set_lap(lap);
        *executed += lapped + u64::from(start) - u64::from(left);
        *countdown = left;
        (acc, paused)
    }

    /// Whether the checkpoint between items has something to do (`run_private_items`
    /// checks every few items, see `super::cadence`): loads only, out of line so the
    /// loop keeps its registers.
    #[inline(never)]
    fn checkpoint_due(
        run: &Run<'_, W>,
        private: usize,
        deque: &Owner<'_, Shared<W::Item>>,
        progress: Option<&SlotProgress>,
        batch_out: bool,
        cadence: &Cadence,
    ) -> bool {
        progress.is_some()
            || cadence.step_back_due()
            || run.stop.needs_poll()
            || run.urgent.in_use()
            || ((Self::should_publish(run, private, deque) || Self::should_refill(batch_out, private, deque))
                && cadence.worth_sharing(private))
    }

    /// Whether sharing private items now would feed a hungry thread: at least two (one
    /// stays here), some thread idle, what we shared last time already taken, and
    /// someone able to take it (`Seats::has_taker`).
    #[inline(always)]
    fn should_publish(run: &Run<'_, W>, private: usize, deque: &Owner<'_, Shared<W::Item>>) -> bool {
        private >= 2 && run.sleep.has_demand() && deque.is_empty() && run.seats.has_taker()
    }

    /// Shares the older half of the private stack with hungry threads (when
    /// `should_publish`); returns whether it went as a batch.
    #[cold]
    fn publish(&mut self, stack: &mut PrivateStack<W::Item>, compute_only: bool) -> bool {
        let run = self.run;
        share_older_half(stack, &self.deque, &run.global, run.sleep, &run.seats, compute_only, &mut self.local.stats)
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
    fn refill(&mut self, stack: &mut PrivateStack<W::Item>) {
        share_batch(stack, BATCH_AT_MOST, &self.deque, &self.run.global, &mut self.local.stats);
    }

    /// Looks for work outside our own slot: the urgent and global queues, then the
    /// other deques.
    fn find_remote(
        run: &Run<'_, W>,
        me: usize,
        deque: &Owner<'_, Shared<W::Item>>,
        stats: &mut SlotStats,
    ) -> Option<Shared<W::Item>> {
        if let Some(shared) = run.urgent.queue.pop().map(Shared::One).or_else(|| run.global.pop()) {
            stats.global_pops += 1;
            return Some(shared);
        }
        let n = run.slot_count();
        for _ in 0..4 {
            let mut contended = false;
            for k in 1..n {
                let victim = &run.slot((me + k) % n).deque;
                // A snapshot first: an empty deque costs two loads, not the steal's
                // fence. A stale "empty" is a look taken a moment earlier, which rule 4's
                // re-check covers, as it covers any look that races a push.
                if victim.is_empty() {
                    continue;
                }
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
