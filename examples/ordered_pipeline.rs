//! Tag-and-reorder over a stream: the seeds' ordered pipeline (a source tags items
//! with sequence numbers, workers process them in parallel, a reorder buffer puts the
//! results back in input order) with `Pool::stream`.
//!
//! The source is a "log file" of unknown length, read line by line; each line is
//! parsed and checksummed at a cost that varies 100x from line to line, so results
//! finish out of order. The output must still come in input order, with the source
//! never more than `WINDOW` lines ahead of the printer.
//!
//! `cargo run --release --example ordered_pipeline` (`-- --quick` for a short run).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many lines may be read ahead of the printer (the reorder window).
const WINDOW: usize = 64;

/// A line's checksum, costing `rounds` multiply rounds (a stand-in for real parsing).
fn checksum(line: &str, rounds: u32) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..rounds {
        for b in line.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let lines_total: u64 = if quick { 2_000 } else { 50_000 };
    let pool = fanout::Pool::new()?;

    // The source: lines produced one at a time, like `BufRead::lines` on a file. It
    // counts how many lines have been read, to show the window at work.
    let read = Arc::new(AtomicU64::new(0));
    let read_counter = Arc::clone(&read);
    let lines = (0..lines_total).map(move |i| {
        read_counter.fetch_add(1, Ordering::Relaxed);
        format!("{i:06} GET /item/{} {}", i * 7 % 1000, if i % 97 == 0 { "SLOW" } else { "ok" })
    });

    // Stages: parse, then checksum (every 97th line costs 100x more), in input order.
    let stream = pool
        .stream(lines)
        .window(WINDOW)
        .map(|line| {
            let rounds = if line.ends_with("SLOW") { 400 } else { 4 };
            let seq: u64 = line[..6].parse().expect("a line starts with its number");
            (seq, checksum(&line, rounds))
        })
        .ordered();

    let mut next_expected = 0u64;
    let mut max_ahead = 0u64;
    let mut combined = 0u64;
    for result in stream {
        let (seq, sum) = result?;
        // The reorder window gives the lines back in the order they were read.
        assert_eq!(seq, next_expected, "output out of order");
        next_expected += 1;
        combined = combined.rotate_left(5) ^ sum;
        max_ahead = max_ahead.max(read.load(Ordering::Relaxed) - next_expected);
        if seq < 3 || seq + 1 == lines_total {
            println!("line {seq:6}: checksum {sum:016x}");
        }
    }

    // The same checksums, one line after another on this thread.
    let mut sequential = 0u64;
    for i in 0..lines_total {
        let line = format!("{i:06} GET /item/{} {}", i * 7 % 1000, if i % 97 == 0 { "SLOW" } else { "ok" });
        let rounds = if line.ends_with("SLOW") { 400 } else { 4 };
        sequential = sequential.rotate_left(5) ^ checksum(&line, rounds);
    }
    println!("{next_expected} lines in input order; combined checksum {combined:016x}, sequential {sequential:016x}");
    println!("the reader was at most {max_ahead} lines ahead of the printer (window {WINDOW})");
    assert_eq!(combined, sequential, "parallel and sequential checksums differ");
    assert!(max_ahead <= WINDOW as u64);
    Ok(())
}
