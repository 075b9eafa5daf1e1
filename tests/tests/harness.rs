//! Self-test of the harness: the pieces the worker tests rely on must themselves
//! behave as claimed, checked with plain clients (ffmpeg CLI, TcpStream).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vodfleet_tests::probe;
use vodfleet_tests::{
    closed_port, poll, unique, wait_until, Behavior, Dropper, HttpServer, Media, Pattern,
    RtmpServer,
};

/// A raw HTTP/1.1 exchange: status code, head, body bytes received, and whether the
/// connection ended (EOF) rather than timing out.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
    eof: bool,
}

fn raw_get(port: u16, path: &str, extra: &str, read_timeout: Duration) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(read_timeout)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let eof = loop {
        match s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false
            }
            Err(_) => break true,
        }
    };
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head,
        body: buf[split..].to_vec(),
        eof,
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

#[test]
fn generated_media_are_what_the_tests_assume() {
    let a = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    let b = Media::mp4(2.0, "640x360", 25, 25, Pattern::SmpteBars);
    let c = Media::flv(2.0, "640x360", 25, 25, Pattern::TestSrc);
    assert_ne!(a.bytes(), b.bytes(), "the two mp4 items must differ");
    for m in [&a, &b, &c] {
        let v = probe::video_info(&m.path);
        assert_eq!(
            (v.codec.as_str(), v.width, v.height),
            ("h264", 640, 360),
            "{}",
            m.name
        );
        assert!((v.r_frame_rate - 25.0).abs() < 0.01, "{}: {v:?}", m.name);
        let au = probe::audio_info(&m.path);
        assert_eq!(
            (au.codec.as_str(), au.sample_rate, au.channels),
            ("aac", 44100, 2)
        );
        let secs = m.video_secs();
        assert!((secs - 2.0).abs() < 0.001, "{}: video lasts {secs}", m.name);
        assert_eq!(probe::decode_errors(&m.path), "", "{}", m.name);
    }
    // The cache hands back the same file.
    let again = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    assert_eq!(again.path, a.path);
    // Fixed GOP: keyframes exactly every 12 frames.
    let g = Media::mp4(2.0, "640x360", 25, 12, Pattern::TestSrc2);
    let mut v = probe::video(&probe::packets(&g.path));
    v.sort_by(|x, y| x.pts.total_cmp(&y.pts));
    let keys: Vec<usize> = v
        .iter()
        .enumerate()
        .filter(|(_, p)| p.key)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(keys, vec![0, 12, 24, 36, 48]);
}

#[test]
fn rtmp_server_records_what_is_published() {
    let rtmp = RtmpServer::start();
    let media = Media::flv(2.0, "640x360", 25, 25, Pattern::TestSrc);
    let key = unique("harness");
    assert!(!rtmp.is_publishing(&key));
    assert_eq!(rtmp.publish_sessions(&key), 0);
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-re", "-i"])
        .arg(&media.path)
        .args(["-c", "copy", "-f", "flv"])
        .arg(rtmp.url(&key))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg");
    rtmp.wait_publishing(&key, Duration::from_secs(10));
    let status =
        poll(Duration::from_secs(20), || ffmpeg.try_wait().unwrap()).unwrap_or_else(|| {
            let _ = ffmpeg.kill();
            panic!("ffmpeg publisher did not finish")
        });
    let mut err = String::new();
    ffmpeg
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "ffmpeg publish failed: {err}");
    rtmp.wait_unpublished(&key, Duration::from_secs(10));
    wait_until(
        "the access log has the session",
        Duration::from_secs(5),
        || rtmp.publish_sessions(&key) >= 1,
    );
    assert_eq!(rtmp.publish_sessions(&key), 1, "{}", rtmp.access_log());
    assert_eq!(rtmp.publish_sessions("no-such-key"), 0);

    let rec = rtmp.record_path(&key);
    let pkts = probe::packets(&rec);
    let v = probe::video(&pkts);
    let a = probe::audio(&pkts);
    eprintln!("recorded: {}", probe::summary(&pkts));
    let want = media.video_secs();
    let got = probe::span(&v);
    assert!(
        (got - want).abs() <= 2.0 / 25.0,
        "recorded video {got:.3} s, published {want:.3} s: {}",
        probe::summary(&pkts)
    );
    assert!(!a.is_empty(), "no audio recorded");
    assert_eq!(probe::dts_regression(&v), None);
    assert_eq!(probe::dts_regression(&a), None);
    assert!(
        probe::max_dts_gap(&v).0 <= 0.1,
        "{:?}",
        probe::max_dts_gap(&v)
    );
    assert_eq!(probe::decode_errors(&rec), "");
    let info = probe::video_info(&rec);
    assert_eq!(
        (info.codec.as_str(), info.width, info.height),
        ("h264", 640, 360)
    );
    assert!((probe::measured_fps(&v) - 25.0).abs() < 0.5);
}

