//! The coordinator's HTTP API (docs/contract.md#http-api): the seed's drop-in path with HMAC
//! request signatures (refused unsigned, badly signed, stale, from the future,
//! signed for another path, query or method, or replayed however the signature
//! is spelled; issue 9 row 10, with the property test in proto/tests/sign_props.rs), the
//! task listings, and stream keys never shown in them; the paged listing
//! (`?limit=N&cursor=C`, issue 10).

use serde_json::Value;
use std::time::Duration;
use vodfleet_tests::fleet::{
    body_of, long_counter, now_ms, seed, signed_headers, signed_headers_at, FleetOptions,
    HttpReply, API_KEY,
};
use vodfleet_tests::{poll, Fleet};

const SEED_PATH: &str = "/api/cdn/v2/forwardRequest.action";

fn assert_seed_shape(r: &HttpReply, code: u16) -> Value {
    assert_eq!(r.status, code, "HTTP status; body {}", r.text());
    let v = r.json();
    assert_eq!(v["http_code"], code.to_string(), "{v}");
    assert!(v["msg"].is_string(), "{v}");
    assert!(v["call_time"].is_u64(), "{v}");
    v
}

#[test]
fn signed_requests_get_in_once_and_listings_never_show_stream_keys() {
    let fleet = Fleet::start(FleetOptions::default());
    let (c1, c2) = (&fleet.coordinators[0], &fleet.coordinators[1]);
    let media = long_counter();
    let task = fleet.new_task(&[&media], 1);
    let body = body_of(&task.start(0));

    let refused: Vec<(&str, Vec<(String, String)>)> = vec![
        ("unsigned", vec![]),
        (
            "bad signature",
            signed_headers(
                API_KEY.0,
                "not-the-secret-0123456789",
                "POST",
                SEED_PATH,
                &body,
            ),
        ),
        (
            "unknown key id",
            signed_headers("nobody", API_KEY.1, "POST", SEED_PATH, &body),
        ),
        (
            "stale timestamp",
            signed_headers_at(
                API_KEY.0,
                API_KEY.1,
                "POST",
                SEED_PATH,
                now_ms() / 1000 - 400,
                &body,
            ),
        ),
        (
            "signature of another body",
            signed_headers(API_KEY.0, API_KEY.1, "POST", SEED_PATH, b"{}"),
        ),
        (
            "future timestamp",
            signed_headers_at(
                API_KEY.0,
                API_KEY.1,
                "POST",
                SEED_PATH,
                now_ms() / 1000 + 400,
                &body,
            ),
        ),
        (
            "signature for another path",
            signed_headers(API_KEY.0, API_KEY.1, "POST", "/v1/commands", &body),
        ),
        (
            "signature for another query",
            signed_headers(
                API_KEY.0,
                API_KEY.1,
                "POST",
                &format!("{SEED_PATH}?a=1"),
                &body,
            ),
        ),
        (
            "signature for another method",
            signed_headers(API_KEY.0, API_KEY.1, "PUT", SEED_PATH, &body),
        ),
    ];
    for (what, headers) in &refused {
        let r = c1.request("POST", SEED_PATH, headers, &body);
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        assert_seed_shape(&r, 403);
    }
    assert!(
        !fleet.rtmp.is_publishing(task.key()),
        "a refused request started the task"
    );

    let headers = signed_headers(API_KEY.0, API_KEY.1, "POST", SEED_PATH, &body);
    let r = c1.request("POST", SEED_PATH, &headers, &body);
    let v = assert_seed_shape(&r, 200);
    assert_eq!(v["msg"], "receive task success!");
    let replay = c2.request("POST", SEED_PATH, &headers, &body);
    assert_eq!(
        replay.status,
        403,
        "a replayed signed request (to another replica) must be refused: {}",
        replay.text()
    );
    // The same MAC spelled in upper-case hex is the same signed request.
    let respelled: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| match v.strip_prefix("v1=") {
            Some(hex) => (k.clone(), format!("v1={}", hex.to_uppercase())),
            None => (k.clone(), v.clone()),
        })
        .collect();
    assert_ne!(respelled, headers);
    let replay = c2.request("POST", SEED_PATH, &respelled, &body);
    assert_eq!(
        replay.status,
        403,
        "a replay with the signature in upper case must be refused: {}",
        replay.text()
    );
    assert!(replay.text().contains("replay"), "{}", replay.text());
    fleet
        .rtmp
        .wait_publishing(task.key(), Duration::from_secs(15));

    // Both replicas list it; neither shows the stream key.
    let listed = poll(Duration::from_secs(10), || {
        let all = c2.tasks();
        all.to_string().contains(&task.id).then_some(all)
    })
    .unwrap_or_else(|| panic!("task {} not in GET /v1/tasks", task.id));
    let one = poll(Duration::from_secs(10), || c1.task(&task.id))
        .unwrap_or_else(|| panic!("GET /v1/tasks/{} found nothing", task.id));
    assert!(one.to_string().contains(&task.id), "{one}");
    for (what, v) in [("GET /v1/tasks", &listed), ("GET /v1/tasks/{id}", &one)] {
        let text = v.to_string();
        assert!(
            !text.contains(task.key()),
            "{what} shows the stream key {}: {text}",
            task.key()
        );
    }
    let unsigned = c1.request("GET", &format!("/v1/tasks/{}", task.id), &[], b"");
    assert_eq!(
        unsigned.status,
        403,
        "an unsigned read: {}",
        unsigned.text()
    );

    // POST /v1/commands is the same intake: stop it there, on the other replica.
    let stop = body_of(&task.stop());
    let r = c2.request(
        "POST",
        "/v1/commands",
        &signed_headers(API_KEY.0, API_KEY.1, "POST", "/v1/commands", &stop),
        &stop,
    );
    assert_seed_shape(&r, 200);
    fleet
        .rtmp
        .wait_unpublished(task.key(), Duration::from_secs(10));
}

