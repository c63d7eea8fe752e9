//! The Go compiler's `compileFunctions` work queue, done for real on Rust sources:
//! every function is a work item, "compiling" it walks its body, and the closures and
//! nested fns found there are pushed back as follow-on items, compiled in turn.
//!
//! ```text
//! cargo run --release --example compile_queue                    # this repository
//! cargo run --release --example compile_queue -- ~/src/foo       # any tree of .rs files
//! cargo run --release --example compile_queue -- --quick         # fewer repetitions
//! cargo run --release --example compile_queue -- --jobserver     # fanout under a jobserver
//! make -j2 -f examples/compile_queue.mk                           # two instances under make
//! ```
//!
//! With `--jobserver` the fanout pool takes its workers' tokens from the jobserver in
//! the environment (under `make -jN`), or from one made here with a token per worker
//! beyond the first (this thread holds the implicit one), as a compiler driver would.
//!
//! The files are read and parsed with `syn` up front (fanned out with `Pool::map`, not
//! part of the timed compile). The compile then runs, interleaved in a new order every
//! repetition, on a plain `Vec` stack, on a `fanout::Pool` with `run_fold` (per-thread
//! totals, no shared counter), with `rayon::scope` (one `spawn` per unit), and as a
//! static split (the seeds dealt out to freshly spawned threads, each keeping its own
//! follow-ons). Each timed run starts from parked pools (10 ms idle before it). All
//! must count exactly the same, or the program exits with status 1.
//!
//! One more variant works the way a compiler embedding fanout would: `run_collect`
//! returns one diagnostic line per unit in an order fixed by the source alone (each
//! function, then the closures and nested fns it contains, depth-first), checked byte
//! for byte against a sequential walk; a `WorkerLocal` per thread keeps the totals and
//! interns the function names (the symbol table), merged after the run.
//!
//! A large real corpus: the crate sources cargo has downloaded, e.g.
//! `cargo run --release --example compile_queue -- ~/.cargo/registry/src`.
//!
//! syn's syntax trees are not `Send` (their tokens hold an `Rc`), so an item carries
//! the tokens of its own function or closure as text; compiling it parses that text
//! and walks it, much as a compiler front end works one function at a time.
//!
//! The allocator weighs on the rows: the seeds are allocated on this thread, and a
//! worker that compiles one frees it into this thread's glibc arena while this thread,
//! taking part in the run, allocates there too; both then wait on the arena's lock.
//! Rayon's caller sleeps through its run, so its workers do not meet it; fanout's
//! caller steps back after 2 ms of a run (it hands its work and its core to the
//! workers and waits), which ends most of it. BENCHMARKS.md has the figures.

use fanout::{Pool, WorkerLocal};
use quote::ToTokens;
use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Expr, ImplItem, Item, TraitItem};

/// What an item's text parses as.
#[derive(Clone, Copy)]
enum Kind {
    Fn,
    Method,
    TraitMethod,
    Closure,
}

/// One function to compile: its kind and its tokens as text (a `String` is `Send`).
#[derive(Clone)]
struct Unit {
    kind: Kind,
    text: String,
}

impl Unit {
    fn new(kind: Kind, node: &impl ToTokens) -> Unit {
        Unit { kind, text: node.to_token_stream().to_string() }
    }
}

/// What the compile counted; runs are compared on all of it.
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
struct Totals {
    units: u64,
    closures: u64,
    nested_fns: u64,
    stmts: u64,
    exprs: u64,
    macro_bodies: u64,
    errors: u64,
}

impl Totals {
    fn add(self, o: Totals) -> Totals {
        Totals {
            units: self.units + o.units,
            closures: self.closures + o.closures,
            nested_fns: self.nested_fns + o.nested_fns,
            stmts: self.stmts + o.stmts,
            exprs: self.exprs + o.exprs,
            macro_bodies: self.macro_bodies + o.macro_bodies,
            errors: self.errors + o.errors,
        }
    }
}

/// Emits every function with a body that `item` defines: free fns, impl methods, trait
/// default methods, and those inside inline modules.
fn functions_of(item: &Item, out: &mut dyn FnMut(Unit)) {
    match item {
        Item::Fn(f) => out(Unit::new(Kind::Fn, f)),
        Item::Impl(i) => {
            for it in &i.items {
                if let ImplItem::Fn(f) = it {
                    out(Unit::new(Kind::Method, f));
                }
            }
        }
        Item::Trait(t) => {
            for it in &t.items {
                if let TraitItem::Fn(f) = it
                    && f.default.is_some()
                {
                    out(Unit::new(Kind::TraitMethod, f));
                }
            }
        }
        Item::Mod(m) => {
            for it in m.content.iter().flat_map(|(_, items)| items) {
                functions_of(it, out);
            }
        }
        _ => {}
    }
}

