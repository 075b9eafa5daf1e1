//! Harness for the fleet end-to-end tests (issue 3): the real `vodfleet-coordinator`
//! and `vodfleet-worker run` against real RabbitMQ, Redis and nginx-rtmp.
//!
//! - Services: [`Vhost`] (a private virtual host on the machine's broker),
//!   [`RabbitNode`] (a private broker a test may restart), [`RedisServer`].
//! - Processes: [`Coordinator`] and [`FleetWorker`] (logs in files, printed when a
//!   test fails); [`Fleet`] starts a whole fleet with its own services at once.
//! - Clients: [`Producer`] (a plain AMQP client: seed-001 bodies, replies, dead
//!   letters), [`seed`] (the bodies), [`http_request`] and the signed API calls
//!   of [`Coordinator`].
//! - Observers: [`CallbackReceiver`] (records callbacks, answers per a script),
//!   [`PublisherWatch`] (who publishes a stream, from nginx's `/stat`),
//!   [`take_recording`] and [`publish_conflicts`] (what nginx recorded and refused).
//! - Media that carries its own frame numbers ([`counter_mp4`], [`read_counters`]),
//!   so "where the stream was" is judged from the pictures, not from our reports.
//!
//! Like the rest of the harness it is synchronous: AMQP runs on a small tokio
//! runtime owned by the [`Producer`]; every wait has a deadline.

use crate::media::{ffmpeg, media_dir, Container, Media, MediaSpec, Pattern};
use crate::rtmp::{free_port, RtmpServer};
use crate::{keep_artifacts, poll, unique, wait_until};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::{Deref, DerefMut};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use vodfleet_proto::fleet::{COMMANDS_DEAD_QUEUE, COMMANDS_QUEUE, REASON_HEADER};
use vodfleet_proto::sign;

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// Wall-clock Unix milliseconds (the unit of the seed's `start`/`end`).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `cmd` to completion within `timeout` (killed after it); `Ok(output)` when
/// it exits 0, `Err` with its output otherwise. Output goes through a file so a
/// chatty command never blocks on a full pipe.
fn run(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    let out = tempfile::tempfile().map_err(|e| format!("tempfile: {e}"))?;
    let err = out.try_clone().map_err(|e| format!("dup: {e}"))?;
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| format!("dup: {e}"))?)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("spawn {what}: {e}"))?;
    let status = poll(timeout, || child.try_wait().ok().flatten());
    let read_all = |mut f: fs::File| {
        use std::io::Seek;
        let mut s = String::new();
        let _ = f.rewind();
        let _ = f.read_to_string(&mut s);
        s
    };
    match status {
        Some(s) if s.success() => Ok(read_all(out)),
        Some(s) => Err(format!("{what} exited with {s}:\n{}", read_all(out))),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "{what} still running after {timeout:?}; killed it:\n{}",
                read_all(out)
            ))
        }
    }
}

/// The last value of `key` in an environment list (later entries win).
fn env_value(env: &[(String, String)], key: &str) -> Option<String> {
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

/// A fresh directory under the system temp dir, named `PREFIX…`.
fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("create a temp directory: {e}"))
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A directory under the system temp dir that is kept (and said so) when the
/// test fails or `VODFLEET_TEST_KEEP` is set.
fn keep_or_drop(dir: Option<tempfile::TempDir>, what: &str) {
    if let Some(d) = dir {
        if keep_artifacts() {
            eprintln!("{what} directory kept: {}", d.keep().display());
        }
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn port_answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

// ---------------------------------------------------------------------------
// RabbitMQ: a virtual host on the machine's broker, or a private node
// ---------------------------------------------------------------------------

/// The machine's broker (scripts/test.sh starts one): `VODFLEET_TEST_AMQP_ADDR`,
/// default `127.0.0.1:5672`.
fn broker_addr() -> String {
    std::env::var("VODFLEET_TEST_AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".into())
}

fn rabbitmqctl_bin() -> String {
    std::env::var("VODFLEET_RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into())
}

const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// `rabbitmqctl list_queues name arguments` (JSON) → queue name → its arguments.
fn parse_queue_arguments(json_text: &str) -> Result<BTreeMap<String, Value>, String> {
    // rabbitmqctl prints progress lines before the JSON unless --silent; be lenient.
    let start = json_text
        .find('[')
        .ok_or_else(|| format!("no JSON array in {json_text:?}"))?;
    let v: Value = serde_json::from_str(json_text[start..].trim())
        .map_err(|e| format!("list_queues output is not JSON ({e}): {json_text}"))?;
    let mut out = BTreeMap::new();
    for q in v.as_array().cloned().unwrap_or_default() {
        if let Some(name) = q["name"].as_str() {
            out.insert(name.to_owned(), normalize_arguments(&q["arguments"]));
        }
    }
    Ok(out)
}

/// RabbitMQ 3.x prints arguments as `[[name, type, value], …]`; newer versions
/// as an object. Either way: an object `name → value`.
fn normalize_arguments(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Object(
            items
                .iter()
                .filter_map(|t| Some((t[0].as_str()?.to_owned(), t[2].clone())))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A RabbitMQ virtual host of its own on the machine's broker, so tests running
/// in parallel never take each other's messages. Deleted on drop.
pub struct Vhost {
    name: String,
}

impl Vhost {
    /// `rabbitmqctl add_vhost` + `set_permissions` for `guest`.
    pub fn new() -> Vhost {
        let name = unique("vf");
        let ctl = |args: &[&str]| {
            run(Command::new(rabbitmqctl_bin()).args(args), CTL_TIMEOUT).unwrap_or_else(|e| {
                panic!(
                    "rabbitmqctl {args:?}: {e}\n(is RabbitMQ running at {}? scripts/test.sh starts one)",
                    broker_addr()
                )
            })
        };
        ctl(&["add_vhost", &name]);
        let v = Vhost { name };
        ctl(&["set_permissions", "-p", &v.name, "guest", ".*", ".*", ".*"]);
        v
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `amqp://guest:guest@127.0.0.1:5672/NAME` (names are URL-safe).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/{}", broker_addr(), self.name)
    }

    /// Every queue of this vhost with its declared arguments (`x-queue-type`,
    /// `x-delivery-limit`, `x-dead-letter-*`), as RabbitMQ itself reports them.
    pub fn queue_arguments(&self) -> BTreeMap<String, Value> {
        let out = run(
            Command::new(rabbitmqctl_bin()).args([
                "list_queues",
                "-p",
                &self.name,
                "name",
                "arguments",
                "--formatter",
                "json",
            ]),
            CTL_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("rabbitmqctl list_queues: {e}"));
        parse_queue_arguments(&out).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Whether the vhost exists on the broker (for the harness self-test).
    pub fn exists(name: &str) -> bool {
        let out = run(
            Command::new(rabbitmqctl_bin()).args(["list_vhosts", "--silent"]),
            CTL_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("rabbitmqctl list_vhosts: {e}"));
        out.lines().any(|l| l.trim() == name)
    }
}

impl Default for Vhost {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        if let Err(e) = run(
            Command::new(rabbitmqctl_bin()).args(["delete_vhost", &self.name]),
            CTL_TIMEOUT,
        ) {
            eprintln!("warning: could not delete vhost {}: {e}", self.name);
        }
    }
}

/// How long a private node gets to boot (it takes ~5 s here).
const RABBIT_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A private RabbitMQ node for tests that restart the broker: its own node name
/// (`vf-<unique>@localhost`), ports, data and log directories, and Erlang cookie
/// (`$HOME/.erlang.cookie` with `HOME` in its directory), so it never touches the
/// machine's own broker. Restarts keep the data directory, as a real restart does.
pub struct RabbitNode {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    node: String,
    port: u16,
    dist_port: u16,
    child: Option<Child>,
}

impl RabbitNode {
    /// Starts the node and returns once its AMQP port answers (bounded).
    pub fn start() -> RabbitNode {
        let dir = temp_dir("vodfleet-rabbit-");
        let path = dir.path().to_path_buf();
        let node = format!("{}@localhost", unique("vf"));
        let port = free_port();
        let mut dist_port = free_port();
        while dist_port == port {
            dist_port = free_port();
        }
        for sub in ["home", "mnesia", "log"] {
            fs::create_dir_all(path.join(sub)).expect("mkdir");
        }
        let cookie = path.join("home/.erlang.cookie");
        fs::write(&cookie, unique("VFCOOKIE").replace(['-', 'x'], "Q")).expect("write cookie");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&cookie, fs::Permissions::from_mode(0o400)).expect("chmod cookie");
        // Our own (empty) env file: the machine's /etc/rabbitmq/rabbitmq-env.conf
        // names the machine's node.
        fs::write(path.join("rabbitmq-env.conf"), "").expect("write env file");
        fs::write(path.join("enabled_plugins"), "[].\n").expect("write plugins file");
        fs::write(
            path.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
        )
        .expect("write rabbitmq.conf");
        let mut n = RabbitNode {
            dir: Some(dir),
            path,
            node,
            port,
            dist_port,
            child: None,
        };
        n.boot();
        n
    }

    fn env(&self, cmd: &mut Command) {
        let p = &self.path;
        cmd.env("HOME", p.join("home"))
            .env("RABBITMQ_CONF_ENV_FILE", p.join("rabbitmq-env.conf"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_CONFIG_FILE", p.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", p.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", p.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", p.join("log"));
    }

    /// The broker's own scripts (not the /usr/sbin wrappers, which switch user).
    fn script(name: &str) -> PathBuf {
        let dir = std::env::var_os("VODFLEET_RABBITMQ_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/rabbitmq/bin"));
        dir.join(name)
    }

    fn boot(&mut self) {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path.join("server.out"))
            .expect("open server.out");
        let mut cmd = Command::new(Self::script("rabbitmq-server"));
        self.env(&mut cmd);
        cmd.env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            // Its own process group, so a last-resort kill reaches the Erlang VM
            // the script starts as well.
            .process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "spawn {}: {e} (is rabbitmq-server installed?)",
                Self::script("rabbitmq-server").display()
            )
        });
        self.child = Some(child);
        let up = poll(RABBIT_START_TIMEOUT, || {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Some(Err(format!("rabbitmq-server exited early: {st}")));
            }
            port_answers(self.port).then_some(Ok(()))
        });
        match up {
            Some(Ok(())) => {}
            Some(Err(e)) => panic!("{e}\n{}", self.logs()),
            None => panic!(
                "RabbitMQ node {} did not open port {} within {RABBIT_START_TIMEOUT:?}\n{}",
                self.node,
                self.port,
                self.logs()
            ),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `rabbitmqctl -n NODE ARGS…` against this node.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(Self::script("rabbitmqctl"));
        self.env(&mut cmd);
        cmd.arg("-n").arg(&self.node).args(args);
        run(&mut cmd, CTL_TIMEOUT)
    }

    /// Queues of the default vhost with their arguments.
    pub fn queue_arguments(&self) -> BTreeMap<String, Value> {
        let out = self
            .ctl(&["list_queues", "name", "arguments", "--formatter", "json"])
            .unwrap_or_else(|e| panic!("list_queues on {}: {e}", self.node));
        parse_queue_arguments(&out).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Whether the node's process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the node (`rabbitmqctl stop`, then SIGTERM, then SIGKILL of its
    /// process group) and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let gone = |c: &mut Child, t: Duration| poll(t, || c.try_wait().ok().flatten()).is_some();
        if self.ctl(&["stop"]).is_ok() && gone(&mut child, Duration::from_secs(30)) {
            return;
        }
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        if gone(&mut child, Duration::from_secs(20)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
        let _ = child.wait();
    }

    /// Stops the node and starts it again on the same ports and data directory.
    /// Returns how long the broker was away.
    pub fn restart(&mut self) -> Duration {
        let t = Instant::now();
        self.stop();
        assert!(
            !port_answers(self.port),
            "port {} still answers after the node stopped",
            self.port
        );
        self.boot();
        t.elapsed()
    }

    /// The node's log tail, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        let log = self.path.join("log").join(format!("{}.log", self.node));
        for f in [self.path.join("server.out"), log] {
            let text = fs::read_to_string(&f).unwrap_or_default();
            s.push_str(&format!("--- {} ---\n{}\n", f.display(), tail(&text, 40)));
        }
        s
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        self.stop();
        if keep_artifacts() {
            eprintln!("{}", self.logs());
        }
        keep_or_drop(self.dir.take(), "RabbitMQ node");
    }
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// HTTP: a tiny client, request signing
// ---------------------------------------------------------------------------

/// One HTTP response.
#[derive(Clone, Debug)]
pub struct HttpReply {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.x request or response as read from the wire.
struct Message {
    /// The request or status line.
    start: String,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Reads an HTTP/1.x message head and body from `s` (Content-Length, chunked, or
/// until EOF).
fn read_message(s: &mut TcpStream) -> Result<Message, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "connection closed before a full head ({} bytes)",
                    buf.len()
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read head: {e}")),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut read_more = |rest: &mut Vec<u8>| -> Result<bool, String> {
        match s.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                rest.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) => Err(format!("read body: {e}")),
        }
    };
    let body = if let Some(len) = get("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad content-length {len:?}"))?;
        while rest.len() < len {
            if !read_more(&mut rest)? {
                return Err(format!("body ended at {} of {len} bytes", rest.len()));
            }
        }
        rest.truncate(len);
        rest
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        let mut pos = 0;
        loop {
            let line_end = loop {
                if let Some(p) = rest[pos..].windows(2).position(|w| w == b"\r\n") {
                    break pos + p;
                }
                if !read_more(&mut rest)? {
                    return Err("chunked body ended early".into());
                }
            };
            let size_text = String::from_utf8_lossy(&rest[pos..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            pos = line_end + 2;
            if size == 0 {
                break;
            }
            while rest.len() < pos + size + 2 {
                if !read_more(&mut rest)? {
                    return Err("chunk ended early".into());
                }
            }
            body.extend_from_slice(&rest[pos..pos + size]);
            pos += size + 2;
        }
        body
    } else if start.starts_with("HTTP/") {
        while read_more(&mut rest)? {}
        rest
    } else {
        // A request without a length has no body.
        Vec::new()
    };
    Ok(Message {
        start,
        headers,
        body,
    })
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (`Connection: close`).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<HttpReply, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let Message {
        start,
        headers,
        body,
    } = read_message(&mut s)?;
    let status = start
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {start:?}"))?;
    Ok(HttpReply {
        status,
        headers,
        body,
    })
}

