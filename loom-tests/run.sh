#!/usr/bin/env bash
# Runs fanout's loom model checks (loom-tests/tests/*.rs).
#
#   bash loom-tests/run.sh            the suite, in release mode with debug assertions
#   bash loom-tests/run.sh --mutants  checks that the models catch the built-in mutants
#
# The normal mode builds into target-loom/ and prints how long the build and the models
# took. LOOM_MAX_PREEMPTIONS defaults to 2; some cheap models use 3 whatever it says,
# and the costliest ones never go above 2 (see each model's `Bound`).
#
# The mutant mode builds once more per mutant, with one of fanout's internal `mutant_*`
# Cargo features, into target-loom/ as well: the flags are the suite's, so only fanout
# and the model file are rebuilt, never the dependencies. A mutant feature breaks its
# protocol only under --cfg loom (it changes nothing in any other build):
#   mutant_deque           drops the SeqCst fences of the deque's pop/steal pair;
#   mutant_sleep           drops the SeqCst fences of prepare/notify_one (and the
#                          worker loop's re-check after prepare);
#   mutant_gate            makes the stream stage gate forget to count waiters;
#   mutant_activate_late   an idle participant takes an item before it increments
#                          `active` (termination rule 2 broken); caught by the
#                          loom-only check that no item runs after its run was
#                          declared done (`Run::burst`);
#   mutant_cancel_unlocked `CancelToken::child` reads the parent's flag before taking
#                          the child-list lock;
#   mutant_window_handoff  a stream's deposit of the consumer's next batch does not
#                          wake the waiting consumer (off by one);
#   mutant_deque_release   the owner's `bottom` store in `push` is Relaxed, so a thief
#                          can read a slot before its write;
#   mutant_deque_push_acquire  `push` loads `head` Relaxed, so the owner may overwrite a
#                          slot a thief's read of which does not happen before;
#   mutant_deque_steal_acquire a thief's `claim` loads `bottom` Relaxed, so it may read
#                          a slot before the owner's write of it;
#   mutant_deque_release_cas   a thief's `release` CAS is Acquire only (no Release), so
#                          the owner may overwrite a slot before the thief's read of it;
#   mutant_seeds_late      the caller pulls its next chunk of seeds only after going
#                          idle (termination rule 3 broken), so a run can be declared
#                          done with seeds not yet run.
#   mutant_withdraw_handoff  a thread withdrawing a job that parked does not hand the
#                          last leave's wake-up on, so a second thread withdrawing the
#                          same job at once parks for good.
#   mutant_step_back_early a run's caller stepping back goes idle before it shares its
#                          private items (rule 1 broken), so the run can be declared
#                          done with them unshared; caught by the loom-only check that
#                          a run declared done leaves no work behind.
#   mutant_no_come_back    a run's caller that stepped back waits for a worker even
#                          when none is inside, so it waits for good when the only
#                          worker is held by a run that waits for the caller's.
# The steal claim CAS (AcqRel) has no mutant: Relaxed survives every deque model, since
# slot reads are ordered by `bottom` and slot reuse by `release`, not by the claim.
# mutant_sleep is also checked against a whole-pool model (a worker woken for
# three runs in a row), whose bounded wait reports the lost wake-up.
# There is no mutant for rule 4's re-check or for the activation epoch: with rules 1-3
# intact the count reaches zero only when no item is left anywhere, so no model can
# tell them apart from the real code (see ARCHITECTURE.md).
# Each model listed below must then FAIL under loom. Each model runs in a process of
# its own, because after a failure loom can abort the whole test binary while
# unwinding.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly BASE_FLAGS="--cfg loom -C debug-assertions"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"

# Models that must fail under each mutant (they pass on the real code; the models in
# tests/deque_idle.rs are left out, since they do not depend on the fences).
readonly DEQUE_CATCHERS=(owner_vs_one_thief owner_vs_two_thieves steal_batch_and_pop_vs_owner)
readonly SLEEP_CATCHERS=(no_lost_wakeup no_lost_wakeup_two_workers)
readonly ACTIVATE_LATE_CATCHERS=(run_tree_depth_1 run_fan_out_4 two_runs_in_a_row)
readonly GATE_CATCHERS=(gate_of_one_three_threads gate_of_one_two_threads_twice gate_of_two_three_threads gate_of_one_three_threads_twice)
readonly SLEEP_POOL_CATCHERS=(worker_woken_for_three_runs)
readonly CANCEL_UNLOCKED_CATCHERS=(children_made_during_a_cancel_are_cancelled a_child_cancel_stays_below tidying_an_unheld_child_during_a_cancel)
# The other stream models do not catch it: a worker leaving the stream unparks the
# consumer too, which ends its wait as the lost wake-up would have.
readonly WINDOW_HANDOFF_CATCHERS=(window_2_stage_waits_for_consumer)
# The other deque models push every item before the thieves start (a spawn orders it).
readonly DEQUE_RELEASE_CATCHERS=(owner_vs_one_thief wrap_around)
# Only wrap_around pushes into a slot a thief has read (push_or_spill reuses it via `room`).
readonly DEQUE_PUSH_ACQUIRE_CATCHERS=(wrap_around)
readonly DEQUE_STEAL_ACQUIRE_CATCHERS=(owner_vs_one_thief wrap_around)
readonly DEQUE_RELEASE_CAS_CATCHERS=(wrap_around push_or_spill_vs_thief)
readonly SEEDS_LATE_CATCHERS=(seeds_pulled_in_chunks)
readonly WITHDRAW_HANDOFF_CATCHERS=(two_withdrawers_and_a_leaving_worker)
readonly STEP_BACK_EARLY_CATCHERS=(step_back_with_follow_ons step_back_with_seeds_left)
readonly NO_COME_BACK_CATCHERS=(caller_comes_back_when_no_worker_comes)

