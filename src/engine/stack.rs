//! A participant's private follow-on stack, with its newest item held outside the
//! buffer.
//!
//! A `Vec` used as a stack sends every item through memory: a task pushes its child
//! and the next `pop` loads it straight back, so a chain of follow-ons waits on a
//! store-to-load forwarding per item. Here the newest item lives in the `top` field,
//! which the optimizer can keep in a register in the run's loop (when the task's
//! closure is inlined there and leaves it registers to spare). A push writes the old
//! top into the buffer and takes the new item's place; a pop hands out the top and
//! reloads the next one from the buffer. The buffer traffic is still there, but the
//! item that runs next no longer waits for it.
//!
//! Both paths are branch-free apart from a push's mark check (where a `Vec` checks its
//! capacity) and a pop's emptiness check: slot 0 of the buffer is scratch, written by a push onto an empty stack (the
//! uninitialized `top` goes there) and read back by the pop that empties it.
//!
//! Items, oldest first: `buf[1..len]`, then `top` (when `len > 0`).
//!
//! Sharing the oldest items (`drain_oldest`) moves `buf` up past them instead of moving
//! the rest down, so a publication costs what it hands out, not what the stack holds.
//! The slots left behind below `buf` are reclaimed when the buffer fills: moved down
//! if they are at least as many as the live ones (which the items drained since have
//! paid for), or kept while the allocation doubles.
//!
//! A task that pushes a long burst (one root pushing millions of items) would keep
//! them all out of reach until it returns. So the push path has a *mark* besides the
//! capacity: every `PUSHES_BETWEEN_MARKS` pushes of a burst a push reaches it, and if
//! the stack's item loop registered a [`BurstSharer`] on this thread
//! ([`BurstScope`]), the push asks it there how many of the oldest items to hand out.
//! The mark takes the capacity's place in the push's one check, and the slow path
//! finds the sharer in a thread-local and takes and returns the stack's fields by
//! value, so an item loop that keeps the stack in registers pays nothing for it.

#[cfg(not(loom))]
use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ptr::NonNull;

pub(crate) struct PrivateStack<T> {
    /// The stack's base: `dead` slots into the allocation of a `Vec<MaybeUninit<T>>`
    /// of capacity `dead + cap` (kept as raw parts so that growing takes and returns
    /// plain values, and the hot fields can stay in registers). Slot `i` of `buf`, for
    /// `1 <= i < len`, holds the item `i`-th from the bottom (1-based).
    buf: NonNull<MaybeUninit<T>>,
    /// Slots from `buf` to the end of the allocation.
    cap: usize,
    /// Number of items, `top` included.
    len: usize,
    /// The newest item; initialized exactly when `len > 0`.
    top: MaybeUninit<T>,
    /// Slots of the allocation below `buf`, left by `drain_oldest` (none hold items).
    dead: usize,
    /// Where the next push takes the slow path: `len <= mark <= cap`, and at most
    /// `PUSHES_BETWEEN_MARKS` above `len` when it was set.
    mark: usize,
}

/// Most pushes from one mark to the next (see the module docs).
pub(crate) const PUSHES_BETWEEN_MARKS: usize = 1024;

/// What a stack does with its oldest items when a burst of pushes reaches its mark.
pub(crate) trait BurstSharer<T> {
    /// How many of the stack's `private` oldest items to hand out now (0: none; a
    /// count that would not leave the newest item hands out none).
    fn how_many(&self, private: usize) -> usize;
    /// Takes the items handed out, oldest first. Must not panic: the process aborts
    /// if it does (the pushing stack's fields, held by value meanwhile, still claim
    /// the items).
    fn take(&self, items: Vec<T>);
}

/// A `BurstSharer` registered for one stack on this thread (see `BurstScope`).
#[derive(Clone, Copy)]
struct Registration {
    /// The address where the stack's allocation starts: no other live allocation
    /// starts there, so a push on any other stack (of another item type, maybe) never
    /// takes this sharer for its own. Kept up to date when the stack reallocates, which
    /// only its pushes do while it is registered, and they find the registration
    /// current (see `BurstScope`).
    allocation: usize,
    sharer: NonNull<()>,
    /// `S::how_many` for the registered `S`.
    how_many: unsafe fn(NonNull<()>, usize) -> usize,
    /// `S::take` for the registered `S`, given a `ManuallyDrop<Vec<T>>` to move from.
    take: unsafe fn(NonNull<()>, NonNull<()>),
}

// Not under loom: its threads share the std thread-locals of the thread that runs the
// model, so bursts are not shared there (the publication itself is the checkpoint's).
#[cfg(not(loom))]
thread_local! {
    /// The sharer of the stack whose item loop runs on this thread, if any.
    static BURST_SHARER: Cell<Option<Registration>> = const { Cell::new(None) };
}

/// While alive, pushes on one stack reaching their mark ask a `BurstSharer` what to
/// hand out (see the module docs). A thread has one registration at a time: a scope
/// entered inside another (a nested run's, inside a task of an outer run) registers
/// nothing, so the outer registration stays current, and with it the guarantee that
/// its allocation is its stack's (see `Registration::allocation`).
pub(crate) struct BurstScope<'a> {
    /// Whether this scope registered its sharer (and so removes it when dropped).
    registered: bool,
    /// Borrows the sharer, and stays on its thread.
    _sharer: PhantomData<&'a *const ()>,
}

