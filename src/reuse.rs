//! Per-thread reuse of a run's mid-sized allocations: its slot array and its deques'
//! rings.
//!
//! Back-to-back small runs would allocate and free them every time, and glibc's malloc
//! consolidates its fast bins before each allocation over about 1 KiB: that was 15-20%
//! of a tiny run's cost on the 2-vCPU VM. So a dropped run hands these allocations to
//! its thread, and the next run on that thread takes them back if the layout is the
//! same. A thread keeps the [`KEPT`] most recent ones, each of 1 KiB to [`KEEP_UNDER`]
//! bytes (larger allocations cost nothing noticeable next to the runs that need
//! them), oldest first: a newer one replaces the oldest, so blocks of an item type the
//! thread no longer runs make way, and a run's slot array, recycled after its rings,
//! is always kept. They are freed when the thread exits. Under loom nothing is kept,
//! so the models see plain allocations.
//!
//! [`EmptyAllocation`], what is kept, also holds the pool's spare stack buffers
//! (`pool::spare`).

use std::alloc::Layout;
#[cfg(not(loom))]
use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;

/// Most allocations one thread keeps.
#[cfg(not(loom))]
const KEPT: usize = 4;
/// Allocations of at least this many bytes are not kept.
#[cfg(not(loom))]
const KEEP_UNDER: usize = 64 << 10;
/// Allocations under this many bytes are not kept either: the allocator's per-thread
/// caches serve them without consolidating anything.
#[cfg(not(loom))]
const KEEP_AT_LEAST: usize = 1 << 10;

/// An allocation of the global allocator that holds no value: what a `Vec` leaves once
/// its items are gone, kept for a later `Vec` of an item type it fits (here, and in
/// the pool's spare stack buffers, `pool::spare`). Freed when dropped.
pub(crate) struct EmptyAllocation {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: an `EmptyAllocation` owns its memory and holds no value in it; sending it
// sends nothing but the right to reuse or free that memory.
unsafe impl Send for EmptyAllocation {}

impl EmptyAllocation {
    /// Takes `vec`'s allocation (its items, if any, are dropped first); `None` if it
    /// has none (no capacity, or zero-sized items).
    pub(crate) fn from_vec<T>(mut vec: Vec<T>) -> Option<Self> {
        vec.clear();
        let layout = Layout::array::<T>(vec.capacity()).ok()?;
        if layout.size() == 0 {
            return None;
        }
        let mut vec = ManuallyDrop::new(vec);
        // SAFETY: a `Vec` with a non-zero-sized allocation holds a non-null pointer
        // from the global allocator, allocated with `Layout::array::<T>(capacity)`;
        // `vec` is never dropped, so the allocation is ours alone.
        let ptr = unsafe { NonNull::new_unchecked(vec.as_mut_ptr().cast::<u8>()) };
        Some(Self { ptr, layout })
    }

