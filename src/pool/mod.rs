//! The pool: worker threads (pinning, names, hooks, shutdown) and the worker loop (find
//! a job with work in the registry, take part, otherwise sleep).

pub(crate) mod local;
pub(crate) mod registry;
pub(crate) mod sleep;
pub(crate) mod spare;
#[cfg(not(loom))]
mod tokens;
pub(crate) mod worker_index;

use crate::outcome::error::panic_message;
#[cfg(not(loom))]
use crate::outcome::panics::drop_quietly;
use crate::sync::{AtomicBool, AtomicUsize, Mutex, Ordering, lock};
use registry::Registry;
use sleep::Sleep;
use spare::Spares;
use std::any::Any;
use std::fmt;
use std::panic::resume_unwind;
#[cfg(not(loom))]
use worker_index::set_current;
use worker_index::{pool_id, worker_index_in};

/// Why a [`Pool`] could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// `num_threads(0)` was requested.
    ZeroThreads,
    /// More threads than the pool supports were requested.
    TooManyThreads {
        /// The number requested.
        requested: usize,
        /// The largest number allowed.
        max: usize,
    },
    /// The stack size is below the minimum the pool accepts.
    StackTooSmall {
        /// The size requested, in bytes.
        requested: usize,
        /// The smallest size allowed, in bytes.
        min: usize,
    },
    /// The thread name prefix holds a NUL byte, which no thread name may contain.
    InvalidThreadName {
        /// The prefix given to [`PoolBuilder::thread_name`].
        name: String,
    },
    /// The operating system refused to start a thread (the cause is the `source`).
    Spawn(std::io::Error),
    /// The helper thread that waits for [`jobserver`](PoolBuilder::jobserver) tokens
    /// could not be started (the cause is the `source`).
    Jobserver(std::io::Error),
    /// The [`on_thread_start`](PoolBuilder::on_thread_start) hook panicked on a worker.
    /// The workers already started were stopped and joined.
    StartHookPanicked {
        /// The index of the worker whose hook panicked.
        worker: usize,
        /// The panic's message.
        message: String,
    },
    /// [`PoolBuilder::build_global`] was called after the global pool was built (by
    /// an earlier call, or with the defaults by a first use of [`global`](crate::global)).
    GlobalAlreadyBuilt,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::ZeroThreads => {
                f.write_str("a pool needs at least one thread (`inline(true)` builds one that runs on its callers)")
            }
            BuildError::TooManyThreads { requested, max } => {
                write!(f, "{requested} threads requested, at most {max} are supported")
            }
            BuildError::StackTooSmall { requested, min } => {
                write!(f, "stack size of {requested} bytes requested, at least {min} are needed")
            }
            BuildError::InvalidThreadName { name } => {
                write!(f, "thread name {name:?} contains a NUL byte, which a thread name cannot hold")
            }
            BuildError::Spawn(_) => f.write_str("could not start a worker thread"),
            BuildError::Jobserver(_) => f.write_str("could not start the jobserver helper thread"),
            BuildError::StartHookPanicked { worker, message } => {
                write!(f, "the thread start hook panicked on worker {worker}: {message}")
            }
            BuildError::GlobalAlreadyBuilt => f.write_str("the global pool is already built"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Spawn(e) | BuildError::Jobserver(e) => Some(e),
            _ => None,
        }
    }
}

/// The most workers a pool may have.
pub const MAX_THREADS: usize = 1024;
/// The smallest worker stack the builder accepts, in bytes.
pub const MIN_STACK_SIZE: usize = 64 * 1024;

/// Configures and builds a [`Pool`].
///
/// ```
/// let pool = fanout::Pool::builder()
///     .num_threads(2)
///     .pin(false)
///     .thread_name("compile")
///     .stack_size(4 << 20)
///     .build()?;
/// assert_eq!(pool.num_threads(), 2);
/// # Ok::<(), fanout::BuildError>(())
/// ```
#[derive(Clone)]
pub struct PoolBuilder {
    threads: Option<usize>,
    /// `None`: pin unless a jobserver is given (see `pin`).
    pin: Option<bool>,
    inline: bool,
    name: String,
    stack_size: Option<usize>,
    on_start: Option<Hook>,
    on_stop: Option<Hook>,
    jobserver: Option<jobserver::Client>,
}

