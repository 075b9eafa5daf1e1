//! Issue 7: the container image (Containerfile, scripts/image.sh).
//!
//! The image is built once per test process with `scripts/image.sh --no-cargo`
//! from the binaries of the tests' own profile (scripts/test.sh has just built
//! them; a second cargo here would wait on the lock `cargo test` holds). Offline,
//! its base comes from debootstrap the first time and from the cache under
//! ~/.cache/vodfleet afterwards. Then:
//! - the image's user is not root;
//! - a coordinator and a worker, each in a container of that image (host
//!   network, read-only root filesystem, no capabilities, the worker's cache on
//!   a root-owned 0777 directory as an emptyDir is), on this test's own vhost, Redis and
//!   nginx-rtmp, stream a task whose recording at nginx ffprobe reads;
//! - SIGTERM to the worker's container (what the kubelet sends) reaches the
//!   worker through tini: it drains, says so, and the container exits 0.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vodfleet_tests::fleet::{http_request, long_counter, FleetOptions};
use vodfleet_tests::probe::{packets, span, video};
use vodfleet_tests::rtmp::free_port;
use vodfleet_tests::{poll, unique, wait_until, Fleet, HttpServer, Recording, Worker};

/// The image the tests build and run (in the project's own podman store).
const TAG: &str = "localhost/vodfleet:test";
/// A cold build (debootstrap, the Debian packages layer) takes ~4 min here;
/// a cached one well under a minute.
const BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Container start (vfs copies the image's tree) plus the binary's own start.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `scripts/image/podman`: podman with the project's configuration and store.
fn podman() -> Command {
    Command::new(repo_root().join("scripts/image/podman"))
}

/// Runs `cmd` to completion within `timeout`; its output (stdout and stderr)
/// when it exits 0, else an error that carries the output.
fn run(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    let out = tempfile::NamedTempFile::new().map_err(|e| format!("tempfile: {e}"))?;
    let what = format!("{cmd:?}");
    // One open file for both streams: they share its offset.
    let file = out.reopen().map_err(|e| format!("reopen: {e}"))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(|e| format!("dup: {e}"))?)
        .stderr(file)
        .spawn()
        .map_err(|e| format!("spawn {what}: {e}"))?;
    let status = poll(timeout, || child.try_wait().ok().flatten());
    let text = fs::read_to_string(out.path()).unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(text),
        Some(s) => Err(format!("{what} exited with {s}:\n{text}")),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "{what} still running after {timeout:?}; killed:\n{text}"
            ))
        }
    }
}

/// The cargo profile of the binaries next to this test (`debug` or `release`),
/// or `$VODFLEET_IMAGE_PROFILE`.
fn profile() -> String {
    std::env::var("VODFLEET_IMAGE_PROFILE").unwrap_or_else(|_| {
        Worker::bin()
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .expect("target/<profile>/vodfleet-worker")
            .to_owned()
    })
}

/// Builds the image once per test process; panics with the script's output
/// when it fails.
fn image() -> &'static str {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        remove_orphans();
        let t = Instant::now();
        let out = run(
            Command::new("bash")
                .arg(repo_root().join("scripts/image.sh"))
                .args(["--no-cargo", "--profile", &profile(), "--tag", TAG])
                .current_dir(repo_root()),
            BUILD_TIMEOUT,
        )?;
        eprintln!("scripts/image.sh: {:?}\n{out}", t.elapsed());
        Ok(())
    });
    if let Err(e) = built {
        panic!("the image did not build:\n{e}");
    }
    TAG
}

/// Containers of earlier runs of these tests whose test process is gone (one
/// killed before its drop ran): removed, so they hold no ports or streams.
/// Their names are [`unique`]`("vf-image")`: `vf-image-<pid>x…`.
fn remove_orphans() {
    let Ok(names) = run(
        podman().args(["ps", "-a", "--format", "{{.Names}}"]),
        Duration::from_secs(60),
    ) else {
        return;
    };
    for name in names.lines().map(str::trim) {
        let pid = name
            .strip_prefix("vf-image-")
            .and_then(|rest| rest.split('x').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("removing container {name} left by test process {pid}");
                let _ = run(
                    podman().args(["rm", "-f", "-t", "0", name]),
                    Duration::from_secs(60),
                );
            }
        }
    }
}

