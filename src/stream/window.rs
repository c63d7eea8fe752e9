//! The reorder window: the state a stream's source, its workers and its consumer
//! share, and the hand-off protocol between them (claim, pull, process, deposit,
//! consume).
//!
//! The protocol and what it keeps (bounded memory, exactly once and in order, no
//! deadlock, no lost wake-up, early exit and memory safety): ARCHITECTURE.md, "Streams:
//! the reorder window". Modelled in `loom-tests/tests/stream.rs`.

use super::pipe::Pipe;
use crate::cancel::CancelToken;
use crate::engine::stop::{StopReason, outside_reason};
use crate::outcome::error::{RunError, panic_message};
use crate::pool::Shared;
use crate::pool::registry::{Job, Leave, Participants, Registry};
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, Parker, lock};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// Settings fixed when the stream starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) window: usize,
    pub(crate) max_batch: usize,
    pub(crate) ordered: bool,
    /// The pool's worker count.
    pub(crate) workers: usize,
    /// At most this many workers on the stream at once (the runner's limit, less the
    /// consumer).
    pub(crate) worker_limit: Option<usize>,
}

/// What stops a stream from outside: its runner's cancel token and deadline. Looked at
/// by every claim and by the consumer before each batch.
#[derive(Debug, Default)]
pub(crate) struct Outside {
    pub(crate) token: Option<CancelToken>,
    pub(crate) deadline: Option<Instant>,
}

/// How often a consumer waiting for a batch looks at a cancel token.
const TOKEN_POLL: Duration = Duration::from_millis(2);

impl Outside {
    /// Why the stream must stop now, if it must (as a run would, see `Stop`).
    pub(crate) fn reason(&self) -> Option<StopReason> {
        if self.token.is_none() && self.deadline.is_none() {
            return None;
        }
        outside_reason(self.token.as_ref(), self.deadline)
    }

    /// When a waiting consumer must look again (`None`: only a deposit wakes it).
    fn look_again(&self) -> Option<Instant> {
        let poll = self.token.as_ref().map(|_| Instant::now() + TOKEN_POLL);
        crate::cancel::earlier(poll, self.deadline)
    }
}

/// What a batch should cost, roughly: long enough to make the per-batch locks and
/// wake-ups negligible, short enough that the last batches of a stream spread over the
/// threads and that an ordered consumer does not wait for one long batch.
#[cfg(not(loom))]
const BATCH_TARGET_NS: u64 = 200_000;

/// Spin rounds (a few microseconds) a consumer watches for a deposit before it parks.
#[cfg(not(loom))]
const SPIN_BEFORE_PARK: u32 = 200;
/// None under loom: the models check the park/wake protocol itself.
#[cfg(loom)]
const SPIN_BEFORE_PARK: u32 = 0;

/// A batch that went through the stages, ready for the consumer.
pub(crate) struct Batch<T, E> {
    seq: u64,
    /// Source items the batch holds reserved (released when the consumer is done).
    pub(crate) inputs: usize,
    pub(crate) outs: Vec<T>,
    /// The first error or panic among the batch's items; the stream ends after it.
    pub(crate) end: Option<RunError<E>>,
}

struct Pulled<In, E> {
    seq: u64,
    /// Sequence number of the batch's first item.
    first: u64,
    items: Vec<In>,
    /// Set when the source itself panicked right after `items`.
    end: Option<RunError<E>>,
}

/// A claim on the source: the right to pull `n` items as batch `seq`.
struct Claim {
    n: usize,
    seq: u64,
    first: u64,
}

struct State<T, E> {
    /// Someone holds the source (claimed under this lock, so every decision about the
    /// source is taken under one lock).
    pulling: bool,
    /// The next item's sequence number.
    next_item: u64,
    /// Size of the next batch.
    batch: usize,
    /// The source returned `None` or panicked: never call it again.
    finished: bool,
    /// Source items reserved and not yet released by the consumer (at most `window`).
    outstanding: usize,
    /// The largest `outstanding` ever seen (for `StreamStats`).
    max_outstanding: usize,
    /// Ordered mode: deposited batches, slot `k` holds batch `next + k`.
    slots: VecDeque<Option<Batch<T, E>>>,
    /// Unordered mode: deposited batches in deposit order.
    ready: VecDeque<Batch<T, E>>,
    /// Batches handed to the consumer (ordered: the next sequence number it takes).
    next: u64,
    /// Batches reserved so far: the next batch sequence number to hand out.
    issued: u64,
    /// How many batches the source made in all, once it ended.
    total: Option<u64>,
    /// No more pulls: an error, a panic, the token or deadline, or the consumer went
    /// away.
    stop: bool,
    /// The token or the deadline stopped the stream (the consumer reports it next).
    halted: Option<StopReason>,
    /// The consumer is parked waiting for a deposit.
    consumer_waiting: bool,
    /// Source items in deposited batches (for `StreamStats`).
    pulled: u64,
    /// Batches deposited so far (mirrored in `Window::deposits`).
    deposits: u64,
    /// Deposits by the consumer and by workers (for `StreamStats`).
    batches_by_consumer: u64,
    batches_by_workers: u64,
}

