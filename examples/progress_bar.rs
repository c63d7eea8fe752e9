//! Live progress of a long run, drawn with `indicatif` from another thread.
//!
//! ```text
//! cargo run --release --example progress_bar [-- --quick]
//! ```
//!
//! The run reports progress through a `fanout::Progress` handle: each thread stores its
//! own count every few items (no shared counter per item), and the drawing thread reads
//! them every 50 ms. Runs at full speed whether or not anybody watches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// About a microsecond of arithmetic.
fn work(i: usize) -> u64 {
    let mut x = i as u64 ^ 0x9E37_79B9_7F4A_7C15;
    for _ in 0..300 {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    }
    x
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let items = if quick { 200_000 } else { 3_000_000 };
    let pool = fanout::Pool::new().expect("pool");
    let progress = fanout::Progress::new();
    let finished = AtomicBool::new(false);

    let bar = indicatif::ProgressBar::new(items as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} items, {per_sec}, {msg}").expect("template"),
    );
    let sum = std::thread::scope(|s| {
        s.spawn(|| {
            while !finished.load(Ordering::Relaxed) {
                let snap = progress.snapshot();
                bar.set_position(snap.completed);
                bar.set_message(format!("{} threads busy", snap.in_flight));
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let sum = pool
            .runner()
            .progress(&progress)
            .fold_index(0..items, || 0u64, |a, i| a.wrapping_add(work(i)), u64::wrapping_add)
            .expect("no token, no deadline, nothing panics");
        finished.store(true, Ordering::Relaxed);
        sum
    });
    let end = progress.snapshot();
    bar.set_position(end.completed);
    bar.finish_with_message("done");
    println!("checksum {sum:016x}; progress saw {} of {} items completed", end.completed, items);
    assert_eq!(end.completed, items as u64);
}