/// A thread start or stop hook, called with the worker's index.
type Hook = std::sync::Arc<dyn Fn(usize) + Send + Sync>;

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("threads", &self.threads)
            .field("pin", &self.pin)
            .field("inline", &self.inline)
            .field("name", &self.name)
            .field("stack_size", &self.stack_size)
            .field("on_thread_start", &self.on_start.is_some())
            .field("on_thread_stop", &self.on_stop.is_some())
            .field("jobserver", &self.jobserver.is_some())
            .finish()
    }
}

impl Default for PoolBuilder {
    fn default() -> Self {
        Self {
            threads: None,
            pin: None,
            inline: false,
            name: "fanout".into(),
            stack_size: None,
            on_start: None,
            on_stop: None,
            jobserver: None,
        }
    }
}

impl PoolBuilder {
    /// Number of worker threads. Default: the available parallelism.
    ///
    /// Threads beyond the CPUs the process may use help with items that block. A
    /// follow-on or seed run whose items have taken under a microsecond so far takes
    /// them for computation, which more threads than CPUs cannot speed up: it wakes no
    /// more threads than there are CPUs (threads already awake may still join). Items
    /// that wait for other items of the same run (through a channel, say) need
    /// [`Runner::blocking`](crate::Runner::blocking), which wakes threads whatever the
    /// items cost.
    pub fn num_threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// Pin worker `i` to the `i`-th core the process may run on (its affinity mask, so
    /// `taskset` and cgroup cpusets are respected). Workers beyond that number, and every
    /// worker where the OS refuses, run unpinned; [`Pool::pinned_workers`] says how many
    /// were pinned.
    ///
    /// Default: pinned, unless a [`jobserver`](PoolBuilder::jobserver) is given. A
    /// jobserver means other processes share the machine, and every process would pin
    /// its worker `i` to the same core `i`, where the kernel may not move them: two
    /// processes running the same follow-on tree at once took 1.90-2.01x the time of
    /// one alone when pinned and 1.70-1.78x unpinned (`examples/shared_machine.rs`, 2
    /// cores), and with a jobserver the token count already keeps the threads to the
    /// cores, so only their placement is left to get right. The price, for a process
    /// that runs alone: a run that starts on a parked unpinned pool gets its second core
    /// later (2 ms of 1 us items from parked: 0.98-1.17x sequential unpinned, 1.13-1.71x
    /// pinned, on the same VM); `pin(true)` keeps pinning with a jobserver.
    pub fn pin(mut self, pin: bool) -> Self {
        self.pin = Some(pin);
        self
    }

    /// Inline mode (default `false`): the pool starts no thread at all, and every run
    /// executes on its caller alone, in a fixed order: seeds first to last, each task's
    /// follow-ons last pushed first (the order of a sequential loop over a `Vec` used as
    /// a stack; [`Ctx::push_high`](crate::Ctx::push_high) items still go first), ranges
    /// in index order. The same program then runs in parallel or one item at a time by
    /// configuration, for debugging or for comparing outputs, as long as no item waits
    /// for another to run (items that feed each other through a channel deadlock with
    /// one thread). `num_threads`, pinning, names, stack size and the thread hooks have
    /// no effect; [`Pool::num_threads`] is 0.
    ///
    /// ```
    /// let pool = fanout::Pool::builder().inline(true).build()?;
    /// let order = std::sync::Mutex::new(Vec::new());
    /// pool.run([1u32, 2], |n, ctx| {
    ///     order.lock().unwrap().push(n);
    ///     if n < 10 {
    ///         ctx.push(n * 10);
    ///         ctx.push(n * 10 + 1);
    ///     }
    /// });
    /// assert_eq!(order.into_inner().unwrap(), [1, 11, 10, 2, 21, 20]);
    /// # Ok::<(), fanout::BuildError>(())
    /// ```
    pub fn inline(mut self, inline: bool) -> Self {
        self.inline = inline;
        self
    }

