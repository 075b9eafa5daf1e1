//! Watermarks (`wmimage` at `wmposition`, issue 8): a PNG with alpha drawn
//! into the pictures of its item, judged from the frames nginx-rtmp recorded.
//! A watermark makes its task transcode; an image that cannot be fetched or
//! decoded fails its item by name (docs/contract.md#src).

use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use vodfleet_tests::media::{ffmpeg, media_dir};
use vodfleet_tests::{unique, Container, MediaSpec, Pattern, Recording, RtmpServer, Worker};

/// A 64×64 PNG, red on its right half, fully transparent on its left half.
fn half_red_png() -> String {
    let name = "wm-half-red-64.png";
    let path = media_dir().join(name);
    if !path.exists() {
        let tmp = media_dir().join(format!(".{name}.{}.tmp.png", std::process::id()));
        let out = Command::new(ffmpeg())
            .args(["-hide_banner", "-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("color=c=red:s=64x64,format=rgba,geq=r=255:g=0:b=0:a='if(lt(X,32),0,255)'")
            .args(["-frames:v", "1"])
            .arg(&tmp)
            .output()
            .expect("ffmpeg");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, &path).unwrap();
    }
    format!("vod://{name}")
}

/// The RGB of pixel (x, y) of the picture at `at` seconds into `rec`.
fn pixel(rec: &Path, at: f64, (w, h): (usize, usize), (x, y): (usize, usize)) -> [u8; 3] {
    let out = Command::new(ffmpeg())
        .args(["-hide_banner", "-v", "error", "-ss", &at.to_string(), "-i"])
        .arg(rec)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg");
    assert_eq!(out.stdout.len(), w * h * 3, "one {w}x{h} frame");
    let i = (y * w + x) * 3;
    [out.stdout[i], out.stdout[i + 1], out.stdout[i + 2]]
}

fn red(p: [u8; 3]) -> bool {
    p[0] > 180 && p[1] < 90 && p[2] < 90
}

fn grey(p: [u8; 3]) -> bool {
    p.iter().all(|c| (100..160).contains(c))
}

#[test]
fn a_png_at_top_right_shows_with_its_alpha_and_nowhere_else() {
    let src = MediaSpec::new(Container::Mp4, 3.0, "640x360", 25, 25)
        .pattern(Pattern::Grey)
        .generate();
    let rtmp = RtmpServer::start();
    let key = unique("wm");
    let task = json!({
        "id": unique("wm"),
        "src": [{"url": src.vod_url(), "wmimage": half_red_png(), "wmposition": "TOP_RIGHT"}],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"}
    });
    let mut w = Worker::play(task, &[]);
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    rtmp.assert_one_session(&key);
    let rec = Recording::read(&rtmp.record_path(&key));
    rec.assert_decodes_cleanly();
    // 640x360: a margin of 10 px; the image spans x 566..630, y 10..74, its
    // opaque half x 598..630.
    let size = (640, 360);
    for at in [0.5, 2.0] {
        let opaque = pixel(&rec.path, at, size, (614, 42));
        let clear = pixel(&rec.path, at, size, (582, 42));
        let top_left = pixel(&rec.path, at, size, (42, 42));
        let below = pixel(&rec.path, at, size, (614, 120));
        assert!(red(opaque), "top-right, opaque half: {opaque:?} at {at} s");
        assert!(
            grey(clear),
            "top-right, transparent half: {clear:?} at {at} s"
        );
        assert!(grey(top_left), "top-left: {top_left:?} at {at} s");
        assert!(grey(below), "below the image: {below:?} at {at} s");
    }
}

#[test]
fn an_image_that_is_not_one_fails_its_item_by_name() {
    let src = MediaSpec::new(Container::Mp4, 2.0, "640x360", 25, 25)
        .pattern(Pattern::Grey)
        .generate();
    let rtmp = RtmpServer::start();
    let key = unique("wm");
    // A file named .png that holds text.
    let bogus = media_dir().join("wm-not-an-image.png");
    std::fs::write(&bogus, b"this is not a PNG").unwrap();
    let task = json!({
        "id": unique("wm"),
        "src": [
            {"url": src.vod_url(), "wmimage": "vod://wm-not-an-image.png", "wmposition": "CENTER"},
            {"url": src.vod_url()}
        ],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"}
    });
    let mut w = Worker::play(task, &[]);
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(0),
        "the next item plays\n{}",
        w.report()
    );
    let failed = w.events_named("item_failed");
    assert_eq!(failed.len(), 1, "{}", w.report());
    let error = failed[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("item 0") && error.contains("watermark image"),
        "{error}"
    );
    rtmp.assert_one_session(&key);
}
