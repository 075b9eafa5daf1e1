//! What nginx sees: publishers over time ([`PublisherWatch`]), recordings
//! ([`take_recording`]) and refused publishers ([`publish_conflicts`]).

use super::lock;
use crate::rtmp::RtmpServer;
use crate::{poll, wait_until};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The client ids publishing stream `key` in a `/stat` document.
pub fn stat_publishers(xml: &str, key: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    for stream in xml.split("<stream>").skip(1) {
        let stream = stream.split("</stream>").next().unwrap_or(stream);
        let name = stream
            .split_once("<name>")
            .and_then(|(_, r)| r.split_once("</name>"))
            .map(|(n, _)| n);
        if name != Some(key) {
            continue;
        }
        for client in stream.split("<client>").skip(1) {
            let client = client.split("</client>").next().unwrap_or(client);
            if !client.contains("<publishing/>") {
                continue;
            }
            if let Some(id) = client
                .split_once("<id>")
                .and_then(|(_, r)| r.split_once("</id>"))
                .and_then(|(n, _)| n.trim().parse().ok())
            {
                ids.push(id);
            }
        }
    }
    ids
}

/// The client ids publishing `key` right now.
pub fn publishers(rtmp: &RtmpServer, key: &str) -> Vec<u64> {
    stat_publishers(&rtmp.stat(), key)
}

/// One `/stat` sample.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    /// Client ids publishing the stream (empty when none, or `/stat` failed).
    pub publishers: Vec<u64>,
    pub stat_failed: bool,
}

/// One publisher (RTMP client id) as the samples saw it.
#[derive(Clone, Copy, Debug)]
pub struct Session {
    pub client: u64,
    pub first_seen: Instant,
    pub last_seen: Instant,
}

/// Polls nginx's `/stat` every `period` in a thread and records who publishes
/// stream `key`, so a test can assert "never two at once" and measure gaps.
pub struct PublisherWatch {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PublisherWatch {
    pub fn start(rtmp: &RtmpServer, key: &str, period: Duration) -> PublisherWatch {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, key, port) = (
            samples.clone(),
            stop.clone(),
            key.to_owned(),
            rtmp.http_port(),
        );
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let t = Instant::now();
                let r = crate::rtmp::http_get(port, "/stat");
                lock(&s).push(Sample {
                    at: t,
                    stat_failed: r.is_err(),
                    publishers: r.map(|x| stat_publishers(&x, &key)).unwrap_or_default(),
                });
                std::thread::sleep(period.saturating_sub(t.elapsed()));
            }
        });
        PublisherWatch {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.samples).clone()
    }

    /// The most publishers seen in one sample.
    pub fn max_publishers(&self) -> usize {
        self.samples()
            .iter()
            .map(|s| s.publishers.len())
            .max()
            .unwrap_or(0)
    }

    /// Each publisher seen, in order of first appearance.
    pub fn sessions(&self) -> Vec<Session> {
        let mut out: Vec<Session> = Vec::new();
        for s in self.samples() {
            for id in s.publishers {
                match out.iter_mut().find(|x| x.client == id) {
                    Some(x) => x.last_seen = s.at,
                    None => out.push(Session {
                        client: id,
                        first_seen: s.at,
                        last_seen: s.at,
                    }),
                }
            }
        }
        out
    }

    /// Waits until `n` distinct publishers have been seen; returns them.
    pub fn wait_sessions(&self, n: usize, timeout: Duration) -> Option<Vec<Session>> {
        poll(timeout, || {
            let s = self.sessions();
            (s.len() >= n).then_some(s)
        })
    }

    /// Whether some sample at or after `t` had no publisher.
    pub fn absent_since(&self, t: Instant) -> bool {
        self.samples()
            .iter()
            .any(|s| s.at >= t && !s.stat_failed && s.publishers.is_empty())
    }

    /// A one-line summary for assertion messages.
    pub fn summary(&self) -> String {
        let samples = self.samples();
        let Some(t0) = samples.first().map(|s| s.at) else {
            return "no samples".into();
        };
        let sessions: Vec<String> = self
            .sessions()
            .iter()
            .map(|s| {
                format!(
                    "client {} seen {:.2}..{:.2} s",
                    s.client,
                    (s.first_seen - t0).as_secs_f64(),
                    (s.last_seen - t0).as_secs_f64()
                )
            })
            .collect();
        format!(
            "{} samples, max {} publishers at once; {}",
            samples.len(),
            self.max_publishers(),
            sessions.join("; ")
        )
    }
}

impl Drop for PublisherWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Publish attempts on `key` that nginx refused because someone else was
/// publishing it ("live: already publishing" in its error log): the server's own
/// evidence of two publishers at once.
pub fn publish_conflicts(rtmp: &RtmpServer, key: &str) -> Vec<String> {
    let log = fs::read_to_string(rtmp.dir().join("error.log")).unwrap_or_default();
    // Connection ids ("*N") that tried to publish `key`.
    let needle = format!("publish: name='{key}'");
    let conn_id = |l: &str| {
        l.split_whitespace()
            .find(|w| w.starts_with('*'))
            .map(str::to_owned)
    };
    let ids: Vec<String> = log
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(conn_id)
        .collect();
    log.lines()
        .filter(|l| l.contains("already publishing"))
        .filter(|l| conn_id(l).is_some_and(|c| ids.contains(&c)))
        .map(str::to_owned)
        .collect()
}

/// Moves the recording of the session now publishing `key` aside (to
/// `record/KEY.LABEL.flv`) and returns its new path. nginx keeps writing the
/// running session into the moved file, and the next publish of `key` starts a
/// new `KEY.flv` instead of truncating this one (`record_unique off`).
pub fn take_recording(rtmp: &RtmpServer, key: &str, label: &str) -> PathBuf {
    let from = rtmp.record_path(key);
    wait_until(
        &format!("nginx recording {} exists", from.display()),
        Duration::from_secs(10),
        || from.exists(),
    );
    let to = rtmp.dir().join("record").join(format!("{key}.{label}.flv"));
    fs::rename(&from, &to)
        .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", from.display(), to.display()));
    to
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_publishers() {
        let xml = "<live><stream><name>k1</name><time>1</time>\
            <client><id>3</id><address>127.0.0.1</address><publishing/><active/></client>\
            <client><id>7</id><address>127.0.0.1</address><active/></client>\
            <publishing/></stream><stream><name>k2</name>\
            <client><id>9</id><publishing/></client></stream></live>";
        assert_eq!(stat_publishers(xml, "k1"), vec![3]);
        assert_eq!(stat_publishers(xml, "k2"), vec![9]);
        assert!(stat_publishers(xml, "k3").is_empty());
    }
}
