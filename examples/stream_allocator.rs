//! An allocation-heavy ordered stream under mimalloc: lines read with
//! `BufRead::lines` (a `String` each), rewritten into a new `String` per line on
//! whichever thread processes them, written in input order by the consumer, which
//! frees them. The same pipeline with the system allocator is a row of the stream
//! bench (`cargo bench --bench stream`); compare the two speedups over sequential,
//! each measured against its own process's sequential loop.
//!
//! `cargo run --release --example stream_allocator` (`-- --quick` for a short run).

mod workloads;

use std::time::Instant;
use workloads::text::{generate_text, pipeline_sequential, pipeline_stream};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), fanout::BuildError> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (lines, rounds) = if quick { (200_000, 3) } else { (1_000_000, 9) };
    let text = generate_text(lines);
    let pool = fanout::Pool::new()?;
    let expected = pipeline_sequential(&text);
    let (mut seq, mut par) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let start = Instant::now();
        assert_eq!(pipeline_sequential(&text).len(), expected.len());
        seq.push(start.elapsed().as_nanos() as f64 / lines as f64);
        let start = Instant::now();
        let out = pipeline_stream(&pool, &text);
        par.push(start.elapsed().as_nanos() as f64 / lines as f64);
        assert!(out == expected, "the stream's output differs from the sequential one");
    }
    let (s, p) = (median(seq), median(par));
    println!(
        "mimalloc, {lines} lines, {} threads, medians of {rounds} interleaved rounds: sequential {s:.1} ns/line, \
         ordered stream {p:.1} ns/line ({:.2}x)",
        pool.num_threads(),
        s / p
    );
    Ok(())
}
