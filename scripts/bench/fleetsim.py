#!/usr/bin/env python3
"""vodfleet fleet-scale benchmark: N simulated workers x M tasks against two
coordinators, one Redis and one RabbitMQ (issue 10; docs/CAPACITY.md).

Python 3 standard library only. Needs redis-server, RabbitMQ's scripts in
/usr/lib/rabbitmq/bin (private node) or rabbitmqctl (--broker vhost), and
builds of vodfleet-coordinator, vodctl and vodfleet-sim (release preferred):

    cargo build --release -p vodfleet-coordinator -p vodctl -p vodfleet-sim
    python3 scripts/bench/fleetsim.py --workers 10 --tasks 20 --duration 60
    python3 scripts/bench/fleetsim.py --workers 200 --tasks 100 --duration 600

What it does
  1. Starts, on free loopback ports and in a temporary directory, everything
     of its own so the machine's shared services are never touched:
     a redis-server (--save '' --appendonly no) or, with --redis cluster, a
     Redis Cluster of six (three masters, three replicas: `redis-server
     --cluster-enabled yes` on free ports, `redis-cli --cluster create
     --cluster-replicas 1`, as tests/src/fleet/redis_cluster.rs makes one; the
     coordinators then get VODFLEET_REDIS_CLUSTER=true and the six seed nodes
     in VODFLEET_REDIS_URL; --redis single-replica adds one `--replicaof` replica
     to the single redis-server, the like-for-like baseline for a cluster
     whose masters each have a replica), a RabbitMQ node of its own
     (--broker private, default: own node name, ports, HOME/cookie, empty
     RABBITMQ_CONF_ENV_FILE, own config file; the way tests/src/fleet/rabbit.rs
     RabbitNode does it) or a private vhost on the machine's broker
     (--broker vhost: rabbitmqctl add_vhost, deleted at the end), and two
     vodfleet-coordinator processes (VODFLEET_AMQP_URL, VODFLEET_REDIS_URL,
     VODFLEET_HTTP_ADDR, VODFLEET_API_KEYS, VODFLEET_LEASE_TTL_MS,
     VODFLEET_HEARTBEAT_MS, VODFLEET_LOG=warn), waited for on /readyz.
  2. Starts `vodfleet-sim --workers N --tasks M --progress FILE` and waits
     until every simulated worker is connected.
  3. Publishes the T = N x M start commands in steps (--steps, default
     1000,5000,10000,20000 capped at T, then T): seed-001 bodies of 50 tasks
     ({"cmd":"1","type":"video","list":[{"id","src":[{"url":"vod://sim/x.mp4"}],
     "forward":[{"url":"rtmp://127.0.0.1:1/live/<id>"}],"extendParam":{"loop":"0",
     "index":"1","callBackFileInfo":"0"}}]}, as tests/src/fleet/seed.rs builds
     them; the sources are fake, nothing plays them), each sent with
     `vodctl --via amqp start --file BODY.json` (--publishers at once). After
     each step it waits until the simulator holds the step's tasks, holds
     --step-hold s, and samples coordinator RSS and Redis used_memory
     (memory vs tasks).
  4. Measures the steady window (--duration s, all T tasks held): every
     --sample-every s the coordinators' utime+stime and RSS (/proc/PID/stat,
     /proc/PID/status), Redis INFO (used_memory, instantaneous_ops_per_sec,
     used_cpu_sys+used_cpu_user; summed over every node of a cluster, replicas
     included), the broker's beam.smp CPU, the simulator's
     CPU, the load average, and the simulator's progress (heartbeats, task
     lines, false expiries). The same figures from the first order to the
     start of the window are the ramp's (`ramp`).
  5. Times `GET /v1/tasks` (signed) against a coordinator: the first page
     (default limit) and a page of 1000, three times each, then every page of
     1000 followed through `next` (a full listing).
  6. SIGINTs the simulator (it releases every task like a SIGTERM'd worker and
     prints its JSON summary), stops the coordinators, Redis and the broker.
  7. Writes scripts/bench/results/<date>-fleetsim-<N>x<M>.json (or --out).

The machine is shared: the load average before and during the run is recorded
beside every figure; --max-load refuses to start above it.
"""

