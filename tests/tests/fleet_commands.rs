//! Issue 3 (d): cmd 2 with a subset of destinations; cmd 3 with
//! `waitCrtUrlFinish` 0 and 1; a timed start 10 s ahead starts within ±1 s and
//! its `end` stops it on time. Which file was playing, and where in it, is read
//! from the frame numbers and tags drawn into the media.

use std::time::{Duration, Instant};
use vodfleet_proto::fleet::keys;
use vodfleet_tests::fleet::{
    counter_runs, long_counter, now_ms, publishers, seed, tag_runs, tagged_counter, FleetOptions,
    FPS, GOP,
};
use vodfleet_tests::{poll, read_counters, Fleet, PublisherWatch};

/// How soon after cmd 3 (waitCrtUrlFinish 0) the new list must be on the
/// stream, beyond the 1 s initial burst: command latency (p99 ≤ 1 s) plus polling.
const PROMPT_SECS: f64 = 3.0;

#[test]
fn terminating_some_destinations_keeps_the_others_live() {
    let fleet = Fleet::start(FleetOptions::default());
    let producer = fleet.producer();
    let media = long_counter();
    let task = fleet.new_task(&[&media], 2);
    let (k1, k2) = (task.keys[0].clone(), task.keys[1].clone());
    producer.send(&task.start(0));
    fleet.rtmp.wait_publishing(&k1, Duration::from_secs(15));
    fleet.rtmp.wait_publishing(&k2, Duration::from_secs(10));
    let watch2 = PublisherWatch::start(&fleet.rtmp, &k2, Duration::from_millis(100));
    let publisher2 = publishers(&fleet.rtmp, &k2);
    std::thread::sleep(Duration::from_secs(2));

    producer.send(&task.stop_some(&[0]));
    fleet.rtmp.wait_unpublished(&k1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        fleet.rtmp.is_publishing(&k2),
        "the destination that was not named stopped too"
    );
    assert_eq!(
        watch2.sessions().len(),
        1,
        "the other destination reconnected: {}",
        watch2.summary()
    );
    assert_eq!(
        publishers(&fleet.rtmp, &k2),
        publisher2,
        "same RTMP session"
    );
    assert!(
        !watch2.absent_since(watch2.sessions()[0].first_seen),
        "{}",
        watch2.summary()
    );
    assert!(
        !fleet.rtmp.is_publishing(&k1),
        "the stopped destination came back"
    );

    // Stopping the last one stops the task and writes the resume record.
    producer.send(&task.stop_some(&[1]));
    fleet.rtmp.wait_unpublished(&k2, Duration::from_secs(10));
    let record = keys::resume(&task.id);
    assert!(
        poll(Duration::from_secs(5), || (fleet.redis.ttl(&record) > 0)
            .then_some(()))
        .is_some(),
        "no {record} after the last destination was stopped"
    );
    assert_eq!(
        fleet.rtmp.publish_sessions(&k2),
        1,
        "{}",
        fleet.rtmp.access_log()
    );
}

/// Plays `a` (loop 0), sends cmd 3 with `[b]` after `before`, lets it run for
/// `after`, stops, and returns the recorded runs of (tag, first frame, last
/// frame) with the seconds between the first publish and the cmd 3.
fn update_runs(
    a_secs: f64,
    wait_current: bool,
    before: Duration,
    after: Duration,
) -> (Vec<(u32, u32, u32)>, f64) {
    let fleet = Fleet::start(FleetOptions::default());
    let producer = fleet.producer();
    let (a, b) = (tagged_counter(a_secs, 1), tagged_counter(30.0, 2));
    let task = fleet.new_task(&[&a], 1);
    producer.send(&task.start(0));
    fleet
        .rtmp
        .wait_publishing(task.key(), Duration::from_secs(15));
    let published = Instant::now();
    std::thread::sleep(before);
    let sent = Instant::now();
    producer.send(&task.update(&[&b], wait_current));
    std::thread::sleep(after);
    producer.send(&task.stop());
    fleet
        .rtmp
        .wait_unpublished(task.key(), Duration::from_secs(10));
    let c = read_counters(&fleet.rtmp.record_path(task.key()));
    let runs = tag_runs(&c);
    eprintln!(
        "recorded: {}\nruns (tag, from, to): {runs:?}",
        counter_runs(&c)
    );
    // One RTMP session across the switch.
    fleet.rtmp.assert_one_session(task.key());
    assert!(
        runs.len() == 2 && runs[0].0 == 1 && runs[1].0 == 2,
        "expected the old file once, then the new list; got runs {runs:?}"
    );
    assert!(
        runs[1].1 <= GOP,
        "the new list starts at its beginning, not at frame {}",
        runs[1].1
    );
    (runs, (sent - published).as_secs_f64())
}

#[test]
fn update_with_wait_0_switches_to_the_new_list_promptly() {
    let (runs, at_command) =
        update_runs(90.0, false, Duration::from_secs(4), Duration::from_secs(5));
    let a_end = runs[0].2 as f64 / FPS as f64;
    assert!(
        a_end <= at_command + 1.0 + PROMPT_SECS,
        "the old file played to {a_end:.1} s; the switch was asked for when about {at_command:.1} s had been published"
    );
    assert!(
        a_end + 1.0 >= at_command,
        "the old file stopped at {a_end:.1} s, before the command ({at_command:.1} s)"
    );
}

