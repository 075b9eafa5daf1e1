#!/usr/bin/env bash
# Fetches the S3 API the s3:// source tests talk to: PyPI's `moto[server]`, in a
# venv of its own in the tools cache outside the clone (repeated runs take well
# under a second), and prints the path of its `moto_server` on stdout.
#
# Env: VODFLEET_TOOLS_DIR (default ~/.cache/vodfleet/tools).
# Usage: "$(scripts/s3-server.sh)" -H 127.0.0.1 -p PORT
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
VF_NAME=s3-server

MOTO_VERSION=5.2.6

dir=${VODFLEET_TOOLS_DIR:-${HOME:-/root}/.cache/vodfleet/tools}
venv=$dir/moto
mkdir -p "$dir"
# Tests run side by side: one installer at a time.
exec 9>"$dir/.lock-moto"
flock 9
if [[ ! -x $venv/bin/moto_server || $(cat "$venv/.stamp" 2>/dev/null) != "$MOTO_VERSION" ]]; then
    vf_log "moto[server]==$MOTO_VERSION from PyPI"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
    printf '%s' "$MOTO_VERSION" >"$venv/.stamp"
fi
echo "$venv/bin/moto_server"
