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

mod callbacks;
mod coordinator;
mod counter;
mod http;
mod nginx;
mod proc;
mod producer;
mod proxy;
mod rabbit;
pub mod rabbit_cluster;
mod redis;
pub mod redis_cluster;
pub mod seed;
mod task;
mod worker;

pub use callbacks::{Answer, CallbackReceiver, Post};
pub use coordinator::{task_state, task_worker, Coordinator};
pub use counter::{
    counter_media, counter_mp4, counter_runs, frame_of, read_counters, tag_of, tag_runs, FRAME_BITS,
};
pub use http::{http_request, signed_headers, signed_headers_at, verify_signed, HttpReply};
pub use nginx::{
    publish_conflicts, publishers, stat_publishers, take_recording, PublisherWatch, Sample, Session,
};
pub use proc::{metric_sum, Proc};
pub use producer::{DeadLetter, Producer};
pub use proxy::CutProxy;
pub use rabbit::{RabbitNode, Vhost};
pub use redis::RedisServer;
pub use task::{assert_continues, long_counter, tagged_counter, Live, Task, FPS, GOP};
pub use worker::FleetWorker;

use crate::rtmp::RtmpServer;
use crate::{keep_artifacts, poll};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Run on a Redis Cluster of six nodes instead of one Redis.
    pub redis_cluster: bool,
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
            redis_cluster: false,
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
    /// On a Redis Cluster ([`redis_cluster::RedisCluster`]).
    pub fn redis_cluster(mut self) -> Self {
        self.redis_cluster = true;
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
    pub redis: redis_cluster::FleetRedis,
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
            redis: if opts.redis_cluster {
                redis_cluster::FleetRedis::Cluster(redis_cluster::RedisCluster::start())
            } else {
                redis_cluster::FleetRedis::Single(RedisServer::start())
            },
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

    /// Queue → (messages ready, messages unacknowledged), as the broker reports them.
    pub fn queue_counts(&self) -> BTreeMap<String, (u64, u64)> {
        match &self.broker {
            Broker::Shared(v) => v.queue_counts(),
            Broker::Private(n) => n.queue_counts(),
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
        let mut e = self.redis.env();
        e.push((
            "VODFLEET_API_KEYS".into(),
            format!("{}:{}", API_KEY.0, API_KEY.1),
        ));
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

    /// A worker's: its slots, and the coordinators' API for heartbeats while
    /// RabbitMQ is away, as the Helm chart sets them.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        let mut e = vec![("VODFLEET_WORKER_SLOTS".into(), self.opts.slots.to_string())];
        if !self.coordinators.is_empty() {
            let urls: Vec<String> = self.coordinators.iter().map(|c| c.base_url()).collect();
            e.push(("VODFLEET_COORDINATOR_URL".into(), urls.join(",")));
            e.push((
                "VODFLEET_API_KEY".into(),
                format!("{}:{}", API_KEY.0, API_KEY.1),
            ));
        }
        e.extend(self.common_env());
        e
    }

    /// Starts one more worker and waits until it is ready.
    pub fn add_worker(&mut self) -> &mut FleetWorker {
        self.add_worker_with(&[])
    }

    /// Like [`Fleet::add_worker`] with extra variables that win over the
    /// fleet's (e.g. a `VODFLEET_AMQP_URL` through a [`CutProxy`]).
    pub fn add_worker_with(&mut self, extra: &[(&str, &str)]) -> &mut FleetWorker {
        let mut env = self.worker_env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut w = FleetWorker::start(&env);
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

/// A JSON body as bytes.
pub fn body_of(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON")
}