    /// Prefix of the worker threads' names (`"{prefix}-{index}"`). Default `"fanout"`.
    /// A prefix holding a NUL byte makes [`build`](PoolBuilder::build) fail with
    /// [`BuildError::InvalidThreadName`].
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.name = prefix.into();
        self
    }

    /// Stack size of each worker thread, in bytes. Default: the platform's.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Calls `hook(index)` on each worker thread when it starts, after it was pinned and
    /// before it takes any work, to set up thread-local state (tracing, an allocator's
    /// arena, a thread name of one's own). [`build`](PoolBuilder::build) returns after
    /// every worker's hook has returned. A hook that panics makes `build` fail with
    /// [`BuildError::StartHookPanicked`] (naming the first worker to report one), after
    /// the other workers were stopped and joined (their stop hooks run; the panicking
    /// worker's does not). Hooks that wait for one another hang `build` if one of them
    /// panics. Panics are caught only with `panic = "unwind"`.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// let started = Arc::new(AtomicUsize::new(0));
    /// let seen = started.clone();
    /// let pool = fanout::Pool::builder()
    ///     .num_threads(2)
    ///     .on_thread_start(move |_index| {
    ///         seen.fetch_add(1, Ordering::Relaxed);
    ///     })
    ///     .build()?;
    /// assert_eq!(started.load(Ordering::Relaxed), 2);
    /// # drop(pool);
    /// # Ok::<(), fanout::BuildError>(())
    /// ```
    pub fn on_thread_start<F>(mut self, hook: F) -> Self
    where
        F: Fn(usize) + Send + Sync + 'static,
    {
        self.on_start = Some(std::sync::Arc::new(hook));
        self
    }

    /// Calls `hook(index)` on each worker thread when it stops, after its last task,
    /// while the pool is being dropped (or while a failed `build` stops the workers it
    /// started); the drop returns after every hook has returned.
    /// A hook that panics does not stop the other workers' hooks: once every worker has
    /// been joined, dropping the pool panics with the first hook's panic (or, if the
    /// pool is dropped while the thread is already unwinding, prints it to standard
    /// error instead of aborting the process).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// let stopped = Arc::new(AtomicUsize::new(0));
    /// let seen = stopped.clone();
    /// let pool = fanout::Pool::builder()
    ///     .num_threads(2)
    ///     .on_thread_stop(move |_index| {
    ///         seen.fetch_add(1, Ordering::Relaxed);
    ///     })
    ///     .build()?;
    /// drop(pool);
    /// assert_eq!(stopped.load(Ordering::Relaxed), 2);
    /// # Ok::<(), fanout::BuildError>(())
    /// ```
    pub fn on_thread_stop<F>(mut self, hook: F) -> Self
    where
        F: Fn(usize) + Send + Sync + 'static,
    {
        self.on_stop = Some(std::sync::Arc::new(hook));
        self
    }

    /// Shares the machine with other processes through a jobserver (the protocol of
    /// GNU make and cargo; see the [`jobserver`] crate): a worker works only while it
    /// holds one of the jobserver's tokens, so under `make -jN` or `cargo build -jN`
    /// all the processes together run at most `N` threads. The thread that calls a run
    /// works on the process's implicit token and takes none.
    ///
    /// A worker takes a token when it finds work (one non-blocking read; if none is
    /// free it sleeps until the jobserver's helper thread hands it one) and gives it
    /// back when it goes to sleep, so a busy worker makes no system call per item or
    /// per run. Runs never wait for tokens: a run's caller works through it alone if
    /// need be. If the jobserver fails later, the workers go on without tokens. The
    /// waiting is done by the `jobserver` crate's helper thread, which on Unix installs
    /// a `SIGUSR1` handler to stop its blocking read when the pool is dropped.
    /// [`build`](PoolBuilder::build) fails with [`BuildError::Jobserver`] if the helper
    /// thread cannot start.
    ///
    /// ```
    /// // In a build script or a compiler driver: `unsafe { jobserver::Client::from_env() }`.
    /// let client = jobserver::Client::new(1).expect("jobserver");
    /// let pool = fanout::Pool::builder().num_threads(4).jobserver(client).build()?;
    /// // At most two threads work at once: this one and a worker holding the token.
    /// assert_eq!(pool.fold_index(0..1000, || 0, |a, i| a + i, |a, b| a + b), 499_500);
    /// # Ok::<(), fanout::BuildError>(())
    /// ```
    pub fn jobserver(mut self, client: jobserver::Client) -> Self {
        self.jobserver = Some(client);
        self
    }

    /// Starts the workers. Returns once every worker is running (and pinned, if asked,
    /// and its start hook has returned).
    ///
    /// Bad settings are refused before any thread starts; if the operating system
    /// refuses a thread ([`BuildError::Spawn`]) or a start hook panics, the workers
    /// already started are stopped and joined before the error is returned.
    pub fn build(self) -> Result<Pool, BuildError> {
        if self.inline {
            return Pool::start(0, self);
        }
        let threads = match self.threads {
            Some(0) => return Err(BuildError::ZeroThreads),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if threads > MAX_THREADS {
            return Err(BuildError::TooManyThreads { requested: threads, max: MAX_THREADS });
        }
        if let Some(size) = self.stack_size
            && size < MIN_STACK_SIZE
        {
            return Err(BuildError::StackTooSmall { requested: size, min: MIN_STACK_SIZE });
        }
        // `std::thread::Builder::spawn` panics on such a name.
        if self.name.contains('\0') {
            return Err(BuildError::InvalidThreadName { name: self.name });
        }
        Pool::start(threads, self)
    }
}

