//! An invalid task file is refused before anything starts: exit code 2 and the
//! JSON path of the offending field on stderr (docs/contract.md#limits,
//! docs/contract.md#errors).

use serde_json::json;
use std::time::Duration;

use vodfleet_tests::{unique, Media, Pattern, RtmpServer, Worker};

fn refused(task: serde_json::Value, field: &str) {
    let mut w = Worker::play(task, &[]);
    let status = w.wait_exit(Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(2),
        "an invalid task file exits 2\n{}",
        w.report()
    );
    let err = w.stderr();
    assert!(
        err.contains(field),
        "stderr must name the field {field:?}:\n{err}"
    );
    assert!(
        w.events_named("task_started").is_empty(),
        "an invalid task must not start\n{}",
        w.report()
    );
}

#[test]
fn a_non_rtmp_forward_url_is_refused_with_its_field_path() {
    let media = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    let task = json!({
        "id": unique("invalid"),
        "src": [{"url": media.vod_url()}],
        "forward": [{"url": "http://x"}]
    });
    refused(task, "forward[0].url");
}

#[test]
fn a_backwards_relofftime_is_refused_with_its_field_path() {
    let media = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    let rtmp = RtmpServer::start();
    let key = unique("invalid");
    let task = json!({
        "id": unique("invalid"),
        "src": [{"url": media.vod_url()}, {"url": media.vod_url(), "relofftime": "3-1"}],
        "forward": [{"url": rtmp.url(&key)}]
    });
    refused(task, "src[1].relofftime");
    assert_eq!(rtmp.publish_sessions(&key), 0, "nothing was published");
    assert!(!rtmp.has_stream(&key));
}