impl<'a> BurstScope<'a> {
    /// Registers `sharer` for `stack` on this thread, if the stack has an allocation
    /// of its own (a stack with items does; zero-sized items are never shared this
    /// way) and the thread has no registration yet.
    ///
    /// # Safety
    ///
    /// The scope must be dropped, not forgotten (the registration points to
    /// `sharer`). Until it drops, `stack` keeps its allocation: it is not dropped,
    /// replaced, or turned into a `Vec` or buffer, and it is pushed only on this thread
    /// (its pushes here may move it to a larger allocation: they update the
    /// registration, which a push on another thread would not see).
    pub(crate) unsafe fn enter<T, S: BurstSharer<T>>(stack: &PrivateStack<T>, sharer: &'a S) -> Self {
        /// # Safety
        /// `sharer` points to a live `S`.
        unsafe fn how_many<T, S: BurstSharer<T>>(sharer: NonNull<()>, private: usize) -> usize {
            // SAFETY: the caller's promise.
            unsafe { sharer.cast::<S>().as_ref() }.how_many(private)
        }
        /// # Safety
        /// `sharer` points to a live `S`; `items` to a `ManuallyDrop<Vec<T>>` that is
        /// never used again.
        unsafe fn take<T, S: BurstSharer<T>>(sharer: NonNull<()>, items: NonNull<()>) {
            // SAFETY: the caller's promise.
            let items = ManuallyDrop::into_inner(unsafe { items.cast::<ManuallyDrop<Vec<T>>>().read() });
            // SAFETY: the caller's promise.
            unsafe { sharer.cast::<S>().as_ref() }.take(items)
        }
        let registration = Registration {
            allocation: stack.allocation_start(),
            sharer: NonNull::from(sharer).cast(),
            how_many: how_many::<T, S>,
            take: take::<T, S>,
        };
        let registered = size_of::<T>() != 0 && stack.allocation() != 0 && {
            let outer = swap_registration(Some(registration));
            if outer.is_some() {
                swap_registration(outer);
            }
            outer.is_none()
        };
        Self { registered, _sharer: PhantomData }
    }
}

impl Drop for BurstScope<'_> {
    fn drop(&mut self) {
        if self.registered {
            swap_registration(None);
        }
    }
}

/// Sets this thread's registration, returning the one it replaces.
fn swap_registration(registration: Option<Registration>) -> Option<Registration> {
    #[cfg(not(loom))]
    return BURST_SHARER.try_with(|current| current.replace(registration)).ok().flatten();
    #[cfg(loom)]
    {
        let _ = registration;
        None
    }
}

// SAFETY: the stack owns its items and its buffer outright, as a `Vec<T>` does; the raw
// pointer is only ever used through `&mut self` (or `&self` reading `len`), so sending or
// sharing the stack is sending or sharing `T`s.
unsafe impl<T: Send> Send for PrivateStack<T> {}
// SAFETY: as above; `&self` gives access to nothing but `len`.
unsafe impl<T: Sync> Sync for PrivateStack<T> {}

impl<T> PrivateStack<T> {
    pub(crate) fn new() -> Self {
        let mut empty = ManuallyDrop::new(Vec::new());
        Self::from_parts(&mut empty)
    }

    fn from_parts(buf: &mut ManuallyDrop<Vec<MaybeUninit<T>>>) -> Self {
        // SAFETY: a `Vec`'s pointer is never null.
        let ptr = unsafe { NonNull::new_unchecked(buf.as_mut_ptr()) };
        let cap = buf.capacity();
        Self { buf: ptr, cap, len: 0, top: MaybeUninit::uninit(), dead: 0, mark: next_mark(0, cap) }
    }

    /// An empty stack that starts in `buffer`'s allocation (a spare from an earlier run).
    pub(crate) fn in_buffer(buffer: Vec<MaybeUninit<T>>) -> Self {
        let mut buffer = ManuallyDrop::new(buffer);
        buffer.clear();
        Self::from_parts(&mut buffer)
    }

    /// A stack of `items` in their own allocation, with no item moved but the first:
    /// it becomes the top (slot 0, where it was, is the scratch slot from then on), so
    /// pops return the first item, then the others newest first. Taking a stolen batch
    /// this way costs nothing per item.
    pub(crate) fn from_vec(items: Vec<T>) -> Self {
        let mut items = ManuallyDrop::new(items);
        let (len, cap) = (items.len(), items.capacity());
        // SAFETY: the raw parts of `items`, which is never used again; `MaybeUninit<T>`
        // has `T`'s layout, so the allocation is that of a `Vec<MaybeUninit<T>>` of the
        // same capacity, and length 0 makes no claim about the slots.
        let mut buffer = ManuallyDrop::new(unsafe { Vec::from_raw_parts(items.as_mut_ptr().cast(), 0, cap) });
        let mut stack = Self::from_parts(&mut buffer);
        if len > 0 {
            // SAFETY: slot 0 holds the first item (`len > 0`); it moves to `top` and
            // the slot is scratch from now on. Slots `1..len` hold the other items, in
            // their order, which is where the stack keeps the items below the top.
            stack.top = unsafe { stack.buf.as_ptr().read() };
            stack.len = len;
            stack.mark = next_mark(len, cap);
        }
        stack
    }

    /// The stack's items as a `Vec` in the stack's own allocation: the newest first,
    /// then the others oldest first, so that `from_vec` makes a stack that pops them in
    /// the same order as this one. Moves only the newest item, unless `drain_oldest`
    /// left dead slots below the others (they then move down over them).
    pub(crate) fn into_vec(self) -> Vec<T> {
        let this = ManuallyDrop::new(self);
        // SAFETY: the allocation starts `dead` slots below the base (see the fields).
        let start = unsafe { this.buf.sub(this.dead) };
        if this.len > 0 {
            // SAFETY: `top` holds the newest item (`len > 0`) and slot 0 is scratch (see
            // the module docs): the item moves there, and `this` is never dropped, so
            // it is not read twice.
            unsafe { this.buf.as_ptr().write(std::ptr::read(&this.top)) };
        }
        if this.dead > 0 {
            // SAFETY: slots `0..len` of the base and the `len` slots from `start` lie in
            // the allocation of `dead + cap` slots; `copy` allows the overlap, and the
            // slots are `MaybeUninit`, so this is a bitwise move.
            unsafe { std::ptr::copy(this.buf.as_ptr(), start.as_ptr(), this.len) };
        }
        // SAFETY: `start` and `dead + cap` are the raw parts of the stack's `Vec` (see
        // `Drop`), handed on exactly once since `this` is never dropped; `T` has the
        // layout of `MaybeUninit<T>`; the first `len` slots now hold the items.
        unsafe { Vec::from_raw_parts(start.as_ptr().cast::<T>(), this.len, this.dead + this.cap) }
    }

