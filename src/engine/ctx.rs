//! A task's view of its run: the [`Ctx`] it pushes follow-ons through, what it can ask
//! of the between-items checks, and the run's queue of high-priority items.

use super::global_queue::GlobalQueue;
use super::seats::Seats;
use super::share::Shared;
use super::stack::PrivateStack;
use super::stop::{Clock, Stop, StopReason};
use crate::deque::Owner;
use crate::pool::sleep::Sleep;
use crate::progress::SlotProgress;
use crate::stats::SlotStats;
use crate::sync::{AtomicBool, Ordering};

/// A task's handle on its run: push follow-on items through it.
///
/// Pushed items go to a buffer private to the current thread (no atomics, no
/// allocation beyond the buffer's amortized growth). They become stealable only when
/// another thread is idle, in which case the older half is shared. A `Ctx` belongs to
/// the thread running the task: it is neither `Send` nor `Sync`.
///
/// ```compile_fail
/// fn send<T: Send>(_: &T) {}
/// let pool = fanout::Pool::new().unwrap();
/// pool.run([0u32], |_, ctx| send(ctx));
/// ```
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
    pub(super) stack: &'a mut PrivateStack<T>,
    pub(super) stats: &'a mut SlotStats,
    pub(super) checkpoint: &'a mut Checkpoint,
    pub(super) deque: &'a Owner<'a, Shared<T>>,
    pub(super) global: &'a GlobalQueue<Shared<T>>,
    pub(super) urgent: &'a Urgent<T>,
    pub(super) sleep: &'a Sleep,
    pub(super) stop: &'a Stop<'a>,
    /// Where this participant reports progress, if anyone watches.
    pub(super) progress: Option<&'a SlotProgress>,
    /// The run was started for blocking items (see `Control::share_seeds`).
    pub(super) blocking: bool,
    /// Who takes part in the run, for the decisions to share and to wake.
    pub(super) seats: &'a Seats,
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
        self.checkpoint.due_now = true;
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
        crate::pool::worker_index::worker_index_in(crate::pool::worker_index::pool_id(self.sleep))
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
        self.stop.poll(&mut self.checkpoint.clock)
    }

    /// Reports `n` more indices completed (range walks; follow-on runs count items in
    /// `work_until_idle`).
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
        self.checkpoint.due_now = true;
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
        self.deque.push_or_spill(Shared::One(item), |x| self.global.push(x));
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

/// What a task can ask of its thread's checkpoints between items: one right after it
/// returns; and the thread's deadline clock.
pub(crate) struct Checkpoint {
    /// Set by a task that needs the checks right after it returns (it failed, or pushed
    /// a high-priority item); cleared by the checks.
    pub(super) due_now: bool,
    /// This thread's last publication was a batch, and nobody has shown it was unwanted
    /// (we did not take it back ourselves): once a thief takes it, the next batch is
    /// shared at once, so the thief finds it when it runs out (see `Participant::refill`).
    pub(super) batch_out: bool,
    pub(super) clock: Clock,
}

/// The run's queue of high-priority items ([`Ctx::push_high`]), with a flag so that
/// runs that never use it pay one relaxed load per check for it.
pub(crate) struct Urgent<T> {
    pub(super) queue: GlobalQueue<T>,
    pub(super) used: AtomicBool,
}

impl<T> Urgent<T> {
    pub(super) fn new() -> Self {
        Self { queue: GlobalQueue::new(), used: AtomicBool::new(false) }
    }

    pub(super) fn push(&self, item: T) {
        self.queue.push(item);
        // Relaxed: a hint that lets other runs skip the queue; the item itself is handed
        // over by the queue's own synchronization, and the termination protocol finds it
        // through `is_empty`, which does not depend on the flag.
        self.used.store(true, Ordering::Relaxed);
    }

    /// Whether anything was ever pushed here (a hint, as in `maybe_pop`).
    #[inline(always)]
    pub(super) fn in_use(&self) -> bool {
        // Relaxed: see `push`.
        self.used.load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub(super) fn maybe_pop(&self) -> Option<T> {
        // Relaxed: see `push`.
        if self.used.load(Ordering::Relaxed) { self.queue.pop() } else { None }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
