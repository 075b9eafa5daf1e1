//! The worker's stream reaches three independent RTMP receivers at once, each
//! judged by ffprobe on what it received: nginx-rtmp, FFmpeg's own RTMP server
//! mode, and nginx-rtmp behind a TLS terminator (stunnel) as `rtmps://`, with
//! a private CA given to the worker as `VODFLEET_DESTINATION_CA_FILE`
//! (docs/design/engine.md, "Our own FLV/RTMP writer").

use serde_json::json;
use std::time::Duration;

use vodfleet_tests::peers::{FfmpegListener, Stunnel, TestCa};
use vodfleet_tests::worker::is_destination;
use vodfleet_tests::{probe, unique, Media, Pattern, Recording, RtmpServer, Worker};

const FPS: f64 = 25.0;

#[test]
fn one_task_reaches_nginx_ffmpeg_and_rtmps_receivers() {
    let media = Media::mp4(4.0, "640x360", 25, 25, Pattern::TestSrc2);
    let rtmp = RtmpServer::start();
    let ca = TestCa::new();
    let tls = Stunnel::start(&ca, rtmp.rtmp_port());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ffmpeg-received.flv");
    let ff_key = unique("ff");
    let mut listener = FfmpegListener::start("app", &ff_key, &out);
    // Listening before the worker starts: a destination that connects late
    // misses what was sent meanwhile, by design.
    listener.wait_listening(Duration::from_secs(10));
    let (plain, secure) = (unique("plain"), unique("secure"));
    let task = json!({
        "id": unique("receivers"),
        "src": [{"url": media.vod_url()}],
        "forward": [
            {"url": rtmp.url(&plain)},
            {"url": format!("rtmp://127.0.0.1:{}/app/{ff_key}", listener.port())},
            {"url": format!("rtmps://127.0.0.1:{}/live/{secure}", tls.port())}
        ],
        "extendParam": {"loop": "1"}
    });
    let ca_file = ca.ca_pem();
    let mut w = Worker::play(
        task,
        &[("VODFLEET_DESTINATION_CA_FILE", ca_file.to_str().unwrap())],
    );
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", w.report());
    for i in 0..3 {
        assert!(
            !w.events().iter().any(|e| is_destination(e, i, "failed")),
            "destination {i} failed\n{}",
            w.report()
        );
    }
    // All of it, in order, decodable: what every receiver must have.
    let want = media.video_secs();
    let judge = |what: &str, path: &std::path::Path| {
        let rec = Recording::read(path);
        assert!(
            (rec.video_secs() - want).abs() <= 2.0 / FPS,
            "{what}: {:.3} s of video for {want:.3} s: {}",
            rec.video_secs(),
            rec.summary()
        );
        rec.assert_monotonic();
        rec.assert_decodes_cleanly();
    };
    for (what, key) in [("nginx", &plain), ("nginx over rtmps", &secure)] {
        rtmp.assert_one_session(key);
        judge(what, &rtmp.record_path(key));
    }
    let exit = listener.wait(Duration::from_secs(20));
    assert!(
        exit.success(),
        "ffmpeg -listen: {exit:?}\n{}",
        listener.log()
    );
    judge("ffmpeg -listen", &out);
    let (v, a) = (probe::video_info(&out), probe::audio_info(&out));
    assert_eq!(
        (v.codec.as_str(), v.width, v.height),
        ("h264", 640, 360),
        "ffmpeg's video"
    );
    assert_eq!(
        (a.codec.as_str(), a.sample_rate),
        ("aac", 44_100),
        "ffmpeg's audio"
    );
    for key in [&plain, &secure, &ff_key] {
        w.assert_not_printed(key);
    }
}
