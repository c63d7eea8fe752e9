//! The run engine: one typed fan-out, its participants, and the termination protocol.
//!
//! A run owns one *slot* per possible participant (each pool worker, plus the caller).
//! A slot has a private stack (`PrivateStack`, touched only by its owner), a stealable
//! [`Deque`], a private accumulator and private statistics. Follow-on items go to the
//! private stack; they are moved to the deque only when the pool reports *demand*
//! (some thread is idle), so a busy run pays no atomic per item. A large share goes as
//! one deque entry (`Shared::Batch`); the termination rules below count entries, and
//! taking an entry takes every item in it.
//!
//! # Termination
//!
//! `active` packs two numbers: the count of participants that may hold or produce
//! items (low 32 bits) and an epoch bumped on every activation (high 32 bits). The
//! caller starts active (the count starts at 1 on its behalf); workers join idle.
//!
//! 1. Only active participants execute items or push them anywhere.
//! 2. An idle participant that sees work increments `active` (count and epoch) *before*
//!    it takes any item from a deque or a shared queue (global, or urgent).
//! 3. An active participant goes idle (decrements the count) only with an empty private
//!    stack, after finding nothing in its own deque, the global queue or other deques;
//!    the caller also only once it has pulled every seed. Seeds not yet pulled count
//!    as the caller's private items: the caller pulls them, a chunk at a time, into its
//!    private stack while it is active, so a run over N seeds holds O(chunk) of them.
//! 4. Whoever brings the count to zero re-checks every deque and both shared queues, and
//!    then that `active` still holds the value its decrement left. Only then is the run
//!    `done`.
//!
//! No early `done`: when the count reaches zero nobody holds private items, and every
//! item in a deque or the global queue was pushed before some decrement that the
//! finisher's AcqRel decrement acquired, so its re-check sees it, unless someone took it
//! first. Taking an item is a release operation on the structure (a CAS on a deque's
//! head, a pop from the injector, the owner's release store of `bottom`) that the
//! re-check reads with acquire, so the taker's earlier increment is then visible to the
//! final load, whose epoch has changed. The epoch rules out the ABA case where others
//! activate and go idle again between the finisher's decrement and its final load,
//! leaving the count where the finisher saw it.
//!
//! Always `done` eventually: the last participant to go idle runs the check; if it sees
//! work, it re-activates and takes it (rule 2), so the check runs again later.
//!
//! After a panic (the `stop` flag), participants stop starting items, drop their private
//! items, treat the shared queues as empty and do not re-activate; the count then reaches
//! zero and the items left in deques are dropped with the run.
//!
//! Memory safety of the caller's stack frame: workers join a run only through the
//! pool's registry, under its lock, which bumps `participants`; the caller removes the
//! run from the registry and then waits for `participants == 0` before the run is
//! dropped. The last access a worker makes to the run is that decrement.

use crate::CancelToken;
use crate::cadence::Cadence;
use crate::deque::{Deque, Steal};
use crate::fallible::drop_quietly;
use crate::global::GlobalQueue;
use crate::progress::{Counters, SlotProgress};
use crate::seats::Seats;
use crate::sleep::{NOT_PINNED, Sleep};
use crate::spare::Spares;
use crate::stack::PrivateStack;
use crate::stats::{RunStats, SlotStats};
use crate::stop::{Clock, Stop, StopReason};
use crate::sync::{Arc, AtomicBool, AtomicUsize, Mutex, Ordering, Parker, UnsafeCell, current_cpu, lock};
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

/// Seeds the caller pulls from the seed iterator at a time (once its private stack
/// is empty): enough for a full batch to share with as much again staying behind,
/// without holding all the seeds at once.
#[cfg(not(loom))]
const SEED_CHUNK: usize = 4 * BATCH_AT_MOST;
/// Under loom, so that a model with three seeds pulls twice.
#[cfg(loom)]
const SEED_CHUNK: usize = 2;

/// Idle rounds a participant spends looking for work before it leaves the run.
#[cfg(not(loom))]
const IDLE_ROUNDS: u32 = 64;
#[cfg(loom)]
const IDLE_ROUNDS: u32 = 1;

