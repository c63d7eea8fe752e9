//! How many items a participant runs between two looks at its run (the checks for
//! hungry threads, stops and urgent items in `Run::drain`).
//!
//! A fixed count is wrong at one end or the other: every 8 items is noise for 1 ns
//! items, but for 50 us items it keeps an idle thread waiting 400 us for work that sits
//! in a busy thread's private stack (a run of seeds started with all of them there).
//! So the count follows the items' measured cost: a look about every `LOOK_GAP_NS` of
//! work, at most every `MOST_ITEMS` items. The clock is read only every few looks, fewer
//! while items stay fast (one read per 512 tiny items at most). Its first read times
//! the first item; when that was fast, the look itself is skipped, so that a run too
//! small to share (a few fast seeds) still runs as a plain loop without sharing.

use std::time::Instant;

/// The most items between two looks (the count for items of a few hundred
/// nanoseconds or less).
#[cfg(not(loom))]
pub(crate) const MOST_ITEMS: u32 = 8;
/// Under loom, a look after every item, whatever the clock (models do not depend on
/// time).
#[cfg(loom)]
pub(crate) const MOST_ITEMS: u32 = 1;

/// Aimed-for work between two looks, in nanoseconds: short next to waking a thread,
/// long next to a look.
const LOOK_GAP_NS: u64 = 2_000;
/// Aimed-for time between two reads of the clock, in nanoseconds.
const CLOCK_GAP_NS: u64 = 20_000;
/// Most looks between two reads of the clock: bounds how many items run before items
/// that suddenly got slow are noticed.
const MOST_LOOKS_PER_READ: u32 = 64;

/// A participant's look count (see the module docs).
pub(crate) struct Cadence {
    /// Items between two looks, `1..=MOST_ITEMS`.
    every: u32,
    /// Looks left until the next clock read.
    looks_to_read: u32,
    /// Looks between two clock reads. `every` changes only at a read, so a read comes
    /// after `looks_per_read * every` items.
    looks_per_read: u32,
    /// The last read.
    last: Instant,
    /// No read has been made yet.
    first: bool,
}

impl Cadence {
    /// A cadence for a participant that started working at `start`: its first look
    /// comes after one item, and times it.
    pub(crate) fn new(start: Instant) -> Self {
        Self { every: 1, looks_to_read: 1, looks_per_read: 1, last: start, first: true }
    }

    /// Items to run before the next look.
    #[inline(always)]
    pub(crate) fn every(&self) -> u32 {
        if cfg!(loom) { MOST_ITEMS } else { self.every }
    }

    /// Counts a look (which came after `every()` items), reading the clock when due;
    /// returns whether to look now (all but the first look, when the first item was
    /// fast).
    #[inline(always)]
    pub(crate) fn look(&mut self) -> bool {
        cfg!(loom) || self.look_with(Instant::now)
    }

    /// `look`, with the clock given.
    #[inline(always)]
    fn look_with(&mut self, now: impl FnOnce() -> Instant) -> bool {
        self.looks_to_read -= 1;
        if self.looks_to_read == 0 {
            return self.read(now());
        }
        true
    }

    /// Sets the count from the work done since the last read, which ended at `now`;
    /// returns whether to look now.
    #[cold]
    #[inline(never)]
    fn read(&mut self, now: Instant) -> bool {
        // In nanoseconds as `u64`: 128-bit divisions cost more than the rest of a look.
        let gap = now.saturating_duration_since(self.last).as_nanos() as u64;
        let per_item = gap / u64::from(self.looks_per_read * self.every);
        // Items too fast to measure (`per_item == 0`) get the most items.
        self.every = LOOK_GAP_NS.checked_div(per_item).map_or(MOST_ITEMS, |n| n.clamp(1, u64::from(MOST_ITEMS)) as u32);
        // Reads came faster than aimed for: read less often. Slower: at once in
        // proportion, so that items that turned slow are caught up with on the next read.
        self.looks_per_read = if gap < CLOCK_GAP_NS {
            (self.looks_per_read * 2).min(MOST_LOOKS_PER_READ)
        } else {
            (u64::from(self.looks_per_read) * CLOCK_GAP_NS / gap).max(1) as u32
        };
        self.looks_to_read = self.looks_per_read;
        self.last = now;
        !std::mem::take(&mut self.first) || self.every < MOST_ITEMS
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Cadence, MOST_ITEMS, MOST_LOOKS_PER_READ};
    use std::time::{Duration, Instant};

    /// Runs `looks` looks of items costing `per_item` each on `cadence`, on a made-up
    /// clock that starts at `now`; returns the clock.
    fn feed(cadence: &mut Cadence, mut now: Instant, per_item: Duration, looks: u32) -> Instant {
        for _ in 0..looks {
            now += per_item * cadence.every();
            cadence.look_with(|| now);
        }
        now
    }

    #[test]
    fn only_a_fast_first_item_skips_its_look() {
        let start = Instant::now();
        let mut fast = Cadence::new(start);
        assert!(!fast.look_with(|| start + Duration::from_nanos(5)));
        assert!(fast.look_with(|| start + Duration::from_nanos(50)));
        let mut slow = Cadence::new(start);
        assert!(slow.look_with(|| start + Duration::from_micros(5)));
    }

    #[test]
    fn slow_items_are_looked_after_one_at_a_time() {
        let start = Instant::now();
        let mut cadence = Cadence::new(start);
        assert_eq!(cadence.every(), 1, "the first look comes after the first item");
        feed(&mut cadence, start, Duration::from_micros(50), 10);
        assert_eq!(cadence.every(), 1);
        assert_eq!(cadence.looks_per_read, 1, "every look of 50 us items reads the clock");
    }

    #[test]
    fn fast_items_get_the_most_items_and_few_reads() {
        let start = Instant::now();
        let mut cadence = Cadence::new(start);
        feed(&mut cadence, start, Duration::from_nanos(3), 1000);
        assert_eq!(cadence.every(), MOST_ITEMS);
        assert_eq!(cadence.looks_per_read, MOST_LOOKS_PER_READ);
    }

    #[test]
    fn microsecond_items_are_looked_after_every_two_microseconds() {
        let start = Instant::now();
        let mut cadence = Cadence::new(start);
        feed(&mut cadence, start, Duration::from_nanos(500), 100);
        assert_eq!(cadence.every(), 4);
    }

    #[test]
    fn items_that_turn_slow_are_caught_up_with_on_the_next_read() {
        let start = Instant::now();
        let mut cadence = Cadence::new(start);
        let now = feed(&mut cadence, start, Duration::from_nanos(3), 1000);
        // At most `MOST_LOOKS_PER_READ` looks of `MOST_ITEMS` items until the next
        // read; after it, a look per item and a read per look.
        feed(&mut cadence, now, Duration::from_micros(50), MOST_LOOKS_PER_READ);
        assert_eq!(cadence.every(), 1);
        assert_eq!(cadence.looks_per_read, 1);
    }
}