/// The signature headers for a `method` request to `path` with `body`, signed now
/// with (`key_id`, `secret`) and a fresh nonce.
pub fn signed_headers(
    key_id: &str,
    secret: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> Vec<(String, String)> {
    let ts = now_ms() / 1000;
    signed_headers_at(key_id, secret, method, path, ts, body)
}

/// Like [`signed_headers`] with a given Unix timestamp (seconds).
pub fn signed_headers_at(
    key_id: &str,
    secret: &str,
    method: &str,
    path: &str,
    ts: u64,
    body: &[u8],
) -> Vec<(String, String)> {
    let nonce = sign::nonce();
    let req = sign::Signed {
        method,
        path,
        timestamp: ts,
        nonce: &nonce,
        body,
    };
    vec![
        (sign::KEY_ID_HEADER.into(), key_id.into()),
        (sign::TIMESTAMP_HEADER.into(), ts.to_string()),
        (sign::NONCE_HEADER.into(), nonce.clone()),
        (
            sign::SIGNATURE_HEADER.into(),
            sign::signature(secret.as_bytes(), &req),
        ),
    ]
}

/// Checks the signature headers of a signed message (a callback) against `keys`
/// (`id` → secret): a known key id, a timestamp within ±300 s of now, and a valid
/// `v1=` HMAC over `"{ts}.{nonce}.{METHOD}.{path}.{body}"`.
pub fn verify_signed(
    headers: &BTreeMap<String, String>,
    method: &str,
    path: &str,
    body: &[u8],
    keys: &[(&str, &str)],
) -> Result<(), String> {
    let h = |n: &str| {
        headers
            .get(n)
            .ok_or_else(|| format!("no {n} header (headers: {:?})", headers.keys()))
    };
    let id = h(sign::KEY_ID_HEADER)?;
    let ts_text = h(sign::TIMESTAMP_HEADER)?;
    let nonce = h(sign::NONCE_HEADER)?;
    let sig = h(sign::SIGNATURE_HEADER)?;
    let secret = keys
        .iter()
        .find(|(k, _)| k == id)
        .map(|(_, s)| *s)
        .ok_or_else(|| format!("unknown key id {id:?}"))?;
    let ts: u64 = ts_text
        .parse()
        .map_err(|_| format!("timestamp {ts_text:?} is not Unix seconds"))?;
    let now = now_ms() / 1000;
    if ts.abs_diff(now) > sign::MAX_SKEW_SECS {
        return Err(format!("timestamp {ts} is {} s from now", ts.abs_diff(now)));
    }
    let req = sign::Signed {
        method,
        path,
        timestamp: ts,
        nonce,
        body,
    };
    if !sign::verify(secret.as_bytes(), &req, sig) {
        return Err(format!("signature {sig:?} does not verify for key {id:?}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The fleet's processes
// ---------------------------------------------------------------------------

/// One fleet process: its output (stdout and stderr together) in a file, printed
/// when the test fails; an HTTP port of its own (`VODFLEET_HTTP_ADDR`).
pub struct Proc {
    what: String,
    child: Child,
    dir: Option<tempfile::TempDir>,
    log_path: PathBuf,
    http_port: u16,
    exit: Option<ExitStatus>,
    started: Instant,
}

impl Proc {
    fn spawn(
        what: String,
        dir: tempfile::TempDir,
        bin: &Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> Proc {
        let log_path = dir.path().join("output.log");
        let log = fs::File::create(&log_path).expect("create output.log");
        let http_port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("VODFLEET_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env("VODFLEET_HTTP_ADDR", format!("127.0.0.1:{http_port}"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Proc {
            what,
            child,
            dir: Some(dir),
            log_path,
            http_port,
            exit: None,
            started: Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// `http://127.0.0.1:PORT`
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn report(&self) -> String {
        format!(
            "--- {} (pid {}) output, last 150 lines ---\n{}\n",
            self.what,
            self.child.id(),
            tail(&self.log(), 150)
        )
    }

    /// Sends a signal with the `kill` command (e.g. `"TERM"`).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.child.id());
    }

    /// SIGKILL, and reaps the process.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        if let Ok(st) = self.child.wait() {
            self.exit = Some(st);
        }
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    pub fn has_exited(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit.is_some()
    }

    /// Waits for the process to exit; panics (after killing it) if it has not
    /// within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.exit {
            return s;
        }
        match poll(timeout, || self.child.try_wait().ok().flatten()) {
            Some(s) => {
                self.exit = Some(s);
                s
            }
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} still running {timeout:?} after being asked to stop; killed it.\n{}",
                    self.what,
                    self.report()
                );
            }
        }
    }

    /// `GET path` on the process's HTTP port.
    pub fn get(&self, path: &str) -> Result<HttpReply, String> {
        http_request(self.http_port, "GET", path, &[], b"")
    }

    /// Waits until `GET /readyz` answers 200; panics with the output if the
    /// process exits or `timeout` passes first.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let ok = poll(timeout, || {
            if self.has_exited() {
                return Some(false);
            }
            self.get("/readyz")
                .ok()
                .filter(|r| r.status == 200)
                .map(|_| true)
        });
        match ok {
            Some(true) => {}
            Some(false) => panic!(
                "{} exited before it was ready ({:?}): has the fleet mode landed and been built (issue 3)?\n{}",
                self.what,
                self.exit,
                self.report()
            ),
            None => panic!(
                "{} not ready (GET /readyz != 200) within {timeout:?}\n{}",
                self.what,
                self.report()
            ),
        }
    }

    /// `GET /metrics` (Prometheus text).
    pub fn metrics(&self) -> String {
        match self.get("/metrics") {
            Ok(r) if r.status == 200 => r.text(),
            Ok(r) => panic!("{} GET /metrics: {} {}", self.what, r.status, r.text()),
            Err(e) => panic!("{} GET /metrics: {e}", self.what),
        }
    }

    /// The sum of every sample of metric `name` (any labels); `None` if absent.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .get("/metrics")
            .ok()
            .filter(|r| r.status == 200)?
            .text();
        metric_sum(&text, name)
    }
}

