//! A real nginx with the RTMP module, one per test, on its own ports and directory.
//!
//! What it records is the ground truth of the end-to-end tests: `record/KEY.flv`
//! holds the tags the server received for stream `KEY`, `rtmp-access.log` has one
//! line per RTMP session (written when the session ends), and `/stat` on the HTTP
//! port says which streams are being published right now.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TEMPLATE: &str = include_str!("../../scripts/nginx-rtmp.conf.template");

/// How long nginx gets to open its ports.
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RtmpServer {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    rtmp_port: u16,
    http_port: u16,
    child: Child,
}

impl RtmpServer {
    /// Starts nginx and returns once its HTTP stat endpoint answers (both listeners
    /// are opened together, before any request is served). Retries with new ports
    /// if another process took one of them in the meantime.
    pub fn start() -> RtmpServer {
        let mut errors = Vec::new();
        for _ in 0..5 {
            match Self::try_start() {
                Ok(s) => return s,
                Err(e) => errors.push(e),
            }
        }
        panic!("nginx-rtmp did not start:\n{}", errors.join("\n---\n"));
    }

    fn try_start() -> Result<RtmpServer, String> {
        let dir = tempfile::Builder::new()
            .prefix("vodfleet-rtmp-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let path = dir.path().to_path_buf();
        for sub in ["record", "tmp"] {
            fs::create_dir_all(path.join(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
        }
        let rtmp_port = free_port();
        let mut http_port = free_port();
        while http_port == rtmp_port {
            http_port = free_port();
        }
        let conf = TEMPLATE
            .replace("@@DIR@@", path.to_str().expect("utf-8 temp path"))
            .replace("@@RTMP_PORT@@", &rtmp_port.to_string())
            .replace("@@HTTP_PORT@@", &http_port.to_string())
            .replace("@@RECORD@@", "all");
        if let Some(l) = conf
            .lines()
            .find(|l| !l.trim_start().starts_with('#') && l.contains("@@"))
        {
            panic!("unfilled placeholder in nginx-rtmp.conf.template: {l}");
        }
        let conf_path = path.join("nginx.conf");
        fs::write(&conf_path, conf).map_err(|e| format!("write nginx.conf: {e}"))?;
        let stderr = fs::File::create(path.join("nginx.stderr"))
            .map_err(|e| format!("create nginx.stderr: {e}"))?;
        let nginx = std::env::var("VODFLEET_NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into());
        let mut prefix = path.clone().into_os_string();
        prefix.push("/");
        let child = Command::new(&nginx)
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(path.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                format!("spawn {nginx}: {e} (is nginx with libnginx-mod-rtmp installed?)")
            })?;
        let mut server = RtmpServer {
            dir: Some(dir),
            path,
            rtmp_port,
            http_port,
            child,
        };
        let up = crate::poll(START_TIMEOUT, || {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Some(Err(format!("nginx exited early: {status}")));
            }
            server.try_stat().ok().map(|_| Ok(()))
        });
        match up {
            Some(Ok(())) => Ok(server),
            other => {
                let why = match other {
                    Some(Err(e)) => e,
                    _ => format!("stat port {http_port} did not answer within {START_TIMEOUT:?}"),
                };
                Err(format!("{why}\n{}", server.logs()))
            }
        }
    }

    pub fn rtmp_port(&self) -> u16 {
        self.rtmp_port
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// `rtmp://127.0.0.1:PORT/live/KEY`
    pub fn url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.rtmp_port)
    }

    /// `rtmp://127.0.0.1:PORT/APP/KEY` (the template also has `refuse`, whose
    /// `on_publish` hook says no).
    pub fn app_url(&self, app: &str, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app}/{key}", self.rtmp_port)
    }

    /// Where nginx records stream `key` (`record all`, `record_unique off`).
    pub fn record_path(&self, key: &str) -> PathBuf {
        self.path.join("record").join(format!("{key}.flv"))
    }

    pub fn access_log(&self) -> String {
        fs::read_to_string(self.path.join("rtmp-access.log")).unwrap_or_default()
    }

