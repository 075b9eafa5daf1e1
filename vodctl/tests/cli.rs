//! vodctl against a real coordinator (its own Redis on a free port, its own
//! RabbitMQ vhost on the machine's broker; no worker), and the exits that need
//! no fleet at all.
//!
//! The coordinator binary is `target/debug/vodfleet-coordinator`: scripts/test.sh
//! builds every binary first; alone, run `cargo build -p vodfleet-coordinator`.
//! Env: VODFLEET_RABBITMQCTL (default rabbitmqctl), VODFLEET_TEST_AMQP_ADDR
//! (default 127.0.0.1:5672), VODFLEET_REDIS_SERVER (default redis-server).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const KEYS: &str = "t:0123456789abcdef0123";
const KEY1: &str = "SECRETKEY123";
const KEY2: &str = "OTHERKEY456";
const KEY3: &str = "NEWKEY789";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn unique(prefix: &str) -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{ns}", std::process::id())
}

fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child process of this test, killed (by its handle) on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, name: &str) -> Proc {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.log", unique(name)));
        let f = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-server` on a free port, no persistence.
fn redis() -> (Proc, u16) {
    let bin = std::env::var("VODFLEET_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let port = free_port();
    let mut p = Proc::spawn(
        Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .current_dir(env!("CARGO_TARGET_TMPDIR")),
        "redis",
    );
    let up = poll(Duration::from_secs(10), || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        s.write_all(b"PING\r\n").ok()?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).ok()?;
        buf[..n].starts_with(b"+PONG").then_some(())
    });
    if up.is_none() {
        let st = p.child.try_wait();
        panic!(
            "redis-server on {port} did not answer ({st:?}):\n{}",
            p.log()
        );
    }
    (p, port)
}

/// A RabbitMQ vhost of this test's own; deleted on drop.
struct Vhost(String);

fn rabbitmqctl(args: &[&str]) {
    let bin = std::env::var("VODFLEET_RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into());
    let out = Command::new(&bin).args(args).output().unwrap_or_else(|e| {
        panic!("{bin} {args:?}: {e} (is RabbitMQ installed? scripts/test.sh sets it up)")
    });
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Vhost {
    fn new() -> Vhost {
        let name = unique("vodctl");
        rabbitmqctl(&["add_vhost", &name]);
        let v = Vhost(name);
        rabbitmqctl(&["set_permissions", "-p", &v.0, "guest", ".*", ".*", ".*"]);
        v
    }

    fn url(&self) -> String {
        let addr =
            std::env::var("VODFLEET_TEST_AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".into());
        format!("amqp://guest:guest@{addr}/{}", self.0)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_vhost", &self.0]);
    }
}

fn coordinator_bin() -> PathBuf {
    // target/debug/deps/cli-<hash> → target/debug/vodfleet-coordinator
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("vodfleet-coordinator");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p vodfleet-coordinator` (scripts/test.sh builds every binary)",
        bin.display()
    );
    bin
}

/// A coordinator with its own Redis and vhost, answering on /readyz.
struct Fleet {
    api_url: String,
    amqp_url: String,
    coordinator: Proc,
    _redis: Proc,
    _vhost: Vhost,
}