import argparse
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLK_TCK = os.sysconf("SC_CLK_TCK")
LIVE = []  # every process we started, killed in cleanup()
CLEANUPS = []  # other things to undo (vhost), last first


def log(msg):
    print(f"[fleetsim {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def spawn(cmd, log_path, env=None, **kw):
    """A process in its own session (so killpg reaches its children), logged to a file."""
    lf = open(log_path, "ab")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=kw.pop("stdout", lf), stderr=lf,
                         env=env, start_new_session=True, **kw)
    LIVE.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=20.0):
    """Signal the process group, wait, then SIGKILL it."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(10)
    if p in LIVE:
        LIVE.remove(p)
    return p.returncode


def cleanup():
    for p in reversed(list(LIVE)):
        stop(p, timeout=10)
    while CLEANUPS:
        try:
            CLEANUPS.pop()()
        except Exception as e:  # cleanup must go on
            log(f"cleanup: {e!r}")


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def wait_for(what, cond, timeout, step=0.25):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise RuntimeError(f"{what}: not within {timeout} s")


# ---------------------------------------------------------------- /proc

def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, IndexError):
        return None


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def beam_pid(node_marker):
    """The beam.smp whose command line names `node_marker` (its HOME), or
    the machine's `rabbit boot` node when node_marker is None."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() != "beam.smp":
                    continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if node_marker is None and b"rabbit" in cmd and b"boot" in cmd:
            return int(d)
        if node_marker is not None and node_marker.encode() in cmd:
            return int(d)
    return None


# ---------------------------------------------------------------- Redis

