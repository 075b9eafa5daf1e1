//! A running `vodfleet-coordinator` ([`Coordinator`]) and its signed API calls.

use super::{env_value, http_request, signed_headers, temp_dir, HttpReply, Proc};
use serde_json::Value;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use vodfleet_proto::sign;

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

    /// `vodfleet_commands_total` with `result="RESULT"`, over every `cmd`.
    pub fn commands_counted(&self, result: &str) -> u64 {
        let label = format!("result=\"{result}\"");
        self.metrics()
            .lines()
            .filter(|l| l.starts_with("vodfleet_commands_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// The API's base URL (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
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
