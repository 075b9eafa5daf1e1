//! Other peers: for the publisher's interop tests, FFmpeg's own RTMP server
//! mode and stunnel (TLS) in front of nginx-rtmp with a CA the test makes; for
//! `s3://` sources, an S3 API (PyPI's `moto[server]`, `scripts/s3-server.sh`).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::media::ffmpeg;
use crate::rtmp::free_port;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA and a server certificate it signed for 127.0.0.1 and
/// localhost, made with the openssl CLI (EC P-256, valid two days).
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// Makes the CA and the server certificate in a new temporary directory.
    pub fn new() -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("vodfleet-ca-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(Command::new("openssl")
            .current_dir(d)
            .args(["req", "-x509"])
            .args(ec)
            .args(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"])
            .args(["-subj", "/CN=vodfleet test CA"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
        run(Command::new("openssl")
            .current_dir(d)
            .arg("req")
            .args(ec)
            .args([
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ]));
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        run(Command::new("openssl").current_dir(d).args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]));
        TestCa { dir }
    }

    /// The CA certificate (PEM), for `TlsRoots::new(Some(..))`.
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (PEM).
    pub fn server_pem(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let up = crate::poll(Duration::from_secs(10), || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what} exited early: {st}");
        }
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
    });
    assert!(up.is_some(), "{what} did not listen on {addr} within 10 s");
}

/// stunnel terminating TLS on a free port and forwarding to 127.0.0.1:`to_port`.
pub struct Stunnel {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Stunnel {
    /// Starts stunnel with the CA's server certificate; returns once it listens.
    pub fn start(ca: &TestCa, to_port: u16) -> Stunnel {
        let dir = tempfile::Builder::new()
            .prefix("vodfleet-stunnel-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let conf = format!(
            "foreground = yes\npid =\ndebug = 4\noutput = {log}\n\n[rtmps]\naccept = 127.0.0.1:{port}\n\
             connect = 127.0.0.1:{to_port}\ncert = {cert}\nkey = {key}\n",
            log = dir.path().join("stunnel.log").display(),
            cert = ca.server_pem().display(),
            key = ca.server_key().display(),
        );
        let conf_path = dir.path().join("stunnel.conf");
        std::fs::write(&conf_path, conf).expect("write stunnel.conf");
        let bin = std::env::var("VODFLEET_STUNNEL").unwrap_or_else(|_| "stunnel4".into());
        let mut child = Command::new(&bin)
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e} (is stunnel4 installed?)"));
        wait_listening(port, &mut child, "stunnel");
        Stunnel {
            port,
            child,
            _dir: dir,
        }
    }

    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ffmpeg -listen 1 -i rtmp://127.0.0.1:PORT/app/KEY -c copy -f flv OUT`: FFmpeg
/// as an RTMP server for one publisher, copying what it receives into `out`.
/// It cannot be probed by connecting (the first connection is the one it
/// serves): [`FfmpegListener::wait_listening`] reads the kernel's socket table.
pub struct FfmpegListener {
    port: u16,
    out: PathBuf,
    child: Child,
    stderr: PathBuf,
}

impl FfmpegListener {
    /// Starts ffmpeg listening for `app/key`, writing to `out`.
    pub fn start(app: &str, key: &str, out: &Path) -> FfmpegListener {
        let port = free_port();
        let stderr = out.with_extension("ffmpeg.log");
        let log = std::fs::File::create(&stderr).expect("create ffmpeg log");
        let child = Command::new(ffmpeg())
            .args([
                "-hide_banner",
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-listen",
                "1",
                "-i",
            ])
            .arg(format!("rtmp://127.0.0.1:{port}/{app}/{key}"))
            .args(["-c", "copy", "-f", "flv"])
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn ffmpeg: {e}"));
        FfmpegListener {
            port,
            out: out.to_path_buf(),
            child,
            stderr,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits (at most `timeout`) until the port is in LISTEN state, without
    /// connecting to it: from `/proc/net/tcp`.
    pub fn wait_listening(&self, timeout: Duration) {
        let want = format!(":{:04X} ", self.port);
        let listening = || {
            let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
            // Columns: sl local_address rem_address st …; LISTEN is st 0A.
            table.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && format!("{} ", f[1]).ends_with(&want) && f[3] == "0A"
            })
        };
        assert!(
            crate::poll(timeout, || listening().then_some(())).is_some(),
            "ffmpeg did not listen on port {} within {timeout:?}\n{}",
            self.port,
            self.log()
        );
    }

