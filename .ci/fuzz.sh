#!/usr/bin/env bash
# Runs every `cargo fuzz` target for a bounded time from the committed seed
# corpus (fuzz/corpus/<target>, left unchanged: new inputs go to a temporary
# folder). Any panic, hang (one input over 10 s) or 5xx fails the run, and the
# input that did it is printed, base64-encoded, with the command that replays it.
#
# Usage: .ci/fuzz.sh [seconds per target]   (default 30; FUZZ_SECONDS too)
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-${FUZZ_SECONDS:-30}}
CARGO_FUZZ_VERSION=0.13.2
TARGETS=(config policy api sshd_log)

if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$CARGO_FUZZ_VERSION" ]; then
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
# Only the stable toolchain is installed; cargo fuzz needs nightly flags
# (-Zsanitizer, coverage instrumentation), which this unlocks on stable.
export RUSTC_BOOTSTRAP=1
# No sanitizer: safe Rust (unsafe_code is forbidden) gains little from
# AddressSanitizer, and it would double the build. Panics, hangs and 5xx are
# what these targets look for.
# cargo fuzz defaults to one codegen unit per crate, which leaves a core idle
# for most of the build; with 16 the build takes about half as long.
fuzz=(cargo fuzz)
options=(--sanitizer none --codegen-units 16)
"${fuzz[@]}" build "${options[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for target in "${TARGETS[@]}"; do
    echo "== fuzz $target (${SECONDS_PER_TARGET}s)"
    mkdir -p "$work/$target" "fuzz/artifacts/$target"
    if ! "${fuzz[@]}" run "${options[@]}" "$target" "$work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$work/$target.log" 2>&1; then
        status=1
        tail -n 60 "$work/$target.log"
        for input in "fuzz/artifacts/$target"/*; do
            [ -f "$input" ] || continue
            echo "-- reproducer $input (base64):"
            base64 -w0 "$input"
            echo
            echo "-- replay: RUSTC_BOOTSTRAP=1 cargo fuzz run ${options[*]} $target $input"
        done
    else
        grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' "$work/$target.log" || true
    fi
done
exit "$status"
