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

/// Busy-waits for `d`: an item of a known cost that holds its thread, as computation
/// does.
pub fn spin(d: std::time::Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
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

/// Live threads of this process whose name starts with `prefix` (Linux, 0 elsewhere; a
/// thread's name there is cut to 15 bytes).
pub fn threads_named(prefix: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// Waits (up to ten seconds) until no thread named `prefix...` is left (a joined thread
/// may show in /proc for a moment); returns how many are.
pub fn threads_left(prefix: &str) -> usize {
    let start = std::time::Instant::now();
    loop {
        let n = threads_named(prefix);
        if n == 0 || start.elapsed() > std::time::Duration::from_secs(10) {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Threads of this process, from /proc (Linux; 0 elsewhere).
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

/// Runs `f` on a thread of its own and returns its result; fails (instead of hanging
/// the suite) if it has not returned within a minute.
pub fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(60)).expect("did not return within a minute")
}