pub(crate) struct Shared {
    sleep: Sleep,
    /// Large stack buffers kept between runs (see `spare`).
    spares: Spares,
    /// The runs and streams in progress that workers may join.
    registry: Registry,
    shutdown: AtomicBool,
    pinned: AtomicUsize,
    threads: usize,
    /// At least one worker per core: a caller that also works holds one of the cores,
    /// so its run admits one worker fewer while it takes part (see `Seats`).
    one_per_core: bool,
    /// CPUs this process may run on when the pool was built (see
    /// `Seats::wants_a_worker_for_compute`); `u32::MAX` for an inline pool and under
    /// loom, where there are none to fill.
    cpus: u32,
    /// The first panic of a thread stop hook, with the worker's index, for `Pool::drop`.
    stop_hook_panic: Mutex<Option<(usize, Box<dyn Any + Send>)>>,
    /// Jobserver tokens the workers must hold to work (`PoolBuilder::jobserver`).
    #[cfg(not(loom))]
    tokens: Option<tokens::Tokens>,
}

impl Shared {
    fn worker_loop(&self, me: usize) {
        // The jobserver token this worker holds while it may work (see `tokens`).
        #[cfg(not(loom))]
        let mut token = None;
        // Acquire: pairs with the Release store in `Pool::drop`.
        while !self.shutdown.load(Ordering::Acquire) {
            #[cfg(not(loom))]
            if let Some(tokens) = &self.tokens
                && token.is_none()
            {
                if self.registry.any_work(me) {
                    // `None`: the pool is shutting down, which the loop sees next.
                    token = tokens.wait();
                    continue;
                }
            } else if self.registry.help_once(me) {
                continue;
            }
            #[cfg(loom)]
            if self.registry.help_once(me) {
                continue;
            }
            // Nothing registered has work: look a little longer, then sleep.
            if self.spin_for_work(me) {
                continue;
            }
            // Going to sleep: the token goes back to the jobserver.
            #[cfg(not(loom))]
            drop(token.take());
            self.sleep.prepare(me);
            // The re-check after registering as a sleeper (see the `sleep` module).
            #[cfg(not(all(loom, feature = "mutant_sleep")))]
            let recheck = self.shutdown.load(Ordering::Acquire) || self.registry.any_work(me);
            #[cfg(all(loom, feature = "mutant_sleep"))]
            let recheck = self.shutdown.load(Ordering::Acquire);
            if recheck {
                self.sleep.cancel(me);
                continue;
            }
            self.sleep.park(me);
        }
    }
}