    /// The stack's allocation, emptied, for a later stack to start in; `None` if the
    /// stack still holds items (they are dropped here then, with the allocation).
    pub(crate) fn into_buffer(self) -> Option<Vec<MaybeUninit<T>>> {
        if self.len != 0 {
            return None;
        }
        let this = ManuallyDrop::new(self);
        // SAFETY: `buf - dead` and `dead + cap` are the raw parts of a `Vec` (see
        // `Drop`); the stack is empty and never dropped, so the allocation passes to the
        // returned `Vec` alone, with length 0.
        Some(unsafe { Vec::from_raw_parts(this.buf.as_ptr().sub(this.dead), 0, this.dead + this.cap) })
    }

    /// A stack whose pops return `items` in the iterator's order (the first item on
    /// top). The items are moved once, into the stack's own buffer (`buffer`'s
    /// allocation, grown if need be): straight into their places when the iterator
    /// says exactly how many it yields, else in order and then reversed.
    pub(crate) fn from_iter_first_on_top(items: impl IntoIterator<Item = T>, buffer: Vec<MaybeUninit<T>>) -> Self {
        let items = items.into_iter();
        // Until the iterator is done, the items written so far are dropped if it panics.
        let mut fill = Filling { slots: buffer, filled: 0..0 };
        fill.slots.clear();
        let (fewest, most) = items.size_hint();
        let mut slots = if most == Some(fewest) && fewest < isize::MAX as usize {
            // Slot 0 is the scratch slot (see the module docs); the first item goes to
            // the highest slot. An iterator that breaks its size hint still gets every
            // item in place, through the slower fix-ups below.
            fill.slots.reserve(fewest + 1);
            // SAFETY: the capacity is reserved, and `MaybeUninit` slots need no
            // initialization.
            unsafe { fill.slots.set_len(fewest + 1) };
            fill.filled = fewest + 1..fewest + 1;
            let base = fill.slots.as_mut_ptr();
            let mut beyond = Vec::new();
            // Internal iteration, and a plain write per item.
            items.for_each(|item| {
                let next = fill.filled.start - 1;
                if next >= 1 {
                    // SAFETY: `1 <= next <= fewest`, inside the `fewest + 1` slots; the
                    // slot is empty (slots fill downwards from `fewest`).
                    unsafe { base.add(next).write(MaybeUninit::new(item)) };
                    fill.filled.start = next;
                } else {
                    beyond.push(item);
                }
            });
            let placed = fewest + 1 - fill.filled.start;
            let mut slots = fill.disarm();
            if placed < fewest {
                // Fewer than promised: close the unfilled gap above the scratch slot.
                slots.drain(1..=fewest - placed);
            }
            if !beyond.is_empty() {
                // More than promised: the later items go below the others.
                slots.splice(1..1, beyond.into_iter().rev().map(MaybeUninit::new));
            }
            slots
        } else {
            fill.slots.reserve(fewest.saturating_add(1));
            fill.slots.push(MaybeUninit::uninit());
            for item in items {
                fill.slots.push(MaybeUninit::new(item));
                fill.filled = 1..fill.slots.len();
            }
            let mut slots = fill.disarm();
            slots[1..].reverse();
            slots
        };
        let top = if slots.len() > 1 { slots.pop() } else { None };
        let len = slots.len() - 1 + usize::from(top.is_some());
        let mut stack = Self::from_parts(&mut ManuallyDrop::new(slots));
        // `buf[1..len - 1]` hold the items below the top, oldest (the last seed) first.
        stack.len = len;
        stack.mark = next_mark(len, stack.cap);
        stack.top = top.unwrap_or(MaybeUninit::uninit());
        stack
    }

    /// Moves up to `most` items from `items` into this empty stack, the first on top,
    /// and returns how many it moved (0 only when `items` had none left). Reuses the
    /// stack's allocation.
    pub(crate) fn refill_first_on_top(&mut self, items: &mut impl Iterator<Item = T>, most: usize) -> usize {
        assert_eq!(self.len, 0, "refill_first_on_top needs an empty stack");
        let buffer = std::mem::take(self).into_buffer().unwrap_or_default();
        *self = Self::from_iter_first_on_top(items.by_ref().take(most), buffer);
        self.len
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Slots in the allocation, dead ones included.
    #[inline]
    pub(crate) fn allocation(&self) -> usize {
        self.dead + self.cap
    }

    /// The address where the stack's allocation starts (see `Registration`).
    fn allocation_start(&self) -> usize {
        self.buf.as_ptr().wrapping_sub(self.dead).addr()
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, item: T) {
        if self.len == self.mark {
            (self.buf, self.cap, self.dead, self.len, self.mark) = pass_mark(self.buf, self.cap, self.dead, self.len);
        }
        // SAFETY: `len < mark <= cap` (the mark was moved above if reached), so slot
        // `len` is inside the allocation. Copying the `MaybeUninit` top is allowed
        // whether or not it holds an item; if it does (`len > 0`), ownership moves to
        // slot `len` (item `len` from the bottom), since `top` is overwritten just
        // below without a drop.
        unsafe { self.buf.as_ptr().add(self.len).write(std::ptr::read(&self.top)) };
        self.top = MaybeUninit::new(item);
        self.len += 1;
    }

    #[inline(always)]
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        // SAFETY: `len > 0`, so `top` holds an item; it is moved out here and replaced
        // below, so it is not read twice.
        let item = unsafe { self.top.assume_init_read() };
        self.len -= 1;
        // SAFETY: `len <= mark` always holds (a push moves the mark before it would
        // write past it), so after the decrement `len < mark`. Telling the optimizer lets
        // it drop the mark check, and the call to `pass_mark`, from a push that follows
        // a pop: a chain of follow-ons then runs without a call in its loop.
        unsafe { std::hint::assert_unchecked(self.len < self.mark) };
        // SAFETY: slot `len` was written by the push that made the stack `len + 1`
        // long (or, in a stack made by `from_vec`, by the `Vec`), and `len < mark <= cap`.
        // It holds the next item when `len > 0` (moving it to `top` leaves the slot
        // logically empty) and scratch when `len == 0`.
        self.top = unsafe { self.buf.as_ptr().add(self.len).read() };
        Some(item)
    }