/// The stand-in for code generation: counts statements and expressions of one body and
/// hands closures and nested fns to `sink` instead of descending into them.
struct Compiler<'a> {
    t: &'a mut Totals,
    sink: &'a mut dyn FnMut(Unit),
}

impl<'ast> Visit<'ast> for Compiler<'_> {
    fn visit_stmt(&mut self, s: &'ast syn::Stmt) {
        self.t.stmts += 1;
        visit::visit_stmt(self, s);
    }

    fn visit_expr(&mut self, e: &'ast Expr) {
        self.t.exprs += 1;
        match e {
            // A closure is its own unit, compiled later (by whichever thread gets it).
            Expr::Closure(c) => {
                self.t.closures += 1;
                (self.sink)(Unit::new(Kind::Closure, c));
            }
            _ => visit::visit_expr(self, e),
        }
    }

    // Items inside a body (`fn helper() {}`, a local `impl`) are follow-ons too.
    fn visit_item(&mut self, item: &'ast Item) {
        let (t, sink) = (&mut *self.t, &mut *self.sink);
        functions_of(item, &mut |u| {
            t.nested_fns += 1;
            sink(u);
        });
    }

    // `vec![..]`, `assert!(..)`, `println!(..)`: when the body is a comma-separated list
    // of expressions, parse and compile it, so closures inside macros are found too.
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        if let Ok(args) = m.parse_body_with(Punctuated::<Expr, syn::Token![,]>::parse_terminated) {
            self.t.macro_bodies += 1;
            // `args` is local, so walk it with a compiler borrowed for this scope only.
            let mut inner = Compiler { t: &mut *self.t, sink: &mut *self.sink };
            for a in &args {
                inner.visit_expr(a);
            }
        }
    }
}

/// Compiles one unit into `t`, pushing the follow-ons it finds through `sink`.
fn compile(unit: &Unit, t: &mut Totals, sink: &mut dyn FnMut(Unit)) {
    t.units += 1;
    let mut c = Compiler { t, sink };
    let parsed = match unit.kind {
        Kind::Fn => syn::parse_str::<syn::ItemFn>(&unit.text).map(|f| c.visit_block(&f.block)),
        Kind::Method => syn::parse_str::<syn::ImplItemFn>(&unit.text).map(|f| c.visit_block(&f.block)),
        Kind::TraitMethod => {
            syn::parse_str::<syn::TraitItemFn>(&unit.text).map(|f| f.default.iter().for_each(|b| c.visit_block(b)))
        }
        Kind::Closure => syn::parse_str::<syn::ExprClosure>(&unit.text).map(|e| c.visit_expr(&e.body)),
    };
    if parsed.is_err() {
        c.t.errors += 1;
    }
}

/// The unit's name, for the symbol table: the identifier after `fn`, or `closure`.
fn unit_name(unit: &Unit) -> &str {
    match unit.kind {
        Kind::Closure => "closure",
        _ => unit.text.split(' ').skip_while(|&tok| tok != "fn").nth(1).unwrap_or("?"),
    }
}

/// One unit's diagnostic line, as a compiler would print a note per function.
fn diagnostic(unit: &Unit, t: &Totals) -> String {
    format!("{}: {} stmts, {} exprs{}", unit_name(unit), t.stmts, t.exprs, if t.errors > 0 { ", error" } else { "" })
}

/// The reference for `collecting`: the diagnostics of a sequential walk that visits
/// each unit's follow-ons right after it, in the order it found them.
fn sequential_diagnostics(seeds: Vec<Unit>) -> (Vec<String>, HashSet<String>) {
    let mut stack: Vec<Unit> = seeds.into_iter().rev().collect();
    let (mut lines, mut symbols) = (Vec::new(), HashSet::new());
    while let Some(u) = stack.pop() {
        let (mut t, mut children) = (Totals::default(), Vec::new());
        compile(&u, &mut t, &mut |child| children.push(child));
        lines.push(diagnostic(&u, &t));
        symbols.insert(unit_name(&u).to_owned());
        stack.extend(children.into_iter().rev());
    }
    (lines, symbols)
}

