//! A Redis Cluster of the test's own (issue 10): six `redis-server
//! --cluster-enabled yes` processes on free ports, three masters and three
//! replicas made by `redis-cli --cluster create`; helpers to find and `kill -9`
//! a master and to wait for its replica's promotion. [`FleetRedis`] is what a
//! [`super::Fleet`] runs on: one Redis, or this cluster.

use super::redis::RedisServer;
use super::{keep_or_drop, run, tail, temp_dir};
use crate::poll;
use crate::rtmp::free_port;
use std::collections::BTreeMap;
use std::fs;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vodfleet_proto::fleet::keys;

/// How many nodes: three masters, each with one replica.
const NODES: usize = 6;
/// `cluster-node-timeout`: a master silent this long is failed over (3-5 s in all).
const NODE_TIMEOUT_MS: u64 = 2000;

/// One `redis-server` of the cluster.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// A Redis Cluster on this machine: killed (every node) on drop.
pub struct RedisCluster {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster (`--cluster-replicas 1`) and waits
    /// until every node says `cluster_state:ok` and every replica is in sync.
    pub fn start() -> RedisCluster {
        let dir = temp_dir("vodfleet-redis-cluster-");
        let path = dir.path().to_path_buf();
        let mut c = RedisCluster {
            dir: Some(dir),
            path,
            nodes: Vec::new(),
        };
        for _ in 0..NODES {
            let (port, child) = c.start_node();
            c.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &c.nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        if let Err(e) = run(&mut create, Duration::from_secs(60)) {
            panic!("redis-cli --cluster create failed: {e}\n{}", c.logs());
        }
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    /// Spawns one node on free ports (retried if a port was taken meanwhile).
    fn start_node(&self) -> (u16, Child) {
        let mut errors = Vec::new();
        for _ in 0..5 {
            let (port, bus) = (free_port(), free_port());
            if port == bus {
                continue;
            }
            let mut child = self.spawn(port, bus);
            let up = poll(Duration::from_secs(10), || {
                if let Ok(Some(st)) = child.try_wait() {
                    return Some(Err(format!("exited: {st}")));
                }
                node_query::<String>(port, &["PING"]).ok().map(Ok)
            });
            match up {
                Some(Ok(_)) => return (port, child),
                other => {
                    let _ = child.kill();
                    let _ = child.wait();
                    errors.push(format!("port {port}: {other:?}\n{}", self.log(port)));
                }
            }
        }
        panic!("a cluster node did not start:\n{}", errors.join("\n---\n"));
    }

    fn spawn(&self, port: u16, bus: u16) -> Child {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path.join(format!("redis-{port}.log")))
            .expect("open the node's log");
        let bin = std::env::var("VODFLEET_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        Command::new(&bin)
            .args(["--port", &port.to_string()])
            .args(["--cluster-port", &bus.to_string()])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(self.path.join(format!("nodes-{port}.conf")))
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e} (is redis-server installed?)"))
    }

    /// Waits until every live node says `cluster_state:ok`, every slot is
    /// served, and every live replica's link to its master is up.
    pub fn wait_healthy(&self, timeout: Duration) {
        let mut last = String::new();
        let ok = poll(timeout, || {
            for port in self.live_ports() {
                let info: String = match node_query(port, &["CLUSTER", "INFO"]) {
                    Ok(i) => i,
                    Err(e) => {
                        last = format!("{port}: {e}");
                        return None;
                    }
                };
                if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                    last = format!("{port}: {info}");
                    return None;
                }
                let repl: String = node_query(port, &["INFO", "replication"]).unwrap_or_default();
                if repl.contains("role:slave") && !repl.contains("master_link_status:up") {
                    last = format!("{port}: {repl}");
                    return None;
                }
            }
            Some(())
        });
        assert!(
            ok.is_some(),
            "the Redis Cluster is not healthy after {timeout:?}: {last}\n{}",
            self.logs()
        );
    }

