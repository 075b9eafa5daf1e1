//! Runs the built `vodfleet-worker` binary on one task and watches it:
//! `vodfleet-worker play TASK.json --progress json`, stdout parsed as one JSON
//! event per line, stderr kept in a file and printed when a test fails.

use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Worker;

impl Worker {
    /// The worker binary: `$VODFLEET_WORKER_BIN`, else `vodfleet-worker` in the
    /// target profile directory this test binary was built into.
    pub fn bin() -> PathBuf {
        if let Some(p) = std::env::var_os("VODFLEET_WORKER_BIN") {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "VODFLEET_WORKER_BIN={} is not a file",
                p.display()
            );
            return p;
        }
        // target/<profile>/deps/<test-binary>  →  target/<profile>/vodfleet-worker
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test binary lives in target/<profile>/deps");
        let bin = profile_dir.join(format!("vodfleet-worker{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.is_file(),
            "{} not found: build the binaries first with `cargo build --bins` \
             (same profile as the tests), or set VODFLEET_WORKER_BIN",
            bin.display()
        );
        warn_if_stale(&bin);
        bin
    }

    /// Starts `vodfleet-worker play TASK.json --progress json` on `task` (one
    /// entry of a seed-001 `list[]`). The environment allows private-network
    /// sources, points `VODFLEET_MEDIA_ROOT` at the test media directory and
    /// `VODFLEET_CACHE_DIR` at a fresh directory; `env` comes last and wins.
    pub fn play(task: Value, env: &[(&str, &str)]) -> Running {
        let text = serde_json::to_string_pretty(&task).expect("task to JSON");
        Self::play_raw(&text, env)
    }

    /// Like [`Worker::play`], with the variables named in `unset` removed from
    /// the worker's environment (the defaults above and the test's own
    /// environment included) before `env` is applied.
    pub fn play_unset(task: Value, unset: &[&str], env: &[(&str, &str)]) -> Running {
        let text = serde_json::to_string_pretty(&task).expect("task to JSON");
        Self::spawn(&text, unset, env)
    }

    /// Like [`Worker::play`] with the task file's exact contents.
    pub fn play_raw(task_file: &str, env: &[(&str, &str)]) -> Running {
        Self::spawn(task_file, &[], env)
    }

    /// Several tasks side by side in one worker process (`play A.json B.json …`),
    /// as a worker runs them: they share its engine and its source cache.
    pub fn play_many(tasks: &[Value], env: &[(&str, &str)]) -> Running {
        let files: Vec<String> = tasks
            .iter()
            .map(|t| serde_json::to_string_pretty(t).expect("task to JSON"))
            .collect();
        Self::spawn_files(&files, &[], env)
    }

    fn spawn(task_file: &str, unset: &[&str], env: &[(&str, &str)]) -> Running {
        Self::spawn_files(&[task_file.to_owned()], unset, env)
    }

    fn spawn_files(task_files: &[String], unset: &[&str], env: &[(&str, &str)]) -> Running {
        let dir = tempfile::Builder::new()
            .prefix("vodfleet-worker-")
            .tempdir()
            .expect("tempdir");
        let task_paths: Vec<PathBuf> = task_files
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let name = if i == 0 {
                    "task.json".to_owned()
                } else {
                    format!("task-{i}.json")
                };
                let p = dir.path().join(name);
                fs::write(&p, body).expect("write the task file");
                p
            })
            .collect();
        let cache = dir.path().join("cache");
        fs::create_dir_all(&cache).expect("mkdir cache");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = fs::File::create(&stderr_path).expect("create stderr.log");
        let bin = Worker::bin();
        let mut cmd = Command::new(&bin);
        cmd.arg("play")
            .args(&task_paths)
            .args(["--progress", "json"])
            .env("VODFLEET_ALLOW_PRIVATE_NETWORKS", "true")
            .env("VODFLEET_MEDIA_ROOT", crate::media::media_dir())
            .env("VODFLEET_CACHE_DIR", &cache)
            .env("VODFLEET_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for k in unset {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let out = Arc::new(Mutex::new(Output::default()));
        let o = out.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut o = o.lock().unwrap_or_else(|e| e.into_inner());
                o.raw.push_str(&line);
                o.raw.push('\n');
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v.is_object() => o.events.push((started.elapsed(), v)),
                    _ => o.non_json.push(line),
                }
            }
        });
        Running {
            child,
            dir: Some(dir),
            stderr_path,
            out,
            reader: Some(reader),
            exit: None,
            started,
        }
    }
}

/// `cargo test` does not rebuild another package's binary: say so (once) when the
/// worker's or proto's sources are newer than the binary under test.
fn warn_if_stale(bin: &Path) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(built) = fs::metadata(bin).and_then(|m| m.modified()) else {
            return;
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut stack = vec![root.join("worker/src"), root.join("proto/src")];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t > built) {
                    eprintln!(
                        "warning: {} is newer than {}: run `cargo build --bins` to test the current code",
                        p.display(),
                        bin.display()
                    );
                    return;
                }
            }
        }
    });
}

#[derive(Default)]
struct Output {
    raw: String,
    /// Each event with the time since spawn at which its line was read.
    events: Vec<(Duration, Value)>,
    non_json: Vec<String>,
}