/// The sum of the samples of `name` in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if keep_artifacts() {
            eprint!("{}", self.report());
        }
        keep_or_drop(self.dir.take(), &self.what);
    }
}

/// A running `vodfleet-coordinator`, with the API key it was given.
pub struct Coordinator {
    proc: Proc,
    key_id: String,
    secret: String,
}

impl Deref for Coordinator {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl DerefMut for Coordinator {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

impl Coordinator {
    /// `$VODFLEET_COORDINATOR_BIN`, else `vodfleet-coordinator` next to the
    /// worker binary (see [`crate::Worker::bin`]).
    pub fn bin() -> PathBuf {
        let bin = std::env::var_os("VODFLEET_COORDINATOR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                crate::Worker::bin().with_file_name(format!(
                    "vodfleet-coordinator{}",
                    std::env::consts::EXE_SUFFIX
                ))
            });
        assert!(
            bin.is_file(),
            "{} not found: build the binaries first with `cargo build --bins` \
             (same profile as the tests), or set VODFLEET_COORDINATOR_BIN",
            bin.display()
        );
        bin
    }

    /// Spawns the coordinator with `env` (which must carry `VODFLEET_AMQP_URL`,
    /// `VODFLEET_REDIS_URL` and `VODFLEET_API_KEYS`; the first key is the one the
    /// API helpers sign with). `VODFLEET_HTTP_ADDR` is set to a free port.
    pub fn start(env: &[(String, String)]) -> Coordinator {
        let keys = env_value(env, "VODFLEET_API_KEYS")
            .expect("VODFLEET_API_KEYS in the coordinator's environment");
        let (key_id, secret) = sign::parse_keys(&keys)
            .unwrap_or_else(|e| panic!("VODFLEET_API_KEYS: {e}"))
            .into_iter()
            .next()
            .map(|(id, s)| (id, String::from_utf8(s).expect("utf-8 secret")))
            .expect("at least one API key");
        let dir = temp_dir("vodfleet-coordinator-");
        let proc = Proc::spawn("vodfleet-coordinator".into(), dir, &Self::bin(), &[], env);
        Coordinator {
            proc,
            key_id,
            secret,
        }
    }

    pub fn key(&self) -> (&str, &str) {
        (&self.key_id, &self.secret)
    }

    /// A request with any headers (e.g. none, or a bad signature).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> HttpReply {
        http_request(self.http_port, method, path, headers, body).unwrap_or_else(|e| {
            panic!("{method} {path} on the coordinator: {e}\n{}", self.report())
        })
    }

    /// POST `body` signed now with the coordinator's first API key.
    pub fn post_signed(&self, path: &str, body: &[u8]) -> HttpReply {
        let h = signed_headers(&self.key_id, &self.secret, "POST", path, body);
        self.request("POST", path, &h, body)
    }

    /// A signed GET (signature over method, path and the empty body).
    pub fn get_signed(&self, path: &str) -> HttpReply {
        self.try_get_signed(path)
            .unwrap_or_else(|e| panic!("GET {path} on the coordinator: {e}\n{}", self.report()))
    }

    fn try_get_signed(&self, path: &str) -> Result<HttpReply, String> {
        let headers = signed_headers(&self.key_id, &self.secret, "GET", path, b"");
        http_request(self.http_port, "GET", path, &headers, b"")
    }

    /// `GET /v1/tasks/{id}`: `Some(json)` on 200, `None` on 404; panics otherwise.
    pub fn task(&self, id: &str) -> Option<Value> {
        self.try_task(id).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Coordinator::task`], with any other answer (or none) as an error.
    pub fn try_task(&self, id: &str) -> Result<Option<Value>, String> {
        let path = format!("/v1/tasks/{id}");
        let r = self.try_get_signed(&path)?;
        match r.status {
            200 => serde_json::from_slice(&r.body)
                .map(Some)
                .map_err(|e| format!("GET {path}: not JSON ({e}): {}", r.text())),
            404 => Ok(None),
            s => Err(format!("GET {path}: {s} {}", r.text())),
        }
    }

    /// `GET /v1/tasks` as JSON.
    pub fn tasks(&self) -> Value {
        let r = self.get_signed("/v1/tasks");
        assert_eq!(r.status, 200, "GET /v1/tasks: {}", r.text());
        r.json()
    }
}

/// The `worker` field of a `GET /v1/tasks/{id}` answer (top level or under
/// `task`), when a worker holds it.
pub fn task_worker(task: &Value) -> Option<String> {
    [&task["worker"], &task["task"]["worker"]]
        .into_iter()
        .find_map(|w| w.as_str().filter(|s| !s.is_empty()).map(str::to_owned))
}

/// The `state` field of a `GET /v1/tasks/{id}` answer.
pub fn task_state(task: &Value) -> Option<String> {
    [&task["state"], &task["task"]["state"]]
        .into_iter()
        .find_map(|w| w.as_str().map(str::to_owned))
}

/// A running `vodfleet-worker run`.
pub struct FleetWorker {
    proc: Proc,
    id: String,
}

impl Deref for FleetWorker {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl DerefMut for FleetWorker {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

impl FleetWorker {
    /// Spawns `vodfleet-worker run` with a unique `VODFLEET_WORKER_ID`, 4 slots,
    /// the test media as `VODFLEET_MEDIA_ROOT`, private networks allowed and a
    /// fresh cache directory; `env` comes last and wins (it must carry
    /// `VODFLEET_AMQP_URL`).
    pub fn start(env: &[(String, String)]) -> FleetWorker {
        let id = env_value(env, "VODFLEET_WORKER_ID").unwrap_or_else(|| unique("w"));
        let dir = temp_dir("vodfleet-fleetworker-");
        let cache = dir.path().join("cache");
        fs::create_dir_all(&cache).expect("mkdir cache");
        let mut all: Vec<(String, String)> = vec![
            ("VODFLEET_WORKER_ID".into(), id.clone()),
            ("VODFLEET_WORKER_SLOTS".into(), "4".into()),
            (
                "VODFLEET_MEDIA_ROOT".into(),
                media_dir().display().to_string(),
            ),
            ("VODFLEET_ALLOW_PRIVATE_NETWORKS".into(), "true".into()),
            ("VODFLEET_CACHE_DIR".into(), cache.display().to_string()),
        ];
        all.extend(env.iter().cloned());
        let proc = Proc::spawn(
            format!("vodfleet-worker run ({id})"),
            dir,
            &crate::Worker::bin(),
            &["run"],
            &all,
        );
        FleetWorker { proc, id }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `vodfleet_worker_streams_active` from `/metrics`.
    pub fn streams_active(&self) -> Option<f64> {
        self.metric("vodfleet_worker_streams_active")
    }
}

// ---------------------------------------------------------------------------
// A whole fleet
// ---------------------------------------------------------------------------

/// What [`Fleet::start`] sets up. Defaults: 2 coordinators, 2 workers of 4 slots,
/// a 6 s lease, the contract's default minimum window, no callback key.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub coordinators: usize,
    pub workers: usize,
    pub slots: u32,
    pub lease_ttl_ms: u64,
    /// `VODFLEET_MIN_WINDOW_MS` (unset: the seed's 5 minutes).
    pub min_window_ms: Option<u64>,
    /// `VODFLEET_CALLBACK_KEY` as `id:secret` (unset: the first API key).
    pub callback_key: Option<String>,
    /// Extra variables for every process (after the defaults: they win).
    pub env: Vec<(String, String)>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            coordinators: 2,
            workers: 2,
            slots: 4,
            lease_ttl_ms: 6000,
            min_window_ms: None,
            callback_key: None,
            env: Vec::new(),
        }
    }
}

impl FleetOptions {
    pub fn lease_ttl_ms(mut self, ms: u64) -> Self {
        self.lease_ttl_ms = ms;
        self
    }
    pub fn min_window_ms(mut self, ms: u64) -> Self {
        self.min_window_ms = Some(ms);
        self
    }
    pub fn callback_key(mut self, key: &str) -> Self {
        self.callback_key = Some(key.into());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// The broker a fleet uses.
pub enum Broker {
    /// A vhost on the machine's broker.
    Shared(Vhost),
    /// A node of the test's own (restart tests).
    Private(RabbitNode),
}

/// The API key every [`Fleet`] coordinator accepts: (id, secret).
pub const API_KEY: (&str, &str) = ("test", "test-secret-0123456789abcdef");

/// How long a fleet process gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Coordinators and workers with their own broker, Redis and nginx-rtmp.
/// Fields drop in order: processes first, then the services.
pub struct Fleet {
    pub workers: Vec<FleetWorker>,
    pub coordinators: Vec<Coordinator>,
    pub redis: RedisServer,
    pub broker: Broker,
    pub rtmp: RtmpServer,
    pub opts: FleetOptions,
}

impl Fleet {
    /// On a fresh vhost of the machine's broker.
    pub fn start(opts: FleetOptions) -> Fleet {
        Self::with_broker(Broker::Shared(Vhost::new()), opts)
    }

    /// On a private RabbitMQ node (for broker restarts).
    pub fn start_private(opts: FleetOptions) -> Fleet {
        Self::with_broker(Broker::Private(RabbitNode::start()), opts)
    }

    fn with_broker(broker: Broker, opts: FleetOptions) -> Fleet {
        let mut f = Fleet {
            workers: Vec::new(),
            coordinators: Vec::new(),
            redis: RedisServer::start(),
            broker,
            rtmp: RtmpServer::start(),
            opts,
        };
        for _ in 0..f.opts.coordinators {
            let c = Coordinator::start(&f.coordinator_env());
            f.coordinators.push(c);
        }
        // Coordinators declare the topology; workers come up after them.
        for c in &mut f.coordinators {
            c.wait_ready(READY_TIMEOUT);
        }
        for _ in 0..f.opts.workers {
            f.add_worker();
        }
        f
    }

    pub fn amqp_url(&self) -> String {
        match &self.broker {
            Broker::Shared(v) => v.url(),
            Broker::Private(n) => n.url(),
        }
    }

    /// The private node (panics for a shared-broker fleet).
    pub fn rabbit(&mut self) -> &mut RabbitNode {
        match &mut self.broker {
            Broker::Private(n) => n,
            Broker::Shared(_) => panic!("this fleet runs on the shared broker"),
        }
    }

    /// Queue arguments as the broker reports them.
    pub fn queue_arguments(&self) -> BTreeMap<String, Value> {
        match &self.broker {
            Broker::Shared(v) => v.queue_arguments(),
            Broker::Private(n) => n.queue_arguments(),
        }
    }

    /// What every process gets.
    pub fn common_env(&self) -> Vec<(String, String)> {
        let mut e: Vec<(String, String)> = vec![
            ("VODFLEET_AMQP_URL".into(), self.amqp_url()),
            (
                "VODFLEET_LEASE_TTL_MS".into(),
                self.opts.lease_ttl_ms.to_string(),
            ),
            ("VODFLEET_ALLOW_PRIVATE_NETWORKS".into(), "true".into()),
        ];
        e.extend(self.opts.env.iter().cloned());
        e
    }

    pub fn coordinator_env(&self) -> Vec<(String, String)> {
        let mut e = vec![
            ("VODFLEET_REDIS_URL".into(), self.redis.url()),
            (
                "VODFLEET_API_KEYS".into(),
                format!("{}:{}", API_KEY.0, API_KEY.1),
            ),
        ];
        if let Some(ms) = self.opts.min_window_ms {
            e.push(("VODFLEET_MIN_WINDOW_MS".into(), ms.to_string()));
        }
        if let Some(k) = &self.opts.callback_key {
            e.push(("VODFLEET_CALLBACK_KEY".into(), k.clone()));
        }
        let mut all = self.common_env();
        // The common extras must still win: put ours first.
        e.append(&mut all);
        e
    }

    pub fn worker_env(&self) -> Vec<(String, String)> {
        let mut e = vec![("VODFLEET_WORKER_SLOTS".into(), self.opts.slots.to_string())];
        e.extend(self.common_env());
        e
    }

    /// Starts one more worker and waits until it is ready.
    pub fn add_worker(&mut self) -> &mut FleetWorker {
        let mut w = FleetWorker::start(&self.worker_env());
        w.wait_ready(READY_TIMEOUT);
        self.workers.push(w);
        self.workers.last_mut().expect("just pushed")
    }

    /// The first coordinator (the API is the same on each).
    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinators[0]
    }

    /// A plain AMQP producer on this fleet's broker.
    pub fn producer(&self) -> Producer {
        Producer::connect(&self.amqp_url())
    }

    /// `rtmp://127.0.0.1:PORT/live/KEY` on this fleet's nginx.
    pub fn rtmp_url(&self, key: &str) -> String {
        self.rtmp.url(key)
    }

    pub fn worker(&mut self, id: &str) -> &mut FleetWorker {
        self.workers
            .iter_mut()
            .find(|w| w.id() == id)
            .unwrap_or_else(|| panic!("no worker {id}"))
    }

    /// The id of the worker running `task_id`: from `GET /v1/tasks/{id}` (its
    /// `worker` field, once the task is running), else the only worker whose
    /// `vodfleet_worker_streams_active` is positive. Panics after `timeout`.
    pub fn owner_of(&self, task_id: &str, timeout: Duration) -> String {
        let found = poll(timeout, || {
            if let Some(w) = self
                .coordinator()
                .try_task(task_id)
                .ok()
                .flatten()
                .as_ref()
                .filter(|t| task_state(t).as_deref() == Some("running"))
                .and_then(task_worker)
            {
                return Some(w);
            }
            let busy: Vec<&FleetWorker> = self
                .workers
                .iter()
                .filter(|w| w.streams_active().is_some_and(|n| n > 0.0))
                .collect();
            match busy.as_slice() {
                [one] => Some(one.id().to_owned()),
                _ => {
                    std::thread::sleep(Duration::from_millis(200));
                    None
                }
            }
        });
        found.unwrap_or_else(|| {
            panic!(
                "could not tell which worker runs {task_id} within {timeout:?}\n{}",
                self.reports()
            )
        })
    }

    /// Every process's output, for failure messages.
    pub fn reports(&self) -> String {
        let mut s = String::new();
        for c in &self.coordinators {
            s.push_str(&c.report());
        }
        for w in &self.workers {
            s.push_str(&w.report());
        }
        s
    }
}

