//! Never dark (issue 8 item 7, docs/design/sources.md "Never dark"): while a
//! task waits for a late or broken source, the destinations get the slate
//! (black pictures, silence) on the same timeline, then the item (or the next
//! one if it failed). Judged at a real nginx-rtmp: one publish session, no hole
//! in the timestamps it received, black pictures while the wait lasted (their
//! luma, decoded by ffmpeg), the item's own pictures after it.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vodfleet_tests::media::ffmpeg;
use vodfleet_tests::rtmp::{free_port, http_get};
use vodfleet_tests::{
    poll, unique, Behavior, HttpServer, Media, Pattern, Recording, RtmpServer, Worker,
};

/// (presentation time, mean luma) of the recording's pictures, four a second,
/// as ffmpeg decodes them (`signalstats`): black is 16.
fn luma(path: &Path) -> Vec<(f64, f64)> {
    let out = Command::new(ffmpeg())
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args([
            "-vf",
            "fps=4,signalstats,metadata=print:key=lavfi.signalstats.YAVG:file=-",
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap_or_else(|e| panic!("run ffmpeg: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut at = None;
    let mut got = Vec::new();
    for line in text.lines() {
        if let Some(t) = line.split("pts_time:").nth(1) {
            at = t
                .split_whitespace()
                .next()
                .and_then(|t| t.parse::<f64>().ok());
        } else if let Some(v) = line.strip_prefix("lavfi.signalstats.YAVG=") {
            if let (Some(t), Ok(v)) = (at.take(), v.trim().parse::<f64>()) {
                got.push((t, v));
            }
        }
    }
    assert!(
        !got.is_empty(),
        "no pictures decoded from {}",
        path.display()
    );
    got
}

/// The first event named `name`, or a panic with the worker's report.
fn event(w: &vodfleet_tests::Running, name: &str) -> Value {
    w.events_named(name)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {name} event\n{}", w.report()))
}

fn secs(e: &Value, field: &str) -> f64 {
    e[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {e}")) as f64
        / 1000.0
}

/// What every never-dark judge checks: one session, no hole in either
/// track's timestamps, clean decoding; and the pictures: the item's before
/// `from`, black from `from` to `to`, the next item's after `to`.
fn judge(rtmp: &RtmpServer, key: &str, (from, to): (f64, f64)) -> Recording {
    rtmp.assert_one_session(key);
    let rec = Recording::read(&rtmp.record_path(key));
    rec.assert_monotonic();
    for stream in ["video", "audio"] {
        rec.assert_no_gap(stream, 0.1);
    }
    rec.assert_decodes_cleanly();
    let pictures = luma(&rec.path);
    let dark: Vec<_> = pictures
        .iter()
        .filter(|(t, _)| *t > from + 0.3 && *t < to - 0.3)
        .collect();
    assert!(
        dark.len() as f64 >= (to - from - 0.6) * 4.0 - 2.0,
        "pictures decoded while the slate was on air ({from:.2}..{to:.2} s): {dark:?}"
    );
    assert!(
        dark.iter().all(|(_, y)| *y < 20.0),
        "the slate is black ({from:.2}..{to:.2} s): {dark:?}"
    );
    let lit = |range: &dyn Fn(f64) -> bool| {
        let p: Vec<_> = pictures.iter().filter(|(t, _)| range(*t)).collect();
        assert!(!p.is_empty(), "no pictures there: {pictures:?}");
        assert!(
            p.iter().all(|(_, y)| *y > 40.0),
            "the items' own pictures around the slate ({from:.2}..{to:.2} s): {p:?}"
        );
    };
    lit(&|t| t < from - 0.3);
    lit(&|t| t > to + 0.3);
    rec
}

/// `vodfleet_worker_slate_seconds_total` of a running `play` serving `/metrics` on `port`.
fn slate_seconds(port: u16) -> f64 {
    let text = http_get(port, "/metrics").expect("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("vodfleet_worker_slate_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no vodfleet_worker_slate_seconds_total in:\n{text}"))
}

#[test]
fn a_download_that_stalls_between_items_is_covered_by_the_slate() {
    covered_download("dark-between", None);
}

/// The same with `fops`: the slate is drawn by the task's own encoders.
#[test]
fn a_transcoding_task_covers_a_stalled_download_with_its_own_encoder() {
    covered_download("dark-transcode", Some(json!({"preset": "360p"})));
}

fn covered_download(name: &str, fops: Option<Value>) {
    let first = Media::mp4(3.0, "640x360", 25, 25, Pattern::TestSrc2);
    let second = Media::mp4(4.0, "640x360", 25, 25, Pattern::SmpteBars);
    // The first request for item 2 (fetched while item 1 plays) hangs until its
    // 12 s timeout; the second is answered: a wait of ~10 s after item 1 ends.
    let server = HttpServer::start(&second.path, vec![Behavior::Stall, Behavior::Ok]);
    let rtmp = RtmpServer::start();
    let key = unique(name);
    let metrics = free_port();
    let mut task = json!({
        "id": unique(name),
        "src": [{"url": first.vod_url()}, {"url": server.url("/media/b.mp4")}],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"}
    });
    if let Some(fops) = fops {
        task["fops"] = fops;
    }
    let addr = format!("127.0.0.1:{metrics}");
    let mut w = Worker::play(
        task,
        &[
            ("VODFLEET_SOURCE_TIMEOUT_MS", "12000"),
            ("VODFLEET_RETRY_BACKOFF_MS", "200"),
            ("VODFLEET_HTTP_ADDR", &addr),
        ],
    );
    let ended = poll(Duration::from_secs(40), || {
        w.events_named("slate_ended").into_iter().next()
    });
    let counted = ended.as_ref().map(|_| slate_seconds(metrics));
    let status = w.wait_exit(Duration::from_secs(40));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    // What the server received first: black from the end of item 1 (3 s) for
    // most of the wait (the stall lasts 12 s from the start).
    let pictures = luma(&rtmp.record_path(&key));
    let waited: Vec<_> = pictures
        .iter()
        .filter(|(t, _)| (3.4..8.5).contains(t))
        .collect();
    assert!(
        waited.len() >= 18 && waited.iter().all(|(_, y)| *y < 20.0),
        "black pictures while item 2 downloads: {waited:?}"
    );
    let (ended, counted) = (ended.expect("a slate_ended event"), counted.unwrap());
    assert!(
        w.events_named("item_failed").is_empty(),
        "no item failed\n{}",
        w.report()
    );
    let started = event(&w, "slate_started");
    assert_eq!(started["waiting_for"], "download", "{started}");
    assert_eq!(started["item"], 1, "{started}");
    let (from, to) = (secs(&started, "timeline_ms"), secs(&ended, "timeline_ms"));
    assert!(
        (2.8..3.3).contains(&from),
        "the slate follows item 1 (3 s): {started}"
    );
    let on_air = secs(&ended, "duration_ms");
    assert!(
        (6.0..12.0).contains(&on_air),
        "the slate covers the wait for the retried download: {ended}\n{}",
        w.report()
    );
    assert!(
        (counted - on_air).abs() < 0.3,
        "vodfleet_worker_slate_seconds_total {counted} for a slate of {on_air} s"
    );
    let rec = judge(&rtmp, &key, (from, to));
    let video = rec.video_secs();
    assert!(
        (video - (3.0 + on_air + 4.0)).abs() < 0.3,
        "item 1, the slate and all of item 2: {video:.3} s for a slate of {on_air} s: {}",
        rec.summary()
    );
    assert_eq!(server.request_count(), 2, "{:#?}", server.requests());
    w.assert_not_printed(&key);
}

#[test]
fn a_source_that_fails_while_the_slate_covers_it_gives_way_to_the_next_item() {
    let first = Media::mp4(3.0, "640x360", 25, 25, Pattern::TestSrc2);
    let third = Media::mp4(3.0, "640x360", 25, 25, Pattern::SmpteBars);
    // Item 2 never answers: two attempts of 3 s, then it fails.
    let server = HttpServer::start_with(&first.path, vec![], Behavior::Stall);
    let rtmp = RtmpServer::start();
    let key = unique("dark-failed");
    let task = json!({
        "id": unique("dark-failed"),
        "src": [
            {"url": first.vod_url()},
            {"url": server.url("/media/never.mp4")},
            {"url": third.vod_url()}
        ],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"}
    });
    let mut w = Worker::play(
        task,
        &[
            ("VODFLEET_SOURCE_TIMEOUT_MS", "3000"),
            ("VODFLEET_SOURCE_ATTEMPTS", "2"),
            ("VODFLEET_RETRY_BACKOFF_MS", "200"),
        ],
    );
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    let failed = w.events_named("item_failed");
    assert_eq!(failed.len(), 1, "item 2 failed\n{}", w.report());
    assert_eq!(failed[0]["item"], 1);
    assert_eq!(failed[0]["error_kind"], "timed_out", "{}", failed[0]);
    let (started, ended) = (event(&w, "slate_started"), event(&w, "slate_ended"));
    let (from, to) = (secs(&started, "timeline_ms"), secs(&ended, "timeline_ms"));
    assert!(
        to - from > 2.0,
        "the slate covered the failing download: {ended}"
    );
    let rec = judge(&rtmp, &key, (from, to));
    let video = rec.video_secs();
    assert!(
        (video - (6.0 + (to - from))).abs() < 0.3,
        "items 1 and 3 around the slate: {video:.3} s: {}",
        rec.summary()
    );
}

#[test]
fn a_playlist_whose_every_item_fails_ends_with_a_failure_even_looping_forever() {
    let rtmp = RtmpServer::start();
    let server = HttpServer::start_with(
        &Media::mp4(1.0, "320x240", 25, 25, Pattern::TestSrc2).path,
        vec![],
        Behavior::Status(404),
    );
    let key = unique("dark-none");
    let task = json!({
        "id": unique("dark-none"),
        "src": [
            {"url": server.url("/a.mp4")},
            {"url": "vod://no-such-file.mp4"},
            {"url": server.url("/c.mp4")}
        ],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "0"}
    });
    let mut w = Worker::play(task, &[("VODFLEET_RETRY_BACKOFF_MS", "100")]);
    let status = w.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "the task fails\n{}", w.report());
    let failed: Vec<u64> = w
        .events_named("item_failed")
        .iter()
        .map(|e| e["item"].as_u64().unwrap())
        .collect();
    assert_eq!(
        failed,
        vec![0, 1, 2],
        "one pass, each item once\n{}",
        w.report()
    );
    assert_eq!(w.events_named("task_failed").len(), 1, "{}", w.report());
    assert!(
        w.events_named("slate_started").is_empty(),
        "nothing was on air to cover"
    );
    assert_eq!(rtmp.publish_sessions(&key), 0, "never went on air");
}

/// An HTTP file server whose first answer sends the first `cut` bytes of the
/// file, then holds the connection silent for `hold` before closing it; every
/// later request gets what its `Range` asks for. Counts requests and keeps
/// their `Range` headers.
struct StallingServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    ranges: Arc<std::sync::Mutex<Vec<Option<String>>>>,
}

impl StallingServer {
    fn start(file: &Path, cut: usize, hold: Duration) -> StallingServer {
        let body = Arc::new(std::fs::read(file).expect("read media"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let ranges = Arc::new(std::sync::Mutex::new(Vec::new()));
        let n = Arc::new(AtomicUsize::new(0));
        let (st, rs) = (stop.clone(), ranges.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (body, st, rs, n) = (body.clone(), st.clone(), rs.clone(), n.clone());
                std::thread::spawn(move || serve_stalling(conn, &body, cut, hold, &st, &rs, &n));
            }
        });
        StallingServer { addr, stop, ranges }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn ranges(&self) -> Vec<Option<String>> {
        self.ranges.lock().unwrap().clone()
    }
}

impl Drop for StallingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn serve_stalling(
    mut conn: TcpStream,
    body: &[u8],
    cut: usize,
    hold: Duration,
    stop: &AtomicBool,
    ranges: &std::sync::Mutex<Vec<Option<String>>>,
    n: &AtomicUsize,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(k) => head.extend_from_slice(&buf[..k]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let range = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_owned());
    ranges.lock().unwrap().push(range.clone());
    let first = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|a| a.parse::<usize>().ok())
        .unwrap_or(0)
        .min(body.len());
    let status = if range.is_some() {
        format!(
            "206 Partial Content\r\nContent-Range: bytes {first}-{}/{}",
            body.len() - 1,
            body.len()
        )
    } else {
        "200 OK".into()
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: video/mp4\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
        body.len() - first
    );
    if n.fetch_add(1, Ordering::SeqCst) == 0 {
        let _ = conn.write_all(&body[first..cut.max(first)]);
        let _ = conn.flush();
        let until = std::time::Instant::now() + hold;
        while std::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        return;
    }
    let _ = conn.write_all(&body[first..]);
}

#[test]
fn a_source_that_stalls_mid_item_is_covered_then_the_item_goes_on() {
    let first = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    let second = Media::mp4(12.0, "640x360", 25, 25, Pattern::SmpteBars);
    // The body stops a quarter into the file (about 3 s of media: playback
    // reaches it ~4 s after the stall began) for 15 s: the read times out after
    // the source timeout (10 s), the download resumes with a Range request.
    let server = StallingServer::start(
        &second.path,
        second.len() as usize / 4,
        Duration::from_secs(15),
    );
    let rtmp = RtmpServer::start();
    let key = unique("dark-mid");
    let task = json!({
        "id": unique("dark-mid"),
        "src": [{"url": first.vod_url()}, {"url": server.url("/media/b.mp4")}],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"}
    });
    let mut w = Worker::play(task, &[("VODFLEET_RETRY_BACKOFF_MS", "200")]);
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    assert!(w.events_named("item_failed").is_empty(), "{}", w.report());
    let ranges = server.ranges();
    assert!(
        ranges.len() >= 2 && ranges[1].as_deref().is_some_and(|r| r != "bytes=0-"),
        "one attempt timed out, the download resumed with a Range: {ranges:?}"
    );
    let started = event(&w, "slate_started");
    assert_eq!(
        started["waiting_for"], "read",
        "the item was playing: {started}"
    );
    assert_eq!(started["item"], 1, "{started}");
    let ended = event(&w, "slate_ended");
    let (from, to) = (secs(&started, "timeline_ms"), secs(&ended, "timeline_ms"));
    assert!(from > 3.0, "item 2 played before the stall: {started}");
    assert!(to - from > 4.0, "the slate covered the stall: {ended}");
    let rec = judge(&rtmp, &key, (from, to));
    let video = rec.video_secs();
    // Copy mode goes on at the item's next keyframe: at most a GOP (1 s) skipped.
    let expected = 2.0 + 12.0 + (to - from);
    assert!(
        video > expected - 1.1 && video < expected + 0.3,
        "both items around the slate: {video:.3} s of ~{expected:.3}: {}",
        rec.summary()
    );
}
