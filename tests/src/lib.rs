//! Harness shared by the end-to-end tests.
//!
//! Everything here talks to real things: nginx with the RTMP module
//! ([`rtmp::RtmpServer`]), the ffmpeg/ffprobe CLIs ([`media`], [`probe`]), real
//! local TCP/HTTP servers ([`http`]) and the built `vodfleet-worker` binary
//! ([`worker`]). Waiting is always polling with a deadline, never a fixed sleep.

pub mod fleet;
pub mod flv;
pub mod http;
pub mod media;
pub mod ops;
pub mod peers;
pub mod probe;
pub mod rtmp;
pub mod worker;

pub use fleet::{
    counter_mp4, read_counters, CallbackReceiver, Coordinator, Fleet, FleetOptions, FleetWorker,
    Producer, PublisherWatch, RabbitNode, RedisServer, Vhost,
};
pub use http::{closed_port, Behavior, Dropper, HttpServer, Request};
pub use media::{Container, Media, MediaSpec, Pattern};
pub use probe::{Kind, Pkt, Recording, StreamInfo};
pub use rtmp::RtmpServer;
pub use worker::{Running, Worker};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Whether to keep work directories (and print the worker's output) even when a
/// test passes: set `VODFLEET_TEST_KEEP=1`. They are always kept when it fails.
pub fn keep_artifacts() -> bool {
    std::thread::panicking() || std::env::var_os("VODFLEET_TEST_KEEP").is_some_and(|v| v != "0")
}

/// A name that no other test (in this process or a parallel one) uses:
/// `prefix-<pid>x<counter>x<nanos>`. Good for stream keys, which the worker must
/// never print, so they must not occur by chance either.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}x{n}x{nanos:08x}", std::process::id())
}

/// Calls `f` every `step` until it returns `Some`, or `timeout` passes (then `None`).
/// `f` is always called at least once, and once more at the deadline.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let step = Duration::from_millis(25);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(step.min(deadline - now));
    }
}

/// Like [`poll`] for a condition; panics with `what` when it never holds.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    if poll(timeout, || cond().then_some(())).is_none() {
        panic!("timed out after {timeout:?} waiting for: {what}");
    }
}