    /// Every node's port (dead ones too).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The ports of the nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// The seed list for `VODFLEET_REDIS_URL`: every node, comma-separated.
    pub fn seeds(&self) -> String {
        self.ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The ports of the current masters, as a live node sees the slot map.
    pub fn masters(&self) -> Vec<u16> {
        let mut m: Vec<u16> = self.slot_map().into_iter().map(|(_, p)| p).collect();
        m.sort_unstable();
        m.dedup();
        m
    }

    /// (first slot, last slot) → the port of the master serving them.
    fn slot_map(&self) -> Vec<((u16, u16), u16)> {
        for port in self.live_ports() {
            let Ok(slots) = node_query::<Vec<redis::Value>>(port, &["CLUSTER", "SLOTS"]) else {
                continue;
            };
            let mut out = Vec::new();
            for range in slots {
                let redis::Value::Array(r) = range else {
                    continue;
                };
                let num = |v: &redis::Value| redis::from_redis_value::<i64>(v).unwrap_or(-1);
                let (Some(a), Some(b), Some(redis::Value::Array(master))) =
                    (r.first(), r.get(1), r.get(2))
                else {
                    continue;
                };
                let Some(p) = master.get(1).map(num) else {
                    continue;
                };
                out.push(((num(a) as u16, num(b) as u16), p as u16));
            }
            if !out.is_empty() {
                return out;
            }
        }
        panic!("no live node answers CLUSTER SLOTS\n{}", self.logs());
    }

    /// The port of the master that serves `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        let slot: i64 = node_query(port, &["CLUSTER", "KEYSLOT", key])
            .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT {key}: {e}"));
        self.slot_map()
            .into_iter()
            .find(|((a, b), _)| (*a as i64..=*b as i64).contains(&slot))
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("slot {slot} of {key} has no master"))
    }

    /// `kill -9` the node on `port`.
    pub fn kill9(&mut self, port: u16) {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"));
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the slots `old_master` served are served by another (live)
    /// node and the cluster is healthy again; returns the promoted node's port.
    pub fn wait_promoted(&self, old_master: u16, timeout: Duration) -> u16 {
        let promoted = poll(timeout, || {
            let map = self.slot_map();
            if map.iter().any(|(_, p)| *p == old_master) {
                std::thread::sleep(Duration::from_millis(100));
                return None;
            }
            let live = self.live_ports();
            let masters: Vec<u16> = map.iter().map(|(_, p)| *p).collect();
            if masters.iter().any(|p| !live.contains(p)) {
                return None;
            }
            // The one live master whose replica was the killed node's.
            masters.into_iter().find(|p| {
                node_query::<String>(*p, &["INFO", "replication"])
                    .map(|r| r.contains("role:master") && r.contains("connected_slaves:0"))
                    .unwrap_or(false)
            })
        });
        let port = promoted.unwrap_or_else(|| {
            panic!(
                "no replica took over from {old_master} within {timeout:?}\n{}",
                self.logs()
            )
        });
        self.wait_healthy(timeout);
        port
    }

    /// A connection that follows the cluster's slot map.
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        let seeds: Vec<String> = self
            .live_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect();
        redis::cluster::ClusterClient::new(seeds)
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("connect to the Redis Cluster: {e}\n{}", self.logs()))
    }

    /// Runs one command on the node that serves its key, e.g.
    /// `cluster.query::<i64>(&["TTL", "k"])`.
    pub fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.conn())
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// `TTL key` in seconds (−2: no key, −1: no expiry).
    pub fn ttl(&self, key: &str) -> i64 {
        self.query(&["TTL", key])
    }

    /// The whole hash at `key`.
    pub fn hgetall(&self, key: &str) -> BTreeMap<String, String> {
        self.query(&["HGETALL", key])
    }

    /// How many tasks the index groups hold (their sets' sizes added up).
    pub fn task_count(&self) -> usize {
        (0..keys::GROUPS)
            .map(|g| self.query::<usize>(&["SCARD", &keys::tasks_in(g)]))
            .sum()
    }

    fn log(&self, port: u16) -> String {
        log_of(&self.path, port)
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- redis {}:\n{}\n", n.port, self.log(n.port)))
            .collect()
    }
}

fn log_of(dir: &Path, port: u16) -> String {
    tail(
        &fs::read_to_string(dir.join(format!("redis-{port}.log"))).unwrap_or_default(),
        15,
    )
}

/// One command on one node (no redirects followed).
fn node_query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Result<T, String> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut c).map_err(|e| e.to_string())
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        keep_or_drop(self.dir.take(), "redis cluster");
    }
}

/// The Redis a fleet runs on. Dereferences to the single [`RedisServer`] so
/// the single-Redis tests read as before (`fleet.redis.ttl(..)`); a cluster
/// fleet reaches its cluster through [`FleetRedis::cluster`].
pub enum FleetRedis {
    /// One `redis-server`.
    Single(RedisServer),
    /// A Redis Cluster.
    Cluster(RedisCluster),
}

impl FleetRedis {
    /// `VODFLEET_REDIS_URL` and `VODFLEET_REDIS_CLUSTER` for the coordinators.
    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            FleetRedis::Single(r) => vec![("VODFLEET_REDIS_URL".into(), r.url())],
            FleetRedis::Cluster(c) => vec![
                ("VODFLEET_REDIS_URL".into(), c.seeds()),
                ("VODFLEET_REDIS_CLUSTER".into(), "true".into()),
            ],
        }
    }

    /// The cluster (panics for a single-Redis fleet).
    pub fn cluster(&mut self) -> &mut RedisCluster {
        match self {
            FleetRedis::Cluster(c) => c,
            FleetRedis::Single(_) => panic!("this fleet runs on one Redis, not a cluster"),
        }
    }
}

impl Deref for FleetRedis {
    type Target = RedisServer;
    fn deref(&self) -> &RedisServer {
        match self {
            FleetRedis::Single(r) => r,
            FleetRedis::Cluster(_) => panic!("this fleet runs on a Redis Cluster: use .cluster()"),
        }
    }
}

impl DerefMut for FleetRedis {
    fn deref_mut(&mut self) -> &mut RedisServer {
        match self {
            FleetRedis::Single(r) => r,
            FleetRedis::Cluster(_) => panic!("this fleet runs on a Redis Cluster: use .cluster()"),
        }
    }
}
