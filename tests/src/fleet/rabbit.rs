//! RabbitMQ for the fleet tests: a private virtual host on the machine's broker
//! ([`Vhost`]), or a private node a test may restart ([`RabbitNode`]).

use super::{keep_or_drop, port_answers, run, tail, temp_dir};
use crate::rtmp::free_port;
use crate::{keep_artifacts, poll, unique};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// Arguments of `rabbitmqctl list_queues` for (ready, unacked) message counts.
const COUNT_ARGS: [&str; 6] = [
    "list_queues",
    "name",
    "messages_ready",
    "messages_unacknowledged",
    "--formatter",
    "json",
];

/// `rabbitmqctl list_queues name messages_ready messages_unacknowledged` (JSON)
/// → queue name → (ready, unacknowledged).
fn parse_queue_counts(json_text: &str) -> Result<BTreeMap<String, (u64, u64)>, String> {
    let start = json_text
        .find('[')
        .ok_or_else(|| format!("no JSON array in {json_text:?}"))?;
    let v: Value = serde_json::from_str(json_text[start..].trim())
        .map_err(|e| format!("list_queues output is not JSON ({e}): {json_text}"))?;
    Ok(v.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|q| {
            let n = |k: &str| q[k].as_u64().unwrap_or(0);
            let name = q["name"].as_str()?.to_owned();
            Some((name, (n("messages_ready"), n("messages_unacknowledged"))))
        })
        .collect())
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

    /// Every queue of this vhost → (messages ready, messages unacknowledged).
    pub fn queue_counts(&self) -> BTreeMap<String, (u64, u64)> {
        let out = run(
            Command::new(rabbitmqctl_bin())
                .args(&COUNT_ARGS[..1])
                .args(["-p", &self.name])
                .args(&COUNT_ARGS[1..]),
            CTL_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("rabbitmqctl list_queues: {e}"));
        parse_queue_counts(&out).unwrap_or_else(|e| panic!("{e}"))
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
        Self::start_with_cookie(&unique("VFCOOKIE").replace(['-', 'x'], "Q"))
    }

    /// [`RabbitNode::start`] with the Erlang cookie given: nodes that share
    /// one can form a cluster ([`super::rabbit_cluster::RabbitCluster`]).
    pub fn start_with_cookie(cookie: &str) -> RabbitNode {
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
        let cookie_file = path.join("home/.erlang.cookie");
        fs::write(&cookie_file, cookie).expect("write cookie");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&cookie_file, fs::Permissions::from_mode(0o400)).expect("chmod cookie");
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

    /// The pid of the node's process group leader (`kill -9 -- -PID` takes the
    /// whole node), if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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

    /// Queues of the default vhost → (messages ready, messages unacknowledged).
    pub fn queue_counts(&self) -> BTreeMap<String, (u64, u64)> {
        let out = self
            .ctl(&COUNT_ARGS)
            .unwrap_or_else(|e| panic!("list_queues on {}: {e}", self.node));
        parse_queue_counts(&out).unwrap_or_else(|e| panic!("{e}"))
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

    /// `kill -9` of the node's process group (the Erlang VM with it): no clean
    /// shutdown, no chance to flush anything. Returns once the port is closed.
    pub fn kill9(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .status();
        let _ = child.wait();
        let closed = poll(Duration::from_secs(10), || {
            (!port_answers(self.port)).then_some(())
        });
        assert!(
            closed.is_some(),
            "port {} still answers after kill -9 of the node",
            self.port
        );
    }

    /// Starts a stopped or killed node again on the same ports and data
    /// directory; returns once its AMQP port answers.
    pub fn start_again(&mut self) {
        assert!(!self.is_running(), "node {} is running", self.node);
        self.child = None;
        self.boot();
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn parses_queue_counts() {
        let out = "Listing queues ...\n[{\"name\":\"q\",\"messages_ready\":3,\"messages_unacknowledged\":1}]";
        assert_eq!(parse_queue_counts(out).unwrap()["q"], (3, 1));
    }
}
