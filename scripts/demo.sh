#!/usr/bin/env bash
# The demo: the fleet on one machine. Sets the machine up (scripts/setup.sh:
# packages, Rust, local Redis and RabbitMQ where nothing answers), builds, makes
# a sample playlist, then starts a local nginx-rtmp, one vodfleet-coordinator and
# two vodfleet-workers, starts the playlist as task "demo" through the queue with
# vodctl, proves the stream is live with ffprobe and prints how to look at it,
# stop it and resume it. On a terminal it then shows `vodctl watch demo` (after
# Enter, or by itself after 20 s); otherwise it just streams. Ctrl-C or SIGTERM
# stops the task and shuts everything down (a second one kills what is left).
#
#   scripts/demo.sh [--no-build]
#
# Env:
#   DEMO_SECONDS=N        smoke mode: stream N seconds, then stop the task and
#                         resume it through vodctl (checking nginx-rtmp sees the
#                         publisher go and come back), stop it, shut down
#   DEMO_PUBLISH_TIMEOUT  seconds to wait for the stream to appear (default 60)
#   DEMO_READY_TIMEOUT    seconds each process gets to answer /readyz (default 60)
#   DEMO_STOP_TIMEOUT     seconds the processes get to exit on SIGTERM before
#                         SIGKILL (default 30)
#   DEMO_BIN_DIR          where the binaries are (default target/release)
#   DEMO_REDIS_URL        the coordinator's Redis (default
#                         redis://127.0.0.1:6379/9: logical DB 9, whose vodfleet:*
#                         keys the demo deletes at start and at exit)
#   VODFLEET_LOG          log filter of the fleet's processes (default info)
#
# Isolation: the fleet runs in its own RabbitMQ virtual host, vodfleet-demo
# (created at start, deleted at exit), so it never takes work from anything
# else on the broker; one demo runs at a time per machine.
#
# Sample media is generated once into .vodfleet/media (gitignored); each run
# gets its own directory under .vodfleet/run with the server config, every
# process's log and vodctl.env (the variables vodctl needs). It is deleted when
# the demo ends well and kept when it fails.
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
for v in DEMO_SECONDS DEMO_PUBLISH_TIMEOUT DEMO_READY_TIMEOUT DEMO_STOP_TIMEOUT; do
    if [[ -n ${!v:-} && ! ${!v} =~ ^[0-9]+$ ]]; then
        vf_die "$v must be a whole number of seconds, not '${!v}'"
    fi
done
publish_timeout=${DEMO_PUBLISH_TIMEOUT:-60}
ready_timeout=${DEMO_READY_TIMEOUT:-60}
stop_timeout=${DEMO_STOP_TIMEOUT:-30}

vhost=vodfleet-demo
amqp_url=amqp://guest:guest@127.0.0.1:5672/$vhost
redis_url=${DEMO_REDIS_URL:-redis://127.0.0.1:6379/9}
task=demo

# One demo per machine: they share the vhost and the Redis DB. The lock is
# fd 9, which no process started below inherits (9>&-).
lock=${TMPDIR:-/tmp}/vodfleet-demo.lock
exec 9>>"$lock" || vf_die "cannot open $lock"
flock -n 9 || vf_die "another scripts/demo.sh is running on this machine (it holds $lock)"

bash scripts/setup.sh </dev/null 9>&-
vf_cargo_path

bin_dir=${DEMO_BIN_DIR:-$VF_ROOT/target/release}
coordinator_bin=$bin_dir/vodfleet-coordinator
worker_bin=$bin_dir/vodfleet-worker
vodctl_bin=$bin_dir/vodctl
if ((build)); then
    locked=()
    [[ -f Cargo.lock ]] && locked=(--locked)
    vf_log "cargo build --release --bins ${locked[*]}"
    cargo build --release --bins "${locked[@]}" 9>&-
fi
for b in "$coordinator_bin" "$worker_bin" "$vodctl_bin"; do
    [[ -x $b ]] || vf_die "binary not found: $b (run without --no-build)"
done
vf_have redis-cli || vf_die "redis-cli not found (package redis-tools; run scripts/setup.sh)"

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
        -c:a aac -b:a 128k "${extra[@]}" -f "$format" "$out.part" 9>&-; then
        rm -f "$out.part"
        vf_die "ffmpeg could not generate $out"
    fi
    mv -f "$out.part" "$out"
}

make_clip clip1.mp4 mp4 testsrc2 440 10
make_clip clip2.mp4 mp4 smptebars 660 10
make_clip clip3.flv flv testsrc 880 10

# --- state and shutdown -----------------------------------------------------

