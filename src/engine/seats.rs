//! Who may take part in a run and who does: the `active` word of the termination
//! protocol (see `super::active`), the workers that joined, the caller's seat and the
//! concurrency limit. The engine asks it whether a worker may join, whether anyone
//! could take published work, and whether a wake-up would be of use.
//!
//! Everything here but `active`'s own protocol is a hint for admission and wake-ups:
//! work that is visible is always taken by a participant still active (termination
//! rule 3), or by the caller that stepped back coming back for it, so no answer from
//! here can lose work or hang a run; a wrong one costs a needless or a late wake-up.

use super::active::Active;
use crate::pool::registry::Participants;
use crate::pool::sleep::{NOT_PINNED, Sleep};
use crate::sync::{AtomicBool, Ordering};

pub(crate) struct Seats {
    /// The termination protocol's `active` word (see `super::active`). The caller
    /// starts active.
    pub(crate) active: Active,
    /// Workers currently inside `participate` (the caller is not counted).
    pub(crate) participants: Participants,
    /// Whether the caller still takes part (it leaves once idle for a while, and then
    /// frees its seat for a worker).
    caller_in: AtomicBool,
    /// Most workers that may join while the caller takes part: one fewer than the
    /// pool's when the caller's thread holds a core a worker would otherwise use.
    cap: usize,
    /// The CPU the caller ran on when it took a worker's seat (`NOT_PINNED` if it did
    /// not): the worker pinned there is the one whose seat it took.
    caller_cpu: usize,
    /// Most participants active at once (`u32::MAX`: no limit).
    limit: u32,
    /// CPUs the pool's threads may run on (`u32::MAX` under loom, where there are
    /// none): more active participants than this only take turns on them.
    cpus: u32,
}

impl Seats {
    /// Seats for a run whose caller starts active, with at most `cap` workers joined
    /// while the caller takes part and at most `limit` participants active, on a
    /// machine of `cpus` CPUs; a caller that took a worker's seat says on which CPU
    /// (`NOT_PINNED` otherwise).
    pub(crate) fn new(cap: usize, limit: Option<u32>, caller_cpu: usize, cpus: u32) -> Self {
        Self {
            active: Active::new(),
            participants: Participants::new(),
            caller_in: AtomicBool::new(true),
            cap,
            caller_cpu,
            limit: limit.unwrap_or(u32::MAX).max(1),
            cpus: cpus.max(1),
        }
    }

    /// Whether the worker is kept out because it shares the caller's core: pinned to
    /// the CPU the caller runs on, it could only run by preempting the caller, while
    /// the worker of a free core waits for the seat it took.
    #[inline]
    pub(crate) fn shares_the_callers_core(&self, worker: usize, sleep: &Sleep) -> bool {
        sleep.pinned_to(worker, self.kept_out_cpu())
    }

    /// The CPU whose pinned worker the run keeps out while the caller takes part
    /// (`NOT_PINNED` if none): wake-ups for the run should pass it over.
    #[inline]
    pub(crate) fn kept_out_cpu(&self) -> usize {
        // Relaxed: an admission hint (see the module docs).
        if self.caller_in.load(Ordering::Relaxed) { self.caller_cpu } else { NOT_PINNED }
    }

    /// The caller left the run: its seat is free for a worker.
    pub(crate) fn caller_left(&self) {
        // Relaxed: an admission hint (see the module docs).
        self.caller_in.store(false, Ordering::Relaxed);
    }

    /// The caller came back into the run (it stepped back and no worker came): it
    /// holds its seat again.
    pub(crate) fn caller_back(&self) {
        // Relaxed: an admission hint (see the module docs).
        self.caller_in.store(true, Ordering::Relaxed);
    }

    /// Whether one more worker may join: a seat is free.
    #[inline]
    pub(crate) fn admit_worker(&self) -> bool {
        // Relaxed: hints; `try_join` reads them under the registry lock, where only a
        // worker leaving can change `participants` meanwhile (downwards).
        !self.caller_in.load(Ordering::Relaxed) || self.participants.count() < self.cap
    }

