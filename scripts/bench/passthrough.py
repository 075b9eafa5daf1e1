#!/usr/bin/env python3
"""vodfleet benchmark: pass-through and transcode against the ffmpeg CLI.

Measures the DESIGN.md section 6 targets that concern CPU, memory and
real-time output, against ffmpeg's own CLI doing the same work on the same
machine in the same run (ratios, not absolute times, because the machines
are noisy). Python 3 standard library only; needs ffmpeg, ffprobe, nginx with
libnginx-mod-rtmp (scripts/setup.sh) and a release build of the worker:

    cd /work/main && cargo build --release --bins
    python3 scripts/bench/passthrough.py                       # everything, defaults
    python3 scripts/bench/passthrough.py --streams 1,50,200 --duration 30
    python3 scripts/bench/passthrough.py --streams 800 --tools vodfleet --duration 60 --no-transcode
    python3 scripts/bench/passthrough.py --no-passthrough      # transcode only

What it does
  1. Makes (once, cached in --cache, default /tmp/vodfleet-bench) f.mp4: 60 s of
     1280x720 25 fps H.264 at ~2 Mbit/s (testsrc2, plus a noise filter if the
     encoder undershoots) with 128 kbit/s AAC, and reports its real bitrate.
  2. Pass-through, for each N in --streams (default 1,50,100,200,400,800) and
     each tool:
       ffmpeg   : N processes of
                  ffmpeg -nostdin -loglevel error -re -stream_loop -1 -i f.mp4
                         -c copy -f flv rtmp://127.0.0.1:PORT/live/ffK
       vodfleet : ONE `vodfleet-worker play t1.json .. tN.json --progress none`
                  process, each task {"src":[vod://f.mp4],"forward":[...],
                  "extendParam":{"loop":"0"}}.
     Each configuration gets a fresh nginx-rtmp (scripts/rtmp-server.sh) on
     loopback. After every stream publishes (bounded wait) it warms up
     (--warmup, 5 s), then measures over --duration (30 s):
       * CPU: utime+stime deltas from /proc/PID/stat of the measured processes,
         divided by the window (cores) and by N (per stream); nginx separately;
         the rest of the machine from /proc/stat (other processes + softirq).
       * memory: PSS and RSS from /proc/PID/smaps_rollup, summed; per stream = /N.
       * context switches per stream and second (all threads), tool and nginx.
       * real time: per stream, the publisher's media timestamp at the server
         (/stat <client><timestamp>, ms) advanced over the window vs the wall
         clock between the two /stat reads. A stream is lagging if it advanced
         less than window - 1 s, if it was missing or if its publisher changed
         (reconnect). Also the bytes the server received per stream vs the
         file's bitrate ("data short" if < 90 %: the worker drops packets to
         the next keyframe when a destination queue is full, which the clock
         alone would not show).
     The search for a tool stops after the first N where it lags or the
     machine is CPU-saturated (>= 97 % busy), unless --keep-going.
  3. Transcode: one task with fops 1280x720 / 25 fps / 2000 kbit/s vs
       ffmpeg -nostdin -loglevel error -re -stream_loop -1 -i f.mp4
              -c:v libx264 -preset veryfast -tune zerolatency -b:v 2000k
              -maxrate 2000k -bufsize 2000k -g 50 -r 25 -s 1280x720
              -c:a aac -b:a 128k -ar 44100 -ac 2 -f flv rtmp://...
     and the same task with 4 forward URLs vs 1 (encode once, fan out); the
     three are run --transcode-repeat times (default 2), interleaved, and the
     ratios use the medians.
  4. Prints a markdown table and writes every figure, the commands, the
     machine and the idle checks to --json.

Before every measured run it waits (up to --idle-wait s, polling every 10 s)
until no cargo / rustc / linker / test-binary processes run (other agents may
be testing on the same box), and records the load average and whether the
machine was idle. Every process it starts is stopped on exit, error or Ctrl-C
(SIGTERM, bounded wait, then SIGKILL of its process group), nginx included.
"""

