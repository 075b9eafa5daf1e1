//! Issue 10, "Redis Cluster": the fleet's end-to-end scenarios with the
//! coordinators on a Redis Cluster of the test's own (three masters, three
//! replicas of Debian's `redis-server`, `cluster-node-timeout 2000`), judged
//! as the single-Redis tests judge them (fleet_failover.rs, fleet_resume.rs):
//! the media at nginx, its frame numbers, and the records in Redis.
//!
//! - start, failover after a worker SIGKILL, terminate with the 48 h resume
//!   record, resume: in the test command.
//! - `kill -9` of the master serving the task: its replica is promoted, the
//!   stream goes on (one publisher, one session), the task is still running,
//!   and commands work again.
//!
//! Both are in the test command (about 40 s each; the file runs in about a
//! minute); scripts/soak/redis-cluster.sh runs the file over and over.

use std::time::{Duration, Instant};
use vodfleet_proto::fleet::keys;
use vodfleet_tests::fleet::{
    assert_continues, publish_conflicts, take_recording, task_state, FleetOptions, GOP,
};
use vodfleet_tests::{poll, Fleet};

const LEASE_TTL_MS: u64 = 4000;

/// The resume record's TTL, once it is there.
fn resume_ttl(fleet: &mut Fleet, id: &str) -> i64 {
    let record = keys::resume(id);
    let cluster = fleet.redis.cluster();
    poll(Duration::from_secs(5), || {
        let t = cluster.ttl(&record);
        (t > 0).then_some(t)
    })
    .unwrap_or_else(|| panic!("no {record} in the Redis Cluster after terminate"))
}

#[test]
fn start_failover_terminate_and_resume_on_a_redis_cluster() {
    let t0 = Instant::now();
    let mut fleet = Fleet::start(
        FleetOptions::default()
            .lease_ttl_ms(LEASE_TTL_MS)
            .redis_cluster(),
    );
    eprintln!("fleet on a Redis Cluster up in {:?}", t0.elapsed());
    let producer = fleet.producer();
    // Start: media at nginx.
    let live = fleet.start_live(&producer, Duration::from_millis(100));
    let (id, key) = (live.task.id.clone(), live.task.key().to_owned());
    assert_eq!(
        fleet.redis.cluster().task_count(),
        1,
        "the task is in its index group"
    );
    std::thread::sleep(Duration::from_secs(5));

    // Failover after a worker SIGKILL: live again within the lease + 2 s.
    let owner = fleet.owner_of(&id, Duration::from_secs(10));
    let killed = Instant::now();
    fleet.worker(&owner).sigkill();
    let limit = Duration::from_millis(LEASE_TTL_MS) + Duration::from_secs(2);
    let sessions = live
        .watch
        .wait_sessions(2, limit + Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "no new publisher after the owner was killed: {}\n{}",
                live.watch.summary(),
                fleet.reports()
            )
        });
    let back = sessions[1].first_seen.saturating_duration_since(killed);
    eprintln!("SIGKILL → live again: {back:?} (limit {limit:?})");
    assert!(
        back <= limit,
        "live again {back:?} after the SIGKILL (limit {limit:?})"
    );
    assert_ne!(fleet.owner_of(&id, Duration::from_secs(10)), owner);
    std::thread::sleep(Duration::from_secs(3));

    // Terminate (cmd 2): one publisher throughout, the failover continued
    // within a GOP, and the 48 h resume record is in the cluster.
    let (last, first) = fleet.stop_and_judge(&producer, &live, 2);
    eprintln!("killed at frame {last}, went on at frame {first}");
    let ttl = resume_ttl(&mut fleet, &id);
    assert!(
        ttl > 172_700 && ttl <= 172_800,
        "the resume record has TTL {ttl} s; the contract says 48 h (172800 s)"
    );
    let stopped = take_recording(&fleet.rtmp, &key, "stopped");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!fleet.rtmp.is_publishing(&key), "back without a resume");

    // Resume (cmd 5): goes on from where the terminate left it.
    producer.send(&live.task.resume());
    fleet.rtmp.wait_publishing(&key, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    producer.send(&live.task.stop());
    fleet.rtmp.wait_unpublished(&key, Duration::from_secs(15));
    assert_eq!(live.watch.max_publishers(), 1, "{}", live.watch.summary());
    assert!(publish_conflicts(&fleet.rtmp, &key).is_empty());
    let (last, first) = assert_continues(&stopped, &fleet.rtmp.record_path(&key), GOP);
    eprintln!("stopped at frame {last}, resumed at frame {first} (GOP {GOP})");
    assert!(
        resume_ttl(&mut fleet, &id) > 172_700,
        "the second terminate writes the resume record again"
    );
    eprintln!("whole scenario: {:?}", t0.elapsed());
}

