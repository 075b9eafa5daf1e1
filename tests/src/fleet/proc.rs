//! One fleet process ([`Proc`]): output in a file, an HTTP port, signals,
//! readiness and `/metrics`.

use super::{http_request, keep_or_drop, tail, HttpReply};
use crate::rtmp::free_port;
use crate::{keep_artifacts, poll};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// One fleet process: its output (stdout and stderr together) in a file, printed
/// when the test fails; an HTTP port of its own (`VODFLEET_HTTP_ADDR`).
pub struct Proc {
    what: String,
    child: Child,
    dir: Option<tempfile::TempDir>,
    log_path: PathBuf,
    pub(super) http_port: u16,
    exit: Option<ExitStatus>,
    started: Instant,
}

impl Proc {
    pub(super) fn spawn(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_metrics() {
        let text = "# HELP x y\nvodfleet_a 2\nvodfleet_a{k=\"1\"} 3\nvodfleet_ab 100\n";
        assert_eq!(metric_sum(text, "vodfleet_a"), Some(5.0));
        assert_eq!(metric_sum(text, "vodfleet_b"), None);
    }
}
