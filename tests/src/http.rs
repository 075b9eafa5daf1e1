//! Real local servers with scripted misbehaviour: an HTTP file server whose
//! answers follow a per-request script, a TCP "dropper" that closes every
//! connection it accepts, a "black hole" that accepts and never answers, and a
//! closed port. Each records what it saw so tests can assert counts and timing.
//! The file server may also pace its bodies ([`HttpServer::throttled`]) and
//! counts the body bytes it has written so far, live.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the server answers one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// 200 with the file, or 206 for `Range: bytes=N-` / `bytes=N-M`.
    Ok,
    /// This status with a short text body.
    Status(u16),
    /// Reads the request, sends nothing, keeps the connection open until the
    /// server is dropped.
    Stall,
    /// The headers of [`Behavior::Ok`] (full Content-Length), half of the body,
    /// then closes the connection. [`Request::body_sent`] says how much of the
    /// body went out.
    DropMidBody,
    /// Like [`Behavior::DropMidBody`], but the connection then stays open
    /// without another byte until the server is dropped (a stalled origin).
    StallMidBody,
    /// `302 Found` with this `Location` (sent verbatim: an absolute URL, or a
    /// path the client resolves against the request's URL) and an empty body.
    Redirect(String),
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    /// 0-based arrival order.
    pub n: usize,
    /// When the request head had been read.
    pub at: Instant,
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    /// The `Range` header's value, if any.
    pub range: Option<String>,
    pub behavior: Behavior,
    /// Body bytes the server wrote to the connection for this request (the
    /// socket accepted them; on loopback they reach the client before the close
    /// that follows). Final once the response is complete, which is before the
    /// client can see the connection end.
    pub body_sent: usize,
}

struct Shared {
    body: Vec<u8>,
    /// Serve the files under this directory by path instead of `body`.
    root: Option<std::path::PathBuf>,
    content_type: String,
    script: Vec<Behavior>,
    after: Behavior,
    requests: Mutex<Vec<Request>>,
    conns: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
    /// Body bytes per second of each response, when throttled.
    rate: Option<u64>,
    /// Body bytes written so far, all requests together.
    served: AtomicU64,
    /// When the first body byte was written.
    first_byte: Mutex<Option<Instant>>,
}