/// One `podman run` in the foreground: its output in a file, printed when the
/// test fails; removed (`podman rm -f`) on drop.
struct Container {
    what: String,
    name: String,
    child: Child,
    _dir: tempfile::TempDir,
    log_path: PathBuf,
    http_port: u16,
    exit: Option<ExitStatus>,
}

impl Container {
    /// `podman run --rm --network host --read-only … IMAGE argv…` with `env`,
    /// `VODFLEET_HTTP_ADDR` on a free port of the host, and `extra` options.
    fn start(what: &str, env: &[(String, String)], extra: &[&str], argv: &[&str]) -> Container {
        let name = unique("vf-image");
        let dir = tempfile::Builder::new()
            .prefix("vodfleet-container-")
            .tempdir()
            .expect("tempdir");
        let log_path = dir.path().join("output.log");
        let log = fs::File::create(&log_path).expect("create output.log");
        let http_port = free_port();
        let mut cmd = podman();
        cmd.args(["run", "--rm", "--name", &name, "--network", "host"])
            // As the Helm chart runs it: read-only root filesystem (nothing
            // writable but what is mounted), no capabilities, no setuid.
            .args(["--read-only", "--read-only-tmpfs=false"])
            .args(["--cap-drop", "ALL", "--security-opt", "no-new-privileges"])
            .args(extra)
            .args(["-e", "VODFLEET_LOG=info"])
            .args(["-e", &format!("VODFLEET_HTTP_ADDR=127.0.0.1:{http_port}")]);
        for (k, v) in env {
            cmd.args(["-e", &format!("{k}={v}")]);
        }
        cmd.arg(image()).args(argv);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn podman run: {e}"));
        Container {
            what: what.to_owned(),
            name,
            child,
            _dir: dir,
            log_path,
            http_port,
            exit: None,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn report(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- {} (container {}) output, last 100 lines ---\n{}\n",
            self.what,
            self.name,
            lines[lines.len().saturating_sub(100)..].join("\n")
        )
    }

    fn has_exited(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit.is_some()
    }

    /// Until `GET /readyz` answers 200 on the container's port.
    fn wait_ready(&mut self, timeout: Duration) {
        let ok = poll(timeout, || {
            if self.has_exited() {
                return Some(false);
            }
            http_request(self.http_port, "GET", "/readyz", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
                .map(|_| true)
        });
        match ok {
            Some(true) => {}
            Some(false) => panic!(
                "{} exited before it was ready ({:?})\n{}",
                self.what,
                self.exit,
                self.report()
            ),
            None => panic!(
                "{} not ready within {timeout:?}\n{}",
                self.what,
                self.report()
            ),
        }
    }

    /// `podman kill --signal SIG NAME`: to the container's PID 1, as the
    /// kubelet does.
    fn signal(&self, sig: &str) {
        run(
            podman().args(["kill", "--signal", sig, &self.name]),
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.report()));
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if poll(timeout, || self.has_exited().then_some(())).is_none() {
            panic!(
                "{} still running {timeout:?} after SIGTERM\n{}",
                self.what,
                self.report()
            );
        }
        self.exit.expect("exited")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if !self.has_exited() {
            let _ = run(
                podman().args(["rm", "-f", "-t", "0", &self.name]),
                Duration::from_secs(60),
            );
            if poll(Duration::from_secs(10), || self.has_exited().then_some(())).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() || std::env::var_os("VODFLEET_TEST_KEEP").is_some() {
            eprint!("{}", self.report());
        }
    }
}

#[test]
fn image_runs_as_a_non_root_user() {
    let out = run(
        podman().args(["run", "--rm", "--network", "none", image(), "id", "-u"]),
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let uid: u32 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("`id -u` in the image printed {out:?}"));
    assert_ne!(uid, 0, "the image runs as root");
    assert_eq!(uid, 10001, "the documented uid");
}

#[test]
fn coordinator_and_worker_from_the_image_stream_and_drain_on_sigterm() {
    let image_ready = image();
    eprintln!("image {image_ready} ready");
    // The test's own vhost on the machine's RabbitMQ, Redis and nginx-rtmp; no
    // processes on the host.
    let fleet = Fleet::start(FleetOptions {
        coordinators: 0,
        workers: 0,
        ..FleetOptions::default()
    });
    let media = long_counter();
    let source = HttpServer::start(&media.path, Vec::new());

    let mut coordinator = Container::start(
        "coordinator (image)",
        &fleet.coordinator_env(),
        &[],
        &["vodfleet-coordinator"],
    );
    coordinator.wait_ready(READY_TIMEOUT);

    let mut worker_env = fleet.worker_env();
    worker_env.push(("VODFLEET_WORKER_ID".into(), unique("image-worker")));
    worker_env.push(("VODFLEET_DRAIN_TIMEOUT_MS".into(), "15000".into()));
    // The cache directory the image names (VODFLEET_CACHE_DIR) on a host
    // directory owned by root, mode 0777: what an emptyDir is, over a read-only
    // root filesystem. The image's default command (`vodfleet-worker run`).
    let cache = tempfile::Builder::new()
        .prefix("vodfleet-image-cache-")
        .tempdir()
        .expect("tempdir");
    fs::set_permissions(cache.path(), fs::Permissions::from_mode(0o777)).expect("chmod 0777");
    let cache_mount = format!("{}:/var/cache/vodfleet", cache.path().display());
    let mut worker = Container::start("worker (image)", &worker_env, &["-v", &cache_mount], &[]);
    worker.wait_ready(READY_TIMEOUT);

    let mut task = fleet.new_task(&[&media], 1);
    task.src = vec![source.url("/counter.mp4")];
    let producer = fleet.producer();
    let sent = Instant::now();
    producer.send(&task.start(0));
    fleet
        .rtmp
        .wait_publishing(task.key(), Duration::from_secs(30));
    eprintln!("start command → publishing at nginx: {:?}", sent.elapsed());
    assert!(
        source.request_count() >= 1,
        "the worker never fetched the source"
    );
    // The source went through the cache directory the image points at.
    let cached: Vec<String> = fs::read_dir(cache.path())
        .expect("read the cache directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        cached.iter().any(|n| n.starts_with("task-")),
        "nothing in /var/cache/vodfleet: {cached:?}\n{}",
        worker.report()
    );

    // At least 4 s of video at the server, as ffprobe reads it.
    let record = fleet.rtmp.record_path(task.key());
    wait_until("nginx records the stream", Duration::from_secs(10), || {
        record.exists()
    });
    let live_secs = poll(Duration::from_secs(30), || {
        let secs = span(&video(&packets(&record)));
        if secs >= 4.0 {
            Some(secs)
        } else {
            std::thread::sleep(Duration::from_millis(500));
            None
        }
    });
    assert!(
        live_secs.is_some(),
        "under 4 s of video recorded at nginx within 30 s\n{}{}",
        coordinator.report(),
        worker.report()
    );

    // SIGTERM to the container, as the kubelet sends it: tini passes it on,
    // the worker drains (releases the task) and exits 0.
    let t = Instant::now();
    worker.signal("TERM");
    let status = worker.wait_exit(Duration::from_secs(45));
    eprintln!(
        "SIGTERM → worker container exited: {:?} ({status})",
        t.elapsed()
    );
    assert!(
        status.success(),
        "the worker's container exited with {status}\n{}",
        worker.report()
    );
    let log = worker.log();
    assert!(
        log.contains("draining") && log.contains("drained"),
        "no drain in the worker's output\n{}",
        worker.report()
    );
    fleet
        .rtmp
        .wait_unpublished(task.key(), Duration::from_secs(15));

    let rec = Recording::read(&record);
    assert!(
        rec.video_secs() >= 4.0,
        "only {:.1} s of video: {}",
        rec.video_secs(),
        rec.summary()
    );
    assert!(!rec.audio.is_empty(), "no audio: {}", rec.summary());
    rec.assert_monotonic();
    rec.assert_decodes_cleanly();

    // The coordinator stops cleanly on SIGTERM too.
    coordinator.signal("TERM");
    let status = coordinator.wait_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "the coordinator's container exited with {status}\n{}",
        coordinator.report()
    );
    wait_until("the containers are gone", Duration::from_secs(30), || {
        run(
            podman().args(["ps", "-a", "--format", "{{.Names}}"]),
            Duration::from_secs(30),
        )
        .map(|names| !names.contains(&worker.name) && !names.contains(&coordinator.name))
        .unwrap_or(false)
    });
}
