//! What fanout allocates, counted per thread by a counting global allocator (so the
//! test harness's other threads do not disturb the counts).

use fanout::deque::Worker;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static BYTES: Cell<usize> = const { Cell::new(0) };
    /// Allocations of 1 KiB or more: glibc consolidates its fast bins before each.
    static LARGE: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is a
// `const`-initialized thread-local `Cell`, whose access never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.with(|b| b.set(b.get() + layout.size()));
        if layout.size() >= 1024 {
            LARGE.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes this thread allocated while `f` ran.
fn allocated_by<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = BYTES.with(Cell::get);
    let r = f();
    (r, BYTES.with(Cell::get) - before)
}

/// A run gives each participant a deque, and most deques of a small run never hold an
/// item: the slots come with the first push, not with the deque.
#[test]
fn a_deque_allocates_its_slots_at_its_first_push() {
    const CAPACITY: usize = 1 << 16;
    let slots = CAPACITY * std::mem::size_of::<u64>();
    let (worker, made) = allocated_by(|| Worker::<u64>::new(CAPACITY));
    assert!(made < 1024, "an unused deque of {CAPACITY} slots allocated {made} bytes");
    let ((), first) = allocated_by(|| worker.push(7).expect("room"));
    assert!(first >= slots, "the first push allocated {first} bytes, fewer than the {slots} of the slots");
    let ((), more) = allocated_by(|| {
        for i in 0..100 {
            worker.push(i).expect("room");
        }
        while worker.pop().is_some() {}
        worker.push(1).expect("room");
    });
    assert_eq!(more, 0, "pushes after the first allocate nothing");
    let stealer = worker.stealer();
    assert_eq!(stealer.steal().success(), Some(1));
    assert!(worker.pop().is_none());
}

/// Back-to-back small runs on one thread reuse the run's slot array and the caller's
/// deque ring from the runs before (see `src/reuse.rs`) instead of allocating them.
#[test]
fn back_to_back_small_runs_allocate_nothing_large_after_the_first() {
    let pool = fanout::Pool::builder().num_threads(2).build().expect("pool");
    let large_allocations = |f: &dyn Fn()| {
        let before = LARGE.with(Cell::get);
        f();
        LARGE.with(Cell::get) - before
    };
    // A run long enough that the caller shares for sure (the workers are idle, and it
    // steps back after 2 ms at the latest): its deque ring is allocated then, and kept
    // with the slot array when the run ends. The small runs below have the same item
    // and accumulator types, so the same layouts; whether one of them shares depends on
    // timing, and either way it finds its ring kept.
    let warm_up = large_allocations(&|| {
        let sum = pool.run_fold(
            0..20_000u64,
            || 0u64,
            |acc, i, _| {
                std::hint::black_box((0..200).fold(i, |x, k| x.rotate_left(5) ^ k));
                acc + i
            },
            |a, b| a + b,
        );
        assert_eq!(sum, (0..20_000).sum::<u64>());
    });
    assert!(warm_up > 0, "the first run allocates its slot array");
    let small = || {
        let sum = pool.run_fold(
            0..4u64,
            || 0u64,
            |acc, i, ctx| {
                if i < 4 {
                    ctx.push(i + 4);
                }
                acc + i
            },
            |a, b| a + b,
        );
        assert_eq!(sum, (0..8).sum::<u64>());
    };
    for round in 0..10 {
        let again = large_allocations(&small);
        assert_eq!(again, 0, "round {round}: {again} allocations of 1 KiB or more");
    }
}