/// How long an idle worker keeps looking for work before it sleeps: long enough to
/// catch the next of a program's back-to-back runs without a wake-up (which costs the
/// run tens of microseconds here), short enough that an idle pool costs nothing.
#[cfg(not(loom))]
const SPIN_TIME: std::time::Duration = std::time::Duration::from_micros(100);

impl Shared {
    /// Spins and yields for up to `SPIN_TIME`, looking at the registry whenever
    /// something was published meanwhile; returns whether there may be work now (or
    /// the pool is shutting down). Reads one shared counter per round otherwise, so
    /// idle workers do not contend on the registry's lock.
    fn spin_for_work(&self, me: usize) -> bool {
        #[cfg(loom)]
        {
            // The models go straight to the sleep protocol.
            let _ = me;
            false
        }
        #[cfg(not(loom))]
        {
            let start = std::time::Instant::now();
            let mut seen = self.sleep.published();
            let mut round = 0u32;
            loop {
                // Acquire: as in `worker_loop`.
                if self.shutdown.load(Ordering::Acquire) {
                    return true;
                }
                let now = self.sleep.published();
                if now != seen {
                    seen = now;
                    if self.registry.any_work(me) {
                        return true;
                    }
                }
                if round >= 6 && start.elapsed() >= SPIN_TIME {
                    return false;
                }
                pause(round);
                round = round.saturating_add(1);
            }
        }
    }
}

/// One round of a wait that expects its condition soon: spin hints, doubling, for
/// the first six rounds, then a yield per round.
#[cfg(not(loom))]
fn pause(round: u32) {
    if round < 6 {
        for _ in 0..(1u32 << round) {
            crate::sync::spin_hint();
        }
    } else {
        crate::sync::yield_now();
    }
}

/// A pool of worker threads that runs typed fan-outs.
///
/// Runs borrow from the caller's stack, like [`std::thread::scope`]: a run returns only
/// after every item has executed and every worker has let go of it. The calling thread
/// works on its own run too. A pool may be used from several threads at once and from
/// inside its own tasks (nested runs). Dropping the pool stops and joins every worker.
///
/// Memory: a run keeps its pending follow-ons in per-thread stacks. When a run ends,
/// the pool keeps the large ones' buffers (128 KiB or more each, at most 64 MiB in all)
/// for the runs after it, as a reused `Vec` keeps its capacity, so repeated wide
/// fan-outs do not fault in fresh memory each time; dropping the pool frees them.
///
/// ```
/// let pool = fanout::Pool::builder().num_threads(2).build()?;
/// let words = ["fan", "out", "fan", "in"];
/// let lengths = pool.map(&words, |w| w.len());
/// assert_eq!(lengths, [3, 3, 3, 2]);
/// # Ok::<(), fanout::BuildError>(())
/// ```
pub struct Pool {
    shared: crate::sync::Arc<Shared>,
    threads: Vec<Handle>,
}

#[cfg(not(loom))]
type Handle = std::thread::JoinHandle<()>;
#[cfg(loom)]
type Handle = loom::thread::JoinHandle<()>;

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("threads", &self.shared.threads).field("pinned", &self.pinned_workers()).finish()
    }
}

impl Pool {
    /// A builder with the defaults: one pinned worker per core.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// A pool with the default settings (same as `Pool::builder().build()`).
    pub fn new() -> Result<Pool, BuildError> {
        Self::builder().build()
    }

