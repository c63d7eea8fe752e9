//! A fixed-capacity Chase-Lev work-stealing deque with claim-then-read steals:
//! [`Worker`] is the owner's end, [`Stealer`] the thieves'.
//!
//! The owner pushes and pops at the *bottom* (LIFO); thieves take from the *top*.
//! Indices are `u32` counters that wrap; slot `i` lives at `i & mask`.
//!
//! # Why the head holds two counters
//!
//! A classic Chase-Lev thief reads the slot *before* its CAS on `top`, so it may read a
//! slot that the owner is overwriting at that moment. That is a data race (undefined
//! behaviour) even when the CAS then fails and the value is thrown away. Here a thief
//! claims first and reads second. To stop the owner from reusing a claimed slot before
//! the thief has copied it out, `head` packs two counters into one `AtomicU64`:
//!
//! * `real`: the next index a thief may claim. Items in `[real, bottom)` are in the deque.
//! * `steal`: every slot below it is free for the owner to overwrite. `steal < real` while
//!   a thief is copying the items `[steal, real)` out; other thieves back off until the
//!   copier sets `steal = real` again (one copier at a time, as in tokio's local queue).
//!
//! The owner's capacity check uses `steal`, so a slot being copied is never overwritten.
//!
//! # Orderings
//!
//! Which store pairs with which load, and why a thief never reads a slot the owner is
//! writing: ARCHITECTURE.md, "Deque", which states the deque's invariants once. The
//! loom models in `loom-tests/tests/deque.rs` check them, with a mutant for each
//! ordering that matters.

use crate::sync::{Arc, AtomicU32, AtomicU64, Ordering, UnsafeCell, fence};
use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

/// Outcome of a steal attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Steal<T> {
    /// The deque had nothing to take.
    Empty,
    /// An item was taken.
    Success(T),
    /// Lost a race (to the owner or another thief); the deque may still hold items.
    Retry,
}

impl<T> Steal<T> {
    /// The stolen item, if any.
    pub fn success(self) -> Option<T> {
        match self {
            Steal::Success(t) => Some(t),
            _ => None,
        }
    }
}

#[inline(always)]
fn pack(steal: u32, real: u32) -> u64 {
    (u64::from(steal) << 32) | u64::from(real)
}

#[inline(always)]
fn unpack(head: u64) -> (u32, u32) {
    ((head >> 32) as u32, head as u32)
}

/// Signed distance `to - from` of two wrapping indices.
#[inline(always)]
fn distance(from: u32, to: u32) -> i32 {
    to.wrapping_sub(from) as i32
}

/// `capacity` empty slots, allocated without visiting each one (on the path of every
/// run that shares anything), in memory a dropped deque left to this thread if it has
/// the layout (see `crate::reuse`).
#[cfg(not(loom))]
fn empty_slots<T>(capacity: usize) -> Box<[UnsafeCell<MaybeUninit<T>>]> {
    let mut slots = crate::reuse::vec_with_capacity::<UnsafeCell<MaybeUninit<T>>>(capacity);
    // SAFETY: the `Vec` has room for `capacity` items; and the std
    // `UnsafeCell<MaybeUninit<T>>` is a `MaybeUninit<T>` in memory (it is
    // `repr(transparent)`, and so is this crate's wrapper), for which any contents,
    // uninitialized included, are a valid value.
    unsafe { slots.set_len(capacity) };
    slots.into_boxed_slice()
}

/// Under loom every cell is constructed, so that the model tracks it.
#[cfg(loom)]
fn empty_slots<T>(capacity: usize) -> Box<[UnsafeCell<MaybeUninit<T>>]> {
    (0..capacity).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect()
}

/// A bounded Chase-Lev deque. One thread (the owner) may call the `unsafe` owner
/// methods, through an [`Owner`] or a [`Worker`]; any thread may steal.
pub(crate) struct Deque<T> {
    /// `(steal, real)`, see the module docs. Written by thieves and, for the last item,
    /// by the owner.
    head: CachePadded<AtomicU64>,
    /// One past the newest item. Written only by the owner.
    bottom: CachePadded<AtomicU32>,
    /// Empty (no allocation) until the owner's first push allocates it (see
    /// `allocate`), then never replaced until the deque drops.
    slots: UnsafeCell<Box<[UnsafeCell<MaybeUninit<T>>]>>,
    mask: u32,
}

// SAFETY: items move between threads (owner to thief), hence `T: Send`. The slots are
// only accessed under the claim protocol described in the module docs, which gives each
// slot access to one thread at a time.
unsafe impl<T: Send> Send for Deque<T> {}
// SAFETY: as above; shared access from several threads is the point of the type, and
// every slot access is ordered by the head/bottom protocol.
unsafe impl<T: Send> Sync for Deque<T> {}

