//! Hedged requests: send the same request to several replicas, take the first answer,
//! cancel the rest.
//!
//! ```text
//! cargo run --release --example hedged_requests
//! ```
//!
//! Five replicas answer after different latencies; one is down. `Runner::first_ok` runs
//! them on an I/O pool, returns the first success, and cancels the losers through the
//! token each was handed: they stop waiting at once instead of finishing their slow
//! request. The call returns after about the fastest replica's latency.

use std::time::{Duration, Instant};

struct Replica {
    name: &'static str,
    latency: Duration,
    up: bool,
}

/// One request to one replica; gives up early when `token` is cancelled.
fn query(replica: &Replica, token: &fanout::CancelToken) -> Result<String, String> {
    if !replica.up {
        return Err(format!("{}: connection refused", replica.name));
    }
    if token.wait_timeout(replica.latency) {
        return Err(format!("{}: cancelled, another replica answered first", replica.name));
    }
    Ok(format!("answer from {} after {} ms", replica.name, replica.latency.as_millis()))
}

fn main() {
    let ms = Duration::from_millis;
    let replicas = [
        Replica { name: "eu-1", latency: ms(180), up: true },
        Replica { name: "eu-2", latency: ms(40), up: true },
        Replica { name: "us-1", latency: ms(0), up: false },
        Replica { name: "us-2", latency: ms(250), up: true },
        Replica { name: "ap-1", latency: ms(120), up: true },
    ];
    let io_pool = fanout::Pool::builder().num_threads(replicas.len()).pin(false).build().expect("pool");

    let start = Instant::now();
    let (winner, answer) =
        io_pool.runner().first_ok(replicas.len(), |i, token| query(&replicas[i], token)).expect("a replica is up");
    let took = start.elapsed();
    println!("winner: replica {winner} ({}): {answer}", replicas[winner].name);
    println!("returned after {:.0} ms; the slowest replica would take 250 ms", took.as_secs_f64() * 1e3);
    assert_eq!(replicas[winner].name, "eu-2");

    // When every replica is down, every error comes back, in replica order.
    let down = io_pool.runner().first_ok(replicas.len(), |i, _| Err::<(), _>(format!("{}: down", replicas[i].name)));
    match down {
        Err(fanout::RunError::Failed { error, .. }) => {
            assert_eq!(error.errors.len(), replicas.len());
            println!("all down: {error}");
        }
        other => panic!("expected every replica's error, got {other:?}"),
    }
}
