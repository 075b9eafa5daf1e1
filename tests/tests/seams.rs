//! Unlike seams in copy mode (docs/design/timeline.md, "Seams"): an item whose
//! audio codec differs from the stream's AAC (MP3 after AAC) is conformed,
//! its audio transcoded to AAC while its video is copied, so the playlist
//! stays one publish session that decodes cleanly, AAC throughout.

use serde_json::json;
use std::time::Duration;
use vodfleet_tests::probe::{audio_info, max_dts_gap, span};
use vodfleet_tests::{unique, Container, MediaSpec, Recording, RtmpServer, Worker};

#[test]
fn mp3_after_aac_in_copy_mode_is_conformed_to_aac_in_one_session() {
    let aac = MediaSpec::new(Container::Mp4, 3.0, "640x360", 25, 25).generate();
    let mp3 = MediaSpec::new(Container::Flv, 3.0, "640x360", 25, 25)
        .tone(880)
        .mp3()
        .generate();
    let tail = MediaSpec::new(Container::Mp4, 2.0, "640x360", 25, 25).generate();
    let rtmp = RtmpServer::start();
    let key = unique("seam");
    let task = json!({
        "id": unique("seam"),
        "src": [{"url": aac.vod_url()}, {"url": mp3.vod_url()}, {"url": tail.vod_url()}],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"}
    });
    let mut w = Worker::play(task, &[]);
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    assert!(
        w.events_named("item_failed").is_empty(),
        "no item failed: {}",
        w.report()
    );
    assert!(
        w.report().contains("conforming it"),
        "the conform path is logged\n{}",
        w.report()
    );
    rtmp.assert_one_session(&key);
    let rec = Recording::read(&rtmp.record_path(&key));
    assert_eq!(audio_info(&rec.path).codec, "aac", "{}", rec.summary());
    let (video, audio) = (rec.video_secs(), span(&rec.audio));
    assert!(
        (video - 8.0).abs() < 0.3,
        "video {video:.3} s of 8: {}",
        rec.summary()
    );
    assert!(
        (audio - 8.0).abs() < 0.3,
        "audio {audio:.3} s of 8: {}",
        rec.summary()
    );
    let (gap, at) = max_dts_gap(&rec.audio);
    assert!(
        gap < 0.1,
        "audio gap of {gap:.3} s at {at:.3} s: {}",
        rec.summary()
    );
    rec.assert_monotonic();
    rec.assert_decodes_cleanly();
}