// ---------------------------------------------------------------------------
// Tasks and the common flows of the fleet tests
// ---------------------------------------------------------------------------

/// Frame rate of the counter media the fleet tests use.
pub const FPS: u32 = 25;
/// Their keyframe interval: 2 s, a usual live GOP. "Within one GOP" is judged
/// against this.
pub const GOP: u32 = 50;

/// 90 s of counter media: a loop-0 task never wraps within a test.
pub fn long_counter() -> Media {
    counter_mp4(90.0, FPS, GOP)
}

/// Counter media of `secs` seconds whose frames carry `tag` (which file a
/// frame came from).
pub fn tagged_counter(secs: f64, tag: u32) -> Media {
    counter_media(secs, "320x240", FPS, GOP, tag)
}

/// One task of a test: its id, sources, and destinations on the fleet's nginx
/// (one stream key each).
#[derive(Clone, Debug)]
pub struct Task {
    pub id: String,
    pub keys: Vec<String>,
    pub src: Vec<String>,
    pub fwd: Vec<String>,
}

impl Task {
    /// The first destination's stream key.
    pub fn key(&self) -> &str {
        &self.keys[0]
    }

    /// cmd 1 with `extendParam.loop` = `loop_count`.
    pub fn start(&self, loop_count: u32) -> Value {
        seed::start(&self.id, &self.src, &self.fwd, loop_count)
    }

