# shellcheck shell=bash
# Helpers for the container image (scripts/image.sh, scripts/image/podman).
# Source scripts/lib.sh first. Only defines things.
#
# Podman here runs with a configuration of the project's own, never the
# machine's globals: vf_image_podman_env writes a containers.conf and a
# storage.conf under the state directory and points CONTAINERS_CONF and
# CONTAINERS_STORAGE_CONF at them. What this VM needs, and why:
#   - storage driver vfs: overlayfs cannot be mounted over this root filesystem
#     (and fuse-overlayfs would need /dev/fuse); vfs needs nothing, at the cost
#     of one full copy of the tree per layer, so the Containerfile keeps few layers;
#   - runtime runc, not crun; cgroup manager cgroupfs (no systemd running);
#   - default ulimits lowered: rootful podman asks for nofile=1048576 and
#     nproc=4194304 by default, more than this VM lets a process raise its hard
#     limits to ("error setting rlimit type 6: operation not permitted"); the
#     containers get this shell's own hard limits (nofile at most 65536, what
#     the worker wants for a few thousand streams; nproc at most kernel.pid_max);
#   - events to a file (no journald).
#
# Env:
#   VODFLEET_IMAGE_STATE  state directory: image store, base-image cache
#                         (default ~/.cache/vodfleet; kept between runs)
#   VODFLEET_IMAGE_RUN    podman's run-time directory (default /run/vodfleet-podman
#                         as root, $XDG_RUNTIME_DIR/vodfleet-podman otherwise)

VF_IMAGE_STATE=${VODFLEET_IMAGE_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/vodfleet}
if [[ -n ${VODFLEET_IMAGE_RUN:-} ]]; then
    VF_IMAGE_RUN=$VODFLEET_IMAGE_RUN
elif ((EUID == 0)); then
    VF_IMAGE_RUN=/run/vodfleet-podman
else
    VF_IMAGE_RUN=${XDG_RUNTIME_DIR:-/tmp/vodfleet-podman-$EUID}/vodfleet-podman
fi

# Debian packages the image build needs on the build machine.
# shellcheck disable=SC2034 # used by scripts/image.sh
VF_IMAGE_PACKAGES=(podman buildah runc uidmap debootstrap containernetworking-plugins binutils)

# vf_image_limit FLAG MAX: this shell's hard limit `ulimit -H FLAG`, at most MAX.
vf_image_limit() {
    local hard
    hard=$(ulimit -H "$1" 2>/dev/null || echo 1024)
    [[ $hard == unlimited ]] && hard=$2
    ((hard > $2)) && hard=$2
    echo "$hard"
}

# vf_image_podman_env: write the configuration (when it changed) and export
# CONTAINERS_CONF / CONTAINERS_STORAGE_CONF. Idempotent.
vf_image_podman_env() {
    local conf=$VF_IMAGE_STATE/podman
    mkdir -p "$conf" "$VF_IMAGE_STATE/storage" "$VF_IMAGE_RUN"
    chmod 700 "$VF_IMAGE_RUN"
    local nofile nproc
    nofile=$(vf_image_limit -n 65536)
    # nproc above kernel.pid_max is refused here too (seen: 32768 works, 32769 not).
    nproc=$(vf_image_limit -u "$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)")
    local want_containers want_storage
    want_containers="# Written by scripts/image/lib.sh; edits are overwritten.
[containers]
default_ulimits = [\"nofile=${nofile}:${nofile}\", \"nproc=${nproc}:${nproc}\"]
log_driver = \"k8s-file\"

[engine]
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
events_logfile_path = \"$VF_IMAGE_RUN/events.log\"
runtime = \"runc\"
tmp_dir = \"$VF_IMAGE_RUN/libpod\"
static_dir = \"$VF_IMAGE_STATE/storage/libpod\"
volume_path = \"$VF_IMAGE_STATE/storage/volumes\"
"
    want_storage="# Written by scripts/image/lib.sh; edits are overwritten.
[storage]
driver = \"vfs\"
graphroot = \"$VF_IMAGE_STATE/storage\"
runroot = \"$VF_IMAGE_RUN/storage\"
"
    [[ $(cat "$conf/containers.conf" 2>/dev/null) == "${want_containers%$'\n'}" ]] ||
        printf '%s' "$want_containers" >"$conf/containers.conf"
    [[ $(cat "$conf/storage.conf" 2>/dev/null) == "${want_storage%$'\n'}" ]] ||
        printf '%s' "$want_storage" >"$conf/storage.conf"
    export CONTAINERS_CONF=$conf/containers.conf
    export CONTAINERS_STORAGE_CONF=$conf/storage.conf
}