    /// Number of finished RTMP sessions that published stream `key` (nginx logs a
    /// session when it ends, so wait for [`Self::wait_unpublished`] first).
    pub fn publish_sessions(&self, key: &str) -> usize {
        let needle = format!(" PUBLISH \"live\" \"{key}\" ");
        self.access_log()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// The RTMP module's statistics (XML) from `GET /stat`.
    pub fn stat(&self) -> String {
        self.try_stat()
            .unwrap_or_else(|e| panic!("GET /stat on nginx-rtmp: {e}\n{}", self.logs()))
    }

    fn try_stat(&self) -> Result<String, String> {
        http_get(self.http_port, "/stat")
    }

    /// Whether stream `key` currently has a publisher, per `/stat`.
    pub fn is_publishing(&self, key: &str) -> bool {
        stat_streams(&self.stat())
            .iter()
            .any(|s| stream_name(s) == Some(key) && s.contains("<publishing/>"))
    }

    /// Whether nginx knows stream `key` at all (a publisher or a player is attached).
    pub fn has_stream(&self, key: &str) -> bool {
        stat_streams(&self.stat())
            .iter()
            .any(|s| stream_name(s) == Some(key))
    }

    /// Waits until someone publishes `key`; panics after `timeout`.
    pub fn wait_publishing(&self, key: &str, timeout: Duration) {
        crate::wait_until(&format!("stream {key} published"), timeout, || {
            self.is_publishing(key)
        });
    }

    /// Waits until nginx has no stream `key` any more: every session on it has ended,
    /// so the access log has its lines and the recording is closed.
    pub fn wait_unpublished(&self, key: &str, timeout: Duration) {
        crate::wait_until(&format!("stream {key} gone from /stat"), timeout, || {
            !self.has_stream(key)
        });
    }

    /// For a publisher that has gone (e.g. the worker exited): waits until nginx has
    /// closed stream `key` and logged at least one publish session for it, then
    /// returns how many it logged. Returns 0 if none shows up within `timeout`.
    /// Asserts that nginx logged exactly one finished publish session for `key`:
    /// the whole run reached the server without a reconnect.
    pub fn assert_one_session(&self, key: &str) {
        assert_eq!(
            self.finished_publish_sessions(key, Duration::from_secs(5)),
            1,
            "publish sessions logged by nginx for the stream (one, no reconnect)\n{}",
            self.access_log()
        );
    }

    pub fn finished_publish_sessions(&self, key: &str, timeout: Duration) -> usize {
        self.wait_unpublished(key, timeout);
        crate::poll(timeout, || {
            let n = self.publish_sessions(key);
            (n > 0).then_some(n)
        })
        .unwrap_or(0)
    }

    /// nginx's own logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for f in ["nginx.stderr", "error.log", "rtmp-access.log"] {
            let text = fs::read_to_string(self.path.join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {} (last {} lines)\n", f, tail.len()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for RtmpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if crate::keep_artifacts() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!(
                    "nginx-rtmp directory kept for inspection: {}\n{}",
                    kept.display(),
                    self.logs()
                );
            }
        }
    }
}

/// A port that was free a moment ago (bound and released by us).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A minimal HTTP/1.0 GET on 127.0.0.1 (the server closes after the response).
pub fn http_get(port: u16, path: &str) -> Result<String, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header in {text:?}"))?;
    let status = head.lines().next().unwrap_or("");
    if !status.contains(" 200 ") {
        return Err(format!("{path}: {status}"));
    }
    Ok(body.to_owned())
}

/// The `<stream>…</stream>` elements of the stat XML.
fn stat_streams(xml: &str) -> Vec<&str> {
    xml.split("<stream>")
        .skip(1)
        .map(|s| s.split("</stream>").next().unwrap_or(s))
        .collect()
}

/// The stream's own `<name>` (the first one: client elements come after it).
fn stream_name(stream: &str) -> Option<&str> {
    let start = stream.find("<name>")? + "<name>".len();
    let end = stream[start..].find("</name>")? + start;
    Some(&stream[start..end])
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_stat_streams() {
        let xml = "<rtmp><server><application><name>live</name><live>\
            <stream><name>k1</name><time>1</time><client><id>3</id></client><publishing/><active/></stream>\
            <stream><name>k2</name><time>1</time></stream>\
            <nclients>1</nclients></live></application></server></rtmp>";
        let s = super::stat_streams(xml);
        assert_eq!(s.len(), 2);
        assert_eq!(super::stream_name(s[0]), Some("k1"));
        assert!(s[0].contains("<publishing/>"));
        assert_eq!(super::stream_name(s[1]), Some("k2"));
        assert!(!s[1].contains("<publishing/>"));
    }
}
