#!/usr/bin/env python3
"""vodfleet benchmark: streaming HTTP sources (issue 8 item 1).

Measures the "Streaming sources" targets of docs/BENCHMARKS.md with the
release worker (`vodfleet-worker play`), a local Range-capable HTTP origin
written here (paced, counting the body bytes it writes) and a private
nginx-rtmp (scripts/rtmp-server.sh, recording on). Python 3 standard library
only; needs ffmpeg and nginx with libnginx-mod-rtmp (scripts/setup.sh).

    cd /work/main && cargo build --release -p vodfleet-worker
    python3 scripts/bench/streaming.py                  # everything, defaults
    python3 scripts/bench/streaming.py --only first --runs 15
    python3 scripts/bench/streaming.py --only shared --tasks 50 --urls 5
    python3 scripts/bench/streaming.py --only memory --memory-minutes 10

What it does
  Media (made once, cached in --cache, default /tmp/vodfleet-bench-streaming):
  base.mp4, 60 s of 1280x720 25 fps H.264 at ~2 Mbit/s with AAC (faststart);
  big.mp4, base looped with -c copy to >= 100 MB (faststart); long.mp4,
  60 s of 640x360 at ~0.5 Mbit/s looped to 2 h.
  1. first: --runs times, one worker plays big.mp4 served at --rate-x (2.5)
     times its bitrate; the time from the first body byte the origin wrote to
     the first media nginx recorded (its FLV file growing past 2 KiB, polled
     every 10 ms); the worker is stopped once it is on air. p50 and p90.
  2. shared: ONE worker plays --tasks tasks spread over --urls URLs (each URL
     another path to base.mp4, so another cache entry), paced at 4x the
     bitrate per connection, to the end; body bytes the origin wrote / (urls x
     file size).
  3. memory: one worker plays long.mp4 (served unpaced) for --memory-minutes;
     the worker's RSS and PSS every 5 s: first, max, last and the slope.
Results are printed and written as JSON to --out (default: --cache/results.json).
"""

import argparse
import http.server
import json
import os
import shutil
import signal
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RTMP_SERVER = os.path.join(ROOT, "scripts", "rtmp-server.sh")
WORKER = os.path.join(ROOT, "target", "release", "vodfleet-worker")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_media(cache):
    os.makedirs(cache, exist_ok=True)
    base = os.path.join(cache, "base.mp4")
    if not os.path.exists(base):
        log("making base.mp4 (60 s 720p ~2 Mbit/s)")
        run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error",
             "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
             "-t", "60", "-vf", "noise=alls=12:allf=t",
             "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2M", "-maxrate", "2M",
             "-bufsize", "2M", "-g", "50", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", base + ".tmp.mp4"])
        os.rename(base + ".tmp.mp4", base)
    big = os.path.join(cache, "big.mp4")
    if not os.path.exists(big):
        loops = max(1, -(-100_000_000 // os.path.getsize(base)))
        log(f"making big.mp4 ({loops} x base, >= 100 MB)")
        run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-stream_loop", str(loops - 1),
             "-i", base, "-c", "copy", "-movflags", "+faststart", big + ".tmp.mp4"])
        os.rename(big + ".tmp.mp4", big)
    small = os.path.join(cache, "small.mp4")
    if not os.path.exists(small):
        run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error",
             "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
             "-t", "60", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "400k",
             "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
             small + ".tmp.mp4"])
        os.rename(small + ".tmp.mp4", small)
    long = os.path.join(cache, "long.mp4")
    if not os.path.exists(long):
        log("making long.mp4 (2 h, 640x360)")
        run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-stream_loop", "119",
             "-i", small, "-c", "copy", "-movflags", "+faststart", long + ".tmp.mp4"])
        os.rename(long + ".tmp.mp4", long)
    return base, big, long


def duration(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                          "-of", "csv=p=0", path], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


