//! Issue 9 row 9: a canary stream key in destinations that stream, fail (refused
//! by the server, unreachable) and are stopped, and in commands that are refused
//! and dead-lettered, must appear nowhere the fleet shows: the coordinators' and
//! workers' logs (stderr, with libav's own log lines switched on and debug
//! level for our crates), their /metrics, the API listings, the callbacks the
//! receiver got (body, path and headers), and the dead-lettered messages' reason
//! and headers.
//!
//! A dead-lettered message's body is the producer's command as it was sent (so
//! an operator can fix and replay it): the key is in it by construction and the
//! test does not count it; everything the fleet adds to it must not carry it.

use serde_json::{json, Value};
use std::net::TcpListener;
use std::time::Duration;
use vodfleet_tests::fleet::{body_of, long_counter, seed, Answer, CallbackReceiver, FleetOptions};
use vodfleet_tests::{poll, unique, Fleet};

const SEED_PATH: &str = "/api/cdn/v2/forwardRequest.action";

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn occurrences(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn a_canary_stream_key_appears_nowhere_the_fleet_shows() {
    // Random enough that nothing but our own URLs can contain it.
    let canary = format!("canaryKEY-{}", unique("k").replace(['-', 'x'], ""));
    let fleet = Fleet::start(
        FleetOptions::default()
            .env("VODFLEET_LIBAV_LOG", "1")
            .env("VODFLEET_LOG", "info,vodfleet=debug,vodfleet_engine=debug,vodfleet_worker=debug,vodfleet_coordinator=debug,vodfleet_rtmp=debug,vodfleet_bus=debug")
            .env("VODFLEET_DESTINATION_ATTEMPTS", "2")
            .env("VODFLEET_RETRY_BACKOFF_MS", "200"),
    );
    let receiver = CallbackReceiver::start(vec![], Answer::new(200, "ok"));
    let c = &fleet.coordinators[0];
    let media = long_counter();
    let rtmp_port = fleet
        .rtmp_url("x")
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|hp| hp.rsplit_once(':'))
        .map(|(_, p)| p.to_owned())
        .expect("nginx port");
    let ok_key = format!("{canary}-ok");
    let fwd = vec![
        // streams
        fleet.rtmp_url(&ok_key),
        // refused by the server: an application nginx does not have
        format!("rtmp://127.0.0.1:{rtmp_port}/nosuchapp/{canary}-refused"),
        // unreachable, the key in the path and in the query
        format!(
            "rtmp://127.0.0.1:{}/live/{canary}-unreach?token={canary}-q",
            closed_port()
        ),
        // not a usable RTMP URL (no application; a space), found out by the worker
        format!("rtmp://127.0.0.1:{rtmp_port}/{canary}-noapp"),
        format!("rtmp://127.0.0.1:{rtmp_port}/live/{canary} spaced"),
    ];
    let id = unique("canary");
    let start = seed::with_callback(
        seed::start(&id, &[media.vod_url()], &fwd, 0),
        &receiver.url(),
    );
    let r = c.post_signed(SEED_PATH, &body_of(&start));
    assert_eq!(r.status, 200, "{}", r.text());
    fleet.rtmp.wait_publishing(&ok_key, Duration::from_secs(20));

    // Every failing destination is given up and called back.
    let forward_failed = |i: u64| {
        receiver
            .events()
            .iter()
            .any(|e| e["id"] == *id && e["event"] == "forward_failed" && e["forward_index"] == i)
    };
    assert!(
        poll(Duration::from_secs(60), || (forward_failed(1)
            && forward_failed(2))
        .then_some(()))
        .is_some(),
        "both failing destinations must be called back as forward_failed: {:#?}\n{}",
        receiver.events(),
        fleet.reports()
    );
    // Listings while it streams.
    let listed_running =
        c.tasks().to_string() + &c.task(&id).map(|t| t.to_string()).unwrap_or_default();
    assert!(
        listed_running.contains(&id),
        "the task is listed: {listed_running}"
    );

    // Stopped (terminate), on the other replica.
    let stop = seed::with_callback(seed::stop(&id, &fwd), &receiver.url());
    let r = fleet.coordinators[1].post_signed("/v1/commands", &body_of(&stop));
    assert_eq!(r.status, 200, "{}", r.text());
    fleet
        .rtmp
        .wait_unpublished(&ok_key, Duration::from_secs(15));
    assert!(
        poll(Duration::from_secs(20), || receiver
            .events()
            .iter()
            .any(|e| e["id"] == *id && e["event"] == "stopped")
            .then_some(()))
        .is_some(),
        "no stopped callback: {:#?}",
        receiver.events()
    );

    // Refused commands carrying the key: dead-lettered with a reason.
    let producer = fleet.producer();
    let mut unknown_field = seed::start(&unique("canary-dl"), &[media.vod_url()], &fwd, 1);
    unknown_field["list"][0]["bogus"] = json!(1);
    let mut http_forward = seed::start(&unique("canary-dl"), &[media.vod_url()], &fwd, 1);
    http_forward["list"][0]["forward"][0]["url"] =
        json!(format!("http://127.0.0.1/live/{canary}-http"));
    let mut srt_forward = seed::start(&unique("canary-dl"), &[media.vod_url()], &fwd, 1);
    srt_forward["list"][0]["forward"][1]["url"] =
        json!(format!("srt://127.0.0.1:9000?streamid={canary}-srt"));
    let refused: Vec<Value> = vec![unknown_field, http_forward, srt_forward];
    for body in &refused {
        producer.send(&seed::with_callback(body.clone(), &receiver.url()));
    }
    let dead = producer.wait_dead_letters(refused.len(), Duration::from_secs(20));
    assert_eq!(
        dead.len(),
        refused.len(),
        "every refused command is dead-lettered"
    );
    // The search can find the key: the producer's own bodies carry it.
    assert!(
        dead.iter()
            .all(|d| String::from_utf8_lossy(&d.body).contains(&canary)),
        "the dead-lettered bodies are the commands as sent"
    );
    for d in &dead {
        assert!(
            d.reason.as_deref().is_some_and(|r| !r.is_empty()),
            "a dead letter without its reason: {:?}",
            d.headers
        );
    }
    // The refusals are called back too (each names its field, not the URL).
    assert!(
        poll(Duration::from_secs(20), || (receiver
            .events()
            .iter()
            .filter(|e| e["event"] == "failed"
                && e["event_id"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("refused:")))
            .count()
            >= refused.len())
        .then_some(()))
        .is_some(),
        "every refused command is called back: {:#?}",
        receiver.events()
    );

    // Everything the fleet shows, and how often the key occurs in it.
    let mut shown: Vec<(String, String)> = Vec::new();
    for (i, c) in fleet.coordinators.iter().enumerate() {
        shown.push((format!("coordinator {i} log"), c.log()));
        shown.push((format!("coordinator {i} /metrics"), c.metrics()));
        shown.push((
            format!("coordinator {i} GET /v1/tasks"),
            c.tasks().to_string(),
        ));
        shown.push((
            format!("coordinator {i} GET /v1/tasks/{{id}}"),
            c.task(&id).map(|t| t.to_string()).unwrap_or_default(),
        ));
    }
    shown.push(("listings while streaming".into(), listed_running));
    for (i, w) in fleet.workers.iter().enumerate() {
        shown.push((format!("worker {i} log"), w.log()));
        shown.push((format!("worker {i} /metrics"), w.metrics()));
    }
    for p in receiver.posts() {
        let text = format!(
            "{} {:?} {}",
            p.path,
            p.headers,
            String::from_utf8_lossy(&p.body)
        );
        shown.push((format!("callback {}", p.event_id), text));
    }
    for d in &dead {
        let text = format!(
            "{:?} {:?} {:?} {:?}",
            d.reason, d.headers, d.message_id, d.correlation_id
        );
        shown.push(("dead letter (reason and headers)".into(), text));
    }
    let leaks: Vec<String> = shown
        .iter()
        .filter(|(_, text)| text.contains(&canary))
        .map(|(what, text)| {
            let line = text
                .lines()
                .find(|l| l.contains(&canary))
                .unwrap_or_default();
            format!(
                "{what}: {} occurrence(s), e.g. {line}",
                occurrences(text, &canary)
            )
        })
        .collect();
    let bytes: usize = shown.iter().map(|(_, t)| t.len()).sum();
    let libav_lines: usize = fleet
        .workers
        .iter()
        .map(|w| {
            w.log()
                .lines()
                .filter(|l| !l.starts_with("20") && !l.trim().is_empty())
                .count()
        })
        .sum();
    assert!(
        leaks.is_empty(),
        "the stream key leaked:\n{}",
        leaks.join("\n")
    );
    eprintln!(
        "row 9: 0 occurrences of the canary key in {} places ({bytes} bytes: logs with {libav_lines} non-tracing lines, metrics, listings, {} callbacks, {} dead letters)",
        shown.len(),
        receiver.posts().len(),
        dead.len()
    );
}
