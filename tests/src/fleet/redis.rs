//! Redis for the fleet tests: a `redis-server` of the test's own ([`RedisServer`]).

use super::{keep_or_drop, tail, temp_dir};
use crate::poll;
use crate::rtmp::free_port;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` of the test's own on a free port: no persistence, so a
/// [`RedisServer::restart`] comes back empty. Killed on drop.
pub struct RedisServer {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    port: u16,
    child: Child,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = temp_dir("vodfleet-redis-");
        let path = dir.path().to_path_buf();
        let mut errors = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            let child = Self::spawn(&path, port);
            let mut s = RedisServer {
                dir: None,
                path: path.clone(),
                port,
                child,
            };
            match s.wait_up() {
                Ok(()) => {
                    s.dir = Some(dir);
                    return s;
                }
                Err(e) => errors.push(e),
            }
        }
        panic!("redis-server did not start:\n{}", errors.join("\n---\n"));
    }

    fn spawn(dir: &Path, port: u16) -> Child {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("redis.log"))
            .expect("open redis.log");
        let bin = std::env::var("VODFLEET_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        Command::new(&bin)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e} (is redis-server installed?)"))
    }

    fn wait_up(&mut self) -> Result<(), String> {
        let up = poll(Duration::from_secs(10), || {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(Err(format!("redis-server exited: {st}")));
            }
            let ok = self
                .try_conn()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok());
            ok.map(|_| Ok(()))
        });
        match up {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(format!("{e}\n{}", self.log())),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(format!(
                    "redis on port {} did not answer PING\n{}",
                    self.port,
                    self.log()
                ))
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server and starts a new, empty one on the same port.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut last = String::new();
        let ok = poll(Duration::from_secs(10), || {
            self.child = Self::spawn(&self.path, self.port);
            match self.wait_up() {
                Ok(()) => Some(()),
                Err(e) => {
                    last = e;
                    None
                }
            }
        });
        assert!(
            ok.is_some(),
            "redis did not come back on port {}: {last}",
            self.port
        );
    }

    fn try_conn(&self) -> Option<redis::Connection> {
        redis::Client::open(self.url())
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()
    }

    pub fn conn(&self) -> redis::Connection {
        self.try_conn()
            .unwrap_or_else(|| panic!("connect to redis on port {}\n{}", self.port, self.log()))
    }

    /// Runs one command, e.g. `redis.query::<Vec<String>>(&["SMEMBERS", "k"])`.
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

    pub fn exists(&self, key: &str) -> bool {
        self.query::<i64>(&["EXISTS", key]) == 1
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.query(&["GET", key])
    }

    pub fn hgetall(&self, key: &str) -> BTreeMap<String, String> {
        self.query(&["HGETALL", key])
    }

    /// How many tasks the index groups hold (their sets' sizes added up): the
    /// coordinator shards its task set into `keys::GROUPS` sets since issue 10,
    /// so `SCARD vodfleet:tasks` no longer counts them.
    pub fn task_count(&self) -> usize {
        (0..vodfleet_proto::fleet::keys::GROUPS)
            .map(|g| self.query::<usize>(&["SCARD", &vodfleet_proto::fleet::keys::tasks_in(g)]))
            .sum()
    }

    /// Keys matching `pattern`, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut k: Vec<String> = self.query(&["KEYS", pattern]);
        k.sort();
        k
    }

    /// Every key with its type and whole value (TTLs left out: they tick), for
    /// "nothing changed" comparisons.
    pub fn dump_all(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for k in self.keys("*") {
            let ty: String = self.query(&["TYPE", &k]);
            let val = match ty.as_str() {
                "string" => format!("{:?}", self.get(&k)),
                "hash" => format!("{:?}", self.hgetall(&k)),
                "set" => {
                    let mut m: Vec<String> = self.query(&["SMEMBERS", &k]);
                    m.sort();
                    format!("{m:?}")
                }
                "zset" => format!(
                    "{:?}",
                    self.query::<Vec<String>>(&["ZRANGE", &k, "0", "-1", "WITHSCORES"])
                ),
                "list" => format!(
                    "{:?}",
                    self.query::<Vec<String>>(&["LRANGE", &k, "0", "-1"])
                ),
                other => format!("<{other}>"),
            };
            out.insert(k, format!("{ty}: {val}"));
        }
        out
    }

    pub fn log(&self) -> String {
        tail(
            &fs::read_to_string(self.path.join("redis.log")).unwrap_or_default(),
            30,
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        keep_or_drop(self.dir.take(), "redis");
    }
}