mkdir -p "$VF_ROOT/.vodfleet/run"
run=$(mktemp -d "$VF_ROOT/.vodfleet/run/demo.XXXXXX")
rtmp_dir=$run/rtmp
rtmp_started=0
vhost_made=0
redis_used=0
task_started=0
graceful=0    # 1 while streaming until Ctrl-C: a signal then ends the demo normally
interrupted=0
hurry=0       # a second signal during shutdown: SIGKILL what is left
proc_names=() # the fleet's processes, in start order
proc_pids=()
proc_logs=()
proc_done=() # "" while running (as far as we know), else its exit status

# spawn NAME CMD...: start CMD in its own session (a Ctrl-C in the terminal
# reaches only this script, which then stops everything in order), output to
# $run/NAME.log. Not a group leader, so setsid execs and $! is CMD itself.
spawn() {
    local name=$1
    shift
    setsid "$@" </dev/null >>"$run/$name.log" 2>&1 9>&- &
    proc_names+=("$name")
    proc_pids+=("$!")
    proc_logs+=("$run/$name.log")
    proc_done+=("")
}

alive() { [[ -z ${proc_done[$1]} ]] && kill -0 "${proc_pids[$1]}" 2>/dev/null; }

# reap I: record the exit status of process I, which has exited.
reap() {
    local rc=0
    wait "${proc_pids[$1]}" 2>/dev/null || rc=$?
    proc_done[$1]=$rc
}

tail_log() {
    local log=$1
    [[ -s $log ]] || return 0
    printf -- '--- last lines of %s\n' "${log#"$VF_ROOT"/}" >&2
    tail -n 15 "$log" >&2
}

# stop_procs NAME-PATTERN: SIGTERM the matching running processes at once, wait
# for them (DEMO_STOP_TIMEOUT, or not at all after a second signal), SIGKILL the
# rest. Adds to stop_bad how many did not exit cleanly (status 0).
stop_bad=0
stop_procs() {
    local pattern=$1 i waiting=()
    for i in "${!proc_names[@]}"; do
        # shellcheck disable=SC2053 # a glob on purpose
        [[ ${proc_names[$i]} == $pattern ]] || continue
        if alive "$i"; then
            vf_log "stopping ${proc_names[$i]} (pid ${proc_pids[$i]})"
            kill -TERM "${proc_pids[$i]}" 2>/dev/null || true
            waiting+=("$i")
        elif [[ -z ${proc_done[$i]} ]]; then
            reap "$i"
            vf_log "${proc_names[$i]} had already exited (status ${proc_done[$i]})"
            stop_bad=$((stop_bad + 1))
        fi
    done
    local deadline=$((SECONDS + stop_timeout)) left
    while :; do
        left=0
        for i in "${waiting[@]}"; do kill -0 "${proc_pids[$i]}" 2>/dev/null && left=1; done
        ((left && !hurry && SECONDS < deadline)) || break
        sleep 0.2
    done
    for i in "${waiting[@]}"; do
        if kill -0 "${proc_pids[$i]}" 2>/dev/null; then
            if ((hurry)); then
                vf_log "killing ${proc_names[$i]}"
            else
                vf_log "${proc_names[$i]} did not exit within $stop_timeout s, killing it"
            fi
            kill -KILL "${proc_pids[$i]}" 2>/dev/null || true
        fi
        reap "$i"
        if [[ ${proc_done[$i]} != 0 ]]; then
            vf_log "${proc_names[$i]} exited with status ${proc_done[$i]}"
            stop_bad=$((stop_bad + 1))
        fi
    done
}

# delete_redis_keys: the coordinator's keys (fixed names, vodfleet:*) in the
# demo's logical DB; nothing else is touched.
delete_redis_keys() {
    local keys
    keys=$(timeout 20 redis-cli -u "$redis_url" --scan --pattern 'vodfleet:*' 2>/dev/null) || return 1
    [[ -n $keys ]] || return 0
    timeout 20 xargs -r -n 100 redis-cli -u "$redis_url" del <<<"$keys" >/dev/null
}