    /// Waits (at most `timeout`) for ffmpeg to finish writing and exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let st = crate::poll(timeout, || self.child.try_wait().ok().flatten());
        st.unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!(
                "ffmpeg did not exit within {timeout:?} after the publisher closed\n{}",
                self.log()
            )
        })
    }

    /// What ffmpeg printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The file it wrote.
    pub fn out(&self) -> &Path {
        &self.out
    }
}

impl Drop for FfmpegListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An S3 API on 127.0.0.1 (moto's server mode, fetched by
/// `scripts/s3-server.sh`), with objects the test puts there. It takes any
/// credentials; the signature itself is checked against AWS's own example in
/// the engine's unit tests.
pub struct S3Server {
    child: Child,
    port: u16,
}

impl S3Server {
    pub fn start() -> S3Server {
        let script = crate::ops::repo_root().join("scripts/s3-server.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(out.status.success(), "{} failed", script.display());
        let bin = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let up = crate::poll(Duration::from_secs(30), || {
            TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(200),
            )
            .ok()
        });
        assert!(up.is_some(), "moto_server did not listen on {port}");
        S3Server { child, port }
    }

    /// `http://127.0.0.1:PORT`, for `VODFLEET_S3_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` (if new) and stores `body` as `key` in it.
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let encoded: String = key
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        for (path, body) in [
            (format!("/{bucket}"), &b""[..]),
            (format!("/{bucket}/{encoded}"), body),
        ] {
            let r = crate::fleet::http_request(self.port, "PUT", &path, &[], body)
                .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
            assert!(r.status == 200, "PUT {path}: HTTP {}", r.status);
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An RTSP server on 127.0.0.1 for `rtsp://` sources: GStreamer's RtspServer
/// (`tests/rtsp-server.py`, run by Debian's `/usr/bin/python3`, whose gi
/// bindings are the Debian packages in scripts/lib.sh) serving H.264 320x240
/// 30 fps and AAC 44.1 kHz at `/test`, each client from its own time 0.
pub struct RtspServer {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

/// What [`RtspServer::start`] serves.
#[derive(Clone, Debug, Default)]
pub struct RtspOptions {
    /// Basic credentials every request must carry.
    pub user: Option<(String, String)>,
    /// End the stream (EOS, RTCP BYE) after this many seconds of media.
    pub seconds: Option<u32>,
}

impl RtspServer {
    /// Starts the server and returns once it answers an RTSP `OPTIONS`
    /// (bounded: 20 s).
    pub fn start(opts: &RtspOptions) -> RtspServer {
        let script = crate::ops::repo_root().join("tests/rtsp-server.py");
        // Not PATH's python3: the gi bindings are Debian's, for Debian's interpreter.
        let python = "/usr/bin/python3";
        let port = free_port();
        let log = tempfile::Builder::new()
            .prefix("vodfleet-rtsp-")
            .suffix(".log")
            .tempfile()
            .expect("rtsp log file");
        let mut cmd = Command::new(python);
        cmd.arg(&script).arg(port.to_string());
        if let Some((u, p)) = &opts.user {
            cmd.args(["--user", u, "--password", p]);
        }
        if let Some(s) = opts.seconds {
            cmd.args(["--seconds", &s.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("reopen rtsp log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {python} {}: {e}", script.display()));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let up = crate::poll(Duration::from_secs(20), || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "rtsp-server.py exited early: {st}\n{}",
                    std::fs::read_to_string(log.path()).unwrap_or_default()
                );
            }
            rtsp_options(addr).then_some(())
        });
        assert!(
            up.is_some(),
            "rtsp-server.py did not answer on {addr} within 20 s"
        );
        RtspServer { child, port, log }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtsp://[USERINFO@]127.0.0.1:PORT/test`.
    pub fn url(&self, userinfo: Option<&str>) -> String {
        let at = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        format!("rtsp://{at}127.0.0.1:{}/test", self.port)
    }

    /// What the server printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

/// Whether an RTSP server at `addr` answers `OPTIONS` with an RTSP status line.
fn rtsp_options(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let req = format!("OPTIONS rtsp://{addr}/test RTSP/1.0\r\nCSeq: 1\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"RTSP/1.0 ")
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