    fn start(threads: usize, cfg: PoolBuilder) -> Result<Pool, BuildError> {
        // Only a pool of threads needs to know, and not under loom (see `Shared::cpus`).
        let cpus = if threads > 0 && !cfg!(loom) {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            usize::MAX
        };
        #[cfg(not(loom))]
        let tokens = match cfg.jobserver.clone() {
            Some(client) if threads > 0 => Some(tokens::Tokens::new(client).map_err(BuildError::Jobserver)?),
            _ => None,
        };
        let shared = crate::sync::Arc::new(Shared {
            sleep: Sleep::new(threads),
            spares: Spares::new(),
            registry: Registry::new(),
            shutdown: AtomicBool::new(false),
            pinned: AtomicUsize::new(0),
            threads,
            // Not under loom, so that the models let every worker join beside the caller.
            one_per_core: !cfg!(loom) && threads > 0 && threads >= cpus,
            // Under loom there are no CPUs to fill: every sleeper may be woken.
            cpus: u32::try_from(cpus).unwrap_or(u32::MAX),
            stop_hook_panic: Mutex::new(None),
            #[cfg(not(loom))]
            tokens,
        });
        let mut pool = Pool { shared, threads: Vec::with_capacity(threads) };
        #[cfg(not(loom))]
        {
            // Miri cannot run the affinity system calls; pinning is a performance matter only.
            let cores = if cfg.pin.unwrap_or(cfg.jobserver.is_none()) && !cfg!(miri) {
                core_affinity::get_core_ids().unwrap_or_default()
            } else {
                Vec::new()
            };
            let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), BuildError>>();
            for i in 0..threads {
                let shared = pool.shared.clone();
                let core = cores.get(i).copied();
                let ready = ready_tx.clone();
                let (on_start, on_stop) = (cfg.on_start.clone(), cfg.on_stop.clone());
                let mut builder = std::thread::Builder::new().name(format!("{}-{i}", cfg.name));
                if let Some(size) = cfg.stack_size {
                    builder = builder.stack_size(size);
                }
                let spawned = builder.spawn(move || {
                    if let Some(core) = core
                        && core_affinity::set_for_current(core)
                    {
                        shared.pinned.fetch_add(1, Ordering::Relaxed);
                        shared.sleep.set_pinned(i, core.id);
                    }
                    set_current(pool_id(&shared.sleep), i);
                    if let Some(hook) = on_start
                        && let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(i)))
                    {
                        let message = panic_message(payload.as_ref());
                        let _ = ready.send(Err(BuildError::StartHookPanicked { worker: i, message }));
                        return;
                    }
                    let _ = ready.send(Ok(()));
                    // Not kept alive by this thread's loop: the channel's end is what
                    // `build` waits on.
                    drop(ready);
                    shared.worker_loop(i);
                    if let Some(hook) = on_stop
                        && let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(i)))
                    {
                        let mut first = lock(&shared.stop_hook_panic);
                        if first.is_none() {
                            *first = Some((i, payload));
                        } else {
                            drop(first);
                            // Not the first: drop it where a panicking `Drop` cannot escape.
                            drop_quietly(payload);
                        }
                    }
                });
                match spawned {
                    Ok(handle) => pool.threads.push(handle),
                    Err(e) => {
                        // As for a start hook's panic below.
                        drop_quietly(pool.shut_down());
                        return Err(BuildError::Spawn(e));
                    }
                }
            }
            drop(ready_tx);
            for _ in 0..threads {
                match ready_rx.recv() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        // The other workers are stopped and joined; their stop hooks'
                        // panics, if any, give way to the error that ends the build.
                        drop_quietly(pool.shut_down());
                        return Err(e);
                    }
                    // A worker that died before reporting closes its sender; stop waiting.
                    Err(_) => break,
                }
            }
        }
        #[cfg(loom)]
        {
            let _ = &cfg;
            for i in 0..threads {
                let shared = pool.shared.clone();
                pool.threads.push(loom::thread::spawn(move || shared.worker_loop(i)));
            }
        }
        Ok(pool)
    }

    /// Number of worker threads (the caller of a run works too, as one more thread);
    /// 0 for an [inline](PoolBuilder::inline) pool.
    pub fn num_threads(&self) -> usize {
        self.shared.threads
    }

    /// The index (`0..num_threads()`) of the current thread among this pool's workers,
    /// or `None` on any other thread: the caller of a run (which takes part in it too),
    /// or a worker of another pool. Stable for the pool's lifetime, so it can index
    /// per-worker state (see also [`WorkerLocal`](crate::WorkerLocal) and
    /// [`Ctx::worker_index`](crate::Ctx::worker_index)).
    ///
    /// ```
    /// let pool = fanout::Pool::builder().num_threads(2).build()?;
    /// assert_eq!(pool.current_thread_index(), None); // the caller of the runs below
    /// let seen = pool.map_index(0..1000, |_| pool.current_thread_index());
    /// assert!(seen.iter().all(|i| i.is_none_or(|i| i < 2)));
    /// # Ok::<(), fanout::BuildError>(())
    /// ```
    pub fn current_thread_index(&self) -> Option<usize> {
        worker_index_in(pool_id(&self.shared.sleep))
    }

    /// How many workers are pinned to a core.
    pub fn pinned_workers(&self) -> usize {
        // Relaxed: a count finished before `build` returned (the ready channel orders it).
        self.shared.pinned.load(Ordering::Relaxed)
    }
}

