//! The callback receiver ([`CallbackReceiver`]): records every POST and answers
//! per a script.

use super::http::{read_message, Message};
use super::lock;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the receiver answers to one POST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn new(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.into(),
        }
    }
}

/// One POST as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Post {
    pub at: Instant,
    pub path: String,
    /// Header names lower-cased.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// The body as JSON, if it is.
    pub json: Option<Value>,
    /// `event_id` of the body ("" if none).
    pub event_id: String,
    /// 0-based attempt number for this `event_id`.
    pub attempt: usize,
    pub answer: Answer,
}

impl Post {
    /// Whether the answer counts as delivered (2xx with a non-empty body).
    pub fn delivered(&self) -> bool {
        (200..300).contains(&self.answer.status) && !self.answer.body.is_empty()
    }
}

struct ReceiverShared {
    script: Vec<Answer>,
    after: Answer,
    posts: Mutex<Vec<Post>>,
    stop: AtomicBool,
}

/// An HTTP server on 127.0.0.1 that records every request and answers attempt
/// `i` of each `event_id` with `script[i]` (then `after`): a receiver that
/// "fails twice, then succeeds" fails twice for every event.
pub struct CallbackReceiver {
    addr: SocketAddr,
    shared: Arc<ReceiverShared>,
    thread: Option<JoinHandle<()>>,
}

impl CallbackReceiver {
    pub fn start(script: Vec<Answer>, after: Answer) -> CallbackReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(ReceiverShared {
            script,
            after,
            posts: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let sh = sh.clone();
                std::thread::spawn(move || Self::serve(conn, &sh));
            }
        });
        CallbackReceiver {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    fn serve(mut conn: TcpStream, sh: &ReceiverShared) {
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let Ok(Message {
            start,
            headers,
            body,
        }) = read_message(&mut conn)
        else {
            return;
        };
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        let event_id = json
            .as_ref()
            .and_then(|j| j["event_id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let answer = {
            let mut posts = lock(&sh.posts);
            let attempt = posts.iter().filter(|p| p.event_id == event_id).count();
            let answer = sh.script.get(attempt).unwrap_or(&sh.after).clone();
            posts.push(Post {
                at: Instant::now(),
                path: start.split_whitespace().nth(1).unwrap_or("").to_owned(),
                headers: headers.into_iter().collect(),
                body,
                json,
                event_id,
                attempt,
                answer: answer.clone(),
            });
            answer
        };
        let _ = write!(
            conn,
            "HTTP/1.1 {} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            answer.status,
            answer.body.len(),
            answer.body
        );
        let _ = conn.flush();
        let _ = conn.shutdown(Shutdown::Write);
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT/callback`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/callback", self.addr.port())
    }

    /// Every request so far, in arrival order.
    pub fn posts(&self) -> Vec<Post> {
        lock(&self.shared.posts).clone()
    }

    /// Requests grouped by `event_id`.
    pub fn by_event(&self) -> BTreeMap<String, Vec<Post>> {
        let mut m: BTreeMap<String, Vec<Post>> = BTreeMap::new();
        for p in self.posts() {
            m.entry(p.event_id.clone()).or_default().push(p);
        }
        m
    }

    /// One body per `event_id` (the first), in first-arrival order: what a
    /// receiver that de-duplicates sees.
    pub fn events(&self) -> Vec<Value> {
        let mut seen = std::collections::BTreeSet::new();
        self.posts()
            .into_iter()
            .filter(|p| seen.insert(p.event_id.clone()))
            .filter_map(|p| p.json)
            .collect()
    }
}

impl Drop for CallbackReceiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