/// The shared state of one stream (see the module docs).
pub(crate) struct Window<I: Iterator, P: Pipe<I::Item, E>, E> {
    pool: Arc<Shared>,
    pipe: P,
    cfg: Config,
    outside: Outside,
    /// The source; locked only by the holder of a claim (`State::pulling`), so never
    /// contended.
    source: Mutex<I>,
    state: Mutex<State<P::Out, E>>,
    /// Hints for `has_work`, read without locks by idle workers. `pulling`: someone
    /// holds the source lock; `closed`: no pull will ever succeed again; `room`:
    /// `window - outstanding`. Written under the lock they mirror.
    pulling: AtomicBool,
    closed: AtomicBool,
    room: AtomicUsize,
    /// The batch size that costs about `BATCH_TARGET_NS`, estimated from the last
    /// batch processed (a hint: Relaxed, any value in `1..=max_batch` is correct).
    batch_cap: AtomicUsize,
    /// `State::deposits`, watched by a consumer about to park.
    deposits: AtomicU64,
    /// The consumer dropped its iterator: no worker may join any more.
    dropped: AtomicBool,
    /// Workers inside `participate`.
    participants: Participants,
    /// Where the consumer waits (for deposits and for workers to leave).
    /// Reference-counted so a worker can wake it after its last access to the window.
    consumer: Arc<Parker>,
}

/// Counters of a stream, see [`StreamStats`](super::StreamStats).
pub(crate) struct Counts {
    pub(crate) pulled: u64,
    pub(crate) max_outstanding: usize,
    pub(crate) by_consumer: u64,
    pub(crate) by_workers: u64,
}

