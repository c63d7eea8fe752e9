//! The pool's registry of jobs in progress, and the protocol that keeps a job alive
//! while workers use it.
//!
//! A job (a run on its caller's stack, or a stream's window on the heap) is reached
//! by workers only through the registry: they join it under the registry's lock
//! ([`Job::try_join`] counts them in its [`Participants`]). Its owner removes it from
//! the registry and then waits until every worker that joined has left
//! ([`Registry::withdraw`]); a worker's last access to the job is its [`Leave`].

use crate::sync::{Arc, AtomicUsize, Mutex, Ordering, Parker, lock};
use crossbeam_utils::CachePadded;

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
    /// joins it any more, then waits until every worker that had joined it has left,
    /// parking on its [`owner`](Job::owner), which their [`Leave`]s wake. The job may
    /// be freed once this returns.
    pub(crate) fn withdraw(&self, job: &(dyn Job + '_)) {
        let addr: *const () = std::ptr::from_ref(job).cast();
        {
            let mut jobs = lock(&self.jobs);
            if let Some(pos) = jobs.iter().position(|j| std::ptr::addr_eq(j.0, addr)) {
                jobs.swap_remove(pos);
            }
            self.len.store(jobs.len(), Ordering::Release);
        }
        // Acquire: pairs with the Release decrement in `Leave::leave`, so every worker's
        // accesses to the job happen before the owner frees it.
        while job.participants().0.load(Ordering::Acquire) != 0 {
            job.owner().park();
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

/// A job on its owner's stack, in the registry for as long as this guard lives.
pub(crate) struct Registered<'r> {
    registry: &'r Registry,
    job: &'r (dyn Job + 'r),
}

impl<'r> Registered<'r> {
    /// Registers `job`, so that workers may join it.
    ///
    /// # Safety
    ///
    /// The guard must be dropped, not leaked: its `Drop` is what keeps the registry
    /// and the workers from using the job once it is gone.
    pub(crate) unsafe fn new(registry: &'r Registry, job: &'r (dyn Job + 'r)) -> Self {
        // SAFETY: the guard borrows the job, so the job (and what it borrows) outlives
        // it, and dropping the guard (on return and on unwind alike; the caller
        // promises it is not leaked) withdraws the job.
        unsafe { registry.register(job) };
        Self { registry, job }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.withdraw(self.job);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A job that always has work and counts its visitors.
    struct Counter {
        participants: Participants,
        owner: Arc<Parker>,
        visits: AtomicUsize,
    }

    impl Job for Counter {
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
    }

    fn counter() -> Counter {
        Counter { participants: Participants::new(), owner: Arc::new(Parker::new()), visits: AtomicUsize::new(0) }
    }

    #[test]
    fn a_registered_job_is_joined_and_a_withdrawn_one_is_not() {
        let registry = Registry::new();
        let job = counter();
        assert!(!registry.any_work(0), "nothing registered yet");
        {
            // SAFETY: the guard is dropped at the end of this block, before `job`.
            let _registered = unsafe { Registered::new(&registry, &job) };
            assert!(registry.any_work(0));
            assert!(registry.help_once(0));
            assert!(registry.help_once(1));
        }
        assert_eq!(job.visits.load(Ordering::Relaxed), 2);
        assert_eq!(job.participants.count(), 0, "every worker left");
        assert!(!registry.help_once(0), "a withdrawn job takes nobody");
        assert!(!registry.any_work(0));
    }

    #[test]
    fn withdraw_waits_for_a_worker_inside() {
        let registry = Registry::new();
        let job = counter();
        let left = AtomicBool::new(false);
        std::thread::scope(|s| {
            // SAFETY: the guard is dropped inside this scope, before `job`.
            let registered = unsafe { Registered::new(&registry, &job) };
            // A worker counted in but not yet gone: the owner's withdrawal must wait
            // for its leave, which another thread makes a little later.
            assert!(job.try_join());
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                left.store(true, Ordering::Relaxed);
                let leave = job.participants.leave(&job.owner);
                // SAFETY: the job outlives the scope; this is this worker's one leave.
                unsafe { leave.leave() };
            });
            drop(registered);
            assert!(left.load(Ordering::Relaxed), "withdraw returned before the worker left");
        });
    }
}
