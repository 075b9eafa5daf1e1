//! MPEG-TS items in copy mode (issue 8): their AAC is ADTS-framed and its
//! codec parameters carry no AudioSpecificConfig, so the worker builds the
//! AAC sequence header from the ADTS headers and sends raw frames
//! (engine/src/media/adts.rs). A `vod://` .ts file plays with its audio, and
//! a playlist that goes from MPEG-TS to mp4 (another rate and layout) and back
//! stays one session whose every audio frame decodes at its item's parameters.

use vodfleet_tests::probe::{audio_info, audio_parameters};
use vodfleet_tests::worker::play_copy;
use vodfleet_tests::{Container, Media, MediaSpec, Recording, RtmpServer};

/// [`play_copy`] and, on top, AAC audio without a gap.
fn play_ts(items: &[&Media], secs: f64) -> (RtmpServer, Recording) {
    let (rtmp, rec, _) = play_copy(items, secs);
    assert!(!rec.audio.is_empty(), "no audio: {}", rec.summary());
    assert_eq!(audio_info(&rec.path).codec, "aac", "{}", rec.summary());
    rec.assert_no_gap("audio", 0.1);
    (rtmp, rec)
}

#[test]
fn a_ts_file_item_plays_with_its_aac_audio_in_copy_mode() {
    let ts = MediaSpec::new(Container::Ts, 5.0, "640x360", 25, 25).generate();
    let (_rtmp, rec) = play_ts(&[&ts], 5.0);
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
    let (_rtmp, rec) = play_ts(&[&ts, &mono, &ts], 6.0);
    assert_eq!(
        audio_parameters(&rec.path),
        ["44100,2", "48000,1", "44100,2"],
        "decoded audio parameters, in order: {}",
        rec.summary()
    );
}
