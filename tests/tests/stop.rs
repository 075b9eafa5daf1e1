//! Stopping a running task by signal (SIGINT from a terminal, SIGTERM from an
//! orchestrator) ends it cleanly: exit code 0, one publish session, and a
//! recording that decodes without errors up to where it stopped.

use serde_json::json;
use std::time::Duration;

use vodfleet_tests::worker::is_destination;
use vodfleet_tests::{unique, Media, Pattern, Recording, RtmpServer, Worker};

fn stops_cleanly_on(signal: &str) {
    let media = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    let rtmp = RtmpServer::start();
    let key = unique("stop");
    // loop 0: until stopped.
    let task = json!({
        "id": unique("stop"),
        "src": [{"url": media.vod_url()}],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "0"}
    });
    let mut w = Worker::play(task, &[]);
    w.wait_event(|e| is_destination(e, 0, "live"), Duration::from_secs(20));
    rtmp.wait_publishing(&key, Duration::from_secs(10));
    // Let it cross at least one loop seam before stopping.
    w.wait_event(
        |e| e["event"] == "item_started" && e["loop"] == 1,
        Duration::from_secs(20),
    );
    w.signal(signal);
    let status = w.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(0),
        "SIG{signal} stops the task with exit 0\n{}",
        w.report()
    );
    assert!(
        w.events_named("task_failed").is_empty(),
        "a stop is not a failure\n{}",
        w.report()
    );
    rtmp.assert_one_session(&key);
    let rec = Recording::read(&rtmp.record_path(&key));
    assert!(
        rec.video_secs() >= media.video_secs() - 2.0 / 25.0,
        "the first loop reached nginx before the stop: {}",
        rec.summary()
    );
    rec.assert_monotonic();
    rec.assert_decodes_cleanly();
    w.assert_not_printed(&key);
}

#[test]
fn sigterm_stops_a_looping_task_with_exit_0() {
    stops_cleanly_on("TERM");
}

#[test]
fn sigint_stops_a_looping_task_with_exit_0() {
    stops_cleanly_on("INT");
}