impl Fleet {
    fn start() -> Fleet {
        let vhost = Vhost::new();
        let (redis, redis_port) = redis();
        let port = free_port();
        let coordinator = Proc::spawn(
            Command::new(coordinator_bin())
                .env("VODFLEET_API_KEYS", KEYS)
                .env("VODFLEET_HTTP_ADDR", format!("127.0.0.1:{port}"))
                .env(
                    "VODFLEET_REDIS_URL",
                    format!("redis://127.0.0.1:{redis_port}/"),
                )
                .env("VODFLEET_AMQP_URL", vhost.url())
                .env_remove("VODFLEET_AUTH_DISABLED")
                .env_remove("VODFLEET_MIN_WINDOW_MS")
                .env("VODFLEET_LOG", "info"),
            "coordinator",
        );
        let mut f = Fleet {
            api_url: format!("http://127.0.0.1:{port}"),
            amqp_url: vhost.url(),
            coordinator,
            _redis: redis,
            _vhost: vhost,
        };
        let ready = poll(Duration::from_secs(30), || {
            if let Ok(Some(st)) = f.coordinator.child.try_wait() {
                panic!("the coordinator exited ({st}):\n{}", f.coordinator.log());
            }
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n")
                .ok()?;
            let mut r = String::new();
            s.read_to_string(&mut r).ok()?;
            r.starts_with("HTTP/1.0 200").then_some(())
        });
        assert!(
            ready.is_some(),
            "the coordinator is not ready:\n{}",
            f.coordinator.log()
        );
        f
    }

    fn vodctl(&self, line: &str) -> Run {
        vodctl(&self.api_url, &self.amqp_url, line)
    }
}

/// One vodctl run: exit code and both outputs.
#[derive(Debug)]
struct Run {
    code: i32,
    out: String,
    err: String,
}

/// Runs `vodctl LINE` (words split on white space; none of them holds any).
fn vodctl(api_url: &str, amqp_url: &str, line: &str) -> Run {
    let args: Vec<&str> = line.split_whitespace().collect();
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_vodctl"))
        .args(&args)
        .env("VODFLEET_API_URL", api_url)
        .env("VODFLEET_API_KEYS", KEYS)
        .env("VODFLEET_AMQP_URL", amqp_url)
        .env_remove("VODFLEET_MIN_WINDOW_MS")
        .env_remove("VODFLEET_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run vodctl");
    let r = Run {
        code: status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&stdout).into_owned(),
        err: String::from_utf8_lossy(&stderr).into_owned(),
    };
    for key in [KEY1, KEY2, KEY3] {
        assert!(
            !r.out.contains(key) && !r.err.contains(key),
            "vodctl {line} printed a stream key:\n{r:?}"
        );
    }
    r
}

fn fwd(host: &str, key: &str) -> String {
    format!("rtmp://{host}/live/{key}?token=abc")
}

#[test]
fn start_status_stop_resume_against_a_real_coordinator() {
    let fleet = Fleet::start();
    let id = "vodctl-it";
    let f1 = fwd("push1.example", KEY1);
    let f2 = fwd("push2.example", KEY2);
    let f3 = fwd("push3.example", KEY3);

    let r = fleet.vodctl(&format!(
        "start --id {id} --src https://media.example/a.mp4?sig=x --src vod://b.mp4 \
         --forward {f1} --forward {f2} --loop 2 --preset 480p"
    ));
    assert_eq!(r.code, 0, "{r:?}\n{}", fleet.coordinator.log());
    assert!(r.out.starts_with("200 receive task success!"), "{r:?}");

    // HTTP's 200 means "queued": the coordinator applies it a moment later.
    let status = format!("status {id}");
    let detail = poll(Duration::from_secs(20), || {
        let r = fleet.vodctl(&status);
        (r.code == 0).then_some(r)
    })
    .unwrap_or_else(|| panic!("{id} never appeared:\n{}", fleet.coordinator.log()));
    let out = &detail.out;
    assert!(
        out.contains("state     leased"),
        "no worker runs, so it stays leased:\n{out}"
    );
    assert!(out.contains("worker    -"), "{out}");
    assert!(out.contains("rtmp://push1.example/…  pending"), "{out}");

    // Reads in the same second sign the same message; vodctl signs again rather than fail.
    let runs: Vec<Run> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3).map(|_| s.spawn(|| fleet.vodctl("status"))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &runs {
        assert_eq!(r.code, 0, "{r:?}");
        let row = r.out.lines().find(|l| l.starts_with(id));
        let row = row.unwrap_or_else(|| panic!("{r:?}"));
        assert!(
            row.contains("leased") && row.contains("push1.example pending"),
            "{row}"
        );
    }

    let r = fleet.vodctl(&format!("status --json {id}"));
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.out).expect("JSON");
    assert_eq!(v["state"], "leased");

    let r = fleet.vodctl("status no-such-task");
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.err.contains("refused (404)"), "{r:?}");

    // AMQP replies come after the command is applied.
    let r = fleet.vodctl(&format!(
        "--via amqp stop --id {id} --forward {f1} --forward {f2}"
    ));
    assert_eq!(r.code, 0, "{r:?}\n{}", fleet.coordinator.log());
    assert!(r.out.starts_with("200 "), "{r:?}");
    let r = fleet.vodctl(&status);
    assert!(r.out.contains("state     stopped"), "{r:?}");

    let r = fleet.vodctl(&format!("--via amqp resume --id {id} --reset {f2}={f3}"));
    assert_eq!(r.code, 0, "{r:?}\n{}", fleet.coordinator.log());
    let r = fleet.vodctl(&status);
    assert!(r.out.contains("state     leased"), "{r:?}");
    let out = &r.out;
    assert!(
        out.contains("rtmp://push3.example/…") && !out.contains("push2.example"),
        "{out}"
    );

    let r = fleet.vodctl(&format!(
        "--via amqp resume --id never-stopped --forward {f1}"
    ));
    assert_eq!(r.code, 1, "{r:?}");
    let named = "refused (400): list[0].id: no resume record";
    assert!(r.err.contains(named), "{r:?}");
}

