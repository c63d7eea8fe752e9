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

use std::mem::{ManuallyDrop, MaybeUninit};
use std::ptr::NonNull;

pub(crate) struct PrivateStack<T> {
    /// Storage: the allocation of a `Vec<MaybeUninit<T>>` of capacity `cap` (kept as
    /// raw parts so that growing takes and returns plain values, and the stack's
    /// fields can stay in registers). Slot `i`, for `1 <= i < len`, holds the item
    /// `i`-th from the bottom (1-based).
    buf: NonNull<MaybeUninit<T>>,
    cap: usize,
    /// Number of items, `top` included.
    len: usize,
    /// The newest item; initialized exactly when `len > 0`.
    top: MaybeUninit<T>,
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
        Self { buf: ptr, cap: buf.capacity(), len: 0, top: MaybeUninit::uninit() }
    }

    /// A stack whose pops return `items` from last to first.
    pub(crate) fn from_vec(items: Vec<T>) -> Self {
        let mut stack = Self::from_parts(&mut ManuallyDrop::new(Vec::with_capacity(items.len() + 1)));
        for item in items {
            stack.push(item);
        }
        stack
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, item: T) {
        if self.len == self.cap {
            (self.buf, self.cap) = grow(self.buf, self.cap);
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
        // long, and `len < capacity`. It holds the next item when `len > 0` (moving it
        // to `top` leaves the slot logically empty) and scratch when `len == 0`.
        self.top = unsafe { self.buf.as_ptr().add(self.len).read() };
        Some(item)
    }

    /// Removes the `count` oldest items (`count < len`) and gives them to `f`, oldest
    /// first. If `f` panics, the items it has not received stay in the stack, in order.
    pub(crate) fn drain_oldest(&mut self, count: usize, mut f: impl FnMut(T)) {
        assert!(count < self.len, "drain_oldest must leave the top item");
        let old_len = self.len;
        // Nothing is reachable while slots are being read out; the guard closes the
        // gap and sets the length when it drops, normally or while unwinding.
        self.len = 0;
        let mut rest = CloseGap { stack: self, next: 1, old_len };
        while rest.next <= count {
            // SAFETY: `next <= count < old_len`, so slot `next` holds an item; it is
            // read exactly once, since `next` moves past it before `f` can panic.
            let item = unsafe { rest.stack.buf.as_ptr().add(rest.next).read().assume_init() };
            rest.next += 1;
            f(item);
        }
    }

    /// Removes every item and gives it to `f`, oldest first (if `f` panics, what it
    /// has not received stays in the stack).
    pub(crate) fn drain_all(&mut self, mut f: impl FnMut(T)) {
        if self.len == 0 {
            return;
        }
        let count = self.len - 1;
        self.drain_oldest(count, &mut f);
        if let Some(item) = self.pop() {
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

/// The end of `drain_oldest`: slots `next..old_len` still hold items (the rest of the
/// buffer; `top` holds the newest); moves them down to slot 1 and sets the length.
struct CloseGap<'s, T> {
    stack: &'s mut PrivateStack<T>,
    next: usize,
    old_len: usize,
}

impl<T> Drop for CloseGap<'_, T> {
    fn drop(&mut self) {
        let base = self.stack.buf.as_ptr();
        let remaining = self.old_len - self.next;
        // SAFETY: slots `next .. old_len` hold the items not yet read out, slots
        // `1 .. next` have been read (their contents are moved-from), and all of them
        // are inside the buffer. `copy` allows the overlap.
        unsafe { std::ptr::copy(base.add(self.next), base.add(1), remaining) };
        // The buffered items plus the top.
        self.stack.len = remaining + 1;
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
        // SAFETY: `buf` and `cap` are the raw parts of a `Vec` (see `from_parts` and
        // `grow`), given back exactly once; its length 0 drops no element. Rebuilt
        // first, so the buffer is freed even if an item's `Drop` panics below.
        let _buffer = unsafe { Vec::from_raw_parts(self.buf.as_ptr(), 0, self.cap) };
        self.clear();
    }
}

impl<T> Default for PrivateStack<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Takes a full buffer (`cap` slots, all in use) and returns a larger one holding the
/// same slots. Out of line and cold, and by value, so the push path stays short and
/// the stack's address is never taken.
#[cold]
#[inline(never)]
fn grow<T>(buf: NonNull<MaybeUninit<T>>, cap: usize) -> (NonNull<MaybeUninit<T>>, usize) {
    // SAFETY: `buf` and `cap` are the raw parts of a `Vec` whose allocation the stack
    // owns; it is handed back below, with the stack's fields replaced by the new
    // parts. `MaybeUninit` slots need no initialization, so length `cap` is valid.
    let mut vec = ManuallyDrop::new(unsafe { Vec::from_raw_parts(buf.as_ptr(), cap, cap) });
    // Doubles, like a `Vec`; `reserve` panics on overflow before anything changes.
    vec.reserve(usize::max(cap, 16));
    // SAFETY: a `Vec`'s pointer is never null.
    (unsafe { NonNull::new_unchecked(vec.as_mut_ptr()) }, vec.capacity())
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
        s.drain_all(|i| rest.push(i));
        assert_eq!(rest, v);
        assert_eq!(s.pop(), None);
    }

    #[test]
    fn from_vec_pops_last_first() {
        let mut s = PrivateStack::from_vec(vec![1, 2, 3]);
        assert_eq!((s.pop(), s.pop(), s.pop(), s.pop()), (Some(3), Some(2), Some(1), None));
        let mut e: PrivateStack<u8> = PrivateStack::from_vec(Vec::new());
        assert_eq!(e.pop(), None);
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