class Origin:
    """A threaded HTTP/1.1 origin: GET PATH serves files[PATH] with
    `Range: bytes=N-` support, paced at `rate` bytes/s per response (None:
    as fast as the socket takes it), counting body bytes per path."""

    def __init__(self, files, rate=None):
        self.files, self.rate = files, rate
        self.lock = threading.Lock()
        self.served = {p: 0 for p in files}
        self.requests = []
        self.first_byte = None
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                f = origin.files.get(path)
                if f is None:
                    self.send_error(404)
                    return
                size = os.path.getsize(f)
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                with origin.lock:
                    origin.requests.append((path, rng, time.monotonic()))
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if rng else 200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(size - start))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.send_header("Connection", "close")
                self.end_headers()
                t0, sent = time.monotonic(), 0
                with open(f, "rb") as fh:
                    fh.seek(start)
                    while True:
                        chunk = fh.read(64 * 1024)
                        if not chunk:
                            break
                        if origin.rate:
                            due = t0 + sent / origin.rate
                            wait = due - time.monotonic()
                            if wait > 0:
                                time.sleep(wait)
                        try:
                            self.wfile.write(chunk)
                        except OSError:
                            return
                        with origin.lock:
                            if origin.first_byte is None:
                                origin.first_byte = time.monotonic()
                            origin.served[path] += len(chunk)
                        sent += len(chunk)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def total(self):
        with self.lock:
            return sum(self.served.values())

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Nginx:
    def __init__(self, directory):
        self.dir = directory
        env = dict(os.environ, RECORD="all")
        out = subprocess.run([RTMP_SERVER, "start", directory], check=True,
                             capture_output=True, text=True, timeout=60, env=env)
        kv = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        self.url_base = kv["RTMP_URL_BASE"]

    def record(self, key):
        return os.path.join(self.dir, "record", key + ".flv")

    def stop(self):
        subprocess.run([RTMP_SERVER, "stop", self.dir], capture_output=True, timeout=30)


def worker(work, tasks, extra_env=None):
    paths = []
    for i, t in enumerate(tasks):
        p = os.path.join(work, f"task{i}.json")
        with open(p, "w") as f:
            json.dump(t, f)
        paths.append(p)
    env = dict(os.environ, VODFLEET_ALLOW_PRIVATE_NETWORKS="true",
               VODFLEET_CACHE_DIR=os.path.join(work, "cache"),
               VODFLEET_MEDIA_ROOT=work, VODFLEET_LOG="warn")
    env.update(extra_env or {})
    err = open(os.path.join(work, "worker.log"), "ab")
    return subprocess.Popen([WORKER, "play", *paths, "--progress", "none"], env=env,
                            stdout=subprocess.DEVNULL, stderr=err)


def task(tid, url, rtmp):
    return {"id": tid, "src": [{"url": url}], "forward": [{"url": rtmp}],
            "extendParam": {"loop": "1"}}


def stop(p, timeout=20):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def first_media(big, runs, rate_x, scratch):
    secs = duration(big)
    size = os.path.getsize(big)
    rate = size / secs * rate_x
    log(f"first media: {size / 1e6:.1f} MB, {secs:.0f} s, served at {rate * 8 / 1e6:.1f} Mbit/s ({rate_x}x)")
    delays, served_at = [], []
    for i in range(runs):
        work = tempfile.mkdtemp(prefix="run-", dir=scratch)
        nginx = Nginx(os.path.join(work, "nginx"))
        origin = Origin({"/big.mp4": big}, rate)
        key = f"first{i}"
        p = worker(work, [task(f"first-{i}", origin.url("/big.mp4"), f"{nginx.url_base}/{key}")])
        on_air = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            try:
                if os.path.getsize(nginx.record(key)) > 2048:
                    on_air = time.monotonic()
                    break
            except OSError:
                pass
            time.sleep(0.01)
        served = origin.total()
        stop(p)
        nginx.stop()
        origin.stop()
        if on_air is None or origin.first_byte is None:
            log(f"  run {i}: not on air")
            continue
        d = on_air - origin.first_byte
        delays.append(d)
        served_at.append(served)
        log(f"  run {i}: on air {d * 1000:.0f} ms after the first byte, {served / 1e6:.2f} MB served by then")
        shutil.rmtree(work, ignore_errors=True)
    delays.sort()
    q = lambda f: delays[min(len(delays) - 1, int(f * len(delays)))] if delays else None
    return {"file_bytes": size, "file_secs": secs, "rate_x": rate_x, "runs": len(delays),
            "p50_s": statistics.median(delays) if delays else None, "p90_s": q(0.9),
            "max_s": max(delays) if delays else None,
            "served_when_on_air_max_bytes": max(served_at) if served_at else None}


