#!/usr/bin/env bash
# Fuzzes the parsers vodfleet owns with cargo-fuzz (libFuzzer + AddressSanitizer),
# each target for a given time (issue 9, row 11; results in docs/RELIABILITY.md).
#
#   scripts/soak/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
#   SECONDS_PER_TARGET  default 3600 (1 h each)
#   TARGET              default: every target of fuzz/Cargo.toml
#                       (command, rtmp_messages, flv_tags, rtmp_url, signature, hls_playlist)
#
# Environment:
#   VF_FUZZ_OUT        where logs and the summary go (default .vodfleet/fuzz)
#   VF_FUZZ_TOOLCHAIN  rustup toolchain (default nightly when installed; otherwise
#                      the default toolchain with RUSTC_BOOTSTRAP=1, which lets a
#                      stable compiler take the -Z sanitizer flags cargo-fuzz passes)
#   VF_FUZZ_RSS_MB     libFuzzer -rss_limit_mb (default 2048)
#   VF_FUZZ_MALLOC_MB  libFuzzer -malloc_limit_mb: one allocation larger than
#                      this is a failure ("unbounded allocation"; default 256)
#   VF_FUZZ_TIMEOUT    libFuzzer -timeout: one input running longer is a hang
#                      (default 10 s)
#
# Each target's working corpus is fuzz/corpus/TARGET (not committed: it grows);
# the committed seeds in fuzz/seeds/TARGET are read as a second corpus directory.
# A crash, hang or oversized allocation leaves its input in fuzz/artifacts/TARGET;
# reproduce it with `cargo fuzz run TARGET fuzz/artifacts/TARGET/<file>`.
# Prints one line per target (executions, rate, corpus size, failures) and exits
# 1 when any target failed.
set -euo pipefail
VF_NAME=fuzz
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
vf_cargo_path

secs=${1:-3600}
shift || true
[[ $secs =~ ^[0-9]+$ ]] || vf_die "SECONDS_PER_TARGET must be a whole number, got $secs"
fuzz_dir=$VF_ROOT/fuzz
if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(sed -n 's/^name = "\([a-z0-9_]*\)"$/\1/p' "$fuzz_dir/Cargo.toml" | grep -v '^vodfleet-fuzz$')
fi
out=${VF_FUZZ_OUT:-$VF_ROOT/.vodfleet/fuzz}
mkdir -p "$out"

if [[ -n ${VF_FUZZ_TOOLCHAIN:-} ]]; then
    toolchain=(+"$VF_FUZZ_TOOLCHAIN")
elif rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    toolchain=()
fi
if [[ ${toolchain[*]:-} != +nightly* ]]; then
    vf_log "not a nightly toolchain: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's -Z flags"
    export RUSTC_BOOTSTRAP=1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    vf_log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd "$VF_ROOT"
failed=0
summary=$out/summary.txt
: >"$summary"
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t" "fuzz/artifacts/$t"
    vf_log "$t: building"
    cargo "${toolchain[@]}" fuzz build -O "$t"
    log=$out/$t.log
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    vf_log "$t: running for ${secs} s (log $log)"
    set +e
    cargo "${toolchain[@]}" fuzz run -O "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" \
        -timeout="${VF_FUZZ_TIMEOUT:-10}" \
        -rss_limit_mb="${VF_FUZZ_RSS_MB:-2048}" \
        -malloc_limit_mb="${VF_FUZZ_MALLOC_MB:-256}" \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    artifacts=$(($(find "fuzz/artifacts/$t" -type f | wc -l) - before))
    verdict=ok
    if ((rc != 0)) || ((artifacts > 0)); then
        verdict="FAILED (exit $rc, $artifacts new artifact(s) in fuzz/artifacts/$t)"
        failed=1
        grep -m3 -E 'ERROR: libFuzzer|panicked at|deadly signal|out-of-memory|malloc\(|timeout' "$log" >&2 || true
    fi
    line="$t: ${secs} s, ${execs:-?} executions (${rate:-?}/s), corpus ${corpus} inputs: $verdict"
    echo "$line" | tee -a "$summary"
done
vf_log "summary in $summary ($(date -u +%FT%TZ), commit $(git rev-parse --short HEAD))"
exit "$failed"
