//! Sources are fetched with a 10 s timeout and 3 attempts with backoff
//! (seed 001's "10 s × 3 retries"; docs/ARCHITECTURE.md and the README's
//! `VODFLEET_SOURCE_*` settings), judged by what a real HTTP
//! server saw and what reached nginx.

use serde_json::json;
use std::time::Duration;

use vodfleet_tests::{unique, Behavior, HttpServer, Media, Pattern, Recording, RtmpServer, Worker};

#[test]
fn a_500_then_a_stall_then_success_plays() {
    let media = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    let server = HttpServer::start(
        &media.path,
        vec![Behavior::Status(500), Behavior::Stall, Behavior::Ok],
    );
    let rtmp = RtmpServer::start();
    let key = unique("retry-ok");
    let task = json!({
        "id": unique("retry-ok"),
        "src": [{"url": server.url("/media/a.mp4")}],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"}
    });
    // Default source timeout (10 s); short backoff.
    let mut w = Worker::play(task, &[("VODFLEET_RETRY_BACKOFF_MS", "200")]);
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());

    let reqs = server.requests();
    assert_eq!(reqs.len(), 3, "requests seen: {:#?}\n{}", reqs, w.report());
    let gap = reqs[2].at.duration_since(reqs[1].at).as_secs_f64();
    assert!(
        (9.0..=11.5).contains(&gap),
        "the stalled attempt must be given up after the 10 s timeout: request 3 came {gap:.3} s after request 2"
    );
    rtmp.assert_one_session(&key);
    let rec = Recording::read(&rtmp.record_path(&key));
    assert!(
        rec.video_secs() > 1.0,
        "too little video reached nginx: {}",
        rec.summary()
    );
    w.assert_not_printed(&key);
}

#[test]
fn three_500s_fail_the_task_with_a_redacted_reason() {
    let media = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    let server = HttpServer::start_with(&media.path, vec![], Behavior::Status(500));
    let rtmp = RtmpServer::start();
    let key = unique("retry-fail");
    let secret = unique("SECRET");
    let task = json!({
        "id": unique("retry-fail"),
        "src": [{"url": server.url(&format!("/media/b.mp4?token={secret}"))}],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"}
    });
    let mut w = Worker::play(task, &[("VODFLEET_RETRY_BACKOFF_MS", "200")]);
    let status = w.wait_exit(Duration::from_secs(40));
    assert_eq!(status.code(), Some(1), "task must fail\n{}", w.report());

    let failed = w.events_named("task_failed");
    assert_eq!(failed.len(), 1, "one task_failed event\n{}", w.report());
    let error = failed[0]["error"].as_str().unwrap_or_default().to_owned();
    let redacted = format!("http://127.0.0.1:{}/media/b.mp4", server.port());
    assert!(
        error.contains(&redacted),
        "task_failed error must name the source {redacted:?}: {error:?}"
    );
    let lower = error.to_lowercase();
    assert!(
        [
            "3 attempts",
            "attempts: 3",
            "attempts=3",
            "3/3",
            "attempt 3"
        ]
        .iter()
        .any(|s| lower.contains(s)),
        "task_failed error must say it tried 3 times: {error:?}"
    );
    assert!(
        error.contains("500"),
        "task_failed error must give the last cause (HTTP 500): {error:?}"
    );
    let kinds: Vec<String> = w
        .events_named("item_failed")
        .iter()
        .map(|e| e["error_kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        kinds,
        vec!["unreachable"],
        "a server answering 5xx is `unreachable`, after its retries\n{}",
        w.report()
    );
    w.assert_not_printed(&secret);
    w.assert_not_printed(&key);
    assert_eq!(
        server.request_count(),
        3,
        "requests seen: {:#?}",
        server.requests()
    );
}