impl<I, P, E> Window<I, P, E>
where
    I: Iterator + Send,
    I::Item: Send,
    P: Pipe<I::Item, E>,
    E: Send,
{
    pub(crate) fn new(pool: Arc<Shared>, iter: I, pipe: P, cfg: Config, outside: Outside) -> Self {
        Self {
            pool,
            pipe,
            cfg,
            outside,
            source: Mutex::new(iter),
            state: Mutex::new(State {
                pulling: false,
                next_item: 0,
                batch: 1,
                finished: false,
                outstanding: 0,
                max_outstanding: 0,
                slots: VecDeque::new(),
                ready: VecDeque::new(),
                next: 0,
                issued: 0,
                total: None,
                stop: false,
                halted: None,
                consumer_waiting: false,
                pulled: 0,
                deposits: 0,
                batches_by_consumer: 0,
                batches_by_workers: 0,
            }),
            pulling: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            room: AtomicUsize::new(cfg.window),
            batch_cap: AtomicUsize::new(cfg.max_batch),
            deposits: AtomicU64::new(0),
            dropped: AtomicBool::new(false),
            participants: Participants::new(),
            consumer: Arc::new(Parker::new()),
        }
    }

    pub(crate) fn window(&self) -> usize {
        self.cfg.window
    }

    /// Wakes a sleeping worker to pull, unless no worker may join (a runner's
    /// `limit(1)`: the consumer works alone, and a woken worker would only spin).
    fn wake_a_worker(&self) {
        if self.cfg.worker_limit != Some(0) {
            self.pool.sleep().notify_one();
        }
    }

    /// Pulls one batch, runs the stages over it and deposits it. Returns `false`
    /// without waiting when no batch can be pulled now (window full, source busy or
    /// finished, stream stopped).
    pub(crate) fn work_one(&self, by_consumer: bool) -> bool {
        // Relaxed: a hint; `true` is final, a stale `false` is decided under the lock.
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let claim = self.claim(&mut lock(&self.state));
        match claim {
            Some(claim) => {
                let pulled = self.pull(claim);
                let batch = self.process(pulled);
                self.deposit(batch, by_consumer);
                true
            }
            None => false,
        }
    }

    /// Claims the source and reserves the next batch, if the source is free, the
    /// window has room and the stream goes on.
    fn claim(&self, st: &mut State<P::Out, E>) -> Option<Claim> {
        if st.pulling || st.stop || st.finished || self.halt_if_told(st) {
            return None;
        }
        let room = self.cfg.window - st.outstanding;
        // Relaxed: a size hint (see `batch_cap`).
        let want = st.batch.min(self.batch_cap.load(Ordering::Relaxed)).max(1);
        let n = want.min(room);
        if n == 0 {
            return None;
        }
        st.pulling = true;
        st.outstanding += n;
        st.max_outstanding = st.max_outstanding.max(st.outstanding);
        // Every claim is one batch, deposited exactly once (maybe empty).
        let seq = st.issued;
        st.issued += 1;
        st.batch = (st.batch * 2).min(self.cfg.max_batch);
        // Relaxed: hints for `has_work`; the state lock holds the truth.
        self.pulling.store(true, Ordering::Relaxed);
        self.room.store(self.cfg.window - st.outstanding, Ordering::Relaxed);
        Some(Claim { n, seq, first: st.next_item })
    }

    /// Stops the stream if its token was cancelled or its deadline passed; says whether
    /// it is halted. A stream already stopping (an error, a panic, the consumer gone)
    /// keeps that end.
    fn halt_if_told(&self, st: &mut State<P::Out, E>) -> bool {
        if st.halted.is_none()
            && !st.stop
            && let Some(reason) = self.outside.reason()
        {
            st.halted = Some(reason);
            st.stop = true;
            self.closed.store(true, Ordering::Relaxed);
        }
        st.halted.is_some()
    }

    /// Why the stream was halted from outside, if it was (see `Outside`).
    pub(crate) fn halted(&self) -> Option<StopReason> {
        lock(&self.state).halted
    }

    /// Pulls the claimed items from the source, then releases the source.
    fn pull(&self, claim: Claim) -> Pulled<I::Item, E> {
        let Claim { n, seq, first } = claim;
        let mut items = Vec::with_capacity(n);
        let pulled = {
            let mut iter = lock(&self.source);
            let iter = &mut *iter;
            catch_unwind(AssertUnwindSafe(|| {
                while items.len() < n {
                    match iter.next() {
                        Some(x) => items.push(x),
                        None => break,
                    }
                }
            }))
        };
        let end = pulled.err().map(|payload| RunError::Panicked {
            message: panic_message(&*payload),
            index: Some((first + items.len() as u64) as usize),
        });
        let short = items.len() < n;
        {
            let mut st = lock(&self.state);
            st.pulling = false;
            st.next_item += items.len() as u64;
            if short {
                // The source ended (or panicked): give back what it did not deliver and
                // say how many batches there are. No claim came after ours (we held the
                // source), so ours is the last batch.
                st.finished = true;
                st.outstanding -= n - items.len();
                st.total = Some(st.issued);
                self.closed.store(true, Ordering::Relaxed);
                self.room.store(self.cfg.window - st.outstanding, Ordering::Relaxed);
            }
            self.pulling.store(false, Ordering::Relaxed);
        }
        if !short {
            // The source is free again and may have room: wake a sleeper to pull the
            // next batch while we process this one.
            self.wake_a_worker();
        }
        Pulled { seq, first, items, end }
    }

    /// Runs the stages over a batch; catches a panic and stops at the first error.
    fn process(&self, pulled: Pulled<I::Item, E>) -> Batch<P::Out, E> {
        let Pulled { seq, first, items, end: source_end } = pulled;
        // What the batch keeps reserved: a short batch gave the rest back in `pull`.
        let inputs = items.len();
        #[cfg(not(loom))]
        let start = std::time::Instant::now();
        let mut outs = Vec::with_capacity(items.len());
        let mut index = first;
        let result = catch_unwind(AssertUnwindSafe(|| {
            for item in items {
                self.pipe.push(item, &mut |y| {
                    outs.push(y);
                    Ok(())
                })?;
                index += 1;
            }
            Ok(())
        }));
        #[cfg(not(loom))]
        {
            let ns = (start.elapsed().as_nanos() as u64).max(1);
            let cap = (BATCH_TARGET_NS.saturating_mul(inputs as u64) / ns).clamp(1, self.cfg.max_batch as u64);
            // Relaxed: a size hint.
            self.batch_cap.store(cap as usize, Ordering::Relaxed);
        }
        let end = match result {
            Ok(Ok(())) => source_end,
            Ok(Err(error)) => Some(RunError::Failed { error, index: Some(index as usize) }),
            Err(payload) => Some(RunError::Panicked { message: panic_message(&*payload), index: Some(index as usize) }),
        };
        Batch { seq, inputs, outs, end }
    }

    fn deposit(&self, batch: Batch<P::Out, E>, by_consumer: bool) {
        let mut st = lock(&self.state);
        st.deposits += 1;
        // Relaxed: a hint for the consumer's spin (see `next_batch`).
        self.deposits.store(st.deposits, Ordering::Relaxed);
        st.pulled += batch.inputs as u64;
        if by_consumer {
            st.batches_by_consumer += 1;
        } else {
            st.batches_by_workers += 1;
        }
        if batch.end.is_some() {
            // Stop at the first error: no more pulls. Batches already pulled finish.
            st.stop = true;
            self.closed.store(true, Ordering::Relaxed);
        }
        #[cfg(not(all(loom, feature = "mutant_window_handoff")))]
        let wake = st.consumer_waiting && (!self.cfg.ordered || batch.seq == st.next || batch.end.is_some());
        // Mutant: off by one, the deposit of batch `next` itself no longer wakes the
        // consumer waiting for it (lost unless a later deposit or a leaving worker
        // unparks it).
        #[cfg(all(loom, feature = "mutant_window_handoff"))]
        let wake = st.consumer_waiting && (!self.cfg.ordered || batch.seq == st.next + 1 || batch.end.is_some());
        if self.cfg.ordered {
            let k = (batch.seq - st.next) as usize;
            while st.slots.len() <= k {
                st.slots.push_back(None);
            }
            st.slots[k] = Some(batch);
        } else {
            st.ready.push_back(batch);
        }
        if wake {
            st.consumer_waiting = false;
            // Unparked under the lock: the consumer's parker outlives this call anyway
            // (the consumer cannot free the window while we are a participant).
            self.consumer.unpark();
        }
    }

    /// The consumer's step: releases `release` items of its finished batch, then
    /// returns the next batch, helping or waiting as needed; `None` at the end.
    pub(crate) fn next_batch(&self, mut release: usize) -> Option<Batch<P::Out, E>> {
        // Whether we already spun once in this call before deciding to park.
        let mut spun = false;
        loop {
            let freed = release > 0;
            {
                let mut st = lock(&self.state);
                if freed {
                    st.outstanding -= release;
                    release = 0;
                    // Relaxed: a hint for `has_work`, published by `notify_one`'s fence.
                    self.room.store(self.cfg.window - st.outstanding, Ordering::Relaxed);
                }
                // Every batch delivered: the stream is over, whatever the clock says now.
                if st.total == Some(st.next) {
                    return None;
                }
                if self.halt_if_told(&mut st) {
                    // Stopped from outside: nothing more for the consumer, at once.
                    return None;
                }
                let taken = if self.cfg.ordered {
                    match st.slots.front_mut().and_then(Option::take) {
                        Some(b) => {
                            st.slots.pop_front();
                            Some(b)
                        }
                        None => None,
                    }
                } else {
                    st.ready.pop_front()
                };
                if let Some(b) = taken {
                    st.next += 1;
                    drop(st);
                    if freed {
                        // Room was released: a sleeping worker may pull again.
                        self.wake_a_worker();
                    }
                    return Some(b);
                }
                // Batches reserved and not yet taken. Ordered: batch `next` is among
                // them; unordered: some batch is. Either way its puller will deposit it
                // and the deposit wakes us.
                let in_flight = st.issued > st.next;
                if st.total == Some(st.next) || (st.stop && !in_flight) {
                    return None;
                }
                // Help rather than wait (pull and process a batch ourselves) when the
                // next batch is not reserved yet; also when it is, if not every worker
                // is on the stream already. Otherwise wait: if our batch is reserved,
                // its deposit wakes us; if not, the source is held by someone (else we
                // could claim it: the window has room, since nothing is reserved), whose
                // claim is our batch.
                let claim = if in_flight && self.workers_all_in() { None } else { self.claim(&mut st) };
                if claim.is_none() && !spun && SPIN_BEFORE_PARK > 0 {
                    // A batch is usually about to land: watch `deposits` briefly rather
                    // than pay a park and a wake-up, then look again under the lock.
                    spun = true;
                    let seen = st.deposits;
                    drop(st);
                    if freed {
                        self.wake_a_worker();
                    }
                    for _ in 0..SPIN_BEFORE_PARK {
                        // Relaxed: a hint; what was deposited is read under the lock.
                        if self.deposits.load(Ordering::Relaxed) != seen {
                            break;
                        }
                        crate::sync::spin_hint();
                    }
                    continue;
                }
                if claim.is_none() {
                    st.consumer_waiting = true;
                }
                drop(st);
                if freed {
                    self.wake_a_worker();
                }
                match claim {
                    Some(claim) => {
                        let pulled = self.pull(claim);
                        let batch = self.process(pulled);
                        self.deposit(batch, true);
                    }
                    None => match self.outside.look_again() {
                        Some(when) => self.consumer.park_until(when),
                        None => self.consumer.park(),
                    },
                }
            }
        }
    }

    /// Whether every worker of the pool is working on this stream and they fill every
    /// core: the consumer then leaves the pulling to them rather than be a third thread
    /// on two cores. Workers inside `participate` keep pulling until they cannot
    /// (window full, source finished or busy with another of them), so the consumer's
    /// batch is coming. On a pool with fewer workers than cores (one worker on two
    /// cores) the consumer has a core of its own, and pulls whenever it could.
    fn workers_all_in(&self) -> bool {
        // Relaxed: a hint; a stale value only changes who pulls the next batch.
        self.cfg.worker_limit.is_none_or(|n| n >= self.cfg.workers)
            && self.pool.workers_fill_the_cores()
            && self.participants.count() >= self.cfg.workers
    }

    /// Stops pulling for good: no batch starts and no worker joins after this (the
    /// first half of `close`; alone, for a stream that must never start).
    pub(crate) fn stop(&self) {
        let mut st = lock(&self.state);
        st.stop = true;
        self.closed.store(true, Ordering::Relaxed);
        // Release: orders our stop before a worker's failed `try_join` (no data flows).
        self.dropped.store(true, Ordering::Release);
    }

    /// Ends the stream for good: no new batch starts, no worker joins any more, and
    /// every worker that had joined has left when this returns, so the window may be
    /// freed (or what it borrows may end). Called by the scope the stream was started
    /// in, for an iterator still alive (leaked) when the scope ends; the iterator's own
    /// drop does the same (`stop`, then its registration's withdrawal). The two may
    /// overlap (an iterator dropped on a worker while the scope closes), and a later
    /// call finds everything done.
    pub(crate) fn close(&self) {
        self.stop();
        self.pool.registry().withdraw(self);
    }

    pub(crate) fn counts(&self) -> Counts {
        let st = lock(&self.state);
        Counts {
            pulled: st.pulled,
            max_outstanding: st.max_outstanding,
            by_consumer: st.batches_by_consumer,
            by_workers: st.batches_by_workers,
        }
    }
}