run_suite() {
    local start build_secs status=0
    start=$SECONDS
    RUSTFLAGS="$BASE_FLAGS" cargo test -p fanout-loom-tests --release --target-dir target-loom --no-run
    build_secs=$((SECONDS - start))

    start=$SECONDS
    # --no-fail-fast: a failing model in one file must not hide the other files.
    RUSTFLAGS="$BASE_FLAGS" cargo test -p fanout-loom-tests --release --target-dir target-loom \
        --no-fail-fast -- --nocapture || status=$?
    local test_secs=$((SECONDS - start))

    echo
    echo "loom build took ${build_secs}s; loom models took ${test_secs}s (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS)"
    if ((status != 0)); then
        echo "loom suite FAILED" >&2
    fi
    return "$status"
}

# check_mutant MUTANT TEST_FILE MODEL...: every MODEL of tests/TEST_FILE.rs must fail when
# fanout is built with its feature MUTANT.
check_mutant() {
    local mutant=$1 file=$2
    shift 2
    local build=(cargo test -p fanout-loom-tests --release --target-dir target-loom --features "fanout/$mutant" --test "$file")
    local log missed=0

    echo "== building with the $mutant feature"
    # A build failure must not pass for a caught mutant: build first, on its own.
    RUSTFLAGS="$BASE_FLAGS" "${build[@]}" --no-run

    log=$(mktemp)
    for model in "$@"; do
        if RUSTFLAGS="$BASE_FLAGS" "${build[@]}" -- --exact "$model" --test-threads 1 >"$log" 2>&1; then
            echo "mutant NOT caught: $mutant survives $file::$model"
            missed=1
        elif grep -q "panicked at" "$log"; then
            # The first panic message line says what loom (or the model) saw.
            local why
            why=$(grep -A1 -m1 "panicked at" "$log" | tail -n1)
            echo "mutant caught: $mutant by $file::$model ($why)"
        else
            echo "mutant check broken: $file::$model failed without a panic; output follows" >&2
            cat "$log" >&2
            missed=1
        fi
    done
    rm -f "$log"
    return "$missed"
}

run_mutants() {
    local start=$SECONDS status=0
    check_mutant mutant_deque deque "${DEQUE_CATCHERS[@]}" || status=1
    check_mutant mutant_sleep sleep "${SLEEP_CATCHERS[@]}" || status=1
    check_mutant mutant_sleep pool "${SLEEP_POOL_CATCHERS[@]}" || status=1
    check_mutant mutant_gate gate "${GATE_CATCHERS[@]}" || status=1
    check_mutant mutant_activate_late pool "${ACTIVATE_LATE_CATCHERS[@]}" || status=1
    check_mutant mutant_cancel_unlocked cancel "${CANCEL_UNLOCKED_CATCHERS[@]}" || status=1
    check_mutant mutant_window_handoff stream "${WINDOW_HANDOFF_CATCHERS[@]}" || status=1
    check_mutant mutant_deque_release deque "${DEQUE_RELEASE_CATCHERS[@]}" || status=1
    check_mutant mutant_deque_push_acquire deque "${DEQUE_PUSH_ACQUIRE_CATCHERS[@]}" || status=1
    check_mutant mutant_deque_steal_acquire deque "${DEQUE_STEAL_ACQUIRE_CATCHERS[@]}" || status=1
    check_mutant mutant_deque_release_cas deque "${DEQUE_RELEASE_CAS_CATCHERS[@]}" || status=1
    check_mutant mutant_seeds_late pool "${SEEDS_LATE_CATCHERS[@]}" || status=1
    check_mutant mutant_withdraw_handoff registry "${WITHDRAW_HANDOFF_CATCHERS[@]}" || status=1
    check_mutant mutant_step_back_early step_back "${STEP_BACK_EARLY_CATCHERS[@]}" || status=1
    check_mutant mutant_no_come_back step_back "${NO_COME_BACK_CATCHERS[@]}" || status=1
    echo
    echo "mutant checks took $((SECONDS - start))s"
    if ((status != 0)); then
        echo "some mutant was NOT caught" >&2
    else
        echo "all mutants caught"
    fi
    return "$status"
}

case "${1:-}" in
    "") run_suite ;;
    --mutants) run_mutants ;;
    *)
        echo "usage: bash loom-tests/run.sh [--mutants]" >&2
        exit 2
        ;;
esac
