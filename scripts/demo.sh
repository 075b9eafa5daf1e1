#!/usr/bin/env bash
# The demo: set the machine up, build, make a sample playlist, start a local
# nginx-rtmp, play the playlist into it with vodfleet-worker, prove the stream
# is live with ffprobe, then keep streaming until Ctrl-C.
#
#   scripts/demo.sh [--no-build]
#
# Env:
#   DEMO_SECONDS=N       stop by itself after N seconds of live streaming
#   DEMO_PROGRESS=MODE   the worker's --progress (tty|json|none; default tty on
#                        a terminal, else none)
#   DEMO_PUBLISH_TIMEOUT seconds to wait for the stream to appear (default 60)
#   DEMO_STOP_TIMEOUT    seconds the worker gets to stop before SIGKILL (default 30)
#   DEMO_WORKER_BIN      worker binary (default target/release/vodfleet-worker)
#   VODFLEET_LOG         worker log filter (default info)
#
# Sample media is generated once into .vodfleet/media (gitignored); each run
# gets its own directory under .vodfleet/run with the task, the server config
# and its logs.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
VF_NAME=demo
cd "$VF_ROOT"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

build=1
for arg in "$@"; do
    case $arg in
        --no-build) build=0 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; vf_die "unknown argument: $arg" ;;
    esac
done
if [[ -n ${DEMO_SECONDS:-} && ! ${DEMO_SECONDS} =~ ^[0-9]+$ ]]; then
    vf_die "DEMO_SECONDS must be a whole number of seconds, not '$DEMO_SECONDS'"
fi

bash scripts/setup.sh </dev/null
vf_cargo_path

worker_bin=${DEMO_WORKER_BIN:-$VF_ROOT/target/release/vodfleet-worker}
if ((build)); then
    locked=()
    [[ -f Cargo.lock ]] && locked=(--locked)
    vf_log "cargo build --release --bins ${locked[*]}"
    cargo build --release --bins "${locked[@]}"
fi
[[ -x $worker_bin ]] || vf_die "worker binary not found: $worker_bin (run without --no-build)"

# --- sample media ---------------------------------------------------------

media=$VF_ROOT/.vodfleet/media
mkdir -p "$media"

# make_clip NAME FORMAT VIDEO_SOURCE TONE_HZ SECONDS
make_clip() {
    local out=$media/$1 format=$2 video=$3 tone=$4 secs=$5
    [[ -s $out ]] && return 0
    vf_log "generating $out (${secs} s, $video, ${tone} Hz)"
    local extra=()
    [[ $format == mp4 ]] && extra=(-movflags +faststart)
    if ! ffmpeg -hide_banner -loglevel error -nostdin -y \
        -f lavfi -i "$video=size=1280x720:rate=25" \
        -f lavfi -i "sine=frequency=$tone:sample_rate=44100" \
        -t "$secs" -c:v libx264 -preset veryfast -g 50 -pix_fmt yuv420p \
        -c:a aac -b:a 128k "${extra[@]}" -f "$format" "$out.part"; then
        rm -f "$out.part"
        vf_die "ffmpeg could not generate $out"
    fi
    mv -f "$out.part" "$out"
}

make_clip clip1.mp4 mp4 testsrc2 440 10
make_clip clip2.mp4 mp4 smptebars 660 10
make_clip clip3.flv flv testsrc 880 10

# --- run ------------------------------------------------------------------

mkdir -p "$VF_ROOT/.vodfleet/run"
run=$(mktemp -d "$VF_ROOT/.vodfleet/run/demo.XXXXXX")
rtmp_dir=$run/rtmp
worker_pid=
rtmp_started=0
interrupted=0

