#!/usr/bin/env bash
# Every test of fanout: unit, integration, doc and stress tests; the loom model checks
# and their mutants; Miri on the unsafe core when a nightly toolchain with Miri is
# available (skipped with a message otherwise).
#
#   bash scripts/test-all.sh
#
# The stress suite runs 10,000 cases here (FANOUT_STRESS_CASES overrides; a plain
# `cargo test` runs 300).
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n=== %s\n' "$*"; }

section "unit, integration, doc and stress tests (release)"
FANOUT_STRESS_CASES="${FANOUT_STRESS_CASES:-10000}" cargo test --release --workspace

section "unit and integration tests (debug: debug assertions and overflow checks)"
start=$(date +%s)
# The one skipped test judges release-mode timing (debug items look slow enough to share).
cargo test --workspace --lib --tests -- --skip a_range_too_small_to_share_wakes_nobody
echo "debug tests: passed in $(( $(date +%s) - start )) s"

section "loom model checks"
bash loom-tests/run.sh

section "loom mutants (each must be caught)"
bash loom-tests/run.sh --mutants

# Miri and ThreadSanitizer need nightly with rust-src (and Miri's component): installed
# here when missing; a check that cannot get them says SKIP and why.
have_nightly() {
    command -v rustup >/dev/null 2>&1 || return 1
    if ! rustup toolchain list | grep -q '^nightly'; then
        echo "no nightly toolchain; trying: rustup toolchain install nightly --profile minimal"
        timeout 600 rustup toolchain install nightly --profile minimal || return 1
    fi
    local missing=()
    for c in "$@"; do
        rustup +nightly component list --installed 2>/dev/null | grep -q "^$c" || missing+=("$c")
    done
    if ((${#missing[@]})); then
        echo "trying: rustup component add --toolchain nightly ${missing[*]}"
        timeout 600 rustup component add --toolchain nightly "${missing[@]}" || return 1
    fi
}

section "Miri (unsafe core: deque, per-thread reuse, private stack, pool, stream registry, scoped streams, map_range)"
if have_nightly miri rust-src && cargo +nightly miri --version >/dev/null 2>&1; then
    start=$(date +%s)
    MIRIFLAGS="-Zmiri-disable-isolation" cargo +nightly miri test --target-dir target-miri --lib -- deque:: reuse:: api:: stack:: share:: spare:: range::tests:: registry:: stream::tests:: local:: collect:: crew::
    # Scoped streams leak iterators on purpose (the scope must end their streams), so
    # their leaks are expected; use-after-free of what they borrowed is what Miri checks.
    MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-ignore-leaks" cargo +nightly miri test --target-dir target-miri --lib -- stream::scope::
    echo "miri: passed in $(( $(date +%s) - start )) s"
else
    echo "SKIP miri: could not install nightly with the miri and rust-src components"
fi

section "ThreadSanitizer (integration tests, nightly -Zsanitizer=thread -Zbuild-std)"
# The standard library is rebuilt with the sanitizer (-Zbuild-std), so TSan sees its
# atomics and locks too. TSan does not model fences; see ARCHITECTURE.md (Checks).
if have_nightly rust-src; then
    start=$(date +%s)
    target=$(rustc -vV | sed -n 's/^host: //p')
    tsan=(cargo +nightly test -Zbuild-std --target "$target" --target-dir target-tsan --release
        --test core --test control --test stream --test strategies --test stress --test bad_input)
    RUSTFLAGS="-Zsanitizer=thread" "${tsan[@]}" --no-run
    # A build without the instrumentation would pass for a clean run: check it is there.
    bin=$(find "target-tsan/$target/release/deps" -maxdepth 1 -type f -executable -name 'core-*' | head -n1)
    # (grep without -q reads all of nm's output: under pipefail an early exit would
    # fail nm with SIGPIPE.)
    if ! nm "$bin" | grep __tsan_read >/dev/null; then
        echo "ThreadSanitizer build has no instrumentation ($bin)" >&2
        exit 1
    fi
    # halt_on_error: the first report fails the test binary (exit code 66);
    # allocator_may_return_null: an allocation too large to serve fails as under the
    # system allocator (bad_input asks for one on purpose) instead of aborting.
    RUSTFLAGS="-Zsanitizer=thread" TSAN_OPTIONS="halt_on_error=1 allocator_may_return_null=1" \
        FANOUT_STRESS_CASES=300 "${tsan[@]}"
    echo "thread sanitizer: passed in $(( $(date +%s) - start )) s"
else
    echo "SKIP thread sanitizer: could not install nightly with rust-src"
fi