impl Pool {
    /// Stops and joins every worker; returns the first stop hook's panic, if any.
    fn shut_down(&mut self) -> Option<(usize, Box<dyn Any + Send>)> {
        // Release: pairs with the workers' Acquire loads of the flag.
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.sleep.notify_all();
        #[cfg(not(loom))]
        if let Some(tokens) = &self.shared.tokens {
            tokens.close();
        }
        for handle in self.threads.drain(..) {
            // A worker never unwinds (task and hook panics are caught), so join's
            // error case cannot carry anything we could report.
            let _ = handle.join();
        }
        lock(&self.shared.stop_hook_panic).take()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some((worker, payload)) = self.shut_down() {
            if std::thread::panicking() {
                // A second panic here would abort the process.
                eprintln!(
                    "fanout: the thread stop hook panicked on worker {worker}: {}",
                    panic_message(payload.as_ref())
                );
            } else {
                resume_unwind(payload);
            }
        }
    }
}

/// What the jobs (runs, see `crate::engine`; streams, see `crate::stream`) use of the
/// pool.
impl Shared {
    /// The jobs in progress, for registering one.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The pool's sleep/wake state, to wake a worker after making work available.
    pub(crate) fn sleep(&self) -> &Sleep {
        &self.sleep
    }

    /// Stack buffers left by earlier runs.
    pub(crate) fn spares(&self) -> &Spares {
        &self.spares
    }

    /// The number of worker threads.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// CPUs the pool's threads may run on (see `Seats::wants_a_worker_for_compute`).
    pub(crate) fn cpus(&self) -> u32 {
        self.cpus
    }

    /// Whether the pool has at least one worker per core (never under loom), so that a
    /// run's caller that also works holds one of the cores (see `Seats`).
    pub(crate) fn one_per_core(&self) -> bool {
        self.one_per_core
    }

    /// Whether the workers work only while they hold a jobserver token: a run may then
    /// get no worker at all, so its caller never leaves work to them.
    pub(crate) fn workers_need_tokens(&self) -> bool {
        #[cfg(not(loom))]
        return self.tokens.is_some();
        #[cfg(loom)]
        false
    }

    /// Whether a thread working beside every worker takes a core from one of them (for
    /// streams). Under loom, where there are no cores, the pool counts as full, so the
    /// models explore waiting for the workers.
    pub(crate) fn workers_fill_the_cores(&self) -> bool {
        cfg!(loom) || self.one_per_core
    }
}

impl Pool {
    /// The state shared with the workers.
    pub(crate) fn shared(&self) -> &crate::sync::Arc<Shared> {
        &self.shared
    }
}