/// `count` tasks scheduled an hour from now (no worker needed), started with
/// signed `POST /v1/commands` of up to 50 tasks each; returns their ids.
fn schedule_tasks(fleet: &Fleet, prefix: &str, count: usize) -> Vec<String> {
    let start = now_ms() + 3_600_000;
    let ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:05}")).collect();
    for chunk in ids.chunks(50) {
        let list: Vec<Value> = chunk
            .iter()
            .map(|id| {
                let fwd = [format!("rtmp://127.0.0.1:1935/live/{id}")];
                let b = seed::with_window(
                    seed::start(id, &["vod://a.mp4".to_owned()], &fwd, 0),
                    start,
                    start + 3_600_000,
                );
                b["list"][0].clone()
            })
            .collect();
        let body = body_of(&serde_json::json!({ "cmd": "1", "type": "video", "list": list }));
        assert_seed_shape(&fleet.coordinator().post_signed("/v1/commands", &body), 200);
    }
    ids
}

/// Every page of `GET /v1/tasks?limit=N` from the start: (ids in walk order, pages).
fn walk_pages(fleet: &Fleet, limit: usize) -> (Vec<String>, usize) {
    let (mut ids, mut pages) = (Vec::new(), 0);
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/v1/tasks?limit={limit}"),
            Some(c) => format!("/v1/tasks?limit={limit}&cursor={c}"),
        };
        let r = fleet.coordinator().get_signed(&path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        let v = r.json();
        let tasks = v["tasks"].as_array().expect("tasks is a list");
        assert!(
            tasks.len() <= limit,
            "{} tasks on a page of {limit}",
            tasks.len()
        );
        ids.extend(
            tasks
                .iter()
                .map(|t| t["id"].as_str().expect("id").to_owned()),
        );
        pages += 1;
        match &v["next"] {
            Value::Null => return (ids, pages),
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("next is {other}"),
        }
    }
}

#[test]
fn the_task_listing_comes_in_pages_that_hold_every_task_once() {
    let fleet = Fleet::start(FleetOptions {
        workers: 0,
        ..FleetOptions::default()
    });
    let mut ids = schedule_tasks(&fleet, "page", 300);
    ids.sort();
    let all = poll(Duration::from_secs(30), || {
        let (got, _) = walk_pages(&fleet, 1000);
        (got.len() >= ids.len()).then_some(got)
    })
    .unwrap_or_else(|| panic!("not every task listed\n{}", fleet.reports()));
    assert_eq!(all.len(), ids.len(), "a page of 1000 holds them all, once");

    // Small pages: every task exactly once, in more than 300 / 7 pages.
    for limit in [7, 100] {
        let (mut walked, pages) = walk_pages(&fleet, limit);
        walked.sort();
        assert_eq!(walked, ids, "pages of {limit}");
        assert!(
            pages >= ids.len().div_ceil(limit),
            "{pages} pages of {limit}"
        );
    }

    // No parameters (an old client): the first 100, and where to go on.
    let first = fleet.coordinator().tasks();
    assert_eq!(
        first["tasks"].as_array().map(Vec::len),
        Some(100),
        "{first}"
    );
    assert!(first["next"].is_string(), "{first}");

    // Bad parameters: 400, naming the field.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=99.0", "cursor"),
    ] {
        let r = fleet
            .coordinator()
            .get_signed(&format!("/v1/tasks?{query}"));
        let v = assert_seed_shape(&r, 400);
        assert!(
            v["msg"].as_str().unwrap_or_default().contains(field),
            "{query}: {v}"
        );
    }
}
