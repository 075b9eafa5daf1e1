//! Unlike seams in copy mode (docs/design/timeline.md, "Seams"): an item whose
//! audio codec differs from the stream's AAC (MP3 after AAC) is conformed,
//! its audio transcoded to AAC while its video is copied, so the playlist
//! stays one publish session that decodes cleanly, AAC throughout; an item
//! whose video codec differs from the stream's H.264 (HEVC) is conformed the
//! same way, its video encoded to H.264 at the stream's size and frame rate. Unlike
//! parameters of the same codecs (picture size, AAC sample rate and channels)
//! travel as new sequence headers: one session, every item's frames decoded
//! at its own parameters.

use std::path::Path;
use std::process::Command;
use vodfleet_tests::media::ffprobe;
use vodfleet_tests::probe::{audio_info, audio_parameters, picture_sizes, video_info};
use vodfleet_tests::worker::play_copy;
use vodfleet_tests::{Container, MediaSpec};

#[test]
fn mp3_after_aac_in_copy_mode_is_conformed_to_aac_in_one_session() {
    let aac = MediaSpec::new(Container::Mp4, 3.0, "640x360", 25, 25).generate();
    let mp3 = MediaSpec::new(Container::Flv, 3.0, "640x360", 25, 25)
        .tone(880)
        .mp3()
        .generate();
    let tail = MediaSpec::new(Container::Mp4, 2.0, "640x360", 25, 25).generate();
    let (_rtmp, rec, report) = play_copy(&[&aac, &mp3, &tail], 8.0);
    assert!(
        report.contains("conforming it"),
        "the conform path is logged\n{report}"
    );
    assert_eq!(audio_info(&rec.path).codec, "aac", "{}", rec.summary());
    rec.assert_no_gap("audio", 0.1);
}

#[test]
fn a_picture_size_change_in_copy_mode_is_one_session_with_new_sequence_headers() {
    let small = MediaSpec::new(Container::Mp4, 2.0, "640x360", 25, 25).generate();
    let large = MediaSpec::new(Container::Mp4, 2.0, "1280x720", 25, 25)
        .tone(880)
        .generate();
    let (_rtmp, rec, _) = play_copy(&[&small, &large, &small], 6.0);
    assert_eq!(
        picture_sizes(&rec.path),
        ["640,360", "1280,720", "640,360"],
        "decoded picture sizes, in order: {}",
        rec.summary()
    );
}

#[test]
fn an_aac_rate_and_channel_change_in_copy_mode_is_one_session_with_new_sequence_headers() {
    let stereo = MediaSpec::new(Container::Mp4, 2.0, "640x360", 25, 25).generate();
    let mono = MediaSpec::new(Container::Mp4, 2.0, "640x360", 25, 25)
        .tone(880)
        .audio(48_000, 1)
        .generate();
    let (_rtmp, rec, _) = play_copy(&[&stereo, &mono, &stereo], 6.0);
    assert_eq!(audio_info(&rec.path).codec, "aac", "{}", rec.summary());
    assert_eq!(
        audio_parameters(&rec.path),
        ["44100,2", "48000,1", "44100,2"],
        "decoded audio parameters, in order: {}",
        rec.summary()
    );
}

#[test]
fn hevc_after_h264_in_copy_mode_is_conformed_to_h264_in_one_session() {
    let h264 = MediaSpec::new(Container::Mp4, 2.0, "640x360", 25, 25).generate();
    let hevc = MediaSpec::new(Container::Mp4, 2.0, "640x360", 25, 25)
        .tone(880)
        .hevc()
        .generate();
    assert_eq!(
        video_info(&hevc.path).codec,
        "hevc",
        "the test media is HEVC"
    );
    let (_rtmp, rec, report) = play_copy(&[&h264, &hevc, &h264], 6.0);
    assert!(
        report.contains("conforming its video"),
        "the video conform path is logged\n{report}"
    );
    assert_eq!(video_info(&rec.path).codec, "h264", "{}", rec.summary());
    // Every picture decoded, all at the stream's size: the HEVC item's
    // pictures went on air as H.264 at 640x360.
    assert_eq!(
        picture_sizes(&rec.path),
        ["640,360"],
        "decoded picture sizes: {}",
        rec.summary()
    );
    let decoded = decoded_pictures(&rec.path);
    assert!(
        decoded.abs_diff(rec.video.len()) <= 2 && decoded >= 145,
        "{decoded} pictures decoded of {} received: {}",
        rec.video.len(),
        rec.summary()
    );
    for stream in ["video", "audio"] {
        rec.assert_no_gap(stream, 0.1);
    }
}

/// How many video pictures a decoder gets out of the recording.
fn decoded_pictures(path: &Path) -> usize {
    let out = Command::new(ffprobe())
        .args(["-v", "error", "-select_streams", "v", "-count_frames"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("run ffprobe: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .trim_end_matches(',')
        .parse()
        .unwrap_or_else(|e| panic!("ffprobe frame count {text:?}: {e}"))
}