impl<T> Deque<T> {
    /// Creates an empty deque holding at most `capacity` items.
    ///
    /// # Panics
    ///
    /// If `capacity` is not a power of two between 2 and 2^30.
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(
            capacity.is_power_of_two() && (2..=1 << 30).contains(&capacity),
            "deque capacity must be a power of two in 2..=2^30, got {capacity}"
        );
        Self {
            head: CachePadded::new(AtomicU64::new(0)),
            bottom: CachePadded::new(AtomicU32::new(0)),
            slots: UnsafeCell::new(Box::new([])),
            mask: capacity as u32 - 1,
        }
    }

    /// How many items the deque can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.mask as usize + 1
    }

    /// A snapshot of the number of items (exact only when no other thread is acting).
    pub(crate) fn len(&self) -> usize {
        // Acquire on both: pairs with the owner's Release stores of `bottom` and the
        // thieves' RMWs on `head`; a snapshot only, used for peeking and statistics.
        let (_, real) = unpack(self.head.load(Ordering::Acquire));
        let bottom = self.bottom.load(Ordering::Acquire);
        distance(real, bottom).max(0) as usize
    }

    /// Whether a snapshot of the deque is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slots, or an empty slice before the first push.
    ///
    /// # Safety
    ///
    /// No thread may be in `allocate` meanwhile: the caller is the owner (the only
    /// thread that calls it), or holds `&mut self`, or has claimed an index (every
    /// store that puts `bottom` above `real` follows `allocate` in the owner's program
    /// order, and the claim's Acquire load of `bottom` pairs with it).
    #[inline(always)]
    unsafe fn slots(&self) -> &[UnsafeCell<MaybeUninit<T>>] {
        // SAFETY: the caller's promise: the cell is not being written. It is written
        // once, from an empty box (which owns no memory) to the allocated one, which
        // nothing replaces or frees before `Drop`.
        self.slots.with(|p| unsafe { &**p })
    }

    /// The slot of `index`.
    ///
    /// # Safety
    ///
    /// As for `slots`, and a push must have happened before (the slots exist).
    #[inline(always)]
    unsafe fn slot(&self, index: u32) -> &UnsafeCell<MaybeUninit<T>> {
        // SAFETY: the caller's promise.
        let slots = unsafe { self.slots() };
        // `mask` is `capacity - 1`, so the index is in bounds once the slots exist; the
        // compiler drops the check only sometimes, so keep it cheap rather than unsafe.
        &slots[(index & self.mask) as usize]
    }

    /// Allocates the slots, at the owner's first push: a run gives every participant a
    /// deque, and most of a small run's deques never hold an item.
    ///
    /// # Safety
    ///
    /// Only the owner may call this, never concurrently with another owner method, and
    /// only while no push has happened (so no thief reads the cell: a thief reads it
    /// only after a claim, and every store that puts `bottom` above `real` comes after
    /// this write).
    #[cold]
    #[inline(never)]
    unsafe fn allocate(&self) {
        let slots = empty_slots(self.capacity());
        // SAFETY: the caller's promise: nobody else reads or writes the cell now.
        self.slots.with_mut(|p| unsafe { *p = slots });
    }

    /// Pushes `item` at the bottom, or hands it back if the deque is full.
    ///
    /// # Safety
    ///
    /// Only the owner may call this, and never concurrently with another owner method.
    #[inline]
    pub(crate) unsafe fn push(&self, item: T) -> Result<(), T> {
        // Relaxed: only the owner (this thread) writes `bottom`.
        let bottom = self.bottom.load(Ordering::Relaxed);
        // Acquire: pairs with a copier's Release when it sets `steal = real`, so its
        // reads of the slots below `steal` happen before we overwrite them.
        #[cfg(not(all(loom, feature = "mutant_deque_push_acquire")))]
        let (steal, _) = unpack(self.head.load(Ordering::Acquire));
        // Mutant: we may overwrite a slot whose read by a thief does not happen before.
        #[cfg(all(loom, feature = "mutant_deque_push_acquire"))]
        let (steal, _) = unpack(self.head.load(Ordering::Relaxed));
        if bottom.wrapping_sub(steal) > self.mask {
            return Err(item);
        }
        // SAFETY: we are the owner (our caller's promise).
        let mut slots = unsafe { self.slots() };
        if slots.is_empty() {
            // SAFETY: we are the owner, and no push happened before this one (the
            // slots would exist). The empty slice read above is not used again.
            unsafe { self.allocate() };
            // SAFETY: we are the owner.
            slots = unsafe { self.slots() };
        }
        // SAFETY: the slot at `bottom` is outside `[steal, bottom)`, the only indices a
        // thief may be reading (claimed or about to be claimed below `bottom`), and the
        // ring distance check above keeps it from aliasing one of them. Only the owner
        // writes slots.
        slots[(bottom & self.mask) as usize].with_mut(|p| unsafe { (*p).write(item) });
        // Release: publishes the slot write to thieves that Acquire-load `bottom`.
        #[cfg(not(all(loom, feature = "mutant_deque_release")))]
        self.bottom.store(bottom.wrapping_add(1), Ordering::Release);
        // Mutant: a thief that sees the new `bottom` may read the slot before the write.
        #[cfg(all(loom, feature = "mutant_deque_release"))]
        self.bottom.store(bottom.wrapping_add(1), Ordering::Relaxed);
        Ok(())
    }

    /// Pops the newest item.
    ///
    /// # Safety
    ///
    /// Only the owner may call this, and never concurrently with another owner method.
    #[inline]
    pub(crate) unsafe fn pop(&self) -> Option<T> {
        let bottom = self.bottom.load(Ordering::Relaxed);
        // Fast empty check without a fence. Relaxed suffices: `real` never passes
        // `bottom`, and only this thread raises `bottom`, so `real == bottom` read at any
        // point means the deque is empty now.
        let (_, real) = unpack(self.head.load(Ordering::Relaxed));
        if real == bottom {
            return None;
        }
        let new_bottom = bottom.wrapping_sub(1);
        // Release, like every store to `bottom` (ARCHITECTURE.md, "Deque").
        self.bottom.store(new_bottom, Ordering::Release);
        // SeqCst fence: the owner's half of the Dekker pair. Either a thief that claims
        // after this point sees the lowered `bottom`, or we see its claim below.
        #[cfg(not(all(loom, feature = "mutant_deque")))]
        fence(Ordering::SeqCst);
        let head = self.head.load(Ordering::Acquire);
        let (_, real) = unpack(head);
        let remaining = distance(real, new_bottom);
        if remaining < 0 {
            // Thieves took everything; put `bottom` back on `real` (== old bottom).
            self.bottom.store(bottom, Ordering::Release);
            return None;
        }
        if remaining > 0 {
            // SAFETY: `new_bottom > real`, so no thief can claim this index: a claim
            // needs `real < bottom` as seen after the thief's fence, and the fence pair
            // guarantees it sees our lowered `bottom`. We own the slot; it was written
            // by a push of ours (so the slots exist), and we are the owner.
            return Some(unsafe { self.slot(new_bottom).with(|p| (*p).assume_init_read()) });
        }
        // The last item: race the thieves for it with a CAS on `real`. If no thief is
        // copying (`steal == real`), `steal` moves along with `real`. A CAS that fails
        // only because a copier released `steal` meanwhile (with `real` unchanged) is
        // retried: nobody claimed our index, and giving up would report an empty deque
        // while the item is still in it (loom found that case; the run's idle logic
        // relies on an owner's `None` meaning "empty").
        let next = real.wrapping_add(1);
        let mut current = head;
        let won = loop {
            let (steal, now_real) = unpack(current);
            if now_real != real {
                // A thief claimed the last item.
                break false;
            }
            let new_head = if steal == real { pack(next, next) } else { pack(steal, next) };
            // AcqRel: the CAS decides ownership of the slot against thieves' CASes.
            match self.head.compare_exchange(current, new_head, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break true,
                Err(actual) => current = actual,
            }
        };
        // Either way the deque is now empty with `bottom == real`.
        self.bottom.store(bottom, Ordering::Release);
        if won {
            // SAFETY: we won the CAS, so no thief claimed this index; it holds an item
            // we pushed (so the slots exist), and we are the owner.
            Some(unsafe { self.slot(new_bottom).with(|p| (*p).assume_init_read()) })
        } else {
            None
        }
    }

    /// Claims the item at `real`, provided `head` still equals `pack(steal, real)`.
    /// On success, `steal` is left where it was so the slot stays ours until
    /// [`Deque::release`].
    #[inline]
    fn claim(&self, steal: u32, real: u32) -> Steal<()> {
        // SeqCst fence: the thief's half of the Dekker pair with `pop`. Our caller read
        // `head == (steal, real)` before this point.
        #[cfg(not(all(loom, feature = "mutant_deque")))]
        fence(Ordering::SeqCst);
        // Acquire: pairs with the owner's Release store of `bottom`, making the slot
        // contents below it visible.
        #[cfg(not(all(loom, feature = "mutant_deque_steal_acquire")))]
        let bottom = self.bottom.load(Ordering::Acquire);
        // Mutant: we may read a slot whose write by the owner does not happen before.
        #[cfg(all(loom, feature = "mutant_deque_steal_acquire"))]
        let bottom = self.bottom.load(Ordering::Relaxed);
        if distance(real, bottom) <= 0 {
            return Steal::Empty;
        }
        // AcqRel: decides the slot against the owner's last-item CAS and other thieves.
        match self.head.compare_exchange(
            pack(steal, real),
            pack(steal, real.wrapping_add(1)),
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => Steal::Success(()),
            Err(_) => Steal::Retry,
        }
    }

    /// Reads the item at a claimed index.
    ///
    /// # Safety
    ///
    /// `index` must have been claimed by this thread and not yet released.
    #[inline]
    unsafe fn take_claimed(&self, index: u32) -> T {
        // SAFETY: the caller claimed `index`: no other thief may claim it, the owner only
        // takes indices `>= real` (and `real` is past `index`), and the owner cannot
        // overwrite it because `steal <= index` until we release. The claim means a
        // push happened before (the slots exist).
        unsafe { self.slot(index).with(|p| (*p).assume_init_read()) }
    }

    /// Ends a copy: sets `steal = real`, whatever `real` is now (the owner may have
    /// taken the last item meanwhile).
    #[inline]
    fn release(&self) {
        // Acquire on the load and AcqRel on the CAS: the CAS is the Release that the
        // owner's Acquire in `push` pairs with, ordering our slot reads before its
        // overwrites.
        #[cfg(not(all(loom, feature = "mutant_deque_release_cas")))]
        let success = Ordering::AcqRel;
        // Mutant: the owner may overwrite a slot whose read here does not happen before.
        #[cfg(all(loom, feature = "mutant_deque_release_cas"))]
        let success = Ordering::Acquire;
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let (_, real) = unpack(head);
            match self.head.compare_exchange_weak(head, pack(real, real), success, Ordering::Acquire) {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }

    /// Free room as the owner sees it (a lower bound: `steal` only grows).
    fn room(&self) -> usize {
        let bottom = self.bottom.load(Ordering::Relaxed);
        // Acquire: as in `push`.
        let (steal, _) = unpack(self.head.load(Ordering::Acquire));
        self.capacity() - bottom.wrapping_sub(steal) as usize
    }

    /// Pushes `item`; if the deque is full, first moves the older half of it, oldest
    /// first, into `spill` (the global queue), so the owner never blocks and keeps its
    /// newest items local. `spill` may call owner methods of this deque again: it runs
    /// with no claim held, and nothing read before a call of it is used after.
    ///
    /// # Safety
    ///
    /// Only the owner may call this, and never concurrently with another owner method
    /// (`spill`'s own calls are nested, not concurrent).
    pub(crate) unsafe fn push_or_spill(&self, item: T, mut spill: impl FnMut(T)) {
        // SAFETY: the caller is the owner.
        let Err(item) = (unsafe { self.push(item) }) else { return };
        // Take the older half through the thieves' door: it is correct against real
        // thieves racing us for the same items.
        let mut moved = 0;
        while moved < self.capacity() / 2 {
            match self.steal() {
                Steal::Success(old) => {
                    spill(old);
                    moved += 1;
                }
                Steal::Retry => crate::sync::spin_hint(),
                Steal::Empty => break,
            }
        }
        // SAFETY: the caller is the owner. At least one slot is free now unless a
        // copier still holds `steal` back; then the item goes to the spill as well.
        if let Err(item) = unsafe { self.push(item) } {
            spill(item);
        }
    }

    /// Steals the oldest item.
    pub(crate) fn steal(&self) -> Steal<T> {
        // Acquire: pairs with other thieves' Release in `release`, and orders this load
        // before the fence in `claim`.
        let (steal, real) = unpack(self.head.load(Ordering::Acquire));
        if steal != real {
            // Another thief is copying; come back later.
            return Steal::Retry;
        }
        match self.claim(steal, real) {
            Steal::Success(()) => {
                // SAFETY: `real` was just claimed by us.
                let item = unsafe { self.take_claimed(real) };
                self.release();
                Steal::Success(item)
            }
            Steal::Empty => Steal::Empty,
            Steal::Retry => Steal::Retry,
        }
    }

    /// Steals about half of the items (at least one, at most `dest`'s free room plus
    /// one), moves all but the first into `dest`, and returns the first.
    ///
    /// Items are claimed one at a time: with a LIFO owner, a single CAS claiming many
    /// items cannot tell whether the owner popped some of them meanwhile, so each claim
    /// re-checks `bottom` after its own fence (crossbeam's LIFO batch steal does the same).
    /// Other thieves of `self` get `Retry` while the batch is copied (`steal` is held
    /// back until `release`); `dest` stays open to its own thieves throughout.
    ///
    /// # Safety
    ///
    /// The calling thread must be the owner of `dest` (it pushes into it), and `dest`
    /// must not be `self`.
    pub(crate) unsafe fn steal_batch_and_pop(&self, dest: &Deque<T>) -> Steal<T> {
        let (steal, real) = unpack(self.head.load(Ordering::Acquire));
        if steal != real {
            return Steal::Retry;
        }
        match self.claim(steal, real) {
            Steal::Success(()) => {}
            other => return other.map_never(),
        }
        // SAFETY: `real` was just claimed by us.
        let first = unsafe { self.take_claimed(real) };
        // How many more to take: half of what was there (rounded up), bounded by the
        // room in `dest`. `len` is a snapshot; every claim below re-checks.
        let available = self.len();
        let room = dest.room();
        let mut more = available.div_ceil(2).min(room);
        let mut next = real.wrapping_add(1);
        while more > 0 {
            match self.claim(steal, next) {
                Steal::Success(()) => {}
                _ => break,
            }
            // SAFETY: `next` was just claimed by us.
            let item = unsafe { self.take_claimed(next) };
            // SAFETY: the caller owns `dest`; `room` bounds the pushes, and `dest`'s free
            // room only grows while we are its owner (only we push into it).
            let pushed = unsafe { dest.push(item) };
            assert!(pushed.is_ok(), "steal_batch: room was reserved in the destination");
            next = next.wrapping_add(1);
            more -= 1;
        }
        self.release();
        Steal::Success(first)
    }
}

