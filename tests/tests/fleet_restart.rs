//! Issue 3 (e): RabbitMQ restarted, then Redis restarted (empty), mid-stream,
//! on instances the test starts itself: the streams go on (the same RTMP
//! publish session, never interrupted), commands sent after each restart work,
//! and the tasks Redis forgot are rebuilt from the workers' heartbeats.
//!
//! Redis is restarted with SIGKILL (`RedisServer::restart`), the `kill -9` of
//! issue 9 row 7.
//!
//! The lease is 30 s here: a worker that cannot get its heartbeats confirmed for
//! the lease stops its streams by design (the fence), so "streams go on" holds
//! for outages shorter than the lease. A broker restart takes ~10 s here.

use std::time::{Duration, Instant};
use vodfleet_proto::fleet::keys;
use vodfleet_tests::fleet::{publish_conflicts, task_state, FleetOptions, Live};
use vodfleet_tests::{poll, Fleet};

const LEASE_TTL_MS: u64 = 30_000;

#[test]
fn streams_survive_broker_and_redis_restarts_and_commands_work_after_each() {
    let mut fleet = Fleet::start_private(FleetOptions::default().lease_ttl_ms(LEASE_TTL_MS));
    let producer = fleet.producer();
    let live1 = fleet.start_live(&producer, Duration::from_millis(100));
    std::thread::sleep(Duration::from_secs(3));
    drop(producer);

    // RabbitMQ goes away and comes back with its data.
    let away = fleet.rabbit().restart();
    eprintln!("RabbitMQ was away for {away:?}");
    let t = Instant::now();
    fleet.wait_all_ready(Duration::from_secs(30));
    eprintln!(
        "every process ready again {:?} after the broker",
        t.elapsed()
    );
    let producer = fleet.producer();
    let live2 = fleet.start_live(&producer, Duration::from_millis(100));
    // Redis comes back empty.
    fleet.redis.restart();
    fleet.wait_all_ready(Duration::from_secs(30));
    let live3 = fleet.start_live(&producer, Duration::from_millis(100));
    let (t1, t2, t3) = (&live1.task, &live2.task, &live3.task);
    // The forgotten tasks are known again, rebuilt from heartbeats.
    for t in [t1, t2] {
        let known = poll(Duration::from_secs(15), || {
            let task = fleet.coordinator().try_task(&t.id).ok().flatten()?;
            (task_state(&task).as_deref() == Some("running")).then_some(task)
        });
        assert!(
            known.is_some(),
            "task {} not known again after Redis came back empty\n{}",
            t.id,
            fleet.reports()
        );
        assert!(fleet.redis.exists(&keys::task(&t.id)));
    }
    std::thread::sleep(Duration::from_secs(2));

    for Live {
        task: t, watch: w, ..
    } in [&live1, &live2]
    {
        let s = w.sessions();
        assert!(
            s.len() == 1 && !w.absent_since(s[0].first_seen),
            "stream {} was interrupted: {}",
            t.key(),
            w.summary()
        );
        assert!(fleet.rtmp.is_publishing(t.key()));
        // Issue 9, row 7: Redis killed (SIGKILL) and back empty made no second
        // publisher: never two at once in /stat (and one session in nginx's log, below).
        assert_eq!(w.max_publishers(), 1, "{}", w.summary());
    }
    // A rebuilt task obeys commands: stop it.
    producer.send(&t1.stop());
    fleet
        .rtmp
        .wait_unpublished(t1.key(), Duration::from_secs(10));
    assert!(
        poll(Duration::from_secs(5), || (fleet
            .redis
            .ttl(&keys::resume(&t1.id))
            > 0)
        .then_some(()))
        .is_some(),
        "the rebuilt task's terminate left no resume record"
    );
    // And the other rebuilt one: stopped, each had exactly one publish session.
    producer.send(&t2.stop());
    fleet
        .rtmp
        .wait_unpublished(t2.key(), Duration::from_secs(10));
    for t in [t1, t2, t3] {
        assert!(publish_conflicts(&fleet.rtmp, t.key()).is_empty());
    }
    for t in [t1, t2] {
        let one = poll(Duration::from_secs(5), || {
            (fleet.rtmp.publish_sessions(t.key()) >= 1).then_some(())
        });
        assert!(one.is_some(), "{}", fleet.rtmp.access_log());
        assert_eq!(
            fleet.rtmp.publish_sessions(t.key()),
            1,
            "{}",
            fleet.rtmp.access_log()
        );
    }
}