    /// Removes the `count` oldest items (`count < len`) and gives them to `f`, oldest
    /// first. If `f` panics, the items it has not received stay in the stack, in order.
    /// Costs `count` moves, whatever the stack holds.
    pub(crate) fn drain_oldest(&mut self, count: usize, mut f: impl FnMut(T)) {
        assert!(count < self.len, "drain_oldest must leave the top item");
        // The guard moves the base past the items read out when it drops, normally or
        // while unwinding; `f` cannot reach the stack meanwhile.
        let mut taken = RaiseBase { stack: self, read: 0 };
        while taken.read < count {
            // SAFETY: `read + 1 <= count < len`, so slot `read + 1` holds an item; it is
            // read exactly once, since `read` moves past it before `f` can panic.
            let item = unsafe { taken.stack.buf.as_ptr().add(taken.read + 1).read().assume_init() };
            taken.read += 1;
            f(item);
        }
    }

    /// Removes the `count` oldest items (`count < len`) into a `Vec`, oldest first, with
    /// one copy.
    pub(crate) fn split_off_oldest(&mut self, count: usize) -> Vec<T> {
        assert!(count < self.len, "split_off_oldest must leave the top item");
        // SAFETY: `count < len`, so slots `1..=count` hold the `count` oldest items;
        // `copy_out` moves them, or leaves them if it panics (allocating). Nothing
        // below can panic before the base moves past them.
        let oldest = unsafe { copy_out(self.buf, count) };
        // SAFETY: `count < len <= cap`, so the new base stays inside the allocation.
        self.buf = unsafe { self.buf.add(count) };
        self.cap -= count;
        self.len -= count;
        self.mark -= count;
        self.dead += count;
        oldest
    }

    /// Drops every item. A panicking `Drop` of one item still drops the others (and
    /// the panic continues from here).
    pub(crate) fn clear(&mut self) {
        if self.len == 0 {
            return;
        }
        let below_top = self.len - 1;
        self.len = 0;
        // SAFETY: the stack held `below_top + 1` items; `len` is 0 now, so none of
        // them can be reached again. Dropping the top in a guard keeps it dropped
        // even if an item below panics.
        unsafe {
            let top = DropOnExit(self.top.as_mut_ptr());
            let rest = std::ptr::slice_from_raw_parts_mut(self.buf.as_ptr().add(1).cast::<T>(), below_top);
            std::ptr::drop_in_place(rest);
            drop(top);
        }
    }
}

/// A buffer being filled from an iterator, whose `filled` slots hold items: if the
/// iterator panics, they are dropped here rather than leaked with the buffer.
struct Filling<T> {
    slots: Vec<MaybeUninit<T>>,
    filled: std::ops::Range<usize>,
}

impl<T> Filling<T> {
    /// The buffer, once the iterator is done: its items now belong to the caller.
    fn disarm(mut self) -> Vec<MaybeUninit<T>> {
        self.filled = 0..0;
        std::mem::take(&mut self.slots)
    }
}

impl<T> Drop for Filling<T> {
    fn drop(&mut self) {
        for slot in &mut self.slots[self.filled.clone()] {
            // SAFETY: the filler sets `filled` to exactly the slots it has written (and
            // `disarm` empties it before anyone else takes the items), so each of these
            // holds an item that nobody else owns.
            unsafe { slot.assume_init_drop() };
        }
    }
}

/// The end of `drain_oldest`: slots `1..=read` of the buffer have been read out;
/// moves the base up by `read`, so that the last of them becomes the scratch slot.
struct RaiseBase<'s, T> {
    stack: &'s mut PrivateStack<T>,
    read: usize,
}

impl<T> Drop for RaiseBase<'_, T> {
    fn drop(&mut self) {
        let stack = &mut *self.stack;
        // SAFETY: `read < len <= cap`, so the new base stays inside the allocation.
        stack.buf = unsafe { stack.buf.add(self.read) };
        stack.cap -= self.read;
        stack.len -= self.read;
        stack.mark -= self.read;
        stack.dead += self.read;
    }
}

/// Drops the pointed-to value when it goes out of scope, unwinding included.
struct DropOnExit<T>(*mut T);

impl<T> Drop for DropOnExit<T> {
    fn drop(&mut self) {
        // SAFETY: built only in `clear`, over an item it has already made unreachable.
        unsafe { std::ptr::drop_in_place(self.0) }
    }
}

impl<T> Drop for PrivateStack<T> {
    fn drop(&mut self) {
        // SAFETY: `buf - dead` and `dead + cap` are the raw parts of a `Vec` (see
        // `from_parts`, `grow` and `RaiseBase`), given back exactly once; its length 0
        // drops no element. Rebuilt first, so the buffer is freed even if an item's
        // `Drop` panics below.
        let _buffer = unsafe { Vec::from_raw_parts(self.buf.as_ptr().sub(self.dead), 0, self.dead + self.cap) };
        self.clear();
    }
}

impl<T> Default for PrivateStack<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The mark for a stack of `len` items in `cap` slots (see `PrivateStack::mark`).
fn next_mark(len: usize, cap: usize) -> usize {
    cap.min(len.saturating_add(PUSHES_BETWEEN_MARKS))
}

