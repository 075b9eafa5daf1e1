#!/usr/bin/env python3
"""vodfleet benchmark: pass-through and transcode against the ffmpeg CLI.

Measures the targets of docs/BENCHMARKS.md that concern CPU, memory and
real-time output, against ffmpeg's own CLI doing the same work on the same
machine in the same run (ratios, not absolute times, because the machines
are noisy). Python 3 standard library only; needs ffmpeg, ffprobe, nginx with
libnginx-mod-rtmp (scripts/setup.sh), redis-server and a RabbitMQ broker at
127.0.0.1:5672 with rabbitmqctl (fleet mode), and release builds of the worker,
coordinator and vodctl:

    cd /work/main && cargo build --release --bins
    python3 scripts/bench/passthrough.py                       # everything, defaults
    python3 scripts/bench/passthrough.py --streams 1,50,200 --duration 30
    python3 scripts/bench/passthrough.py --streams 800 --tools vodfleet --duration 60 --no-transcode
    python3 scripts/bench/passthrough.py --no-passthrough      # transcode only
    python3 scripts/bench/passthrough.py --vodfleet-mode play  # the worker alone, no queue
    python3 scripts/bench/passthrough.py --capacity 300 --overload-factor 1.5 --duration 60

What it does
  1. Makes (once, cached in --cache, default /tmp/vodfleet-bench) f.mp4: 60 s of
     1280x720 25 fps H.264 at ~2 Mbit/s (testsrc2, plus a noise filter if the
     encoder undershoots) with 128 kbit/s AAC, and reports its real bitrate.
  2. Pass-through, for each N in --streams (default 1,50,100,200,400,800) and
     each tool:
       ffmpeg   : N processes of
                  ffmpeg -nostdin -loglevel error -re -stream_loop -1 -i f.mp4
                         -c copy -f flv rtmp://127.0.0.1:PORT/live/ffK
       vodfleet : --vodfleet-mode fleet (default), as operators run it: a
                  private redis-server (free loopback port, --save "",
                  --appendonly no), a private RabbitMQ vhost on the machine's
                  broker (rabbitmqctl add_vhost/set_permissions, deleted at
                  the end, on error and on Ctrl-C), one vodfleet-coordinator and
                  ONE `vodfleet-worker run` (VODFLEET_WORKER_SLOTS = N + 10),
                  both waited for on /readyz; the N tasks are started through
                  the queue, seed-001 bodies {"cmd":"1","type":"video",
                  "list":[<= 50 tasks]} each sent with
                  `vodctl --via amqp start --file BODY.json`; startup counts
                  from the first command. The worker is the measured tool; the
                  coordinator, Redis and the (shared) broker are reported apart,
                  like nginx. At the window's end: the worker's /metrics
                  (vodfleet_worker_fenced_total, summed over reasons,
                  vodfleet_worker_shed_total), its thread count, and the task
                  records in Redis (states, highest epoch). Stop: SIGTERM the
                  worker (drain timed, bounded by --drain-wait, exit code kept),
                  then the coordinator, Redis, and the vhost is deleted.
                  --vodfleet-mode play: ONE `vodfleet-worker play t1.json ..
                  tN.json --progress none` process, no queue.
                  Each task {"src":[vod://f.mp4],"forward":[...],
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
  4. Overload (--overload-factor F[,F...] --capacity C; replaces 2 and 3):
     ceil(F x C) streams offered to one worker in fleet mode (slots above the
     offer, so only the worker's own load measurement limits it). The wait
     for publishing ends when the count has not grown for --overload-settle s.
     Reports after the window: streams publishing, how many of those that
     published through the whole window lagged > 1 s, how many republished,
     self-fences, sheds, and the highest task epoch in Redis.
  5. Prints markdown tables (fleet extras and overload in their own) and
     writes every figure, the commands, the machine and the idle checks to
     --json.

Before every measured run it waits (up to --idle-wait s, polling every 10 s)
until no cargo / rustc / linker / test-binary processes, nor anyone else's
vodfleet release binaries or bench copies, run (other agents may be testing on
the same box), and records the load average and whether the
machine was idle. Every process it starts is stopped on exit, error or Ctrl-C
(SIGTERM, bounded wait, then SIGKILL of its process group), nginx, Redis, the
coordinator and the worker included, and its RabbitMQ vhosts are deleted.
"""

import argparse
import atexit
import datetime as dt
import hashlib
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
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

# The watermark comparison (issue 8): a 240x90 half-transparent PNG at TOP_RIGHT.
# vodfleet places it 3 % of the shorter side in from the edges it touches, on
# even coordinates (engine/src/media/watermark.rs): x = (1280-240-21) & ~1 = 1018,
# y = 21 & ~1 = 20; ffmpeg's overlay gets the same spot.
LOGO = "logo.png"
LOGO_GEN = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-f", "lavfi",
            "-i", "color=c=red@0.5:s=240x90,format=rgba", "-frames:v", "1"]
WM_POSITION = "TOP_RIGHT"
WM_XY = (1018, 20)


def ffmpeg_watermark_cmd(media, url):
    cmd = ffmpeg_transcode_cmd(media, url)
    logo = os.path.join(os.path.dirname(media), LOGO)
    at = cmd.index("-c:v")
    graph = f"[0:v]scale=1280:720[b];[b][1:v]overlay={WM_XY[0]}:{WM_XY[1]}:format=yuv420[v]"
    cmd[at:at] = ["-i", logo, "-filter_complex", graph, "-map", "[v]", "-map", "0:a"]
    return cmd


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