class Redis:
    """Just enough RESP for PING, INFO and SCARD."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.rf = self.sock.makefile("rb")

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.rf.readline()
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

    def info(self):
        out = {}
        for line in self.cmd("INFO").splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v.strip()
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def start_redis(workdir, binary, replica_of=None):
    """One redis-server; with replica_of (a port), a replica of that one."""
    name = "redis-replica" if replica_of else "redis"
    for _ in range(5):
        port = free_port()
        extra = ["--replicaof", "127.0.0.1", str(replica_of)] if replica_of else []
        p = spawn([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--daemonize", "no", "--dir", workdir,
                   "--dbfilename", f"{name}.rdb"] + extra,
                  os.path.join(workdir, f"{name}.log"))
        try:
            wait_for("redis PING", lambda: port_open(port) and Redis(port).cmd("PING") == "PONG", 10)
            return p, port
        except Exception as e:  # port taken meanwhile: try another
            log(f"redis on {port}: {e}")
            stop(p)
    raise RuntimeError("redis-server did not start")


def redis_info(port):
    r = Redis(port)
    try:
        return r.info()
    finally:
        r.close()


def start_redis_cluster(workdir, binary, nodes=6, node_timeout_ms=2000):
    """Six cluster nodes, three masters and three replicas, like
    tests/src/fleet/redis_cluster.rs RedisCluster: [(process, port)]."""
    started = []
    while len(started) < nodes:
        port, bus = free_port(), free_port()
        if port == bus:
            continue
        p = spawn([binary, "--port", str(port), "--cluster-port", str(bus), "--cluster-enabled", "yes",
                   "--cluster-config-file", os.path.join(workdir, f"nodes-{port}.conf"),
                   "--cluster-node-timeout", str(node_timeout_ms), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--daemonize", "no", "--dir", workdir],
                  os.path.join(workdir, f"redis-{port}.log"))
        try:
            wait_for("redis PING", lambda: port_open(port) and Redis(port).cmd("PING") == "PONG", 10)
            started.append((p, port))
        except Exception as e:  # port taken meanwhile: try another
            log(f"redis on {port}: {e}")
            stop(p)
    cli = os.path.join(os.path.dirname(shutil.which(binary) or binary), "redis-cli")
    cli = cli if os.path.isfile(cli) else "redis-cli"
    subprocess.run([cli, "--cluster", "create", *[f"127.0.0.1:{port}" for _, port in started],
                    "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True,
                   text=True, timeout=120, stdin=subprocess.DEVNULL)

    def healthy():
        for _, port in started:
            r = Redis(port)
            try:
                info = r.cmd("CLUSTER", "INFO")
                repl = r.cmd("INFO", "replication")
            finally:
                r.close()
            if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                return False
            if "role:slave" in repl and "master_link_status:up" not in repl:
                return False
        return True
    wait_for("Redis Cluster healthy", healthy, 60, 0.5)
    return started


# ---------------------------------------------------------------- RabbitMQ

def start_rabbit_node(workdir, bin_dir):
    """A private node, like tests/src/fleet/rabbit.rs RabbitNode."""
    d = os.path.join(workdir, "rabbit")
    for sub in ("home", "mnesia", "log"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    node = f"vfsim{secrets.token_hex(4)}@localhost"
    port, dist = free_port(), free_port()
    cookie = os.path.join(d, "home", ".erlang.cookie")
    with open(cookie, "w") as f:
        f.write("VFSIM" + secrets.token_hex(12).upper())
    os.chmod(cookie, 0o400)
    open(os.path.join(d, "rabbitmq-env.conf"), "w").close()
    with open(os.path.join(d, "enabled_plugins"), "w") as f:
        f.write("[].\n")
    with open(os.path.join(d, "rabbitmq.conf"), "w") as f:
        f.write(f"listeners.tcp.local = 127.0.0.1:{port}\n")
    env = dict(os.environ, HOME=os.path.join(d, "home"),
               RABBITMQ_CONF_ENV_FILE=os.path.join(d, "rabbitmq-env.conf"),
               RABBITMQ_NODENAME=node,
               RABBITMQ_CONFIG_FILE=os.path.join(d, "rabbitmq.conf"),
               RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(d, "enabled_plugins"),
               RABBITMQ_MNESIA_BASE=os.path.join(d, "mnesia"),
               RABBITMQ_LOG_BASE=os.path.join(d, "log"),
               RABBITMQ_NODE_PORT=str(port), RABBITMQ_DIST_PORT=str(dist))
    p = spawn([os.path.join(bin_dir, "rabbitmq-server")], os.path.join(d, "server.out"), env=env)
    t = time.monotonic()
    wait_for("private RabbitMQ node", lambda: p.poll() is None and port_open(port), 90, 0.5)
    log(f"RabbitMQ node {node} on :{port} up in {time.monotonic() - t:.1f} s")
    # beam.smp's command line names its HOME (`-home DIR`), which is ours alone.
    return p, f"amqp://guest:guest@127.0.0.1:{port}/%2f", os.path.join(d, "home")


def start_vhost(ctl):
    name = f"vfsim-{secrets.token_hex(4)}"
    run = lambda *a: subprocess.run([ctl, *a], capture_output=True, text=True, timeout=60,
                                    stdin=subprocess.DEVNULL, check=True)
    run("add_vhost", name)
    CLEANUPS.append(lambda: run("delete_vhost", name))
    run("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return f"amqp://guest:guest@127.0.0.1:5672/{urllib.parse.quote(name, safe='')}", name


# ---------------------------------------------------------------- HTTP

def http_req(port, method, path, key=None, timeout=120):
    """(status, body bytes, seconds to the last byte); signed when key=(id, secret)."""
    headers = {}
    if key:
        ts, nonce = str(int(time.time())), secrets.token_hex(12)
        msg = f"{ts}.{nonce}.{method}.{path}.".encode()
        sig = hmac.new(key[1].encode(), msg, hashlib.sha256).hexdigest()
        headers = {"x-vodfleet-key-id": key[0], "x-vodfleet-timestamp": ts,
                   "x-vodfleet-nonce": nonce, "x-vodfleet-signature": f"v1={sig}"}
    t = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, headers=headers)
        r = c.getresponse()
        body = r.read()
        return r.status, body, time.monotonic() - t
    except OSError:
        return None, b"", time.monotonic() - t
    finally:
        c.close()


# ---------------------------------------------------------------- the run

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_bin(args, name):
    if args.bin_dir:
        return os.path.join(args.bin_dir, name)
    for prof in ("release", "debug"):
        p = os.path.join(ROOT, "target", prof, name)
        if os.path.isfile(p):
            return p
    raise RuntimeError(f"{name} not built (cargo build --release -p {name})")


def task_entry(i):
    tid = f"sim{i:06d}"
    return {"id": tid, "src": [{"url": f"vod://sim/{tid}.mp4"}],
            "forward": [{"url": f"rtmp://127.0.0.1:1/live/{tid}"}],
            "extendParam": {"loop": "0", "index": "1", "callBackFileInfo": "0"}}


def publish(args, vodctl, env, workdir, first, last):
    """Tasks [first, last) as seed-001 bodies of 50, `vodctl --via amqp start --file`."""
    def one(lo):
        hi = min(lo + 50, last)
        path = os.path.join(workdir, "bodies", f"b{lo}.json")
        with open(path, "w") as f:
            json.dump({"cmd": "1", "type": "video", "list": [task_entry(i) for i in range(lo, hi)]}, f)
        for _ in range(3):
            r = subprocess.run([vodctl, "--via", "amqp", "start", "--file", path], env=env,
                               capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            if r.returncode == 0:
                return 0
            log(f"vodctl {path}: exit {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}")
        return 1
    os.makedirs(os.path.join(workdir, "bodies"), exist_ok=True)
    with ThreadPoolExecutor(args.publishers) as ex:
        return sum(ex.map(one, range(first, last, 50)))


def get_page(port, key, path):
    st, body, secs = http_req(port, "GET", path, key)
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    tasks = doc.get("tasks") if isinstance(doc, dict) else None
    return {"path": path.split("&cursor=")[0], "status": st, "bytes": len(body),
            "seconds": round(secs, 4), "tasks": None if tasks is None else len(tasks),
            "next": doc.get("next") if isinstance(doc, dict) else None}


def list_timings(port, key, total):
    out = {"tries": []}
    for path in ("/v1/tasks", "/v1/tasks?limit=1000"):
        for _ in range(3):
            out["tries"].append(get_page(port, key, path))
    first = [t for t in out["tries"] if t["path"] == "/v1/tasks"]
    big = [t for t in out["tries"] if t["path"] == "/v1/tasks?limit=1000"]
    out["first_page"] = {"tasks": first[0]["tasks"], "bytes": first[0]["bytes"],
                         "paged": first[0]["next"] is not None,
                         "seconds_min": min(t["seconds"] for t in first),
                         "seconds_max": max(t["seconds"] for t in first)}
    out["page_1000"] = {"tasks": big[0]["tasks"], "bytes": big[0]["bytes"],
                        "seconds_min": min(t["seconds"] for t in big),
                        "seconds_max": max(t["seconds"] for t in big)}
    # Every page, following `next`.
    t, pages, seen, worst, cursor = time.monotonic(), 0, 0, 0.0, None
    while pages < total // 10 + 10:
        path = "/v1/tasks?limit=1000" + ("" if cursor is None else "&cursor=" + urllib.parse.quote(cursor, safe=""))
        r = get_page(port, key, path)
        if r["status"] != 200:
            out["walk_error"] = r
            break
        pages, seen, worst = pages + 1, seen + (r["tasks"] or 0), max(worst, r["seconds"])
        cursor = r["next"]
        if cursor is None:
            break
    out["all_pages"] = {"pages": pages, "tasks": seen, "seconds": round(time.monotonic() - t, 3),
                        "slowest_page_s": worst}
    return out


def last_progress(path):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError, IndexError):
        return {}


class Sampler:
    """CPU ticks and RSS of our processes, Redis INFO, the simulator's progress."""

    def __init__(self, pids, redis_ports, progress, coord_ports):
        self.pids = pids  # name -> pid
        self.redis = [Redis(p) for p in redis_ports]
        self.progress = progress
        self.coord_ports = coord_ports

    def sample(self):
        infos = [r.info() for r in self.redis]
        num = lambda info, k: float(info.get(k, 0) or 0)
        # A cluster's data is on its masters (replicas hold a copy); its CPU,
        # commands and ops on every node.
        masters = [i for i in infos if i.get("role", "master") == "master"]
        return {"t": time.monotonic(), "load": loadavg(),
                "ticks": {n: cpu_ticks(p) for n, p in self.pids.items()},
                "rss_kb": {n: rss_kb(p) for n, p in self.pids.items()},
                "redis": {"used_memory": int(sum(num(i, "used_memory") for i in masters)),
                          "used_memory_all_nodes": int(sum(num(i, "used_memory") for i in infos)),
                          "ops_per_sec": int(sum(num(i, "instantaneous_ops_per_sec") for i in infos)),
                          "cpu_s": sum(num(i, "used_cpu_sys") + num(i, "used_cpu_user") for i in infos),
                          "cpu_s_nodes": [round(num(i, "used_cpu_sys") + num(i, "used_cpu_user"), 2)
                                          for i in infos],
                          "roles": [i.get("role") for i in infos],
                          "commands": int(sum(num(i, "total_commands_processed") for i in infos))},
                "sim": last_progress(self.progress),
                "coordinator_metrics": [coordinator_metrics(p) for p in self.coord_ports]}