import argparse
import atexit
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RTMP_SERVER = os.path.join(ROOT, "scripts", "rtmp-server.sh")
CLK_TCK = os.sysconf("SC_CLK_TCK")
NPROC = os.cpu_count() or 1

GEN_BASE = [
    "ffmpeg", "-nostdin", "-y", "-loglevel", "error",
    "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
    "-t", "60",
]
GEN_TAIL = [
    "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2M", "-maxrate", "2M",
    "-bufsize", "2M", "-g", "50", "-pix_fmt", "yuv420p",
    "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart",
]


def ffmpeg_copy_cmd(media, url):
    return ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
            "-i", media, "-c", "copy", "-f", "flv", url]


def ffmpeg_transcode_cmd(media, url):
    return ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
            "-i", media,
            "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
            "-b:v", "2000k", "-maxrate", "2000k", "-bufsize", "2000k", "-g", "50",
            "-r", "25", "-s", "1280x720",
            "-c:a", "aac", "-b:a", "128k", "-ar", "44100", "-ac", "2",
            "-f", "flv", url]


FOPS = {"res": "1280x720", "fps": "25", "bps": "2000"}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Process bookkeeping: everything we start is in LIVE until it is reaped.

LIVE = {}  # pid -> Popen


def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True, **kw)
    LIVE[p.pid] = p
    return p


def stop_procs(procs, term_timeout=15.0):
    """SIGTERM each process group, wait (bounded), SIGKILL what is left.
    Returns (exit codes, how many had to be killed)."""
    procs = [p for p in procs if p is not None]
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + term_timeout
    killed = 0
    for p in procs:
        left = deadline - time.monotonic()
        try:
            p.wait(timeout=max(0.0, left))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        if p.poll() is None:
            killed += 1
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    codes = {}
    for p in procs:
        codes[p.returncode] = codes.get(p.returncode, 0) + 1
        LIVE.pop(p.pid, None)
    return codes, killed


class Nginx:
    """One nginx-rtmp started by scripts/rtmp-server.sh in its own directory."""

    ALL = []

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        out = subprocess.run([RTMP_SERVER, "start", directory], check=True,
                             capture_output=True, text=True, timeout=60)
        env = {}
        for line in out.stdout.splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                env[k] = v
        self.rtmp_port = int(env["RTMP_PORT"])
        self.http_port = int(env["HTTP_PORT"])
        self.url_base = env["RTMP_URL_BASE"]
        self.stat_url = env["RTMP_STAT_URL"]
        self.pid = int(env["RTMP_PID"])
        assert self.url_base.startswith("rtmp://127.0.0.1:")
        Nginx.ALL.append(self)

    def stop(self):
        if self in Nginx.ALL:
            subprocess.run([RTMP_SERVER, "stop", self.dir], capture_output=True, timeout=30)
            Nginx.ALL.remove(self)

    def stat(self):
        """{stream name: {"ts": ms, "client": id, "bytes_in": n}} of publishing streams,
        and the monotonic time the reply arrived."""
        with urllib.request.urlopen(self.stat_url, timeout=30) as r:
            body = r.read()
        t = time.monotonic()
        root = ET.fromstring(body)
        streams = {}
        for s in root.iter("stream"):
            name = s.findtext("name")
            for c in s.findall("client"):
                if c.find("publishing") is not None:
                    streams[name] = {
                        "ts": int(c.findtext("timestamp") or 0),
                        "client": c.findtext("id"),
                        "bytes_in": int(s.findtext("bytes_in") or 0),
                    }
        return streams, t


def cleanup():
    if LIVE:
        log(f"cleaning up {len(LIVE)} process(es)")
        stop_procs(list(LIVE.values()), term_timeout=10)
    for n in list(Nginx.ALL):
        n.stop()


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------------
# /proc readings


def proc_cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])  # utime, stime (fields 14, 15)
    except (OSError, IndexError):
        return None


