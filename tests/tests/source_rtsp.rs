//! `rtsp://` sources (issue 8): pulled with `retina` over TCP-interleaved RTP
//! from a real GStreamer RTSP server (H.264 + AAC, `tests/rtsp-server.py`),
//! and judged by what nginx-rtmp recorded: an item plays while it is pulled
//! (on air within seconds, not at its range end), `relofftime` counts from
//! the start of the pull, `absofftime` against its wall clock, a pull that
//! stalls is covered by the slate, resumes and appends, a stream the server
//! ends plays to its end, wrong credentials
//! and an unreachable port fail their item by name without printing the
//! password, and a loopback address is refused without
//! `VODFLEET_ALLOW_PRIVATE_NETWORKS`.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vodfleet_tests::http::closed_port;
use vodfleet_tests::peers::{RtspOptions, RtspServer};
use vodfleet_tests::probe::{audio_info, video_info};
use vodfleet_tests::{poll, unique, Recording, RtmpServer, Running, Worker};

const PASSWORD: &str = "rtsp-pw-canary-93b1";

fn task(src: Value, rtmp: &RtmpServer, key: &str) -> Value {
    json!({
        "id": unique("rtsp"),
        "src": src,
        "forward": [{"url": rtmp.url(key)}],
        "extendParam": {"loop": "1"}
    })
}

/// When nginx wrote the first media packet of `key` into its recording (the
/// file grows past its FLV header and metadata), polled every 25 ms.
fn first_packet_at(rtmp: &RtmpServer, key: &str, timeout: Duration) -> Option<Instant> {
    let path = rtmp.record_path(key);
    poll(timeout, || {
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        (len > 2048).then(Instant::now)
    })
}

/// The seconds of slate the task put on air (its `slate_ended` events).
fn slate_secs(w: &Running) -> f64 {
    w.events_named("slate_ended")
        .iter()
        .map(|e| e["duration_ms"].as_u64().unwrap_or(0) as f64 / 1000.0)
        .sum()
}

/// Plays `src` to its end and checks the recording: one session, H.264 +
/// AAC, `want` ± `slack` seconds of video (plus any slate the task put on
/// air), monotonic, decoding cleanly.
fn assert_plays(src: Value, want: f64, slack: f64, env: &[(&str, &str)]) -> Running {
    assert_plays_timed(src, want, slack, env).0
}

/// [`assert_plays`], also returning how long after the worker started the
/// first media packet reached nginx.
fn assert_plays_timed(
    src: Value,
    want: f64,
    slack: f64,
    env: &[(&str, &str)],
) -> (Running, Duration) {
    let rtmp = RtmpServer::start();
    let key = unique("rtsp");
    let started = Instant::now();
    let mut w = Worker::play(task(src, &rtmp, &key), env);
    let on_air = first_packet_at(&rtmp, &key, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("never on air\n{}", w.report()));
    eprintln!(
        "on air {} ms after the worker started",
        (on_air - started).as_millis()
    );
    let status = w.wait_exit(Duration::from_secs(90));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    assert!(w.events_named("item_failed").is_empty(), "{}", w.report());
    rtmp.assert_one_session(&key);
    let path = rtmp.record_path(&key);
    let (v, a) = (video_info(&path), audio_info(&path));
    assert_eq!((v.codec.as_str(), v.width, v.height), ("h264", 320, 240));
    assert_eq!((a.codec.as_str(), a.sample_rate), ("aac", 44100));
    let rec = Recording::read(&path);
    let got = rec.video_secs();
    let want = want + slate_secs(&w);
    assert!(
        (got - want).abs() <= slack,
        "recorded {got:.3} s of video, want {want:.3} ± {slack} s: {}",
        rec.summary()
    );
    let audio = vodfleet_tests::probe::span(&rec.audio);
    assert!(
        (audio - got).abs() <= 0.5,
        "audio {audio:.3} s against video {got:.3} s: {}",
        rec.summary()
    );
    rec.assert_monotonic();
    rec.assert_decodes_cleanly();
    (w, on_air - started)
}