# --------------------------------------------------------------------------
# Fleet mode: a private Redis, a private RabbitMQ vhost, one coordinator, one
# worker (`vodfleet-worker run`), tasks started through the queue with vodctl.

BROKER = "127.0.0.1:5672"
RABBITMQCTL = os.environ.get("VODFLEET_RABBITMQCTL", "rabbitmqctl")
CTL_TIMEOUT = 60


def free_port():
    """A TCP port nothing listens on right now (the kernel's pick on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5.0):
    """(status, body text); status None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, ValueError):
        return None, ""


def prom_samples(text):
    """Prometheus text -> {metric name: sum of its samples over every label set}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        try:
            name_labels, value = line.rsplit(None, 1)
            v = float(value)
        except ValueError:
            continue
        name = name_labels.split("{", 1)[0].strip()
        out[name] = out.get(name, 0.0) + v
    return out


class Redis:
    """Just enough RESP (the Redis protocol) to PING, SCAN and HGETALL."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.rf = self.sock.makefile("rb")

    def close(self):
        try:
            self.rf.close()
            self.sock.close()
        except OSError:
            pass

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.rf.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:].rstrip(b"\r\n")
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError("redis: " + rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.rf.read(n + 2)[:-2].decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"redis: unexpected reply {line!r}")


def rabbitmqctl(*args):
    return subprocess.run([RABBITMQCTL, *args], capture_output=True, text=True,
                          timeout=CTL_TIMEOUT, stdin=subprocess.DEVNULL)


class Vhost:
    """A RabbitMQ virtual host of our own on the machine's broker (as
    tests/src/fleet.rs `Vhost`): add_vhost + set_permissions for guest;
    delete_vhost on stop, on error, Ctrl-C and exit (cleanup())."""

    ALL = []

    def __init__(self, name):
        self.name = name
        r = rabbitmqctl("add_vhost", name)
        if r.returncode != 0:
            raise RuntimeError(f"rabbitmqctl add_vhost {name}: {(r.stderr or r.stdout).strip()[-400:]} "
                               f"(is RabbitMQ running at {BROKER}?)")
        Vhost.ALL.append(self)
        r = rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        if r.returncode != 0:
            raise RuntimeError(f"rabbitmqctl set_permissions -p {name}: {(r.stderr or r.stdout).strip()[-400:]}")

    def url(self):
        return f"amqp://guest:guest@{BROKER}/{urllib.parse.quote(self.name, safe='')}"

    def delete(self):
        """True when deleted (or already gone)."""
        if self not in Vhost.ALL:
            return True
        Vhost.ALL.remove(self)
        try:
            r = rabbitmqctl("delete_vhost", self.name)
        except Exception as e:
            log(f"warning: could not delete vhost {self.name}: {e!r}")
            return False
        if r.returncode != 0:
            log(f"warning: could not delete vhost {self.name}: {(r.stderr or r.stdout).strip()[-300:]}")
            return False
        return True