def proc_mem_kb(pid):
    out = {"pss": 0, "rss": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    out["pss"] = int(line.split()[1])
                elif line.startswith("Rss:"):
                    out["rss"] = int(line.split()[1])
    except OSError:
        return None
    return out


def proc_threads(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_ctx_switches(pid):
    """Context switches (voluntary + not) summed over the process's threads."""
    cs = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            cs += int(line.split()[1])
            except OSError:
                pass
    except OSError:
        return None
    return cs


def cs_rate(before, after, window, n):
    """Context switches per stream and second."""
    tot = sum(after[p] - a for p, a in before.items() if a is not None and after.get(p) is not None)
    return round(tot / window / n, 1)


def machine_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])  # user nice system idle iowait irq softirq steal
    return total - idle, total


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


BUSY_COMMS = {"cargo", "rustc", "rustdoc", "cc", "cc1", "ld", "ld.lld", "rust-lld",
              "collect2", "clippy-driver", "build-script-b", "vodfleet-tests",
              "vodfleet_tests"}


def foreign_busy_procs():
    """cargo/rustc/test-binary processes not started by us."""
    mine = set(LIVE) | {os.getpid()}
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in mine:
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                comm = f.read().strip()
            try:
                exe = os.readlink(f"/proc/{d}/exe")
            except OSError:
                exe = ""
        except OSError:
            continue
        if (comm in BUSY_COMMS or "/target/debug/" in exe or "/target/release/deps/" in exe
                or "/target/debug/deps/" in exe):
            found.append(f"{d}:{comm}")
    return found


def wait_idle(max_wait):
    """Bounded wait until no foreign build/test processes run. Returns a record."""
    t0 = time.monotonic()
    busy = foreign_busy_procs()
    while busy and time.monotonic() - t0 < max_wait:
        log(f"waiting for other jobs to finish: {' '.join(busy[:6])}")
        time.sleep(10)
        busy = foreign_busy_procs()
    # The load average lags by minutes (and counts our own previous configuration),
    # so also sample how busy the machine is right now.
    waited = time.monotonic() - t0
    m0 = machine_ticks()
    time.sleep(2.0)
    m1 = machine_ticks()
    return {
        "waited_s": round(waited, 1),
        "busy_procs_at_start": busy,
        "idle": not busy,
        "loadavg_before": loadavg(),
        "busy_cores_2s_before": round((m1[0] - m0[0]) / CLK_TCK / 2.0, 3),
    }


# --------------------------------------------------------------------------
# Media


def probe(path):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries",
         "format=bit_rate,duration:stream=codec_type,codec_name,bit_rate,width,height,r_frame_rate,channels,sample_rate",
         "-of", "json", path], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def make_media(cache):
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, "f.mp4")
    meta_path = os.path.join(cache, "f.json")
    if os.path.exists(path) and os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("size") == os.path.getsize(path):
            return path, meta
    attempts = [[], ["-vf", "noise=alls=20:allf=t"], ["-vf", "noise=alls=40:allf=t"]]
    for extra in attempts:
        cmd = GEN_BASE + extra + GEN_TAIL + [path]
        log("generating " + " ".join(cmd))
        subprocess.run(cmd, check=True)
        info = probe(path)
        v = next(s for s in info["streams"] if s["codec_type"] == "video")
        vbps = int(v.get("bit_rate") or 0)
        if vbps >= 1_800_000:
            break
        log(f"video bitrate {vbps / 1e6:.2f} Mbit/s < 1.8, adding noise")
    meta = {
        "command": cmd,
        "probe": info,
        "video_bit_rate": vbps,
        "total_bit_rate": int(info["format"]["bit_rate"]),
        "duration_s": float(info["format"]["duration"]),
        "size": os.path.getsize(path),
    }
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    return path, meta


# --------------------------------------------------------------------------
# One measured configuration


def task_json(key, urls, fops=None):
    t = {"id": key, "src": [{"url": "vod://f.mp4"}],
         "forward": [{"url": u} for u in urls], "extendParam": {"loop": "0"}}
    if fops:
        t["fops"] = fops
    return t