/// A file server on 127.0.0.1 answering every path with the same file, request
/// `i` getting `script[i]` (then `after`). One request per connection
/// (`Connection: close`).
pub struct HttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves `file`; requests past the script get [`Behavior::Ok`].
    pub fn start(file: &Path, script: Vec<Behavior>) -> HttpServer {
        Self::start_with(file, script, Behavior::Ok)
    }

    /// Serves `file`; requests past the script get `after`.
    pub fn start_with(file: &Path, script: Vec<Behavior>, after: Behavior) -> HttpServer {
        Self::spawn(file, script, after, None)
    }

    /// Serves `file` as [`HttpServer::start`] does, each response's body paced
    /// at `bytes_per_sec` (a slow origin, or one just faster than playback).
    pub fn throttled(file: &Path, script: Vec<Behavior>, bytes_per_sec: u64) -> HttpServer {
        Self::spawn(file, script, Behavior::Ok, Some(bytes_per_sec.max(1)))
    }

    /// Serves the files under `root` by their path (404 for others), each
    /// response's body paced at `bytes_per_sec` when given; no script.
    pub fn directory(root: &Path, bytes_per_sec: Option<u64>) -> HttpServer {
        let root = Some(root.to_path_buf());
        Self::spawn_with(Vec::new(), "", root, vec![], Behavior::Ok, bytes_per_sec)
    }

    fn spawn(file: &Path, script: Vec<Behavior>, after: Behavior, rate: Option<u64>) -> HttpServer {
        let body = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        Self::spawn_with(body, content_type(file), None, script, after, rate)
    }

    fn spawn_with(
        body: Vec<u8>,
        content_type: &str,
        root: Option<std::path::PathBuf>,
        script: Vec<Behavior>,
        after: Behavior,
        rate: Option<u64>,
    ) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            body,
            root,
            content_type: content_type.into(),
            script,
            after,
            requests: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            rate,
            served: AtomicU64::new(0),
            first_byte: Mutex::new(None),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(c) = conn.try_clone() {
                    lock(&s.conns).push(c);
                }
                let s = s.clone();
                std::thread::spawn(move || serve(&s, conn));
            }
        });
        HttpServer {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` + `path_and_query` (which starts with `/`).
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{path_and_query}", self.addr.port())
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// The served file's length.
    pub fn body_len(&self) -> usize {
        self.shared.body.len()
    }

    /// Body bytes written so far by every response together (live, unlike
    /// [`Request::body_sent`], which is set when a response ends).
    pub fn served_bytes(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// When the first body byte was written, if one was.
    pub fn first_byte_at(&self) -> Option<Instant> {
        *lock(&self.shared.first_byte)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for c in lock(&self.shared.conns).drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("mp4") | Some("m4s") => "video/mp4",
        Some("flv") => "video/x-flv",
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        _ => "application/octet-stream",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads the request head (up to the blank line). `None` if the peer went away.
fn read_head(conn: &mut TcpStream) -> Option<String> {
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Writes as much of `buf` as the peer takes, at the server's rate if it has
/// one; returns how many bytes went out.
fn write_counted(s: &Shared, conn: &mut TcpStream, buf: &[u8]) -> usize {
    let started = Instant::now();
    // Paced in 16 KiB steps: each waits until the rate allows it.
    let step = if s.rate.is_some() {
        16 * 1024
    } else {
        buf.len().max(1)
    };
    let mut sent = 0;
    while sent < buf.len() {
        if let Some(rate) = s.rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if s.stop.load(Ordering::SeqCst) {
                break;
            }
        }
        let end = (sent + step).min(buf.len());
        match conn.write(&buf[sent..end]) {
            Ok(0) => break,
            Ok(k) => {
                if sent == 0 {
                    lock(&s.first_byte).get_or_insert_with(Instant::now);
                }
                sent += k;
                s.served.fetch_add(k as u64, Ordering::SeqCst);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    sent
}

/// `bytes=N-` or `bytes=N-M` → (first, last) inclusive, clamped to `len`.
fn parse_range(v: &str, len: usize) -> Option<Result<(usize, usize), ()>> {
    let spec = v.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let first: usize = a.trim().parse().ok()?;
    let last = match b.trim() {
        "" => len.saturating_sub(1),
        b => b.parse::<usize>().ok()?.min(len.saturating_sub(1)),
    };
    if first >= len || first > last {
        return Some(Err(()));
    }
    Some(Ok((first, last)))
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        302 => "Found",
        206 => "Partial Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn serve(s: &Shared, mut conn: TcpStream) {
    let Some(head) = read_head(&mut conn) else {
        return;
    };
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("").to_owned();
    let range = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_owned());
    let (n, behavior) = {
        let mut reqs = lock(&s.requests);
        let n = reqs.len();
        let behavior = s.script.get(n).cloned().unwrap_or_else(|| s.after.clone());
        reqs.push(Request {
            n,
            at: Instant::now(),
            method: method.clone(),
            target: target.clone(),
            range: range.clone(),
            behavior: behavior.clone(),
            body_sent: 0,
        });
        (n, behavior)
    };
    let head_only = method.eq_ignore_ascii_case("HEAD");
    match behavior {
        Behavior::Stall => {
            // The clone in `conns` keeps the socket open until the server drops.
            return;
        }
        Behavior::Status(code) => {
            let text = format!("{code} {}\n", reason(code));
            let _ = write!(
                conn,
                "HTTP/1.1 {code} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                reason(code),
                text.len()
            );
            if !head_only {
                let sent = write_counted(s, &mut conn, text.as_bytes());
                lock(&s.requests)[n].body_sent = sent;
            }
        }
        Behavior::Redirect(location) => {
            let _ = write!(
                conn,
                "HTTP/1.1 302 {}\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                reason(302)
            );
        }
        Behavior::Ok | Behavior::DropMidBody | Behavior::StallMidBody => {
            let file;
            let (body, content_type) = match &s.root {
                None => (&s.body[..], s.content_type.as_str()),
                Some(root) => {
                    let rel = target
                        .split('?')
                        .next()
                        .unwrap_or("")
                        .trim_start_matches('/');
                    let path = root.join(rel);
                    match (rel.split('/').any(|p| p == ".."), std::fs::read(&path)) {
                        (false, Ok(b)) => {
                            file = b;
                            (&file[..], content_type(&path))
                        }
                        _ => {
                            let _ = write!(
                                conn,
                                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            );
                            let _ = conn.shutdown(Shutdown::Write);
                            return;
                        }
                    }
                }
            };
            let len = body.len();
            let (status, first, last) = match range.as_deref().and_then(|r| parse_range(r, len)) {
                None => (200, 0, len.saturating_sub(1)),
                Some(Ok((a, b))) => (206, a, b),
                Some(Err(())) => {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = conn.shutdown(Shutdown::Write);
                    return;
                }
            };
            let part = if len == 0 {
                &[][..]
            } else {
                &body[first..=last]
            };
            let mut h = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
                reason(status),
                content_type,
                part.len()
            );
            if status == 206 {
                h.push_str(&format!("Content-Range: bytes {first}-{last}/{len}\r\n"));
            }
            h.push_str("\r\n");
            if conn.write_all(h.as_bytes()).is_ok() && !head_only {
                let send = if behavior == Behavior::Ok {
                    part
                } else {
                    &part[..part.len() / 2]
                };
                let sent = write_counted(s, &mut conn, send);
                let _ = conn.flush();
                lock(&s.requests)[n].body_sent = sent;
                if behavior == Behavior::StallMidBody {
                    // The clone in `conns` keeps the socket open until the server drops.
                    return;
                }
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
}

/// What a [`Dropper`] does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Close,
    Hold,
}

/// A TCP destination that accepts connections and either closes each one at once
/// ([`Dropper::start`]) or holds it open and never sends a byte
/// ([`Dropper::black_hole`]). Counts accepted connections.
pub struct Dropper {
    addr: SocketAddr,
    accepts: Arc<Mutex<Vec<Instant>>>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Dropper {
    /// Closes every connection right after accepting it.
    pub fn start() -> Dropper {
        Self::spawn(Mode::Close)
    }

    /// Accepts and then never answers (until dropped).
    pub fn black_hole() -> Dropper {
        Self::spawn(Mode::Hold)
    }

    fn spawn(mode: Mode) -> Dropper {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let accepts = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, h, st) = (accepts.clone(), held.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                lock(&a).push(Instant::now());
                match mode {
                    Mode::Close => drop(conn),
                    Mode::Hold => lock(&h).push(conn),
                }
            }
        });
        Dropper {
            addr,
            accepts,
            held,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `rtmp://127.0.0.1:PORT/live/KEY`
    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.addr.port())
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        lock(&self.accepts).len()
    }

    /// When each connection was accepted.
    pub fn accept_times(&self) -> Vec<Instant> {
        lock(&self.accepts).clone()
    }
}

