//! How HTTP sources are fetched (docs/ARCHITECTURE.md): an interrupted download resumes
//! with `Range: bytes=N-` from exactly where it stopped, every redirect hop is
//! checked against the URL policy again, and a source the policy refuses is
//! never contacted. Judged by what a real HTTP server saw, the worker's events
//! and exit code, and what reached nginx.

use serde_json::{json, Value};
use std::time::Duration;

use vodfleet_tests::{
    unique, Behavior, HttpServer, Media, Pattern, Recording, RtmpServer, Running, Worker,
};

const FPS: f64 = 25.0;

/// Asserts a clean, complete run of one item: exit 0, one `task_finished`, no
/// `item_failed`, one publish session at nginx whose recording lasts as long as
/// the item (within 2 frames) and decodes without a complaint.
fn assert_played_whole(w: &mut Running, rtmp: &RtmpServer, key: &str, media: &Media) {
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    assert_eq!(
        w.events_named("task_finished").len(),
        1,
        "one task_finished\n{}",
        w.report()
    );
    assert!(
        w.events_named("item_failed").is_empty(),
        "no item may fail\n{}",
        w.report()
    );
    rtmp.assert_one_session(key);
    let rec = Recording::read(&rtmp.record_path(key));
    let (got, want) = (rec.video_secs(), media.video_secs());
    assert!(
        (got - want).abs() <= 2.0 / FPS,
        "recorded video lasts {got:.3} s, the item lasts {want:.3} s ({})",
        rec.summary()
    );
    rec.assert_monotonic();
    rec.assert_decodes_cleanly();
    w.assert_not_printed(key);
}

/// The single `task_failed` event's error, after checking that the worker exited
/// with 1 and that every `item_failed` error satisfies `check` too.
fn failed_error(w: &mut Running, check: impl Fn(&str)) -> String {
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "task must fail\n{}", w.report());
    let failed = w.events_named("task_failed");
    assert_eq!(failed.len(), 1, "one task_failed event\n{}", w.report());
    let error = failed[0]["error"].as_str().unwrap_or_default().to_owned();
    check(&error);
    let items = w.events_named("item_failed");
    assert!(
        !items.is_empty(),
        "the item's failure is reported\n{}",
        w.report()
    );
    for e in &items {
        check(e["error"].as_str().unwrap_or_default());
    }
    error
}

fn task(id: &str, url: &str, rtmp_url: &str) -> Value {
    json!({
        "id": unique(id),
        "src": [{"url": url}],
        "forward": [{"url": rtmp_url}],
        "extendParam": {"loop": "1"}
    })
}

#[test]
fn a_download_cut_mid_body_resumes_from_the_byte_it_stopped_at() {
    let media = Media::mp4(4.0, "640x360", 25, 25, Pattern::TestSrc2);
    let server = HttpServer::start(&media.path, vec![Behavior::DropMidBody, Behavior::Ok]);
    let rtmp = RtmpServer::start();
    let key = unique("resume");
    let mut w = Worker::play(
        task("resume", &server.url("/media/a.mp4"), &rtmp.url(&key)),
        &[("VODFLEET_RETRY_BACKOFF_MS", "200")],
    );
    assert_played_whole(&mut w, &rtmp, &key, &media);

    let reqs = server.requests();
    assert_eq!(
        reqs.len(),
        2,
        "one cut download, one resumed: {reqs:#?}\n{}",
        w.report()
    );
    let total = server.body_len();
    let sent = reqs[0].body_sent;
    assert!(
        reqs[0].range.is_none(),
        "the first request asks for the whole file: {:?}",
        reqs[0]
    );
    assert!(
        0 < sent && sent < total,
        "the first response delivered part of the body: {sent} of {total} bytes"
    );
    assert_eq!(
        reqs[1].range.as_deref(),
        Some(format!("bytes={sent}-").as_str()),
        "the second request resumes at the first byte not yet received ({sent} of {total} delivered)"
    );
    assert_eq!(reqs[1].target, "/media/a.mp4");
    assert_eq!(
        reqs[1].body_sent,
        total - sent,
        "the 206 carried the rest of the file"
    );
}