cleanup() {
    local rc=$?
    trap - EXIT
    trap 'hurry=1; vf_log "hurrying: killing what is left"' INT TERM HUP
    if ((task_started && !hurry && ${#proc_pids[@]} > 0)) && alive 0; then
        vf_log "stopping task $task"
        vodctl_quiet --via amqp stop --id "$task" --forward "$url" ||
            vf_log "could not stop task $task through the queue (the workers release it on SIGTERM anyway)"
    fi
    stop_procs 'worker-*'
    stop_procs coordinator
    if ((rtmp_started)); then
        bash scripts/rtmp-server.sh stop "$rtmp_dir" >/dev/null 2>&1 || true
    fi
    if ((vhost_made)); then
        vf_rabbitmqctl delete_vhost "$vhost" >/dev/null 2>&1 ||
            vf_log "warning: could not delete the RabbitMQ vhost $vhost"
    fi
    if ((redis_used)); then
        delete_redis_keys || vf_log "warning: could not delete the vodfleet:* keys in $redis_url"
    fi
    rm -f "$media"/*.part
    if ((rc == 0 && stop_bad > 0)); then
        vf_log "$stop_bad process(es) did not shut down cleanly"
        rc=1
    fi
    if ((rc == 0)); then
        rm -rf "$run"
        vf_log "done"
    else
        vf_log "exiting with status $rc; logs in ${run#"$VF_ROOT"/}"
    fi
    exit "$rc"
}
on_signal() {
    if ((graceful)); then
        interrupted=1
        return
    fi
    vf_log "interrupted"
    exit 130
}
trap cleanup EXIT
trap on_signal INT TERM HUP

# check_procs [FATAL_WORKERS]: die if the coordinator (or, with FATAL_WORKERS=1,
# a worker) has exited; a worker exit is otherwise reported once and tolerated
# (its task fails over to the other worker).
check_procs() {
    local fatal_workers=${1:-1} i
    for i in "${!proc_names[@]}"; do
        [[ -z ${proc_done[$i]} ]] || continue
        kill -0 "${proc_pids[$i]}" 2>/dev/null && continue
        reap "$i"
        if [[ ${proc_names[$i]} == worker-* ]] && ((!fatal_workers)); then
            vf_log "${proc_names[$i]} exited (status ${proc_done[$i]}); the other worker takes over its task"
            continue
        fi
        tail_log "${proc_logs[$i]}"
        vf_die "${proc_names[$i]} exited unexpectedly (status ${proc_done[$i]})"
    done
}

# --- the fleet --------------------------------------------------------------

vf_log "RabbitMQ vhost $vhost (the demo's own; deleted at exit)"
if vf_rabbitmqctl list_vhosts --silent 2>/dev/null | grep -qxF "$vhost"; then
    # Left by a demo that was killed: start from an empty one.
    vf_rabbitmqctl delete_vhost "$vhost" >/dev/null
fi
vhost_made=1
vf_rabbitmqctl add_vhost "$vhost" >/dev/null
vf_rabbitmqctl set_permissions -p "$vhost" guest ".*" ".*" ".*" >/dev/null

vf_log "Redis $redis_url (deleting vodfleet:* keys left there)"
redis_used=1
delete_redis_keys || vf_die "Redis at $redis_url does not answer (redis-cli --scan failed)"

rtmp_started=1 # before start: a Ctrl-C during start must still stop nginx
bash scripts/rtmp-server.sh start "$rtmp_dir" >/dev/null 9>&-
# shellcheck source=/dev/null
source "$rtmp_dir/env"
url=$RTMP_URL_BASE/$task

api_port=$(vf_free_port)
api_url=http://127.0.0.1:$api_port
api_keys=demo:$(vf_random_hex 16)
log_filter=${VODFLEET_LOG:-info}

vf_log "starting vodfleet-coordinator (API on $api_url)"
spawn coordinator env \
    VODFLEET_AMQP_URL="$amqp_url" \
    VODFLEET_REDIS_URL="$redis_url" \
    VODFLEET_HTTP_ADDR="127.0.0.1:$api_port" \
    VODFLEET_API_KEYS="$api_keys" \
    VODFLEET_LOG="$log_filter" \
    "$coordinator_bin"
ready_urls=("$api_url/readyz")

for w in 1 2; do
    port=$(vf_free_port)
    vf_log "starting vodfleet-worker run as demo-w$w (4 slots, endpoints on 127.0.0.1:$port)"
    spawn "worker-demo-w$w" env \
        VODFLEET_AMQP_URL="$amqp_url" \
        VODFLEET_WORKER_ID="demo-w$w" \
        VODFLEET_WORKER_SLOTS=4 \
        VODFLEET_HTTP_ADDR="127.0.0.1:$port" \
        VODFLEET_MEDIA_ROOT="$media" \
        VODFLEET_ALLOW_PRIVATE_NETWORKS=true \
        VODFLEET_LOG="$log_filter" \
        "$worker_bin" run
    ready_urls+=("http://127.0.0.1:$port/readyz")
done

for i in "${!proc_names[@]}"; do
    deadline=$((SECONDS + ready_timeout))
    until vf_http_ok "${ready_urls[$i]}"; do
        check_procs
        if ((SECONDS >= deadline)); then
            tail_log "${proc_logs[$i]}"
            vf_die "${proc_names[$i]} not ready after $ready_timeout s (${ready_urls[$i]})"
        fi
        sleep 0.25
    done
    vf_log "${proc_names[$i]} ready (pid ${proc_pids[$i]})"
done

# --- vodctl -----------------------------------------------------------------

# The variables vodctl needs, for this script and for the operator.
cat >"$run/vodctl.env" <<EOF
export PATH=$(printf '%q' "$bin_dir"):\$PATH
export VODFLEET_API_URL=$api_url
export VODFLEET_API_KEYS=$api_keys
export VODFLEET_AMQP_URL=$amqp_url
EOF
chmod 600 "$run/vodctl.env"

# vodctl with the fleet's variables (and no one else's): vodctl to show a
# command and what it printed, vodctl_quiet; both bounded to 30 s.
vodctl_cmd=(env VODFLEET_API_URL="$api_url" VODFLEET_API_KEYS="$api_keys"
    VODFLEET_AMQP_URL="$amqp_url" "$vodctl_bin")
vodctl() {
    local out rc=0
    printf '%s\n' "\$ vodctl $*" >&2
    out=$(timeout 30 "${vodctl_cmd[@]}" "$@" 2>&1 9>&-) || rc=$?
    [[ -z $out ]] || printf '%s\n' "$out" | sed 's/^/  /' >&2
    return "$rc"
}
vodctl_quiet() { timeout 30 "${vodctl_cmd[@]}" "$@" >/dev/null 2>&1 9>&-; }

# --- is it live? ------------------------------------------------------------

# stream_state: publishing | absent (nginx-rtmp has no publisher for it) | unknown
stream_state() {
    local xml
    if ! xml=$(curl -fsS --max-time 2 "$RTMP_STAT_URL" 2>/dev/null); then
        echo unknown
        return
    fi
    xml=$(tr -d '\r\n' <<<"$xml" | sed 's#<stream>#\n<stream>#g')
    if [[ $(grep -F "<stream><name>$task</name>" <<<"$xml" || true) == *'<publishing/>'* ]]; then
        echo publishing
    else
        echo absent
    fi
}

# wait_stream STATE SECONDS: until nginx-rtmp reports STATE for the stream;
# sets waited to the time it took (seconds, e.g. 1.4).
waited=
wait_stream() {
    local want=$1 secs=$2 deadline=$((SECONDS + $2)) t0=${EPOCHREALTIME/[.,]/}
    until [[ $(stream_state) == "$want" ]]; do
        check_procs
        ((SECONDS < deadline)) || vf_die "stream '$task' not $want on $RTMP_STAT_URL after $secs s"
        sleep 0.2
    done
    local us=$((${EPOCHREALTIME/[.,]/} - t0))
    waited=$((us / 1000000)).$((us / 100000 % 10))
}

# task_field NAME: a number from the task's JSON as the API shows it
# (position fields: item, loop_index, offset_ms, timeline_ms; or epoch).
task_field() {
    local json
    json=$(timeout 30 "${vodctl_cmd[@]}" status --json "$task" 2>/dev/null 9>&-) || return 1
    grep -oE "\"$1\"[[:space:]]*:[[:space:]]*[0-9]+" <<<"$json" | head -n 1 | grep -oE '[0-9]+$'
}

# probe: ffprobe reads H.264 from the stream.
probe() {
    local out
    out=$(timeout 30 ffprobe -v error -rw_timeout 15000000 \
        -show_entries stream=codec_name,width,height -of compact "$url" 9>&-) ||
        vf_die "ffprobe could not read $url"
    grep -q 'codec_name=h264' <<<"$out" || vf_die "no H.264 video in $url:
$out"
    printf '%s\n' "$out"
}

# --- start the task through the queue ---------------------------------------

vf_log "starting task $task through the queue"
task_started=1
vodctl --via amqp start --id "$task" \
    --src vod://clip1.mp4 --src vod://clip2.mp4 --src vod://clip3.flv \
    --forward "$url" || vf_die "vodctl start failed"

wait_stream publishing "$publish_timeout"
vf_log "nginx-rtmp reports '$task' publishing; probing it"
probe
printf 'LIVE: %s — watch with: ffplay %s\n' "$url" "$url"
vodctl status || true

env_file=${run#"$VF_ROOT"/}/vodctl.env
cat <<EOF

The fleet: vodfleet-coordinator (pid ${proc_pids[0]}), workers demo-w1 (pid ${proc_pids[1]}) and demo-w2 (pid ${proc_pids[2]});
logs in ${run#"$VF_ROOT"/}. In another shell, from $VF_ROOT:

  source $env_file     # or:
$(sed 's/^/  /' "$run/vodctl.env")

$(printf '  %-28s # %s\n' \
    "vodctl status" "the fleet, one line per task" \
    "vodctl status $task" "the task in detail (worker, item, position)" \
    "vodctl watch $task" "the same, live; Ctrl-C quits the view")
  vodctl --via amqp stop --id $task --forward $url     # stop it (position kept 48 h)
  vodctl --via amqp resume --id $task --forward $url   # resume it from there
  kill -TERM <pid of the worker vodctl status names>   # its task fails over to the other worker

EOF

# --- then: smoke test, live view, or just stream ------------------------------

# stream_for SECONDS: keep streaming, checking the stream never drops (file
# seams included) and every process stays up.
stream_for() {
    local deadline=$((SECONDS + $1)) gone=0
    while ((SECONDS < deadline)); do
        check_procs
        if [[ $(stream_state) == absent ]]; then
            gone=$((gone + 1))
            ((gone < 3)) || vf_die "stream '$task' stopped publishing while it should stream"
        else
            gone=0
        fi
        sleep 0.5
    done
}

if [[ -n ${DEMO_SECONDS:-} ]]; then
    vf_log "smoke mode: streaming ${DEMO_SECONDS} s (DEMO_SECONDS), then stop and resume through vodctl"
    stream_for "$DEMO_SECONDS"
    vodctl status "$task" || true

    vf_log "stop: every destination of $task"
    vodctl --via amqp stop --id "$task" --forward "$url" || vf_die "vodctl stop failed"
    wait_stream absent "$stop_timeout"
    vf_log "nginx-rtmp: no publisher for '$task' (${waited} s after the reply)"
    vodctl status "$task" || true
    stopped_at=$(task_field timeline_ms) || vf_die "could not read task $task's position"

    vf_log "resume: $task from where it stopped"
    vodctl --via amqp resume --id "$task" --forward "$url" || vf_die "vodctl resume failed"
    wait_stream publishing "$publish_timeout"
    vf_log "nginx-rtmp reports '$task' publishing again (${waited} s after the reply); probing it"
    probe
    stream_for 3
    vodctl status "$task" || true
    now_at=$(task_field timeline_ms) || vf_die "could not read task $task's position"
    ((now_at > stopped_at)) ||
        vf_die "task $task did not resume where it stopped: ${now_at} ms on air now, ${stopped_at} ms at the stop"
    vf_log "resumed where it stopped: ${stopped_at} ms on air at the stop, ${now_at} ms now"

    vf_log "stop: $task, for good"
    vodctl --via amqp stop --id "$task" --forward "$url" || vf_die "vodctl stop failed"
    wait_stream absent "$stop_timeout"
    vf_log "nginx-rtmp: no publisher for '$task' (${waited} s after the reply)"
    task_started=0
    vf_log "smoke test passed; shutting down"
    exit 0
fi

# From here a signal ends the demo normally. Without errexit: bash 5.2 exits
# after the trap of a SIGINT that interrupts `wait` (or kills a foreground
# child) under `set -e`, even in `cmd || true`.
graceful=1
set +e
if [[ -t 1 ]]; then
    if [[ -t 0 ]]; then
        # One-second reads: bash runs a trap only once `read` returns.
        printf '[%s] press Enter for the live view (vodctl watch %s; it opens by itself in 20 s); Ctrl-C stops the demo ' \
            "$VF_NAME" "$task" >&2
        for _ in {1..20}; do
            ((!interrupted)) || break
            read -r -t 1 _ && break
        done
        echo >&2
    fi
    if ((!interrupted)); then
        # In the background, so that a SIGTERM to this script is handled at once
        # (a foreground child would delay the trap until it exits); stopped with
        # SIGINT, as Ctrl-C would, so it puts the cursor back.
        # A simple command, so $! is vodctl itself (env execs it).
        "${vodctl_cmd[@]}" watch "$task" 9>&- &
        watch_pid=$!
        while ((!interrupted)) && kill -0 "$watch_pid" 2>/dev/null; do
            wait "$watch_pid" 2>/dev/null
        done
        kill -INT "$watch_pid" 2>/dev/null
        for _ in {1..10}; do
            kill -0 "$watch_pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -TERM "$watch_pid" 2>/dev/null
        wait "$watch_pid" 2>/dev/null
    fi
fi
if ((!interrupted)); then
    vf_log "streaming; press Ctrl-C (or send SIGTERM) to stop the demo"
fi
while ((!interrupted)); do
    check_procs 0
    sleep 0.5
done
vf_log "stopping the demo"