stop_worker() {
    [[ -n $worker_pid ]] || return 0
    if kill -0 "$worker_pid" 2>/dev/null; then
        vf_log "stopping the worker (pid $worker_pid)"
        kill -TERM "$worker_pid" 2>/dev/null || true
        local deadline=$((SECONDS + ${DEMO_STOP_TIMEOUT:-30}))
        while kill -0 "$worker_pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        if kill -0 "$worker_pid" 2>/dev/null; then
            vf_log "the worker did not stop within ${DEMO_STOP_TIMEOUT:-30} s, killing it"
            kill -KILL "$worker_pid" 2>/dev/null || true
        fi
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    stop_worker
    rm -f "$media"/*.part
    if ((rtmp_started)); then
        bash scripts/rtmp-server.sh stop "$rtmp_dir" 2>/dev/null || true
    fi
    if ((rc == 0)); then
        rm -rf "$run"
        vf_log "done"
    else
        vf_log "exiting with status $rc; server logs and task in ${run#"$VF_ROOT"/}"
    fi
    exit "$rc"
}
on_signal() {
    interrupted=1
    vf_log "interrupted"
    stop_worker
}
trap cleanup EXIT
trap on_signal INT TERM HUP

rtmp_started=1 # before start: a Ctrl-C during start must still stop nginx
bash scripts/rtmp-server.sh start "$rtmp_dir" >/dev/null
# shellcheck source=/dev/null
source "$rtmp_dir/env"
stream=demo
url=$RTMP_URL_BASE/$stream

cat >"$run/task.json" <<EOF
{
  "id": "demo",
  "src": [
    {"url": "vod://clip1.mp4"},
    {"url": "vod://clip2.mp4"},
    {"url": "vod://clip3.flv"}
  ],
  "forward": [{"url": "$url"}],
  "extendParam": {"loop": "0"}
}
EOF

if [[ -z ${DEMO_PROGRESS:-} ]]; then
    if [[ -t 1 ]]; then DEMO_PROGRESS="tty"; else DEMO_PROGRESS="none"; fi
fi
vf_log "starting: ${worker_bin#"$VF_ROOT"/} play ${run#"$VF_ROOT"/}/task.json --progress $DEMO_PROGRESS"
# setsid: the worker gets exactly one stop signal (ours, on Ctrl-C), not also
# the terminal's SIGINT. Not a group leader, so setsid execs and $! is the worker.
VODFLEET_MEDIA_ROOT=$media \
    VODFLEET_ALLOW_PRIVATE_NETWORKS=${VODFLEET_ALLOW_PRIVATE_NETWORKS:-true} \
    VODFLEET_LOG=${VODFLEET_LOG:-info} \
    setsid "$worker_bin" play "$run/task.json" --progress "$DEMO_PROGRESS" </dev/null &
worker_pid=$!

# Wait until nginx-rtmp reports the stream as being published.
publishing() {
    local xml
    xml=$(curl -fsS --max-time 2 "$RTMP_STAT_URL" 2>/dev/null) || return 1
    xml=$(tr -d '\r\n' <<<"$xml" | sed 's#<stream>#\n<stream>#g')
    [[ $(grep -F "<stream><name>$stream</name>" <<<"$xml" || true) == *'<publishing/>'* ]]
}
timeout_s=${DEMO_PUBLISH_TIMEOUT:-60}
deadline=$((SECONDS + timeout_s))
until publishing; do
    ((interrupted)) && exit 130
    kill -0 "$worker_pid" 2>/dev/null || {
        rc=0
        wait "$worker_pid" || rc=$?
        vf_die "the worker exited (status $rc) before the stream went live"
    }
    ((SECONDS < deadline)) || vf_die "no stream '$stream' published on $RTMP_STAT_URL after $timeout_s s"
    sleep 0.2
done
vf_log "nginx-rtmp reports '$stream' publishing; probing it"

if ! probe=$(timeout 30 ffprobe -v error -rw_timeout 15000000 \
    -show_entries stream=codec_name,width,height -of compact "$url"); then
    ((interrupted)) && exit 130
    vf_die "ffprobe could not read $url"
fi
grep -q 'codec_name=h264' <<<"$probe" || vf_die "no H.264 video in $url:
$probe"
# A tty progress line may be half-drawn: start on a fresh line.
[[ $DEMO_PROGRESS == tty ]] && echo
printf '%s\n' "$probe"
printf 'LIVE: %s — watch with: ffplay %s\n' "$url" "$url"

# Keep streaming until the worker ends, Ctrl-C, or DEMO_SECONDS.
if [[ -n ${DEMO_SECONDS:-} ]]; then
    vf_log "stopping by itself after ${DEMO_SECONDS} s (DEMO_SECONDS)"
    deadline=$((SECONDS + DEMO_SECONDS))
    while kill -0 "$worker_pid" 2>/dev/null && ((SECONDS < deadline)) && ((!interrupted)); do
        sleep 0.5
    done
    stop_worker
else
    vf_log "streaming; press Ctrl-C to stop"
fi
# `wait -p` leaves done_pid unset when a trapped signal cut the wait short
# (on_signal has then stopped the worker); wait again for its real exit status.
while :; do
    unset done_pid
    rc=0
    wait -p done_pid "$worker_pid" || rc=$?
    [[ -n ${done_pid:-} || $rc == 127 ]] && break
done
worker_pid=
((rc == 0)) || vf_die "the worker exited with status $rc"
vf_log "the worker exited cleanly"
