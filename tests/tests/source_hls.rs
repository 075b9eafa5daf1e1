//! HLS VOD sources (issue 8): MPEG-TS and fMP4 media playlists and one level
//! of master playlist, served by a real HTTP server (Python's `http.server`
//! over a directory ffmpeg's HLS muxer wrote), played for their full duration
//! and judged from what nginx-rtmp recorded; a nested master and a segment on
//! a refused address fail by name; `EXT-X-PROGRAM-DATE-TIME` anchors
//! `absofftime`.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vodfleet_tests::media::ffmpeg;
use vodfleet_tests::probe::{audio_info, span};
use vodfleet_tests::rtmp::free_port;
use vodfleet_tests::{poll, unique, Media, Pattern, Recording, RtmpServer, Running, Worker};

/// `python3 -m http.server` over a directory, on 127.0.0.1.
struct DirServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl DirServer {
    fn start(dir: tempfile::TempDir) -> DirServer {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let up = poll(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "http.server did not listen");
        DirServer {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for DirServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Cuts `media` into 2 s HLS segments in `dir/sub` (`fmp4` or MPEG-TS).
fn segment(media: &Media, dir: &Path, sub: &str, fmp4: bool) -> PathBuf {
    let out = dir.join(sub);
    std::fs::create_dir_all(&out).unwrap();
    let mut cmd = Command::new(ffmpeg());
    cmd.args(["-hide_banner", "-v", "error", "-y", "-i"])
        .arg(&media.path)
        .args([
            "-c",
            "copy",
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_playlist_type",
            "vod",
        ]);
    if fmp4 {
        cmd.args([
            "-hls_segment_type",
            "fmp4",
            "-hls_fmp4_init_filename",
            "init.mp4",
        ]);
        cmd.arg("-hls_segment_filename").arg(out.join("s%03d.m4s"));
    } else {
        cmd.arg("-hls_segment_filename").arg(out.join("s%03d.ts"));
    }
    let o = cmd.arg(out.join("index.m3u8")).output().expect("ffmpeg");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.join("index.m3u8")
}

fn play(url: &str, extra: Value) -> (Running, RtmpServer, String) {
    let rtmp = RtmpServer::start();
    let key = unique("hls");
    let mut src = json!({"url": url});
    if let (Some(s), Some(e)) = (src.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let task = json!({
        "id": unique("hls"),
        "src": [src],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"}
    });
    (Worker::play(task, &[]), rtmp, key)
}

fn assert_plays(url: &str, extra: Value, want_secs: f64, slack: f64) {
    let (mut w, rtmp, key) = play(url, extra);
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    assert!(w.events_named("item_failed").is_empty(), "{}", w.report());
    rtmp.assert_one_session(&key);
    let rec = Recording::read(&rtmp.record_path(&key));
    let got = rec.video_secs();
    assert!(
        (got - want_secs).abs() <= slack,
        "{url}: recorded {got:.3} s, want {want_secs} s: {}",
        rec.summary()
    );
    rec.assert_monotonic();
    rec.assert_decodes_cleanly();
    assert_audio_follows_video(&rec);
}

/// The recording carries the source's AAC audio alongside its whole picture:
/// MPEG-TS carries AAC ADTS-framed, which copy mode turns into raw frames and
/// a sequence header (engine/src/media/adts.rs).
fn assert_audio_follows_video(rec: &Recording) {
    assert!(!rec.audio.is_empty(), "no audio: {}", rec.summary());
    assert_eq!(audio_info(&rec.path).codec, "aac", "{}", rec.summary());
    let (a, v) = (span(&rec.audio), rec.video_secs());
    assert!(
        (a - v).abs() <= 0.1,
        "audio spans {a:.3} s, video {v:.3} s: {}",
        rec.summary()
    );
    rec.assert_no_gap("audio", 0.1);
}

fn failed_item(url: &str) -> String {
    let (mut w, _rtmp, _key) = play(url, json!({}));
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(1),
        "the only item fails\n{}",
        w.report()
    );
    let failed = w.events_named("item_failed");
    failed
        .first()
        .and_then(|e| e["error"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn ts_fmp4_and_master_playlists_play_for_their_full_duration() {
    let media = Media::mp4(6.0, "640x360", 25, 25, Pattern::TestSrc2);
    let dir = tempfile::tempdir().unwrap();
    segment(&media, dir.path(), "ts", false);
    segment(&media, dir.path(), "fmp4", true);
    std::fs::write(
        dir.path().join("master.m3u8"),
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=400000\nts/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2000000\nfmp4/index.m3u8\n",
    )
    .unwrap();
    let server = DirServer::start(dir);
    assert_plays(&server.url("ts/index.m3u8"), json!({}), 6.0, 0.2);
    assert_plays(&server.url("fmp4/index.m3u8"), json!({}), 6.0, 0.2);
    assert_plays(&server.url("master.m3u8"), json!({}), 6.0, 0.2);
}

#[test]
fn program_date_time_anchors_absofftime() {
    let media = Media::mp4(10.0, "640x360", 25, 25, Pattern::TestSrc2);
    let dir = tempfile::tempdir().unwrap();
    let index = segment(&media, dir.path(), "ts", false);
    let text = std::fs::read_to_string(&index).unwrap();
    let dated = text.replacen(
        "#EXTINF",
        "#EXT-X-PROGRAM-DATE-TIME:2018-10-22T15:30:00.000Z\n#EXTINF",
        1,
    );
    std::fs::write(&index, dated).unwrap();
    let server = DirServer::start(dir);
    // 15:30:04–15:30:08: 4 s, from the keyframe at or before 4 s (GOP 1 s).
    assert_plays(
        &server.url("ts/index.m3u8"),
        json!({"absofftime": "20181022153004-20181022153008"}),
        4.0,
        1.1,
    );
}

#[test]
fn a_nested_master_and_a_segment_on_a_refused_address_fail_by_name() {
    let media = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    let dir = tempfile::tempdir().unwrap();
    let index = segment(&media, dir.path(), "ts", false);
    std::fs::write(
        dir.path().join("outer.m3u8"),
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\ninner.m3u8\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("inner.m3u8"),
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nts/index.m3u8\n",
    )
    .unwrap();
    // A segment on the cloud metadata address, refused even with private
    // networks allowed (the tests allow them to reach this server).
    let text = std::fs::read_to_string(&index).unwrap();
    let evil = text.replacen("s001.ts", "http://169.254.169.254/latest/s001.ts", 1);
    let evil = if evil == text {
        text.replacen("s000.ts", "http://169.254.169.254/latest/s000.ts", 1)
    } else {
        evil
    };
    std::fs::write(dir.path().join("ts/evil.m3u8"), evil).unwrap();
    let server = DirServer::start(dir);

    let e = failed_item(&server.url("outer.m3u8"));
    assert!(
        e.contains("only one level") && e.contains("outer.m3u8"),
        "{e}"
    );
    let e = failed_item(&server.url("ts/evil.m3u8"));
    assert!(
        e.contains("169.254.169.254") && e.contains("refused"),
        "{e}"
    );
}
