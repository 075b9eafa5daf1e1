//! `vodfleet-worker run` against the machine's RabbitMQ (a virtual host of its
//! own per test) and a real nginx-rtmp, with the test playing the coordinator:
//! it publishes work orders, reads heartbeats and answers them with lease acks.
//!
//! What must hold (docs/design/fleet.md#lease-protocol): orders are taken up to the
//! slot limit and acked at once; heartbeats carry a growing position; a revoked
//! lease stops its stream at once and withheld acks stop every stream within the
//! lease TTL (judged by nginx: the publisher is gone); SIGTERM releases each task
//! with its position and exits 0; a resume position starts the stream there
//! (judged by what nginx recorded); control messages stop some destinations,
//! replace the playlist, stop the task; `end` finishes it.

use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

use vodfleet_proto::fleet::{DestinationState, EventKind, ToWorker, WorkerMessage, WORK_QUEUE};
use vodfleet_tests::fleet::now_ms;
use vodfleet_tests::{unique, wait_until, Media, Pattern, Recording};

mod coordinator;
mod rig;

use coordinator::{lock, Acks};
use rig::{
    ctl, looping_task, metric, spec, terminate, wait_gone, worker, Rig, HEARTBEAT_MS, TTL_MS,
};

#[test]
fn slots_heartbeats_revocation_and_fencing() {
    let media = Media::mp4(2.0, "320x240", 25, 25, Pattern::TestSrc2);
    let Rig {
        vhost: _vhost,
        rtmp,
        c,
        mut w,
    } = Rig::start(2);
    w.wait_ready(Duration::from_secs(20));
    assert_eq!(w.get("/healthz").map(|r| r.text()), Ok("ok\n".to_string()));

    // A body that is no work order is dropped (acked), not redelivered forever.
    c.publish_raw(WORK_QUEUE, b"{not json");
    let keys: Vec<String> = (0..3).map(|_| unique("slot")).collect();
    let ids: Vec<String> = (0..3).map(|_| unique("task")).collect();
    let task = |i: usize| looping_task(&ids[i], &media, &[rtmp.url(&keys[i])]);
    for i in 0..3 {
        c.order(task(i), 1, None);
    }
    let third_issued = Instant::now();
    rtmp.wait_publishing(&keys[0], Duration::from_secs(20));
    rtmp.wait_publishing(&keys[1], Duration::from_secs(20));
    // Two slots: the third order waits in the queue, untouched.
    wait_until(
        "heartbeat says no slot is free",
        Duration::from_secs(10),
        || c.last_free_slots() == Some(0),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !rtmp.is_publishing(&keys[2]),
        "a third task started on a 2-slot worker"
    );
    assert_eq!(c.work_backlog(), 1, "the third order stays in the queue");

    // Heartbeats carry a growing position and the destination's state.
    wait_until(
        "three heartbeats with task 1 live",
        Duration::from_secs(10),
        || {
            c.beats_of(&ids[1])
                .iter()
                .filter(|(_, d)| d == &[DestinationState::Live])
                .count()
                >= 3
        },
    );
    let beats = c.beats_of(&ids[1]);
    let timeline: Vec<u64> = beats.iter().map(|(p, _)| p.timeline_ms).collect();
    assert!(
        timeline.windows(2).all(|w| w[1] >= w[0]) && timeline.last() > timeline.first(),
        "timeline positions grow: {timeline:?}"
    );

    // Revoking task 0 stops it at once, and its slot takes the waiting order. That
    // order has outlived its lease (the coordinator re-issues such a lease with a
    // higher epoch), so the worker drops it rather than risk two publishers...
    let stale = Duration::from_millis(TTL_MS);
    std::thread::sleep(stale.saturating_sub(third_issued.elapsed()));
    lock(&c.revoke).push(ids[0].clone());
    let revoked_at = Instant::now();
    let gone = wait_gone(&rtmp, &keys[0], Duration::from_secs(5));
    assert!(
        gone - revoked_at < Duration::from_millis(HEARTBEAT_MS + 1000),
        "revoked stream stopped {:?} after the revocation was decided",
        gone - revoked_at
    );
    eprintln!(
        "revoked stream gone {:?} after the revocation was decided",
        gone - revoked_at
    );
    wait_until(
        "the stale order taken off the queue",
        Duration::from_secs(5),
        || c.work_backlog() == 0,
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !rtmp.is_publishing(&keys[2]),
        "an order older than its lease was started"
    );
    // ...and takes the re-issued one.
    c.order(task(2), 2, None);
    rtmp.wait_publishing(&keys[2], Duration::from_secs(20));

    // A coordinator that stops answering: every stream stops within the lease TTL
    // of the last heartbeat it renewed.
    wait_until("task 2 renewed", Duration::from_secs(10), || {
        lock(&c.answered)
            .iter()
            .any(|a| a.renewed.contains(&ids[2]))
    });
    c.set_acks(Acks::Withhold);
    let last = lock(&c.answered).last().cloned().expect("answered beats");
    let gone1 = wait_gone(&rtmp, &keys[1], Duration::from_millis(TTL_MS + 2000));
    let gone2 = wait_gone(&rtmp, &keys[2], Duration::from_millis(TTL_MS + 2000));
    let gone_ms = now_ms() - gone1.max(gone2).elapsed().as_millis() as u64;
    assert!(
        gone_ms < last.sent_ms + TTL_MS,
        "streams stopped {} ms after the last renewed heartbeat was sent (TTL {TTL_MS} ms)",
        gone_ms - last.sent_ms
    );
    eprintln!(
        "fenced streams gone {} ms after the last renewed heartbeat was sent (TTL {TTL_MS} ms)",
        gone_ms - last.sent_ms
    );
    // Fenced or revoked tasks are not the worker's to report on.
    assert!(
        !c.messages().iter().any(|m| matches!(
            m,
            WorkerMessage::Released { .. } | WorkerMessage::Finished { .. }
        )),
        "{:#?}",
        c.messages()
    );
    wait_until(
        "heartbeats with both slots free",
        Duration::from_secs(5),
        || c.last_free_slots() == Some(2),
    );
    assert_eq!(
        metric(&w, "vodfleet_worker_fenced_total{reason=\"expired\"}"),
        2.0
    );
    assert_eq!(
        metric(&w, "vodfleet_worker_fenced_total{reason=\"revoked\"}"),
        1.0
    );
    assert_eq!(metric(&w, "vodfleet_worker_streams_active"), 0.0);
    assert!(metric(&w, "vodfleet_worker_heartbeats_total") >= 5.0);
    assert!(metric(&w, "vodfleet_worker_frames_sent_total") > 0.0);
    let metrics = w.metrics();
    for key in &keys {
        assert!(!metrics.contains(key.as_str()), "a stream key in /metrics");
    }

    terminate(&mut w);
}