#[test]
fn an_item_goes_on_air_while_it_is_pulled() {
    let server = RtspServer::start(&RtspOptions::default());
    // 20 s of the pull: on air once the first keyframe and a second or so of
    // media are in, not once the pull has reached 20 s.
    let (w, on_air) = assert_plays_timed(
        json!([{"url": server.url(None), "relofftime": "0-20"}]),
        20.0,
        1.1,
        &[],
    );
    assert!(
        on_air <= Duration::from_secs(3),
        "on air {} ms after the worker started (at most 3000)\n{}",
        on_air.as_millis(),
        w.report()
    );
    assert!(
        w.events_named("slate_started").is_empty(),
        "a pull at real time needs no slate\n{}",
        w.report()
    );
}

#[test]
fn a_relofftime_range_of_an_authenticated_pull_plays_h264_and_aac() {
    let server = RtspServer::start(&RtspOptions {
        user: Some(("viewer".into(), PASSWORD.into())),
        seconds: None,
    });
    let url = server.url(Some(&format!("viewer:{PASSWORD}")));
    // 2–6 s of the pull: 4 s, from the keyframe at or before 2 s (GOP 1 s).
    let w = assert_plays(json!([{"url": url, "relofftime": "2-6"}]), 4.0, 1.1, &[]);
    w.assert_not_printed(PASSWORD);
}

#[test]
fn two_ranges_of_one_pull_play_in_turn_the_second_once_the_pull_gets_there() {
    let server = RtspServer::start(&RtspOptions::default());
    // 0–2 s, then 5–7 s from the keyframe at or before 5 s (GOP 1 s): the
    // second range's start is ahead of the pull when the first ends, and the
    // task waits for it (covered by the slate if long) before seeking.
    let w = assert_plays(
        json!([{"url": server.url(None), "relofftime": "0-2;5-7"}]),
        4.0,
        1.1,
        &[],
    );
    assert!(w.events_named("item_failed").is_empty(), "{}", w.report());
}

#[test]
fn a_stream_the_server_ends_plays_to_its_end() {
    let server = RtspServer::start(&RtspOptions {
        user: None,
        seconds: Some(3),
    });
    assert_plays(json!([{"url": server.url(None)}]), 3.0, 0.3, &[]);
}

/// A TCP relay on 127.0.0.1 to `to`: its first connection goes silent from
/// the server's side after `after` (the sockets stay open, nothing more is
/// passed on), later ones relay both ways. Returns its port and a count of
/// connections.
fn stalling_relay(to: u16, after: Duration) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                return;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || relay(c2, s2, None));
            std::thread::spawn(move || relay(server, client, (n == 0).then_some(after)));
        }
    });
    (port, count)
}

