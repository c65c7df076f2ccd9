#!/usr/bin/env bash
# Run every fuzz target for SECONDS each (default 60), one after the other.
#
#   fuzz/run.sh 30                              # what CI runs
#   SHMQ_FUZZ_AVOID=counter-overflow fuzz/run.sh 600   # steer around a known, unfixed bug
#
# Exits non-zero if any target crashed, hung (an input running over 10 s) or ran out of memory;
# the failing input is in fuzz/artifacts/TARGET/ and its base64 is printed below the panic.
# Reproduce one with: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET artifacts/TARGET/crash-...
#
# Inputs that found new coverage accumulate in fuzz/corpus/TARGET (not committed); the small
# committed seeds in fuzz/seeds/TARGET are read as a second corpus.
set -euo pipefail
secs=${1:-60}
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1 # cargo-fuzz needs -Z flags (sanitizer, coverage) on a stable toolchain
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

targets=$(cargo fuzz list)
start=$(date +%s)
# One build of every target, with the flags `cargo fuzz run` uses (release, debug assertions and
# overflow checks, AddressSanitizer), so the runs below do not rebuild.
cargo fuzz build
echo "fuzz: build took $(( $(date +%s) - start )) s"

mkdir -p target/logs
passed=0
failed=0
for t in $targets; do
    mkdir -p "corpus/$t"
    corpora=("corpus/$t")
    if [ -d "seeds/$t" ]; then corpora+=("seeds/$t"); fi
    log="target/logs/$t.log"
    if cargo fuzz run "$t" "${corpora[@]}" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
        cov=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 | sed -E 's/.*(cov: [0-9]+).*(corp: [^ ]+).*/\1, \2/')
        echo "fuzz: $t ok: ${runs:-?} runs in ${secs} s (${rate:-?} exec/s), ${cov}"
        passed=$((passed + 1))
    else
        echo "fuzz: $t FAILED (full log: fuzz/$log)"
        # The panic message (or sanitizer report) and the failing input.
        grep -E -A4 "panicked at|ERROR: (AddressSanitizer|libFuzzer)|^SUMMARY" "$log" | grep -v '^ *#[0-9]* 0x' | head -n 40 || true
        grep -E -A40 '^(Base64:|Failing input:)' "$log" | head -n 60 || true
        failed=$((failed + 1))
    fi
done

echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
