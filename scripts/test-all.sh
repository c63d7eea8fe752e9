#!/usr/bin/env bash
# Every test of fanout: unit, integration, doc and stress tests; the loom model checks
# and their mutants; Miri on the unsafe core when a nightly toolchain with Miri is
# available (skipped with a message otherwise).
#
#   bash scripts/test-all.sh
#
# FANOUT_STRESS_CASES=10000 bash scripts/test-all.sh   runs the long stress suite.
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n=== %s\n' "$*"; }

section "unit, integration, doc and stress tests (release)"
cargo test --release --workspace

section "unit and integration tests (debug: debug assertions and overflow checks)"
start=$(date +%s)
# The one skipped test judges release-mode timing (debug items look slow enough to share).
cargo test --workspace --lib --tests -- --skip a_range_too_small_to_share_wakes_nobody
echo "debug tests: passed in $(( $(date +%s) - start )) s"

section "loom model checks"
bash loom-tests/run.sh

section "loom mutants (each must be caught)"
bash loom-tests/run.sh --mutants

section "Miri (unsafe core: deque, private stack and pool unit tests)"
if ! command -v rustup >/dev/null 2>&1 || ! rustup toolchain list | grep -q '^nightly'; then
    echo "SKIP miri: no nightly toolchain on this machine (Miri needs nightly)"
else
    if ! cargo +nightly miri --version >/dev/null 2>&1; then
        echo "miri not installed for nightly; trying: rustup component add --toolchain nightly miri rust-src"
        timeout 300 rustup component add --toolchain nightly miri rust-src || true
    fi
    if cargo +nightly miri --version >/dev/null 2>&1; then
        start=$(date +%s)
        MIRIFLAGS="-Zmiri-disable-isolation" cargo +nightly miri test --target-dir target-miri --lib -- deque:: api:: stack::
        echo "miri: passed in $(( $(date +%s) - start )) s"
    else
        echo "SKIP miri: the miri component could not be installed for nightly"
    fi
fi
