//! Issue 3 (g): a callback receiver that fails twice (500, then 200 with an
//! empty body, which the seed counts as a failure too) and then succeeds gets
//! every event exactly once by `event_id`, each eventually answered 2xx, and
//! every request's signature verifies with `VODFLEET_CALLBACK_KEY`.

use std::collections::BTreeMap;
use std::time::Duration;
use vodfleet_tests::fleet::{
    counter_runs, seed, tag_runs, tagged_counter, verify_signed, Answer, FleetOptions,
};
use vodfleet_tests::{poll, read_counters, CallbackReceiver, Fleet};

const CALLBACK_KEY: (&str, &str) = ("cbkey", "callback-secret-for-tests-0123");

#[test]
fn every_event_arrives_once_by_id_retried_past_failures_and_signed() {
    let fleet = Fleet::start(
        FleetOptions::default().callback_key(&format!("{}:{}", CALLBACK_KEY.0, CALLBACK_KEY.1)),
    );
    let rx = CallbackReceiver::start(
        vec![Answer::new(500, "not now"), Answer::new(200, "")],
        Answer::new(200, "ok"),
    );
    let producer = fleet.producer();
    // Two 4 s items, played until stopped, with a callback at each item start.
    let (a, b) = (tagged_counter(4.0, 1), tagged_counter(4.0, 2));
    let task = fleet.new_task(&[&a, &b], 1);
    let start = seed::with_callback(
        seed::with_param(task.start(0), "callBackFileInfo", "1"),
        &rx.url(),
    );
    producer.send(&start);
    fleet
        .rtmp
        .wait_publishing(task.key(), Duration::from_secs(15));
    // Stop in the middle of the third item (stream time ≈ 10 s with the burst).
    std::thread::sleep(Duration::from_secs(9));
    producer.send(&task.stop());
    fleet
        .rtmp
        .wait_unpublished(task.key(), Duration::from_secs(10));

    let all_delivered = |by: &BTreeMap<String, Vec<vodfleet_tests::fleet::Post>>| {
        by.values().all(|posts| posts.iter().any(|p| p.delivered()))
    };
    let done = poll(Duration::from_secs(40), || {
        let by = rx.by_event();
        let stopped = rx.events().iter().any(|e| e["event"] == "stopped");
        (stopped && all_delivered(&by)).then_some(by)
    });
    let by = done.unwrap_or_else(|| {
        panic!(
            "not every event was delivered (or no `stopped`) within 40 s: {:#?}\n{}",
            rx.by_event()
                .iter()
                .map(|(k, v)| (
                    k.clone(),
                    v.iter().map(|p| p.answer.status).collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>(),
            fleet.reports()
        )
    });

    for p in rx.posts() {
        verify_signed(&p.headers, "POST", &p.path, &p.body, &[CALLBACK_KEY])
            .unwrap_or_else(|e| panic!("callback {}: {e}", String::from_utf8_lossy(&p.body)));
    }
    for (id, posts) in &by {
        assert!(
            !id.is_empty(),
            "a callback without event_id: {:?}",
            posts[0].json
        );
        let attempts: Vec<usize> = posts.iter().map(|p| p.attempt).collect();
        assert!(
            attempts.starts_with(&[0, 1, 2]),
            "event {id} was not retried past the two failures: attempts {attempts:?}"
        );
        let kinds: Vec<&serde_json::Value> = posts
            .iter()
            .filter_map(|p| p.json.as_ref())
            .map(|j| &j["event"])
            .collect();
        assert!(
            kinds.windows(2).all(|w| w[0] == w[1]),
            "one event_id, several events: {kinds:?}"
        );
    }

    let events = rx.events();
    for e in &events {
        assert_eq!(e["id"], task.id.as_str(), "{e}");
        for field in [
            "msg",
            "code",
            "srcurl",
            "cmd",
            "forwardurl",
            "event",
            "event_id",
        ] {
            assert!(
                e[field].is_string(),
                "callback field {field} missing or not a string: {e}"
            );
        }
        assert!(
            ["0", "1", "2"].contains(&e["code"].as_str().unwrap_or("")),
            "{e}"
        );
        assert!(
            e["timestamp"].is_number() || e["timestamp"].is_string(),
            "{e}"
        );
    }
    let count = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    let recorded = read_counters(&fleet.rtmp.record_path(task.key()));
    let item_starts = tag_runs(&recorded).len();
    eprintln!(
        "recorded: {}\nevents: {:?}",
        counter_runs(&recorded),
        events
            .iter()
            .map(|e| e["event"].clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(count("started"), 1, "`started` events: {events:#?}");
    assert_eq!(count("stopped"), 1, "`stopped` events: {events:#?}");
    assert_eq!(
        count("file_started"),
        item_starts,
        "one `file_started` per item start the server saw ({item_starts})"
    );
}

/// An item that is not media fails alone: the producer gets a `file_failed`
/// warning (code 2) naming the item and the kind of failure, and the task goes
/// on to its next item and finishes.
#[test]
fn a_failed_item_is_a_file_failed_warning_and_the_task_goes_on() {
    let fleet = Fleet::start(FleetOptions::default());
    let rx = CallbackReceiver::start(vec![], Answer::new(200, "ok"));
    let junk = vodfleet_tests::unique("junk") + ".mp4";
    let bytes: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(vodfleet_tests::media::media_dir().join(&junk), bytes).unwrap();
    let good = tagged_counter(2.0, 3);
    let mut task = fleet.new_task(&[&good], 1);
    task.src.insert(0, format!("vod://{junk}"));
    fleet
        .producer()
        .send(&seed::with_callback(task.start(1), &rx.url()));
    let events = poll(Duration::from_secs(40), || {
        let events = rx.events();
        events
            .iter()
            .any(|e| e["event"] == "finished")
            .then_some(events)
    })
    .unwrap_or_else(|| {
        panic!(
            "no `finished` within 40 s: {:#?}\n{}",
            rx.events(),
            fleet.reports()
        )
    });
    let failed: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "file_failed")
        .collect();
    assert_eq!(failed.len(), 1, "one `file_failed`: {events:#?}");
    let f = failed[0];
    assert_eq!(f["code"], "2", "a failed item is a warning: {f}");
    assert_eq!(f["file_index"], 0, "{f}");
    let msg = f["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("bad_media") && msg.contains(&junk),
        "the message names the kind and the item: {msg:?}"
    );
    assert_eq!(
        events.iter().filter(|e| e["event"] == "started").count(),
        1,
        "{events:#?}"
    );
    assert_eq!(
        tag_runs(&read_counters(&fleet.rtmp.record_path(task.key()))).len(),
        1,
        "the good item played"
    );
}

/// A task the worker cannot even set up (its cache directory cannot be made)
/// fails like any other: a `failed` callback naming the reason, and the task
/// `failed` in the coordinator, not left leased or silent. (A cache directory
/// that is unusable when the worker starts stops the worker at once, naming
/// `VODFLEET_CACHE_DIR`: the shared source cache lives there. Here it goes bad
/// afterwards.)
#[test]
fn a_task_the_worker_cannot_set_up_fails_with_a_callback() {
    let mut fleet = Fleet::start(FleetOptions {
        workers: 0,
        ..FleetOptions::default()
    });
    let cache = tempfile::tempdir().expect("temp dir");
    let path = cache.path().to_str().expect("utf-8 path").to_owned();
    fleet.add_worker_with(&[("VODFLEET_CACHE_DIR", &path)]);
    // Then a regular file where the cache directory was.
    std::fs::remove_dir_all(cache.path()).expect("remove the cache directory");
    std::fs::write(cache.path(), b"not a directory").expect("write a file in its place");
    let rx = CallbackReceiver::start(vec![], Answer::new(200, "ok"));
    let producer = fleet.producer();
    let clip = tagged_counter(4.0, 1);
    let task = fleet.new_task(&[&clip], 1);
    producer.send(&seed::with_callback(task.start(0), &rx.url()));
    let failed = poll(Duration::from_secs(20), || {
        rx.events().into_iter().find(|e| e["event"] == "failed")
    })
    .unwrap_or_else(|| {
        panic!(
            "no `failed` callback within 20 s: {:?}\n{}",
            rx.events(),
            fleet.reports()
        )
    });
    let msg = failed.to_string();
    assert!(
        msg.contains("cache directory"),
        "the callback names the reason: {msg}"
    );
    let state = poll(Duration::from_secs(10), || {
        let t = fleet.coordinator().try_task(&task.id).ok().flatten()?;
        let s = vodfleet_tests::fleet::task_state(&t)?;
        (s == "failed").then_some(s)
    });
    assert_eq!(
        state.as_deref(),
        Some("failed"),
        "the task ends failed\n{}",
        fleet.reports()
    );
    // TempDir's own clean-up removes directories only.
    let _ = std::fs::remove_file(cache.path());
}