#[test]
fn sigterm_releases_with_the_position_and_a_resume_continues_there() {
    let media = Media::mp4(10.0, "320x240", 25, 25, Pattern::TestSrc2);
    let Rig {
        vhost,
        rtmp,
        c,
        mut w,
    } = Rig::start(2);
    let (first, other) = (unique("first"), unique("other"));
    let id = unique("resumed");
    let once = |id: &str, key: &str| {
        spec(json!({
            "id": id,
            "src": [{"url": media.vod_url()}],
            "forward": [{"url": rtmp.url(key)}],
            "extendParam": {"loop": "1"}
        }))
    };
    c.order(once(&id, &first), 1, None);
    let other_id = unique("other");
    c.order(
        looping_task(&other_id, &media, &[rtmp.url(&other)]),
        1,
        None,
    );
    rtmp.wait_publishing(&first, Duration::from_secs(20));
    rtmp.wait_publishing(&other, Duration::from_secs(20));
    wait_until("3 s of the item sent", Duration::from_secs(10), || {
        c.beats_of(&id)
            .last()
            .is_some_and(|(p, _)| p.offset_ms >= 3000)
    });

    let drain = terminate(&mut w);
    assert!(
        !w.log().contains(" ERROR "),
        "a clean drain logs no error:\n{}",
        w.log()
    );
    let released = |task: &str| {
        c.wait_for("Released", Duration::from_secs(5), |m| match m {
            WorkerMessage::Released {
                task_id,
                epoch,
                position,
                ..
            } if task_id == task => Some((*epoch, *position)),
            _ => None,
        })
    };
    let (epoch, at) = released(&id);
    released(&other_id);
    eprintln!("drain took {drain:?}; released at {at:?}");
    assert_eq!(epoch, 1);
    assert_eq!((at.item, at.loop_index), (0, 0));
    assert!(
        (3000..9000).contains(&at.offset_ms) && at.timeline_ms + 200 >= at.offset_ms,
        "{at:?}"
    );
    assert!(
        !c.messages()
            .iter()
            .any(|m| matches!(m, WorkerMessage::Finished { .. })),
        "a drained task is released, not finished"
    );
    assert!(
        !c.events_of(&id)
            .iter()
            .any(|(k, _, _)| *k == EventKind::Stopped),
        "scale-down is no stop of the producer's: no `stopped` callback"
    );
    rtmp.wait_unpublished(&first, Duration::from_secs(5));
    let rec1 = Recording::read(&rtmp.record_path(&first));

    // Another worker takes the re-issued lease from that position, plays the rest
    // of the item (loop 1) and finishes.
    let _w2 = worker(&vhost, 1);
    let second = unique("second");
    c.order(once(&id, &second), 2, Some(at));
    let (end, error) = c.wait_for("Finished", Duration::from_secs(20), |m| match m {
        WorkerMessage::Finished {
            task_id,
            epoch: 2,
            position,
            error,
            ..
        } if *task_id == id => Some((*position, error.clone())),
        _ => None,
    });
    assert_eq!(error, None);
    assert_eq!((end.item, end.loop_index), (0, 0));
    assert!(
        end.offset_ms >= 9_900,
        "finished at the item's end: {end:?}"
    );
    assert!(
        end.timeline_ms >= at.timeline_ms + (end.offset_ms - at.offset_ms) - 1000,
        "the output timeline went on from the released position: {at:?} → {end:?}"
    );
    rtmp.wait_unpublished(&second, Duration::from_secs(5));
    let rec2 = Recording::read(&rtmp.record_path(&second));
    let (secs1, secs2) = (rec1.video_secs(), rec2.video_secs());
    let offset = at.offset_ms as f64 / 1000.0;
    eprintln!("first run recorded {secs1:.2} s, released at {offset:.3} s; second run recorded {secs2:.2} s");
    // Resumed at the keyframe at or before the offset (GOP 1 s): the rest of the
    // 10 s item, plus at most one GOP played again.
    assert!(
        secs2 >= 10.0 - offset - 0.05 && secs2 <= 10.0 - offset + 1.05,
        "second run {secs2:.2} s for a resume at {offset:.3} s of 10 s"
    );
    assert!(
        (secs1 - offset).abs() < 0.5,
        "first run recorded {secs1:.2} s, released at {offset:.3} s"
    );
    // Players that survive the reconnect see the clock go on where it stopped.
    let first_dts = rec2.video.first().map_or(f64::NAN, |p| p.dts);
    let resumed_at = at.timeline_ms as f64 / 1000.0;
    assert!(
        (first_dts - resumed_at).abs() < 0.2,
        "second run starts at {first_dts:.3} s, the released timeline was at {resumed_at:.3} s"
    );
    rec2.assert_monotonic();
    rec2.assert_decodes_cleanly();
    assert!(
        c.events_of(&id)
            .iter()
            .any(|(k, _, _)| *k == EventKind::Finished),
        "{:?}",
        c.events_of(&id)
    );
}

