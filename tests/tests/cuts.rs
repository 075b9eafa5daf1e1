//! `relofftime` cuts an item into ranges played in order (docs/contract.md#src,
//! docs/design/timeline.md#cuts-relofftime): a 10 s
//! file cut to "1-3;5-6" plays 3 s, each cut starting at the keyframe at or
//! before its start (copy mode), so at most one GOP longer per cut.
//! `absofftime` names wall-clock ranges, resolved against the start time the
//! recording states (mp4 `creation_time`, FLV `onMetaData` `creationdate`).

use serde_json::json;
use std::time::Duration;

use vodfleet_tests::{unique, Container, Media, MediaSpec, Pattern, Recording, RtmpServer, Worker};

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

/// Plays `src` as one task item with `absofftime` = `window` and checks that
/// about `want_secs` of it arrived (copy mode: each range from the keyframe at
/// or before its start, so up to one GOP more per range), in one session that
/// decodes cleanly.
fn assert_absolute_cut(src: &Media, window: &str, want_secs: f64) {
    let cuts = window.split(';').count() as f64;
    let gop = f64::from(GOP_FRAMES) / FPS;
    let rtmp = RtmpServer::start();
    let key = unique("abscut");
    let task = json!({
        "id": unique("abscut"),
        "src": [{"url": src.vod_url(), "absofftime": window}],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"}
    });
    let mut w = Worker::play(task, &[]);
    let status = w.wait_exit(Duration::from_secs(40));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    assert!(w.events_named("item_failed").is_empty(), "{}", w.report());
    rtmp.assert_one_session(&key);
    let rec = Recording::read(&rtmp.record_path(&key));
    let got = rec.video_secs();
    let (lo, hi) = (want_secs - 2.0 / FPS, want_secs + cuts * gop + 2.0 / FPS);
    assert!(
        (lo..=hi).contains(&got),
        "recorded video lasts {got:.3} s, want {want_secs} s (between {lo:.3} and {hi:.3}): {}",
        rec.summary()
    );
    rec.assert_monotonic();
    rec.assert_decodes_cleanly();
}

#[test]
fn absofftime_plays_the_window_of_the_recordings_own_clock() {
    // An mp4 whose creation_time is 15:30:00 UTC: 15:30:04–15:30:08 is 4 s.
    let mp4 = MediaSpec::new(Container::Mp4, 10.0, "640x360", 25, GOP_FRAMES)
        .tag("creation_time", "2018-10-22T15:30:00Z")
        .generate();
    assert_absolute_cut(&mp4, "20181022153004-20181022153008", 4.0);
    // An FLV stating it in onMetaData as `creationdate` (asctime), two ranges,
    // the second running past the end of the recording (clipped: 2 + 1 s).
    let flv = MediaSpec::new(Container::Flv, 10.0, "640x360", 25, GOP_FRAMES)
        .tag("creationdate", "Mon Oct 22 15:30:00 2018")
        .generate();
    assert_absolute_cut(
        &flv,
        "20181022153001-20181022153003;20181022153009-20181022153100",
        3.0,
    );
}

#[test]
fn absofftime_on_a_recording_without_a_start_time_fails_that_item_by_name() {
    let undated = Media::mp4(4.0, "640x360", 25, GOP_FRAMES, Pattern::TestSrc2);
    let dated = MediaSpec::new(Container::Mp4, 4.0, "640x360", 25, GOP_FRAMES)
        .tag("creation_time", "2018-10-22T15:30:00Z")
        .generate();
    let next = Media::mp4(2.0, "640x360", 25, GOP_FRAMES, Pattern::TestSrc2);
    let rtmp = RtmpServer::start();
    let key = unique("abscut");
    let task = json!({
        "id": unique("abscut"),
        "src": [
            {"url": undated.vod_url(), "absofftime": "20181022153000-20181022153002"},
            {"url": dated.vod_url(), "absofftime": "20190101000000-20190101000100"},
            {"url": next.vod_url()}
        ],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"}
    });
    let mut w = Worker::play(task, &[]);
    let status = w.wait_exit(Duration::from_secs(40));
    assert_eq!(
        status.code(),
        Some(0),
        "the task goes on with the next item\n{}",
        w.report()
    );
    let failed = w.events_named("item_failed");
    assert_eq!(failed.len(), 2, "{}", w.report());
    let error = |i: usize| failed[i]["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error(0).contains("item 0") && error(0).contains("states no start time"),
        "{}",
        error(0)
    );
    assert!(
        error(1).contains("item 1")
            && error(1).contains(
                "no range falls within the recording, which starts at 2018-10-22T15:30:00Z"
            ),
        "{}",
        error(1)
    );
    // The third item plays whole, alone in the one session.
    rtmp.assert_one_session(&key);
    let rec = Recording::read(&rtmp.record_path(&key));
    assert!((rec.video_secs() - 2.0).abs() < 0.2, "{}", rec.summary());
}
