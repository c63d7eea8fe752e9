//! The pool's registry of jobs in progress, and the protocol that keeps a job alive
//! while workers use it.
//!
//! A job (a run on its caller's stack, or a stream's window on the heap) is reached
//! by workers only through the registry: they join it under the registry's lock
//! ([`Job::try_join`] counts them in its [`Participants`]). Its owner removes it from
//! the registry and then waits until every worker that joined has left
//! ([`Registry::withdraw`]); a worker's last access to the job is its [`Leave`].
//! Runs and streams alike hold their registration as a [`Registered`] guard, which
//! withdraws the job when dropped.

use crate::sync::{Arc, AtomicUsize, Mutex, Ordering, Parker, lock};
use crossbeam_utils::CachePadded;
use std::ops::Deref;

/// A type-erased view of a job, for the registry and the workers.
pub(crate) trait Job: Sync {
    /// Adds a participant unless the job is over. Called under the registry lock.
    fn try_join(&self) -> bool;
    /// Whether there is stealable work that `worker` may join for (a snapshot).
    fn has_work(&self, worker: usize) -> bool;
    /// Takes part as worker `worker` until idle (after `try_join`); returns how to
    /// leave, which the worker does after this borrow of the job has ended.
    fn participate(&self, worker: usize) -> Leave;
    /// The count `try_join` bumps and the `Leave`s of `participate` drop. Memory safety
    /// rests on it: [`Registry::withdraw`] frees the job once this count is zero.
    fn participants(&self) -> &Participants;
    /// Where the job's owner waits for its workers to leave: what those `Leave`s wake.
    fn owner(&self) -> &Parker;
    /// The registry the job is registered in (its pool's).
    fn registry(&self) -> &Registry;
}

/// The workers inside one job, counted so that its owner can wait for them to leave.
pub(crate) struct Participants(CachePadded<AtomicUsize>);

impl Participants {
    pub(crate) fn new() -> Self {
        Self(CachePadded::new(AtomicUsize::new(0)))
    }

    /// Counts a worker in. Call only from [`Job::try_join`].
    pub(crate) fn join(&self) {
        // Relaxed: under the registry lock, which the owner takes (to withdraw the job)
        // before it waits for this count to drop to zero.
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// How many workers are inside now (a hint: workers may leave meanwhile; joins
    /// happen under the registry lock).
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// How a worker that joined leaves, waking `owner` if it is the last.
    pub(crate) fn leave(&self, owner: &Arc<Parker>) -> Leave {
        Leave { participants: &*self.0, owner: Arc::clone(owner) }
    }
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
        // owner frees it (`Registry::withdraw` loads the count with Acquire).
        let last = unsafe { (*self.participants).fetch_sub(1, Ordering::Release) } == 1;
        if last {
            self.owner.unpark();
        }
    }
}

/// A raw pointer to a registered job, valid while it is registered (see
/// [`Registry::register`]).
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Job + 'static));

// SAFETY: a `JobPtr` is only dereferenced while its job is registered or joined, and a
// job is `Sync` (the `Job` trait requires it).
unsafe impl Send for JobPtr {}

