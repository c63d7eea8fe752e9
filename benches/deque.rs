//! Our fixed-capacity deque (`fanout::deque::Worker`) against
//! `crossbeam_deque::Worker::new_lifo()`, single-threaded: the cost of the operations
//! themselves, without contention.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, black_box, criterion_group, criterion_main};
use crossbeam_deque::{Steal as CbSteal, Worker};
use fanout::deque::{Steal, Worker as Deque};

const BATCH: usize = 128;
const CAPACITY: usize = 256;

fn group<'a>(c: &'a mut Criterion, name: &str, elements: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
        .throughput(Throughput::Elements(elements));
    g
}

/// (a) One push and one pop: the per-operation cost of the owner's fast path.
fn push_pop_one(c: &mut Criterion) {
    let mut g = group(c, "push_pop_1", 1);
    g.bench_function("fanout", |b| {
        let d = Deque::<u64>::new(CAPACITY);
        b.iter(|| {
            d.push(black_box(1)).unwrap();
            black_box(d.pop())
        });
    });
    g.bench_function("crossbeam", |b| {
        let w = Worker::<u64>::new_lifo();
        b.iter(|| {
            w.push(black_box(1));
            black_box(w.pop())
        });
    });
    g.finish();
}

/// (b) Push 128, then pop 128.
fn push_pop_batch(c: &mut Criterion) {
    let mut g = group(c, "push_pop_128", BATCH as u64);
    g.bench_function("fanout", |b| {
        let d = Deque::<u64>::new(CAPACITY);
        b.iter(|| {
            for i in 0..BATCH as u64 {
                d.push(black_box(i)).unwrap();
            }
            for _ in 0..BATCH {
                black_box(d.pop());
            }
        });
    });
    g.bench_function("crossbeam", |b| {
        let w = Worker::<u64>::new_lifo();
        b.iter(|| {
            for i in 0..BATCH as u64 {
                w.push(black_box(i));
            }
            for _ in 0..BATCH {
                black_box(w.pop());
            }
        });
    });
    g.finish();
}

/// (c) Push 128, then steal all 128 through the thieves' end (same thread, no contention).
fn steal_one_by_one(c: &mut Criterion) {
    let mut g = group(c, "steal_128", BATCH as u64);
    g.bench_function("fanout", |b| {
        let d = Deque::<u64>::new(CAPACITY);
        let s = d.stealer();
        b.iter(|| {
            for i in 0..BATCH as u64 {
                d.push(black_box(i)).unwrap();
            }
            for _ in 0..BATCH {
                match s.steal() {
                    Steal::Success(x) => {
                        black_box(x);
                    }
                    _ => unreachable!("the deque holds items and nobody else steals"),
                }
            }
        });
    });
    g.bench_function("crossbeam", |b| {
        let w = Worker::<u64>::new_lifo();
        let s = w.stealer();
        b.iter(|| {
            for i in 0..BATCH as u64 {
                w.push(black_box(i));
            }
            for _ in 0..BATCH {
                match s.steal() {
                    CbSteal::Success(x) => {
                        black_box(x);
                    }
                    _ => unreachable!("the deque holds items and nobody else steals"),
                }
            }
        });
    });
    g.finish();
}

/// (d) Push 128 into a source, then empty it with `steal_batch_and_pop` into a second
/// deque, popping everything that lands there. Per item moved. The two batch policies
/// differ (ours moves half of what is left, crossbeam at most 31 per call), so this
/// compares the cost of draining a queue by batches, not of one call.
fn steal_batch(c: &mut Criterion) {
    let mut g = group(c, "steal_batch_and_pop_128", BATCH as u64);
    g.bench_function("fanout", |b| {
        let src = Deque::<u64>::new(CAPACITY);
        let stealer = src.stealer();
        let dest = Deque::<u64>::new(CAPACITY);
        b.iter(|| {
            for i in 0..BATCH as u64 {
                src.push(black_box(i)).unwrap();
            }
            loop {
                match stealer.steal_batch_and_pop(&dest) {
                    Steal::Success(x) => {
                        black_box(x);
                    }
                    Steal::Empty => break,
                    Steal::Retry => unreachable!("nobody else steals"),
                }
                while let Some(x) = dest.pop() {
                    black_box(x);
                }
            }
        });
    });
    g.bench_function("crossbeam", |b| {
        let src = Worker::<u64>::new_lifo();
        let stealer = src.stealer();
        let dest = Worker::<u64>::new_lifo();
        b.iter(|| {
            for i in 0..BATCH as u64 {
                src.push(black_box(i));
            }
            loop {
                match stealer.steal_batch_and_pop(&dest) {
                    CbSteal::Success(x) => {
                        black_box(x);
                    }
                    CbSteal::Empty => break,
                    CbSteal::Retry => unreachable!("nobody else steals"),
                }
                while let Some(x) = dest.pop() {
                    black_box(x);
                }
            }
        });
    });
    g.finish();
}

criterion_group!(benches, push_pop_one, push_pop_batch, steal_one_by_one, steal_batch);
criterion_main!(benches);