#[test]
fn control_stops_destinations_replaces_the_playlist_and_stops_the_task() {
    let a = Media::mp4(2.0, "320x240", 25, 25, Pattern::TestSrc2);
    let b = vodfleet_tests::MediaSpec::new(vodfleet_tests::Container::Mp4, 2.0, "320x240", 25, 25)
        .pattern(Pattern::SmpteBars)
        .tone(880)
        .generate();
    let Rig {
        vhost: _vhost,
        rtmp,
        c,
        w,
    } = Rig::start(2);
    let (k1, k2, k3) = (unique("k1"), unique("k2"), unique("k3"));
    let (u1, u2) = (rtmp.url(&k1), rtmp.url(&k2));
    let id = unique("ctl");
    c.order(looping_task(&id, &a, &[u1.clone(), u2]), 1, None);
    // A task with an end time (3 s from now) in the other slot: end beats loop 0.
    let timed = unique("timed");
    let end_ms = now_ms() + 3000;
    c.order(
        spec(json!({
            "id": timed,
            "src": [{"url": a.vod_url()}],
            "forward": [{"url": rtmp.url(&k3)}],
            "extendParam": {"loop": "0"},
            "end": end_ms.to_string()
        })),
        1,
        None,
    );
    rtmp.wait_publishing(&k1, Duration::from_secs(20));
    rtmp.wait_publishing(&k2, Duration::from_secs(20));

    // cmd 2 for one destination: it goes, the other stays, reports shrink.
    c.control(
        &w,
        &ToWorker::Stop {
            task_id: id.clone(),
            epoch: 1,
            forwards: Some(vec![u1]),
        },
    );
    wait_gone(&rtmp, &k1, Duration::from_secs(3));
    let beats_before = c.beats_of(&id).len();
    wait_until(
        "a heartbeat after the partial stop",
        Duration::from_secs(5),
        || c.beats_of(&id).len() > beats_before + 1,
    );
    assert_eq!(
        c.beats_of(&id).last().map(|(_, d)| d.clone()),
        Some(vec![DestinationState::Live]),
        "one destination left, live"
    );
    assert!(rtmp.is_publishing(&k2));

    // cmd 3, now: the new list plays at once, in the same session.
    fn named(m: &Media) -> impl Fn(&(EventKind, Option<usize>, String)) -> bool + '_ {
        move |(k, _, msg)| *k == EventKind::FileStarted && msg.contains(&m.name)
    }
    c.control(&w, &ToWorker::Update {
        task_id: id.clone(),
        epoch: 1,
        sources: vec![spec(json!({"id": "x", "src": [{"url": b.vod_url()}], "forward": [{"url": "rtmp://h/l/k"}]})).sources[0].clone()],
        wait_current: false,
    });
    let asked = Instant::now();
    wait_until(
        "file_started of the new list",
        Duration::from_secs(3),
        || c.events_of(&id).iter().any(named(&b)),
    );
    eprintln!("playlist switched {:?} after the update", asked.elapsed());
    // cmd 3 after the current item: the next item to start is the new list's.
    let n = c.events_of(&id).len();
    c.control(&w, &ToWorker::Update {
        task_id: id.clone(),
        epoch: 1,
        sources: vec![spec(json!({"id": "x", "src": [{"url": a.vod_url()}], "forward": [{"url": "rtmp://h/l/k"}]})).sources[0].clone()],
        wait_current: true,
    });
    wait_until("the next file_started", Duration::from_secs(5), || {
        c.events_of(&id).len() > n
    });
    assert!(
        named(&a)(&c.events_of(&id)[n]),
        "after the current item, the new list: {:?}",
        &c.events_of(&id)[n..]
    );

    // The timed task finished at its end time.
    let finished = c.wait_for("Finished of the timed task", Duration::from_secs(10), |m| {
        matches!(m, WorkerMessage::Finished { task_id, error: None, .. } if *task_id == timed)
            .then(now_ms)
    });
    assert!(
        finished >= end_ms && finished < end_ms + 1500,
        "finished {} ms after its end time",
        finished as i64 - end_ms as i64
    );
    assert!(!rtmp.is_publishing(&k3));

    // cmd 2 for the task: released with the exact position (the `stopped`
    // callback is the coordinator's own).
    c.control(
        &w,
        &ToWorker::Stop {
            task_id: id.clone(),
            epoch: 1,
            forwards: None,
        },
    );
    wait_gone(&rtmp, &k2, Duration::from_secs(3));
    c.wait_for("Released", Duration::from_secs(5), |m| {
        matches!(m, WorkerMessage::Released { task_id, epoch: 1, .. } if *task_id == id)
            .then_some(())
    });
    let events = c.events_of(&id);
    let kinds: Vec<EventKind> = events.iter().map(|(k, _, _)| *k).collect();
    assert_eq!(kinds.first(), Some(&EventKind::FileStarted), "{events:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == EventKind::Started).count(),
        1,
        "{events:?}"
    );
    assert!(!kinds.contains(&EventKind::Stopped), "{events:?}");
    let seqs: Vec<u64> = c
        .messages()
        .into_iter()
        .filter_map(|m| match m {
            WorkerMessage::Event { task_id, event, .. } if task_id == id => Some(event.seq),
            _ => None,
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "event seq numbers"
    );
    assert!(c
        .events_of(&timed)
        .iter()
        .any(|(k, _, _)| *k == EventKind::Finished));
}

