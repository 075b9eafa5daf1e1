# shellcheck shell=bash
# Shared helpers for scripts/*.sh. Source it; it only defines things.
#
#   VF_ROOT   the repository root (absolute)
#   VF_NAME   prefix of log lines; set it after sourcing

# shellcheck disable=SC2034 # used by the scripts that source this file
VF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VF_NAME=${VF_NAME:-vodfleet}

# Debian packages the build, the tests and the demo need.
VF_PACKAGES=(
    libavcodec-dev libavformat-dev libavutil-dev libswscale-dev
    libswresample-dev libavfilter-dev libavdevice-dev
    clang libclang-dev pkg-config ffmpeg
    nginx-light libnginx-mod-rtmp
    rabbitmq-server redis-server
    curl stunnel4 openssl
    # The RTSP test peer (tests/src/peers.rs): GStreamer's RTSP server, run by
    # Debian's python3 with its gi bindings.
    gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly gstreamer1.0-libav python3-gi
)

# shellcheck disable=SC2034
VF_RTMP_MODULE=/usr/lib/nginx/modules/ngx_rtmp_module.so

# Human-readable messages go to stderr, so stdout stays for data.
vf_log() { printf '[%s] %s\n' "$VF_NAME" "$*" >&2; }
vf_die() { printf '[%s] error: %s\n' "$VF_NAME" "$*" >&2; exit 1; }
vf_have() { command -v "$1" >/dev/null 2>&1; }

# Daemons live in /usr/sbin, which a non-root PATH may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin ;; esac

# vf_port_open HOST PORT: does something accept TCP connections there?
vf_port_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# vf_wait_port HOST PORT SECONDS [PID]: poll until the port answers; give up
# after SECONDS, or as soon as PID (if given) has exited.
vf_wait_port() {
    local host=$1 port=$2 pid=${4:-} deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        vf_port_open "$host" "$port" && return 0
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.25
    done
    vf_port_open "$host" "$port"
}

# vf_as_root CMD...: run CMD as root (directly, or through sudo).
vf_as_root() {
    if ((EUID == 0)); then
        "$@"
    elif vf_have sudo; then
        sudo "$@"
    else
        vf_die "need root for: $* (not root and no sudo)"
    fi
}

# vf_free_port: print a TCP port on 127.0.0.1 that nothing listens on.
vf_free_port() {
    local p
    if p=$(python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null) &&
        [[ $p =~ ^[0-9]+$ ]]; then
        echo "$p"
        return
    fi
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 40000))
        if [[ -z $(ss -Htln "sport = :$p" 2>/dev/null) ]] && ! vf_port_open 127.0.0.1 "$p"; then
            echo "$p"
            return
        fi
    done
    vf_die "no free TCP port found"
}

# vf_missing_packages: print the VF_PACKAGES that dpkg does not have installed.
vf_missing_packages() {
    local installed
    installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${VF_PACKAGES[@]}" 2>/dev/null |
        awk '$NF == "installed" { print $1 }' || true)
    local p
    for p in "${VF_PACKAGES[@]}"; do
        grep -qxF "$p" <<<"$installed" || echo "$p"
    done
}