/// The jobs workers may join.
pub(crate) struct Registry {
    jobs: Mutex<Vec<JobPtr>>,
    /// `jobs.len()`, for a lock-free "anything registered?" check.
    len: AtomicUsize,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self { jobs: Mutex::new(Vec::new()), len: AtomicUsize::new(0) }
    }

    /// Registers `job` so that workers may join it.
    ///
    /// # Safety
    ///
    /// `job`, and everything it borrows for `'j`, must stay valid until
    /// [`Registry::withdraw`] has returned for it; or forever, if it is never withdrawn.
    pub(crate) unsafe fn register<'j>(&self, job: *const (dyn Job + 'j)) {
        // SAFETY: erases `'j` for the registry; the caller keeps the job and its
        // borrows valid for as long as the registry or a worker may use the pointer.
        let job = unsafe { std::mem::transmute::<*const (dyn Job + 'j), *const (dyn Job + 'static)>(job) };
        let mut jobs = lock(&self.jobs);
        jobs.push(JobPtr(job));
        // Release: a worker that sees the count also sees the list under the lock.
        self.len.store(jobs.len(), Ordering::Release);
    }

    /// Removes `job` from the registry (if it is still registered), so that no worker
    /// joins it any more, then waits until every worker that had joined it has left:
    /// it looks briefly, then parks on its [`owner`](Job::owner), which their
    /// [`Leave`]s wake. The job may be freed once this returns.
    pub(crate) fn withdraw(&self, job: &(dyn Job + '_)) {
        let addr: *const () = std::ptr::from_ref(job).cast();
        {
            let mut jobs = lock(&self.jobs);
            if let Some(pos) = jobs.iter().position(|j| std::ptr::addr_eq(j.0, addr)) {
                jobs.swap_remove(pos);
            }
            self.len.store(jobs.len(), Ordering::Release);
        }
        #[cfg(not(loom))]
        wait_briefly_for_leaves(job.participants());
        // Acquire: pairs with the Release decrement in `Leave::leave`, so every worker's
        // accesses to the job happen before the owner frees it.
        let mut parked = false;
        while job.participants().0.load(Ordering::Acquire) != 0 {
            job.owner().park();
            parked = true;
        }
        if parked && !cfg!(all(loom, feature = "mutant_withdraw_handoff")) {
            // Two threads may withdraw one job at once (a stream's iterator dropped on
            // a worker while its scope closes it) and park on the same owner, which the
            // last leave wakes once: hand the token on. A stray token only makes a
            // later wait check its condition again.
            job.owner().unpark();
        }
    }

    /// Whether anything is registered (a hint).
    fn is_empty(&self) -> bool {
        // Acquire: pairs with the Release stores in `register` and `withdraw`.
        self.len.load(Ordering::Acquire) == 0
    }

    /// Joins the first registered job that has work for `worker` and takes part in it;
    /// returns whether it found one.
    pub(crate) fn help_once(&self, worker: usize) -> bool {
        if self.is_empty() {
            return false;
        }
        let joined = {
            let jobs = lock(&self.jobs);
            jobs.iter().copied().find(|job| {
                // SAFETY: registered jobs are alive while we hold the lock.
                let job = unsafe { &*job.0 };
                job.has_work(worker) && job.try_join()
            })
        };
        match joined {
            Some(job) => {
                // SAFETY: `try_join` counted us in; the job stays alive until we leave.
                let leave = unsafe { (*job.0).participate(worker) };
                // SAFETY: as above; this is our one leave, and our last access.
                unsafe { leave.leave() };
                true
            }
            None => false,
        }
    }

    /// Whether a registered job has work `worker` may join for.
    pub(crate) fn any_work(&self, worker: usize) -> bool {
        if self.is_empty() {
            return false;
        }
        // SAFETY: registered jobs are alive while we hold the lock.
        lock(&self.jobs).iter().any(|job| unsafe { (*job.0).has_work(worker) })
    }
}

/// How long a withdrawing owner looks for the job's workers to leave before it parks.
/// A worker that saw the job end leaves within a microsecond or two, while a parked
/// thread takes tens of microseconds to resume (about 25 us on the 2-vCPU VM): parking
/// at once would often add that to a short run.
#[cfg(not(loom))]
const LEAVE_SPIN: std::time::Duration = std::time::Duration::from_micros(20);

/// Spins, then yields, until no worker is inside or `LEAVE_SPIN` has passed. Only
/// shortens the wait: `withdraw` checks the count again (with Acquire) before it
/// frees anything, and parks if a worker is still inside.
#[cfg(not(loom))]
fn wait_briefly_for_leaves(participants: &Participants) {
    // The clock is read only once the spin hints are spent: most runs end with no
    // worker inside, and a clock read is a good part of a tiny run's cost.
    let mut start = None;
    let mut round = 0u32;
    // Relaxed: a hint; the Acquire load in `withdraw` is the one that synchronizes.
    while participants.0.load(Ordering::Relaxed) != 0 {
        if round >= 6 && start.get_or_insert_with(std::time::Instant::now).elapsed() >= LEAVE_SPIN {
            return;
        }
        super::pause(round);
        round = round.saturating_add(1);
    }
}

/// A job in the registry for as long as this guard lives: the one registration of runs
/// (`J` a reference to a run on its caller's stack) and streams (`J` the `Arc` holding
/// a stream's window). Dropping it withdraws the job ([`Registry::withdraw`]).
pub(crate) struct Registered<J>
where
    J: Deref,
    J::Target: Job + Sized,
{
    job: J,
}

impl<J> Registered<J>
where
    J: Deref,
    J::Target: Job + Sized,
{
    /// Registers the job `job` points to in [its registry](Job::registry), so that
    /// workers may join it.
    ///
    /// # Safety
    ///
    /// The job and everything it borrows must stay valid until it is withdrawn. This
    /// guard's `Drop` withdraws it, so it suffices that the guard is dropped, not
    /// leaked. If it may be leaked, the job must be kept alive by `J` itself (an `Arc`:
    /// a leaked guard leaks the job) and borrow nothing shorter-lived than `'static`,
    /// or something else must withdraw it before its borrows end (a stream's scope).
    /// `J` must deref to the same job every time, as references and `Arc`s do.
    pub(crate) unsafe fn new(job: J) -> Self {
        let target: &J::Target = &job;
        // SAFETY: the job stays valid, with its borrows, until it is withdrawn (this
        // function's contract).
        unsafe { target.registry().register(target) };
        Self { job }
    }
}

impl<J> Deref for Registered<J>
where
    J: Deref,
    J::Target: Job + Sized,
{
    type Target = J::Target;

    fn deref(&self) -> &J::Target {
        &self.job
    }
}

impl<J> Drop for Registered<J>
where
    J: Deref,
    J::Target: Job + Sized,
{
    fn drop(&mut self) {
        let job: &J::Target = &self.job;
        job.registry().withdraw(job);
    }
}