def broker_pid():
    """The pid of the machine's RabbitMQ node (beam.smp running `rabbit boot`), or None."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() != "beam.smp":
                    continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
        except OSError:
            continue
        if b"rabbit" in cmdline and b"boot" in cmdline:
            return int(d)
    return None


class Fleet:
    """One coordinator and one worker on a private Redis and a private vhost.
    start() brings them up (each step registered for cleanup as it happens);
    stop() takes them down in order: worker (drain), coordinator, Redis, vhost."""

    def __init__(self, args, workdir, media_root, slots):
        self.args = args
        self.dir = workdir
        self.media_root = media_root
        self.slots = slots
        self.redis = self.coordinator = self.worker = None
        self.vhost = None
        self.redis_port = None
        self.coord_port = self.worker_port = None
        self.amqp_url = None
        self.info = {}

    def _env(self, **kw):
        env = dict(os.environ)
        env.update({k: str(v) for k, v in kw.items()})
        return env

    def _log(self, name):
        return open(os.path.join(self.dir, name), "wb")

    def start(self):
        t0 = time.monotonic()
        # Redis: a free port (tried again if another process took it meanwhile).
        rdir = os.path.join(self.dir, "redis")
        os.makedirs(rdir, exist_ok=True)
        errors = []
        for _ in range(5):
            port = free_port()
            with self._log("redis.log") as lf:
                p = spawn([self.args.redis_server, "--port", str(port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", rdir],
                          stdout=lf, stderr=subprocess.STDOUT)
            ok = False
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and p.poll() is None:
                try:
                    c = Redis(port, timeout=1.0)
                    try:
                        ok = c.cmd("PING") == "PONG"
                    finally:
                        c.close()
                except (OSError, RuntimeError, ConnectionError):
                    pass
                if ok:
                    break
                time.sleep(0.1)
            if ok:
                self.redis, self.redis_port = p, port
                break
            errors.append(f"port {port}: exit {p.poll()}")
            stop_procs([p], term_timeout=5)
        if self.redis is None:
            raise RuntimeError(f"redis-server did not answer PING: {errors}; see {self.dir}/redis.log")

        name = f"vfbench-{os.getpid()}-{secrets.token_hex(4)}"
        self.vhost = Vhost(name)
        self.amqp_url = self.vhost.url()

        self.coord_port = free_port()
        api_keys = f"bench:{secrets.token_hex(16)}"
        with self._log("coordinator.stderr") as lf:
            self.coordinator = spawn(
                [self.args.coordinator], stdout=lf, stderr=subprocess.STDOUT,
                env=self._env(VODFLEET_AMQP_URL=self.amqp_url,
                              VODFLEET_REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/",
                              VODFLEET_HTTP_ADDR=f"127.0.0.1:{self.coord_port}",
                              VODFLEET_API_KEYS=api_keys, VODFLEET_LOG="warn"))
        self.worker_port = free_port()
        self.worker_env = {"VODFLEET_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/<vhost>",
                           "VODFLEET_WORKER_ID": "bench-w1", "VODFLEET_WORKER_SLOTS": self.slots,
                           "VODFLEET_MEDIA_ROOT": self.media_root,
                           "VODFLEET_HTTP_ADDR": "127.0.0.1:<free>", "VODFLEET_LOG": "warn"}
        with self._log("worker.stderr") as lf:
            self.worker = spawn(
                [self.args.worker, "run"], stdout=lf, stderr=subprocess.STDOUT,
                env=self._env(**dict(self.worker_env, VODFLEET_AMQP_URL=self.amqp_url,
                                     VODFLEET_HTTP_ADDR=f"127.0.0.1:{self.worker_port}")))

        # Both /readyz answer 200 (bounded).
        limit = time.monotonic() + self.args.fleet_ready_timeout
        pending = {"coordinator": (self.coordinator, f"http://127.0.0.1:{self.coord_port}/readyz"),
                   "worker": (self.worker, f"http://127.0.0.1:{self.worker_port}/readyz")}
        last = {}
        while pending and time.monotonic() < limit:
            for who, (p, url) in list(pending.items()):
                if p.poll() is not None:
                    raise RuntimeError(f"{who} exited ({p.returncode}) before it was ready: "
                                       + " | ".join(tail_lines(os.path.join(self.dir, f"{who}.stderr"))[1]))
                st, body = http_get(url, timeout=2)
                last[who] = (st, body.strip()[:200])
                if st == 200:
                    del pending[who]
            if pending:
                time.sleep(0.2)
        if pending:
            raise RuntimeError(f"not ready after {self.args.fleet_ready_timeout} s: "
                               + ", ".join(f"{w} /readyz {last.get(w)}" for w in pending))
        inherited = sorted(k for k in os.environ if k.startswith("VODFLEET_"))
        self.info = {
            "ready_s": round(time.monotonic() - t0, 2),
            "vhost": name,
            "worker_slots": self.slots,
            "worker_env": self.worker_env,
            "coordinator_env": {"VODFLEET_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/<vhost>",
                                "VODFLEET_REDIS_URL": "redis://127.0.0.1:<free>/",
                                "VODFLEET_HTTP_ADDR": "127.0.0.1:<free>",
                                "VODFLEET_API_KEYS": "bench:<random hex>", "VODFLEET_LOG": "warn"},
            "inherited_vodfleet_env": inherited,
        }
        log(f"fleet up in {self.info['ready_s']} s: vhost {name}, redis :{self.redis_port}, "
            f"coordinator :{self.coord_port}, worker :{self.worker_port} ({self.slots} slots)"
            + (f"; inherited {' '.join(inherited)}" if inherited else ""))

    def processes(self):
        return [p for p in (self.worker, self.coordinator, self.redis) if p is not None]

    def send(self, tasks, body_dir):
        """Start the tasks through the queue: seed-001 bodies of up to 50 tasks,
        each sent with `vodctl --via amqp start --file BODY.json`, one after the
        other. Returns a record per command."""
        out = []
        env = self._env(VODFLEET_AMQP_URL=self.amqp_url, VODFLEET_LOG="warn")
        for i in range(0, len(tasks), 50):
            path = os.path.join(body_dir, f"body{i // 50}.json")
            with open(path, "w") as f:
                json.dump({"cmd": "1", "type": "video", "list": tasks[i:i + 50]}, f)
            t = time.monotonic()
            try:
                r = subprocess.run([self.args.vodctl, "--via", "amqp", "start", "--file", path],
                                   capture_output=True, text=True, timeout=60, env=env,
                                   stdin=subprocess.DEVNULL)
                rec = {"tasks": len(tasks[i:i + 50]), "exit": r.returncode,
                       "stdout": r.stdout.strip()[-200:], "stderr": r.stderr.strip()[-400:]}
            except subprocess.TimeoutExpired:
                rec = {"tasks": len(tasks[i:i + 50]), "exit": None, "stderr": "timed out after 60 s"}
            rec["s"] = round(time.monotonic() - t, 2)
            if rec["exit"] != 0:
                log(f"vodctl for {path} failed ({rec['exit']}): {rec.get('stderr')}")
            out.append(rec)
        return out

    def worker_metrics(self):
        st, body = http_get(f"http://127.0.0.1:{self.worker_port}/metrics", timeout=10)
        if st != 200:
            return None
        return {k: v for k, v in prom_samples(body).items() if k.startswith("vodfleet_")}

    def tasks_in_redis(self):
        """The task hashes `vodfleet:task:{ID}`: {id: {"epoch": n, "state": s, "worker": w}}."""
        c = Redis(self.redis_port)
        out = {}
        try:
            cursor = "0"
            keys = []
            while True:
                cursor, batch = c.cmd("SCAN", cursor, "MATCH", "vodfleet:task:*", "COUNT", 1000)
                keys.extend(batch)
                if cursor == "0":
                    break
            for k in keys:
                try:
                    flat = c.cmd("HMGET", k, "epoch", "state", "worker")
                except RuntimeError:
                    continue  # not a hash
                tid = k[len("vodfleet:task:"):].strip("{}")
                epoch, state, worker = flat
                out[tid] = {"epoch": int(epoch) if epoch and epoch.isdigit() else None,
                            "state": state, "worker": worker}
        finally:
            c.close()
        return out

    def stop(self, res):
        """Worker (SIGTERM, bounded drain), coordinator, Redis, then the vhost.
        Records how each went in res."""
        if self.worker is not None:
            t = time.monotonic()
            already = self.worker.poll()
            codes, killed = stop_procs([self.worker], term_timeout=self.args.drain_wait)
            res["worker_exit_code"] = self.worker.returncode
            res["worker_exited_before_stop"] = already is not None
            res["worker_drain_s"] = round(time.monotonic() - t, 2)
            res["worker_killed"] = bool(killed)
            self.worker = None
        if self.coordinator is not None:
            codes, killed = stop_procs([self.coordinator], term_timeout=15)
            res["coordinator_exit_code"] = self.coordinator.returncode
            res["coordinator_killed"] = bool(killed)
            self.coordinator = None
        if self.redis is not None:
            stop_procs([self.redis], term_timeout=10)
            self.redis = None
        if self.vhost is not None:
            res["vhost_deleted"] = self.vhost.delete()
            self.vhost = None


def cleanup():
    if LIVE:
        log(f"cleaning up {len(LIVE)} process(es)")
        stop_procs(list(LIVE.values()), term_timeout=10)
    for n in list(Nginx.ALL):
        n.stop()
    # After the processes: a worker still connected would hold the vhost open.
    for v in list(Vhost.ALL):
        log(f"deleting vhost {v.name}")
        v.delete()


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


# Where this run keeps its private copies of the binaries (set by main()).
BENCH_BIN_DIR = None


def foreign_busy_procs():
    """cargo/rustc/test-binary processes not started by us, and fleet processes
    (coordinator, worker, vodctl) that are not ours: ours run from private
    copies and are in LIVE, so a release binary running (a demo), or another
    bench run's copy, is someone else's."""
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
                or "/target/debug/deps/" in exe or "/target/release/vodfleet-" in exe
                or "/target/release/vodctl" in exe
                or (BENCH_BIN_DIR and exe.startswith(BENCH_BIN_DIR + os.sep))):
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


def make_logo(media):
    path = os.path.join(os.path.dirname(media), LOGO)
    if not os.path.exists(path):
        subprocess.run(LOGO_GEN + [path], check=True)
    return path


# --------------------------------------------------------------------------
# One measured configuration


def task_json(key, urls, fops=None, watermark=False):
    src = {"url": "vod://f.mp4"}
    if watermark:
        src.update(wmimage=f"vod://{LOGO}", wmposition=WM_POSITION)
    t = {"id": key, "src": [src],
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


def run_config(args, media, media_meta, label, tool, n_streams, workdir, mode="copy", n_dest=1,
               overload=None):
    """Start one configuration, measure it, stop it. Returns a result dict.
    overload: {"factor": F, "capacity": C} for an overload run (fleet mode;
    n_streams = the streams offered)."""
    idle = wait_idle(args.idle_wait)
    os.makedirs(workdir, exist_ok=True)
    nginx = Nginx(os.path.join(workdir, "rtmp"))
    procs = []
    fleet = None
    fleet_mode = tool == "vodfleet" and args.vodfleet_mode == "fleet"
    res = {"label": label, "tool": tool, "mode": mode, "n": n_streams,
           "destinations_per_stream": n_dest, "idle_check": idle}
    if tool == "vodfleet":
        res["vodfleet_mode"] = args.vodfleet_mode
    if overload:
        res["overload"] = dict(overload, offered=n_streams)
    try:
        keys = []
        stderr_path = os.path.join(workdir, f"{tool}.stderr")
        t_spawn = time.monotonic()
        if tool == "ffmpeg":
            errf = open(stderr_path, "wb")
            make = {"copy": ffmpeg_copy_cmd, "transcode": ffmpeg_transcode_cmd,
                    "watermark": ffmpeg_watermark_cmd}[mode]
            for k in range(n_streams):
                key = f"ff{k}"
                keys.append(key)
                procs.append(spawn(make(media, f"{nginx.url_base}/{key}"), stdout=subprocess.DEVNULL,
                                   stderr=errf))
            errf.close()
            res["command"] = " ".join(make(media, "rtmp://127.0.0.1:PORT/live/ffK")) + \
                f"   (x{n_streams} processes)"
        else:
            tasks = []
            for k in range(n_streams):
                key = f"vf{k}"
                urls = [f"{nginx.url_base}/{key}" + (f"d{d}" if n_dest > 1 else "")
                        for d in range(n_dest)]
                keys.extend(u.rsplit("/", 1)[1] for u in urls)
                tasks.append(task_json(key, urls, FOPS if mode != "copy" else None,
                                       watermark=mode == "watermark"))
            example = json.dumps(task_json("vf0", [f"rtmp://127.0.0.1:PORT/live/vf0" + (f"d{d}" if n_dest > 1 else "")
                                                   for d in range(n_dest)],
                                           FOPS if mode != "copy" else None,
                                           watermark=mode == "watermark"))
            if fleet_mode:
                stderr_path = os.path.join(workdir, "worker.stderr")
                fleet = Fleet(args, workdir, os.path.dirname(media), slots=n_streams + 10)
                fleet.start()
                res["fleet"] = fleet.info
                procs.append(fleet.worker)
                # The clock of "startup" starts with the first command.
                t_spawn = time.monotonic()
                res["commands"] = fleet.send(tasks, workdir)
                res["commands_s"] = round(time.monotonic() - t_spawn, 2)
                res["commands_failed"] = sum(1 for c in res["commands"] if c["exit"] != 0)
                res["command"] = (
                    f"vodfleet-coordinator + `vodfleet-worker run` (VODFLEET_WORKER_SLOTS={n_streams + 10}, "
                    f"VODFLEET_MEDIA_ROOT={os.path.dirname(media)}, VODFLEET_LOG=warn) on a private Redis and "
                    f"RabbitMQ vhost; tasks started with `vodctl --via amqp start --file BODY.json`, "
                    f"{len(res['commands'])} bodies {{\"cmd\":\"1\",\"type\":\"video\",\"list\":[<= 50 tasks]}}, "
                    f"task = {example}")
            else:
                files = []
                for k, t in enumerate(tasks):
                    path = os.path.join(workdir, f"t{k}.json")
                    with open(path, "w") as f:
                        json.dump(t, f)
                    files.append(path)
                env = dict(os.environ, VODFLEET_MEDIA_ROOT=os.path.dirname(media), VODFLEET_LOG="warn")
                cmd = [args.worker, "play"] + files + ["--progress", "none"]
                with open(stderr_path, "wb") as errf:
                    procs.append(spawn(cmd, stdout=subprocess.DEVNULL, stderr=errf, env=env))
                res["command"] = (f"VODFLEET_MEDIA_ROOT={os.path.dirname(media)} VODFLEET_LOG=warn "
                                  f"{args.worker} play t0.json .. t{n_streams - 1}.json --progress none"
                                  f"   (one process; t0.json = {example})")
        n_keys = len(keys)
        # Everything of ours that must stay up (fleet: worker, coordinator, Redis).
        vital = fleet.processes() if fleet else (procs if tool == "vodfleet" else [])

        # Bounded wait until every stream publishes (an overload run: until the
        # count has not grown for --overload-settle s, since not all of them will).
        limit = max(20.0, 10.0 + 0.15 * n_keys)
        if overload:
            limit = max(60.0, limit)
        seen = {}
        best, best_t = 0, time.monotonic()
        while time.monotonic() - t_spawn < limit:
            time.sleep(1.0)
            if any(p.poll() is not None for p in vital):
                break
            try:
                seen, _ = nginx.stat()
            except Exception as e:  # nginx busy: try again
                log(f"stat failed: {e}")
                continue
            now_publishing = sum(1 for k in keys if k in seen)
            if now_publishing >= n_keys:
                break
            if now_publishing > best:
                best, best_t = now_publishing, time.monotonic()
            elif overload and best and time.monotonic() - best_t >= args.overload_settle:
                break
        publishing = sum(1 for k in keys if k in seen)
        res["startup_s"] = round(time.monotonic() - t_spawn, 1)
        res["publishing_before_warmup"] = publishing
        log(f"{label} {tool}: {publishing}/{n_keys} publishing after {res['startup_s']} s; warm-up {args.warmup} s")
        time.sleep(args.warmup)

        pids = [p.pid for p in procs if p.poll() is None]
        # Other processes measured separately: nginx always; in fleet mode the
        # coordinator, our Redis and the machine's RabbitMQ node (shared: other
        # users' traffic counts too).
        extra = {"nginx": nginx.pid}
        if fleet:
            extra["coordinator"] = fleet.coordinator.pid
            extra["redis"] = fleet.redis.pid
            bp = broker_pid()
            if bp:
                extra["broker"] = bp
        # Window start: CPU first, then the server's clocks.
        c0 = {pid: proc_cpu_ticks(pid) for pid in pids}
        x0 = {k: proc_cpu_ticks(pid) for k, pid in extra.items()}
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
        x1 = {k: proc_cpu_ticks(pid) for k, pid in extra.items()}
        m1 = machine_ticks()
        t1 = time.monotonic()
        s1, st1 = nginx.stat()
        cs1 = {pid: proc_ctx_switches(pid) for pid in pids}
        ngcs1 = {nginx.pid: proc_ctx_switches(nginx.pid)}
        window = t1 - t0
        stat_window_ms = (st1 - st0) * 1000.0

        # The fleet's own counters, at the end of the window (outside the CPU readings).
        if fleet:
            wm = fleet.worker_metrics()
            res["worker_metrics"] = wm
            if wm is not None:
                res["fenced"] = int(wm.get("vodfleet_worker_fenced_total", 0))
                res["shed"] = int(wm.get("vodfleet_worker_shed_total", 0))
            try:
                tasks_now = fleet.tasks_in_redis()
                epochs = [t["epoch"] for t in tasks_now.values() if t["epoch"] is not None]
                states = {}
                for t in tasks_now.values():
                    states[t["state"]] = states.get(t["state"], 0) + 1
                res["tasks_in_redis"] = len(tasks_now)
                res["task_states"] = states
                res["max_epoch"] = max(epochs) if epochs else None
                res["tasks_epoch_above_1"] = sum(1 for e in epochs if e > 1)
            except Exception as e:
                log(f"reading the task records from Redis failed: {e!r}")
                res["redis_error"] = repr(e)

        # Memory after the window (reading smaps costs CPU; keep it out of the window).
        pss = rss = 0
        for pid in pids:
            m = proc_mem_kb(pid)
            if m:
                pss += m["pss"]
                rss += m["rss"]
        x_mem = {k: proc_mem_kb(pid) or {"pss": 0, "rss": 0} for k, pid in extra.items()}
        threads = sum(proc_threads(pid) or 0 for pid in pids)

        dead = [p for p in procs if p.poll() is not None]
        fleet_dead = [p for p in vital if p.poll() is not None] if fleet else []
        ticks = sum((c1[p] - c0[p]) for p in pids if c0.get(p) is not None and c1.get(p) is not None)
        cores = ticks / CLK_TCK / window
        x_cores = {k: ((x1[k] - x0[k]) / CLK_TCK / window)
                   if (x0.get(k) is not None and x1.get(k) is not None) else None for k in extra}
        ng_cores = x_cores["nginx"]
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
            "rest_of_machine_cores": round(busy - cores - sum(v or 0 for v in x_cores.values()), 3),
            "saturated": bool(total_machine and busy / total_machine >= 0.97),
            "pss_mb": round(pss / 1024, 1),
            "rss_mb": round(rss / 1024, 1),
            "pss_mb_per_stream": round(pss / 1024 / n_streams, 3),
            "rss_mb_per_stream": round(rss / 1024 / n_streams, 3),
            "nginx_pss_mb": round(x_mem["nginx"]["pss"] / 1024, 1),
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
        if fleet:
            for k in ("coordinator", "redis", "broker"):
                if k in extra:
                    res[f"{k}_cpu_cores"] = round(x_cores[k], 4) if x_cores[k] is not None else None
                    res[f"{k}_pss_mb"] = round(x_mem[k]["pss"] / 1024, 1)
            res["worker_threads"] = threads
            res["fleet_processes_died"] = len(fleet_dead)
        if overload:
            # Of the streams offered: how many publish at the window's end, and of
            # those publishing through the whole window (same publisher), how many
            # advanced less than window - 1 s.
            res["overload"].update({
                "publishing_at_window_start": sum(1 for k in keys if k in s0),
                "publishing_at_window_end": sum(1 for k in keys if k in s1),
                "publishing_whole_window": len(keys) - len(missing) - len(reconnected),
                "lagging_of_publishing": len(lag),
                "republished_in_window": len(reconnected),
                "fenced": res.get("fenced"),
                "shed": res.get("shed"),
                "max_epoch": res.get("max_epoch"),
            })
        idle["foreign_during_window"] = sorted(foreign)
        res["disturbed"] = bool(foreign) or not idle["idle"]
        res["realtime_ok"] = res["lagging"] == 0 and res["data_short"] == 0 and not dead \
            and not fleet_dead
    finally:
        if fleet is not None:
            fleet.stop(res)
            res["exit_codes"] = {str(res.get("worker_exit_code")): 1}
            res["killed_after_sigterm"] = int(bool(res.get("worker_killed")))
        else:
            codes, killed = stop_procs(procs)
            res["exit_codes"] = {str(k): v for k, v in codes.items()}
            res["killed_after_sigterm"] = killed
        nginx.stop()
        lines, excerpt = tail_lines(stderr_path)
        res["stderr_lines"] = lines
        res["stderr_excerpt"] = excerpt
        if fleet is not None:
            lines, excerpt = tail_lines(os.path.join(workdir, "coordinator.stderr"))
            res["coordinator_stderr_lines"] = lines
            res["coordinator_stderr_excerpt"] = excerpt
    msg = (f"{label} {tool}: cpu {res.get('cpu_cores')} cores ({res.get('cpu_pct_per_stream')} %/stream), "
           f"nginx {res.get('nginx_cpu_cores')}, PSS/stream {res.get('pss_mb_per_stream')} MB, "
           f"lagging {res.get('lagging')}/{res.get('streams_at_server')}, short {res.get('data_short')}, "
           f"busy {res.get('machine_busy_frac')}, disturbed {res.get('disturbed')}, stderr {res.get('stderr_lines')} lines")
    if fleet is not None:
        msg += (f"; coordinator {res.get('coordinator_cpu_cores')} cores, fenced {res.get('fenced')}, "
                f"shed {res.get('shed')}, max epoch {res.get('max_epoch')}, worker exit "
                f"{res.get('worker_exit_code')} after {res.get('worker_drain_s')} s")
    log(msg)
    return res


# --------------------------------------------------------------------------
# Reporting


def fmt(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def config_label(r):
    return r["label"] + (f" #{r['repeat'] + 1}" if "repeat" in r else "")


def tool_name(r):
    return r["tool"] + (f" ({r['vodfleet_mode']})" if r.get("vodfleet_mode") else "")


def table(results):
    rows = ["| config | tool | N | CPU cores | CPU %/stream | nginx cores | machine busy | "
            "PSS MB/stream | RSS MB/stream | lagging | worst media/wall | data short | idle (busy cores just before) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.get("superseded"):
            continue
        if "cpu_cores" not in r:
            rows.append(f"| {r['label']} | {tool_name(r)} | {r['n']} | failed: {r.get('error', '?')} |")
            continue
        rows.append("| {label} | {tool} | {n} | {c} | {cps} | {ng} | {busy} | {pss} | {rss} | {lag}/{ns} | "
                    "{worst} | {short} | {idle} ({l1}) |".format(
                        label=config_label(r), tool=tool_name(r), n=r["n"], c=fmt(r["cpu_cores"]),
                        cps=fmt(r["cpu_pct_per_stream"], 3), ng=fmt(r["nginx_cpu_cores"]),
                        busy=f"{100 * (r['machine_busy_frac'] or 0):.0f} %",
                        pss=fmt(r["pss_mb_per_stream"], 2), rss=fmt(r["rss_mb_per_stream"], 2),
                        lag=r["lagging"], ns=r["streams_at_server"], worst=fmt(r["worst_media_over_wall"]),
                        short=r["data_short"], idle="NO" if r.get("disturbed") else "yes",
                        l1=r["idle_check"].get("busy_cores_2s_before")))
    return "\n".join(rows)


def fleet_table(results):
    """The fleet-mode extras: the coordinator and Redis beside the worker, the
    worker's own counters, startup through the queue and the SIGTERM drain."""
    rs = [r for r in results if not r.get("superseded") and r.get("vodfleet_mode") == "fleet"
          and "cpu_cores" in r]
    if not rs:
        return ""
    rows = ["| config | N | coordinator cores | coordinator PSS MB | redis cores | broker cores (shared) | "
            "worker threads | fenced | shed | max epoch | commands (s) | startup (all publishing) | worker stop |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rs:
        pub = r.get("publishing_before_warmup")
        ns = r["streams_at_server"]
        startup = f"{r['startup_s']} s" if pub == ns else f"{pub}/{ns} after {r['startup_s']} s"
        stop = (f"exit {r.get('worker_exit_code')} after {r.get('worker_drain_s')} s"
                + (" (SIGKILL)" if r.get("worker_killed") else ""))
        rows.append(f"| {config_label(r)} | {r['n']} | "
                    f"{fmt(r.get('coordinator_cpu_cores'))} | {fmt(r.get('coordinator_pss_mb'), 1)} | "
                    f"{fmt(r.get('redis_cpu_cores'))} | {fmt(r.get('broker_cpu_cores'))} | "
                    f"{fmt(r.get('worker_threads'))} | {fmt(r.get('fenced'))} | {fmt(r.get('shed'))} | "
                    f"{fmt(r.get('max_epoch'))} | {len(r.get('commands', []))} ({fmt(r.get('commands_s'), 2)}) | "
                    f"{startup} | {stop} |")
    return "\n".join(rows)


def overload_table(results):
    rs = [r for r in results if not r.get("superseded") and r.get("overload")]
    if not rs:
        return ""
    rows = ["| capacity | factor | offered | publishing (end of window) | publishing, lagging > 1 s | "
            "republished in window | fenced | shed | max epoch | worker CPU cores | machine busy |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rs:
        o = r["overload"]
        if "cpu_cores" not in r:
            rows.append(f"| {o['capacity']} | {o['factor']} | {r['n']} | failed: {r.get('error', '?')} |")
            continue
        rows.append(f"| {o['capacity']} | {o['factor']} | {o['offered']} | {o.get('publishing_at_window_end')} | "
                    f"{o.get('lagging_of_publishing')}/{o.get('publishing_whole_window')} | "
                    f"{o.get('republished_in_window')} | {fmt(o.get('fenced'))} | {fmt(o.get('shed'))} | "
                    f"{fmt(o.get('max_epoch'))} | {fmt(r['cpu_cores'])} | "
                    f"{100 * (r['machine_busy_frac'] or 0):.0f} % |")
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
            if tool == "vodfleet":
                r["vodfleet_mode"] = args.vodfleet_mode
            if kw.get("overload"):
                r["overload"] = dict(kw["overload"], offered=n)
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
    wv, wvs = med("watermark-1dest", "vodfleet")
    wf, wfs = med("watermark-1dest", "ffmpeg")
    if wv and wf:
        out["watermark: vodfleet/ffmpeg CPU (medians)"] = round(wv / wf, 3)
        out["watermark runs, cores: ffmpeg / vodfleet"] = [wfs, wvs]
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
    ap.add_argument("--watermark", action="store_true",
                    help="also compare a watermarked 720p transcode (a PNG at TOP_RIGHT) with "
                         "ffmpeg's overlay filter, --transcode-repeat times, interleaved")
    ap.add_argument("--worker", default=os.path.join(ROOT, "target", "release", "vodfleet-worker"))
    ap.add_argument("--coordinator", default=os.path.join(ROOT, "target", "release", "vodfleet-coordinator"),
                    help="fleet mode: the coordinator binary (default target/release)")
    ap.add_argument("--vodctl", default=os.path.join(ROOT, "target", "release", "vodctl"),
                    help="fleet mode: the vodctl binary (default target/release)")
    ap.add_argument("--redis-server", default="redis-server", help="fleet mode: redis-server to run")
    ap.add_argument("--vodfleet-mode", choices=("fleet", "play"), default="fleet",
                    help="fleet (default): one coordinator and one `vodfleet-worker run` on a private "
                         "Redis and RabbitMQ vhost, tasks started through the queue with vodctl, as "
                         "operators run it; play: one `vodfleet-worker play t0.json ..` process, no queue")
    ap.add_argument("--fleet-ready-timeout", type=float, default=60.0,
                    help="fleet mode: max s for the coordinator's and worker's /readyz (default 60)")
    ap.add_argument("--drain-wait", type=float, default=35.0,
                    help="fleet mode: max s the worker may take to exit after SIGTERM before "
                         "SIGKILL (default 35: its 20 s VODFLEET_DRAIN_TIMEOUT_MS plus margin)")
    ap.add_argument("--overload-factor", default=None, metavar="F[,F...]",
                    help="overload runs instead of the pass-through and transcode ones: offer "
                         "F x --capacity streams to one worker (fleet mode, vodfleet only) and report "
                         "how many publish, lag, are fenced or shed, and the highest task epoch")
    ap.add_argument("--capacity", type=int, default=None,
                    help="with --overload-factor: the stream count taken as the worker's capacity")
    ap.add_argument("--overload-settle", type=float, default=15.0,
                    help="overload runs: stop waiting for streams to publish once the count has not "
                         "grown for this many s (default 15)")
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
    factors = []
    if args.overload_factor is not None:
        try:
            factors = [float(x) for x in args.overload_factor.split(",") if x.strip()]
        except ValueError:
            ap.error("--overload-factor takes numbers: F[,F...]")
        if not factors or any(f <= 0 for f in factors):
            ap.error("--overload-factor takes positive numbers")
        if not args.capacity or args.capacity < 1:
            ap.error("--overload-factor needs --capacity N (N >= 1)")
        if args.vodfleet_mode != "fleet":
            ap.error("--overload-factor runs in fleet mode only")
        # Overload runs replace the pass-through search and the transcode comparisons.
        tools = ["vodfleet"]
        args.no_passthrough = args.no_transcode = True
    elif args.capacity is not None:
        ap.error("--capacity goes with --overload-factor")
    for exe in ("ffmpeg", "ffprobe", "nginx"):
        if not shutil.which(exe):
            sys.exit(f"{exe} not found (run scripts/setup.sh)")
    uses_vodfleet = factors or (not args.no_passthrough and "vodfleet" in tools) or not args.no_transcode or args.watermark
    if uses_vodfleet:
        need = [args.worker] + ([args.coordinator, args.vodctl] if args.vodfleet_mode == "fleet" else [])
        for b in need:
            if not os.access(b, os.X_OK):
                sys.exit(f"{b} missing: cd {ROOT} && cargo build --release --bins")
        if args.vodfleet_mode == "fleet":
            for exe in (args.redis_server, RABBITMQCTL):
                if not shutil.which(exe):
                    sys.exit(f"{exe} not found (run scripts/setup.sh; RabbitMQ must answer at {BROKER})")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    atexit.register(cleanup)

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = os.path.join(args.cache, "run-" + stamp)

    def private_copy(src, name):
        """Run a private copy: another job's `cargo build` may replace the binary mid-run."""
        info = {"path": src}
        if not os.path.exists(src):
            return src, info
        with open(src, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        copy = os.path.join(args.cache, "bin", f"{name}-{digest[:16]}")
        if not os.path.exists(copy):
            os.makedirs(os.path.dirname(copy), exist_ok=True)
            shutil.copy2(src, copy + ".tmp")
            os.replace(copy + ".tmp", copy)
        info.update({
            "sha256": digest, "run_copy": copy,
            "mtime": dt.datetime.fromtimestamp(os.path.getmtime(src)).astimezone()
            .isoformat(timespec="seconds")})
        return copy, info

    global BENCH_BIN_DIR
    BENCH_BIN_DIR = os.path.realpath(os.path.join(args.cache, "bin"))
    args.worker, worker_info = private_copy(args.worker, "vodfleet-worker")
    binaries = {}
    if args.vodfleet_mode == "fleet":
        args.coordinator, binaries["coordinator"] = private_copy(args.coordinator, "vodfleet-coordinator")
        args.vodctl, binaries["vodctl"] = private_copy(args.vodctl, "vodctl")
    json_path = args.json or os.path.join(args.cache, f"results-{stamp}.json")
    started = time.monotonic()
    doc = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "machine": machine_info(),
        "worker": worker_info,
        "fleet_binaries": binaries,
        "settings": {"streams": counts, "duration_s": args.duration, "warmup_s": args.warmup,
                     "tools": tools, "vodfleet_mode": args.vodfleet_mode,
                     "overload_factors": factors, "capacity": args.capacity},
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

        if args.watermark:
            make_logo(media)
            plan = [("watermark-1dest", "ffmpeg"), ("watermark-1dest", "vodfleet")]
            for rep in range(args.transcode_repeat):
                for label, tool in plan:
                    tries = measure(args, media, meta, label, tool, 1,
                                    os.path.join(run_dir, f"{label}-{tool}-r{rep}"),
                                    mode="watermark")
                    for r in tries:
                        r["repeat"] = rep
                    doc["results"].extend(tries)
                    save()

        for f in factors:
            n = max(1, math.ceil(f * args.capacity - 1e-9))
            label = f"overload-{f:g}x{args.capacity}"
            tries = measure(args, media, meta, label, "vodfleet", n, os.path.join(run_dir, label),
                            overload={"factor": f, "capacity": args.capacity})
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
    for extra in (fleet_table(doc["results"]), overload_table(doc["results"])):
        if extra:
            print(extra)
            print()
    for k, v in doc["ratios"].items():
        print(f"- {k}: {v}")
    print()
    print(f"results: {json_path} (elapsed {doc['elapsed_s']} s)")
    return 130 if doc.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