#[test]
fn http_server_follows_its_script() {
    let media = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    let body = media.bytes();
    let server = HttpServer::start(
        &media.path,
        vec![
            Behavior::Status(500),
            Behavior::Ok,
            Behavior::Ok,
            Behavior::DropMidBody,
            Behavior::Stall,
        ],
    );
    let t = Duration::from_secs(5);

    let r = raw_get(server.port(), "/a.mp4?token=x", "", t);
    assert_eq!(r.status, 500);
    assert!(r.eof);

    let r = raw_get(server.port(), "/a.mp4", "", t);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body, body);
    assert_eq!(
        header(&r.head, "content-length"),
        Some(body.len().to_string().as_str())
    );

    let from = body.len() / 3;
    let r = raw_get(
        server.port(),
        "/a.mp4",
        &format!("Range: bytes={from}-\r\n"),
        t,
    );
    assert_eq!(r.status, 206, "{}", r.head);
    assert_eq!(r.body, &body[from..]);
    let want_range = format!("bytes {from}-{}/{}", body.len() - 1, body.len());
    assert_eq!(header(&r.head, "content-range"), Some(want_range.as_str()));

    let r = raw_get(server.port(), "/a.mp4", "", t);
    assert_eq!(r.status, 200);
    assert!(r.eof, "the connection is closed");
    assert_eq!(r.body.len(), body.len() / 2, "half the body, then close");
    assert_eq!(r.body, &body[..body.len() / 2]);

    let stall_timeout = Duration::from_millis(300);
    let before = Instant::now();
    let r = raw_get(server.port(), "/a.mp4", "", stall_timeout);
    assert!(!r.eof, "a stalled connection stays open");
    assert!(r.head.is_empty() && r.body.is_empty());
    assert!(before.elapsed() >= stall_timeout);

    // Past the script: Ok.
    let r = raw_get(server.port(), "/b.mp4", "", t);
    assert_eq!(r.status, 200);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 6);
    assert_eq!(reqs[0].target, "/a.mp4?token=x");
    assert_eq!(reqs[0].behavior, Behavior::Status(500));
    assert_eq!(
        reqs[2].range.as_deref(),
        Some(format!("bytes={from}-").as_str())
    );
    assert_eq!(reqs[4].behavior, Behavior::Stall);
    assert!(reqs.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(reqs[5].behavior, Behavior::Ok);
}

#[test]
fn dropper_black_hole_and_closed_port() {
    let dropper = Dropper::start();
    for i in 1..=3 {
        let mut s = TcpStream::connect(("127.0.0.1", dropper.port())).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        // Closed by the server: EOF (or a reset), never data, never a timeout.
        match s.read(&mut b) {
            Ok(0) => {}
            Ok(n) => panic!("dropper sent {n} bytes"),
            Err(e) => assert!(
                !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "{e}"
            ),
        }
        wait_until(
            "dropper counted the connection",
            Duration::from_secs(5),
            || dropper.accepts() == i,
        );
    }
    assert_eq!(dropper.accepts(), 3);

    let hole = Dropper::black_hole();
    let mut s = TcpStream::connect(("127.0.0.1", hole.port())).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 1];
    let e = s.read(&mut b).expect_err("a black hole never answers");
    assert!(
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{e}"
    );
    assert_eq!(hole.accepts(), 1);

    let port = closed_port();
    let e = TcpStream::connect(("127.0.0.1", port)).expect_err("closed port");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
}