    /// cmd 2 for every destination.
    pub fn stop(&self) -> Value {
        seed::stop(&self.id, &self.fwd)
    }

    /// cmd 2 for the destinations at `indexes`.
    pub fn stop_some(&self, indexes: &[usize]) -> Value {
        let some: Vec<String> = indexes.iter().map(|&i| self.fwd[i].clone()).collect();
        seed::stop(&self.id, &some)
    }

    /// cmd 5 with the same sources and destinations.
    pub fn resume(&self) -> Value {
        seed::resume(&self.id, &self.src, &self.fwd)
    }

    /// cmd 3 with new sources.
    pub fn update(&self, src: &[&Media], wait_current: bool) -> Value {
        let src: Vec<String> = src.iter().map(|m| m.vod_url()).collect();
        seed::update(&self.id, &src, &self.fwd, wait_current)
    }
}

/// A task streaming at nginx: its first session's recording moved aside
/// (`before`) and its publishers watched.
pub struct Live {
    pub task: Task,
    pub before: PathBuf,
    pub watch: PublisherWatch,
    /// When the start command was sent.
    pub sent: Instant,
}

impl Fleet {
    /// A task of `media` into `destinations` new stream keys (unique ids).
    pub fn new_task(&self, media: &[&Media], destinations: usize) -> Task {
        let keys: Vec<String> = (0..destinations).map(|_| unique("key")).collect();
        Task {
            id: unique("task"),
            fwd: keys.iter().map(|k| self.rtmp_url(k)).collect(),
            keys,
            src: media.iter().map(|m| m.vod_url()).collect(),
        }
    }

    /// Starts a loop-0 task on [`long_counter`] through `producer`, waits until
    /// nginx has its publisher, moves that session's recording aside and starts
    /// watching `/stat` every `period`.
    pub fn start_live(&self, producer: &Producer, period: Duration) -> Live {
        let media = long_counter();
        let task = self.new_task(&[&media], 1);
        let sent = Instant::now();
        producer.send(&task.start(0));
        self.rtmp
            .wait_publishing(task.key(), Duration::from_secs(15));
        eprintln!("start command → publishing at nginx: {:?}", sent.elapsed());
        let before = take_recording(&self.rtmp, task.key(), "before");
        let watch = PublisherWatch::start(&self.rtmp, task.key(), period);
        Live {
            task,
            before,
            watch,
            sent,
        }
    }

    /// Stops `live` (cmd 2, all destinations), waits until nginx closed the
    /// stream, and judges what the server saw: never two publishers at once
    /// (`/stat` samples and nginx's refusals), `sessions` publish sessions in
    /// its access log, and the second session continuing within one [`GOP`] of
    /// where the first ended. Returns (last frame before, first frame after).
    pub fn stop_and_judge(&self, producer: &Producer, live: &Live, sessions: usize) -> (u32, u32) {
        let key = live.task.key();
        producer.send(&live.task.stop());
        self.rtmp.wait_unpublished(key, Duration::from_secs(15));
        assert_eq!(
            live.watch.max_publishers(),
            1,
            "two publishers at once: {}",
            live.watch.summary()
        );
        let refused = publish_conflicts(&self.rtmp, key);
        assert!(
            refused.is_empty(),
            "nginx refused a second publisher of the stream:\n{}",
            refused.join("\n")
        );
        let logged = poll(Duration::from_secs(5), || {
            let n = self.rtmp.publish_sessions(key);
            (n >= sessions).then_some(n)
        });
        assert_eq!(
            logged,
            Some(sessions),
            "publish sessions in nginx's access log\n{}",
            self.rtmp.access_log()
        );
        assert_continues(&live.before, &self.rtmp.record_path(key), GOP)
    }

    /// Waits until every coordinator and worker answers `/readyz` again.
    pub fn wait_all_ready(&mut self, timeout: Duration) {
        for c in &mut self.coordinators {
            c.wait_ready(timeout);
        }
        for w in &mut self.workers {
            w.wait_ready(timeout);
        }
    }
}

/// The last frame number of recording `before` and the first of `after`
/// (display order); panics unless they are within `gop` frames of each other.
pub fn assert_continues(before: &Path, after: &Path, gop: u32) -> (u32, u32) {
    let b = read_counters(before);
    let a = read_counters(after);
    let (Some(&last), Some(&first)) = (b.last(), a.first()) else {
        panic!(
            "no frames to compare: before {} frames, after {} frames",
            b.len(),
            a.len()
        );
    };
    eprintln!("before: {}\nafter: {}", counter_runs(&b), counter_runs(&a));
    assert!(
        first.abs_diff(last) <= gop,
        "the stream went on from frame {first} after ending at frame {last}: {} frames apart, more than one GOP ({gop})",
        first.abs_diff(last)
    );
    (last, first)
}

// ---------------------------------------------------------------------------
// Seed-001 bodies
// ---------------------------------------------------------------------------

/// Seed-001 command bodies (numeric fields as strings, like the seed's examples).
pub mod seed {
    use serde_json::{json, Value};

    fn urls(list: &[String]) -> Vec<Value> {
        list.iter().map(|u| json!({ "url": u })).collect()
    }

    /// `{"cmd": cmd, "type": "video", "list": [task]}`
    pub fn body(cmd: &str, task: Value) -> Value {
        json!({ "cmd": cmd, "type": "video", "list": [task] })
    }

    /// cmd "1": play `srcs` into `forwards`, `loop` times (0 = until stopped).
    pub fn start(id: &str, srcs: &[String], forwards: &[String], loop_count: u32) -> Value {
        body(
            "1",
            json!({
                "id": id,
                "src": urls(srcs),
                "forward": urls(forwards),
                "extendParam": { "loop": loop_count.to_string(), "index": "1", "callBackFileInfo": "0" }
            }),
        )
    }

    /// cmd "2" for `forwards` (all of them, or a subset), as the seed sends it.
    pub fn stop(id: &str, forwards: &[String]) -> Value {
        body(
            "2",
            json!({ "id": id, "src": [{ "url": "" }], "forward": urls(forwards) }),
        )
    }

    /// cmd "3": the new list, now (`wait_current` false) or after the current item.
    pub fn update(id: &str, srcs: &[String], forwards: &[String], wait_current: bool) -> Value {
        body(
            "3",
            json!({
                "id": id,
                "src": urls(srcs),
                "forward": urls(forwards),
                "extendParam": { "waitCrtUrlFinish": if wait_current { "1" } else { "0" } }
            }),
        )
    }

    /// cmd "5": resume (no `extendParam`, no `fops`: the seed refuses them).
    pub fn resume(id: &str, srcs: &[String], forwards: &[String]) -> Value {
        body(
            "5",
            json!({ "id": id, "src": urls(srcs), "forward": urls(forwards) }),
        )
    }

    /// Adds `transcallbackurl`.
    pub fn with_callback(mut body: Value, url: &str) -> Value {
        body["transcallbackurl"] = json!(url);
        body
    }

    /// Sets `list[0].extendParam.KEY = value`.
    pub fn with_param(mut body: Value, key: &str, value: &str) -> Value {
        body["list"][0]["extendParam"][key] = json!(value);
        body
    }