/// The push's slow path, for a stack of `len` items at its mark: hands out the oldest
/// items its registered sharer asks for (see `BurstScope`), grows the stack if it is
/// full, and sets the next mark. Takes and returns the stack's fields (base, slots,
/// dead slots, length, mark; see `PrivateStack`). Out of line and cold, and by value,
/// so the push path stays short and the stack's address is never taken.
#[cold]
#[inline(never)]
fn pass_mark<T>(
    mut buf: NonNull<MaybeUninit<T>>,
    mut cap: usize,
    mut dead: usize,
    mut len: usize,
) -> (NonNull<MaybeUninit<T>>, usize, usize, usize, usize) {
    let start = buf.as_ptr().wrapping_sub(dead).addr();
    let registered = swap_registration(None);
    // Ours only if registered for this allocation: the one live allocation starting
    // there, which belongs to a `PrivateStack<T>` (see `BurstScope::enter`).
    let ours = registered.filter(|r| r.allocation == start);
    // Armed once items have left: from then until this returns, the caller's fields
    // still claim them, so a panic (from `take`, or from `grow` below) must not unwind
    // into it.
    let mut items_out = None;
    if let Some(sharer) = ours {
        // SAFETY: a registration's sharer lives while it is registered (see
        // `BurstScope::enter`).
        let count = unsafe { (sharer.how_many)(sharer.sharer, len) };
        if count > 0 && count < len {
            // SAFETY: `count < len`, so slots `1..=count` hold the `count` oldest items.
            // `copy_out` moves them into a `Vec`, or leaves them if it panics.
            let items = ManuallyDrop::new(unsafe { copy_out(buf, count) });
            // SAFETY: `count < len <= cap`, so the new base stays inside the allocation.
            buf = unsafe { buf.add(count) };
            cap -= count;
            len -= count;
            dead += count;
            items_out = Some(AbortOnUnwind);
            // SAFETY: the sharer is live (as above), and was registered for this
            // stack, so for a `PrivateStack<T>`: `take` reads a `ManuallyDrop<Vec<T>>`
            // from `items`, which is not used again.
            unsafe { (sharer.take)(sharer.sharer, NonNull::from(&items).cast()) };
        }
    }
    if len == cap {
        (buf, cap, dead) = grow(buf, cap, dead);
    }
    std::mem::forget(items_out);
    let moved = registered.map(|r| match ours {
        // The stack may have moved to a new allocation.
        Some(_) => Registration { allocation: buf.as_ptr().wrapping_sub(dead).addr(), ..r },
        None => r,
    });
    swap_registration(moved);
    (buf, cap, dead, len, next_mark(len, cap))
}

/// Moves the `count` items in slots `1..=count` of `buf` into a new `Vec`, in order.
///
/// # Safety
///
/// Slots `1..=count` of `buf` hold items, which the caller gives up if this returns
/// (it keeps them if this panics: nothing is copied before the allocation succeeds).
unsafe fn copy_out<T>(buf: NonNull<MaybeUninit<T>>, count: usize) -> Vec<T> {
    let mut items = Vec::with_capacity(count);
    // SAFETY: the slots hold items (the caller's promise), and the new allocation
    // cannot overlap them; `set_len` covers exactly the slots copied.
    unsafe {
        std::ptr::copy_nonoverlapping(buf.as_ptr().add(1).cast::<T>(), items.as_mut_ptr(), count);
        items.set_len(count);
    }
    items
}

/// Aborts the process if dropped, which only unwinding does (see `pass_mark`).
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        std::process::abort();
    }
}

/// Takes a full stack's base, slots and dead slots (see `PrivateStack`) and returns
/// them with room for at least one more item: the live slots moved down over the dead
/// ones if those are at least as many, or else a doubled allocation.
fn grow<T>(buf: NonNull<MaybeUninit<T>>, cap: usize, dead: usize) -> (NonNull<MaybeUninit<T>>, usize, usize) {
    // SAFETY: the stack's allocation starts `dead` slots below its base.
    let start = unsafe { buf.sub(dead) };
    if dead != 0 && dead >= cap {
        // Moving `cap` slots down costs no more than the `dead >= cap` items that
        // `drain_oldest` handed out since the last reclaim, so pushes stay amortized
        // O(1). SAFETY: both ranges lie in the allocation of `dead + cap` slots; `copy`
        // allows the overlap; the slots are `MaybeUninit`, so moving them is a bitwise
        // copy that leaves the old places dead.
        unsafe { std::ptr::copy(buf.as_ptr(), start.as_ptr(), cap) };
        return (start, cap + dead, 0);
    }
    let total = dead + cap;
    // SAFETY: `start` and `total` are the raw parts of a `Vec` whose allocation the
    // stack owns; it is handed back below, with the stack's fields replaced by the new
    // parts. `MaybeUninit` slots need no initialization, so length `total` is valid.
    let mut vec = ManuallyDrop::new(unsafe { Vec::from_raw_parts(start.as_ptr(), total, total) });
    // Doubles, like a `Vec`; `reserve` panics on overflow before anything changes.
    vec.reserve(usize::max(total, 16));
    // SAFETY: a `Vec`'s pointer is never null, and the base keeps its distance `dead`
    // from the start, inside the (larger) allocation.
    let new_start = unsafe { NonNull::new_unchecked(vec.as_mut_ptr()) };
    (unsafe { new_start.add(dead) }, vec.capacity() - dead, dead)
}