impl Steal<()> {
    fn map_never<T>(self) -> Steal<T> {
        match self {
            Steal::Empty => Steal::Empty,
            _ => Steal::Retry,
        }
    }
}

impl<T> Drop for Deque<T> {
    fn drop(&mut self) {
        // `&mut self`: no thief is active; every item in `[real, bottom)` is initialized.
        let (_, real) = unpack(self.head.load(Ordering::Relaxed));
        let bottom = self.bottom.load(Ordering::Relaxed);
        let mut i = real;
        while i != bottom {
            // SAFETY: indices in `[real, bottom)` hold items nobody has taken (so a
            // push happened, and the slots exist); `&mut self` excludes every other
            // access.
            unsafe { self.slot(i).with_mut(|p| (*p).assume_init_drop()) };
            i = i.wrapping_add(1);
        }
        // The ring (empty now: the slots hold no value) goes back to this thread for
        // the next deque it allocates (see `crate::reuse`).
        // SAFETY: `&mut self` excludes every other access to the cell.
        let slots = self.slots.with_mut(|p| std::mem::take(unsafe { &mut *p }));
        crate::reuse::recycle(slots.into_vec());
    }
}

impl<T> std::fmt::Debug for Deque<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deque").field("len", &self.len()).field("capacity", &self.capacity()).finish()
    }
}
/// The owner's handle on a deque: the one way to call its owner methods safely.
///
/// It is `Send` (ownership may move to another thread) but not `Sync`, so two threads
/// can never call owner methods through it at the same time. That no other thread owns
/// the deque meanwhile is the promise made by [`Owner::new`].
pub(crate) struct Owner<'a, T> {
    deque: &'a Deque<T>,
    _not_sync: PhantomData<Cell<()>>,
}