/// A running (or finished) worker process. Dropping it kills the process; if the
/// test is panicking, stdout and stderr are printed and the directory is kept.
pub struct Running {
    child: Child,
    dir: Option<tempfile::TempDir>,
    stderr_path: PathBuf,
    out: Arc<Mutex<Output>>,
    reader: Option<JoinHandle<()>>,
    exit: Option<ExitStatus>,
    started: Instant,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When the process was spawned.
    pub fn started(&self) -> Instant {
        self.started
    }

    fn out(&self) -> std::sync::MutexGuard<'_, Output> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the process to exit (and for its stdout to be fully read).
    /// Panics, after killing it, if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.exit {
            return s;
        }
        let status = crate::poll(timeout, || self.child.try_wait().ok().flatten());
        let Some(status) = status else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "vodfleet-worker still running after {timeout:?}; killed it.\n{}",
                self.report()
            );
        };
        self.exit = Some(status);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        status
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        if self.exit.is_some() {
            return true;
        }
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Sends a signal (e.g. `"INT"`, `"TERM"`) with the `kill` command.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.child.id());
    }

    /// Every JSON event read from stdout so far, in order.
    pub fn events(&self) -> Vec<Value> {
        self.out().events.iter().map(|(_, v)| v.clone()).collect()
    }

    /// Events with the time (since spawn) at which each line was read.
    pub fn timed_events(&self) -> Vec<(Duration, Value)> {
        self.out().events.clone()
    }

    /// Events whose `"event"` is `name`.
    pub fn events_named(&self, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }

    /// Stdout lines that were not JSON objects (the contract says there are none).
    pub fn non_json_lines(&self) -> Vec<String> {
        self.out().non_json.clone()
    }

    /// Stdout so far, verbatim.
    pub fn stdout(&self) -> String {
        self.out().raw.clone()
    }

    /// Stderr so far (the process writes it to a file).
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits for the first event (already seen or future) matching `pred`;
    /// panics after `timeout`.
    pub fn wait_event(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        crate::poll(timeout, || {
            self.out()
                .events
                .iter()
                .map(|(_, v)| v)
                .find(|v| pred(v))
                .cloned()
        })
        .unwrap_or_else(|| {
            panic!(
                "no matching worker event within {timeout:?}.\n{}",
                self.report()
            )
        })
    }

    /// Panics if `secret` occurs anywhere in stdout or stderr.
    pub fn assert_not_printed(&self, secret: &str) {
        let (out, err) = (self.stdout(), self.stderr());
        for (name, text) in [("stdout", &out), ("stderr", &err)] {
            if let Some(i) = text.find(secret) {
                let from = text[..i].rfind('\n').map_or(0, |p| p + 1);
                let to = text[i..].find('\n').map_or(text.len(), |p| i + p);
                panic!("secret {secret:?} printed on {name}: {}", &text[from..to]);
            }
        }
    }

    /// The task's directory (task.json, stderr.log, cache/).
    pub fn dir(&self) -> &Path {
        self.stderr_path.parent().expect("stderr.log has a parent")
    }

    /// Stdout and stderr, for failure messages.
    pub fn report(&self) -> String {
        let err = self.stderr();
        let tail: Vec<&str> = err.lines().rev().take(200).collect();
        let mut s = format!(
            "--- worker stdout ---\n{}--- worker stderr (last {} lines) ---\n",
            self.stdout(),
            tail.len()
        );
        for l in tail.into_iter().rev() {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if crate::keep_artifacts() {
            let report = self.report();
            let kept = self.dir.take().map(|d| d.keep());
            eprintln!(
                "{report}--- worker directory kept: {} ---",
                kept.map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
    }
}

/// Whether `e` is a `destination` event for `index` in `state`.
pub fn is_destination(e: &Value, index: u64, state: &str) -> bool {
    e["event"] == "destination" && e["index"] == index && e["state"] == state
}

/// Plays `items` (one playlist, once) in copy mode into one stream of a new
/// nginx-rtmp and judges it: the worker exits 0 in copy mode, no item failed,
/// one publish session, video and audio each `secs` long (±0.3 s), DTS never
/// going back, a recording that decodes cleanly. Returns the server (it keeps
/// the recording while it lives), the recording and the worker's report.
pub fn play_copy(
    items: &[&crate::Media],
    secs: f64,
) -> (crate::RtmpServer, crate::Recording, String) {
    let rtmp = crate::RtmpServer::start();
    let key = crate::unique("copy");
    let task = serde_json::json!({
        "id": crate::unique("copy"),
        "src": items.iter().map(|m| serde_json::json!({"url": m.vod_url()})).collect::<Vec<_>>(),
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"}
    });
    let mut w = Worker::play(task, &[]);
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    assert!(
        w.events_named("item_failed").is_empty(),
        "no item failed: {}",
        w.report()
    );
    let started = w.events_named("task_started");
    assert_eq!(started[0]["mode"], "copy", "{}", w.report());
    rtmp.assert_one_session(&key);
    let rec = crate::Recording::read(&rtmp.record_path(&key));
    for (what, got) in [
        ("video", rec.video_secs()),
        ("audio", crate::probe::span(&rec.audio)),
    ] {
        assert!(
            (got - secs).abs() < 0.3,
            "{what} {got:.3} s of {secs}: {}",
            rec.summary()
        );
    }
    rec.assert_monotonic();
    rec.assert_decodes_cleanly();
    (rtmp, rec, w.report())
}
