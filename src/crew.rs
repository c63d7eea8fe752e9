//! Helper threads started once and kept parked between runs, for the comparison
//! strategies ([`crate::strategy::ChannelPool`], [`crate::strategy::MutexQueue`]), so
//! that they start their runs the way the pool does: from parked threads, not from a
//! `thread::spawn` per run.
//!
//! A crew runs one closure at a time on all of its threads and the caller
//! ([`Crew::broadcast`]). It is not part of the pool's concurrent core and has no
//! lock-free part: one mutex and two condvars.

use std::any::Any;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// A closure published to the helpers, its lifetime erased (see [`Crew::broadcast`]).
#[derive(Clone, Copy)]
struct JobRef(*const (dyn Fn() + Sync + 'static));

// SAFETY: the pointee is `Sync`, so calling it from another thread through a shared
// reference is allowed; `broadcast` keeps it alive while any helper may call it.
unsafe impl Send for JobRef {}

struct State {
    job: Option<JobRef>,
    /// Bumped for every broadcast, so a helper runs each job exactly once.
    epoch: u64,
    /// Helpers that have not finished the current job.
    running: usize,
    shutdown: bool,
    /// The first panic of a helper during the current job.
    panic: Option<Box<dyn Any + Send>>,
}

struct Shared {
    state: Mutex<State>,
    start: Condvar,
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under the lock, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Inner {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
    /// One broadcast at a time (clones of a strategy share the crew).
    serial: Mutex<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.start.notify_all();
        for helper in self.helpers.drain(..) {
            // A helper catches every panic of a job, so it cannot have panicked.
            let _ = helper.join();
        }
    }
}

/// `threads - 1` parked helper threads; the caller of [`broadcast`](Crew::broadcast)
/// is the last thread. Clones share the threads, which leave when the last clone is
/// dropped.
#[derive(Clone)]
pub(crate) struct Crew {
    inner: Arc<Inner>,
}

impl fmt::Debug for Crew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crew").field("helpers", &self.inner.helpers.len()).finish()
    }
}

/// Waits, when dropped, until no helper runs the published job any more, then
/// withdraws it: the lifetime erasure in `broadcast` relies on this running on every
/// path out of it, unwinding included.
struct AwaitHelpers<'a>(&'a Shared);

impl Drop for AwaitHelpers<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        while state.running > 0 {
            state = self.0.done.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.job = None;
    }
}

impl Crew {
    /// Starts `threads - 1` helpers named `{name}-{i}`; on a spawn failure the ones
    /// already started are joined before the error is returned.
    pub(crate) fn new(threads: usize, name: &str) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { job: None, epoch: 0, running: 0, shutdown: false, panic: None }),
            start: Condvar::new(),
            done: Condvar::new(),
        });
        let mut inner = Inner { shared: Arc::clone(&shared), helpers: Vec::new(), serial: Mutex::new(()) };
        for i in 1..threads {
            let shared = Arc::clone(&shared);
            // On error `inner` is dropped here, which joins the helpers started so far.
            let helper = std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || helper_loop(&shared))?;
            inner.helpers.push(helper);
        }
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Runs `body` once on every helper and once on the caller, and returns when all
    /// calls have returned. A panic in any call is resumed here afterwards (the
    /// caller's own first).
    pub(crate) fn broadcast(&self, body: &(dyn Fn() + Sync + '_)) {
        let _serial = self.inner.serial.lock().unwrap_or_else(PoisonError::into_inner);
        let shared = &*self.inner.shared;
        let helpers = self.inner.helpers.len();
        if helpers == 0 {
            body();
            return;
        }
        // SAFETY: only the lifetime changes (same fat-pointer layout). The erased
        // pointer is used by helpers only while `running > 0` for this epoch, and
        // `wait` below (an `AwaitHelpers`, dropped on every path out of this function,
        // unwinding included) blocks until `running == 0` and withdraws the job before
        // `body`'s borrow ends.
        let job = JobRef(unsafe {
            std::mem::transmute::<*const (dyn Fn() + Sync + '_), *const (dyn Fn() + Sync + 'static)>(body)
        });
        let wait = AwaitHelpers(shared);
        {
            let mut state = shared.lock();
            state.job = Some(job);
            state.epoch += 1;
            state.running = helpers;
        }
        shared.start.notify_all();
        let mine = catch_unwind(AssertUnwindSafe(body));
        drop(wait);
        let theirs = shared.lock().panic.take();
        if let Err(payload) = mine {
            resume_unwind(payload);
        }
        if let Some(payload) = theirs {
            resume_unwind(payload);
        }
    }
}

fn helper_loop(shared: &Shared) {
    let mut seen = 0;
    loop {
        let job = {
            let mut state = shared.lock();
            loop {
                if state.shutdown {
                    return;
                }
                if state.epoch != seen {
                    seen = state.epoch;
                    match state.job {
                        Some(job) => break job,
                        None => unreachable!("a new epoch always carries a job"),
                    }
                }
                state = shared.start.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
        };
        // SAFETY: `broadcast` keeps the closure alive until `running` reaches zero,
        // and this helper's decrement below comes after its call has returned.
        let result = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)() }));
        let mut state = shared.lock();
        if let Err(payload) = result {
            state.panic.get_or_insert(payload);
        }
        state.running -= 1;
        if state.running == 0 {
            shared.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_thread_runs_each_broadcast_once() {
        let crew = Crew::new(3, "crew-test").unwrap();
        let calls = AtomicUsize::new(0);
        for round in 1..=50 {
            crew.broadcast(&|| {
                calls.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(calls.load(Ordering::Relaxed), 3 * round);
        }
    }

    #[test]
    fn a_helper_panic_reaches_the_caller_after_every_call_returned() {
        let crew = Crew::new(2, "crew-test").unwrap();
        let finished = AtomicUsize::new(0);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            crew.broadcast(&|| {
                let on_helper = std::thread::current().name().is_some_and(|n| n.starts_with("crew-test"));
                if on_helper {
                    panic!("helper");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                finished.fetch_add(1, Ordering::Relaxed);
            })
        }));
        let payload = caught.expect_err("the helper's panic is resumed");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"helper"));
        assert_eq!(finished.load(Ordering::Relaxed), 1);
        // The crew still works afterwards.
        let calls = AtomicUsize::new(0);
        crew.broadcast(&|| {
            calls.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }
}