/// A job for the registry's own checks (its unit tests, and the loom model of two
/// threads withdrawing one job, `loom-tests/tests/registry.rs`): in a registry of its
/// own, always with work, counting the workers that took part.
#[cfg(any(test, loom))]
pub struct TestJob {
    registry: Registry,
    participants: Participants,
    owner: Arc<Parker>,
    visits: AtomicUsize,
}

#[cfg(any(test, loom))]
impl TestJob {
    /// An unregistered job with nobody inside.
    fn new() -> Self {
        Self {
            registry: Registry::new(),
            participants: Participants::new(),
            owner: Arc::new(Parker::new()),
            visits: AtomicUsize::new(0),
        }
    }

    /// A job registered in its registry, with one worker counted in (for the loom
    /// model, which withdraws it before dropping the `Arc`).
    #[cfg(loom)]
    pub fn with_a_worker_inside() -> Arc<Self> {
        let job = Arc::new(Self::new());
        let target: &Self = &job;
        // SAFETY: the model holds the `Arc` until every thread is done with the job,
        // and withdraws it before that.
        unsafe { job.registry.register(target) };
        assert!(job.try_join());
        job
    }

    /// Withdraws the job: returns once no worker is inside.
    pub fn withdraw(&self) {
        self.registry.withdraw(self);
    }

    /// A worker counted in leaves (once per worker counted in).
    pub fn leave(&self) {
        // SAFETY: the caller keeps the job alive (an `Arc`, a leak or a scope that
        // outlives the leaving thread) and leaves once per worker counted in.
        unsafe { self.participants.leave(&self.owner).leave() };
    }

    /// Workers inside now.
    pub fn workers_inside(&self) -> usize {
        self.participants.count()
    }
}

#[cfg(any(test, loom))]
impl Job for TestJob {
    fn try_join(&self) -> bool {
        self.participants.join();
        true
    }
    fn has_work(&self, _worker: usize) -> bool {
        true
    }
    fn participate(&self, _worker: usize) -> Leave {
        self.visits.fetch_add(1, Ordering::Relaxed);
        self.participants.leave(&self.owner)
    }
    fn participants(&self) -> &Participants {
        &self.participants
    }
    fn owner(&self) -> &Parker {
        &self.owner
    }
    fn registry(&self) -> &Registry {
        &self.registry
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn a_registered_job_is_joined_and_a_withdrawn_one_is_not() {
        let job = TestJob::new();
        let registry = &job.registry;
        assert!(!registry.any_work(0), "nothing registered yet");
        {
            // SAFETY: the guard is dropped at the end of this block, before `job`.
            let _registered = unsafe { Registered::new(&job) };
            assert!(registry.any_work(0));
            assert!(registry.help_once(0));
            assert!(registry.help_once(1));
        }
        assert_eq!(job.visits.load(Ordering::Relaxed), 2);
        assert_eq!(job.workers_inside(), 0, "every worker left");
        assert!(!registry.help_once(0), "a withdrawn job takes nobody");
        assert!(!registry.any_work(0));
    }

    #[test]
    fn withdraw_waits_for_a_worker_inside() {
        let job = TestJob::new();
        let left = AtomicBool::new(false);
        std::thread::scope(|s| {
            // SAFETY: the guard is dropped inside this scope, before `job`.
            let registered = unsafe { Registered::new(&job) };
            // A worker counted in but not yet gone: the owner's withdrawal must wait
            // for its leave, which another thread makes a little later.
            assert!(job.try_join());
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                left.store(true, Ordering::Relaxed);
                // The job outlives the scope; this is this worker's one leave.
                job.leave();
            });
            drop(registered);
            assert!(left.load(Ordering::Relaxed), "withdraw returned before the worker left");
        });
    }

    #[test]
    #[cfg_attr(miri, ignore = "leaks on purpose, which Miri's leak check reports")]
    fn two_threads_withdrawing_one_job_both_return() {
        // 'static, so that a withdrawer that never returns fails the test instead of
        // hanging it.
        let job: &'static TestJob = Box::leak(Box::new(TestJob::new()));
        // SAFETY: the job is leaked, so it stays valid whatever the guard's fate.
        std::mem::forget(unsafe { Registered::new(job) });
        assert!(job.try_join());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        for _ in 0..2 {
            let done_tx = done_tx.clone();
            std::thread::spawn(move || {
                job.withdraw();
                done_tx.send(()).unwrap();
            });
        }
        // Both withdrawers are parked on the job's owner by now (most likely); the
        // last leave wakes one of them, which must wake the other.
        std::thread::sleep(std::time::Duration::from_millis(50));
        // The job is leaked; this is the one leave of the worker counted in.
        job.leave();
        for _ in 0..2 {
            let returned = done_rx.recv_timeout(std::time::Duration::from_secs(10));
            assert!(returned.is_ok(), "a thread withdrawing the job was never woken");
        }
    }
}