/// What each thread keeps across its tasks in `collecting`.
#[derive(Default)]
struct PerThread {
    totals: Totals,
    symbols: HashSet<String>,
}

/// The queue as an embedding compiler runs it: diagnostics in source order from
/// `run_collect`, totals and interned names in per-thread state, merged at the end.
fn collecting(pool: &Pool, seeds: Vec<Unit>) -> (Totals, Vec<String>, HashSet<String>) {
    let local = WorkerLocal::new(pool, || RefCell::new(PerThread::default()));
    let lines = pool.run_collect(seeds, |u, ctx| {
        let mut t = Totals::default();
        compile(&u, &mut t, &mut |child| ctx.push(child));
        let mut mine = local.get().borrow_mut();
        mine.totals = mine.totals.add(t);
        if !mine.symbols.contains(unit_name(&u)) {
            mine.symbols.insert(unit_name(&u).to_owned());
        }
        diagnostic(&u, &t)
    });
    let (mut totals, mut symbols) = (Totals::default(), HashSet::new());
    for mine in local.into_vec() {
        let mine = mine.into_inner();
        totals = totals.add(mine.totals);
        symbols.extend(mine.symbols);
    }
    (totals, lines, symbols)
}

/// The queue as a plain LIFO stack on one thread.
fn sequential(seeds: Vec<Unit>) -> Totals {
    let mut t = Totals::default();
    let mut stack = seeds;
    while let Some(u) = stack.pop() {
        compile(&u, &mut t, &mut |child| stack.push(child));
    }
    t
}

/// The same queue on the pool: follow-ons go to the worker's own deque (and get stolen),
/// and each thread sums into its own `Totals`.
fn parallel(pool: &Pool, seeds: Vec<Unit>) -> Totals {
    let task = |mut t: Totals, u: Unit, ctx: &mut fanout::Ctx<'_, Unit>| {
        compile(&u, &mut t, &mut |child| ctx.push(child));
        t
    };
    pool.run_fold(seeds, Totals::default, task, Totals::add)
}

/// The queue with `rayon::scope`: every unit and follow-on is a spawned task.
fn rayon_scope(pool: &rayon::ThreadPool, seeds: Vec<Unit>) -> Totals {
    fn go<'s>(s: &rayon::Scope<'s>, total: &'s std::sync::Mutex<Totals>, u: Unit) {
        let mut t = Totals::default();
        let mut children = Vec::new();
        compile(&u, &mut t, &mut |child| children.push(child));
        let mut sum = total.lock().unwrap();
        *sum = sum.add(t);
        drop(sum);
        for child in children {
            s.spawn(move |s| go(s, total, child));
        }
    }
    let total = std::sync::Mutex::new(Totals::default());
    pool.install(|| {
        rayon::scope(|s| {
            for u in seeds {
                let total = &total;
                s.spawn(move |s| go(s, total, u));
            }
        })
    });
    total.into_inner().unwrap()
}

/// The static split: the seeds dealt out round-robin to `threads` threads spawned for
/// this run (the caller is one), each running the sequential queue on its share.
fn static_split(threads: usize, seeds: Vec<Unit>) -> Totals {
    let mut shares: Vec<Vec<Unit>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, u) in seeds.into_iter().enumerate() {
        shares[i % threads].push(u);
    }
    std::thread::scope(|s| {
        let mut shares = shares.into_iter();
        let mine = shares.next().unwrap_or_default();
        let handles: Vec<_> = shares.map(|share| s.spawn(move || sequential(share))).collect();
        handles.into_iter().fold(sequential(mine), |acc, h| acc.add(h.join().unwrap()))
    })
}