/// What a run does with each item. Implemented for follow-on runs and for the
/// index-range runs behind `for_each`, `map` and `fold`.
pub(crate) trait Work: Sync {
    /// The item type of the run.
    type Item: Send;
    /// Per-participant state, created on first use and handed back at the end.
    type Acc: Send;
    /// A fresh accumulator.
    fn new_acc(&self) -> Self::Acc;
    /// Whether items come from `Ctx::push` (so `executed - seeds` is the follow-on count).
    const FOLLOW_ON: bool = false;
    /// Executes one item.
    fn execute(&self, item: Self::Item, ctx: &mut Ctx<'_, Self::Item>, acc: &mut Self::Acc);
}

/// A borrowed work runs like the work itself, so callers can read the work's own state
/// (say, its first failure) after the run.
impl<W: Work> Work for &W {
    type Item = W::Item;
    type Acc = W::Acc;
    const FOLLOW_ON: bool = W::FOLLOW_ON;
    fn new_acc(&self) -> Self::Acc {
        (**self).new_acc()
    }
    #[inline(always)]
    fn execute(&self, item: Self::Item, ctx: &mut Ctx<'_, Self::Item>, acc: &mut Self::Acc) {
        (**self).execute(item, ctx, acc)
    }
}

/// A task's handle on its run: push follow-on items through it.
///
/// Pushed items go to a buffer private to the current thread (no atomics, no
/// allocation beyond the buffer's amortized growth). They become stealable only when
/// another thread is idle, in which case the older half is shared.
///
/// ```
/// let pool = fanout::Pool::builder().num_threads(2).build().unwrap();
/// let total = std::sync::atomic::AtomicU64::new(0);
/// pool.run([(0u64, 0u32)], |(id, depth), ctx| {
///     total.fetch_add(id, std::sync::atomic::Ordering::Relaxed);
///     if depth < 3 {
///         for j in 0..2 {
///             ctx.push((id * 2 + j + 1, depth + 1));
///         }
///     }
/// });
/// assert_eq!(total.into_inner(), (0..15).sum::<u64>());
/// ```
pub struct Ctx<'a, T> {
    stack: &'a mut PrivateStack<T>,
    stats: &'a mut SlotStats,
    pace: &'a mut Pace,
    deque: &'a Deque<Shared<T>>,
    global: &'a GlobalQueue<Shared<T>>,
    urgent: &'a Urgent<T>,
    sleep: &'a Sleep,
    stop: &'a Stop<'a>,
    /// Where this participant reports progress, if anyone watches.
    progress: Option<&'a SlotProgress>,
    /// The run was started for blocking items (see `Control::share_seeds`).
    blocking: bool,
    /// Who takes part in the run, for the decisions to share and to wake.
    seats: &'a Seats,
}