#[test]
fn a_redirect_to_the_metadata_address_is_refused_and_not_retried() {
    let media = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    let target = "http://169.254.169.254/latest/meta-data";
    let server = HttpServer::start_with(&media.path, vec![], Behavior::Redirect(target.into()));
    let rtmp = RtmpServer::start();
    let key = unique("redir-meta");
    // Private networks are allowed (Worker::play's default): the first hop, on
    // 127.0.0.1, is fine; link-local is refused whatever the setting.
    let mut w = Worker::play(
        task("redir-meta", &server.url("/media/a.mp4"), &rtmp.url(&key)),
        &[("VODFLEET_RETRY_BACKOFF_MS", "200")],
    );
    let error = failed_error(&mut w, |error| {
        let lower = error.to_lowercase();
        assert!(
            lower.contains("redirect") && lower.contains("polic"),
            "the error must say the redirect was refused by the URL policy: {error:?}"
        );
        assert!(
            error.contains("169.254.169.254"),
            "the error must name the refused address: {error:?}"
        );
    });
    w.assert_not_printed(&key);
    assert!(
        w.events_named("item_failed")
            .iter()
            .all(|e| e["error_kind"] == "refused"),
        "a policy refusal is of kind `refused`\n{}",
        w.report()
    );
    assert!(
        !rtmp.has_stream(&key),
        "nothing may be published for a refused source"
    );
    assert_eq!(
        server.request_count(),
        1,
        "a policy refusal is final: the source must be asked once, not retried \
         (requests seen: {:#?}; task_failed error: {error:?})\n{}",
        server.requests(),
        w.report()
    );
}

#[test]
fn a_redirect_to_another_path_on_the_same_allowed_server_is_followed() {
    let media = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    let server = HttpServer::start(
        &media.path,
        vec![Behavior::Redirect("/files/real.mp4?x=1".into())],
    );
    let rtmp = RtmpServer::start();
    let key = unique("redir-ok");
    let mut w = Worker::play(
        task("redir-ok", &server.url("/media/a.mp4"), &rtmp.url(&key)),
        &[("VODFLEET_RETRY_BACKOFF_MS", "200")],
    );
    assert_played_whole(&mut w, &rtmp, &key, &media);
    let reqs = server.requests();
    let targets: Vec<&str> = reqs.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        targets,
        vec!["/media/a.mp4", "/files/real.mp4?x=1"],
        "the redirect is followed once: {reqs:#?}"
    );
    assert_eq!(reqs[1].behavior, Behavior::Ok);
    assert_eq!(reqs[1].body_sent, server.body_len());
}

#[test]
fn a_loopback_source_is_refused_without_the_setting_and_never_contacted() {
    let media = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    let server = HttpServer::start(&media.path, vec![]);
    let rtmp = RtmpServer::start();
    let key = unique("no-private");
    let mut w = Worker::play_unset(
        task("no-private", &server.url("/media/a.mp4"), &rtmp.url(&key)),
        &["VODFLEET_ALLOW_PRIVATE_NETWORKS"],
        &[("VODFLEET_RETRY_BACKOFF_MS", "200")],
    );
    failed_error(&mut w, |error| {
        assert!(
            error.contains("loopback"),
            "the error must say the address is loopback: {error:?}"
        );
        assert!(
            error.contains("VODFLEET_ALLOW_PRIVATE_NETWORKS"),
            "the error must name the setting that would allow it: {error:?}"
        );
    });
    w.assert_not_printed(&key);
    assert!(
        !rtmp.has_stream(&key),
        "nothing may be published for a refused source"
    );
    // The worker has exited: nothing more can arrive.
    assert_eq!(
        server.request_count(),
        0,
        "a refused source must never be contacted: {:#?}",
        server.requests()
    );
}
