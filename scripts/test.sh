#!/usr/bin/env bash
# The test command: set the machine up (scripts/setup.sh), build every binary,
# then run the whole workspace test suite. Extra arguments go to `cargo test`,
# e.g. `scripts/test.sh -- --nocapture` or `scripts/test.sh -p vodfleet-proto`.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
VF_NAME="test"
cd "$VF_ROOT"

bash scripts/setup.sh </dev/null
vf_cargo_path

export VODFLEET_LOG=${VODFLEET_LOG:-info}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
if [[ ${CI:-} == true ]]; then
    # Fresh clone, one build: incremental artefacts only cost time and disk.
    export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
fi

locked=()
[[ -f Cargo.lock ]] && locked=(--locked)

vf_log "cargo build --workspace --bins ${locked[*]}"
cargo build --workspace --bins "${locked[@]}"

vf_log "cargo test --workspace ${locked[*]} $*"
rc=0
cargo test --workspace "${locked[@]}" "$@" || rc=$?
if ((rc == 0)); then
    vf_log "PASS: all tests passed"
else
    vf_log "FAIL: cargo test exited with status $rc"
fi
exit "$rc"
