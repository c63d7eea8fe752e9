//! Helpers shared by the integration tests.
#![allow(dead_code)]

/// A small deterministic PRNG (xorshift64*), so a failing case can be replayed by seed.
pub struct Rng(pub u64);

impl Rng {
    /// Spreads a small seed over the state (never zero, which xorshift cannot leave).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (below 1 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// An item that counts its drops in the counter it borrows (the `u32` is a payload,
/// such as an id): checks that nothing is lost or dropped twice.
pub struct Counted<'a>(pub u32, pub &'a std::sync::atomic::AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Threads of this process, from /proc (Linux; 0 elsewhere).
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}