/// A lease long enough to ride out a failover (3-5 s, plus the client's
/// retries): the worker's fence must not fire while Redis fails over.
const SOAK_LEASE_TTL_MS: u64 = 15_000;

#[test]
fn a_killed_master_is_replaced_by_its_replica_and_the_lease_goes_on() {
    let mut fleet = Fleet::start(
        FleetOptions::default()
            .lease_ttl_ms(SOAK_LEASE_TTL_MS)
            .redis_cluster(),
    );
    let producer = fleet.producer();
    let live = fleet.start_live(&producer, Duration::from_millis(100));
    let (id, key) = (live.task.id.clone(), live.task.key().to_owned());
    std::thread::sleep(Duration::from_secs(4));
    let owner = fleet.owner_of(&id, Duration::from_secs(10));

    // kill -9 the master holding the task's record.
    let cluster = fleet.redis.cluster();
    let master = cluster.master_of(&keys::task(&id));
    let killed = Instant::now();
    cluster.kill9(master);
    let promoted = cluster.wait_promoted(master, Duration::from_secs(30));
    eprintln!(
        "master {master} killed; replica {promoted} serves its slots after {:?}",
        killed.elapsed()
    );
    // Leases go on: renewals land on the promoted replica.
    let renewed = poll(Duration::from_secs(20), || {
        let beat: u64 = fleet
            .redis
            .cluster()
            .hgetall(&keys::task(&id))
            .get("beat_ms")?
            .parse()
            .ok()?;
        let after =
            vodfleet_tests::fleet::now_ms().saturating_sub(killed.elapsed().as_millis() as u64);
        (beat > after + 1000).then_some(killed.elapsed())
    });
    assert!(
        renewed.is_some(),
        "no renewal written after the failover\n{}",
        fleet.reports()
    );
    eprintln!("first renewal after the kill: {renewed:?}");
    // Every coordinator says it is ready again (its /readyz pings the cluster).
    let t = Instant::now();
    fleet.wait_all_ready(Duration::from_secs(30));
    eprintln!("every process ready {:?} after the promotion", t.elapsed());
    // Well past the old lease: the task never left its worker.
    std::thread::sleep(Duration::from_millis(SOAK_LEASE_TTL_MS) + Duration::from_secs(2));
    let task = fleet
        .coordinator()
        .task(&id)
        .expect("the task is still known");
    assert_eq!(task_state(&task).as_deref(), Some("running"), "{task}");
    assert_eq!(fleet.owner_of(&id, Duration::from_secs(5)), owner);
    assert!(fleet.rtmp.is_publishing(&key), "the stream went off air");

    // Commands work again: a new task starts, the first one stops.
    let second = fleet.start_live(&producer, Duration::from_millis(100));
    producer.send(&live.task.stop());
    fleet.rtmp.wait_unpublished(&key, Duration::from_secs(15));
    assert_eq!(
        live.watch.max_publishers(),
        1,
        "two publishers at once: {}",
        live.watch.summary()
    );
    assert!(publish_conflicts(&fleet.rtmp, &key).is_empty());
    assert_eq!(
        fleet.rtmp.publish_sessions(&key),
        1,
        "the stream was interrupted (a second publish session)\n{}",
        fleet.rtmp.access_log()
    );
    assert!(resume_ttl(&mut fleet, &id) > 172_700);
    producer.send(&second.task.stop());
    fleet
        .rtmp
        .wait_unpublished(second.task.key(), Duration::from_secs(15));
    assert_eq!(fleet.redis.cluster().task_count(), 2);
}
