//! Private-stack buffers a pool keeps between runs.
//!
//! A run that holds many follow-ons at once (one task pushing millions of items) grows
//! its private stack into fresh memory, and the page faults of that first touch cost
//! more than the pushes themselves. The next run would fault the same pages in again.
//! So when a run ends, its large empty buffers go to the pool's spares, and the next run
//! starts its stacks in them (if their item layout fits): a program that runs big fan-outs
//! repeatedly touches fresh memory once.
//!
//! Bounded: only buffers of at least [`SPARE_AT_LEAST`] bytes are kept (smaller ones are
//! recycled well by the allocator), at most [`SPARE_AT_MOST`] bytes in all per pool; the
//! pool frees them when it drops.

use crate::reuse::EmptyAllocation;
use crate::sync::{AtomicUsize, Mutex, Ordering, lock};
use std::mem::MaybeUninit;

/// Smallest buffer worth keeping: the allocator serves larger ones from fresh
/// mappings, whose pages fault in on first touch.
pub(crate) const SPARE_AT_LEAST: usize = 128 << 10;
/// Most bytes a pool keeps (room for one stack of about 4M word-sized items).
pub(crate) const SPARE_AT_MOST: usize = 64 << 20;

/// A pool's spare stack buffers.
pub(crate) struct Spares {
    /// How many buffers `list` holds: read without the lock, so a run of a pool that
    /// keeps none (all small runs) never takes it.
    held: AtomicUsize,
    /// Largest first.
    list: Mutex<Vec<EmptyAllocation>>,
}

impl Spares {
    pub(crate) fn new() -> Self {
        Self { held: AtomicUsize::new(0), list: Mutex::new(Vec::new()) }
    }

    /// Up to `most` spare buffers that fit `T`, largest first.
    pub(crate) fn take<T>(&self, most: usize) -> Vec<Vec<MaybeUninit<T>>> {
        // Relaxed: a hint; the list itself is read under the lock. A stale zero only
        // means this run starts in fresh memory.
        if cfg!(loom) || self.held.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let mut list = lock(&self.list);
        let mut taken = Vec::new();
        let mut kept = Vec::new();
        for buffer in list.drain(..) {
            if taken.len() == most {
                kept.push(buffer);
                continue;
            }
            match buffer.into_vec::<MaybeUninit<T>>() {
                Ok(vec) => taken.push(vec),
                Err(buffer) => kept.push(buffer),
            }
        }
        *list = kept;
        // Relaxed: as above.
        self.held.store(list.len(), Ordering::Relaxed);
        taken
    }

    /// Keeps the large ones among `vecs` (emptied) for the next runs, the largest first,
    /// within `SPARE_AT_MOST` bytes in all; frees the rest.
    pub(crate) fn give<T>(&self, vecs: impl IntoIterator<Item = Vec<MaybeUninit<T>>>) {
        if cfg!(loom) {
            return;
        }
        let mut fresh = vecs
            .into_iter()
            .filter_map(EmptyAllocation::from_vec)
            .filter(|b| b.layout().size() >= SPARE_AT_LEAST)
            .peekable();
        if fresh.peek().is_none() {
            return;
        }
        let mut list = lock(&self.list);
        list.extend(fresh);
        list.sort_unstable_by_key(|b| std::cmp::Reverse(b.layout().size()));
        let mut bytes = 0;
        // Buffers beyond the budget are freed here, under the lock, rarely and briefly.
        list.retain(|b| {
            let keep = bytes + b.layout().size() <= SPARE_AT_MOST;
            bytes += if keep { b.layout().size() } else { 0 };
            keep
        });
        // Relaxed: see `take`.
        self.held.store(list.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::{SPARE_AT_LEAST, SPARE_AT_MOST, Spares};
    use std::mem::MaybeUninit;

    fn vec_of<T>(bytes: usize) -> Vec<MaybeUninit<T>> {
        Vec::with_capacity(bytes / size_of::<T>())
    }

    #[test]
    fn a_kept_buffer_comes_back_for_the_same_layout_only() {
        let spares = Spares::new();
        let v = vec_of::<u64>(SPARE_AT_LEAST * 2);
        let (ptr, cap) = (v.as_ptr(), v.capacity());
        spares.give([v]);
        // Same size but another alignment: not handed out, still kept.
        assert!(spares.take::<[u32; 2]>(4).is_empty());
        let back = spares.take::<u64>(4);
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].as_ptr(), back[0].capacity()), (ptr, cap));
        assert!(spares.take::<u64>(4).is_empty(), "a buffer is handed out once");
    }

    #[test]
    fn a_buffer_is_reused_by_another_type_of_the_same_layout() {
        let spares = Spares::new();
        spares.give([vec_of::<u64>(SPARE_AT_LEAST)]);
        let back = spares.take::<i64>(1);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].capacity(), SPARE_AT_LEAST / 8);
    }

    #[test]
    fn small_buffers_are_freed_and_the_budget_holds() {
        let spares = Spares::new();
        spares.give([vec_of::<u64>(SPARE_AT_LEAST / 2)]);
        assert!(spares.take::<u64>(8).is_empty(), "too small to keep");
        let big = SPARE_AT_MOST / 2 + SPARE_AT_LEAST;
        spares.give([vec_of::<u8>(big), vec_of::<u8>(big), vec_of::<u8>(SPARE_AT_LEAST)]);
        let back = spares.take::<u8>(8);
        let sizes: Vec<usize> = back.iter().map(Vec::capacity).collect();
        // The largest first, and no more than the budget: one big and the small one.
        assert_eq!(sizes, [big, SPARE_AT_LEAST]);
    }

    #[test]
    fn take_hands_out_at_most_what_is_asked() {
        let spares = Spares::new();
        spares.give((0..3).map(|_| vec_of::<u64>(SPARE_AT_LEAST)));
        assert_eq!(spares.take::<u64>(2).len(), 2);
        assert_eq!(spares.take::<u64>(2).len(), 1);
    }
}