vf_ensure_packages() {
    if ! vf_have dpkg-query || ! vf_have apt-get; then
        vf_log "packages: not a Debian system; make sure these (or equivalents) are installed: ${VF_PACKAGES[*]}"
        return 0
    fi
    local missing
    mapfile -t missing < <(vf_missing_packages)
    if ((${#missing[@]} == 0)); then
        vf_log "packages: all ${#VF_PACKAGES[@]} present"
        return 0
    fi
    if ((EUID != 0)) && ! vf_have sudo; then
        vf_die "missing Debian packages and not root (no sudo either); as root run:
  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    fi
    vf_log "packages: installing ${missing[*]}"
    local log
    log=$(mktemp "${TMPDIR:-/tmp}/vodfleet-apt.XXXXXX")
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
    if ! vf_as_root "${apt[@]}" update >"$log" 2>&1 ||
        ! vf_as_root "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
        tail -n 40 "$log" >&2
        vf_die "apt-get failed (full log: $log)"
    fi
    rm -f "$log"
    mapfile -t missing < <(vf_missing_packages)
    ((${#missing[@]} == 0)) || vf_die "still missing after apt-get install: ${missing[*]}"
    vf_log "packages: installed"
}

# vf_cargo_path: put rustup's cargo on PATH if it is installed but not there.
vf_cargo_path() {
    if ! vf_have cargo && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
        PATH=${CARGO_HOME:-$HOME/.cargo}/bin:$PATH
        export PATH
    fi
}

vf_ensure_rust() {
    vf_cargo_path
    if vf_have cargo; then
        vf_log "rust: $(cargo --version)"
        return 0
    fi
    vf_have curl || vf_die "cargo not found and curl missing to install rustup"
    vf_log "rust: cargo not found; installing the stable toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --default-toolchain stable >/dev/null
    vf_cargo_path
    vf_have cargo || vf_die "rustup ran but cargo is still not on PATH"
    vf_log "rust: $(cargo --version)"
}

vf_ensure_redis() {
    if vf_port_open 127.0.0.1 6379; then
        vf_log "redis: answering on 127.0.0.1:6379"
        return 0
    fi
    vf_have redis-server || vf_die "redis-server not found (package redis-server)"
    vf_log "redis: nothing on 127.0.0.1:6379, starting redis-server"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir "${TMPDIR:-/tmp}" >/dev/null
    vf_wait_port 127.0.0.1 6379 20 || vf_die "redis-server started but 127.0.0.1:6379 does not answer after 20 s"
    vf_log "redis: up"
}

vf_ensure_rabbitmq() {
    if vf_port_open 127.0.0.1 5672; then
        vf_log "rabbitmq: answering on 127.0.0.1:5672"
        return 0
    fi
    vf_have rabbitmq-server || vf_die "rabbitmq-server not found (package rabbitmq-server)"
    local wait=${VODFLEET_RABBITMQ_START_TIMEOUT:-180}
    if vf_have pgrep && pgrep -f 'rabbit boot' >/dev/null 2>&1; then
        vf_log "rabbitmq: already booting, waiting up to ${wait} s for 127.0.0.1:5672"
    else
        local envs=()
        # Erlang names the node rabbit@<hostname>; a hostname that does not
        # resolve (some containers) makes the node fail to boot.
        if [[ -z ${RABBITMQ_NODENAME:-} ]] &&
            ! grep -qs '^[[:space:]]*NODENAME=' /etc/rabbitmq/rabbitmq-env.conf &&
            ! getent hosts "$(hostname -s 2>/dev/null || echo localhost)" >/dev/null 2>&1; then
            envs+=(RABBITMQ_NODENAME=rabbit@localhost)
        fi
        vf_log "rabbitmq: nothing on 127.0.0.1:5672, starting rabbitmq-server -detached (up to ${wait} s)"
        local log
        log=$(mktemp "${TMPDIR:-/tmp}/vodfleet-rabbitmq.XXXXXX")
        chmod 644 "$log"
        if ! vf_as_root env "${envs[@]}" rabbitmq-server -detached </dev/null >"$log" 2>&1; then
            cat "$log" >&2
            vf_die "rabbitmq-server -detached failed"
        fi
        rm -f "$log"
    fi
    if ! vf_wait_port 127.0.0.1 5672 "$wait"; then
        local f
        for f in /var/log/rabbitmq/*.log; do
            [[ -f $f ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
        done
        vf_die "rabbitmq did not answer on 127.0.0.1:5672 within ${wait} s"
    fi
    vf_log "rabbitmq: up"
}

# vf_rabbitmqctl ARGS...: rabbitmqctl against the local node, as root, bounded
# to 60 s. Targets the node name vf_ensure_rabbitmq would have started
# (rabbit@localhost where the hostname does not resolve).
vf_rabbitmqctl() {
    local node=()
    if [[ -z ${RABBITMQ_NODENAME:-} ]] &&
        ! grep -qs '^[[:space:]]*NODENAME=' /etc/rabbitmq/rabbitmq-env.conf &&
        ! getent hosts "$(hostname -s 2>/dev/null || echo localhost)" >/dev/null 2>&1; then
        node=(-n rabbit@localhost)
    fi
    vf_as_root timeout 60 rabbitmqctl "${node[@]}" "$@"
}

# vf_random_hex BYTES: print BYTES random bytes as lowercase hex.
vf_random_hex() {
    od -An -v -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

# vf_http_ok URL: does URL answer with a 2xx within 2 s?
vf_http_ok() {
    curl -fsS --max-time 2 -o /dev/null "$1" 2>/dev/null
}
