//! Streaming map benchmark: ordered parallel map of `tiny(i)` over a plain range
//! iterator, against the sequential loop and three references (pariter's ordered
//! `parallel_map`, a hand-written crossbeam-channel tag-and-reorder pipeline, rayon's
//! unordered `par_bridge`), plus ~1 us items (`mix`) against sequential; and the cost
//! of a stage gate (`parallelism`): never full on tiny items, limits 1 and 2 on ~1 us
//! items; a one-worker pool's stream (the consumer works too); an I/O-like source
//! (`BufRead::lines` over a generated text), and the context switches per million
//! items of each kind of source.
//!
//! `cargo bench --bench stream` (add `-- --quick` for a short run). The variants run
//! interleaved, round after round, and the table shows medians; ratios are against the
//! sequential loop of the same run. Criterion's groups would run each variant's samples
//! back to back, which on a noisy 2-core VM skews the comparison, so this bench has its
//! own main (`harness = false`).

#[path = "../examples/workloads/mod.rs"]
mod workloads;

use crossbeam_channel::bounded;
use fanout::Pool;
use pariter::IteratorExt as _;
use rayon::prelude::*;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::time::Instant;
use workloads::text::{generate_text, line_id, lines_of, pipeline_sequential, pipeline_stream};
use workloads::{calibrate_mix, mix, tiny};

const THREADS: usize = 2;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// ns per item of one call of `f` over `n` items.
fn time(n: u64, f: impl FnOnce() -> u64) -> f64 {
    let start = Instant::now();
    black_box(f());
    start.elapsed().as_nanos() as f64 / n as f64
}

