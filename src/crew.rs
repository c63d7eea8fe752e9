//! Helper threads started once and kept parked between runs, for the comparison
//! strategies ([`crate::strategy::ChannelPool`], [`crate::strategy::MutexQueue`]), so
//! that they start their runs the way the pool does: from parked threads, not from a
//! `thread::spawn` per run.
//!
//! A crew runs one closure at a time on all of its threads and the caller
//! ([`Crew::broadcast`]). It is not part of the pool's concurrent core and has no
//! lock-free part: one mutex and two condvars.

use std::any::Any;
use std::cell::Cell;
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
        // No user code runs under the lock (payloads are dropped after it is
        // released), so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

thread_local! {
    /// The crew whose broadcast this thread is running (its `Shared`'s address), if
    /// any: a broadcast on the same crew from inside one runs inline.
    static RUNNING: Cell<usize> = const { Cell::new(0) };
}

/// Marks this thread as running a broadcast of `crew` until dropped (then restores
/// what was there, for broadcasts of other crews nested inside each other).
struct Running(usize);

impl Running {
    fn enter(crew: &Shared) -> Self {
        Running(RUNNING.with(|r| r.replace(crew as *const Shared as usize)))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.with(|r| r.set(self.0));
    }
}

/// Drops a panic payload, whose own `Drop` may panic, without unwinding.
fn drop_quietly(payload: Box<dyn Any + Send>) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
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
            // A helper catches every panic of a job and of a payload's drop, so it
            // has not panicked; nothing to report if it had.
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
    /// calls have returned. If calls panicked, one panic is resumed here afterwards
    /// (the caller's if it panicked, else the first helper's); the others are dropped.
    ///
    /// Broadcasts from different threads take turns. A broadcast on this crew from
    /// inside one of its own (a nested run on the same strategy) runs `body` on the
    /// calling thread alone, since every helper is busy with the outer one.
    pub(crate) fn broadcast(&self, body: &(dyn Fn() + Sync + '_)) {
        let shared = &*self.inner.shared;
        let helpers = self.inner.helpers.len();
        let nested = RUNNING.with(|r| r.get()) == shared as *const Shared as usize;
        if helpers == 0 || nested {
            body();
            return;
        }
        let _serial = self.inner.serial.lock().unwrap_or_else(PoisonError::into_inner);
        let _running = Running::enter(shared);
        // SAFETY: only the lifetime changes (same fat-pointer layout). A helper calls
        // the pointer only between taking this epoch's job and its decrement of
        // `running` (both under the lock, in `helper_loop`); `wait` below is created
        // before the job is published and, dropped on every path out of this function
        // (unwinding included), blocks until `running == 0` and withdraws the job, so
        // no helper holds the pointer once `body`'s borrow ends.
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
        match (mine, theirs) {
            (Err(payload), theirs) => {
                if let Some(other) = theirs {
                    drop_quietly(other);
                }
                resume_unwind(payload);
            }
            (Ok(()), Some(payload)) => resume_unwind(payload),
            (Ok(()), None) => {}
        }
    }
}

fn helper_loop(shared: &Shared) {
    let _running = Running::enter(shared);
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
        let extra = match result {
            Err(payload) if state.panic.is_none() => {
                state.panic = Some(payload);
                None
            }
            Err(payload) => Some(payload),
            Ok(()) => None,
        };
        state.running -= 1;
        if state.running == 0 {
            shared.done.notify_all();
        }
        drop(state);
        if let Some(payload) = extra {
            drop_quietly(payload);
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
    fn a_broadcast_from_inside_one_runs_inline() {
        let crew = Crew::new(2, "crew-test").unwrap();
        let inner = AtomicUsize::new(0);
        crew.broadcast(&|| {
            crew.broadcast(&|| {
                inner.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(inner.load(Ordering::Relaxed), 2, "each of the two outer calls ran the inner body once, inline");
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