    /// The layout the memory was allocated with.
    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    /// An empty `Vec<T>` over this allocation, if `T`'s size and alignment let it be
    /// one (the `Vec` must free it with the layout it was allocated with).
    pub(crate) fn into_vec<T>(self) -> Result<Vec<T>, Self> {
        let item = Layout::new::<T>();
        if item.size() == 0 || item.align() != self.layout.align() || !self.layout.size().is_multiple_of(item.size()) {
            return Err(self);
        }
        let capacity = self.layout.size() / item.size();
        let this = ManuallyDrop::new(self);
        // SAFETY: the allocation was made by the global allocator with `this.layout`,
        // which equals `Layout::array::<T>(capacity)` (same alignment, and
        // `capacity * size == layout.size()`); length 0 needs no initialized item; and
        // `this` is never dropped, so the allocation passes to the `Vec` alone.
        Ok(unsafe { Vec::from_raw_parts(this.ptr.as_ptr().cast::<T>(), 0, capacity) })
    }
}

impl Drop for EmptyAllocation {
    fn drop(&mut self) {
        // SAFETY: the memory was allocated by the global allocator with `self.layout`
        // (non-zero size, see `from_vec`) and is owned by this value alone.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

#[cfg(not(loom))]
thread_local! {
    /// Oldest first, with no gap: the first `None` ends the list.
    static KEPT_BLOCKS: RefCell<[Option<EmptyAllocation>; KEPT]> = const { RefCell::new([const { None }; KEPT]) };
}

/// An empty `Vec` with room for `capacity` items (exactly, if mid-sized), in an
/// allocation this thread kept (see [`recycle`]) if one has its layout.
pub(crate) fn vec_with_capacity<T>(capacity: usize) -> Vec<T> {
    #[cfg(not(loom))]
    if let Some(layout) = keepable::<T>(capacity) {
        let found = KEPT_BLOCKS
            .try_with(|kept| {
                let mut kept = kept.borrow_mut();
                let at = kept.iter().position(|b| b.as_ref().is_some_and(|b| b.layout == layout))?;
                let block = kept[at].take();
                // Close the gap: the ones after it move up, the `None` goes last.
                kept[at..].rotate_left(1);
                block
            })
            .ok()
            .flatten();
        // Its layout is `Layout::array::<T>(capacity)`, so it becomes a `Vec<T>` of
        // exactly that capacity.
        if let Some(Ok(vec)) = found.map(EmptyAllocation::into_vec) {
            return vec;
        }
    }
    Vec::with_capacity(capacity)
}

/// Drops `vec`'s items and keeps its allocation for this thread's next
/// [`vec_with_capacity`] of the same layout if it is mid-sized (freeing the oldest kept
/// one if the thread keeps [`KEPT`] already); frees it otherwise.
pub(crate) fn recycle<T>(vec: Vec<T>) {
    #[cfg(not(loom))]
    if keepable::<T>(vec.capacity()).is_some() {
        // `from_vec` has run every item's drop (a deque's recycles its own ring), so
        // nothing below re-enters this thread's list. If the thread is exiting, the
        // block is dropped with the closure, which frees it.
        let block = EmptyAllocation::from_vec(vec);
        let _ = KEPT_BLOCKS.try_with(move |kept| {
            let mut kept = kept.borrow_mut();
            match kept.iter().position(Option::is_none) {
                Some(end) => kept[end] = block,
                None => {
                    // The oldest goes (it is freed by the assignment).
                    kept.rotate_left(1);
                    kept[KEPT - 1] = block;
                }
            }
        });
        return;
    }
    drop(vec);
}

/// The layout of a `Vec<T>` allocation of `capacity` items, if it is one to keep.
#[cfg(not(loom))]
fn keepable<T>(capacity: usize) -> Option<Layout> {
    let layout = Layout::array::<T>(capacity).ok()?;
    (KEEP_AT_LEAST..KEEP_UNDER).contains(&layout.size()).then_some(layout)
}

/// The layouts this thread keeps, oldest first.
#[cfg(all(test, not(loom)))]
fn kept_layouts() -> Vec<Layout> {
    KEPT_BLOCKS.with(|kept| kept.borrow().iter().flatten().map(|b| b.layout).collect())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{KEPT, kept_layouts, recycle, vec_with_capacity};
    use std::alloc::Layout;

    // Each test runs on a thread of its own (libtest, nextest and Miri alike), so each
    // starts with nothing kept.

    #[test]
    fn a_recycled_allocation_comes_back_for_the_same_layout_only() {
        let v: Vec<u64> = vec_with_capacity(256);
        assert_eq!(v.capacity(), 256);
        let at = v.as_ptr();
        recycle(v);
        assert_eq!(kept_layouts(), [Layout::array::<u64>(256).unwrap()]);
        // Same size, other alignment: not this block.
        let other: Vec<[u8; 8]> = vec_with_capacity(256);
        assert_eq!(kept_layouts().len(), 1, "still kept");
        let mut again: Vec<u64> = vec_with_capacity(256);
        assert_eq!(again.as_ptr(), at, "the kept block is reused");
        assert!(kept_layouts().is_empty(), "and taken");
        again.extend(0..256);
        assert_eq!(again.iter().sum::<u64>(), 255 * 256 / 2);
        drop(other);
    }

    #[test]
    fn recycling_drops_the_items_and_keeps_only_mid_sized_blocks() {
        use std::rc::Rc;
        let witness = Rc::new(());
        let mut v: Vec<Rc<()>> = vec_with_capacity(1000);
        v.extend((0..10).map(|_| Rc::clone(&witness)));
        recycle(v);
        assert_eq!(Rc::strong_count(&witness), 1, "recycling drops the items");
        assert_eq!(kept_layouts().len(), 1);
        recycle(Vec::<u8>::with_capacity(16));
        recycle(Vec::<u8>::with_capacity(1 << 20));
        assert_eq!(kept_layouts().len(), 1, "small and large ones are freed");
    }

    #[test]
    fn a_thread_keeps_the_most_recent_blocks_and_takes_from_the_middle() {
        assert_eq!(KEPT, 4, "the expectations below are written for four places");
        let layout = |n: usize| Layout::array::<u32>(n).unwrap();
        // Six blocks of six sizes: only the last `KEPT` stay, oldest first.
        for n in 300..306 {
            recycle(Vec::<u32>::with_capacity(n));
        }
        let newest: Vec<Layout> = (306 - KEPT..306).map(layout).collect();
        assert_eq!(kept_layouts(), newest);
        assert_eq!(vec_with_capacity::<u32>(300).capacity(), 300, "a fresh allocation when none fits");
        // Taking one from the middle closes the gap; the next one kept goes last.
        let taken: Vec<u32> = vec_with_capacity(304);
        assert_eq!(kept_layouts(), [layout(302), layout(303), layout(305)]);
        recycle(taken);
        assert_eq!(kept_layouts(), [layout(302), layout(303), layout(305), layout(304)]);
    }
}
