//! `s3://BUCKET/KEY` sources (issue 8, seed 000): fetched from a real S3 API
//! (moto's server) with a presigned GET under the same URL policy, timeouts
//! and retries as `https`, and judged by what nginx-rtmp received. Credentials
//! come from the worker's environment and are never printed.

use serde_json::json;
use std::time::Duration;
use vodfleet_tests::peers::S3Server;
use vodfleet_tests::{unique, Media, Pattern, Recording, RtmpServer, Running, Worker};

const SECRET: &str = "s3-secret-canary-6f1d2e";

fn play(
    server: &S3Server,
    url: &str,
    rtmp: &RtmpServer,
    key: &str,
    extra: &[(&str, &str)],
) -> Running {
    let task = json!({
        "id": unique("s3"),
        "src": [{"url": url}],
        "forward": [{"url": rtmp.url(key)}],
        "extendParam": {"loop": "1"}
    });
    let endpoint = server.endpoint();
    let mut env = vec![
        ("VODFLEET_S3_ENDPOINT", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "AKIDVODFLEETTEST"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_REGION", "eu-west-1"),
        ("VODFLEET_RETRY_BACKOFF_MS", "100"),
    ];
    env.extend_from_slice(extra);
    Worker::play(task, &env)
}

#[test]
fn an_s3_object_plays_whole_and_the_secret_stays_out_of_sight() {
    let media = Media::mp4(3.0, "640x360", 25, 25, Pattern::TestSrc2);
    let s3 = S3Server::start();
    s3.put("media", "shows/ep 1.mp4", &media.bytes());
    let rtmp = RtmpServer::start();
    let key = unique("s3");
    let mut w = play(&s3, "s3://media/shows/ep%201.mp4", &rtmp, &key, &[]);
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    assert!(w.events_named("item_failed").is_empty(), "{}", w.report());
    rtmp.assert_one_session(&key);
    let rec = Recording::read(&rtmp.record_path(&key));
    let got = rec.video_secs();
    assert!(
        (got - 3.0).abs() < 0.2,
        "recorded {got:.3} s of 3 s: {}",
        rec.summary()
    );
    rec.assert_decodes_cleanly();
    w.assert_not_printed(SECRET);
    w.assert_not_printed("X-Amz-Signature");
}

#[test]
fn missing_objects_and_buckets_outside_the_allow_list_fail_their_item_by_name() {
    let media = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    let s3 = S3Server::start();
    s3.put("media", "a.mp4", &media.bytes());
    let rtmp = RtmpServer::start();

    // No such object: HTTP 404 from the S3 API, named by its s3:// URL.
    let key = unique("s3");
    let mut w = play(&s3, "s3://media/missing.mp4", &rtmp, &key, &[]);
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "every item failed\n{}", w.report());
    let failed = w.events_named("item_failed");
    let error = failed
        .first()
        .and_then(|e| e["error"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("s3://media/missing.mp4") && error.contains("404"),
        "{error}\n{}",
        w.report()
    );
    w.assert_not_printed(SECRET);

    // A bucket this worker may not read: refused before any request.
    let key = unique("s3");
    let mut w = play(
        &s3,
        "s3://media/a.mp4",
        &rtmp,
        &key,
        &[("VODFLEET_S3_BUCKETS", "other,vod")],
    );
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", w.report());
    let failed = w.events_named("item_failed");
    let error = failed
        .first()
        .and_then(|e| e["error"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("\"media\"") && error.contains("VODFLEET_S3_BUCKETS"),
        "{error}\n{}",
        w.report()
    );
}
