//! Empty unless built with `--cfg loom`; the model checks live in `tests/`.
//!
//! Under `cfg(loom)` this crate only holds the small harness the test files share:
//! a wrapper around `loom::model::Builder` that sets the preemption bound per model and
//! reports how many executions it explored, an "every item exactly once" check, and a
//! thief thread for the deque models.

#[cfg(loom)]
pub use harness::*;

#[cfg(loom)]
mod harness {
    use fanout::deque::{Steal, Stealer};
    use loom::thread;
    use std::sync::Arc as StdArc;
    use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
    use std::time::Instant;

    /// How far loom may preempt threads in one model.
    #[derive(Clone, Copy, Debug)]
    pub enum Bound {
        /// `LOOM_MAX_PREEMPTIONS` from the environment, or 2 when it is unset.
        Env,
        /// At most this many, even if the environment asks for more (costly models).
        AtMost(usize),
        /// Exactly this many, whatever the environment says (cheap models that can
        /// afford a deeper search).
        Exactly(usize),
    }

    fn env_bound() -> Option<usize> {
        std::env::var("LOOM_MAX_PREEMPTIONS").ok().map(|v| v.parse().expect("LOOM_MAX_PREEMPTIONS must be a number"))
    }

    /// Explores `f` with loom and prints one summary line (executions, bound, time).
    ///
    /// `max_branches` raises loom's per-execution limit on scheduling decisions for
    /// models with long executions (the whole pool); `None` keeps loom's default.
    pub fn model<F>(name: &str, bound: Bound, max_branches: Option<usize>, f: F)
    where
        F: Fn() + Sync + Send + 'static,
    {
        let mut builder = loom::model::Builder::new();
        let preemptions = match bound {
            Bound::Env => env_bound().unwrap_or(2),
            Bound::AtMost(n) => env_bound().unwrap_or(n).min(n),
            Bound::Exactly(n) => n,
        };
        builder.preemption_bound = Some(preemptions);
        if let Some(branches) = max_branches {
            builder.max_branches = branches;
        }
        let executions = StdArc::new(StdAtomicUsize::new(0));
        let counter = StdArc::clone(&executions);
        let start = Instant::now();
        builder.check(move || {
            counter.fetch_add(1, StdOrdering::Relaxed);
            f();
        });
        eprintln!(
            "loom model {name}: {} executions, preemption bound {preemptions}, {:.1}s",
            executions.load(StdOrdering::Relaxed),
            start.elapsed().as_secs_f64()
        );
    }

    /// One steal attempt that only gives up when the deque looks empty (a `Retry` means
    /// another thread was in the way; yield to it and try again).
    pub fn steal(stealer: &Stealer<usize>) -> Option<usize> {
        loop {
            match stealer.steal() {
                Steal::Success(item) => return Some(item),
                Steal::Empty => return None,
                Steal::Retry => thread::yield_now(),
            }
        }
    }

    /// A thief thread that steals at most `attempts` items from `deque`, stopping early
    /// at `Empty`, and hands back what it got.
    pub fn thief(stealer: Stealer<usize>, attempts: usize) -> thread::JoinHandle<Vec<usize>> {
        thread::spawn(move || {
            let mut got = Vec::new();
            for _ in 0..attempts {
                match steal(&stealer) {
                    Some(item) => got.push(item),
                    None => break,
                }
            }
            got
        })
    }

    /// Asserts that `got` holds each of `0..n` exactly once (no item lost, none
    /// obtained twice).
    pub fn assert_exactly_once(mut got: Vec<usize>, n: usize) {
        got.sort_unstable();
        let expected: Vec<usize> = (0..n).collect();
        assert_eq!(got, expected, "every item must be obtained exactly once");
    }
}