impl<T> Ctx<'_, T> {
    /// Adds a follow-on item to the run. The run does not end before it has executed.
    #[inline]
    pub fn push(&mut self, item: T) {
        // Not counted here: a counter bumped in memory on every push costs more than the
        // push. `RunStats::pushed` is derived from the executed count instead.
        self.stack.push(item);
    }

    /// Adds a follow-on item at high priority: it is taken before every normal item of
    /// the run, by this thread (right after the current task returns) and by any other
    /// thread looking for work. High-priority items go through a queue shared by the
    /// run, so each costs a lock-free queue push rather than a private push; keep them
    /// for the few items that must jump the line.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(1).build().unwrap();
    /// let order = std::sync::Mutex::new(Vec::new());
    /// pool.run([0u32], |n, ctx| {
    ///     order.lock().unwrap().push(n);
    ///     if n == 0 {
    ///         ctx.push(1);
    ///         ctx.push(2);
    ///         ctx.push_high(99);
    ///     }
    /// });
    /// // 99 jumped ahead of the normal follow-ons pushed before it.
    /// assert_eq!(order.into_inner().unwrap()[..2], [0, 99]);
    /// ```
    pub fn push_high(&mut self, item: T) {
        self.urgent.push(item);
        // Look at the urgent queue right after this task, not a few items later.
        self.pace.look_now = true;
        if self.sleep.has_demand() {
            self.sleep.notify_one_avoiding(self.seats.kept_out_cpu());
        }
    }

    /// The index (`0..num_threads()`) of the pool worker running this task, or `None`
    /// when the run's caller runs it (the thread that started the run takes part in
    /// it). A nested run's caller is a worker, so its tasks there see its index. The
    /// same as [`Pool::current_thread_index`](crate::Pool::current_thread_index) for
    /// the task's pool.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// let seen = std::sync::Mutex::new(Vec::new());
    /// pool.run(0..100u32, |_, ctx| seen.lock().unwrap().push(ctx.worker_index()));
    /// assert!(seen.into_inner().unwrap().iter().all(|i| i.is_none_or(|i| i < 2)));
    /// # Ok::<(), fanout::BuildError>(())
    /// ```
    pub fn worker_index(&self) -> Option<usize> {
        crate::worker_index::worker_index_in(crate::worker_index::pool_id(self.sleep))
    }

    /// Whether the run is stopping (an item panicked or failed, or the run was
    /// cancelled); long tasks may return early.
    #[inline]
    pub fn is_stopping(&self) -> bool {
        self.stop.is_set_or_cancelled()
    }

    /// Whether the run is stopping, also looking at the run's deadline (the engine's
    /// check between blocks of a range walk).
    #[inline(always)]
    pub(crate) fn poll_stop(&mut self) -> bool {
        self.stop.poll(&mut self.pace.clock)
    }

    /// Reports `n` more indices completed (range walks; follow-on runs count items in
    /// `drain`).
    #[inline(always)]
    pub(crate) fn report_completed(&self, n: usize) {
        if let Some(p) = self.progress {
            p.add_completed(n as u64);
        }
    }

    /// Stops the run because the current task failed; returns whether this is the
    /// run's first stop (the one the run reports).
    pub(crate) fn stop_for(&mut self, reason: StopReason) -> bool {
        // Look right after this task: no new item starts on this thread.
        self.pace.look_now = true;
        self.stop.claim(reason)
    }

    /// Whether splitting work now would feed an idle thread that can take it.
    #[inline(always)]
    pub(crate) fn should_split(&self) -> bool {
        self.sleep.has_demand() && self.deque.is_empty() && self.seats.has_taker()
    }

    /// Whether a range walk should make everything after its next index stealable
    /// before running it: blocking items, whose neighbours must not wait for them.
    #[inline(always)]
    pub(crate) fn shares_each_index(&self) -> bool {
        self.blocking
    }

    /// Makes `item` stealable right away and wakes a sleeper (used by range splitting).
    pub(crate) fn share(&mut self, item: T) {
        // SAFETY: a `Ctx` is only built by the owner of this deque's slot, for the
        // duration of one `execute` call on the owner's thread, and `&mut self` keeps
        // it from being used twice at once.
        unsafe { self.deque.push_or_spill(Shared::One(item), |x| self.global.push(x)) };
        self.stats.published += 1;
        // As in `share_older_half`: an idle participant takes it without a wake-up.
        // Range splits are not held to the CPU count (`wants_a_worker_for_compute`):
        // flat loops on a pool with more threads than cores kept their speed without.
        if self.seats.wants_a_worker() {
            self.sleep.notify_one_avoiding(self.seats.kept_out_cpu());
        }
    }
}

impl<T> std::fmt::Debug for Ctx<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("private_items", &self.stack.len()).finish_non_exhaustive()
    }
}

/// What a task can ask of the between-items checks of its thread: a look right after it
/// returns; and the thread's deadline clock.
pub(crate) struct Pace {
    /// Set by a task that needs the checks right after it returns (it failed, or pushed
    /// a high-priority item); cleared by the checks.
    look_now: bool,
    /// This thread's last publication was a batch, and nobody has shown it was unwanted
    /// (we did not take it back ourselves): once a thief takes it, the next batch is
    /// shared at once, so the thief finds it when it runs out (see `Run::refill`).
    batch_out: bool,
    clock: Clock,
}

/// The run's queue of high-priority items ([`Ctx::push_high`]), with a flag so that
/// runs that never use it pay one relaxed load per check for it.
pub(crate) struct Urgent<T> {
    queue: GlobalQueue<T>,
    used: AtomicBool,
}

impl<T> Urgent<T> {
    fn new() -> Self {
        Self { queue: GlobalQueue::new(), used: AtomicBool::new(false) }
    }