#[cfg(test)]
mod tests {
    use super::PrivateStack;
    use crate::test_util::Counted;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn lifo_like_a_vec() {
        let mut s = PrivateStack::new();
        let mut v = Vec::new();
        let mut x = 12345u64;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 7 {
                0..=3 => {
                    s.push(x);
                    v.push(x);
                }
                4 | 5 => assert_eq!(s.pop(), v.pop()),
                _ => {
                    if v.len() >= 2 {
                        let n = (x as usize / 7) % (v.len() - 1) + 1;
                        let got = if x.is_multiple_of(2) {
                            let mut got = Vec::new();
                            s.drain_oldest(n, |i| got.push(i));
                            got
                        } else {
                            s.split_off_oldest(n)
                        };
                        assert_eq!(got, v.drain(..n).collect::<Vec<_>>());
                    }
                }
            }
            assert_eq!(s.len(), v.len());
        }
        let mut rest = Vec::new();
        while let Some(i) = s.pop() {
            rest.push(i);
        }
        rest.reverse();
        assert_eq!(rest, v);
        assert_eq!(s.pop(), None);
    }

    #[test]
    fn a_stack_taken_from_a_vec_pops_the_first_then_the_newest() {
        let mut v = Vec::with_capacity(6);
        v.extend([1u64, 2, 3, 4]);
        let mut s = PrivateStack::from_vec(v);
        assert_eq!((s.len(), s.allocation()), (4, 6), "the vec's allocation, not a copy");
        assert_eq!(s.pop(), Some(1));
        assert_eq!(s.pop(), Some(4));
        // Pushes go on top, past the vec's capacity too.
        for x in 10..20 {
            s.push(x);
        }
        let mut rest = Vec::new();
        while let Some(x) = s.pop() {
            rest.push(x);
        }
        assert_eq!(rest, [19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 3, 2]);
        // Sharing the oldest works as on any stack.
        let mut s = PrivateStack::from_vec(vec![1u64, 2, 3, 4, 5]);
        let mut oldest = Vec::new();
        s.drain_oldest(2, |x| oldest.push(x));
        assert_eq!(oldest, [2, 3]);
        assert_eq!((s.pop(), s.pop(), s.pop(), s.pop()), (Some(1), Some(5), Some(4), None));
        // Empty vecs, with and without an allocation.
        assert_eq!(PrivateStack::<u64>::from_vec(Vec::new()).pop(), None);
        let mut s = PrivateStack::from_vec(Vec::<u64>::with_capacity(3));
        assert_eq!(s.pop(), None);
        s.push(7);
        assert_eq!(s.pop(), Some(7));
        // Zero-sized items.
        let mut s = PrivateStack::from_vec(vec![(); 3]);
        assert_eq!((s.pop(), s.pop(), s.pop(), s.pop()), (Some(()), Some(()), Some(()), None));
    }

    #[test]
    fn a_stack_into_a_vec_and_back_pops_in_the_same_order() {
        let mut s = PrivateStack::new();
        (0..10u64).for_each(|x| s.push(x));
        // Dead slots below the base, which the `Vec` must not start at.
        let mut oldest = Vec::new();
        s.drain_oldest(3, |x| oldest.push(x));
        assert_eq!(oldest, [0, 1, 2]);
        let v = s.into_vec();
        assert_eq!(v, [9, 3, 4, 5, 6, 7, 8], "the newest, then the rest oldest first");
        let mut s = PrivateStack::from_vec(v);
        let popped: Vec<u64> = std::iter::from_fn(|| s.pop()).collect();
        assert_eq!(popped, [9, 8, 7, 6, 5, 4, 3]);
        assert!(PrivateStack::<u64>::new().into_vec().is_empty());
        let drops = Rc::new(Cell::new(0));
        let mut s = PrivateStack::new();
        (0..5).for_each(|_| s.push(Counted(drops.clone())));
        let v = s.into_vec();
        assert_eq!((v.len(), drops.get()), (5, 0));
        drop(v);
        assert_eq!(drops.get(), 5);
        let mut s = PrivateStack::new();
        (0..3).for_each(|_| s.push(()));
        assert_eq!(s.into_vec().len(), 3);
    }

    #[test]
    fn a_stack_taken_from_a_vec_drops_each_item_once() {
        let drops = Rc::new(Cell::new(0));
        let s = PrivateStack::from_vec((0..9).map(|_| Counted(drops.clone())).collect());
        drop(s);
        assert_eq!(drops.get(), 9);
        let mut s = PrivateStack::from_vec((0..9).map(|_| Counted(drops.clone())).collect());
        drop(s.pop());
        s.drain_oldest(3, drop);
        assert_eq!(drops.get(), 13);
        drop(s);
        assert_eq!(drops.get(), 18);
    }

    #[test]
    fn from_iter_pops_first_first() {
        let mut s = PrivateStack::from_iter_first_on_top([1, 2, 3], Vec::new());
        assert_eq!(s.len(), 3);
        assert_eq!((s.pop(), s.pop(), s.pop(), s.pop()), (Some(1), Some(2), Some(3), None));
        let mut e: PrivateStack<u8> = PrivateStack::from_iter_first_on_top([], Vec::new());
        assert_eq!(e.pop(), None);
        // An iterator that under-reports its length, then pushes on top of it.
        let mut s = PrivateStack::from_iter_first_on_top((0..40).filter(|i| i % 2 == 0), Vec::new());
        s.push(99);
        let mut got = Vec::new();
        s.drain_oldest(5, |i| got.push(i));
        assert_eq!(got, [38, 36, 34, 32, 30]);
        assert_eq!(s.pop(), Some(99));
        assert_eq!(s.pop(), Some(0));
        assert_eq!(s.len(), 14);
    }

    #[test]
    fn queue_like_use_reuses_the_allocation() {
        // A steady stack that is shared from the bottom and refilled on top: the slots
        // given up below the base must be reclaimed, not pile up.
        let mut s = PrivateStack::new();
        let mut next = 0u64;
        let mut expected = std::collections::VecDeque::new();
        for _ in 0..1000 {
            next += 1;
            s.push(next);
            expected.push_back(next);
        }
        let settled = s.allocation();
        // Under Miri fewer rounds, still enough to outgrow the bound without reclaiming.
        for round in 0..if cfg!(miri) { 500 } else { 10_000 } {
            for _ in 0..7 {
                next += 1;
                s.push(next);
                expected.push_back(next);
            }
            s.drain_oldest(7, |i| assert_eq!(Some(i), expected.pop_front()));
            assert_eq!(s.len(), expected.len());
            assert!(s.allocation() <= 2 * settled.max(2048), "round {round}: {} slots", s.allocation());
        }
        while let Some(i) = s.pop() {
            assert_eq!(Some(i), expected.pop_back());
        }
        assert!(expected.is_empty());
    }

    #[test]
    fn zero_sized_items() {
        let mut s = PrivateStack::new();
        for _ in 0..100 {
            s.push(());
        }
        let mut n = 0;
        s.drain_oldest(40, |()| n += 1);
        while s.pop().is_some() {
            n += 1;
        }
        assert_eq!(n, 100);
    }

    /// An iterator over `0..n` whose size hint claims `claim` items.
    struct Claims {
        next: u32,
        n: u32,
        claim: usize,
    }

    impl Iterator for Claims {
        type Item = u32;
        fn next(&mut self) -> Option<u32> {
            (self.next < self.n).then(|| {
                self.next += 1;
                self.next - 1
            })
        }
        fn size_hint(&self) -> (usize, Option<usize>) {
            (self.claim, Some(self.claim))
        }
    }

    #[test]
    fn seeds_come_out_in_order_whatever_the_size_hint_says() {
        for (n, claim) in [(0, 0), (1, 1), (5, 5), (5, 3), (5, 9), (3, 0), (0, 4), (100, 64)] {
            let mut s = PrivateStack::from_iter_first_on_top(Claims { next: 0, n, claim }, Vec::new());
            assert_eq!(s.len(), n as usize, "{n} items claiming {claim}");
            let out: Vec<u32> = std::iter::from_fn(|| s.pop()).collect();
            assert_eq!(out, (0..n).collect::<Vec<_>>(), "{n} items claiming {claim}");
        }
    }

    #[test]
    fn a_buffer_passes_from_one_stack_to_the_next() {
        let mut s = PrivateStack::new();
        for i in 0..1000u64 {
            s.push(i);
        }
        // Hand out some oldest items, so the base sits above the allocation's start.
        let mut out = Vec::new();
        s.drain_oldest(300, |x| out.push(x));
        while s.pop().is_some() {}
        let buffer = s.into_buffer().expect("an empty stack gives its buffer back");
        let (ptr, cap) = (buffer.as_ptr(), buffer.capacity());
        assert!(cap >= 1000);
        // Seeds land in the same allocation, in order.
        let mut t = PrivateStack::from_iter_first_on_top(0..10u64, buffer);
        assert_eq!((0..10).map(|_| t.pop().unwrap()).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
        let buffer = t.into_buffer().unwrap();
        assert_eq!((buffer.as_ptr(), buffer.capacity()), (ptr, cap));
        let mut u = PrivateStack::in_buffer(buffer);
        u.push(7);
        assert_eq!(u.allocation(), cap);
        // A stack that still holds items keeps (and frees) them itself.
        assert!(u.into_buffer().is_none());
    }

    #[test]
    fn refills_come_out_in_order_in_the_same_allocation() {
        let mut s = PrivateStack::new();
        let mut seeds = 0..25u64;
        let mut seen = Vec::new();
        let mut allocation = None;
        loop {
            let n = s.refill_first_on_top(&mut seeds, 10);
            if n == 0 {
                break;
            }
            assert_eq!(n, 10.min(25 - seen.iter().filter(|&&x| x < 1000).count()));
            // A refill reuses the allocation the first one made.
            assert_eq!(*allocation.get_or_insert(s.allocation()), s.allocation());
            // A follow-on pushed by the first item runs before the next item of the
            // chunk, as it would if every seed had been loaded at once.
            let first = s.pop().unwrap();
            s.push(1000 + first);
            seen.push(first);
            while let Some(x) = s.pop() {
                seen.push(x);
            }
        }
        let expected: Vec<u64> =
            (0..25u64).flat_map(|i| if i % 10 == 0 { vec![i, 1000 + i] } else { vec![i] }).collect();
        assert_eq!(seen, expected);
        assert!(seeds.is_empty());
    }

    #[test]
    fn drops_each_item_once() {
        let drops = Rc::new(Cell::new(0));
        let mut s = PrivateStack::new();
        for _ in 0..50 {
            s.push(Counted(drops.clone()));
        }
        drop(s.pop());
        s.drain_oldest(10, drop);
        assert_eq!(drops.get(), 11);
        s.clear();
        assert_eq!(drops.get(), 50);
        assert_eq!(s.len(), 0);
        for _ in 0..7 {
            s.push(Counted(drops.clone()));
        }
        drop(s);
        assert_eq!(drops.get(), 57);
    }

    #[test]
    fn items_pulled_before_the_iterator_panics_are_dropped() {
        for exact in [true, false] {
            let drops = Rc::new(Cell::new(0));
            let d = drops.clone();
            let items = (0..10u32).map(move |i| {
                if i == 6 {
                    panic!("the source fails");
                }
                Counted(d.clone())
            });
            // An exact size hint places items from the top down; a filter hides it.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if exact {
                    PrivateStack::from_iter_first_on_top(items, Vec::new())
                } else {
                    PrivateStack::from_iter_first_on_top(items.filter(|_| true), Vec::new())
                }
            }));
            assert!(result.is_err());
            assert_eq!(drops.get(), 6, "the six items made before the panic are dropped (exact: {exact})");
        }
    }

    #[test]
    fn a_panic_while_draining_keeps_the_rest() {
        let drops = Rc::new(Cell::new(0));
        let mut s = PrivateStack::new();
        for i in 0..6u32 {
            s.push((i, Counted(drops.clone())));
        }
        let mut taken = Vec::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.drain_oldest(3, |(i, c)| {
                assert!(i != 1, "planned");
                taken.push((i, c));
            })
        }));
        assert!(r.is_err());
        // Item 0 was handed over, item 1 was dropped by the panicking callback, and
        // items 2..6 are still there, in order.
        assert_eq!(taken.len(), 1);
        assert_eq!(drops.get(), 1);
        assert_eq!(s.len(), 4);
        let mut rest = Vec::new();
        while let Some((i, _)) = s.pop() {
            rest.push(i);
        }
        assert_eq!(rest, [5, 4, 3, 2]);
        drop(taken);
        assert_eq!(drops.get(), 6);
    }

    #[test]
    fn a_panicking_drop_still_drops_the_rest() {
        struct Bomb(Rc<Cell<usize>>, bool);
        impl Drop for Bomb {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
                if self.1 {
                    panic!("bomb");
                }
            }
        }
        let drops = Rc::new(Cell::new(0));
        let mut s = PrivateStack::new();
        for i in 0..5 {
            s.push(Bomb(drops.clone(), i == 1));
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.clear()));
        assert!(r.is_err());
        assert_eq!(drops.get(), 5);
        assert_eq!(s.len(), 0);
    }
}