/// All `.rs` files under `dir`, skipping hidden and `target*` directories, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && !name.starts_with("target") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    out.sort();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let dir = args.iter().find(|a| !a.starts_with("--")).map_or(env!("CARGO_MANIFEST_DIR"), |s| s.as_str());
    let reps = if quick { 3 } else { 9 };
    let mut builder = Pool::builder();
    let mut jobserver_note = String::new();
    if args.iter().any(|a| a == "--jobserver") {
        // SAFETY: called before this program opens or closes any file descriptor, so
        // the descriptors named in the environment are still make's, as `from_env`
        // requires.
        let client = match unsafe { jobserver::Client::from_env() } {
            Some(client) => {
                jobserver_note = "the jobserver from the environment".into();
                client
            }
            None => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                jobserver_note = format!("a jobserver of its own with {} tokens", cores - 1);
                jobserver::Client::new(cores - 1).expect("jobserver")
            }
        };
        builder = builder.jobserver(client);
    }
    let pool = builder.build().expect("build pool");

    // Front end, untimed by the compile: read sequentially, parse on the pool, and turn
    // each file's functions into seeds (syn::Error is not Send, so keep only Option).
    let start = Instant::now();
    let mut paths = Vec::new();
    rust_files(Path::new(dir), &mut paths);
    let sources: Vec<String> = paths.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect();
    let per_file: Vec<Option<Vec<Unit>>> = pool.map(&sources, |src| {
        let file = syn::parse_file(src).ok()?;
        let mut units = Vec::new();
        file.items.iter().for_each(|it| functions_of(it, &mut |u| units.push(u)));
        Some(units)
    });
    let parse_time = start.elapsed();
    let parsed = per_file.iter().filter(|f| f.is_some()).count();
    let seeds: Vec<Unit> = per_file.into_iter().flatten().flatten().collect();

    // Interleave the variants, in a new order every repetition, so that machine noise
    // hits them alike; check every result.
    let rayon_pool = rayon::ThreadPoolBuilder::new().num_threads(pool.num_threads()).build().expect("rayon pool");
    let threads = pool.num_threads();
    let (want_lines, want_symbols) = sequential_diagnostics(seeds.clone());
    let names = ["sequential Vec stack", "fanout run_fold", "rayon::scope", "static split", "fanout run_collect"];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    let mut expected = None;
    let mut order: Vec<usize> = (0..names.len()).collect();
    for rep in 0..reps {
        order.rotate_left(1 + rep % (names.len() - 1));
        for &v in &order {
            let s = seeds.clone();
            std::thread::sleep(Duration::from_millis(10));
            let t0 = Instant::now();
            let got = match v {
                0 => sequential(s),
                1 => parallel(&pool, s),
                2 => rayon_scope(&rayon_pool, s),
                3 => static_split(threads, s),
                _ => {
                    let (totals, lines, symbols) = collecting(&pool, s);
                    let elapsed = t0.elapsed();
                    if lines != want_lines || symbols != want_symbols {
                        eprintln!("MISMATCH: run_collect's diagnostics or symbols differ from the sequential walk's");
                        std::process::exit(1);
                    }
                    times[v].push(elapsed);
                    totals
                }
            };
            if v != 4 {
                times[v].push(t0.elapsed());
            }
            if expected.is_some_and(|e| e != got) {
                eprintln!("MISMATCH: {} counted {got:?}\n  expected {expected:?}", names[v]);
                std::process::exit(1);
            }
            expected = Some(got);
        }
    }
    let t = expected.expect("at least one repetition");
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    let seq = medians[0];

    println!("compile_queue: {dir}");
    if !jobserver_note.is_empty() {
        println!("  jobserver        fanout's workers hold tokens of {jobserver_note} (the pool is unpinned)");
    }
    println!("  files            {} found, {parsed} parsed with syn ({} failed)", paths.len(), paths.len() - parsed);
    println!("  parse            {parse_time:.2?} (read + syn::parse_file on the pool; not in the timings below)");
    println!("  functions        {} (free fns, impl methods, trait default methods)", seeds.len());
    println!("  follow-ons       {} closures + {} nested fns, pushed while compiling", t.closures, t.nested_fns);
    println!("  units compiled   {} ({} failed to re-parse)", t.units, t.errors);
    println!("  statements       {}", t.stmts);
    println!("  expressions      {} ({} macro bodies parsed as expressions)", t.exprs, t.macro_bodies);
    println!(
        "  compile, median of {reps} interleaved runs from parked pools, {threads} threads \
         (each unit re-parses its own tokens, then is walked):"
    );
    for (name, time) in names.iter().zip(&medians) {
        println!("    {name:<22} {time:>10.2?}   {:.2}x", seq.as_secs_f64() / time.as_secs_f64());
    }
    println!("  totals identical in all {} runs: yes", reps * names.len());
    println!(
        "  run_collect: {} diagnostic lines and {} distinct names, identical to the sequential walk's in all {reps} runs \
         (its row includes a per-thread WorkerLocal and one String per unit)",
        want_lines.len(),
        want_symbols.len()
    );
}
