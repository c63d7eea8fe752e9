//! Your own workload through every strategy: a directory walk that counts the lines of
//! the `.rs` files below a directory (default: the current one), as a follow-on workload.
//!
//! `cargo run --release --example own_workload -- [DIR] [--quick]`

use fanout::compare::{Compare, PoolState};
use fanout::strategy::{FoldWorkload, Spawner};
use std::path::PathBuf;

/// A task is a path: a directory pushes its entries, a `.rs` file counts its lines.
struct LineCount;

impl FoldWorkload for LineCount {
    type Item = PathBuf;
    type Acc = (u64, u64); // (files, lines)
    fn identity(&self) -> (u64, u64) {
        (0, 0)
    }
    fn execute<S: Spawner<PathBuf>>(&self, path: PathBuf, acc: &mut (u64, u64), spawner: &mut S) {
        if path.is_dir() {
            std::fs::read_dir(&path).into_iter().flatten().flatten().for_each(|e| spawner.push(e.path()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read(&path).unwrap_or_default();
            *acc = (acc.0 + 1, acc.1 + text.iter().filter(|&&b| b == b'\n').count() as u64);
        }
    }
    fn reduce(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = std::env::args().skip(1).find(|a| !a.starts_with("--")).unwrap_or_else(|| ".".into());
    let states = if quick { &[PoolState::Parked][..] } else { &PoolState::ALL[..] };
    let cmp = Compare::builder().rounds(if quick { 3 } else { 9 }).states(states).build()?;
    let walk = cmp.follow_on("walk", format!(".rs files below {dir}"), || vec![PathBuf::from(&dir)], &LineCount);
    let mut report = cmp.report("line count");
    report.push(cmp.measure(walk));
    print!("{report}");
    Ok(())
}