    /// Whether a participant of the run is idle (it looks at the deques by itself).
    #[inline]
    fn has_idle_participant(&self) -> bool {
        // Relaxed: hints (see the module docs).
        let active = u64::from(self.active.count());
        let caller = u64::from(self.caller_in.load(Ordering::Relaxed));
        active < self.participants.count() as u64 + caller
    }

    /// Whether a published item could be taken soon: a participant is idle, or a worker
    /// may still join. Without it, a run whose every seat is taken would publish for an
    /// idle worker it will never admit.
    #[inline(never)]
    pub(crate) fn has_taker(&self) -> bool {
        self.has_idle_participant() || self.admit_worker()
    }

    /// Whether waking a sleeper for newly published work is of use: nobody in the run
    /// is idle to take it, a worker may join, and the limit leaves room.
    #[inline]
    pub(crate) fn wants_a_worker(&self) -> bool {
        !self.has_idle_participant() && self.admit_worker() && self.has_room()
    }

    /// Whether waking a sleeper for items taken for computation (see
    /// `Cadence::compute_only`) is of use: as for `wants_a_worker`, and fewer
    /// participants are active than there are CPUs. Beyond that a new participant only
    /// takes turns with the others, and one preempted while holding private items
    /// keeps them from everyone.
    #[inline]
    pub(crate) fn wants_a_worker_for_compute(&self) -> bool {
        // Relaxed: a hint (see the module docs).
        self.wants_a_worker() && self.active.count() < self.cpus
    }

    /// Whether the run has a concurrency limit.
    #[inline]
    pub(crate) fn limited(&self) -> bool {
        self.limit != u32::MAX
    }

    /// Whether another participant could become active now: always for unlimited
    /// runs. Waking a thread is pointless while a limited run is full.
    #[inline]
    pub(crate) fn has_room(&self) -> bool {
        // Relaxed: a hint; a stale value costs one needless or one missed wake-up, and
        // the participant that frees a place wakes a sleeper itself if work is visible.
        !self.limited() || self.active.count() < self.limit
    }

    /// Rule 2 of the termination protocol, within the run's limit: counts us active
    /// (and bumps the epoch) unless the limit is reached.
    pub(crate) fn try_activate(&self) -> bool {
        self.active.try_activate(self.limit)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Seats;
    use crate::pool::sleep::{NOT_PINNED, Sleep};

    #[test]
    fn short_items_wake_nobody_once_the_active_participants_fill_the_cpus() {
        // Two CPUs, room for four workers; the caller took no seat and is active.
        let seats = Seats::new(4, None, NOT_PINNED, 2);
        assert!(seats.wants_a_worker_for_compute(), "a second CPU is free");
        // A second participant is active: both CPUs are taken.
        assert!(seats.try_activate());
        assert!(seats.wants_a_worker(), "items that may block still wake a sleeper");
        assert!(!seats.wants_a_worker_for_compute(), "short items do not");
    }

    #[test]
    fn the_worker_on_the_callers_core_sits_out_while_the_caller_takes_part() {
        let sleep = Sleep::new(3);
        sleep.set_pinned(0, 5);
        sleep.set_pinned(1, 7);
        // Worker 2 is not pinned.
        let seats = Seats::new(2, None, 5, 2);
        assert!(seats.shares_the_callers_core(0, &sleep));
        assert!(!seats.shares_the_callers_core(1, &sleep));
        assert!(!seats.shares_the_callers_core(2, &sleep));
        assert_eq!(seats.kept_out_cpu(), 5, "wake-ups for the run pass worker 0 over");
        // Once the caller has left, its core is free again.
        seats.caller_left();
        assert!(!seats.shares_the_callers_core(0, &sleep));
        assert_eq!(seats.kept_out_cpu(), NOT_PINNED);
        // A caller that took no seat (or whose CPU is unknown) keeps nobody out.
        let seats = Seats::new(3, None, NOT_PINNED, 2);
        assert!((0..3).all(|w| !seats.shares_the_callers_core(w, &sleep)));
    }
}
