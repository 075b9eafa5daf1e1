#!/usr/bin/env bash
# Issue 10, "RabbitMQ cluster": three private RabbitMQ nodes on free ports (never
# the machine's own broker), a coordinator whose VODFLEET_AMQP_URL lists all
# three, a burst of confirmed commands, and `kill -9` of the node the
# coordinator is connected to in the middle of it. Runs the ignored test
# tests/tests/rabbit_cluster.rs, prints its figures and appends a line to the
# summary; the latest result is in docs/RELIABILITY.md.
#
#   scripts/soak/rabbit-cluster.sh
#
# Environment:
#   VODFLEET_SOAK_COMMANDS  commands in the burst (default 10000; the test command runs 2000)
#   VF_SOAK_OUT             where logs and summary.txt go (default .vodfleet/soak)
# Exits with the test's status (0: 0 confirmed commands lost, consumption
# resumed through another node within 30 s).
set -euo pipefail
VF_NAME=soak
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$VF_ROOT"

[[ -x /usr/lib/rabbitmq/bin/rabbitmq-server || -n ${VODFLEET_RABBITMQ_BIN_DIR:-} ]] ||
    vf_die "rabbitmq-server not found in /usr/lib/rabbitmq/bin (package rabbitmq-server)"

out=${VF_SOAK_OUT:-$VF_ROOT/.vodfleet/soak}
mkdir -p "$out"
stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
log="$out/rabbit-cluster-$(date -u +%Y%m%dT%H%M%SZ).log"

vf_cargo_path
cargo build --locked --bin vodfleet-coordinator --bin vodfleet-worker
vf_log "rabbit-cluster: soak_confirmed_commands_across_a_cluster_node_kill (log: $log)"
rc=0
cargo test --locked -p vodfleet-tests --test rabbit_cluster -- \
    --ignored --exact --nocapture soak_confirmed_commands_across_a_cluster_node_kill \
    >"$log" 2>&1 || rc=$?
# The figures the test printed, then the verdict.
grep -E '^(RabbitMQ cluster of|quorum queues|kill -9|producer:|[0-9]+ commands confirmed|consumption resumed|coordinator|tasks:|RESULT)' "$log" || true
verdict=$([[ $rc == 0 ]] && echo PASS || echo FAIL)
line="$stamp $commit rabbit-cluster $verdict ($log)"
echo "$line" | tee -a "$out/summary.txt"
exit "$rc"
