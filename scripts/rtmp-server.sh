#!/usr/bin/env bash
# A local nginx-rtmp server for demos and manual tests, built from
# scripts/nginx-rtmp.conf.template on free ports.
#
#   scripts/rtmp-server.sh [start] [DIR]   start in DIR (default: a new temp dir)
#   scripts/rtmp-server.sh stop DIR        stop the server started in DIR
#   scripts/rtmp-server.sh status DIR      exit 0 if it runs, and print DIR/env
#
# start runs nginx in the background in its own session (a Ctrl-C meant for the
# caller does not reach it), waits until http://127.0.0.1:HTTP_PORT/stat answers,
# writes DIR/env (shell syntax: RTMP_DIR, RTMP_PORT, HTTP_PORT, RTMP_URL_BASE,
# RTMP_STAT_URL, RTMP_PID) and prints the same lines on stdout, so
#   eval "$(scripts/rtmp-server.sh start)"   or   source DIR/env
# both work. Publish to $RTMP_URL_BASE/NAME. Logs: DIR/error.log,
# DIR/rtmp-access.log.
#
# Env: RECORD=all records every stream to DIR/record/NAME.flv (default: off).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
VF_NAME=rtmp-server
TEMPLATE=$VF_ROOT/scripts/nginx-rtmp.conf.template

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

# running_pid DIR: print the pid of the nginx started in DIR, if it still runs.
running_pid() {
    local dir=$1 f pid
    for f in "$dir/nginx.pid" "$dir/launcher.pid"; do
        [[ -s $f ]] || continue
        pid=$(tr -dc '0-9' <"$f")
        [[ -n $pid ]] || continue
        # Only our nginx: a recycled pid must not be signalled.
        if kill -0 "$pid" 2>/dev/null &&
            tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/nginx.conf"; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

stat_ok() {
    local xml
    xml=$(curl -fsS --max-time 2 "http://127.0.0.1:$1/stat" 2>/dev/null) && [[ $xml == *'<rtmp>'* ]]
}

render() {
    local dir=$1 rtmp_port=$2 http_port=$3 record=$4 conf
    conf=$(<"$TEMPLATE")
    # Quoted replacements: bash 5.2 would otherwise treat '&' as the match.
    conf=${conf//@@DIR@@/"$dir"}
    conf=${conf//@@RTMP_PORT@@/"$rtmp_port"}
    conf=${conf//@@HTTP_PORT@@/"$http_port"}
    conf=${conf//@@RECORD@@/"$record"}
    local left
    left=$(grep -v '^[[:space:]]*#' <<<"$conf" | grep -o '@@[A-Z_]*@@' | sort -u | tr '\n' ' ' || true)
    [[ -z $left ]] || vf_die "the template has placeholders this script does not fill: $left"
    printf '%s\n' "$conf" >"$dir/nginx.conf"
}

start() {
    local dir=${1:-}
    if [[ -z $dir ]]; then
        dir=$(mktemp -d "${TMPDIR:-/tmp}/vodfleet-rtmp.XXXXXX")
    fi
    mkdir -p "$dir/record" "$dir/tmp"
    dir=$(cd "$dir" && pwd)
    [[ $dir != *[[:space:]\;\{\}\#\"\']* ]] || vf_die "DIR must not contain spaces or nginx syntax characters: $dir"

    local pid
    if pid=$(running_pid "$dir"); then
        vf_die "already running in $dir (pid $pid); stop it first: $0 stop $dir"
    fi
    vf_have nginx || vf_die "nginx not found (packages nginx-light libnginx-mod-rtmp; run scripts/setup.sh)"
    [[ -f $VF_RTMP_MODULE ]] || vf_die "$VF_RTMP_MODULE missing (package libnginx-mod-rtmp; run scripts/setup.sh)"
    vf_have curl || vf_die "curl not found (run scripts/setup.sh)"
    local record=${RECORD:-off}

    local attempt rtmp_port http_port deadline up
    for attempt in 1 2 3 4 5; do
        rtmp_port=$(vf_free_port)
        http_port=$(vf_free_port)
        [[ $http_port != "$rtmp_port" ]] || continue
        render "$dir" "$rtmp_port" "$http_port" "$record"
        rm -f "$dir/nginx.pid" "$dir/launcher.pid"
        : >"$dir/error.log"
        # setsid: own session, so the terminal's SIGINT goes to the caller only,
        # which then stops us in order. Not a group leader, so setsid does not fork
        # and $! is nginx itself.
        setsid nginx -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" \
            </dev/null >>"$dir/nginx.out" 2>&1 &
        pid=$!
        echo "$pid" >"$dir/launcher.pid"
        up=0
        deadline=$((SECONDS + 15))
        while ((SECONDS < deadline)) && kill -0 "$pid" 2>/dev/null; do
            if stat_ok "$http_port" && vf_port_open 127.0.0.1 "$rtmp_port"; then
                up=1
                break
            fi
            sleep 0.1
        done
        ((up)) && break
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        if grep -q 'Address already in use' "$dir/error.log" "$dir/nginx.out" 2>/dev/null; then
            vf_log "port race (attempt $attempt), retrying on other ports"
            continue
        fi
        tail -n 20 "$dir/error.log" "$dir/nginx.out" >&2 2>/dev/null || true
        vf_die "nginx-rtmp did not come up in $dir"
    done
    ((up)) || vf_die "nginx-rtmp did not come up in $dir after 5 attempts"

    {
        printf 'RTMP_DIR=%q\n' "$dir"
        printf 'RTMP_PORT=%s\n' "$rtmp_port"
        printf 'HTTP_PORT=%s\n' "$http_port"
        printf 'RTMP_URL_BASE=%s\n' "rtmp://127.0.0.1:$rtmp_port/live"
        printf 'RTMP_STAT_URL=%s\n' "http://127.0.0.1:$http_port/stat"
        printf 'RTMP_PID=%s\n' "$pid"
    } >"$dir/env"
    cat "$dir/env"
    vf_log "nginx-rtmp up (pid $pid, record $record): publish to rtmp://127.0.0.1:$rtmp_port/live/NAME, stats at http://127.0.0.1:$http_port/stat; stop with: $0 stop $dir"
}

stop() {
    local dir=${1:?usage: $0 stop DIR}
    [[ -d $dir ]] || vf_die "no such directory: $dir"
    dir=$(cd "$dir" && pwd)
    local pid
    if ! pid=$(running_pid "$dir"); then
        vf_log "not running in $dir"
        rm -f "$dir/nginx.pid" "$dir/launcher.pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        vf_log "nginx (pid $pid) ignored SIGTERM for 10 s, killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/nginx.pid" "$dir/launcher.pid"
    vf_log "stopped nginx-rtmp (pid $pid) in $dir"
}

status() {
    local dir=${1:?usage: $0 status DIR} pid
    dir=$(cd "$dir" && pwd)
    if pid=$(running_pid "$dir"); then
        cat "$dir/env" 2>/dev/null || true
        vf_log "running (pid $pid)"
    else
        vf_log "not running"
        return 1
    fi
}

case ${1:-} in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    status) shift; status "$@" ;;
    -h | --help | help) usage ;;
    -*) usage >&2; exit 2 ;;
    *) start "$@" ;;
esac
