#!/usr/bin/env bash
# Issue 10, Redis Cluster: runs tests/tests/redis_cluster.rs over and over on a
# Redis Cluster of its own (six redis-server nodes on free ports, never the
# machine's own Redis): start, worker SIGKILL failover, terminate with the 48 h
# resume record, resume; then kill -9 of the master holding the task, its
# replica promoted while the stream goes on. Both tests are also in the test
# command (one round); this repeats them to catch what one round does not.
# The latest result is in docs/RELIABILITY.md ("Redis Cluster (issue 10)").
#
#   scripts/soak/redis-cluster.sh          # 5 rounds
#
# Environment:
#   VODFLEET_SOAK_ROUNDS  rounds (default 5)
#   VF_SOAK_OUT           where logs and summary.txt go (default .vodfleet/soak)
# Exits non-zero if any round failed.
set -euo pipefail
VF_NAME=soak
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$VF_ROOT"

rounds=${VODFLEET_SOAK_ROUNDS:-5}
out=${VF_SOAK_OUT:-$VF_ROOT/.vodfleet/soak}
mkdir -p "$out"
stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
log="$out/redis-cluster-$(date -u +%Y%m%dT%H%M%SZ).log"

vf_cargo_path
cargo build --bins --locked
cargo test --locked -p vodfleet-tests --test redis_cluster --no-run
vf_log "redis-cluster: $rounds rounds (log: $log)"
passed=0
failed=0
for i in $(seq 1 "$rounds"); do
    echo "=== round $i" >>"$log"
    if cargo test --locked -p vodfleet-tests --test redis_cluster -- --nocapture >>"$log" 2>&1; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
done
# The figures the tests printed: promotion and renewal times, worker failover.
grep -E '^(master [0-9]+ killed|first renewal after the kill|SIGKILL → live again|fleet on a Redis Cluster up)' "$log" || true
verdict=$([[ $failed == 0 ]] && echo PASS || echo FAIL)
line="$stamp $commit redis-cluster $verdict: $passed passed, $failed failed of $rounds rounds ($log)"
echo "$line" | tee -a "$out/summary.txt"
[[ $failed == 0 ]]
