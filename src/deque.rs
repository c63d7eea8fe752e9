//! A fixed-capacity Chase-Lev work-stealing deque with claim-then-read steals.
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
//! # Orderings in one paragraph
//!
//! `bottom` is only written by the owner, always with `Release`, after the slots below it
//! were written; thieves read it with `Acquire`, so any item they are told exists is
//! visible. The owner's pop and a thief's claim form a Dekker pair: the owner stores
//! `bottom` then loads `head`, the thief loads `head`, then `bottom`, then CASes `head`.
//! Each side has a `SeqCst` fence between its store/load of the two words, so at least one
//! of them sees the other; the last remaining item is decided by a CAS on `head`, which
//! exactly one side wins. The copier's final `steal = real` is a `Release` RMW that the
//! owner's `Acquire` load of `head` in `push` pairs with, so the copy out of a slot
//! happens before the owner writes that slot again.

use crate::sync::{AtomicU32, AtomicU64, Ordering, UnsafeCell, fence};
use crossbeam_utils::CachePadded;
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

/// A bounded Chase-Lev deque. One thread (the owner) may call the `unsafe` owner
/// methods; any thread may steal.
pub struct Deque<T> {
    /// `(steal, real)`, see the module docs. Written by thieves and, for the last item,
    /// by the owner.
    head: CachePadded<AtomicU64>,
    /// One past the newest item. Written only by the owner.
    bottom: CachePadded<AtomicU32>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
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
    pub fn new(capacity: usize) -> Self {
        assert!(
            capacity.is_power_of_two() && (2..=1 << 30).contains(&capacity),
            "deque capacity must be a power of two in 2..=2^30, got {capacity}"
        );
        let slots = (0..capacity).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
        Self {
            head: CachePadded::new(AtomicU64::new(0)),
            bottom: CachePadded::new(AtomicU32::new(0)),
            slots,
            mask: capacity as u32 - 1,
        }
    }

    /// How many items the deque can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// A snapshot of the number of items (exact only when no other thread is acting).
    pub fn len(&self) -> usize {
        // Acquire on both: pairs with the owner's Release stores of `bottom` and the
        // thieves' RMWs on `head`; a snapshot only, used for peeking and statistics.
        let (_, real) = unpack(self.head.load(Ordering::Acquire));
        let bottom = self.bottom.load(Ordering::Acquire);
        distance(real, bottom).max(0) as usize
    }

    /// Whether a snapshot of the deque is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline(always)]
    fn slot(&self, index: u32) -> &UnsafeCell<MaybeUninit<T>> {
        // `mask` is `len - 1`, so the index is always in bounds; the compiler sees the
        // bounds check and drops it only sometimes, so keep it cheap rather than unsafe.
        &self.slots[(index & self.mask) as usize]
    }

    /// Pushes `item` at the bottom, or hands it back if the deque is full.
    ///
    /// # Safety
    ///
    /// Only the owner may call this, and never concurrently with another owner method.
    #[inline]
    pub unsafe fn push(&self, item: T) -> Result<(), T> {
        // Relaxed: only the owner (this thread) writes `bottom`.
        let bottom = self.bottom.load(Ordering::Relaxed);
        // Acquire: pairs with a copier's Release when it sets `steal = real`, so its
        // reads of the slots below `steal` happen before we overwrite them.
        let (steal, _) = unpack(self.head.load(Ordering::Acquire));
        if bottom.wrapping_sub(steal) > self.mask {
            return Err(item);
        }
        // SAFETY: the slot at `bottom` is outside `[steal, bottom)`, the only indices a
        // thief may be reading (claimed or about to be claimed below `bottom`), and the
        // ring distance check above keeps it from aliasing one of them. Only the owner
        // writes slots.
        self.slot(bottom).with_mut(|p| unsafe { (*p).write(item) });
        // Release: publishes the slot write to thieves that Acquire-load `bottom`.
        self.bottom.store(bottom.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Pops the newest item.
    ///
    /// # Safety
    ///
    /// Only the owner may call this, and never concurrently with another owner method.
    #[inline]
    pub unsafe fn pop(&self) -> Option<T> {
        let bottom = self.bottom.load(Ordering::Relaxed);
        // Fast empty check without a fence. Relaxed suffices: `real` never passes
        // `bottom`, and only this thread raises `bottom`, so `real == bottom` read at any
        // point means the deque is empty now.
        let (_, real) = unpack(self.head.load(Ordering::Relaxed));
        if real == bottom {
            return None;
        }
        let new_bottom = bottom.wrapping_sub(1);
        // Release, like every store to `bottom` (see module docs).
        self.bottom.store(new_bottom, Ordering::Release);
        // SeqCst fence: the owner's half of the Dekker pair. Either a thief that claims
        // after this point sees the lowered `bottom`, or we see its claim below.
        #[cfg(not(fanout_mutant_deque))]
        fence(Ordering::SeqCst);
        let head = self.head.load(Ordering::Acquire);
        let (steal, real) = unpack(head);
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
            // by a push of ours.
            return Some(self.slot(new_bottom).with(|p| unsafe { (*p).assume_init_read() }));
        }
        // The last item: race the thieves for it with a CAS on `real`. If no thief is
        // copying (`steal == real`), `steal` moves along with `real`.
        let next = real.wrapping_add(1);
        let new_head = if steal == real { pack(next, next) } else { pack(steal, next) };
        // AcqRel: the CAS decides ownership of the slot against thieves' CASes.
        let won = self
            .head
            .compare_exchange(head, new_head, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        // Either way the deque is now empty with `bottom == real`.
        self.bottom.store(bottom, Ordering::Release);
        if won {
            // SAFETY: we won the CAS, so no thief claimed this index; it holds an item
            // we pushed.
            Some(self.slot(new_bottom).with(|p| unsafe { (*p).assume_init_read() }))
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
        #[cfg(not(fanout_mutant_deque))]
        fence(Ordering::SeqCst);
        // Acquire: pairs with the owner's Release store of `bottom`, making the slot
        // contents below it visible.
        let bottom = self.bottom.load(Ordering::Acquire);
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
        // overwrite it because `steal <= index` until we release.
        self.slot(index).with(|p| unsafe { (*p).assume_init_read() })
    }

    /// Ends a copy: sets `steal = real`, whatever `real` is now (the owner may have
    /// taken the last item meanwhile).
    #[inline]
    fn release(&self) {
        // Acquire on the load and AcqRel on the CAS: the CAS is the Release that the
        // owner's Acquire in `push` pairs with, ordering our slot reads before its
        // overwrites.
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let (_, real) = unpack(head);
            match self.head.compare_exchange_weak(
                head,
                pack(real, real),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
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
    /// newest items local.
    ///
    /// # Safety
    ///
    /// Only the owner may call this, and never concurrently with another owner method.
    pub unsafe fn push_or_spill(&self, item: T, mut spill: impl FnMut(T)) {
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
    pub fn steal(&self) -> Steal<T> {
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
    /// `dest` stays blocked from other thieves' copies only as long as the batch.
    ///
    /// # Safety
    ///
    /// The calling thread must be the owner of `dest` (it pushes into it), and `dest`
    /// must not be `self`.
    pub unsafe fn steal_batch_and_pop(&self, dest: &Deque<T>) -> Steal<T> {
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
            // SAFETY: indices in `[real, bottom)` hold items nobody has taken.
            self.slot(i).with_mut(|p| unsafe { (*p).assume_init_drop() });
            i = i.wrapping_add(1);
        }
    }
}

impl<T> std::fmt::Debug for Deque<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deque").field("len", &self.len()).field("capacity", &self.capacity()).finish()
    }
}
