//! API aggregation: fan out to several services under one deadline, merge what came
//! back, collect the errors.
//!
//! ```text
//! cargo run --release --example api_aggregation
//! ```
//!
//! A user profile is assembled from five simulated services with different latencies.
//! The whole aggregation has a 500 ms budget: the recommendations service (800 ms)
//! misses it and the billing service fails outright. `Runner::try_map_all` runs every
//! call (continue-on-error), each call waits at most until the deadline, and the result
//! keeps every call's outcome in input order, so the merge is a plain loop.

use fanout::ItemError;
use std::time::{Duration, Instant};

#[derive(Debug)]
enum Part {
    Profile { name: String, email: String },
    Posts(Vec<String>),
    Friends(Vec<String>),
    Settings { theme: String },
    Recommendations(Vec<String>),
}

struct Service {
    name: &'static str,
    latency: Duration,
    fails: bool,
}

#[derive(Debug, Default)]
struct User {
    name: String,
    email: String,
    posts: Vec<String>,
    friends: Vec<String>,
    theme: String,
    recommendations: Vec<String>,
}

/// One call: answers after the service's latency, unless the deadline comes first.
fn call(service: &Service, deadline: Instant) -> Result<Part, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if service.latency > left {
        std::thread::sleep(left);
        return Err(format!("{}: deadline exceeded after {} ms", service.name, left.as_millis()));
    }
    std::thread::sleep(service.latency);
    if service.fails {
        return Err(format!("{}: 503 service unavailable", service.name));
    }
    let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
    Ok(match service.name {
        "profile" => Part::Profile { name: "Ada Lovelace".into(), email: "ada@example.com".into() },
        "posts" => Part::Posts(list(&["Notes on the Engine", "On Bernoulli numbers"])),
        "friends" => Part::Friends(list(&["Charles", "Mary"])),
        "settings" => Part::Settings { theme: "dark".into() },
        "recommendations" => Part::Recommendations(list(&["looms"])),
        other => return Err(format!("{other}: unknown service")),
    })
}

fn main() {
    let ms = Duration::from_millis;
    let services = [
        Service { name: "profile", latency: ms(80), fails: false },
        Service { name: "posts", latency: ms(150), fails: false },
        Service { name: "friends", latency: ms(120), fails: false },
        Service { name: "settings", latency: ms(60), fails: false },
        Service { name: "recommendations", latency: ms(800), fails: false },
        Service { name: "billing", latency: ms(30), fails: true },
    ];
    // Blocking calls: a pool of their own with a thread per call.
    let io_pool = fanout::Pool::builder().num_threads(services.len()).pin(false).build().expect("pool");
    let start = Instant::now();
    let deadline = start + ms(500);
    let results = io_pool.runner().blocking().deadline(deadline).try_map_all(&services, |s| call(s, deadline));

    let mut user = User::default();
    let mut errors = Vec::new();
    for (service, result) in services.iter().zip(results) {
        match result {
            Ok(Part::Profile { name, email }) => (user.name, user.email) = (name, email),
            Ok(Part::Posts(p)) => user.posts = p,
            Ok(Part::Friends(f)) => user.friends = f,
            Ok(Part::Settings { theme }) => user.theme = theme,
            Ok(Part::Recommendations(r)) => user.recommendations = r,
            Err(ItemError::Failed(e)) => errors.push(e),
            Err(other) => errors.push(format!("{}: {other}", service.name)),
        }
    }
    let took = start.elapsed();
    println!("aggregated in {:.0} ms (budget 500 ms)", took.as_secs_f64() * 1e3);
    println!("{user:#?}");
    println!("{} errors:", errors.len());
    for e in &errors {
        println!("  {e}");
    }
    assert_eq!(user.name, "Ada Lovelace");
    assert_eq!(errors.len(), 2, "recommendations and billing fail");
}
