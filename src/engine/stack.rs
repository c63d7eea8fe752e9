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
//! Both paths are branch-free apart from the capacity and emptiness checks a `Vec` has
//! too: slot 0 of the buffer is scratch, written by a push onto an empty stack (the
//! uninitialized `top` goes there) and read back by the pop that empties it.
//!
//! Items, oldest first: `buf[1..len]`, then `top` (when `len > 0`).
//!
//! Sharing the oldest items (`drain_oldest`) moves `buf` up past them instead of moving
//! the rest down, so a publication costs what it hands out, not what the stack holds.
//! The slots left behind below `buf` are reclaimed when the buffer fills: moved down
//! if they are at least as many as the live ones (which the items drained since have
//! paid for), or kept while the allocation doubles.

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
        Self { buf: ptr, cap: buf.capacity(), len: 0, top: MaybeUninit::uninit(), dead: 0 }
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
        let mut slots = if most == Some(fewest) {
            // Slot 0 is the scratch slot (see the module docs); the first item goes to
            // the highest slot. An iterator that breaks its size hint still gets every
            // item in place, through the slower fix-ups below.
            fill.slots.resize_with(fewest + 1, MaybeUninit::uninit);
            let mut placed = 0;
            let mut beyond = Vec::new();
            for item in items {
                if placed < fewest {
                    fill.slots[fewest - placed] = MaybeUninit::new(item);
                    placed += 1;
                    fill.filled = fewest + 1 - placed..fewest + 1;
                } else {
                    beyond.push(item);
                }
            }
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

    #[inline(always)]
    pub(crate) fn push(&mut self, item: T) {
        if self.len == self.cap {
            (self.buf, self.cap, self.dead) = grow(self.buf, self.cap, self.dead);
        }
        // SAFETY: `len < capacity` (checked above), so slot `len` is inside the
        // allocation. Copying the `MaybeUninit` top is allowed whether or not it holds
        // an item; if it does (`len > 0`), ownership moves to slot `len` (item `len`
        // from the bottom), since `top` is overwritten just below without a drop.
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
        // SAFETY: `len <= cap` always holds (a push grows before it would write slot
        // `cap`), so after the decrement `len < cap`. Telling the optimizer lets it drop
        // the capacity check, and the call to `grow`, from a push that follows a pop:
        // a chain of follow-ons then runs without a call in its loop.
        unsafe { std::hint::assert_unchecked(self.len < self.cap) };
        // SAFETY: slot `len` was written by the push that made the stack `len + 1`
        // long (or, in a stack made by `from_vec`, by the `Vec`), and `len < capacity`.
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

/// Takes a full stack's base, slots and dead slots (see `PrivateStack`) and returns
/// them with room for at least one more item: the live slots moved down over the dead
/// ones if those are at least as many, or else a doubled allocation. Out of line and
/// cold, and by value, so the push path stays short and the stack's address is never
/// taken.
#[cold]
#[inline(never)]
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
                        let mut got = Vec::new();
                        s.drain_oldest(n, |i| got.push(i));
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