impl<I, P, E> Job for Window<I, P, E>
where
    I: Iterator + Send,
    I::Item: Send,
    P: Pipe<I::Item, E>,
    E: Send,
{
    fn try_join(&self) -> bool {
        // Acquire: pairs with `stop`; a dropped stream takes no one.
        if self.dropped.load(Ordering::Acquire) {
            return false;
        }
        // Relaxed: joins happen under the registry lock, so no other join races this
        // check; a leave that races it only makes it stricter than needed.
        if self.cfg.worker_limit.is_some_and(|n| self.participants.count() >= n) {
            return false;
        }
        self.participants.join();
        true
    }

    fn has_work(&self, _worker: usize) -> bool {
        // Relaxed: hints, ordered after a sleeper's registration by the `SeqCst` fence
        // in `Sleep::prepare`, and after a publisher's update by the one in
        // `notify_one`; a stale answer costs a join that finds no batch to claim, or
        // one wake-up.
        !self.closed.load(Ordering::Relaxed)
            && !self.pulling.load(Ordering::Relaxed)
            && self.room.load(Ordering::Relaxed) > 0
            && self.cfg.worker_limit.is_none_or(|n| self.participants.count() < n)
    }

    fn participate(&self, _worker: usize) -> Leave {
        while self.work_one(false) {}
        // The decrement, after which the window may be gone, comes after this borrow.
        self.participants.leave(&self.consumer)
    }

    fn participants(&self) -> &Participants {
        &self.participants
    }

    fn owner(&self) -> &Parker {
        &self.consumer
    }

    fn registry(&self) -> &Registry {
        self.pool.registry()
    }
}