    /// Sets `list[0].start` and `list[0].end` (13-digit ms, as strings).
    pub fn with_window(mut body: Value, start_ms: u64, end_ms: u64) -> Value {
        body["list"][0]["start"] = json!(start_ms.to_string());
        body["list"][0]["end"] = json!(end_ms.to_string());
        body
    }
}

// ---------------------------------------------------------------------------
// A plain AMQP producer
// ---------------------------------------------------------------------------

/// A message read back from `vodfleet.commands.dead`.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub body: Vec<u8>,
    /// The `x-vodfleet-reason` header.
    pub reason: Option<String>,
    /// Every header, values rendered as text.
    pub headers: BTreeMap<String, String>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
}

fn amqp_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// How long a [`Producer::request`] waits for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// A plain AMQP client, as any producer would write it: publishes seed-001
/// bodies to `vodfleet.commands` through the default exchange (persistent,
/// `mandatory`, publisher confirms), with a fresh `message_id` each time.
pub struct Producer {
    rt: Option<tokio::runtime::Runtime>,
    conn: Connection,
    ch: Channel,
    replies: Option<(String, Consumer)>,
}

impl Producer {
    /// Connects, retrying for up to 30 s (the broker may be restarting).
    pub fn connect(url: &str) -> Producer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (conn, ch) = rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let props = ConnectionProperties::default()
                    .with_connection_name("vodfleet-test-producer".into())
                    .with_executor(tokio_executor_trait::Tokio::current())
                    .with_reactor(tokio_reactor_trait::Tokio);
                let attempt = async {
                    let conn = Connection::connect(url, props).await?;
                    let ch = conn.create_channel().await?;
                    ch.confirm_select(ConfirmSelectOptions::default()).await?;
                    Ok::<_, lapin::Error>((conn, ch))
                };
                match attempt.await {
                    Ok(v) => break v,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => panic!("AMQP connect to {url}: {e}"),
                }
            }
        });
        Producer {
            rt: Some(rt),
            conn,
            ch,
            replies: None,
        }
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime")
    }

    fn publish(&self, body: &[u8], props: BasicProperties) {
        let props = props
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(unique("msg")));
        let ch = &self.ch;
        let confirm = self.rt().block_on(async {
            let opts = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            tokio::time::timeout(Duration::from_secs(10), async {
                ch.basic_publish("", COMMANDS_QUEUE, opts, body, props)
                    .await?
                    .await
            })
            .await
        });
        match confirm {
            Err(_) => panic!("RabbitMQ did not confirm a publish within 10 s"),
            Ok(Err(e)) => panic!("publish to {COMMANDS_QUEUE}: {e}"),
            Ok(Ok(Confirmation::Ack(Some(ret)))) => panic!(
                "{COMMANDS_QUEUE} does not exist in this vhost (message returned: {:?}); \
                 is a coordinator up? It declares the topology",
                ret.reply_text
            ),
            Ok(Ok(Confirmation::Nack(_))) => panic!("RabbitMQ nacked the publish"),
            Ok(Ok(_)) => {}
        }
    }

    /// Publishes a JSON command body.
    pub fn send(&self, body: &Value) {
        self.send_raw(&serde_json::to_vec(body).expect("JSON"));
    }

    /// Publishes exact bytes (malformed, oversized, not UTF-8…).
    pub fn send_raw(&self, body: &[u8]) {
        self.publish(body, BasicProperties::default());
    }

    /// Publishes with `reply_to` + `correlation_id` and returns the reply
    /// (`{"http_code": …, "msg": …, "call_time": …}`); panics after 15 s.
    pub fn request(&mut self, body: &Value) -> Value {
        self.request_raw(&serde_json::to_vec(body).expect("JSON"))
    }

    /// Like [`Producer::request`] with exact bytes.
    pub fn request_raw(&mut self, body: &[u8]) -> Value {
        self.ensure_reply_queue();
        let corr = unique("corr");
        let queue = self.replies.as_ref().expect("reply queue").0.clone();
        let props = BasicProperties::default()
            .with_reply_to(ShortString::from(queue))
            .with_correlation_id(ShortString::from(corr.clone()));
        self.publish(body, props);
        let rt = self.rt.take().expect("runtime");
        let consumer = &mut self.replies.as_mut().expect("reply queue").1;
        let reply = rt.block_on(async {
            use futures_util::StreamExt;
            tokio::time::timeout(REPLY_TIMEOUT, async {
                while let Some(d) = consumer.next().await {
                    let d = d.map_err(|e| format!("reply consumer: {e}"))?;
                    let c = d
                        .properties
                        .correlation_id()
                        .as_ref()
                        .map(|c| c.as_str().to_owned());
                    if c.as_deref() == Some(corr.as_str()) {
                        return Ok(d.data);
                    }
                }
                Err("reply consumer ended".to_string())
            })
            .await
        });
        self.rt = Some(rt);
        match reply {
            Err(_) => panic!(
                "no reply with correlation_id {corr} within {REPLY_TIMEOUT:?} to {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ),
            Ok(Err(e)) => panic!("{e}"),
            Ok(Ok(data)) => serde_json::from_slice(&data).unwrap_or_else(|e| {
                panic!(
                    "reply is not JSON ({e}): {}",
                    String::from_utf8_lossy(&data)
                )
            }),
        }
    }

    fn ensure_reply_queue(&mut self) {
        if self.replies.is_some() {
            return;
        }
        let ch = &self.ch;
        let r = self.rt().block_on(async {
            let q = ch
                .queue_declare(
                    "",
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let name = q.name().as_str().to_owned();
            let consumer = ch
                .basic_consume(
                    &name,
                    "replies",
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((name, consumer))
        });
        self.replies = Some(r.unwrap_or_else(|e| panic!("declare a reply queue: {e}")));
    }

    /// Takes (and acks) every message now in `vodfleet.commands.dead`.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        let ch = &self.ch;
        self.rt().block_on(async {
            let mut out = Vec::new();
            loop {
                let got = ch
                    .basic_get(COMMANDS_DEAD_QUEUE, BasicGetOptions { no_ack: true })
                    .await
                    .unwrap_or_else(|e| panic!("basic.get {COMMANDS_DEAD_QUEUE}: {e}"));
                let Some(m) = got else { break };
                let d = m.delivery;
                let headers: BTreeMap<String, String> = d
                    .properties
                    .headers()
                    .as_ref()
                    .map(|t| {
                        t.inner()
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), amqp_text(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(DeadLetter {
                    reason: headers.get(REASON_HEADER).cloned(),
                    headers,
                    message_id: d
                        .properties
                        .message_id()
                        .as_ref()
                        .map(|s| s.as_str().to_owned()),
                    correlation_id: d
                        .properties
                        .correlation_id()
                        .as_ref()
                        .map(|s| s.as_str().to_owned()),
                    body: d.data,
                });
            }
            out
        })
    }

    /// Collects dead letters until there are at least `n` (or `timeout` passes).
    pub fn wait_dead_letters(&self, n: usize, timeout: Duration) -> Vec<DeadLetter> {
        let mut all = Vec::new();
        let _ = poll(timeout, || {
            all.extend(self.dead_letters());
            (all.len() >= n).then_some(())
        });
        all
    }

    pub fn is_connected(&self) -> bool {
        self.conn.status().connected()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            let conn = &self.conn;
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye")).await;
            });
            rt.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------------------
// Callback receiver
// ---------------------------------------------------------------------------

/// What the receiver answers to one POST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn new(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.into(),
        }
    }
}

/// One POST as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Post {
    pub at: Instant,
    pub path: String,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// The body as JSON, if it is.
    pub json: Option<Value>,
    /// `event_id` of the body ("" if none).
    pub event_id: String,
    /// 0-based attempt number for this `event_id`.
    pub attempt: usize,
    pub answer: Answer,
}

impl Post {
    /// Whether the answer counts as delivered (2xx with a non-empty body).
    pub fn delivered(&self) -> bool {
        (200..300).contains(&self.answer.status) && !self.answer.body.is_empty()
    }
}

struct ReceiverShared {
    script: Vec<Answer>,
    after: Answer,
    posts: Mutex<Vec<Post>>,
    stop: AtomicBool,
}

/// An HTTP server on 127.0.0.1 that records every request and answers attempt
/// `i` of each `event_id` with `script[i]` (then `after`): a receiver that
/// "fails twice, then succeeds" fails twice for every event.
pub struct CallbackReceiver {
    addr: SocketAddr,
    shared: Arc<ReceiverShared>,
    thread: Option<JoinHandle<()>>,
}

