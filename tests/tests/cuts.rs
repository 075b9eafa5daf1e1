//! `relofftime` cuts an item into ranges played in order (docs/contract.md#src,
//! docs/design/timeline.md#cuts-relofftime): a 10 s
//! file cut to "1-3;5-6" plays 3 s, each cut starting at the keyframe at or
//! before its start (copy mode), so at most one GOP longer per cut.

use serde_json::json;
use std::time::Duration;

use vodfleet_tests::{unique, Media, Pattern, Recording, RtmpServer, Worker};

const FPS: f64 = 25.0;
const GOP_FRAMES: u32 = 12;

#[test]
fn relofftime_plays_only_the_ranges() {
    let src = Media::mp4(10.0, "640x360", 25, GOP_FRAMES, Pattern::TestSrc2);
    let gop = f64::from(GOP_FRAMES) / FPS;
    let rtmp = RtmpServer::start();
    let key = unique("cuts");
    let task = json!({
        "id": unique("cuts"),
        "src": [{"url": src.vod_url(), "relofftime": "1-3;5-6"}],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"}
    });
    let mut w = Worker::play(task, &[]);
    let status = w.wait_exit(Duration::from_secs(40));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());

    rtmp.assert_one_session(&key);
    let rec = Recording::read(&rtmp.record_path(&key));
    let got = rec.video_secs();
    let (lo, hi) = (3.0 - 2.0 / FPS, 3.0 + 2.0 * gop);
    assert!(
        (lo..=hi).contains(&got),
        "recorded video lasts {got:.3} s, want 3 s of cuts (between {lo:.3} and {hi:.3}): {}",
        rec.summary()
    );
    rec.assert_monotonic();
    rec.assert_decodes_cleanly();
    w.assert_not_printed(&key);
}