#[test]
fn update_with_wait_1_switches_after_the_current_item() {
    let secs = 8.0;
    // The rest of the current item (~6 s), then a few seconds of the new list.
    let (runs, _) = update_runs(secs, true, Duration::from_secs(2), Duration::from_secs(10));
    assert_eq!(
        (runs[0].1, runs[0].2),
        (0, (secs * FPS as f64) as u32 - 1),
        "the current item plays to its end before the new list"
    );
}

#[test]
fn timed_start_and_end_are_kept_within_a_second() {
    const WINDOW_MS: u64 = 8000;
    let fleet = Fleet::start(FleetOptions::default().min_window_ms(WINDOW_MS));
    let producer = fleet.producer();
    let media = long_counter();
    let task = fleet.new_task(&[&media], 1);
    let watch = PublisherWatch::start(&fleet.rtmp, task.key(), Duration::from_millis(50));
    // One reference point between the monotonic and the wall clock.
    let (ref_instant, ref_ms) = (Instant::now(), now_ms());
    let wall = |t: Instant| ref_ms as i64 + t.duration_since(ref_instant).as_millis() as i64;
    let start_ms = ref_ms + 10_000;
    let end_ms = start_ms + WINDOW_MS;
    producer.send(&seed::with_window(task.start(0), start_ms, end_ms));

    let sessions = watch
        .wait_sessions(1, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("the timed task never started\n{}", fleet.reports()));
    let started = wall(sessions[0].first_seen) - start_ms as i64;
    eprintln!("started {started:+} ms from `start`");
    assert!(
        started.abs() <= 1000,
        "the task started {started:+} ms from its start time"
    );
    let gone = poll(Duration::from_millis(WINDOW_MS + 5000), || {
        watch
            .samples()
            .into_iter()
            .find(|s| s.at > sessions[0].first_seen && !s.stat_failed && s.publishers.is_empty())
            .map(|s| s.at)
    })
    .unwrap_or_else(|| panic!("the task did not stop at its end time: {}", watch.summary()));
    let ended = wall(gone) - end_ms as i64;
    eprintln!("stopped {ended:+} ms from `end`");
    assert!(
        ended.abs() <= 1000,
        "the task stopped {ended:+} ms from its end time"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        watch.sessions().len(),
        1,
        "it must not come back after its end: {}",
        watch.summary()
    );
}

/// A producer that re-publishes a start it was not sure went through (same
/// message id) after the task moved to another worker gets a duplicate, not a
/// restart: the task keeps its epoch and its one publisher. The mark of the
/// command that started it lives in the task's own record, written by the
/// script that applied it, so neither a failover nor a coordinator dying
/// before its ack makes the command new again.
#[test]
fn a_start_published_again_after_a_hand_off_changes_nothing() {
    let mut fleet = Fleet::start(FleetOptions::default());
    let producer = fleet.producer();
    let media = long_counter();
    let task = fleet.new_task(&[&media], 1);
    let message_id = vodfleet_tests::unique("start");
    producer.send_as(&task.start(0), &message_id);
    fleet
        .rtmp
        .wait_publishing(task.key(), Duration::from_secs(15));
    let owner = fleet.owner_of(&task.id, Duration::from_secs(10));
    let first = publishers(&fleet.rtmp, task.key());
    let epoch = |fleet: &Fleet| {
        fleet
            .redis
            .hgetall(&keys::task(&task.id))
            .get("epoch")
            .and_then(|e| e.parse::<u64>().ok())
            .unwrap_or(0)
    };
    fleet.worker(&owner).sigterm();
    let other = poll(Duration::from_secs(20), || {
        let w = fleet.owner_of(&task.id, Duration::from_secs(10));
        (w != owner && epoch(&fleet) == 2).then_some(w)
    })
    .unwrap_or_else(|| panic!("no hand-off to another worker\n{}", fleet.reports()));
    // The new run is on the server (a publisher other than the first).
    let before = poll(Duration::from_secs(15), || {
        let now = publishers(&fleet.rtmp, task.key());
        (!now.is_empty() && now != first).then_some(now)
    })
    .unwrap_or_else(|| panic!("the new run never published\n{}", fleet.reports()));
    let accepted = |fleet: &Fleet, outcome: &str| {
        fleet
            .coordinators
            .iter()
            .map(|c| {
                vodfleet_tests::fleet::metric_sum(
                    &c.metrics(),
                    &format!("vodfleet_commands_total{{cmd=\"1\",result=\"{outcome}\"}}"),
                )
                .unwrap_or(0.0)
            })
            .sum::<f64>()
    };
    assert_eq!(accepted(&fleet, "accepted"), 1.0);

    producer.send_as(&task.start(0), &message_id);
    poll(Duration::from_secs(10), || {
        (accepted(&fleet, "duplicate") == 1.0).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the re-publish was not taken as a duplicate\n{}",
            fleet.reports()
        )
    });
    assert_eq!(accepted(&fleet, "accepted"), 1.0, "applied once");
    // Nothing restarts: over a 2 s observation window the epoch and the publisher
    // stay as the hand-off left them (a restart shows within a second).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(epoch(&fleet), 2, "{}", fleet.reports());
    assert_eq!(publishers(&fleet.rtmp, task.key()), before);
    assert_eq!(fleet.owner_of(&task.id, Duration::from_secs(5)), other);
}
