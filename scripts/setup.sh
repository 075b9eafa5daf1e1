#!/usr/bin/env bash
# Idempotent set-up for building, testing and running vodfleet on Debian:
# installs the missing Debian packages (and Rust, if cargo is absent), then
# starts local Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672) when
# nothing answers there. Safe to run again: a ready machine takes well under
# a second and nothing is changed.
#
# Env: VODFLEET_RABBITMQ_START_TIMEOUT (s, default 180) bounds the RabbitMQ boot.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
VF_NAME=setup

vf_ensure_packages
vf_ensure_rust
vf_ensure_redis
vf_ensure_rabbitmq
vf_log "ready"