impl CallbackReceiver {
    pub fn start(script: Vec<Answer>, after: Answer) -> CallbackReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(ReceiverShared {
            script,
            after,
            posts: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let sh = sh.clone();
                std::thread::spawn(move || Self::serve(conn, &sh));
            }
        });
        CallbackReceiver {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    fn serve(mut conn: TcpStream, sh: &ReceiverShared) {
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let Ok(Message {
            start,
            headers,
            body,
        }) = read_message(&mut conn)
        else {
            return;
        };
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        let event_id = json
            .as_ref()
            .and_then(|j| j["event_id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let answer = {
            let mut posts = lock(&sh.posts);
            let attempt = posts.iter().filter(|p| p.event_id == event_id).count();
            let answer = sh.script.get(attempt).unwrap_or(&sh.after).clone();
            posts.push(Post {
                at: Instant::now(),
                path: start.split_whitespace().nth(1).unwrap_or("").to_owned(),
                headers: headers.into_iter().collect(),
                body,
                json,
                event_id,
                attempt,
                answer: answer.clone(),
            });
            answer
        };
        let _ = write!(
            conn,
            "HTTP/1.1 {} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            answer.status,
            answer.body.len(),
            answer.body
        );
        let _ = conn.flush();
        let _ = conn.shutdown(Shutdown::Write);
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT/callback`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/callback", self.addr.port())
    }

    /// Every request so far, in arrival order.
    pub fn posts(&self) -> Vec<Post> {
        lock(&self.shared.posts).clone()
    }

    /// Requests grouped by `event_id`.
    pub fn by_event(&self) -> BTreeMap<String, Vec<Post>> {
        let mut m: BTreeMap<String, Vec<Post>> = BTreeMap::new();
        for p in self.posts() {
            m.entry(p.event_id.clone()).or_default().push(p);
        }
        m
    }

    /// One body per `event_id` (the first), in first-arrival order: what a
    /// receiver that de-duplicates sees.
    pub fn events(&self) -> Vec<Value> {
        let mut seen = std::collections::BTreeSet::new();
        self.posts()
            .into_iter()
            .filter(|p| seen.insert(p.event_id.clone()))
            .filter_map(|p| p.json)
            .collect()
    }
}

impl Drop for CallbackReceiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// What nginx sees: publishers over time, recordings, refused publishers
// ---------------------------------------------------------------------------

/// The client ids publishing stream `key` in a `/stat` document.
pub fn stat_publishers(xml: &str, key: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    for stream in xml.split("<stream>").skip(1) {
        let stream = stream.split("</stream>").next().unwrap_or(stream);
        let name = stream
            .split_once("<name>")
            .and_then(|(_, r)| r.split_once("</name>"))
            .map(|(n, _)| n);
        if name != Some(key) {
            continue;
        }
        for client in stream.split("<client>").skip(1) {
            let client = client.split("</client>").next().unwrap_or(client);
            if !client.contains("<publishing/>") {
                continue;
            }
            if let Some(id) = client
                .split_once("<id>")
                .and_then(|(_, r)| r.split_once("</id>"))
                .and_then(|(n, _)| n.trim().parse().ok())
            {
                ids.push(id);
            }
        }
    }
    ids
}

/// The client ids publishing `key` right now.
pub fn publishers(rtmp: &RtmpServer, key: &str) -> Vec<u64> {
    stat_publishers(&rtmp.stat(), key)
}

/// One `/stat` sample.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    /// Client ids publishing the stream (empty when none, or `/stat` failed).
    pub publishers: Vec<u64>,
    pub stat_failed: bool,
}

/// One publisher (RTMP client id) as the samples saw it.
#[derive(Clone, Copy, Debug)]
pub struct Session {
    pub client: u64,
    pub first_seen: Instant,
    pub last_seen: Instant,
}

/// Polls nginx's `/stat` every `period` in a thread and records who publishes
/// stream `key`, so a test can assert "never two at once" and measure gaps.
pub struct PublisherWatch {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PublisherWatch {
    pub fn start(rtmp: &RtmpServer, key: &str, period: Duration) -> PublisherWatch {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, key, port) = (
            samples.clone(),
            stop.clone(),
            key.to_owned(),
            rtmp.http_port(),
        );
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let t = Instant::now();
                let r = crate::rtmp::http_get(port, "/stat");
                lock(&s).push(Sample {
                    at: t,
                    stat_failed: r.is_err(),
                    publishers: r.map(|x| stat_publishers(&x, &key)).unwrap_or_default(),
                });
                std::thread::sleep(period.saturating_sub(t.elapsed()));
            }
        });
        PublisherWatch {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.samples).clone()
    }

    /// The most publishers seen in one sample.
    pub fn max_publishers(&self) -> usize {
        self.samples()
            .iter()
            .map(|s| s.publishers.len())
            .max()
            .unwrap_or(0)
    }

    /// Each publisher seen, in order of first appearance.
    pub fn sessions(&self) -> Vec<Session> {
        let mut out: Vec<Session> = Vec::new();
        for s in self.samples() {
            for id in s.publishers {
                match out.iter_mut().find(|x| x.client == id) {
                    Some(x) => x.last_seen = s.at,
                    None => out.push(Session {
                        client: id,
                        first_seen: s.at,
                        last_seen: s.at,
                    }),
                }
            }
        }
        out
    }

    /// Waits until `n` distinct publishers have been seen; returns them.
    pub fn wait_sessions(&self, n: usize, timeout: Duration) -> Option<Vec<Session>> {
        poll(timeout, || {
            let s = self.sessions();
            (s.len() >= n).then_some(s)
        })
    }

    /// Whether some sample at or after `t` had no publisher.
    pub fn absent_since(&self, t: Instant) -> bool {
        self.samples()
            .iter()
            .any(|s| s.at >= t && !s.stat_failed && s.publishers.is_empty())
    }

    /// A one-line summary for assertion messages.
    pub fn summary(&self) -> String {
        let samples = self.samples();
        let Some(t0) = samples.first().map(|s| s.at) else {
            return "no samples".into();
        };
        let sessions: Vec<String> = self
            .sessions()
            .iter()
            .map(|s| {
                format!(
                    "client {} seen {:.2}..{:.2} s",
                    s.client,
                    (s.first_seen - t0).as_secs_f64(),
                    (s.last_seen - t0).as_secs_f64()
                )
            })
            .collect();
        format!(
            "{} samples, max {} publishers at once; {}",
            samples.len(),
            self.max_publishers(),
            sessions.join("; ")
        )
    }
}

impl Drop for PublisherWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Publish attempts on `key` that nginx refused because someone else was
/// publishing it ("live: already publishing" in its error log): the server's own
/// evidence of two publishers at once.
pub fn publish_conflicts(rtmp: &RtmpServer, key: &str) -> Vec<String> {
    let log = fs::read_to_string(rtmp.dir().join("error.log")).unwrap_or_default();
    // Connection ids ("*N") that tried to publish `key`.
    let needle = format!("publish: name='{key}'");
    let conn_id = |l: &str| {
        l.split_whitespace()
            .find(|w| w.starts_with('*'))
            .map(str::to_owned)
    };
    let ids: Vec<String> = log
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(conn_id)
        .collect();
    log.lines()
        .filter(|l| l.contains("already publishing"))
        .filter(|l| conn_id(l).is_some_and(|c| ids.contains(&c)))
        .map(str::to_owned)
        .collect()
}

/// Moves the recording of the session now publishing `key` aside (to
/// `record/KEY.LABEL.flv`) and returns its new path. nginx keeps writing the
/// running session into the moved file, and the next publish of `key` starts a
/// new `KEY.flv` instead of truncating this one (`record_unique off`).
pub fn take_recording(rtmp: &RtmpServer, key: &str, label: &str) -> PathBuf {
    let from = rtmp.record_path(key);
    wait_until(
        &format!("nginx recording {} exists", from.display()),
        Duration::from_secs(10),
        || from.exists(),
    );
    let to = rtmp.dir().join("record").join(format!("{key}.{label}.flv"));
    fs::rename(&from, &to)
        .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", from.display(), to.display()));
    to
}

// ---------------------------------------------------------------------------
// Media with frame numbers
// ---------------------------------------------------------------------------

/// Bits of the frame number in a counter value; the bits above carry a tag.
pub const FRAME_BITS: u32 = 12;
/// Blocks (bits) drawn per frame.
const COUNTER_BLOCKS: u32 = 16;

/// The frame number of a counter value.
pub fn frame_of(v: u32) -> u32 {
    v & ((1 << FRAME_BITS) - 1)
}

/// The tag of a counter value (which file the frame came from).
pub fn tag_of(v: u32) -> u32 {
    v >> FRAME_BITS
}

/// A 320x240 mp4 of `secs` seconds whose frame `n` shows the number `n` (tag 0).
pub fn counter_mp4(secs: f64, fps: u32, gop: u32) -> Media {
    counter_media(secs, "320x240", fps, gop, 0)
}

/// An H.264/AAC mp4 (`testsrc2` + a sine) whose frame `n` carries
/// `tag << FRAME_BITS | n` in 16 black/white blocks across the top sixth of the
/// picture (most significant bit on the left), big enough to survive any
/// encoder setting and any scaling. [`read_counters`] reads them back.
pub fn counter_media(secs: f64, size: &str, fps: u32, gop: u32, tag: u32) -> Media {
    let frames = (secs * fps as f64).ceil() as u64;
    assert!(
        frames < (1 << FRAME_BITS),
        "{frames} frames do not fit in {FRAME_BITS} bits"
    );
    assert!(
        tag < 1 << (COUNTER_BLOCKS - FRAME_BITS),
        "tag {tag} too big"
    );
    let (w, h) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .unwrap_or_else(|| panic!("size must be WxH, got {size:?}"));
    let offset = tag << FRAME_BITS;
    let filter = format!(
        "[0:v]format=yuv420p,split[a][b];\
         [b]crop=iw:ih/6:0:0,geq=lum='if(bitand(N+{offset},pow(2,{top}-floor(X*{COUNTER_BLOCKS}/W))),235,16)':cb=128:cr=128[c];\
         [a][c]overlay=0:0:format=yuv420[v]",
        top = COUNTER_BLOCKS - 1
    );
    let args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={w}x{h}:rate={fps}"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        &format!("{secs}"),
        "-filter_complex",
        &filter,
        "-map",
        "[v]",
        "-map",
        "1:a",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-g",
        &gop.to_string(),
        "-keyint_min",
        &gop.to_string(),
        "-sc_threshold",
        "0",
        "-c:a",
        "aac",
        "-ac",
        "2",
        "-ar",
        "44100",
        "-b:a",
        "96k",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
    ]
    .map(String::from)
    .to_vec();
    let recipe = format!("counter v1 {args:?}");
    let name = format!(
        "counter-t{tag}-{w}x{h}-{fps}fps-g{gop}-{secs}s-{:016x}.mp4",
        recipe_hash(&recipe)
    );
    let path = media_dir().join(&name);
    if !path.exists() {
        // Other test processes may generate the same file: write aside, rename.
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(media_dir())
            .unwrap_or_else(|e| panic!("temp file in {}: {e}", media_dir().display()));
        let mut cmd = Command::new(ffmpeg());
        cmd.args(&args).arg(tmp.path());
        if let Err(e) = run(&mut cmd, Duration::from_secs(300)) {
            panic!("ffmpeg failed to generate {name}: {e}");
        }
        tmp.persist(&path)
            .unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
    }
    let mut spec = MediaSpec::new(Container::Mp4, secs, size, fps, gop).pattern(Pattern::TestSrc2);
    spec.tone_hz = 440;
    Media { path, name, spec }
}

/// A hash of a recipe, for cache file names (a changed recipe never picks up a
/// stale file; a new toolchain at worst regenerates).
fn recipe_hash(recipe: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    recipe.hash(&mut h);
    h.finish()
}

/// The counter value of every decoded video frame of `path` (any container
/// ffmpeg reads, e.g. an nginx recording), in display order. Frames whose blocks
/// are not clearly black or white (a damaged picture) are left out, and counted
/// on stderr.
pub fn read_counters(path: &Path) -> Vec<u32> {
    assert!(path.exists(), "{} does not exist", path.display());
    let out = Command::new(ffmpeg())
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args([
            "-an",
            "-vf",
            &format!("crop=iw:ih/6:0:0,scale={COUNTER_BLOCKS}:1:flags=area,format=gray"),
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "pipe:1",
        ])
        .output()
        .unwrap_or_else(|e| panic!("run ffmpeg: {e}"));
    assert!(
        out.status.success() || !out.stdout.is_empty(),
        "ffmpeg could not decode {}: {}\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut values = Vec::new();
    let mut unclear = 0;
    for frame in out.stdout.chunks_exact(COUNTER_BLOCKS as usize) {
        if frame.iter().any(|&b| (64..192).contains(&b)) {
            unclear += 1;
            continue;
        }
        values.push(
            frame
                .iter()
                .fold(0u32, |v, &b| v << 1 | u32::from(b >= 128)),
        );
    }
    if unclear > 0 {
        eprintln!(
            "read_counters {}: {unclear} frame(s) with unclear blocks left out",
            path.display()
        );
    }
    values
}

/// The runs of one file playing in a counter sequence, as (tag, first frame,
/// last frame): a new run starts when the tag changes or the frame number goes
/// back (the file started again).
pub fn tag_runs(values: &[u32]) -> Vec<(u32, u32, u32)> {
    let mut runs: Vec<(u32, u32, u32)> = Vec::new();
    for &v in values {
        match runs.last_mut() {
            Some(r) if r.0 == tag_of(v) && frame_of(v) >= r.2 => r.2 = frame_of(v),
            _ => runs.push((tag_of(v), frame_of(v), frame_of(v))),
        }
    }
    runs
}

/// Compact text of a counter sequence: runs of consecutive values as `a..=b`.
pub fn counter_runs(values: &[u32]) -> String {
    let mut runs: Vec<String> = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let mut j = i;
        while j + 1 < values.len() && values[j + 1] == values[j] + 1 {
            j += 1;
        }
        runs.push(if i == j {
            format!("{}", values[i])
        } else {
            format!("{}..={}", values[i], values[j])
        });
        i = j + 1;
    }
    runs.join(", ")
}

/// A JSON body as bytes.
pub fn body_of(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_publishers() {
        let xml = "<live><stream><name>k1</name><time>1</time>\
            <client><id>3</id><address>127.0.0.1</address><publishing/><active/></client>\
            <client><id>7</id><address>127.0.0.1</address><active/></client>\
            <publishing/></stream><stream><name>k2</name>\
            <client><id>9</id><publishing/></client></stream></live>";
        assert_eq!(stat_publishers(xml, "k1"), vec![3]);
        assert_eq!(stat_publishers(xml, "k2"), vec![9]);
        assert!(stat_publishers(xml, "k3").is_empty());
    }

    #[test]
    fn sums_metrics() {
        let text = "# HELP x y\nvodfleet_a 2\nvodfleet_a{k=\"1\"} 3\nvodfleet_ab 100\n";
        assert_eq!(metric_sum(text, "vodfleet_a"), Some(5.0));
        assert_eq!(metric_sum(text, "vodfleet_b"), None);
    }

    #[test]
    fn counter_values_split() {
        let v = 3 << FRAME_BITS | 77;
        assert_eq!((tag_of(v), frame_of(v)), (3, 77));
        assert_eq!(counter_runs(&[1, 2, 3, 7, 9, 10]), "1..=3, 7, 9..=10");
        let t = |tag: u32, n: u32| tag << FRAME_BITS | n;
        let seq = [
            t(1, 0),
            t(1, 1),
            t(2, 0),
            t(2, 1),
            t(1, 0),
            t(1, 5),
            t(1, 0),
        ];
        assert_eq!(
            tag_runs(&seq),
            vec![(1, 0, 1), (2, 0, 1), (1, 0, 5), (1, 0, 0)]
        );
    }

    #[test]
    fn parses_queue_arguments() {
        let out = "Timeout: 60.0 seconds ...\nListing queues for vhost v ...\n\
            [\n{\"name\":\"q\",\"arguments\":{\"x-delivery-limit\":5,\"x-queue-type\":\"quorum\"}}\n]\n";
        let m = parse_queue_arguments(out).unwrap();
        assert_eq!(m["q"]["x-delivery-limit"], 5);
        let v3 = "[{\"name\":\"q\",\"arguments\":[[\"x-delivery-limit\",\"signedint\",5],\
            [\"x-queue-type\",\"longstr\",\"quorum\"]]}]";
        let m = parse_queue_arguments(v3).unwrap();
        assert_eq!(m["q"]["x-delivery-limit"], 5);
        assert_eq!(m["q"]["x-queue-type"], "quorum");
    }

    #[test]
    fn seed_bodies_parse_with_the_contract() {
        let fwd = vec!["rtmp://127.0.0.1:1935/live/k".to_owned()];
        let src = vec!["vod://a.mp4".to_owned()];
        for b in [
            seed::start("t1", &src, &fwd, 0),
            seed::stop("t1", &fwd),
            seed::update("t1", &src, &fwd, true),
            seed::resume("t1", &src, &fwd),
            seed::with_window(
                seed::start("t1", &src, &fwd, 0),
                1_900_000_000_000,
                1_900_000_400_000,
            ),
        ] {
            vodfleet_proto::parse_command(&body_of(&b)).unwrap_or_else(|e| panic!("{e} in {b}"));
        }
    }
}