def tail_lines(path, n=8):
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0, []
    return len(lines), lines[:n // 2] + (["..."] if len(lines) > n else []) + lines[-(n // 2):] \
        if len(lines) > n else lines


def run_config(args, media, media_meta, label, tool, n_streams, workdir, mode="copy", n_dest=1):
    """Start one configuration, measure it, stop it. Returns a result dict."""
    idle = wait_idle(args.idle_wait)
    os.makedirs(workdir, exist_ok=True)
    nginx = Nginx(os.path.join(workdir, "rtmp"))
    procs = []
    res = {"label": label, "tool": tool, "mode": mode, "n": n_streams,
           "destinations_per_stream": n_dest, "idle_check": idle}
    try:
        keys = []
        stderr_path = os.path.join(workdir, f"{tool}.stderr")
        errf = open(stderr_path, "wb")
        t_spawn = time.monotonic()
        if tool == "ffmpeg":
            make = ffmpeg_copy_cmd if mode == "copy" else ffmpeg_transcode_cmd
            for k in range(n_streams):
                key = f"ff{k}"
                keys.append(key)
                procs.append(spawn(make(media, f"{nginx.url_base}/{key}"), stdout=subprocess.DEVNULL,
                                   stderr=errf))
            res["command"] = " ".join(make(media, "rtmp://127.0.0.1:PORT/live/ffK")) + \
                f"   (x{n_streams} processes)"
        else:
            files = []
            for k in range(n_streams):
                key = f"vf{k}"
                urls = [f"{nginx.url_base}/{key}" + (f"d{d}" if n_dest > 1 else "")
                        for d in range(n_dest)]
                keys.extend(u.rsplit("/", 1)[1] for u in urls)
                path = os.path.join(workdir, f"t{k}.json")
                with open(path, "w") as f:
                    json.dump(task_json(key, urls, FOPS if mode == "transcode" else None), f)
                files.append(path)
            env = dict(os.environ, VODFLEET_MEDIA_ROOT=os.path.dirname(media), VODFLEET_LOG="warn")
            cmd = [args.worker, "play"] + files + ["--progress", "none"]
            procs.append(spawn(cmd, stdout=subprocess.DEVNULL, stderr=errf, env=env))
            example = json.dumps(task_json("vf0", [f"rtmp://127.0.0.1:PORT/live/vf0" + (f"d{d}" if n_dest > 1 else "")
                                                   for d in range(n_dest)],
                                           FOPS if mode == "transcode" else None))
            res["command"] = (f"VODFLEET_MEDIA_ROOT={os.path.dirname(media)} VODFLEET_LOG=warn "
                              f"{args.worker} play t0.json .. t{n_streams - 1}.json --progress none"
                              f"   (one process; t0.json = {example})")
        errf.close()
        n_keys = len(keys)

        # Bounded wait until every stream publishes.
        limit = max(20.0, 10.0 + 0.15 * n_keys)
        seen = {}
        while time.monotonic() - t_spawn < limit:
            time.sleep(1.0)
            if any(p.poll() is not None for p in procs) and tool == "vodfleet":
                break
            try:
                seen, _ = nginx.stat()
            except Exception as e:  # nginx busy: try again
                log(f"stat failed: {e}")
                continue
            if sum(1 for k in keys if k in seen) >= n_keys:
                break
        publishing = sum(1 for k in keys if k in seen)
        res["startup_s"] = round(time.monotonic() - t_spawn, 1)
        res["publishing_before_warmup"] = publishing
        log(f"{label} {tool}: {publishing}/{n_keys} publishing after {res['startup_s']} s; warm-up {args.warmup} s")
        time.sleep(args.warmup)

        pids = [p.pid for p in procs if p.poll() is None]
        # Window start: CPU first, then the server's clocks.
        c0 = {pid: proc_cpu_ticks(pid) for pid in pids}
        ng0 = proc_cpu_ticks(nginx.pid)
        m0 = machine_ticks()
        t0 = time.monotonic()
        s0, st0 = nginx.stat()
        cs0 = {pid: proc_ctx_switches(pid) for pid in pids}
        ngcs0 = {nginx.pid: proc_ctx_switches(nginx.pid)}
        # Sleep through the window, looking for other agents' builds/tests now and then.
        foreign = set()
        end = t0 + args.duration
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(5.0, left))
            if end - time.monotonic() > 0.5:
                foreign.update(foreign_busy_procs())
        c1 = {pid: proc_cpu_ticks(pid) for pid in pids}
        ng1 = proc_cpu_ticks(nginx.pid)
        m1 = machine_ticks()
        t1 = time.monotonic()
        s1, st1 = nginx.stat()
        cs1 = {pid: proc_ctx_switches(pid) for pid in pids}
        ngcs1 = {nginx.pid: proc_ctx_switches(nginx.pid)}
        window = t1 - t0
        stat_window_ms = (st1 - st0) * 1000.0

        # Memory after the window (reading smaps costs CPU; keep it out of the window).
        pss = rss = 0
        for pid in pids:
            m = proc_mem_kb(pid)
            if m:
                pss += m["pss"]
                rss += m["rss"]
        ng_mem = proc_mem_kb(nginx.pid) or {"pss": 0, "rss": 0}
        threads = sum(proc_threads(pid) or 0 for pid in pids)

        dead = [p for p in procs if p.poll() is not None]
        ticks = sum((c1[p] - c0[p]) for p in pids if c0.get(p) is not None and c1.get(p) is not None)
        cores = ticks / CLK_TCK / window
        ng_cores = ((ng1 - ng0) / CLK_TCK / window) if (ng0 is not None and ng1 is not None) else None
        busy = (m1[0] - m0[0]) / CLK_TCK / window
        total_machine = (m1[1] - m0[1]) / CLK_TCK / window

        # Real time per stream.
        expect_bps = media_meta["total_bit_rate"]
        lag, short, missing, reconnected = [], [], [], []
        ratios, byte_ratios = [], []
        for k in keys:
            a, b = s0.get(k), s1.get(k)
            if a is None or b is None:
                missing.append(k)
                ratios.append(0.0)
                continue
            if a["client"] != b["client"]:
                reconnected.append(k)
                ratios.append(0.0)
                continue
            adv = b["ts"] - a["ts"]
            ratios.append(adv / stat_window_ms)
            if adv < stat_window_ms - 1000.0:
                lag.append(k)
            br = (b["bytes_in"] - a["bytes_in"]) * 8 / ((st1 - st0) or 1) / expect_bps
            byte_ratios.append(br)
            if br < 0.9:
                short.append(k)
        lagging = sorted(set(lag) | set(missing) | set(reconnected))

        res.update({
            "streams_at_server": n_keys,
            "window_s": round(window, 2),
            "cpu_cores": round(cores, 4),
            "cpu_pct_per_stream": round(100.0 * cores / n_streams, 4),
            "nginx_cpu_cores": round(ng_cores, 4) if ng_cores is not None else None,
            "machine_busy_cores": round(busy, 3),
            "machine_busy_frac": round(busy / total_machine, 3) if total_machine else None,
            "rest_of_machine_cores": round(busy - cores - (ng_cores or 0), 3),
            "saturated": bool(total_machine and busy / total_machine >= 0.97),
            "pss_mb": round(pss / 1024, 1),
            "rss_mb": round(rss / 1024, 1),
            "pss_mb_per_stream": round(pss / 1024 / n_streams, 3),
            "rss_mb_per_stream": round(rss / 1024 / n_streams, 3),
            "nginx_pss_mb": round(ng_mem["pss"] / 1024, 1),
            "threads": threads,
            "ctx_switches_per_stream_s": cs_rate(cs0, cs1, window, n_streams),
            "nginx_ctx_switches_per_stream_s": cs_rate(ngcs0, ngcs1, window, n_streams),
            "processes": len(pids),
            "processes_died": len(dead),
            "lagging": len(lagging),
            "lagging_examples": lagging[:5],
            "missing": len(missing),
            "reconnected": len(reconnected),
            "worst_media_over_wall": round(min(ratios), 4) if ratios else None,
            "best_media_over_wall": round(max(ratios), 4) if ratios else None,
            "data_short": len(short),
            "worst_bytes_over_file_bitrate": round(min(byte_ratios), 3) if byte_ratios else None,
            "load_after": loadavg(),
        })
        idle["foreign_during_window"] = sorted(foreign)
        res["disturbed"] = bool(foreign) or not idle["idle"]
        res["realtime_ok"] = res["lagging"] == 0 and res["data_short"] == 0 and not dead
    finally:
        codes, killed = stop_procs(procs)
        res["exit_codes"] = {str(k): v for k, v in codes.items()}
        res["killed_after_sigterm"] = killed
        nginx.stop()
        lines, excerpt = tail_lines(os.path.join(workdir, f"{tool}.stderr"))
        res["stderr_lines"] = lines
        res["stderr_excerpt"] = excerpt
    log(f"{label} {tool}: cpu {res.get('cpu_cores')} cores ({res.get('cpu_pct_per_stream')} %/stream), "
        f"nginx {res.get('nginx_cpu_cores')}, PSS/stream {res.get('pss_mb_per_stream')} MB, "
        f"lagging {res.get('lagging')}/{res.get('streams_at_server')}, short {res.get('data_short')}, "
        f"busy {res.get('machine_busy_frac')}, disturbed {res.get('disturbed')}, stderr {lines} lines")
    return res