impl Drop for Dropper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for c in lock(&self.held).drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// A 127.0.0.1 port nothing listens on (bound and released by us): connecting
/// to it is refused.
pub fn closed_port() -> u16 {
    crate::rtmp::free_port()
}

#[cfg(test)]
mod tests {
    use super::{parse_range, Behavior, HttpServer};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    /// Sends a bare GET and reads until the server closes: (head, body).
    fn get(port: u16, path: &str) -> (String, Vec<u8>) {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).expect("read to EOF");
        let at = all
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        (
            String::from_utf8_lossy(&all[..at]).into_owned(),
            all[at + 4..].to_vec(),
        )
    }

    #[test]
    fn redirects_and_counts_body_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.bin");
        let body: Vec<u8> = (0..10_001u32).map(|i| i as u8).collect();
        std::fs::write(&file, &body).unwrap();
        let server = HttpServer::start(
            &file,
            vec![Behavior::Redirect("/b?x=1".into()), Behavior::DropMidBody],
        );
        let (head, rest) = get(server.port(), "/a");
        assert!(head.starts_with("HTTP/1.1 302 "), "{head}");
        assert!(head.contains("\r\nLocation: /b?x=1"), "{head}");
        assert!(rest.is_empty());
        let (head, rest) = get(server.port(), "/b?x=1");
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert_eq!(rest, &body[..body.len() / 2]);
        let (_, rest) = get(server.port(), "/c");
        assert_eq!(rest, body);
        let reqs = server.requests();
        assert_eq!(reqs[0].behavior, Behavior::Redirect("/b?x=1".into()));
        assert_eq!(reqs[0].body_sent, 0);
        assert_eq!(reqs[1].body_sent, body.len() / 2);
        assert_eq!(reqs[2].body_sent, body.len());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=4-", 10), Some(Ok((4, 9))));
        assert_eq!(parse_range("bytes=4-5", 10), Some(Ok((4, 5))));
        assert_eq!(parse_range("bytes=4-99", 10), Some(Ok((4, 9))));
        assert_eq!(parse_range("bytes=10-", 10), Some(Err(())));
        assert_eq!(parse_range("items=1-", 10), None);
    }
}