    fn push(&self, item: T) {
        self.queue.push(item);
        // Relaxed: a hint that lets other runs skip the queue; the item itself is handed
        // over by the queue's own synchronization, and the termination protocol finds it
        // through `is_empty`, which does not depend on the flag.
        self.used.store(true, Ordering::Relaxed);
    }

    /// Whether anything was ever pushed here (a hint, as in `maybe_pop`).
    #[inline(always)]
    fn in_use(&self) -> bool {
        // Relaxed: see `push`.
        self.used.load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn maybe_pop(&self) -> Option<T> {
        // Relaxed: see `push`.
        if self.used.load(Ordering::Relaxed) { self.queue.pop() } else { None }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// What a deque or the global queue holds: one item, or a batch of a participant's
/// oldest private items shared at once. A thief's steal claims one entry at a time (a
/// fence and a CAS each), which costs more than a task of a few nanoseconds; a batch
/// costs that once for many items, and moves them with plain copies.
pub(crate) enum Shared<T> {
    One(T),
    Batch(Vec<T>),
}

impl<T> Shared<T> {
    /// Moves the item, or the batch's items in their order (the newest on top), onto
    /// the taker's private stack.
    fn unpack_onto(self, stack: &mut PrivateStack<T>) {
        match self {
            Shared::One(item) => stack.push(item),
            Shared::Batch(items) => items.into_iter().for_each(|item| stack.push(item)),
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
///
/// # Safety
///
/// The calling thread owns `deque` (it is its slot's deque, see `Run::participate_in`).
#[cold]
#[inline(never)]
unsafe fn share_older_half<T>(
    stack: &mut PrivateStack<T>,
    deque: &Deque<Shared<T>>,
    global: &GlobalQueue<Shared<T>>,
    sleep: &Sleep,
    seats: &Seats,
    compute_only: bool,
    stats: &mut SlotStats,
) -> bool {
    let count = (stack.len() / 2).min(BATCH_AT_MOST);
    let as_batch = count >= BATCH_AT_LEAST;
    if as_batch {
        // SAFETY: the caller owns `deque` (this function's contract).
        unsafe { share_batch(stack, count, deque, global, stats) };
    } else {
        stack.drain_oldest(count, |item| {
            // SAFETY: as above.
            unsafe { deque.push_or_spill(Shared::One(item), |x| global.push(x)) }
        });
        stats.published += count as u64;
    }
    // Nobody is woken when a participant of the run is idle (it finds the items by
    // itself) or when no worker could join: a full limited run, or every seat taken;
    // nor, for items taken for computation (`compute_only`), when the active
    // participants already fill the CPUs. Whoever frees a place finds the items in our
    // deque at once (and wakes a sleeper itself when it goes idle, since work is
    // visible).
    let wanted = if compute_only { seats.wants_a_worker_for_compute() } else { seats.wants_a_worker() };
    if wanted {
        sleep.notify_one_avoiding(seats.kept_out_cpu());
    }
    as_batch
}

/// Moves the `count` oldest items of `stack` (`count < stack.len()`) to `deque` as one
/// batch, and counts them; wakes nobody.
///
/// # Safety
///
/// As for `share_older_half`: the calling thread owns `deque`.
unsafe fn share_batch<T>(
    stack: &mut PrivateStack<T>,
    count: usize,
    deque: &Deque<Shared<T>>,
    global: &GlobalQueue<Shared<T>>,
    stats: &mut SlotStats,
) {
    let mut batch = Vec::with_capacity(count);
    stack.drain_oldest(count, |item| batch.push(item));
    // SAFETY: the caller owns `deque` (this function's contract).
    unsafe { deque.push_or_spill(Shared::Batch(batch), |x| global.push(x)) };
    stats.published += count as u64;
}

/// The most items one publication shares: enough that a thief's steal is noise next to
/// running them, few enough that the batch is copied within the caches (a larger one
/// lands in fresh memory, whose page faults cost more than the copy) and that the
/// sharer keeps work of its own to share again soon.
#[cfg(not(loom))]
const BATCH_AT_MOST: usize = 4096;
#[cfg(loom)]
const BATCH_AT_MOST: usize = 4;

/// Why `Run::burst` returned.
enum BurstEnd {
    /// The private stack is empty.
    Empty,
    /// An item asked for the between-items checks (see `Run::burst`).
    Look,
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
// the caller after every participant has left (see `participate_in` and
// `into_outcome`); items and accumulators cross threads, hence the `Send` bounds.
unsafe impl<W: Work> Sync for Slot<W>
where
    W::Item: Send,
    W::Acc: Send,
{
}

/// A type-erased view of a run, for the pool's registry and workers.
pub(crate) trait Job: Sync {
    /// Adds a participant unless the run is over. Called under the registry lock.
    fn try_join(&self) -> bool;
    /// Whether there is stealable work that `worker` may join for (a snapshot).
    fn has_work(&self, worker: usize) -> bool;
    /// Takes part as worker `worker` until idle (after `try_join`); returns how to
    /// leave, which the worker does after this borrow of the job has ended.
    fn participate(&self, worker: usize) -> Leave;
}

/// A worker's last access to a job it took part in: the decrement of the job's
/// participant count, after which the job's owner may free it, and the wake-up of that
/// owner. Done outside any reference to the job (`participate` has returned), so that
/// freeing the job cannot overlap a borrow of it, which Miri's borrow model forbids.
pub(crate) struct Leave {
    participants: *const AtomicUsize,
    owner: Arc<Parker>,
}

impl Leave {
    pub(crate) fn new(participants: &AtomicUsize, owner: &Arc<Parker>) -> Self {
        Self { participants, owner: Arc::clone(owner) }
    }

    /// Leaves the job.
    ///
    /// # Safety
    ///
    /// The job this came from is still alive: its owner waits for the count to reach
    /// zero before it frees the job, and this is the worker's one decrement.
    pub(crate) unsafe fn leave(self) {
        // SAFETY: the counter is alive until this decrement (this function's contract);
        // the reference made for the call covers the atomic alone, all interior
        // mutability. Release: the worker's accesses to the job happen before the
        // owner frees it (it loads the count with Acquire).
        let last = unsafe { (*self.participants).fetch_sub(1, Ordering::Release) } == 1;
        if last {
            self.owner.unpark();
        }
    }
}

/// The seeds of a run that the caller has not pulled yet (see rule 3).
pub(crate) struct Seeds<I> {
    iter: I,
    /// How many were pulled, for `RunStats::pushed`.
    pulled: u64,
    /// The iterator came up short (it is not asked again: it may not be fused), or it
    /// panicked.
    done: bool,
}

impl<I: Iterator> Seeds<I> {
    pub(crate) fn new(iter: I) -> Self {
        Self { iter, pulled: 0, done: false }
    }

    /// How many seeds were pulled so far.
    pub(crate) fn pulled(&self) -> u64 {
        self.pulled
    }
}

/// A run's seeds, with the iterator's type erased: the engine asks once per chunk,
/// and the chunk is filled by a loop monomorphized for the iterator.
pub(crate) trait SeedSource<T> {
    /// Fills the caller's empty private stack with the next seeds, the first on top;
    /// `Ok(false)` when none are left, the payload if the iterator panicked (the seeds
    /// it had made in this chunk are dropped then, and the stack stays empty).
    fn pull(&mut self, stack: &mut PrivateStack<T>) -> Result<bool, Box<dyn Any + Send>>;
}

impl<I: Iterator> SeedSource<I::Item> for Seeds<I> {
    fn pull(&mut self, stack: &mut PrivateStack<I::Item>) -> Result<bool, Box<dyn Any + Send>> {
        if self.done {
            return Ok(false);
        }
        // Stays set if `next` panics below.
        self.done = true;
        let n = catch_unwind(AssertUnwindSafe(|| stack.refill_first_on_top(&mut self.iter, SEED_CHUNK)))?;
        self.pulled += n as u64;
        self.done = n < SEED_CHUNK;
        Ok(n != 0)
    }
}

/// What a run borrows from its pool.
pub(crate) struct PoolParts<'p> {
    pub(crate) sleep: &'p Sleep,
    /// Stack buffers left by earlier runs (see `crate::spare`).
    pub(crate) spares: &'p Spares,
    /// The pool's worker threads (the run has one more slot, for its caller).
    pub(crate) workers: usize,
    /// CPUs the pool's threads may run on (see `Seats::wants_a_worker_for_compute`).
    pub(crate) cpus: u32,
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
        pool: PoolParts<'p>,
        caller_holds_a_core: bool,
        control: Control<'p>,
        seeds: &mut Seeds<I>,
    ) -> Self {
        let PoolParts { sleep, spares, workers, cpus } = pool;
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
    /// it is done. The caller must then remove the run from the registry and call
    /// [`Run::wait_for_workers`].
    pub(crate) fn run_as_caller(&self, seeds: &mut dyn SeedSource<W::Item>) {
        self.participate_in(self.caller_slot(), true, Some(seeds));
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

    /// Waits until every worker has left (after the run was unregistered).
    pub(crate) fn wait_for_workers(&self) {
        // Acquire: pairs with the Release decrement in `Leave::leave`, so each worker's writes
        // to its slot are visible to `finish_outcome`.
        while self.seats.participants.load(Ordering::Acquire) != 0 {
            self.caller.park();
        }
    }

    /// Collects accumulators, statistics and any panic. Call after `wait_for_workers`,
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
            // SAFETY: every participant has left (see `wait_for_workers`); the run is ours.
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
    fn try_finish(&self, left: u64) {
        // Acquire: together with the AcqRel decrement, this sees every push made before
        // any decrement, and any activation whose take emptied a queue we looked at.
        if !self.work_visible() && self.seats.active.load(Ordering::Acquire) == left {
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
        // Read after every participant has left (`wait_for_workers` ordered their stops).
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
    fn participate_in(&self, me: usize, mut active: bool, mut seeds: Option<&mut dyn SeedSource<W::Item>>) {
        let slot = &self.slots[me];
        slot.local.with_mut(|p| {
            // SAFETY: slot `me` belongs to this thread for the whole call: worker `i`
            // only ever uses slot `i` and takes part in a run at most once at a time,
            // and the last slot belongs to the run's caller.
            let local = unsafe { &mut *p };
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
                    self.drain(me, local, &mut in_demand, &mut seeds, start);
                    local.stats.busy += start.elapsed();
                    local.stats.idle_transitions += 1;
                    active = false;
                    self.report_active(me, false);
                    if !in_demand {
                        self.sleep.add_demand();
                        in_demand = true;
                    }
                    // AcqRel: Release hands our work's effects to whoever finishes the
                    // run; Acquire (on the last decrement) collects everyone else's.
                    let left = self.seats.active.fetch_sub(1, Ordering::AcqRel) - 1;
                    if left as u32 == 0 {
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
                let found = self
                    .find_remote(me, &slot.deque, &mut local.stats)
                    .map(|s| s.unpack_onto(&mut local.stack))
                    .is_some()
                    || local.stack.len() > 0;
                if found && self.seats.try_activate() {
                    active = true;
                    self.report_active(me, true);
                    continue;
                }
                idle_rounds += 1;
                if idle_rounds > IDLE_ROUNDS {
                    local.stats.parks += 1;
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
    fn drain(
        &self,
        me: usize,
        local: &mut Local<W>,
        in_demand: &mut bool,
        seeds: &mut Option<&mut dyn SeedSource<W::Item>>,
        started: Instant,
    ) {
        let deque = &self.slots[me].deque;
        let Local { stack: slot_stack, acc: acc_slot, stats } = local;
        let mut own_stack = std::mem::take(slot_stack);
        let progress = self.progress.as_deref().map(|p| p.slot(me));
        let result = catch_unwind(AssertUnwindSafe(|| {
            // The per-item loop is `burst`; this loop does what comes between bursts.
            let stack = &mut own_stack;
            let mut acc = acc_slot.take().unwrap_or_else(|| self.work.new_acc());
            let mut executed = 0u64;
            let mut reported = 0u64;
            // The stop state, the urgent queue and demand are looked at every few items
            // (see `crate::cadence`): they are hints, and the loads would otherwise sit
            // on every item. The cadence is kept apart from `pace`, which tasks reach, so
            // that `burst` knows reading the clock leaves `pace.look_now` alone.
            let mut cadence = Cadence::new(started);
            let mut countdown = cadence.every();
            let mut pace = Pace { look_now: false, batch_out: false, clock: Clock::new() };
            'drain: loop {
                loop {
                    // Run private items out of line, where the register allocator sees
                    // only the hot loop, until one asks for a look or none is left.
                    let end;
                    (acc, countdown, end) = self.burst(
                        stack,
                        acc,
                        countdown,
                        &mut executed,
                        &mut pace,
                        &mut cadence,
                        stats,
                        deque,
                        progress,
                    );
                    match end {
                        BurstEnd::Look => {}
                        BurstEnd::Empty => break,
                        BurstEnd::Panic(payload) => {
                            self.record_panic(payload);
                            break 'drain;
                        }
                    }
                    if countdown != 0 && !pace.look_now {
                        continue;
                    }
                    countdown = cadence.every();
                    pace.look_now = false;
                    if let Some(p) = progress {
                        if W::FOLLOW_ON {
                            p.add_completed(executed - reported);
                            reported = executed;
                        }
                        p.set_queued((stack.len() + deque.len()) as u64);
                    }
                    if self.stop.poll(&mut pace.clock) {
                        break 'drain;
                    }
                    if let Some(item) = self.urgent.maybe_pop() {
                        stats.global_pops += 1;
                        // Next in line, ahead of every private item; look again right
                        // after it, in case more high-priority items are waiting.
                        stack.push(item);
                        pace.look_now = true;
                        continue;
                    }
                    // Nothing is shared when too little is in sight to be worth a wake-up
                    // (see `crate::cadence`).
                    if cadence.worth_sharing(stack.len()) {
                        if self.should_publish(stack.len(), deque) {
                            // A run declared blocking wakes for any item cost: its
                            // items may wait on each other, however short they were.
                            let compute_only = cadence.compute_only() && !self.blocking;
                            pace.batch_out = self.publish(deque, stack, compute_only, stats);
                        } else if Self::should_refill(pace.batch_out, stack.len(), deque) {
                            self.refill(deque, stack, stats);
                        }
                    }
                }
                // Out of private work: look at the stop state before taking any more (the
                // countdown may be far from zero when items come one at a time).
                if self.stop.poll(&mut pace.clock) {
                    break;
                }
                // High-priority items first, then our own deque, then elsewhere.
                let next = match self.urgent.maybe_pop() {
                    Some(item) => Some(Shared::One(item)),
                    // SAFETY: we own this slot's deque (see `participate_in`).
                    None => match unsafe { deque.pop() } {
                        Some(shared) => {
                            // Taken back by ourselves: nobody wanted it, so share no
                            // more batches until someone asks.
                            pace.batch_out = false;
                            Some(shared)
                        }
                        None => {
                            // The next seeds, before anyone else's work (rule 3).
                            #[cfg(not(all(loom, feature = "mutant_seeds_late")))]
                            if let Some(source) = seeds.as_deref_mut() {
                                match source.pull(stack) {
                                    Ok(true) => continue 'drain,
                                    Ok(false) => *seeds = None,
                                    Err(payload) => {
                                        *seeds = None;
                                        self.record_panic(payload);
                                        break 'drain;
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
            // A task's panic is caught in `burst`, so these survive it (a panicking run
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

    /// Pops and executes private items until the stack is empty ([`BurstEnd::Empty`]),
    /// a task panics, or an item leaves something to look at ([`BurstEnd::Look`]): the
    /// countdown reached 0, the cadence did not skip the look (see `crate::cadence`) and
    /// `needs_look` says so, or a task set `look_now`.
    ///
    /// Out of line, so the register allocator sees only this loop. The stack and the
    /// accumulator are moved into locals, growing the stack passes plain values, and a
    /// panic is caught per item, so once the task's closure is inlined here nothing
    /// keeps them in memory, for a call or for unwinding. A follow-on pushed by one
    /// task can then reach the next in a register (when the closure leaves registers
    /// to spare).
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn burst(
        &self,
        stack_slot: &mut PrivateStack<W::Item>,
        mut acc: W::Acc,
        mut countdown: u32,
        executed: &mut u64,
        pace: &mut Pace,
        cadence: &mut Cadence,
        stats: &mut SlotStats,
        deque: &Deque<Shared<W::Item>>,
        progress: Option<&SlotProgress>,
    ) -> (W::Acc, u32, BurstEnd) {
        let mut stack = std::mem::take(stack_slot);
        // Items executed are counted as countdown laps, so no counter is bumped per item:
        // `start`, plus the laps begun here, less what is left of the last.
        let start = countdown;
        let mut lapped = 0u64;
        let mut lap = cadence.lap();
        let end = loop {
            let Some(item) = stack.pop() else { break BurstEnd::Empty };
            // What `done` promises (see the termination rules), checked by the models.
            #[cfg(loom)]
            debug_assert!(!self.done.load(Ordering::Relaxed), "an item ran after its run was declared done");
            let mut ctx = Ctx {
                stack: &mut stack,
                stats: &mut *stats,
                pace: &mut *pace,
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
                break BurstEnd::Panic(payload);
            }
            countdown -= 1;
            if countdown == 0 {
                // The between-items checks, reduced to their loads: go back to `drain`
                // only if one of them has something to do.
                if lap.look(cadence) && self.needs_look(stack.len(), deque, progress, pace.batch_out, cadence) {
                    break BurstEnd::Look;
                }
                countdown = lap.every();
                lapped += u64::from(countdown);
            }
            if pace.look_now {
                break BurstEnd::Look;
            }
        };
        *stack_slot = stack;
        cadence.set_lap(lap);
        *executed += lapped + u64::from(start) - u64::from(countdown);
        (acc, countdown, end)
    }

    /// Whether the between-items checks have something to do (`Run::burst` looks every
    /// few items, see `crate::cadence`): loads only, out of line so the loop keeps its
    /// registers.
    #[inline(never)]
    fn needs_look(
        &self,
        private: usize,
        deque: &Deque<Shared<W::Item>>,
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
    fn should_publish(&self, private: usize, deque: &Deque<Shared<W::Item>>) -> bool {
        private >= 2 && self.sleep.has_demand() && deque.is_empty() && self.seats.has_taker()
    }

    /// Shares the older half of the private stack with hungry threads (when
    /// `should_publish`); returns whether it went as a batch.
    #[cold]
    fn publish(
        &self,
        deque: &Deque<Shared<W::Item>>,
        stack: &mut PrivateStack<W::Item>,
        compute_only: bool,
        stats: &mut SlotStats,
    ) -> bool {
        // SAFETY: we own this slot's deque (see `participate_in`).
        unsafe { share_older_half(stack, deque, &self.global, self.sleep, &self.seats, compute_only, stats) }
    }

    /// Whether to share the next batch before anyone asks: our last batch was taken
    /// (the deque is empty again, and we did not take it back), and enough is left that
    /// the next one is a full batch with as much again staying here.
    #[inline(always)]
    fn should_refill(batch_out: bool, private: usize, deque: &Deque<Shared<W::Item>>) -> bool {
        batch_out && private >= 2 * BATCH_AT_MOST && deque.is_empty()
    }

    /// Shares the next batch for the thief that took the last one, without waking
    /// anybody: it is busy with that batch now, and when it runs out it finds this one
    /// at once, instead of going idle and waiting for us to see its demand (about two
    /// batch copies and a hand-shake per batch, which on 20 ns items cost the thief a
    /// fifth of its time). A batch nobody takes is taken back by us, which ends this.
    #[cold]
    fn refill(&self, deque: &Deque<Shared<W::Item>>, stack: &mut PrivateStack<W::Item>, stats: &mut SlotStats) {
        // SAFETY: we own this slot's deque (see `participate_in`).
        unsafe { share_batch(stack, BATCH_AT_MOST, deque, &self.global, stats) };
    }

    /// Looks for work outside our own slot: the global queue, then the other deques.
    fn find_remote(&self, me: usize, deque: &Deque<Shared<W::Item>>, stats: &mut SlotStats) -> Option<Shared<W::Item>> {
        if let Some(shared) = self.urgent.queue.pop().map(Shared::One).or_else(|| self.global.pop()) {
            stats.global_pops += 1;
            return Some(shared);
        }
        let n = self.slots.len();
        for _ in 0..4 {
            let mut contended = false;
            for k in 1..n {
                let victim = &self.slots[(me + k) % n].deque;
                // SAFETY: we own `deque`, and the victim is another slot's deque.
                match unsafe { victim.steal_batch_and_pop(deque) } {
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
        // Relaxed: under the registry lock, which the caller takes before it waits for
        // this counter to drop to zero.
        self.seats.participants.fetch_add(1, Ordering::Relaxed);
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
        self.participate_in(worker, false, None);
        Leave::new(&self.seats.participants, &self.caller)
    }
}
