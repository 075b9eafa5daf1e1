//! A TCP proxy a test can cut ([`CutProxy`]): it forwards between its clients
//! and a target until [`CutProxy::cut`], then keeps every socket open and drops
//! every byte in both directions, and accepts new connections without ever
//! connecting them through. To the client it looks like a network partition
//! (silence), not like a peer that went away (a refused or closed connection).

use super::lock;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often blocked threads look at the stop and cut flags.
const TICK: Duration = Duration::from_millis(50);

struct Shared {
    target: SocketAddr,
    cut: AtomicBool,
    stop: AtomicBool,
    accepted: AtomicUsize,
    /// Bytes dropped since the cut (both directions).
    dropped: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A forwarding proxy on 127.0.0.1 that the test can partition.
pub struct CutProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl CutProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`.
    pub fn start(target: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            target,
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || accept_loop(listener, s));
        CutProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// From now on nothing passes: bytes are read and dropped, sockets stay open.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// Connections accepted so far (before and after the cut).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Bytes that reached the proxy after the cut and were dropped.
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, s: Arc<Shared>) {
    while !s.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                s.accepted.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nonblocking(false);
                let upstream = if s.cut.load(Ordering::SeqCst) {
                    None
                } else {
                    TcpStream::connect_timeout(&s.target, Duration::from_secs(2)).ok()
                };
                let Some(upstream) = upstream else {
                    // Cut (or the target is down): hold the client in silence.
                    let s2 = s.clone();
                    let t = std::thread::spawn(move || pump(client, None, &s2));
                    lock(&s.threads).push(t);
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), upstream.try_clone()),
                    (upstream.try_clone(), client.try_clone()),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let s2 = s.clone();
                    let t = std::thread::spawn(move || pump(from, Some(to), &s2));
                    lock(&s.threads).push(t);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(_) => std::thread::sleep(TICK),
        }
    }
}

/// Copies `from` → `to` until either closes, or drops what `from` sends once
/// the proxy is cut. After the cut a closed `from` or `to` closes nothing: the
/// other side only hears silence.
fn pump(mut from: TcpStream, mut to: Option<TcpStream>, s: &Shared) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 64 * 1024];
    while !s.stop.load(Ordering::SeqCst) {
        match from.read(&mut buf) {
            Ok(0) => {
                if s.cut.load(Ordering::SeqCst) {
                    // Say nothing to the other side; just stop reading.
                    while !s.stop.load(Ordering::SeqCst) {
                        std::thread::sleep(TICK);
                    }
                } else if let Some(t) = &to {
                    let _ = t.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => {
                if s.cut.load(Ordering::SeqCst) {
                    s.dropped.fetch_add(n, Ordering::SeqCst);
                    continue;
                }
                let ok = to.as_mut().is_some_and(|t| t.write_all(&buf[..n]).is_ok());
                if !ok && !s.cut.load(Ordering::SeqCst) {
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                if !s.cut.load(Ordering::SeqCst) {
                    if let Some(t) = &to {
                        let _ = t.shutdown(Shutdown::Both);
                    }
                    return;
                }
                std::thread::sleep(TICK);
            }
        }
    }
    to.take();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    #[test]
    fn forwards_until_cut_then_drops_in_silence() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in echo.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut w = c.try_clone().unwrap();
                    for line in std::io::BufReader::new(c).lines().map_while(Result::ok) {
                        let _ = writeln!(w, "{line}");
                    }
                });
            }
        });
        let proxy = CutProxy::start(target);
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
        writeln!(c, "hello").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "hello\n");

        proxy.cut();
        writeln!(c, "lost").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut line = String::new();
        let e = r.read_line(&mut line).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "silence, not a close: {e:?} {line:?}"
        );
        assert!(
            crate::poll(Duration::from_secs(2), || (proxy.dropped() >= 5)
                .then_some(()))
            .is_some()
        );
        // A new connection is accepted and held, never connected through.
        let mut c2 = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        c2.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        writeln!(c2, "x").unwrap();
        let mut b = [0u8; 1];
        assert!(c2.read(&mut b).is_err(), "held in silence");
        assert_eq!(proxy.accepted(), 2);
    }
}