def shared(base, tasks, urls, scratch):
    size, secs = os.path.getsize(base), duration(base)
    work = tempfile.mkdtemp(prefix="shared-", dir=scratch)
    nginx = Nginx(os.path.join(work, "nginx"))
    files = {f"/f{u}.mp4": base for u in range(urls)}
    origin = Origin(files, size / secs * 4)
    ts = [task(f"shared-{i}", origin.url(f"/f{i % urls}.mp4"), f"{nginx.url_base}/shared{i}")
          for i in range(tasks)]
    log(f"shared: {tasks} tasks over {urls} URLs of {size / 1e6:.1f} MB")
    t0 = time.monotonic()
    p = worker(work, ts)
    code = p.wait(secs * 3 + 120)
    wall = time.monotonic() - t0
    served = origin.total()
    played = sum(1 for i in range(tasks)
                 if os.path.exists(nginx.record(f"shared{i}"))
                 and os.path.getsize(nginx.record(f"shared{i}")) > size // 2)
    nginx.stop()
    origin.stop()
    ratio = served / (urls * size)
    log(f"  exit {code} after {wall:.0f} s; {served / 1e6:.1f} MB served for {urls} x {size / 1e6:.1f} MB"
        f" = {ratio:.4f}x; {played}/{tasks} recordings at least half the file; requests {len(origin.requests)}")
    shutil.rmtree(work, ignore_errors=True)
    return {"tasks": tasks, "urls": urls, "file_bytes": size, "served_bytes": served,
            "ratio": ratio, "requests": len(origin.requests), "exit": code, "played": played}


def mem_of(pid):
    rss = pss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def memory(long, minutes, scratch):
    work = tempfile.mkdtemp(prefix="memory-", dir=scratch)
    nginx = Nginx(os.path.join(work, "nginx"))
    origin = Origin({"/long.mp4": long})
    log(f"memory: {os.path.getsize(long) / 1e6:.0f} MB, {duration(long) / 3600:.1f} h, played for {minutes} min")
    p = worker(work, [task("memory", origin.url("/long.mp4"), f"{nginx.url_base}/memory")])
    samples = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < minutes * 60 and p.poll() is None:
        time.sleep(5)
        rss, pss = mem_of(p.pid)
        samples.append((time.monotonic() - t0, rss, pss, origin.total()))
    stop(p)
    nginx.stop()
    origin.stop()
    shutil.rmtree(work, ignore_errors=True)
    xs = [s[0] / 60 for s in samples]
    ys = [s[1] / 1e6 for s in samples]
    slope = None
    if len(xs) > 2:
        mx, my = statistics.mean(xs), statistics.mean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    res = {"minutes": minutes, "samples": len(samples),
           "rss_first_mb": ys[0] if ys else None, "rss_max_mb": max(ys) if ys else None,
           "rss_last_mb": ys[-1] if ys else None,
           "pss_last_mb": samples[-1][2] / 1e6 if samples else None,
           "rss_slope_mb_per_min": slope,
           "downloaded_mb": samples[-1][3] / 1e6 if samples else None}
    log(f"  RSS first {res['rss_first_mb']:.1f} MB, max {res['rss_max_mb']:.1f} MB, last {res['rss_last_mb']:.1f} MB,"
        f" slope {slope if slope is None else round(slope, 3)} MB/min; {res['downloaded_mb']:.0f} MB downloaded")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["first", "shared", "memory"], action="append")
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--rate-x", type=float, default=2.5)
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument("--urls", type=int, default=5)
    ap.add_argument("--memory-minutes", type=float, default=5)
    ap.add_argument("--cache", default="/tmp/vodfleet-bench-streaming")
    ap.add_argument("--out")
    a = ap.parse_args()
    if not os.access(WORKER, os.X_OK):
        sys.exit(f"{WORKER} not found: cargo build --release -p vodfleet-worker")
    base, big, long = make_media(a.cache)
    scratch = tempfile.mkdtemp(prefix="vodfleet-streaming-")
    only = set(a.only or ["first", "shared", "memory"])
    results = {"worker": WORKER}
    try:
        if "first" in only:
            results["first_media"] = first_media(big, a.runs, a.rate_x, scratch)
        if "shared" in only:
            results["shared"] = shared(base, a.tasks, a.urls, scratch)
        if "memory" in only:
            results["memory"] = memory(long, a.memory_minutes, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out = a.out or os.path.join(a.cache, "results.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
