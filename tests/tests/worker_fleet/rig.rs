//! What each test runs against (a vhost, nginx, the fake coordinator, a worker)
//! and the small steps the tests share.

use super::coordinator::FakeCoordinator;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use vodfleet_proto::TaskSpec;
use vodfleet_tests::{poll, FleetWorker, Media, RtmpServer, Vhost};

pub const TTL_MS: u64 = 3000;
pub const HEARTBEAT_MS: u64 = 1000;

pub fn ctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("run rabbitmqctl (is RabbitMQ installed and running?)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `vodfleet-worker run` with `slots`, a 3 s lease and a 1 s heartbeat.
pub fn worker(vhost: &Vhost, slots: u32) -> FleetWorker {
    let env = [
        ("VODFLEET_AMQP_URL", vhost.url()),
        ("VODFLEET_WORKER_SLOTS", slots.to_string()),
        ("VODFLEET_LEASE_TTL_MS", TTL_MS.to_string()),
        ("VODFLEET_HEARTBEAT_MS", HEARTBEAT_MS.to_string()),
        ("VODFLEET_DRAIN_TIMEOUT_MS", "10000".to_string()),
    ];
    FleetWorker::start(&env.map(|(k, v)| (k.to_string(), v)))
}

/// The value of one series (name and labels) on a process's `/metrics`.
pub fn metric(w: &FleetWorker, series: &str) -> f64 {
    w.metric(series)
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{}", w.metrics()))
}

/// What each test runs against: a vhost, an nginx, the fake coordinator and a
/// worker of its own. (Bind the fields in this order: the worker goes first.)
pub struct Rig {
    pub vhost: Vhost,
    pub rtmp: RtmpServer,
    pub c: FakeCoordinator,
    pub w: FleetWorker,
}

impl Rig {
    pub fn start(slots: u32) -> Rig {
        let vhost = Vhost::new();
        let rtmp = RtmpServer::start();
        let c = FakeCoordinator::start(&vhost);
        let w = worker(&vhost, slots);
        Rig { vhost, rtmp, c, w }
    }
}

/// SIGTERM: the worker exits 0 within the drain timeout; returns how long it took.
pub fn terminate(w: &mut FleetWorker) -> Duration {
    w.signal("TERM");
    let asked = Instant::now();
    let status = w.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", w.log());
    asked.elapsed()
}

pub fn spec(v: Value) -> TaskSpec {
    let (spec, _warnings) =
        vodfleet_proto::parse_task_entry(&serde_json::to_vec(&v).unwrap()).expect("valid task");
    spec
}

pub fn looping_task(id: &str, media: &Media, forwards: &[String]) -> TaskSpec {
    spec(json!({
        "id": id,
        "src": [{"url": media.vod_url()}],
        "forward": forwards.iter().map(|u| json!({"url": u})).collect::<Vec<_>>(),
        "extendParam": {"loop": "0"}
    }))
}

/// Waits until nginx has no publisher on `key`; returns when that was seen.
pub fn wait_gone(rtmp: &RtmpServer, key: &str, timeout: Duration) -> Instant {
    poll(timeout, || (!rtmp.is_publishing(key)).then(Instant::now))
        .unwrap_or_else(|| panic!("stream {key} still published after {timeout:?}"))
}
