//! Bounded fan-out, like errgroup's `SetLimit`: many downloads, at most a few
//! connections at once.
//!
//! ```text
//! cargo run --release --example bounded_fanout
//! ```
//!
//! Forty simulated downloads (10 ms each) run on an I/O pool of 8 threads, with
//! `Runner::limit(3)`: the run never has more than three items in flight, so never more
//! than three connections open. Threads beyond the limit are not blocked: they leave the
//! run, so nested runs or other callers can still use them. The printout shows the
//! highest number of connections seen at once, with and without the limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const DOWNLOADS: usize = 40;

/// Open connections right now, and the most seen at once.
struct Connections {
    open: AtomicUsize,
    most: AtomicUsize,
}

impl Connections {
    fn download(&self, i: usize) -> Result<usize, std::io::Error> {
        let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(open, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(10));
        self.open.fetch_sub(1, Ordering::SeqCst);
        Ok(1000 + i) // bytes received
    }
}

fn run(pool: &fanout::Pool, limit: Option<usize>) -> (usize, usize, Duration) {
    let conns = Connections { open: AtomicUsize::new(0), most: AtomicUsize::new(0) };
    let runner = pool.runner().blocking();
    let runner = match limit {
        Some(n) => runner.limit(n),
        None => runner,
    };
    let start = Instant::now();
    let sizes = runner.try_map_index(0..DOWNLOADS, |i| conns.download(i)).expect("downloads");
    (sizes.iter().sum(), conns.most.into_inner(), start.elapsed())
}

fn main() {
    let io_pool = fanout::Pool::builder().num_threads(8).pin(false).build().expect("pool");
    for limit in [Some(3), None] {
        let (bytes, most, took) = run(&io_pool, limit);
        let label = limit.map_or("none".to_string(), |n| n.to_string());
        println!(
            "limit {label:>4}: {DOWNLOADS} downloads, {bytes} bytes, at most {most} connections at once, {:.0} ms",
            took.as_secs_f64() * 1e3
        );
        if let Some(n) = limit {
            assert!(most <= n, "the limit was exceeded");
        }
    }
}