COORD_METRICS = ("vodfleet_heartbeats_total", "vodfleet_heartbeat_age_seconds",
                 "vodfleet_http_heartbeats_total", "vodfleet_leases_expired_total",
                 "vodfleet_failovers_total", "vodfleet_leases_issued_total",
                 "vodfleet_heartbeats_superseded_total", "vodfleet_renewals_unpipelined_total", "vodfleet_orders_unclaimed_total",
                 "vodfleet_leases_reissued_total")


def coordinator_metrics(port):
    """A few of the coordinator's own counters (docs/METRICS.md), summed over labels."""
    st, body, _ = http_req(port, "GET", "/metrics", timeout=10)
    out = {}
    if st != 200:
        return out
    for line in body.decode(errors="replace").splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in COORD_METRICS:
            try:
                out[name] = out.get(name, 0.0) + float(line.rsplit(None, 1)[1])
            except (ValueError, IndexError):
                pass
    return out


def window(a, b, coordinators):
    """Figures between two samples."""
    secs = b["t"] - a["t"]
    cpu = {n: None if a["ticks"][n] is None or b["ticks"][n] is None
           else round((b["ticks"][n] - a["ticks"][n]) / CLK_TCK, 2) for n in a["ticks"]}
    beats = b["sim"].get("beats", 0) - a["sim"].get("beats", 0)
    lines = b["sim"].get("beat_tasks", 0) - a["sim"].get("beat_tasks", 0)
    coord_cpu = sum(cpu[c] or 0 for c in coordinators)
    redis_cpu = round(b["redis"]["cpu_s"] - a["redis"]["cpu_s"], 2)
    per_k = lambda x, n: round(x / (n / 1000), 4) if n else None
    return {
        "seconds": round(secs, 1),
        "cpu_s": cpu,
        "cores": {n: None if v is None else round(v / secs, 3) for n, v in cpu.items()},
        "coordinators_cores": round(coord_cpu / secs, 3),
        "redis_cpu_s": redis_cpu, "redis_cores": round(redis_cpu / secs, 3),
        "redis_cpu_s_per_node": [round(y - x, 2) for x, y in zip(a["redis"]["cpu_s_nodes"],
                                                                   b["redis"]["cpu_s_nodes"])],
        "redis_commands_per_s": round((b["redis"]["commands"] - a["redis"]["commands"]) / secs),
        "heartbeats": beats, "heartbeats_per_s": round(beats / secs, 1),
        "task_lines": lines, "task_lines_per_s": round(lines / secs, 1),
        "cpu_s_per_1000_task_lines": {"coordinators": per_k(coord_cpu, lines),
                                      "redis": per_k(redis_cpu, lines),
                                      "rabbitmq": per_k(cpu.get("rabbitmq") or 0, lines),
                                      "sim": per_k(cpu.get("sim") or 0, lines)},
        "cpu_s_per_1000_heartbeats": {"coordinators": per_k(coord_cpu, beats),
                                      "redis": per_k(redis_cpu, beats),
                                      "rabbitmq": per_k(cpu.get("rabbitmq") or 0, beats)},
        "false_expiries": b["sim"].get("false_expiries", 0) - a["sim"].get("false_expiries", 0),
        "sim_expiries": b["sim"].get("sim_expiries", 0) - a["sim"].get("sim_expiries", 0),
        "revoked": b["sim"].get("revoked", 0) - a["sim"].get("revoked", 0),
        "load_start": a["load"], "load_end": b["load"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--tasks", type=int, default=20, help="tasks per worker (M)")
    ap.add_argument("--duration", type=int, default=60, help="steady window, s")
    ap.add_argument("--steps", default="1000,5000,10000,20000",
                    help="task totals where memory is sampled (capped at N x M; N x M is always last)")
    ap.add_argument("--step-hold", type=float, default=15.0, help="s held at each step before sampling")
    ap.add_argument("--sample-every", type=float, default=10.0)
    ap.add_argument("--coordinators", type=int, default=2)
    ap.add_argument("--broker", choices=("private", "vhost"), default="private")
    ap.add_argument("--redis", choices=("single", "single-replica", "cluster"), default="single",
                    help="one redis-server, the same with one replica (what a single Redis needs "
                         "to fail over, for a like-for-like comparison with the cluster's replicas), "
                         "or a Redis Cluster of 3 masters + 3 replicas")
    ap.add_argument("--lease-ttl-ms", type=int, default=10000)
    ap.add_argument("--heartbeat-ms", type=int, default=2000)
    ap.add_argument("--publishers", type=int, default=4, help="vodctl processes at once")
    ap.add_argument("--bin-dir", help="where the three binaries are (default target/release, else target/debug)")
    ap.add_argument("--build-note", default="", help="what the binaries were built from (recorded)")
    ap.add_argument("--redis-server", default="redis-server")
    ap.add_argument("--rabbitmq-bin-dir", default="/usr/lib/rabbitmq/bin")
    ap.add_argument("--rabbitmqctl", default=os.environ.get("VODFLEET_RABBITMQCTL", "rabbitmqctl"))
    ap.add_argument("--max-load", type=float, default=None, help="refuse to start above this 1-min load")
    ap.add_argument("--out", help="result file (default scripts/bench/results/<date>-fleetsim-NxM[-cluster].json)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    load0 = loadavg()
    if args.max_load is not None and load0[0] > args.max_load:
        sys.exit(f"load average {load0} above --max-load {args.max_load}: the machine is busy")
    total = args.workers * args.tasks
    steps = sorted({s for s in (int(x) for x in args.steps.split(",") if x) if s < total} | {total})
    bins = {n: find_bin(args, n) for n in ("vodfleet-coordinator", "vodctl", "vodfleet-sim")}
    workdir = tempfile.mkdtemp(prefix="vodfleet-fleetsim-")
    if not args.keep:
        CLEANUPS.insert(0, lambda: shutil.rmtree(workdir, ignore_errors=True))
    date = dt.datetime.now(dt.timezone.utc)
    out = args.out or os.path.join(ROOT, "scripts", "bench", "results",
                                   f"{date:%Y-%m-%d}-fleetsim-{args.workers}x{args.tasks}"
                                   f"{'' if args.redis == 'single' else '-' + args.redis}.json")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    res = {"benchmark": "fleetsim", "date": date.isoformat(timespec="seconds"),
           "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
           "commit": commit, "build_note": args.build_note,
           "binaries": {n: {"path": b, "sha256": sha256(b)} for n, b in bins.items()},
           "machine": {"cores": os.cpu_count(), "loadavg_before": load0},
           "workers": args.workers, "tasks_per_worker": args.tasks, "tasks": total,
           "coordinators": args.coordinators, "broker": args.broker, "redis": args.redis,
           "lease_ttl_ms": args.lease_ttl_ms, "heartbeat_ms": args.heartbeat_ms,
           "workdir": workdir if args.keep else None}
    try:
        run(args, res, bins, workdir, steps, total)
    except KeyboardInterrupt as e:
        res["interrupted"] = str(e)
        log(f"interrupted: {e}")
    except Exception as e:
        res["error"] = repr(e)
        log(f"error: {e!r} (logs in {workdir}; --keep keeps them)")
    finally:
        cleanup()
    res["machine"]["loadavg_after"] = loadavg()
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    log(f"wrote {out}")
    s = res.get("steady", {})
    sim = res.get("sim", {})
    lat = sim.get("renewal_latency_ms", {}).get("window", {})
    print(f"fleetsim {args.workers}x{args.tasks}: coordinators {s.get('coordinators_cores')} cores, "
          f"redis {s.get('redis_cores')} cores, rabbitmq {s.get('cores', {}).get('rabbitmq')} cores "
          f"at {s.get('task_lines_per_s')} task lines/s; renewal p99 {lat.get('p99')} ms; "
          f"false expiries {sim.get('leases', {}).get('false_expiries')}; "
          f"GET /v1/tasks first page {res.get('list', {}).get('first_page', {}).get('seconds_max')} s; "
          f"load {s.get('load_end')}")
    return 1 if "error" in res else 0


def run(args, res, bins, workdir, steps, total):
    if args.redis == "cluster":
        nodes = start_redis_cluster(workdir, args.redis_server)
        redis_ports = [port for _, port in nodes]
        redis_pids = {f"redis{i}": p.pid for i, (p, _) in enumerate(nodes)}
        redis_url = ",".join(f"redis://127.0.0.1:{port}/" for port in redis_ports)
        log(f"Redis Cluster on {redis_ports}")
    else:
        redis, redis_port = start_redis(workdir, args.redis_server)
        redis_ports, redis_pids = [redis_port], {"redis": redis.pid}
        redis_url = f"redis://127.0.0.1:{redis_port}/"
        log(f"redis on :{redis_port}")
        if args.redis == "single-replica":
            replica, replica_port = start_redis(workdir, args.redis_server, replica_of=redis_port)
            wait_for("replica in sync",
                     lambda: redis_info(replica_port).get("master_link_status") == "up", 30)
            redis_ports.append(replica_port)
            redis_pids["redis-replica"] = replica.pid
            log(f"its replica on :{replica_port}")
    if args.broker == "private":
        rabbit, amqp, node = start_rabbit_node(workdir, args.rabbitmq_bin_dir)
        beam = wait_for("beam.smp of the private node", lambda: beam_pid(node), 30)
    else:
        amqp, node = start_vhost(args.rabbitmqctl)
        beam = beam_pid(None)
        res["note_broker"] = "shared broker: its CPU includes everyone else's traffic"
    key = ("bench", secrets.token_hex(16))
    coords, ports = [], []
    for i in range(args.coordinators):
        port = free_port()
        env = dict(os.environ, VODFLEET_AMQP_URL=amqp, VODFLEET_REDIS_URL=redis_url,
                   VODFLEET_REDIS_CLUSTER="true" if args.redis == "cluster" else "false",
                   VODFLEET_HTTP_ADDR=f"127.0.0.1:{port}", VODFLEET_API_KEYS=f"{key[0]}:{key[1]}",
                   VODFLEET_LEASE_TTL_MS=str(args.lease_ttl_ms), VODFLEET_HEARTBEAT_MS=str(args.heartbeat_ms),
                   VODFLEET_LOG="warn")
        coords.append(spawn([bins["vodfleet-coordinator"]], os.path.join(workdir, f"coordinator{i}.log"), env=env))
        ports.append(port)
    for p in ports:
        wait_for(f"coordinator :{p} /readyz", lambda: http_req(p, "GET", "/readyz", timeout=2)[0] == 200, 60)
    log(f"{args.coordinators} coordinators ready on {ports}")

    progress = os.path.join(workdir, "sim-progress.jsonl")
    sim_out = os.path.join(workdir, "sim-summary.json")
    sim_env = dict(os.environ, VODFLEET_AMQP_URL=amqp, VODFLEET_LOG="warn")
    sim = spawn([bins["vodfleet-sim"], "--workers", str(args.workers), "--tasks", str(args.tasks),
                 "--heartbeat-ms", str(args.heartbeat_ms), "--lease-ttl-ms", str(args.lease_ttl_ms),
                 "--progress", progress, "--out", sim_out],
                os.path.join(workdir, "sim.log"), env=sim_env, stdout=subprocess.DEVNULL)
    wait_for("simulated workers connected",
             lambda: sim.poll() is None and last_progress(progress).get("connected") == args.workers,
             60 + args.workers * 0.5, 0.5)
    log(f"{args.workers} simulated workers connected")

    pids = {f"coordinator{i}": p.pid for i, p in enumerate(coords)}
    pids.update(redis_pids)
    pids.update({"rabbitmq": beam, "sim": sim.pid})
    sampler = Sampler(pids, redis_ports, progress, ports)
    coord_names = [f"coordinator{i}" for i in range(len(coords))]
    base = sampler.sample()
    res["baseline"] = {"rss_kb": base["rss_kb"], "redis_used_memory": base["redis"]["used_memory"],
                       "load": base["load"]}
    vodctl_env = dict(os.environ, VODFLEET_AMQP_URL=amqp, VODFLEET_LOG="warn")

    # Steps: memory against tasks held.
    res["steps"], published = [], 0
    for target in steps:
        t = time.monotonic()
        failed = publish(args, bins["vodctl"], vodctl_env, workdir, published, target)
        pub_s = time.monotonic() - t
        published = target
        try:
            wait_for(f"{target} tasks held",
                     lambda: last_progress(progress).get("held", 0) >= target, 120 + target / 100, 0.5)
            reached = True
        except RuntimeError:
            reached = False
        held_s = time.monotonic() - t
        time.sleep(args.step_hold)
        s = sampler.sample()
        row = {"tasks": target, "held": s["sim"].get("held"), "reached": reached,
               "publish_s": round(pub_s, 1), "vodctl_failed": failed,
               "publish_to_held_s": round(held_s, 1),
               "rss_kb": s["rss_kb"],
               "redis_used_memory": s["redis"]["used_memory"],
               "redis_bytes_per_task": round((s["redis"]["used_memory"] - base["redis"]["used_memory"]) / target),
               "load": s["load"]}
        res["steps"].append(row)
        log(f"step {target}: held {row['held']} ({'reached' if reached else 'NOT reached'}) "
            f"in {held_s:.1f} s; coordinator RSS {[row['rss_kb'][c] for c in coord_names]} kB; "
            f"redis {row['redis_used_memory']} B ({row['redis_bytes_per_task']} B/task); load {s['load']}")

    # The steady window.
    log(f"steady window: {args.duration} s")
    sim.send_signal(signal.SIGUSR1)  # the simulator's latencies from here on ("window")
    samples = [sampler.sample()]
    # The ramp: every step, from the first publish to the window (costs, expiries).
    res["ramp"] = window(base, samples[0], coord_names)
    res["ramp"]["coordinator_metrics_end"] = samples[0]["coordinator_metrics"]
    end = samples[0]["t"] + args.duration
    while time.monotonic() < end:
        time.sleep(min(args.sample_every, max(0.0, end - time.monotonic())))
        samples.append(sampler.sample())
        if sim.poll() is not None:
            raise RuntimeError(f"vodfleet-sim exited early ({sim.returncode}); see {workdir}/sim.log")
    res["steady"] = window(samples[0], samples[-1], coord_names)
    res["steady"]["rss_kb_end"] = samples[-1]["rss_kb"]
    res["steady"]["coordinator_metrics_start"] = samples[0]["coordinator_metrics"]
    res["steady"]["coordinator_metrics_end"] = samples[-1]["coordinator_metrics"]
    res["steady"]["redis_used_memory_end"] = samples[-1]["redis"]["used_memory"]
    res["steady"]["redis_ops_per_sec_samples"] = [s["redis"]["ops_per_sec"] for s in samples]
    res["steady"]["series"] = [
        {"t": round(b["t"] - samples[0]["t"]), "coordinators_cores": window(a, b, coord_names)["coordinators_cores"],
         "rss_kb": {c: b["rss_kb"][c] for c in coord_names}, "held": b["sim"].get("held"),
         "load": b["load"][0],
         "heartbeat_age_s": [m.get("vodfleet_heartbeat_age_seconds") for m in b["coordinator_metrics"]]}
        for a, b in zip(samples, samples[1:])]
    log(f"steady: {json.dumps({k: res['steady'][k] for k in ('coordinators_cores', 'redis_cores', 'task_lines_per_s', 'false_expiries')})}")

    # GET /v1/tasks at full size: the first page (default limit), a page of
    # 1000, and every page followed through `next` (a full listing).
    res["list"] = list_timings(ports[0], key, total)
    log(f"GET /v1/tasks: {json.dumps({k: v for k, v in res['list'].items() if k != 'tries'})}")

    # Drain the simulator (SIGINT), then the rest.
    t = time.monotonic()
    res["sim_exit"] = stop(sim, signal.SIGINT, timeout=120)
    res["sim_stop_s"] = round(time.monotonic() - t, 1)
    try:
        with open(sim_out) as f:
            res["sim"] = json.load(f)
    except (OSError, ValueError) as e:
        res["sim"] = {"error": f"no summary: {e!r}"}
    for c in coords:
        stop(c)
    res["coordinator_exit"] = [c.returncode for c in coords]


if __name__ == "__main__":
    sys.exit(main())