/// The seeds' design: a source thread tags items with sequence numbers into a bounded
/// channel, `workers` threads map them into a results channel, and the consumer puts
/// results back in order with a min-heap (the reorder buffer).
fn channel_tag_and_reorder(n: u64, workers: usize, buffer: usize, f: fn(u64) -> u64) -> u64 {
    let (in_tx, in_rx) = bounded::<(u64, u64)>(buffer);
    let (out_tx, out_rx) = bounded::<(u64, u64)>(buffer);
    std::thread::scope(|s| {
        s.spawn(move || {
            for (seq, i) in (0..n).enumerate() {
                if in_tx.send((seq as u64, i)).is_err() {
                    return;
                }
            }
        });
        for _ in 0..workers {
            let in_rx = in_rx.clone();
            let out_tx = out_tx.clone();
            s.spawn(move || {
                for (seq, i) in in_rx {
                    if out_tx.send((seq, f(i))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(out_tx);
        let mut heap = BinaryHeap::new();
        let mut next = 0u64;
        let mut acc = 0u64;
        for (seq, v) in out_rx {
            heap.push(Reverse((seq, v)));
            while let Some(Reverse((s, v))) = heap.peek().copied() {
                if s != next {
                    break;
                }
                heap.pop();
                acc = acc.wrapping_add(v);
                next += 1;
            }
        }
        assert_eq!(next, n);
        acc
    })
}

/// Context switches of every thread of this process so far (Linux; 0 elsewhere).
fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let pool = Pool::builder().num_threads(THREADS).build().expect("pool");
    let pool1 = Pool::builder().num_threads(1).build().expect("one-worker pool");
    let rayon_pool = rayon::ThreadPoolBuilder::new().num_threads(THREADS).build().expect("rayon pool");
    let rounds = if quick { 3 } else { 7 };
    let n: u64 = if quick { 2_000_000 } else { 10_000_000 };
    // The references cost 50-300 ns per item: a tenth of the items keeps the run short.
    let n_ref = n / 10;
    let k = calibrate_mix(1000.0);
    let n_us: u64 = if quick { 20_000 } else { 100_000 };
    let mix_k: fn(u64) -> u64 = {
        static K: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        K.set(k).ok();
        |i| mix(i, *K.get().unwrap())
    };

    let expected: u64 = (0..n).map(tiny).fold(0, u64::wrapping_add);
    let expected_ref: u64 = (0..n_ref).map(tiny).fold(0, u64::wrapping_add);
    let mut t: Vec<(&str, u64, Vec<f64>)> = vec![
        ("sequential loop", n, vec![]),
        ("fanout stream ordered", n, vec![]),
        ("fanout stream unordered", n, vec![]),
        ("pariter parallel_map (ordered)", n_ref, vec![]),
        ("crossbeam tag-and-reorder", n_ref, vec![]),
        ("rayon par_bridge (unordered)", n_ref, vec![]),
        ("fanout ordered, gate never full", n_ref, vec![]),
    ];
    let mut w2: Vec<(&str, u64, Vec<f64>)> = vec![
        ("sequential loop", n_us, vec![]),
        ("fanout stream ordered", n_us, vec![]),
        ("pariter parallel_map (ordered)", n_us, vec![]),
        ("fanout ordered, parallelism(1)", n_us, vec![]),
        ("fanout ordered, parallelism(2)", n_us, vec![]),
        ("fanout ordered, std Mutex in map", n_us, vec![]),
        ("fanout fold_index (no stream)", n_us, vec![]),
        ("fanout stream, one-worker pool", n_us, vec![]),
    ];
    let n_lines: u64 = if quick { 200_000 } else { 1_000_000 };
    let text = generate_text(n_lines);
    let expected_ids: u64 = (0..n_lines).sum();
    let mut io: Vec<(&str, u64, Vec<f64>)> = vec![
        ("sequential loop", n_lines, vec![]),
        ("fanout stream ordered", n_lines, vec![]),
        ("fanout stream unordered", n_lines, vec![]),
        ("source alone: plain loop", n_lines, vec![]),
        ("source alone: fanout stream", n_lines, vec![]),
        ("rewrite to a String: sequential", n_lines, vec![]),
        ("rewrite to a String: stream", n_lines, vec![]),
    ];
    let expected_out = pipeline_sequential(&text);
    let mut max_buffered = (0usize, 0usize, 0usize);
    for _ in 0..rounds {
        t[0].2.push(time(n, || {
            let mut acc = 0u64;
            for i in 0..n {
                acc = acc.wrapping_add(tiny(i));
            }
            assert_eq!(acc, expected);
            acc
        }));
        t[1].2.push(time(n, || {
            let mut acc = 0u64;
            let mut it = pool.stream(0..n).map(tiny).into_iter();
            for x in it.by_ref() {
                acc = acc.wrapping_add(x.unwrap());
            }
            let s = it.stats();
            max_buffered = (s.max_buffered, s.window, max_buffered.2);
            assert_eq!(acc, expected);
            acc
        }));
        t[2].2.push(time(n, || {
            let mut acc = 0u64;
            pool.stream(0..n).unordered().map(tiny).for_each(|x| acc = acc.wrapping_add(x)).unwrap();
            assert_eq!(acc, expected);
            acc
        }));
        t[3].2.push(time(n_ref, || {
            let acc = (0..n_ref).parallel_map_custom(|b| b.threads(THREADS), tiny).fold(0, u64::wrapping_add);
            assert_eq!(acc, expected_ref);
            acc
        }));
        t[4].2.push(time(n_ref, || {
            let acc = channel_tag_and_reorder(n_ref, THREADS, 1024, tiny);
            assert_eq!(acc, expected_ref);
            acc
        }));
        t[5].2.push(time(n_ref, || {
            let acc = rayon_pool.install(|| (0..n_ref).par_bridge().map(tiny).reduce(|| 0, u64::wrapping_add));
            assert_eq!(acc, expected_ref);
            acc
        }));
        // The gate's own cost: a limit no thread can reach (workers + consumer).
        t[6].2.push(time(n_ref, || {
            let mut acc = 0u64;
            pool.stream(0..n_ref).map(tiny).parallelism(THREADS + 1).for_each(|x| acc = acc.wrapping_add(x)).unwrap();
            assert_eq!(acc, expected_ref);
            acc
        }));
        // ~1 us items.
        let mut seq_acc = 0u64;
        w2[0].2.push(time(n_us, || {
            for i in 0..n_us {
                seq_acc = seq_acc.wrapping_add(mix_k(i));
            }
            seq_acc
        }));
        w2[1].2.push(time(n_us, || {
            let mut acc = 0u64;
            pool.stream(0..n_us).map(mix_k).for_each(|x| acc = acc.wrapping_add(x)).unwrap();
            assert_eq!(acc, seq_acc);
            acc
        }));
        w2[2].2.push(time(n_us, || {
            let acc = (0..n_us).parallel_map_custom(|b| b.threads(THREADS), mix_k).fold(0, u64::wrapping_add);
            assert_eq!(acc, seq_acc);
            acc
        }));
        for (row, limit) in [(3, 1), (4, 2)] {
            w2[row].2.push(time(n_us, || {
                let mut acc = 0u64;
                pool.stream(0..n_us).map(mix_k).parallelism(limit).for_each(|x| acc = acc.wrapping_add(x)).unwrap();
                assert_eq!(acc, seq_acc);
                acc
            }));
        }
        // The same items without a stream: the pool's ceiling for this workload.
        w2[6].2.push(time(n_us, || {
            let acc =
                pool.fold_index(0..n_us as usize, || 0u64, |a, i| a.wrapping_add(mix_k(i as u64)), u64::wrapping_add);
            assert_eq!(acc, seq_acc);
            acc
        }));
        // A one-worker pool on two cores: the consumer takes the second core.
        w2[7].2.push(time(n_us, || {
            let mut acc = 0u64;
            pool1.stream(0..n_us).map(mix_k).for_each(|x| acc = acc.wrapping_add(x)).unwrap();
            assert_eq!(acc, seq_acc);
            acc
        }));
        // An I/O-like source: lines read through `BufRead`, a parse per line.
        io[0].2.push(time(n_lines, || {
            let acc = lines_of(&text).map(|l| line_id(&l.unwrap())).sum::<u64>();
            assert_eq!(acc, expected_ids);
            acc
        }));
        for (row, ordered) in [(1, true), (2, false)] {
            io[row].2.push(time(n_lines, || {
                let mut acc = 0u64;
                let s = pool.stream(lines_of(&text));
                let s = if ordered { s } else { s.unordered() };
                s.map(|l| line_id(&l.unwrap())).for_each(|x| acc += x).unwrap();
                assert_eq!(acc, expected_ids);
                acc
            }));
        }
        // The source's own cost, with no work per line.
        io[3].2.push(time(n_lines, || lines_of(&text).map(|l| l.unwrap().len() as u64).sum()));
        io[4].2.push(time(n_lines, || {
            let mut acc = 0u64;
            pool.stream(lines_of(&text)).map(|l| l.unwrap().len() as u64).for_each(|x| acc += x).unwrap();
            acc
        }));
        // An output `String` per line, made on the worker and freed by the consumer.
        io[5].2.push(time(n_lines, || pipeline_sequential(&text).len() as u64));
        io[6].2.push(time(n_lines, || {
            let out = pipeline_stream(&pool, &text);
            assert!(out == expected_out, "the stream's output differs from the sequential one");
            out.len() as u64
        }));
        // What a user would write by hand for a limit of 1.
        let lock = std::sync::Arc::new(std::sync::Mutex::new(()));
        w2[5].2.push(time(n_us, || {
            let mut acc = 0u64;
            let lock = std::sync::Arc::clone(&lock);
            pool.stream(0..n_us)
                .map(move |i| {
                    let _one_at_a_time = lock.lock().unwrap();
                    mix_k(i)
                })
                .for_each(|x| acc = acc.wrapping_add(x))
                .unwrap();
            assert_eq!(acc, seq_acc);
            acc
        }));
    }
    // Peak buffer on a ten-times-shorter input: independent of the input's length.
    let mut it = pool.stream(0..n / 10).map(tiny).into_iter();
    black_box(it.by_ref().count());
    max_buffered.2 = it.stats().max_buffered;

    println!(
        "fanout stream bench: {THREADS} worker threads, {} cores, {rounds} interleaved rounds, medians",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let report = |title: &str, rows: Vec<(&str, u64, Vec<f64>)>| {
        println!("\n{title}");
        println!("  {:<32} {:>10} {:>12} {:>10} {:>12}", "variant", "items", "ns/item", "speedup", "over seq ns");
        let seq = median(rows[0].2.clone());
        for (name, items, v) in rows {
            let m = median(v);
            println!("  {name:<32} {items:>10} {m:>12.2} {:>9.2}x {:>12.2}", seq / m, m - seq);
        }
    };
    report(&format!("tiny(i) over a range iterator (~1 ns/item), {n} items (references: {n_ref})"), t);
    report(&format!("mix(i, {k}) (~1 us/item), {n_us} items"), w2);
    report(&format!("I/O-like source: BufRead::lines over {n_lines} generated log lines, parse one field"), io);
    // Sleeps and wake-ups: context switches of all threads during one more run of each.
    let per_million = |items: u64, f: &dyn Fn()| {
        let before = context_switches();
        f();
        (context_switches() - before) as f64 * 1e6 / items as f64
    };
    let cs_range = per_million(n, &|| {
        pool.stream(0..n)
            .map(tiny)
            .for_each(|x| {
                black_box(x);
            })
            .unwrap();
    });
    let cs_lines = per_million(n_lines, &|| {
        pool.stream(lines_of(&text))
            .map(|l| line_id(&l.unwrap()))
            .for_each(|x| {
                black_box(x);
            })
            .unwrap();
    });
    let cs_us = per_million(n_us, &|| {
        pool.stream(0..n_us)
            .map(mix_k)
            .for_each(|x| {
                black_box(x);
            })
            .unwrap();
    });
    let cs_us1 = per_million(n_us, &|| {
        pool1
            .stream(0..n_us)
            .map(mix_k)
            .for_each(|x| {
                black_box(x);
            })
            .unwrap();
    });
    println!(
        "\ncontext switches per million items (all threads, one ordered run each): range of tiny items {cs_range:.0}, \
         lines {cs_lines:.0}, ~1 us items {cs_us:.0}, ~1 us items on the one-worker pool {cs_us1:.0}"
    );
    println!(
        "\npeak buffered source items (ordered stream, window {}): {} over {n} items, {} over {} items",
        max_buffered.1,
        max_buffered.0,
        max_buffered.2,
        n / 10
    );
}