# --------------------------------------------------------------------------
# Reporting


def fmt(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def table(results):
    rows = ["| config | tool | N | CPU cores | CPU %/stream | nginx cores | machine busy | "
            "PSS MB/stream | RSS MB/stream | lagging | worst media/wall | data short | idle (busy cores just before) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.get("superseded"):
            continue
        if "cpu_cores" not in r:
            rows.append(f"| {r['label']} | {r['tool']} | {r['n']} | failed: {r.get('error', '?')} |")
            continue
        rows.append("| {label} | {tool} | {n} | {c} | {cps} | {ng} | {busy} | {pss} | {rss} | {lag}/{ns} | "
                    "{worst} | {short} | {idle} ({l1}) |".format(
                        label=r["label"] + (f" #{r['repeat'] + 1}" if "repeat" in r else ""), tool=r["tool"], n=r["n"], c=fmt(r["cpu_cores"]),
                        cps=fmt(r["cpu_pct_per_stream"], 3), ng=fmt(r["nginx_cpu_cores"]),
                        busy=f"{100 * (r['machine_busy_frac'] or 0):.0f} %",
                        pss=fmt(r["pss_mb_per_stream"], 2), rss=fmt(r["rss_mb_per_stream"], 2),
                        lag=r["lagging"], ns=r["streams_at_server"], worst=fmt(r["worst_media_over_wall"]),
                        short=r["data_short"], idle="NO" if r.get("disturbed") else "yes",
                        l1=r["idle_check"].get("busy_cores_2s_before")))
    return "\n".join(rows)


def measure(args, media, meta, label, tool, n, workdir, **kw):
    """run_config, repeated (up to --retry-disturbed times) when other agents'
    builds or tests ran before or during the window. Returns every attempt;
    all but the last are marked superseded."""
    attempts = []
    for i in range(args.retry_disturbed + 1):
        try:
            r = run_config(args, media, meta, label, tool, n, f"{workdir}-{i}", **kw)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # record and go on
            log(f"{label} {tool} failed: {e!r}")
            r = {"label": label, "tool": tool, "mode": kw.get("mode", "copy"), "n": n, "error": repr(e)}
        attempts.append(r)
        if not r.get("disturbed") or i == args.retry_disturbed:
            break
        if r.get("idle_check", {}).get("busy_procs_at_start"):
            # The idle wait already ran out: the box stays busy, another try would
            # only cost another --idle-wait. Keep this one, marked disturbed.
            break
        log(f"{label} {tool}: disturbed by other jobs, measuring again")
    for r in attempts[:-1]:
        r["superseded"] = True
    return attempts


def ratios(results):
    out = {}
    results = [r for r in results if not r.get("superseded")]
    by = {(r["label"], r["tool"]): r for r in results if "cpu_cores" in r}
    for r in results:
        if r.get("mode") != "copy" or r["tool"] != "vodfleet" or "cpu_cores" not in r:
            continue
        ff = by.get((r["label"].replace("vodfleet", "ffmpeg"), "ffmpeg"))
        if ff and ff["cpu_cores"] > 0:
            out[f"passthrough N={r['n']}: vodfleet/ffmpeg CPU per stream"] = round(
                r["cpu_cores"] / ff["cpu_cores"], 3)
            out[f"passthrough N={r['n']}: vodfleet/ffmpeg PSS per stream"] = round(
                r["pss_mb"] / ff["pss_mb"], 3) if ff["pss_mb"] else None
    def med(label, tool):
        xs = sorted(r["cpu_cores"] for r in results
                    if r["label"] == label and r["tool"] == tool and "cpu_cores" in r)
        if not xs:
            return None, []
        mid = len(xs) // 2
        return (xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2), xs

    tv, tvs = med("transcode-1dest", "vodfleet")
    tf, tfs = med("transcode-1dest", "ffmpeg")
    t4, t4s = med("transcode-4dest", "vodfleet")
    if tv and tf:
        out["transcode: vodfleet/ffmpeg CPU (medians)"] = round(tv / tf, 3)
        out["transcode runs, cores: ffmpeg / vodfleet 1 dest / vodfleet 4 dest"] = [tfs, tvs, t4s]
    if tv and t4:
        out["transcode: 4 destinations / 1 destination CPU (vodfleet, medians)"] = round(t4 / tv, 3)
    return out


def machine_info():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f.readline().split(":", 1)[1].strip()
    except OSError:
        pass

    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return "?"

    return {
        "nproc": NPROC, "model_name": model, "kernel": platform.release(), "mem_total": mem,
        "ffmpeg": out(["ffmpeg", "-version"]).splitlines()[0] if shutil.which("ffmpeg") else None,
        "nginx": out(["nginx", "-v"]) or subprocess.run(["nginx", "-v"], capture_output=True,
                                                        text=True).stderr.strip(),
        "python": platform.python_version(),
        "git_head": out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]),
        "git_dirty": bool(out(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])),
    }


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring (head of this file) for details.")
    ap.add_argument("--streams", default="1,50,100,200,400,800",
                    help="comma-separated stream counts, ascending (default %(default)s)")
    ap.add_argument("--duration", type=float, default=30.0, help="measurement window, s (default 30)")
    ap.add_argument("--warmup", type=float, default=5.0, help="warm-up after all publish, s (default 5)")
    ap.add_argument("--tools", default="ffmpeg,vodfleet", help="which of ffmpeg,vodfleet to run")
    ap.add_argument("--keep-going", action="store_true",
                    help="run every N even after a tool lagged or saturated the CPU")
    ap.add_argument("--no-passthrough", action="store_true")
    ap.add_argument("--no-transcode", action="store_true")
    ap.add_argument("--worker", default=os.path.join(ROOT, "target", "release", "vodfleet-worker"))
    ap.add_argument("--cache", default="/tmp/vodfleet-bench")
    ap.add_argument("--json", default=None, help="results file (default CACHE/results-STAMP.json)")
    ap.add_argument("--transcode-repeat", type=int, default=2,
                    help="run the transcode comparisons this many times, interleaved; the "
                         "ratios use the medians (default 2)")
    ap.add_argument("--retry-disturbed", type=int, default=1,
                    help="measure a configuration again (up to this many times) when other "
                         "cargo/test jobs ran before or during its window (default 1)")
    ap.add_argument("--idle-wait", type=float, default=300.0,
                    help="max s to wait for other cargo/test jobs before each run (default 300)")
    args = ap.parse_args()

    tools = [t for t in args.tools.split(",") if t]
    for t in tools:
        if t not in ("ffmpeg", "vodfleet"):
            ap.error(f"unknown tool {t}")
    counts = sorted({int(x) for x in args.streams.split(",") if x.strip()})
    for exe in ("ffmpeg", "ffprobe", "nginx"):
        if not shutil.which(exe):
            sys.exit(f"{exe} not found (run scripts/setup.sh)")
    if "vodfleet" in tools or not args.no_transcode:
        if not os.access(args.worker, os.X_OK):
            sys.exit(f"{args.worker} missing: cd {ROOT} && cargo build --release --bins")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    atexit.register(cleanup)

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = os.path.join(args.cache, "run-" + stamp)
    worker_src = args.worker
    worker_info = {"path": worker_src}
    if os.path.exists(worker_src):
        # Run a private copy: another job's `cargo build` may replace the binary mid-run.
        with open(worker_src, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        copy = os.path.join(args.cache, "bin", f"vodfleet-worker-{digest[:16]}")
        if not os.path.exists(copy):
            os.makedirs(os.path.dirname(copy), exist_ok=True)
            shutil.copy2(worker_src, copy + ".tmp")
            os.replace(copy + ".tmp", copy)
        args.worker = copy
        worker_info.update({
            "sha256": digest, "run_copy": copy,
            "mtime": dt.datetime.fromtimestamp(os.path.getmtime(worker_src)).astimezone()
            .isoformat(timespec="seconds")})
    json_path = args.json or os.path.join(args.cache, f"results-{stamp}.json")
    started = time.monotonic()
    doc = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "machine": machine_info(),
        "worker": worker_info,
        "settings": {"streams": counts, "duration_s": args.duration, "warmup_s": args.warmup,
                     "tools": tools},
        "results": [],
    }

    def save():
        doc["ratios"] = ratios(doc["results"])
        doc["elapsed_s"] = round(time.monotonic() - started, 1)
        with open(json_path, "w") as f:
            json.dump(doc, f, indent=1)

    try:
        media, meta = make_media(args.cache)
        doc["media"] = {k: meta[k] for k in ("command", "video_bit_rate", "total_bit_rate", "duration_s", "size")}
        log(f"media {media}: video {meta['video_bit_rate'] / 1e6:.3f} Mbit/s, "
            f"total {meta['total_bit_rate'] / 1e6:.3f} Mbit/s, {meta['duration_s']} s")

        if not args.no_passthrough:
            failed_at = {}
            for n in counts:
                for tool in tools:
                    if tool in failed_at and not args.keep_going:
                        log(f"skip {tool} N={n}: it already fell short at N={failed_at[tool]}")
                        continue
                    label = f"passthrough-{n}"
                    tries = measure(args, media, meta, label, tool, n,
                                    os.path.join(run_dir, f"{label}-{tool}"))
                    doc["results"].extend(tries)
                    save()
                    r = tries[-1]
                    if not r.get("realtime_ok") or r.get("saturated"):
                        failed_at[tool] = n

        if not args.no_transcode:
            plan = [("transcode-1dest", "ffmpeg", 1), ("transcode-1dest", "vodfleet", 1),
                    ("transcode-4dest", "vodfleet", 4)]
            for rep in range(args.transcode_repeat):
                for label, tool, nd in plan:
                    tries = measure(args, media, meta, label, tool, 1,
                                    os.path.join(run_dir, f"{label}-{tool}-r{rep}"),
                                    mode="transcode", n_dest=nd)
                    for r in tries:
                        r["repeat"] = rep
                    doc["results"].extend(tries)
                    save()
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); stopping everything")
        doc["interrupted"] = True
    finally:
        cleanup()
        save()

    print(table(doc["results"]))
    print()
    for k, v in doc["ratios"].items():
        print(f"- {k}: {v}")
    print()
    print(f"results: {json_path} (elapsed {doc['elapsed_s']} s)")
    return 130 if doc.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
