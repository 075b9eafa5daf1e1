#!/usr/bin/env bash
# Fault soaks of issue 9 that do not fit the test command's time budget; their
# latest results are in docs/RELIABILITY.md. Each runs one ignored test of
# tests/tests/fleet_faults on a private RabbitMQ node and Redis (never the
# machine's own), prints its figures, and appends a line to the summary.
#
#   scripts/soak/faults.sh broker-kill   # row 1: 10,000 confirmed commands, RabbitMQ kill -9 twice
#   scripts/soak/faults.sh broker-down   # row 6: RabbitMQ down 60 s, lease 30 s
#
# Environment:
#   VODFLEET_SOAK_COMMANDS  commands for broker-kill (default 10000)
#   VODFLEET_SOAK_KILLS     kills for broker-kill (default 2)
#   VODFLEET_SOAK_DOWN_SECS outage for broker-down (default 60)
#   VF_SOAK_OUT             where logs and summary.txt go (default .vodfleet/soak)
# Exits with the test's status (0: the row holds).
set -euo pipefail
VF_NAME=soak
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$VF_ROOT"

case "${1:-}" in
broker-kill) test_name=soak_confirmed_commands_across_broker_kills ;;
broker-down) test_name=soak_broker_down_for_60_s ;;
*) vf_die "usage: $0 broker-kill|broker-down" ;;
esac

out=${VF_SOAK_OUT:-$VF_ROOT/.vodfleet/soak}
mkdir -p "$out"
stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
log="$out/$1-$(date -u +%Y%m%dT%H%M%SZ).log"

vf_cargo_path
cargo build --bins --locked
vf_log "$1: $test_name (log: $log)"
rc=0
cargo test --locked -p vodfleet-tests --test fleet_faults -- \
    --ignored --exact --nocapture "broker_$([[ $1 == broker-kill ]] && echo kill || echo down)::$test_name" \
    >"$log" 2>&1 || rc=$?
# The figures the test printed, then the verdict.
grep -E '^(kill -9|[0-9]+ commands confirmed|tasks:|coordinators:|broker away|RESULT)' "$log" || true
verdict=$([[ $rc == 0 ]] && echo PASS || echo FAIL)
line="$stamp $commit $1 $verdict ($log)"
echo "$line" | tee -a "$out/summary.txt"
exit "$rc"
