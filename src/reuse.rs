//! Per-thread reuse of a run's mid-sized allocations: its slot array and its deques'
//! rings.
//!
//! Back-to-back small runs would allocate and free them every time, and glibc's malloc
//! consolidates its fast bins before each allocation over about 1 KiB: that was about
//! 15% of a tiny run's cost on the 2-vCPU VM. So a dropped run hands these allocations
//! to its thread, and the next run on that thread takes them back if the layout is the
//! same. A thread keeps at most [`KEPT`] of them, each under [`KEEP_UNDER`] bytes (the
//! pool's spares take over from there, see `pool::spare`); they are freed when the
//! thread exits. Under loom nothing is kept, so the models see plain allocations.

#[cfg(not(loom))]
use std::alloc::Layout;
#[cfg(not(loom))]
use std::cell::RefCell;
#[cfg(not(loom))]
use std::mem::ManuallyDrop;
#[cfg(not(loom))]
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

/// An allocation of the global allocator, owned, holding no value.
#[cfg(not(loom))]
struct Block {
    ptr: NonNull<u8>,
    layout: Layout,
}

#[cfg(not(loom))]
impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated by the global allocator with `layout` (a `Vec`'s
        // allocation, see `recycle`) and this block owns it alone.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

#[cfg(not(loom))]
thread_local! {
    static KEPT_BLOCKS: RefCell<[Option<Block>; KEPT]> = const { RefCell::new([const { None }; KEPT]) };
}

/// An empty `Vec` with room for exactly `capacity` items, in an allocation this thread
/// kept (see [`recycle`]) if one has its layout.
pub(crate) fn vec_with_capacity<T>(capacity: usize) -> Vec<T> {
    #[cfg(not(loom))]
    if let Some(layout) = keepable::<T>(capacity) {
        let found = KEPT_BLOCKS
            .try_with(|kept| {
                let mut kept = kept.borrow_mut();
                kept.iter_mut().find(|b| b.as_ref().is_some_and(|b| b.layout == layout)).and_then(Option::take)
            })
            .ok()
            .flatten();
        if let Some(block) = found {
            let block = ManuallyDrop::new(block);
            // SAFETY: the block was allocated by the global allocator with `layout`,
            // which is `Layout::array::<T>(capacity)` (`keepable`), as a `Vec<T>` of
            // that capacity allocates; length 0 needs no initialized item; and the
            // block is never dropped, so the allocation passes to the `Vec` alone.
            return unsafe { Vec::from_raw_parts(block.ptr.as_ptr().cast::<T>(), 0, capacity) };
        }
    }
    Vec::with_capacity(capacity)
}

/// Drops `vec`'s items and keeps its allocation for this thread's next
/// [`vec_with_capacity`] of the same layout, if it is mid-sized and the thread keeps
/// fewer than [`KEPT`]; frees it otherwise.
pub(crate) fn recycle<T>(mut vec: Vec<T>) {
    vec.clear();
    #[cfg(not(loom))]
    if let Some(layout) = keepable::<T>(vec.capacity()) {
        let mut vec = ManuallyDrop::new(vec);
        // SAFETY: a `Vec` with a non-zero-sized allocation (`keepable` says so) holds a
        // pointer from the global allocator, allocated with `layout`; `vec` is never
        // dropped, so the block owns it alone.
        let block = Block { ptr: unsafe { NonNull::new_unchecked(vec.as_mut_ptr().cast::<u8>()) }, layout };
        // The block is freed here if the thread keeps enough already, or is exiting.
        let _ = KEPT_BLOCKS.try_with(move |kept| {
            let mut kept = kept.borrow_mut();
            if let Some(free) = kept.iter_mut().find(|b| b.is_none()) {
                *free = Some(block);
            }
        });
    }
}

/// The layout of a `Vec<T>` allocation of `capacity` items, if it is one to keep.
#[cfg(not(loom))]
fn keepable<T>(capacity: usize) -> Option<Layout> {
    let layout = Layout::array::<T>(capacity).ok()?;
    (KEEP_AT_LEAST..KEEP_UNDER).contains(&layout.size()).then_some(layout)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{KEPT, recycle, vec_with_capacity};

    #[test]
    fn a_recycled_allocation_comes_back_for_the_same_layout_only() {
        let v: Vec<u64> = vec_with_capacity(256);
        assert_eq!(v.capacity(), 256);
        let at = v.as_ptr();
        recycle(v);
        // Same size, other alignment: not this block.
        let other: Vec<[u8; 8]> = vec_with_capacity(256);
        assert_ne!(other.as_ptr().cast::<u64>(), at);
        let mut again: Vec<u64> = vec_with_capacity(256);
        assert_eq!(again.as_ptr(), at, "the kept block is reused");
        again.extend(0..256);
        assert_eq!(again.iter().sum::<u64>(), 255 * 256 / 2);
        // Taken: the next one is a fresh allocation.
        let fresh: Vec<u64> = vec_with_capacity(256);
        assert_ne!(fresh.as_ptr(), again.as_ptr());
        drop(other);
    }

    #[test]
    fn a_thread_keeps_a_bounded_number_of_blocks_and_recycling_drops_the_items() {
        use std::rc::Rc;
        let witness = Rc::new(());
        let mut v: Vec<Rc<()>> = vec_with_capacity(1000);
        v.extend((0..10).map(|_| Rc::clone(&witness)));
        let at = v.as_ptr();
        recycle(v);
        assert_eq!(Rc::strong_count(&witness), 1, "recycling drops the items");
        let again: Vec<Rc<()>> = vec_with_capacity(1000);
        assert_eq!(again.as_ptr(), at);
        // Every place is free again (each test runs on a thread of its own): `KEPT`
        // blocks of one layout are kept, the others freed.
        let blocks: Vec<Vec<u32>> = (0..KEPT + 2).map(|_| vec_with_capacity(600)).collect();
        let kept: Vec<*const u32> = blocks.iter().map(|b| b.as_ptr()).collect();
        blocks.into_iter().for_each(recycle);
        let back: Vec<Vec<u32>> = (0..KEPT + 2).map(|_| vec_with_capacity(600)).collect();
        assert!(back[..KEPT].iter().all(|b| kept.contains(&b.as_ptr())), "the first {KEPT} takes reuse kept blocks");
    }
}