#[test]
fn a_lost_broker_connection_is_rebuilt_while_the_stream_goes_on() {
    let media = Media::mp4(2.0, "320x240", 25, 25, Pattern::TestSrc2);
    let Rig {
        vhost,
        rtmp,
        c,
        mut w,
    } = Rig::start(1);
    let (id, key) = (unique("kept"), unique("kept"));
    c.order(looping_task(&id, &media, &[rtmp.url(&key)]), 1, None);
    rtmp.wait_publishing(&key, Duration::from_secs(20));
    wait_until("two heartbeats", Duration::from_secs(10), || {
        c.beats_of(&id).len() >= 2
    });

    // The broker drops the worker's connection (as on a broker restart or a network cut).
    let out = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-p",
            vhost.name(),
            "pid",
            "client_properties",
            "--silent",
        ])
        .output()
        .expect("rabbitmqctl list_connections");
    let listing = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = listing
        .lines()
        .find(|l| l.contains(w.id()))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no connection of {} in:\n{listing}", w.id()))
        .to_owned();
    ctl(&["close_connection", &pid, "test: connection cut"]);
    let cut = Instant::now();
    let beats_after = || {
        lock(&c.log)
            .iter()
            .filter(|(at, m)| *at > cut && matches!(m, WorkerMessage::Heartbeat { .. }))
            .count()
    };
    wait_until(
        "heartbeats on a new connection",
        Duration::from_secs(10),
        || beats_after() >= 1,
    );
    eprintln!("heartbeating again {:?} after the cut", cut.elapsed());
    w.wait_ready(Duration::from_secs(20));
    // Renewed over the new connection: still streaming well past the lease TTL.
    std::thread::sleep(Duration::from_millis(TTL_MS + 1000).saturating_sub(cut.elapsed()));
    assert!(
        rtmp.is_publishing(&key),
        "the stream stopped across a reconnect"
    );
    assert!(beats_after() >= 3);
    assert_eq!(
        metric(&w, "vodfleet_worker_fenced_total{reason=\"expired\"}"),
        0.0
    );
    terminate(&mut w);
    rtmp.assert_one_session(&key);
    assert!(w.log().contains("reconnecting"), "{}", w.log());
}