impl<'a, T> Owner<'a, T> {
    /// The owner's handle on `deque`.
    ///
    /// # Safety
    ///
    /// While this handle lives, `deque`'s owner methods are called only on the thread
    /// that holds it: through it, or through other handles made with this same promise
    /// on this thread (nested calls, from a `push_or_spill`'s `spill`, are fine).
    pub(crate) unsafe fn new(deque: &'a Deque<T>) -> Self {
        Self { deque, _not_sync: PhantomData }
    }

    /// Pushes `item` at the bottom, or hands it back if the deque is full.
    #[inline]
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        // SAFETY: only this handle's thread calls the deque's owner methods (contract
        // of `new`), and the handle is not `Sync`, so no owner call runs concurrently
        // with this one.
        unsafe { self.deque.push(item) }
    }

    /// Pops the newest item.
    #[inline]
    pub(crate) fn pop(&self) -> Option<T> {
        // SAFETY: as in `push`: only this handle's thread calls owner methods.
        unsafe { self.deque.pop() }
    }

    /// Pushes `item`, first moving the older half to `spill` if the deque is full.
    pub(crate) fn push_or_spill(&self, item: T, spill: impl FnMut(T)) {
        // SAFETY: as in `push`: only this handle's thread calls owner methods.
        unsafe { self.deque.push_or_spill(item, spill) }
    }

    /// Steals a batch from `source` into the deque this handle owns, and returns one
    /// more item. Stealing from one's own deque is a bug, and panics.
    pub(crate) fn steal_batch_from(&self, source: &Deque<T>) -> Steal<T> {
        assert!(!std::ptr::eq(source, self.deque), "batch steal from one's own deque");
        // SAFETY: this thread owns `self.deque`, the destination (contract of `new`),
        // and we just checked that it is not the source.
        unsafe { source.steal_batch_and_pop(self.deque) }
    }
}

impl<T> std::ops::Deref for Owner<'_, T> {
    type Target = Deque<T>;

    fn deref(&self) -> &Deque<T> {
        self.deque
    }
}

/// The owner's end of a work-stealing deque: pushes and pops at the bottom (newest
/// first). Made with [`Worker::new`]; thieves take from the top through the
/// [`Stealer`]s it hands out.
///
/// A fixed-capacity Chase-Lev deque whose thieves claim a slot before they read it, so
/// no thread ever reads a slot another is writing. It is `Send` but not `Sync`: one
/// thread at a time owns it. This is the deque each participant of a run owns
/// (`crossbeam_deque::Worker` is the reference it is benchmarked against).
///
/// ```
/// use fanout::deque::{Steal, Worker};
///
/// let worker = Worker::new(64);
/// let stealer = worker.stealer();
/// worker.push(1).unwrap();
/// worker.push(2).unwrap();
/// let thief = std::thread::spawn(move || stealer.steal());
/// assert_eq!(thief.join().unwrap(), Steal::Success(1)); // thieves take the oldest
/// assert_eq!(worker.pop(), Some(2)); // the owner takes the newest
/// assert_eq!(worker.pop(), None);
/// ```
pub struct Worker<T> {
    deque: Arc<Deque<T>>,
    _not_sync: PhantomData<Cell<()>>,
}

impl<T> Worker<T> {
    /// An empty deque holding at most `capacity` items. Its slots are allocated by
    /// the first push, so a deque that never holds an item costs no slot memory.
    ///
    /// # Panics
    ///
    /// If `capacity` is not a power of two between 2 and 2^30.
    pub fn new(capacity: usize) -> Self {
        Self { deque: Arc::new(Deque::new(capacity)), _not_sync: PhantomData }
    }

    fn owner(&self) -> Owner<'_, T> {
        // SAFETY: a `Worker` is the one way to its deque's owner methods: it made the
        // deque, hands out only stealers, is not `Clone`, and is not `Sync`, so every
        // owner call, nested ones included, comes from the one thread that holds it.
        unsafe { Owner::new(&self.deque) }
    }

    /// A handle for thieves of this deque.
    pub fn stealer(&self) -> Stealer<T> {
        Stealer { deque: Arc::clone(&self.deque) }
    }

    /// Pushes `item` at the bottom, or hands it back if the deque is full.
    ///
    /// ```
    /// let worker = fanout::deque::Worker::new(2);
    /// assert_eq!(worker.push('a'), Ok(()));
    /// assert_eq!(worker.push('b'), Ok(()));
    /// assert_eq!(worker.push('c'), Err('c'));
    /// ```
    #[inline]
    pub fn push(&self, item: T) -> Result<(), T> {
        self.owner().push(item)
    }

    /// Pops the newest item.
    #[inline]
    pub fn pop(&self) -> Option<T> {
        self.owner().pop()
    }

    /// Pushes `item`; if the deque is full, first moves its older half, oldest first,
    /// into `spill` (a shared queue, say), so the owner never blocks and keeps its
    /// newest items.
    ///
    /// ```
    /// let worker = fanout::deque::Worker::new(4);
    /// let mut spilled = Vec::new();
    /// for i in 0..5 {
    ///     worker.push_or_spill(i, |old| spilled.push(old));
    /// }
    /// assert_eq!(spilled, [0, 1]);
    /// assert_eq!(worker.len(), 3);
    /// ```
    pub fn push_or_spill(&self, item: T, spill: impl FnMut(T)) {
        self.owner().push_or_spill(item, spill)
    }

    /// How many items the deque can hold.
    pub fn capacity(&self) -> usize {
        self.deque.capacity()
    }

    /// A snapshot of the number of items (exact only while no thief acts).
    pub fn len(&self) -> usize {
        self.deque.len()
    }

    /// Whether a snapshot of the deque is empty.
    pub fn is_empty(&self) -> bool {
        self.deque.is_empty()
    }
}

impl<T> std::fmt::Debug for Worker<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("len", &self.len()).field("capacity", &self.capacity()).finish()
    }
}

/// A thief's handle on a [`Worker`]'s deque: takes the oldest items. Cheap to clone,
/// and shared by any number of threads.
pub struct Stealer<T> {
    deque: Arc<Deque<T>>,
}

impl<T> Stealer<T> {
    /// Steals the oldest item. `Retry` means another thief was copying items out at
    /// that moment: try again.
    pub fn steal(&self) -> Steal<T> {
        self.deque.steal()
    }

    /// Steals about half of the items (at least one, at most what fits in `dest`, plus
    /// one), moves all but the first into `dest`, and returns the first.
    ///
    /// # Panics
    ///
    /// If `dest` is the deque this stealer steals from.
    ///
    /// ```
    /// use fanout::deque::{Steal, Worker};
    ///
    /// let victim = Worker::new(16);
    /// (0..8).for_each(|i| victim.push(i).unwrap());
    /// let thief = Worker::new(16);
    /// assert_eq!(victim.stealer().steal_batch_and_pop(&thief), Steal::Success(0));
    /// assert_eq!(thief.len(), 4); // about half: items 1 to 4 came along
    /// ```
    pub fn steal_batch_and_pop(&self, dest: &Worker<T>) -> Steal<T> {
        dest.owner().steal_batch_from(&self.deque)
    }