/// Addresses where nothing answers.
const NOWHERE_API: &str = "http://127.0.0.1:9";
const NOWHERE_AMQP: &str = "amqp://127.0.0.1:9/%2f";

#[test]
fn a_bad_command_never_leaves_the_machine() {
    // Something listens where the API and the broker would be; nothing may connect to it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let (api, amqp) = (
        format!("http://{addr}"),
        format!("amqp://guest:guest@{addr}/%2f"),
    );
    let start = "start --id x --src vod://a.mp4";
    for via in ["http", "amqp"] {
        let line = format!("--via {via} {start} --forward http://push.example/live/{KEY1}");
        let r = vodctl(&api, &amqp, &line);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(r.err.contains("list[0].forward[0].url"), "{r:?}");
        assert!(r.err.contains("nothing was sent"), "{r:?}");
    }
    let r = vodctl(
        &api,
        &amqp,
        &format!("{start} --forward rtmp://h/live/k --end +1m"),
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.err.contains("list[0].end"), "{r:?}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "vodctl contacted the server"
    );
}

#[test]
fn usage_errors_exit_2() {
    for line in [
        "start --id x --forward rtmp://h/live/k",
        "stop --id x",
        "start --file /nonexistent/body.json",
        "start --id x --src vod://a.mp4 --forward rtmp://h/k --relofftime 2=1-2",
        "--via amqp status",
        "watch --interval 0",
    ] {
        let r = vodctl(NOWHERE_API, NOWHERE_AMQP, line);
        assert_eq!(r.code, 2, "{line}: {r:?}");
    }
    let r = vodctl(NOWHERE_API, NOWHERE_AMQP, "status");
    assert_eq!(
        r.code, 1,
        "an unreachable API is a failure, not a usage error: {r:?}"
    );
    assert!(r.err.contains("could not be reached"), "{r:?}");
}

#[test]
fn a_body_file_is_checked_then_sent_as_is() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("{}.json", unique("body")));
    std::fs::write(
        &path,
        r#"{"cmd":"2","type":"video","list":[{"id":"x","src":[{"url":""}],"forward":[{"url":"rtmp://h/live/k","extra":1}]}]}"#,
    )
    .unwrap();
    let r = vodctl(
        NOWHERE_API,
        NOWHERE_AMQP,
        &format!("start --file {}", path.display()),
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.err.contains("list[0].forward[0].extra: unknown field"),
        "{r:?}"
    );
}