#[cfg(all(test, not(loom)))]
mod burst_tests {
    use super::{BurstScope, BurstSharer, PUSHES_BETWEEN_MARKS, PrivateStack};
    use std::cell::{Cell, RefCell};

    /// Asks for `ask(private)` items at every mark, and keeps what it is given.
    struct Keeper<T, F> {
        ask: F,
        asked: Cell<usize>,
        taken: RefCell<Vec<Vec<T>>>,
    }

    impl<T, F: Fn(usize) -> usize> Keeper<T, F> {
        fn new(ask: F) -> Self {
            Self { ask, asked: Cell::new(0), taken: RefCell::new(Vec::new()) }
        }
    }

    impl<T, F: Fn(usize) -> usize> BurstSharer<T> for Keeper<T, F> {
        fn how_many(&self, private: usize) -> usize {
            self.asked.set(self.asked.get() + 1);
            (self.ask)(private)
        }
        fn take(&self, items: Vec<T>) {
            self.taken.borrow_mut().push(items);
        }
    }

    fn pop_all<T>(stack: &mut PrivateStack<T>) -> Vec<T> {
        std::iter::from_fn(|| stack.pop()).collect()
    }

    #[test]
    fn a_burst_hands_out_its_oldest_items_at_the_marks_each_once() {
        let n = 10 * PUSHES_BETWEEN_MARKS as u64 + 17;
        let keeper = Keeper::new(|private| private / 2);
        let mut stack = PrivateStack::new();
        stack.push(u64::MAX);
        // SAFETY: dropped below, and the stack only pushes and pops meanwhile.
        let scope = unsafe { BurstScope::enter(&stack, &keeper) };
        // The stack grows (moves to new allocations) several times on the way.
        (0..n).for_each(|i| stack.push(i));
        drop(scope);
        let taken = keeper.taken.into_inner();
        assert!(taken.len() >= 5, "a share at most marks once the burst is long: {}", taken.len());
        assert!(keeper.asked.get() >= taken.len());
        // Oldest first across the batches, then the rest newest first: every item once.
        let mut all: Vec<u64> = taken.concat();
        let shared = all.len();
        let rest = pop_all(&mut stack);
        // Pops run newest first, so reversed they continue the oldest-first order.
        all.extend(rest.into_iter().rev());
        let mut expected = vec![u64::MAX];
        expected.extend(0..n);
        assert_eq!(all, expected, "{shared} shared");
    }

