//! MPEG-TS items in copy mode (issue 8): their AAC is ADTS-framed and its
//! codec parameters carry no AudioSpecificConfig, so the worker builds the
//! AAC sequence header from the ADTS headers and sends raw frames
//! (engine/src/media/adts.rs). A `vod://` .ts file plays with its audio, and
//! a playlist that goes from MPEG-TS to mp4 (another rate and layout) and back
//! stays one session whose every audio frame decodes at its item's parameters.

use serde_json::json;
use std::time::Duration;
use vodfleet_tests::probe::{audio_info, audio_parameters, span};
use vodfleet_tests::{unique, Container, Media, MediaSpec, Recording, RtmpServer, Worker};

/// Plays `items` in copy mode into one stream: no item failed, one publish
/// session, AAC audio as long as the picture (`secs`) without a gap, and a
/// recording that decodes cleanly. The server keeps the recording while it lives.
fn play_copy(items: &[&Media], secs: f64) -> (RtmpServer, Recording) {
    let rtmp = RtmpServer::start();
    let key = unique("ts");
    let task = json!({
        "id": unique("ts"),
        "src": items.iter().map(|m| json!({"url": m.vod_url()})).collect::<Vec<_>>(),
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"}
    });
    let mut w = Worker::play(task, &[]);
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    assert!(w.events_named("item_failed").is_empty(), "{}", w.report());
    let started = w.events_named("task_started");
    assert_eq!(started[0]["mode"], "copy", "{}", w.report());
    rtmp.assert_one_session(&key);
    let rec = Recording::read(&rtmp.record_path(&key));
    assert!(!rec.audio.is_empty(), "no audio: {}", rec.summary());
    assert_eq!(audio_info(&rec.path).codec, "aac", "{}", rec.summary());
    for (what, got) in [("video", rec.video_secs()), ("audio", span(&rec.audio))] {
        assert!(
            (got - secs).abs() < 0.3,
            "{what} {got:.3} s of {secs}: {}",
            rec.summary()
        );
    }
    rec.assert_no_gap("audio", 0.1);
    rec.assert_monotonic();
    rec.assert_decodes_cleanly();
    (rtmp, rec)
}

#[test]
fn a_ts_file_item_plays_with_its_aac_audio_in_copy_mode() {
    let ts = MediaSpec::new(Container::Ts, 5.0, "640x360", 25, 25).generate();
    let (_rtmp, rec) = play_copy(&[&ts], 5.0);
    assert_eq!(
        audio_parameters(&rec.path),
        ["44100,2"],
        "{}",
        rec.summary()
    );
}

#[test]
fn ts_then_mp4_then_ts_changes_the_aac_configuration_in_one_session() {
    let ts = MediaSpec::new(Container::Ts, 2.0, "640x360", 25, 25).generate();
    let mono = MediaSpec::new(Container::Mp4, 2.0, "640x360", 25, 25)
        .tone(880)
        .audio(48_000, 1)
        .generate();
    let (_rtmp, rec) = play_copy(&[&ts, &mono, &ts], 6.0);
    assert_eq!(
        audio_parameters(&rec.path),
        ["44100,2", "48000,1", "44100,2"],
        "decoded audio parameters, in order: {}",
        rec.summary()
    );
}
