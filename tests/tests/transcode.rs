//! `fops` transcoding (docs/contract.md#fops): size, frame rate and bitrate of what nginx
//! recorded, measured by ffprobe.

use serde_json::{json, Value};
use std::time::Duration;

use vodfleet_tests::probe::{self, Recording};
use vodfleet_tests::{unique, Media, Pattern, RtmpServer, Worker};

struct Want {
    width: u32,
    height: u32,
    fps: f64,
    kbps: f64,
}

fn transcode(source: &Media, fops: Value, want: Want) {
    let rtmp = RtmpServer::start();
    let key = unique("transcode");
    let task = json!({
        "id": unique("transcode"),
        "src": [{"url": source.vod_url()}],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"},
        "fops": fops
    });
    let mut w = Worker::play(task, &[]);
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    rtmp.assert_one_session(&key);

    let path = rtmp.record_path(&key);
    let rec = Recording::read(&path);
    let info = probe::video_info(&path);
    assert_eq!(info.codec, "h264", "{info:?}");
    assert_eq!(
        (info.width, info.height),
        (want.width, want.height),
        "{info:?}"
    );
    let fps = probe::measured_fps(&rec.video);
    assert!(
        (fps - want.fps).abs() <= 0.5,
        "measured {fps:.2} fps (r_frame_rate {:.2}), want {}: {}",
        info.r_frame_rate,
        want.fps,
        rec.summary()
    );
    if info.r_frame_rate > 0.0 {
        assert!(
            (info.r_frame_rate - want.fps).abs() <= 0.5,
            "r_frame_rate {:.2}, want {}",
            info.r_frame_rate,
            want.fps
        );
    }
    let kbps = probe::kbps(&rec.video);
    assert!(
        (kbps - want.kbps).abs() <= 0.15 * want.kbps,
        "video bitrate {kbps:.1} kbit/s, want {} ±15%: {}",
        want.kbps,
        rec.summary()
    );
    let want_secs = source.video_secs();
    assert!(
        (rec.video_secs() - want_secs).abs() <= 2.0 / want.fps,
        "recorded {:.3} s of video, source has {want_secs:.3} s",
        rec.video_secs()
    );
    assert!(!rec.audio.is_empty(), "no audio recorded");
    // Audio and picture start and end together (encoder priming and frame
    // threading must not shift one against the other).
    let (vs, as_) = (probe::start(&rec.video), probe::start(&rec.audio));
    assert!(
        (vs - as_).abs() <= 0.05,
        "audio starts at {as_:.3} s, video at {vs:.3} s"
    );
    let (ve, ae) = (probe::end(&rec.video), probe::end(&rec.audio));
    assert!(
        (ve - ae).abs() <= 0.05,
        "audio ends at {ae:.3} s, video at {ve:.3} s"
    );
    rec.assert_monotonic();
    rec.assert_decodes_cleanly();
    w.assert_not_printed(&key);
}

#[test]
fn res_fps_bps_are_applied() {
    let source = Media::mp4(8.0, "640x360", 30, 30, Pattern::TestSrc2);
    transcode(
        &source,
        json!({"res": "854x480", "fps": "25", "bps": "600"}),
        Want {
            width: 854,
            height: 480,
            fps: 25.0,
            kbps: 600.0,
        },
    );
}

#[test]
fn preset_360p_is_640x360_at_400k() {
    let source = Media::mp4(8.0, "1280x720", 25, 25, Pattern::TestSrc2);
    transcode(
        &source,
        json!({"preset": "360p"}),
        Want {
            width: 640,
            height: 360,
            fps: 25.0,
            kbps: 400.0,
        },
    );
}