    #[test]
    fn no_items_go_out_of_scope_or_to_another_stack() {
        let keeper = Keeper::new(|private| private / 2);
        let mut ours = PrivateStack::new();
        ours.push(0u64);
        let mut other = PrivateStack::new();
        other.push(0u64);
        {
            // SAFETY: dropped at the end of the block; the stacks only push meanwhile.
            let _scope = unsafe { BurstScope::enter(&ours, &keeper) };
            (0..4 * PUSHES_BETWEEN_MARKS as u64).for_each(|i| other.push(i));
        }
        (0..4 * PUSHES_BETWEEN_MARKS as u64).for_each(|i| ours.push(i));
        assert!(keeper.taken.borrow().is_empty(), "nothing from another stack, nor after the scope");
        assert_eq!(keeper.asked.get(), 0);
        assert_eq!((ours.len(), other.len()), (4 * PUSHES_BETWEEN_MARKS + 1, 4 * PUSHES_BETWEEN_MARKS + 1));
    }

    #[test]
    fn a_scope_inside_another_leaves_the_outer_one_in_place() {
        let outer = Keeper::new(|_| 1);
        let inner = Keeper::new(|_| 1);
        let mut a = PrivateStack::new();
        a.push(0u32);
        let mut b = PrivateStack::new();
        b.push(0u64);
        // SAFETY: both scopes are dropped; the stacks only push meanwhile.
        let outer_scope = unsafe { BurstScope::enter(&a, &outer) };
        {
            // SAFETY: as above.
            let _inner_scope = unsafe { BurstScope::enter(&b, &inner) };
            (0..2 * PUSHES_BETWEEN_MARKS as u64).for_each(|i| b.push(i));
            // The outer stack grows (moves) meanwhile, and is still served afterwards.
            (0..2 * PUSHES_BETWEEN_MARKS as u32).for_each(|i| a.push(i));
        }
        assert!(inner.taken.borrow().is_empty(), "the inner scope registered nothing");
        let served = outer.taken.borrow().len();
        assert!(served > 0);
        (0..2 * PUSHES_BETWEEN_MARKS as u32).for_each(|i| a.push(i));
        assert!(outer.taken.borrow().len() > served);
        drop(outer_scope);
        let after = outer.taken.borrow().len();
        (0..2 * PUSHES_BETWEEN_MARKS as u32).for_each(|i| a.push(i));
        assert_eq!(outer.taken.borrow().len(), after, "nothing after the scope");
    }

    #[test]
    fn a_sharer_asking_for_everything_gets_nothing() {
        let keeper = Keeper::new(|private| private);
        let mut stack = PrivateStack::new();
        stack.push(0u64);
        // SAFETY: dropped below; the stack only pushes meanwhile.
        let scope = unsafe { BurstScope::enter(&stack, &keeper) };
        (1..3 * PUSHES_BETWEEN_MARKS as u64).for_each(|i| stack.push(i));
        drop(scope);
        assert!(keeper.asked.get() > 0);
        assert!(keeper.taken.borrow().is_empty());
        assert_eq!(stack.len(), 3 * PUSHES_BETWEEN_MARKS);
    }

    #[test]
    fn shared_items_are_dropped_once() {
        let drops = std::rc::Rc::new(Cell::new(0));
        let keeper = Keeper::new(|private| private / 3);
        let mut stack = PrivateStack::new();
        stack.push(crate::test_util::Counted(drops.clone()));
        // SAFETY: dropped below; the stack only pushes meanwhile.
        let scope = unsafe { BurstScope::enter(&stack, &keeper) };
        (0..3 * PUSHES_BETWEEN_MARKS).for_each(|_| stack.push(crate::test_util::Counted(drops.clone())));
        drop(scope);
        assert!(!keeper.taken.borrow().is_empty());
        drop(keeper);
        drop(stack);
        assert_eq!(drops.get(), 3 * PUSHES_BETWEEN_MARKS + 1);
    }
}
