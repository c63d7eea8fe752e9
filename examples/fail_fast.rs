//! Fail fast, errgroup style: verify a batch of files; the first corrupt one cancels
//! the rest.
//!
//! ```text
//! cargo run --release --example fail_fast
//! ```
//!
//! Each "file" takes a few milliseconds to read (a sleep, like I/O), so the batch runs
//! on an I/O pool with more threads than cores, every file started as soon as a thread
//! is free (`Runner::blocking`). File 37 is corrupt: its error stops the batch. No file
//! starts after that; the files already being read finish. The run returns the error
//! with the file's index, and the counts show how much work the early stop saved.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const FILES: usize = 200;
const CORRUPT: usize = 37;

/// Reads and checks one file: ~3 ms of waiting, then a checksum comparison.
fn verify(index: usize) -> Result<u64, String> {
    std::thread::sleep(Duration::from_millis(3));
    let checksum = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    if index == CORRUPT {
        return Err(format!("checksum mismatch in file-{index:03} ({checksum:#x})"));
    }
    Ok(checksum)
}

fn main() {
    let io_pool = fanout::Pool::builder().num_threads(8).pin(false).build().expect("pool");
    let started = AtomicUsize::new(0);
    let start = Instant::now();
    let result = io_pool.runner().blocking().try_for_each_index(0..FILES, |i| {
        started.fetch_add(1, Ordering::Relaxed);
        verify(i).map(drop)
    });
    let elapsed = start.elapsed();
    let started = started.into_inner();

    match &result {
        Err(fanout::RunError::Failed { error, index }) => {
            println!("batch failed: file {} -> {error}", index.expect("slice runs report the index"));
        }
        other => panic!("expected the corrupt file to fail the batch, got {other:?}"),
    }
    println!("files started: {started} of {FILES}; never started: {}", FILES - started);
    println!(
        "stopped after {:.1} ms (all {FILES} files would take ~{} ms on 9 threads)",
        elapsed.as_secs_f64() * 1e3,
        FILES * 3 / 9
    );
    assert!(started < FILES, "the error did not stop the batch");

    // The same batch without the corrupt file succeeds and the pool is still usable.
    let ok = io_pool.runner().blocking().try_map_index(0..20, |i| verify(i + 100)).expect("clean batch");
    println!("a clean batch of {} files verified; first checksum {:#x}", ok.len(), ok[0]);
}
