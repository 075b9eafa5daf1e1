//! Row 6 in the test command: RabbitMQ away for more than two leases (the
//! 60 s run is `scripts/soak/faults.sh broker-down`). Workers renew their
//! leases over the coordinators' HTTP API meanwhile, so the stream never
//! leaves the air and never gets a second publisher; a task whose start time
//! fell inside the outage goes on air as soon as the broker is back (its
//! order, which could not be published, is offered again at once).

use std::time::{Duration, Instant};
use vodfleet_proto::fleet::keys;
use vodfleet_tests::fleet::{now_ms, publish_conflicts, seed, FleetOptions};
use vodfleet_tests::{poll, Fleet};

const LEASE_TTL_MS: u64 = 6000;
/// Longer than two leases: without a second renewal path every stream fences.
const OUTAGE: Duration = Duration::from_secs(15);

#[test]
fn streams_stay_on_air_through_a_broker_outage_longer_than_the_lease() {
    let mut fleet = Fleet::start_private(FleetOptions::default().lease_ttl_ms(LEASE_TTL_MS));
    let producer = fleet.producer();
    let live = fleet.start_live(&producer, Duration::from_millis(100));
    let id = live.task.id.clone();
    let epoch_before = fleet.redis.hgetall(&keys::task(&id))["epoch"].clone();
    // A task whose start time falls inside the outage.
    let media = vodfleet_tests::fleet::long_counter();
    let later = fleet.new_task(&[&media], 1);
    let start_ms = now_ms() + 6_000;
    producer.send(&seed::with_window(
        later.start(0),
        start_ms,
        start_ms + 600_000,
    ));
    let scheduled = poll(Duration::from_secs(10), || {
        let h = fleet.redis.hgetall(&keys::task(&later.id));
        (h.get("state").map(String::as_str) == Some("scheduled")).then_some(())
    });
    assert!(
        scheduled.is_some(),
        "the scheduled task was not recorded\n{}",
        fleet.reports()
    );
    drop(producer);

    let down = Instant::now();
    fleet.rabbit().stop();
    // The outage itself: its length is the fault, not an assertion.
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    assert!(
        now_ms() > start_ms + LEASE_TTL_MS,
        "the scheduled start and its first lease must fall inside the outage"
    );
    let during = live.watch.samples();
    fleet.rabbit().start_again();
    let back = Instant::now();
    eprintln!("broker away {:.1} s", (back - down).as_secs_f64());

    let stopped = during
        .iter()
        .find(|s| s.at >= down && !s.stat_failed && s.publishers.is_empty());
    assert!(
        stopped.is_none(),
        "the stream left the air {:.1} s into the outage: {}\n{}",
        stopped.map_or(0.0, |s| (s.at - down).as_secs_f64()),
        live.watch.summary(),
        fleet.reports()
    );
    let renewed: f64 = fleet
        .coordinators
        .iter()
        .filter_map(|c| c.metric("vodfleet_http_heartbeats_total{outcome=\"renewed\"}"))
        .sum();
    assert!(
        renewed > 0.0,
        "no lease was renewed over HTTP\n{}",
        fleet.reports()
    );
    let task = fleet.redis.hgetall(&keys::task(&id));
    assert_eq!(
        task["epoch"], epoch_before,
        "the lease was never lost, so the task never moved: {task:?}"
    );

    // After the broker's return: the task that fell due starts at once, and
    // the live one still has exactly one publisher.
    fleet
        .rtmp
        .wait_publishing(later.key(), Duration::from_secs(LEASE_TTL_MS / 1000 + 10));
    eprintln!(
        "scheduled task on air {:.1} s after the broker returned",
        back.elapsed().as_secs_f64()
    );
    let reoffered: f64 = fleet
        .coordinators
        .iter()
        .filter_map(|c| c.metric("vodfleet_orders_reoffered_total"))
        .sum();
    assert!(
        reoffered >= 1.0,
        "its order was not offered again on the broker's return (only a lease later)\n{}",
        fleet.reports()
    );
    fleet.wait_all_ready(Duration::from_secs(30));
    assert!(!live.watch.absent_since(down), "{}", live.watch.summary());
    assert_eq!(live.watch.max_publishers(), 1, "{}", live.watch.summary());
    let refused = publish_conflicts(&fleet.rtmp, live.task.key());
    assert!(refused.is_empty(), "a second publisher: {refused:?}");
}

/// `POST /v1/heartbeats` as a worker with many tasks uses it: signed, a
/// body far over the command limit (2,000 tasks), answered with the lease
/// ack RabbitMQ would have carried; unsigned or malformed requests are
/// refused by name and change nothing.
#[test]
fn the_heartbeat_endpoint_takes_big_heartbeats_and_refuses_bad_ones() {
    let fleet = Fleet::start(FleetOptions {
        workers: 0,
        coordinators: 1,
        ..FleetOptions::default()
    });
    let c = fleet.coordinator();
    let tasks: Vec<serde_json::Value> = (0..2000)
        .map(|i| {
            serde_json::json!({
                "task_id": format!("ghost-{i:05}"),
                "epoch": 1,
                "position": {"item": 0, "loop_index": 0, "offset_ms": 1000, "timeline_ms": 1000},
                "destinations": ["live"]
            })
        })
        .collect();
    let beat = serde_json::json!({
        "kind": "heartbeat", "worker_id": "w-http", "seq": 7,
        "sent_ms": now_ms(), "free_slots": 0, "tasks": tasks
    });
    let body = serde_json::to_vec(&beat).unwrap();
    assert!(body.len() > 200_000, "{} bytes", body.len());
    let r = c.post_signed("/v1/heartbeats", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let ack: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(ack["kind"], "lease_ack");
    assert_eq!(ack["seq"], 7);
    // Redis does not know them: they are to be reclaimed, none was created.
    assert_eq!(ack["unknown"].as_array().map(Vec::len), Some(2000));
    assert!(fleet.redis.hgetall(&keys::task("ghost-00000")).is_empty());

    let unsigned = c.request("POST", "/v1/heartbeats", &[], &body);
    assert_eq!(unsigned.status, 403, "{}", unsigned.text());
    let not_a_beat = serde_json::json!({"kind": "released", "worker_id": "w", "task_id": "t", "epoch": 1,
        "position": {"item": 0, "loop_index": 0, "offset_ms": 0, "timeline_ms": 0}});
    let r = c.post_signed("/v1/heartbeats", &serde_json::to_vec(&not_a_beat).unwrap());
    assert!(
        r.status == 400 && r.text().contains("kind"),
        "{} {}",
        r.status,
        r.text()
    );
    let r = c.post_signed("/v1/heartbeats", b"{not json");
    assert!(
        r.status == 400 && r.text().contains("body"),
        "{} {}",
        r.status,
        r.text()
    );
    let renewed = c.metric("vodfleet_http_heartbeats_total{outcome=\"renewed\"}");
    assert_eq!(renewed, Some(1.0));
}