fn relay(mut from: TcpStream, mut to: TcpStream, stall_after: Option<Duration>) {
    let start = Instant::now();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if stall_after.is_some_and(|d| start.elapsed() >= d) {
            // Hold both sockets open, silent, well past the worker's timeout.
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

#[test]
fn a_pull_that_stalls_is_covered_by_the_slate_then_resumes_after_what_it_has() {
    let server = RtspServer::start(&RtspOptions::default());
    let (port, connections) = stalling_relay(server.port(), Duration::from_secs(3));
    let url = format!("rtsp://127.0.0.1:{port}/test");
    // The first connection stalls after ~3 s, while the item is on air: the
    // late demux read is covered by the slate; after 2 s without media the
    // attempt fails and the next one appends the rest of the 8 s. The resumed
    // session's keyframes fall anywhere in the second, and copy mode ends
    // the range just before the keyframe at or after 8 s: 8–9 s of the item,
    // plus the slate.
    let w = assert_plays(
        json!([{"url": url, "relofftime": "0-8"}]),
        8.5,
        0.8,
        &[
            ("VODFLEET_SOURCE_TIMEOUT_MS", "2000"),
            ("VODFLEET_RETRY_BACKOFF_MS", "200"),
        ],
    );
    assert_eq!(connections.load(Ordering::SeqCst), 2, "{}", w.report());
    let err = w.stderr();
    assert!(
        err.contains("RTSP pull attempt failed") && err.contains("no media for 2000 ms"),
        "{}",
        w.report()
    );
    let started = w.events_named("slate_started");
    assert!(
        !started.is_empty() && started.iter().all(|e| e["waiting_for"] == "read"),
        "the stall mid-item is covered by the slate: {started:?}\n{}",
        w.report()
    );
    assert_eq!(started[0]["item"], 0, "{}", w.report());
    let slate = slate_secs(&w);
    assert!(
        (1.0..6.0).contains(&slate),
        "the slate covers the stall (2 s without media, then a new session): {slate:.3} s\n{}",
        w.report()
    );
}

/// `yyyymmddHHMMSS` (UTC) of Unix ms, as `absofftime` spells it.
fn civil(unix_ms: u64) -> String {
    vodfleet_proto::civil::iso8601_utc(unix_ms)
        .chars()
        .filter(char::is_ascii_digit)
        .collect()
}

#[test]
fn absofftime_resolves_against_the_wall_clock_of_the_pull() {
    let server = RtspServer::start(&RtspOptions::default());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // A 4 s window 2–3 s from now, in the pull's wall clock (which starts at
    // PLAY). Its ends fall between the pull's keyframes (one a second from
    // its start) unless by chance on one: copy mode plays from the keyframe
    // before the start to the one at or after the end, 5 s (4 s on a keyframe).
    let from = now / 1000 * 1000 + 3_000;
    let window = format!("{}-{}", civil(from), civil(from + 4_000));
    assert_plays(
        json!([{"url": server.url(None), "absofftime": window}]),
        4.5,
        0.6,
        &[],
    );
}

#[test]
fn wrong_credentials_and_a_closed_port_fail_their_items_by_name() {
    let server = RtspServer::start(&RtspOptions {
        user: Some(("viewer".into(), "right-password".into())),
        seconds: None,
    });
    let closed = closed_port();
    let rtmp = RtmpServer::start();
    let key = unique("rtsp-bad");
    let src = json!([
        {"url": server.url(Some(&format!("viewer:{PASSWORD}")))},
        {"url": format!("rtsp://viewer:{PASSWORD}@127.0.0.1:{closed}/cam?token={PASSWORD}")},
    ]);
    let mut w = Worker::play(
        task(src, &rtmp, &key),
        &[("VODFLEET_RETRY_BACKOFF_MS", "200")],
    );
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "every item fails\n{}", w.report());
    let failed = w.events_named("item_failed");
    assert_eq!(failed.len(), 2, "{}", w.report());
    let error = |i: usize| failed[i]["error"].as_str().unwrap_or_default().to_owned();
    let (auth, conn) = (error(0), error(1));
    assert!(
        auth.contains(&format!("rtsp://127.0.0.1:{}/test", server.port()))
            && auth.contains("401")
            && auth.contains("credentials"),
        "{auth}"
    );
    assert_eq!(failed[0]["error_kind"], "refused", "{}", w.report());
    assert!(
        auth.contains("attempt 1 of"),
        "a refusal is not retried: {auth}"
    );
    assert!(
        conn.contains(&format!("rtsp://127.0.0.1:{closed}/cam?…")) && conn.contains("connect"),
        "{conn}"
    );
    assert_eq!(failed[1]["error_kind"], "unreachable", "{}", w.report());
    w.assert_not_printed(PASSWORD);
    assert!(!rtmp.has_stream(&key), "nothing is published");
}

#[test]
fn a_loopback_rtsp_source_is_refused_without_the_setting_and_never_contacted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let rtmp = RtmpServer::start();
    let key = unique("rtsp-private");
    let mut w = Worker::play_unset(
        task(
            json!([{"url": format!("rtsp://localhost:{port}/test")}]),
            &rtmp,
            &key,
        ),
        &["VODFLEET_ALLOW_PRIVATE_NETWORKS"],
        &[("VODFLEET_RETRY_BACKOFF_MS", "200")],
    );
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "the item fails\n{}", w.report());
    let failed = w.events_named("item_failed");
    let error = failed
        .first()
        .and_then(|e| e["error"].as_str())
        .unwrap_or_default();
    assert!(
        error.contains(&format!("rtsp://localhost:{port}/test"))
            && error.contains("loopback")
            && error.contains("VODFLEET_ALLOW_PRIVATE_NETWORKS"),
        "{error}\n{}",
        w.report()
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the refused address was contacted"
    );
}
