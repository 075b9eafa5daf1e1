//! A Prometheus server of the test's own, and its HTTP API.

use super::tools;
use crate::fleet::http_request;
use crate::poll;
use crate::rtmp::free_port;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Percent-encodes a query-string value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A Prometheus server of the test's own.
pub struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (YAML text; `rule_files` may name files
    /// written into [`Prometheus::dir`] beforehand via `files`) and waits until
    /// it is ready.
    pub fn start(config: &str, files: &[(&str, String)]) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("vodfleet-prometheus-")
            .tempdir()
            .expect("tempdir");
        for (name, text) in files {
            fs::write(dir.path().join(name), text).expect("write a Prometheus file");
        }
        let cfg = dir.path().join("prometheus.yml");
        fs::write(&cfg, config).expect("write prometheus.yml");
        let port = free_port();
        let log = fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(tools().join("prometheus"))
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus { child, port, dir };
        let ready = poll(Duration::from_secs(30), || {
            if let Ok(Some(_)) = p.child.try_wait() {
                return Some(false);
            }
            http_request(p.port, "GET", "/-/ready", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
                .map(|_| true)
        });
        assert_eq!(
            ready,
            Some(true),
            "prometheus not ready within 30 s:\n{}",
            p.log()
        );
        p
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn api(&self, path: &str) -> Value {
        let r = http_request(self.port, "GET", path, &[], b"")
            .unwrap_or_else(|e| panic!("prometheus GET {path}: {e}"));
        let v: Value = serde_json::from_str(&r.text())
            .unwrap_or_else(|e| panic!("prometheus GET {path}: not JSON ({e}): {}", r.text()));
        assert_eq!(
            v["status"], "success",
            "prometheus GET {path}: {} {v}",
            r.status
        );
        v["data"].clone()
    }

    /// `/api/v1/query`: the result vector (an instant query at now).
    pub fn query(&self, expr: &str) -> Vec<Value> {
        let d = self.api(&format!("/api/v1/query?query={}", urlencode(expr)));
        d["result"].as_array().cloned().unwrap_or_default()
    }

    /// `/api/v1/alerts`: every pending or firing alert.
    pub fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `/api/v1/targets`: active targets.
    pub fn targets(&self) -> Vec<Value> {
        self.api("/api/v1/targets")["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if crate::keep_artifacts() {
            eprintln!("--- prometheus log ---\n{}", self.log());
        }
    }
}