    /// A snapshot of the number of items.
    pub fn len(&self) -> usize {
        self.deque.len()
    }

    /// Whether a snapshot of the deque is empty.
    pub fn is_empty(&self) -> bool {
        self.deque.is_empty()
    }
}

impl<T> Clone for Stealer<T> {
    fn clone(&self) -> Self {
        Self { deque: Arc::clone(&self.deque) }
    }
}

impl<T> std::fmt::Debug for Stealer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stealer").field("len", &self.len()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::test_util::Counted;
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;
    use std::rc::Rc;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    /// An empty deque whose counters all start at `start`, so tests can run the ring
    /// across the `u32` wrap without doing four billion operations first.
    fn deque_at<T>(capacity: usize, start: u32) -> Deque<T> {
        let deque = Deque::new(capacity);
        deque.head.store(pack(start, start), Ordering::Relaxed);
        deque.bottom.store(start, Ordering::Relaxed);
        deque
    }

    /// Runs `f` with the unique owner handle of a fresh deque starting at index `start`.
    fn with_owner<T, R>(capacity: usize, start: u32, f: impl FnOnce(&Owner<'_, T>) -> R) -> R {
        let deque = deque_at(capacity, start);
        // SAFETY: `deque` is local to this call and this is the only handle made for it.
        let owner = unsafe { Owner::new(&deque) };
        f(&owner)
    }

    /// Starting indices: plain zero, and just before the `u32` wrap.
    const STARTS: [u32; 3] = [0, u32::MAX - 2, u32::MAX - 130];

    /// Steals everything, oldest first (single-threaded: `Retry` is a bug).
    fn steal_all<T>(deque: &Deque<T>) -> Vec<T> {
        let mut out = Vec::new();
        loop {
            match deque.steal() {
                Steal::Success(item) => out.push(item),
                Steal::Empty => return out,
                Steal::Retry => panic!("steal returned Retry with no other thread around"),
            }
        }
    }

    /// The `real` counter, to check how far the ring has travelled.
    fn real_index<T>(deque: &Deque<T>) -> u32 {
        unpack(deque.head.load(Ordering::Relaxed)).1
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn new_rejects_non_power_of_two() {
        let _ = Deque::<u8>::new(3);
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn new_rejects_capacity_one() {
        let _ = Deque::<u8>::new(1);
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn new_rejects_capacity_zero() {
        let _ = Deque::<u8>::new(0);
    }

    #[test]
    fn empty_deque() {
        for start in STARTS {
            with_owner::<u32, _>(4, start, |d| {
                assert_eq!(d.capacity(), 4);
                assert_eq!(d.len(), 0);
                assert!(d.is_empty());
                assert_eq!(d.pop(), None);
                assert_eq!(d.steal(), Steal::Empty);
                with_owner::<u32, _>(4, start, |dest| {
                    assert_eq!(dest.steal_batch_from(d), Steal::Empty);
                    assert!(dest.is_empty());
                });
                // Taking the only item leaves the deque empty from both ends.
                d.push(7).unwrap();
                assert_eq!(d.len(), 1);
                assert_eq!(d.pop(), Some(7));
                assert_eq!(d.pop(), None);
                assert_eq!(d.steal(), Steal::Empty);
                d.push(8).unwrap();
                assert_eq!(d.steal(), Steal::Success(8));
                assert_eq!(d.steal(), Steal::Empty);
                assert_eq!(d.pop(), None);
                assert!(d.is_empty());
            });
        }
    }

    #[test]
    fn owner_pops_are_lifo() {
        for start in STARTS {
            with_owner(8, start, |d| {
                for i in 0..8u32 {
                    d.push(i).unwrap();
                    assert_eq!(d.len(), i as usize + 1);
                }
                let popped: Vec<u32> = std::iter::from_fn(|| d.pop()).collect();
                assert_eq!(popped, (0..8).rev().collect::<Vec<_>>());
                assert!(d.is_empty());
            });
        }
    }

    #[test]
    fn steals_are_fifo() {
        for start in STARTS {
            with_owner(8, start, |d| {
                for i in 0..8u32 {
                    d.push(i).unwrap();
                }
                assert_eq!(steal_all(d), (0..8).collect::<Vec<_>>());
                assert_eq!(d.pop(), None);
                assert_eq!(real_index(d), start.wrapping_add(8));
            });
        }
    }

    #[test]
    fn both_ends_meet_in_the_middle() {
        for start in STARTS {
            with_owner(8, start, |d| {
                for i in 0..6u32 {
                    d.push(i).unwrap();
                }
                assert_eq!(d.steal(), Steal::Success(0));
                assert_eq!(d.pop(), Some(5));
                assert_eq!(d.steal(), Steal::Success(1));
                assert_eq!(d.pop(), Some(4));
                assert_eq!(d.len(), 2);
                assert_eq!(d.pop(), Some(3));
                assert_eq!(d.steal(), Steal::Success(2));
                assert_eq!(d.pop(), None);
                assert_eq!(d.steal(), Steal::Empty);
            });
        }
    }

    #[test]
    fn push_into_full_deque_hands_the_item_back() {
        for capacity in [4usize, 256] {
            for start in STARTS {
                with_owner(capacity, start, |d| {
                    for i in 0..capacity {
                        assert_eq!(d.push(i), Ok(()), "push {i} of {capacity}");
                    }
                    assert_eq!(d.len(), capacity);
                    assert_eq!(d.push(capacity), Err(capacity));
                    assert_eq!(d.push(capacity + 1), Err(capacity + 1));
                    assert_eq!(d.len(), capacity);

                    // A pop frees the newest slot.
                    assert_eq!(d.pop(), Some(capacity - 1));
                    assert_eq!(d.push(100_000), Ok(()));
                    assert_eq!(d.push(100_001), Err(100_001));

                    // A steal frees the oldest slot; the ring wraps into it.
                    assert_eq!(d.steal(), Steal::Success(0));
                    assert_eq!(d.push(100_002), Ok(()));
                    assert_eq!(d.push(100_003), Err(100_003));

                    let mut expected: Vec<usize> = (1..capacity - 1).collect();
                    expected.extend([100_000, 100_002]);
                    assert_eq!(steal_all(d), expected);
                });
            }
        }
    }

    /// Runs the indices many times around the ring with a mix of pushes, pops, steals
    /// and failed pushes, checked against a `VecDeque`.
    #[test]
    fn many_cycles_around_the_ring() {
        let capacities: &[usize] = if cfg!(miri) { &[2, 4, 8, 64] } else { &[2, 4, 8, 256] };
        for &capacity in capacities {
            for start in STARTS {
                with_owner(capacity, start, |d| {
                    let mut model = VecDeque::new();
                    let mut next = 0u64;
                    let mut steals = 0usize;
                    let mut round = 0usize;
                    while steals < 10 * capacity + 3 {
                        round += 1;
                        // Push a burst of 1..=5 items (3 on average, against 2 taken
                        // below), so the deque fills up and some pushes do not fit.
                        for _ in 0..1 + round % 5 {
                            let fits = model.len() < capacity;
                            match d.push(next) {
                                Ok(()) => {
                                    assert!(fits, "push succeeded past capacity");
                                    model.push_back(next);
                                }
                                Err(back) => {
                                    assert!(!fits, "push failed with room left");
                                    assert_eq!(back, next);
                                }
                            }
                            next += 1;
                        }
                        assert_eq!(d.len(), model.len());
                        // Take a few from each end.
                        for k in 0..round % 3 + 1 {
                            if (round + k).is_multiple_of(2) {
                                assert_eq!(d.pop(), model.pop_back());
                            } else {
                                let expected = model.pop_front();
                                assert_eq!(d.steal().success(), expected);
                                steals += usize::from(expected.is_some());
                            }
                        }
                        assert_eq!(d.len(), model.len());
                    }
                    assert_eq!(steal_all(d), Vec::from(model));
                    let travelled = real_index(d).wrapping_sub(start) as usize;
                    assert!(travelled > 10 * capacity, "ring travelled only {travelled}");
                });
            }
        }
    }

    #[test]
    fn push_or_spill_moves_the_older_half_out() {
        for capacity in [2usize, 4, 8, 256] {
            for start in STARTS {
                with_owner(capacity, start, |d| {
                    let mut spilled = Vec::new();
                    // While there is room, nothing is spilled.
                    for i in 0..capacity {
                        d.push_or_spill(i, |x| spilled.push(x));
                    }
                    assert!(spilled.is_empty());
                    assert_eq!(d.len(), capacity);

                    // The next push spills the oldest half, oldest first, and keeps the rest
                    // plus the new item.
                    d.push_or_spill(capacity, |x| spilled.push(x));
                    assert_eq!(spilled, (0..capacity / 2).collect::<Vec<_>>());
                    assert_eq!(d.len(), capacity - capacity / 2 + 1);
                    assert_eq!(d.pop(), Some(capacity), "the new item is the newest");
                    assert_eq!(steal_all(d), (capacity / 2..capacity).collect::<Vec<_>>());
                });
            }
        }
    }

    #[test]
    fn steal_batch_takes_the_oldest_and_about_half_of_the_rest() {
        let max = if cfg!(miri) { 20usize } else { 40 };
        for n in 1..=max {
            for start in STARTS {
                with_owner(64, start, |src| {
                    with_owner(64, start.wrapping_add(17), |dest| {
                        for i in 0..n {
                            src.push(i).unwrap();
                        }
                        assert_eq!(dest.steal_batch_from(src), Steal::Success(0));
                        let moved = (n - 1).div_ceil(2);
                        assert_eq!(dest.len(), moved, "n = {n}");
                        assert_eq!(src.len(), n - 1 - moved, "n = {n}");
                        // `dest` got the next oldest items, in order (oldest at its top).
                        assert_eq!(steal_all(dest), (1..=moved).collect::<Vec<_>>());
                        assert_eq!(steal_all(src), (moved + 1..n).collect::<Vec<_>>());
                    });
                });
            }
        }
    }

    #[test]
    fn steal_batch_moves_into_dest_in_pop_order() {
        with_owner(16, 0, |src| {
            with_owner(16, 0, |dest| {
                for i in 0..9u32 {
                    src.push(i).unwrap();
                }
                dest.push(100).unwrap();
                assert_eq!(dest.steal_batch_from(src), Steal::Success(0));
                // 1..=4 moved on top of what `dest` already held; its owner pops newest first.
                let popped: Vec<u32> = std::iter::from_fn(|| dest.pop()).collect();
                assert_eq!(popped, [4, 3, 2, 1, 100]);
                let popped: Vec<u32> = std::iter::from_fn(|| src.pop()).collect();
                assert_eq!(popped, [8, 7, 6, 5]);
            });
        });
    }

    #[test]
    fn steal_batch_is_bounded_by_room_in_dest() {
        for start in STARTS {
            with_owner(32, start, |src| {
                for i in 0..20u32 {
                    src.push(i).unwrap();
                }
                with_owner(4, start, |dest| {
                    for i in 100..103 {
                        dest.push(i).unwrap();
                    }
                    // Room for one more: the oldest comes back, the next one moves.
                    assert_eq!(dest.steal_batch_from(src), Steal::Success(0));
                    assert_eq!(dest.len(), 4);
                    assert_eq!(src.len(), 18);
                    // No room at all: still returns the oldest, moves nothing.
                    assert_eq!(dest.steal_batch_from(src), Steal::Success(2));
                    assert_eq!(dest.len(), 4);
                    assert_eq!(src.len(), 17);
                    assert_eq!(steal_all(dest), [100, 101, 102, 1]);
                });
                assert_eq!(steal_all(src), (3..20).collect::<Vec<_>>());
            });
        }
    }

    /// Pretends a thief has claimed the oldest item but not copied it out yet, and checks
    /// that other thieves back off and the owner does not reuse that slot.
    #[test]
    fn claimed_slot_is_not_reused_until_released() {
        for start in STARTS {
            with_owner(4, start, |d| {
                for i in 0..4u32 {
                    d.push(i).unwrap();
                }
                // What a thief's `claim` leaves behind: `real` one past `steal`.
                assert_eq!(d.claim(start, start), Steal::Success(()));
                assert_eq!(d.len(), 3);
                assert_eq!(d.steal(), Steal::Retry, "a second copier must back off");
                with_owner(4, 0, |dest| assert_eq!(dest.steal_batch_from(d), Steal::Retry));
                assert_eq!(d.push(9), Err(9), "the claimed slot is still being read");
                // The owner can still take the unclaimed items, including the last one.
                assert_eq!(d.pop(), Some(3));
                assert_eq!(d.pop(), Some(2));
                assert_eq!(d.pop(), Some(1));
                assert_eq!(d.pop(), None);
                // `real` is now `start + 2`: two pushes fit, a third would land on the
                // claimed slot's ring position.
                assert_eq!(d.push(10), Ok(()));
                assert_eq!(d.push(11), Ok(()));
                assert_eq!(d.push(12), Err(12));
                // SAFETY: the slot at `start` was claimed above and not released yet.
                assert_eq!(unsafe { d.take_claimed(start) }, 0);
                d.release();
                assert_eq!(d.push(12), Ok(()));
                assert_eq!(d.push(13), Ok(()));
                assert_eq!(d.push(14), Err(14));
                assert_eq!(steal_all(d), [10, 11, 12, 13]);
            });
        }
    }

    /// Records its id in a shared log when dropped.
    struct Tracked {
        id: u32,
        log: Rc<RefCell<Vec<u32>>>,
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.log.borrow_mut().push(self.id);
        }
    }

    #[test]
    fn drop_drops_every_remaining_item_once() {
        for start in STARTS {
            let log = Rc::new(RefCell::new(Vec::new()));
            let item = |id| Tracked { id, log: Rc::clone(&log) };
            let src = deque_at::<Tracked>(8, start);
            let dest = deque_at::<Tracked>(8, start.wrapping_add(5));
            {
                // SAFETY: these are the only owner handles of the two local deques.
                let (o_src, o_dest) = unsafe { (Owner::new(&src), Owner::new(&dest)) };
                for id in 0..8 {
                    assert!(o_src.push(item(id)).is_ok());
                }
                // A rejected push hands the item back without dropping it.
                let back = o_src.push(item(99)).expect_err("deque is full");
                assert_eq!(back.id, 99);
                assert!(log.borrow().is_empty());
                drop(back);
                assert_eq!(*log.borrow(), [99]);

                assert_eq!(o_src.pop().map(|t| t.id), Some(7));
                assert_eq!(o_src.steal().success().map(|t| t.id), Some(0));
                // 1..=6 are left: the batch returns 1 and moves half of 2..=6, i.e. 2..=4.
                assert_eq!(o_dest.steal_batch_from(&src).success().map(|t| t.id), Some(1));
                assert_eq!(o_dest.len(), 3);
                assert_eq!(o_src.len(), 2);
                assert_eq!(o_dest.pop().map(|t| t.id), Some(4));
                // Spilling moves items out without dropping them.
                let mut spilled = Vec::new();
                for id in 10..14 {
                    o_src.push_or_spill(item(id), |t| spilled.push(t));
                }
                assert!(spilled.is_empty());
                let mut log_now = log.borrow().clone();
                log_now.sort_unstable();
                assert_eq!(log_now, [0, 1, 4, 7, 99]);
                drop(spilled);
            }
            // Left inside: 5, 6, 10..14 in `src`; 2, 3 in `dest`.
            drop(src);
            drop(dest);
            let mut dropped = log.borrow().clone();
            dropped.sort_unstable();
            let mut expected: Vec<u32> = (0..8).chain(10..14).chain([99]).collect();
            expected.sort_unstable();
            assert_eq!(dropped, expected, "every item dropped exactly once");
            assert_eq!(Rc::strong_count(&log), 1, "no item leaked");
        }
    }

    #[test]
    fn drop_after_wrap_with_spill() {
        let drops = Rc::new(Cell::new(0usize));
        let mut spilled = Vec::new();
        with_owner(4, u32::MAX - 1, |d| {
            for _ in 0..11 {
                d.push_or_spill(Counted(Rc::clone(&drops)), |c| spilled.push(c));
            }
            // 11 pushes into capacity 4: pushes 5, 7, 9 and 11 each find the deque full
            // and spill two items, leaving three inside.
            assert_eq!(spilled.len(), 8);
            assert_eq!(d.len(), 3);
            assert_eq!(drops.get(), 0);
        });
        assert_eq!(drops.get(), 3, "dropping the deque drops what it holds");
        drop(spilled);
        assert_eq!(drops.get(), 11);
    }

    /// xorshift64*: small, seeded, good enough to pick operations.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn cb_success<T>(s: crossbeam_deque::Steal<T>) -> Option<T> {
        match s {
            crossbeam_deque::Steal::Success(t) => Some(t),
            crossbeam_deque::Steal::Empty => None,
            crossbeam_deque::Steal::Retry => panic!("crossbeam Retry with one thread"),
        }
    }

    fn our_success<T>(s: Steal<T>) -> Option<T> {
        match s {
            Steal::Success(t) => Some(t),
            Steal::Empty => None,
            Steal::Retry => panic!("our Retry with one thread"),
        }
    }

    /// The crossbeam half of the differential test.
    struct Crossbeam {
        worker: crossbeam_deque::Worker<u64>,
        stealer: crossbeam_deque::Stealer<u64>,
        dest: crossbeam_deque::Worker<u64>,
    }

    impl Crossbeam {
        fn new() -> Self {
            let worker = crossbeam_deque::Worker::new_lifo();
            let stealer = worker.stealer();
            Self { worker, stealer, dest: crossbeam_deque::Worker::new_lifo() }
        }

        /// Batch steal from a deque holding `before` (oldest first); checks crossbeam's
        /// own contract, then leaves `before` minus its oldest item in the worker.
        fn batch(&self, before: &[u64], at: &str) {
            let first = cb_success(self.stealer.steal_batch_and_pop(&self.dest));
            if before.is_empty() {
                assert_eq!(first, None, "{at}");
                return;
            }
            // Crossbeam takes a prefix of at most 32 of the oldest items, hands back the
            // newest of them and moves the others to `dest`.
            let mut taken: Vec<u64> = std::iter::from_fn(|| self.dest.pop()).collect();
            taken.extend(first);
            taken.sort_unstable();
            assert!(!taken.is_empty() && taken.len() <= 32, "{at}");
            assert_eq!(first, taken.last().copied(), "{at}");
            assert_eq!(taken[..], before[..taken.len()], "{at}");
            let rest: Vec<u64> = std::iter::from_fn(|| cb_success(self.stealer.steal())).collect();
            assert_eq!(rest[..], before[taken.len()..], "{at}");
            for &x in &before[1..] {
                self.worker.push(x);
            }
        }
    }

    /// Random single-threaded operation sequence, run in lockstep on our deque, on a
    /// `VecDeque` model and, if `with_crossbeam`, on `crossbeam_deque::Worker::new_lifo()`.
    fn differential(seed: u64, ops: usize, start: u32, with_crossbeam: bool) {
        const CAPACITY: usize = 1024;
        let mut rng = Rng::new(seed);
        let ours = deque_at::<u64>(CAPACITY, start);
        let ours_dest = deque_at::<u64>(CAPACITY, start.wrapping_mul(3));
        // SAFETY: one owner handle per local deque, used only on this thread.
        let (ours, ours_dest) = unsafe { (Owner::new(&ours), Owner::new(&ours_dest)) };
        let cb = with_crossbeam.then(Crossbeam::new);
        let mut model = VecDeque::new();
        let mut next = 0u64;
        let (mut max_len, mut batches) = (0, 0);

        for step in 0..ops {
            let at = format!("seed {seed} step {step}");
            // Alternate growing and shrinking phases so the length wanders widely.
            let push_percent = if (step / 400) % 2 == 0 { 70 } else { 35 };
            let roll = rng.below(100);
            if roll < push_percent && model.len() < CAPACITY - 100 {
                assert_eq!(ours.push(next), Ok(()), "{at}: our push failed");
                if let Some(cb) = &cb {
                    cb.worker.push(next);
                }
                model.push_back(next);
                next += 1;
            } else if roll < push_percent + (100 - push_percent) / 2 {
                let expected = model.pop_back();
                assert_eq!(ours.pop(), expected, "{at}: pop");
                if let Some(cb) = &cb {
                    assert_eq!(cb.worker.pop(), expected, "{at}: crossbeam pop");
                }
            } else if rng.below(4) != 0 {
                let expected = model.pop_front();
                assert_eq!(our_success(ours.steal()), expected, "{at}: steal");
                if let Some(cb) = &cb {
                    assert_eq!(cb_success(cb.stealer.steal()), expected, "{at}: crossbeam steal");
                }
            } else {
                batches += 1;
                // Batch sizes and even the returned item differ (crossbeam's LIFO batch
                // hands back the newest item of the stolen prefix, ours the oldest), so
                // check each side's own contract, then consume only the oldest item on
                // both sides and put the rest back in order, keeping them in lockstep.
                let before: Vec<u64> = model.iter().copied().collect();
                let first = our_success(ours_dest.steal_batch_from(&ours));
                assert_eq!(first, before.first().copied(), "{at}: batch");
                if !before.is_empty() {
                    let moved = steal_all(&ours_dest);
                    assert_eq!(moved.len(), (before.len() - 1).div_ceil(2), "{at}");
                    assert_eq!(moved[..], before[1..=moved.len()], "{at}");
                    assert_eq!(steal_all(&ours)[..], before[1 + moved.len()..], "{at}");
                    for &x in &before[1..] {
                        assert_eq!(ours.push(x), Ok(()), "{at}: re-push");
                    }
                    model.pop_front();
                }
                if let Some(cb) = &cb {
                    cb.batch(&before, &at);
                }
            }
            assert_eq!(ours.len(), model.len(), "{at}: len");
            assert_eq!(ours.is_empty(), model.is_empty(), "{at}: is_empty");
            assert!(ours_dest.is_empty(), "{at}");
            if let Some(cb) = &cb {
                assert_eq!(cb.worker.len(), model.len(), "{at}: crossbeam len");
                assert!(cb.dest.is_empty(), "{at}");
            }
            max_len = max_len.max(model.len());
        }
        // The walk really went somewhere.
        assert!(max_len > ops / 40, "seed {seed}: max length only {max_len}");
        assert!(batches > ops / 100, "seed {seed}: only {batches} batch steals");
        // Drain in step so the final contents agree too.
        let model = Vec::from(model);
        assert_eq!(steal_all(&ours), model);
        if let Some(cb) = &cb {
            let rest: Vec<u64> = std::iter::from_fn(|| cb_success(cb.stealer.steal())).collect();
            assert_eq!(rest, model);
        }
    }

    #[test]
    fn differential_against_model() {
        let ops = if cfg!(miri) { 400 } else { 4000 };
        let seeds: &[u64] = if cfg!(miri) { &[5, 0x5EED] } else { &[5, 6, 0x5EED] };
        for (i, &seed) in seeds.iter().enumerate() {
            differential(seed, ops, STARTS[i % STARTS.len()], false);
        }
    }

    // crossbeam-epoch (used by every crossbeam steal) is known to break Stacked Borrows
    // (crossbeam-rs/crossbeam#1181); under Miri run this one with `-Zmiri-tree-borrows`
    // and `--include-ignored`.
    #[test]
    #[cfg_attr(miri, ignore = "crossbeam-epoch fails Stacked Borrows; use -Zmiri-tree-borrows")]
    fn differential_against_crossbeam() {
        let ops = if cfg!(miri) { 400 } else { 4000 };
        let seeds: &[u64] = if cfg!(miri) { &[1, 0xDEAD_BEEF] } else { &[1, 2, 3, 42, 0xDEAD_BEEF, 7777] };
        for (i, &seed) in seeds.iter().enumerate() {
            differential(seed, ops, STARTS[i % STARTS.len()], true);
        }
    }

    /// One owner pushing (spilling when full) and popping, three thieves stealing from it
    /// and from each other; every item must come out exactly once.
    #[test]
    fn concurrent_owner_and_thieves_take_each_item_once() {
        const THIEVES: usize = 3;
        let items: u64 = if cfg!(miri) { 2_000 } else { 1_000_000 };
        let main = Deque::<u64>::new(if cfg!(miri) { 32 } else { 256 });
        let locals: Vec<Deque<u64>> = (0..THIEVES).map(|_| Deque::new(64)).collect();
        let spill = Mutex::new(Vec::new());
        let done = AtomicBool::new(false);

        let (owner_got, thieves_got) = std::thread::scope(|s| {
            let thieves: Vec<_> = (0..THIEVES)
                .map(|i| {
                    let (main, locals, done) = (&main, &locals, &done);
                    s.spawn(move || {
                        // SAFETY: thread `i` is the only one that uses `locals[i]` as owner.
                        let local = unsafe { Owner::new(&locals[i]) };
                        let neighbour = &locals[(i + 1) % THIEVES];
                        let mut got = Vec::new();
                        let (mut stats, mut round) = ([0usize; 3], 0usize);
                        loop {
                            round += 1;
                            let (kind, result) = match round % 4 {
                                0 => (2, neighbour.steal()),
                                1 | 2 => (1, local.steal_batch_from(main)),
                                _ => (0, main.steal()),
                            };
                            match result {
                                Steal::Success(x) => {
                                    got.push(x);
                                    stats[kind] += 1;
                                }
                                Steal::Empty | Steal::Retry => std::thread::yield_now(),
                            }
                            // Leave some behind so the neighbour has something to steal.
                            for _ in 0..2 {
                                got.extend(local.pop());
                            }
                            // `main` only becomes empty for good once `done` is set; our
                            // own deque only fills through us.
                            if done.load(Ordering::Acquire) && main.is_empty() && local.is_empty() {
                                break;
                            }
                        }
                        (got, stats)
                    })
                })
                .collect();

            // This thread is the owner of `main`.
            // SAFETY: no other thread calls `main`'s owner methods; thieves only steal.
            let owner = unsafe { Owner::new(&main) };
            let mut got = Vec::new();
            for x in 0..items {
                if (x / 4096) % 2 == 0 {
                    owner.push_or_spill(x, |y| spill.lock().unwrap().push(y));
                } else {
                    // Every other stretch, wait for the thieves instead of spilling, so
                    // that many items really go through the stealing paths.
                    let mut item = x;
                    while let Err(back) = owner.push(item) {
                        item = back;
                        std::thread::yield_now();
                    }
                }
                if x % 3 == 2 {
                    got.extend(owner.pop());
                }
            }
            done.store(true, Ordering::Release);
            // Drain the rest. `pop` may come back empty-handed while a thief is busy, so
            // only stop once the deque itself reads empty.
            loop {
                match owner.pop() {
                    Some(x) => got.push(x),
                    None if owner.is_empty() => break,
                    None => std::hint::spin_loop(),
                }
            }
            let thieves_got: Vec<_> = thieves.into_iter().map(|t| t.join().unwrap()).collect();
            (got, thieves_got)
        });

        let spilled = spill.into_inner().unwrap();
        let mut all = owner_got.clone();
        all.extend(&spilled);
        for (got, _) in &thieves_got {
            all.extend(got);
        }
        let total = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), total, "some item was taken twice");
        assert_eq!(all.len() as u64, items, "some item was lost");
        assert!(all.iter().copied().eq(0..items));
        assert!(main.is_empty() && locals.iter().all(Deque::is_empty));
        if !cfg!(miri) {
            eprintln!(
                "concurrent: owner popped {}, spilled {}, thieves (got, [steal, batch, neighbour]) {:?}",
                owner_got.len(),
                spilled.len(),
                thieves_got.iter().map(|(g, s)| (g.len(), *s)).collect::<Vec<_>>()
            );
        }
    }
}
