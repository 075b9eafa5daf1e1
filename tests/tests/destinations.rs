//! Destinations are isolated (docs/design/timeline.md#destinations): one that
//! drops the connection, is refused, or never answers is retried 3 times with
//! backoff and then given up, while the good destination gets the whole stream in
//! one session with no gap.

use serde_json::json;
use std::time::Duration;

use vodfleet_tests::worker::is_destination;
use vodfleet_tests::{
    closed_port, unique, Dropper, Media, Pattern, Recording, RtmpServer, Running, Worker,
};

const FPS: f64 = 25.0;

/// Plays `media` to [good, bad], waits for exit 0, and checks the good side.
fn play_with_a_bad_destination(media: &Media, bad_url: &str, env: &[(&str, &str)]) -> Running {
    let rtmp = RtmpServer::start();
    let good = unique("dest-good");
    let task = json!({
        "id": unique("dest"),
        "src": [{"url": media.vod_url()}],
        "forward": [{"url": rtmp.url(&good)}, {"url": bad_url}],
        "extendParam": {"loop": "1"}
    });
    let mut env = env.to_vec();
    env.push(("VODFLEET_RETRY_BACKOFF_MS", "200"));
    let mut w = Worker::play(task, &env);
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(0),
        "a failed destination must not fail the task\n{}",
        w.report()
    );
    assert!(
        w.events().iter().any(|e| is_destination(e, 1, "failed")),
        "no destination event with state failed for index 1\n{}",
        w.report()
    );
    assert!(
        !w.events().iter().any(|e| is_destination(e, 0, "failed")),
        "the good destination failed\n{}",
        w.report()
    );

    rtmp.assert_one_session(&good);
    let rec = Recording::read(&rtmp.record_path(&good));
    let (want, got) = (media.video_secs(), rec.video_secs());
    assert!(
        (got - want).abs() <= 2.0 / FPS,
        "the good destination got {got:.3} s of video, the source has {want:.3} s: {}",
        rec.summary()
    );
    let (gap, at) = vodfleet_tests::probe::max_dts_gap(&rec.video);
    assert!(
        gap <= 0.1,
        "the good destination has a {gap:.3} s gap in video DTS after {at:.3} s: {}",
        rec.summary()
    );
    rec.assert_monotonic();
    rec.assert_decodes_cleanly();
    w.assert_not_printed(&good);
    w
}

/// The highest `attempt` reported in destination events for `index`.
fn max_attempt(w: &Running, index: u64) -> u64 {
    w.events()
        .iter()
        .filter(|e| e["event"] == "destination" && e["index"] == index)
        .filter_map(|e| e["attempt"].as_u64())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_dropping_destination_is_tried_three_times_and_the_other_goes_on() {
    let media = Media::mp4(4.0, "640x360", 25, 25, Pattern::TestSrc2);
    let dropper = Dropper::start();
    let bad_key = unique("dest-dropped");
    let w = play_with_a_bad_destination(&media, &dropper.rtmp_url(&bad_key), &[]);
    assert_eq!(
        dropper.accepts(),
        3,
        "connection attempts at the dropping destination\n{}",
        w.report()
    );
    w.assert_not_printed(&bad_key);
}

#[test]
fn a_refused_destination_is_tried_three_times_and_the_other_goes_on() {
    let media = Media::mp4(4.0, "640x360", 25, 25, Pattern::TestSrc2);
    let bad_key = unique("dest-refused");
    let url = format!("rtmp://127.0.0.1:{}/live/{bad_key}", closed_port());
    let w = play_with_a_bad_destination(&media, &url, &[]);
    assert_eq!(
        max_attempt(&w, 1),
        3,
        "destination events for the refused destination\n{}",
        w.report()
    );
    w.assert_not_printed(&bad_key);
}

#[test]
fn a_silent_destination_times_out_three_times_and_the_other_goes_on() {
    let media = Media::mp4(6.0, "640x360", 25, 25, Pattern::TestSrc2);
    let hole = Dropper::black_hole();
    let bad_key = unique("dest-silent");
    let w = play_with_a_bad_destination(
        &media,
        &hole.rtmp_url(&bad_key),
        &[("VODFLEET_DESTINATION_TIMEOUT_MS", "1000")],
    );
    assert_eq!(
        hole.accepts(),
        3,
        "connection attempts at the silent destination\n{}",
        w.report()
    );
    w.assert_not_printed(&bad_key);
}

/// A publish the server refuses (nginx-rtmp's `on_publish` answering 403) is
/// reported as failed after one attempt, with the refusal as its reason, and
/// is not retried like a dropped connection; the other destination goes on.
#[test]
fn a_publish_the_server_refuses_fails_after_one_attempt() {
    let media = Media::mp4(3.0, "640x360", 25, 25, Pattern::TestSrc2);
    let rtmp = RtmpServer::start();
    let (good, bad_key) = (unique("dest-good"), unique("dest-denied"));
    let denied = rtmp.url(&bad_key).replace("/live/", "/refuse/");
    let task = json!({
        "id": unique("dest"),
        "src": [{"url": media.vod_url()}],
        "forward": [{"url": rtmp.url(&good)}, {"url": denied}],
        "extendParam": {"loop": "1"}
    });
    let mut w = Worker::play(task, &[("VODFLEET_RETRY_BACKOFF_MS", "200")]);
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", w.report());
    let failed: Vec<_> = w
        .events()
        .into_iter()
        .filter(|e| is_destination(e, 1, "failed"))
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "one failed event for the refused destination\n{}",
        w.report()
    );
    assert_eq!(
        max_attempt(&w, 1),
        1,
        "a refusal is not retried\n{}",
        w.report()
    );
    assert_eq!(failed[0]["error_kind"], "refused", "{}", w.report());
    let reason = failed[0]["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("refused"),
        "the reason names the refusal: {reason:?}"
    );
    rtmp.assert_one_session(&good);
    let rec = Recording::read(&rtmp.record_path(&good));
    assert!(
        (rec.video_secs() - media.video_secs()).abs() <= 2.0 / FPS,
        "{}",
        rec.summary()
    );
    w.assert_not_printed(&bad_key);
}
