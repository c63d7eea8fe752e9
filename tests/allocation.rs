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
/// deque ring from the run before (see `src/reuse.rs`) instead of allocating them.
#[test]
fn back_to_back_small_runs_allocate_nothing_large_after_the_first() {
    let pool = fanout::Pool::builder().num_threads(2).build().expect("pool");
    let large_allocations = |f: &dyn Fn()| {
        let before = LARGE.with(Cell::get);
        f();
        LARGE.with(Cell::get) - before
    };
    // A follow-on run whose caller pushes (its deque ring is allocated by that push),
    // and a range run.
    let follow_on = || {
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
    let range = || {
        let sum = pool.fold_index(0..4, || 0usize, |acc, i| acc + i, |a, b| a + b);
        assert_eq!(sum, 6);
    };
    let first = large_allocations(&|| {
        follow_on();
        range();
    });
    assert!(first > 0, "the first runs allocate their slot arrays");
    for round in 0..10 {
        let again = large_allocations(&|| {
            follow_on();
            range();
        });
        assert_eq!(again, 0, "round {round}: {again} allocations of 1 KiB or more");
    }
}
