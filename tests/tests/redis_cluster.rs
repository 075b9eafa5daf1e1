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

/// A heartbeat's renewals go out as one pipeline per master
/// (coordinator/src/store/renew.rs). On the cluster: every task, on every
/// master, is renewed and its deadline written to the index; a wrong epoch is
/// revoked and an unknown task reported; heartbeats that are not aligned
/// leave the index entries where they are, an aligned one moves them, and so
/// does any once an entry is less than TTL/4 ahead. With
/// no slot map (before its first read, or stale after a failover) the mixed
/// pipeline is refused with MOVED and the renewals go one by one, with the
/// same outcome, and the map is read again. The reaper's read of the index
/// (one pipeline per master) finds the tasks when their deadlines pass.
#[test]
fn a_heartbeats_renewals_reach_every_master_with_or_without_the_slot_map() {
    use vodfleet_coordinator::store::{IndexMove, Renewal, Store};
    use vodfleet_proto::fleet::TaskBeat;
    use vodfleet_proto::Position;
    use vodfleet_tests::fleet::{now_ms, seed};

    const TTL: u64 = 10_000;
    let cluster = vodfleet_tests::fleet::redis_cluster::RedisCluster::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store = rt
        .block_on(Store::connect_cluster(&cluster.seeds()))
        .expect("connects to the cluster");
    let fwd = vec!["rtmp://127.0.0.1:1/live/k".to_owned()];
    let src = vec!["vod://a.mp4".to_owned()];
    let now = now_ms();
    let mut beats = Vec::new();
    for i in 0..60 {
        let id = format!("pipelined-{i}");
        let body = serde_json::to_vec(&seed::start(&id, &src, &fwd, 0)).expect("json");
        let cmd = vodfleet_proto::parse_command(&body).expect("a seed start command");
        let started = rt
            .block_on(store.start(&cmd.tasks[0], None, now, TTL, false, None, "m"))
            .expect("started");
        beats.push(TaskBeat {
            task_id: id,
            epoch: started.epoch,
            position: Position::default(),
            destinations: Vec::new(),
        });
    }
    let masters: std::collections::BTreeSet<u16> = beats
        .iter()
        .map(|b| cluster.master_of(&keys::task(&b.task_id)))
        .collect();
    assert_eq!(masters.len(), 3, "the tasks span every master");
    let mut all = beats.clone();
    all.push(TaskBeat {
        epoch: beats[0].epoch + 1,
        ..beats[0].clone()
    });
    all.push(TaskBeat {
        task_id: "pipelined-never-started".into(),
        ..beats[0].clone()
    });
    let due = |id: &str| -> Option<u64> { cluster.query(&["ZSCORE", &keys::due_of(id), id]) };
    let lease_until = |id: &str| -> u64 {
        cluster.hgetall(&keys::task(id))["lease_until"]
            .parse()
            .expect("a number")
    };

    let at = now + 100;
    let r = rt
        .block_on(store.renew_all(&all, "w1", at, TTL, IndexMove::Urgent))
        .expect("renewed");
    assert!(r[..60].iter().all(|r| *r == Renewal::Renewed), "{r:?}");
    assert_eq!(r[60], Renewal::Revoked, "a wrong epoch is revoked");
    assert_eq!(r[61], Renewal::Unknown);
    assert_eq!(store.unpipelined().get(), 0, "pipelined per master");
    for b in &beats {
        let rec = cluster.hgetall(&keys::task(&b.task_id));
        assert_eq!(rec["state"], "running", "{rec:?}");
        assert_eq!(rec["worker"], "w1");
        assert_eq!(lease_until(&b.task_id), at + TTL);
        assert_eq!(due(&b.task_id), Some(at + TTL), "deadline in the index");
    }

    // 2 s and 4 s later, heartbeats that are not aligned: the lease moves,
    // the index entry (8 s, 6 s ahead) stays.
    for later in [2_000, 4_000] {
        let r = rt
            .block_on(store.renew_all(&beats, "w1", at + later, TTL, IndexMove::Urgent))
            .expect("renewed");
        assert!(r.iter().all(|r| *r == Renewal::Renewed), "{r:?}");
        for b in &beats {
            assert_eq!(lease_until(&b.task_id), at + later + TTL);
            assert_eq!(due(&b.task_id), Some(at + TTL), "not moved yet");
        }
    }
    // 6 s later, an aligned heartbeat: the entry, less than 3/4 TTL ahead, moves.
    rt.block_on(store.renew_all(&beats, "w1", at + 6_000, TTL, IndexMove::Aligned))
        .expect("renewed");
    for b in &beats {
        assert_eq!(due(&b.task_id), Some(at + 6_000 + TTL), "moved");
    }

    // No slot map: one by one, same outcome; then the map is back.
    store.forget_slot_map();
    let r = rt
        .block_on(store.renew_all(&all, "w1", at + 7_000, TTL, IndexMove::Aligned))
        .expect("renewed one by one");
    assert!(r[..60].iter().all(|r| *r == Renewal::Renewed), "{r:?}");
    assert_eq!((&r[60], &r[61]), (&Renewal::Revoked, &Renewal::Unknown));
    assert!(
        store.unpipelined().get() > 0,
        "the mixed pipeline was refused"
    );
    for b in &beats {
        assert_eq!(lease_until(&b.task_id), at + 7_000 + TTL);
    }
    let before = store.unpipelined().get();
    rt.block_on(store.renew_all(&beats, "w1", at + 8_000, TTL, IndexMove::Urgent))
        .expect("renewed");
    assert_eq!(store.unpipelined().get(), before, "pipelined again");
    // The aligned heartbeats lost: at 14 s the entry (at 7 s + TTL, written
    // one by one) is less than TTL/4 ahead and moves all the same.
    rt.block_on(store.renew_all(&beats, "w1", at + 14_000, TTL, IndexMove::Urgent))
        .expect("renewed");
    for b in &beats {
        assert_eq!(due(&b.task_id), Some(at + 14_000 + TTL), "moved late");
    }
    // The reaper's read of every group, one pipeline per master: nothing due yet,
    // everything due once the leases have run out.
    assert!(rt
        .block_on(store.due(at + 14_000, 100))
        .expect("read")
        .is_empty());
    let overdue = rt
        .block_on(store.due(at + 14_000 + TTL, 100))
        .expect("read");
    assert_eq!(overdue.len(), 60, "{overdue:?}");
}
