//! Issue 10, "RabbitMQ cluster": a coordinator whose `VODFLEET_AMQP_URL` lists
//! the three nodes of a RabbitMQ cluster takes a burst of confirmed commands;
//! the node it is connected to (which also leads the quorum queues it
//! declared) is `kill -9`ed in the middle of the burst. Must hold: every
//! confirmed command becomes exactly one task in Redis, commands published
//! after the kill are consumed through another node within 30 s, and a task
//! started after the kill gets its work order published (with confirms) to
//! the work queue within 30 s.
//!
//! The producer is connected to the same node, so it loses its connection
//! too: it moves to another node and re-publishes, under the same message
//! ids, what it got no confirm for (a command applied twice would leave
//! epoch 2). The same judging as row 1 (tests/tests/fleet_faults/broker_kill.rs).
//!
//! Three nodes start and join in about 15–20 s here and the whole test takes
//! about 35 s, so 2,000 commands run in the test command;
//! `scripts/soak/rabbit-cluster.sh` runs 10,000 and docs/RELIABILITY.md
//! records the result.

use std::process::Command;
use std::time::{Duration, Instant};
use vodfleet_proto::fleet::{keys, COMMANDS_DEAD_QUEUE, COMMANDS_QUEUE, EVENTS_QUEUE, WORK_QUEUE};
use vodfleet_tests::fleet::rabbit_cluster::{FailoverProducer, RabbitCluster};
use vodfleet_tests::fleet::{body_of, long_counter, now_ms, seed, Coordinator, RedisServer};
use vodfleet_tests::{poll, unique};

/// Commands in flight at once (published, then their confirms awaited).
const WINDOW: usize = 100;
/// The bound on "consumption resumes on another node" (issue 10).
const RESUME_BOUND: Duration = Duration::from_secs(30);
/// The coordinator's AMQP connection name (coordinator/src/main.rs).
const COORDINATOR_CONNECTION: &str = "vodfleet-coordinator";

/// How many of `ids` have a task record in Redis (the record itself, not an
/// index: indexes are laid out per docs/design/fleet.md and may be sharded).
fn recorded(redis: &RedisServer, ids: &[&str]) -> usize {
    let mut conn = redis.conn();
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.cmd("EXISTS").arg(keys::task(id));
    }
    let there: Vec<bool> = pipe.query(&mut conn).expect("EXISTS");
    there.into_iter().filter(|t| *t).count()
}

fn confirmed_commands_survive_a_cluster_node_kill(n: usize) {
    let mut cluster = RabbitCluster::start(3);
    let redis = RedisServer::start();
    let env: Vec<(String, String)> = [
        ("VODFLEET_AMQP_URL", cluster.urls()),
        ("VODFLEET_REDIS_URL", redis.url()),
        (
            "VODFLEET_API_KEYS",
            "test:test-secret-0123456789abcdef".into(),
        ),
        // Work orders expire after one lease: long enough to be seen queued.
        ("VODFLEET_LEASE_TTL_MS", "60000".into()),
        ("VODFLEET_ALLOW_PRIVATE_NETWORKS", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut coordinator = Coordinator::start(&env);
    coordinator.wait_ready(Duration::from_secs(60));

    // Quorum queues, one replica on each node.
    let mut all_nodes: Vec<String> = cluster.nodes().iter().map(|n| n.node().into()).collect();
    all_nodes.sort();
    let queues = cluster.queues().expect("list_queues");
    for q in [
        COMMANDS_QUEUE,
        COMMANDS_DEAD_QUEUE,
        WORK_QUEUE,
        EVENTS_QUEUE,
    ] {
        let info = queues
            .get(q)
            .unwrap_or_else(|| panic!("{q} not declared: {queues:?}"));
        let mut members = info.members.clone();
        members.sort();
        assert_eq!(info.kind, "quorum", "{q}: {info:?}");
        assert_eq!(members, all_nodes, "{q} is not replicated on every node");
    }
    let victim = poll(Duration::from_secs(30), || {
        cluster.node_serving(COORDINATOR_CONNECTION).ok().flatten()
    })
    .unwrap_or_else(|| {
        panic!(
            "no single {COORDINATOR_CONNECTION} connection: {:?}",
            cluster.connections()
        )
    });
    let victim_name = cluster.nodes()[victim].node().to_owned();
    eprintln!(
        "quorum queues on {} nodes; coordinator on node {victim} ({victim_name}); leaders {:?}",
        all_nodes.len(),
        queues
            .iter()
            .map(|(q, i)| (q.as_str(), i.leader.clone()))
            .collect::<Vec<_>>()
    );

    let media = long_counter();
    let start = now_ms() + 3_600_000;
    let commands: Vec<(String, Vec<u8>, String)> = (0..n)
        .map(|_| {
            let id = unique("task");
            let fwd = format!("rtmp://127.0.0.1:1935/live/{}", unique("key"));
            let body = seed::with_window(
                seed::start(&id, &[media.vod_url()], &[fwd], 0),
                start,
                start + 600_000,
            );
            (id, body_of(&body), unique("cmd"))
        })
        .collect();
    // Published after the kill, without a window: started at once.
    let live_id = unique("task");
    let live_fwd = format!("rtmp://127.0.0.1:1935/live/{}", unique("key"));
    let live = seed::start(&live_id, &[media.vod_url()], &[live_fwd], 0);
    let mut order_after: Option<Duration> = None;
    let batches = n.div_ceil(WINDOW);
    let kill_batch = batches / 2;
    let mut producer = FailoverProducer::connect(&cluster, victim);
    let (mut unconfirmed, mut republished) = (0, 0);
    let mut killed_at: Option<Instant> = None;
    let mut resumed_after: Option<Duration> = None;
    let t0 = Instant::now();
    for (b, chunk) in commands.chunks(WINDOW).enumerate() {
        let msgs: Vec<(Vec<u8>, String)> = chunk
            .iter()
            .map(|(_, body, id)| (body.clone(), id.clone()))
            .collect();
        if b != kill_batch {
            republished += producer.publish_until_confirmed(msgs, Duration::from_secs(120));
            // The first window confirmed after the kill: time until the
            // coordinator has made a task of it, through another node.
            if let (Some(k), None) = (killed_at, resumed_after) {
                let first = keys::task(&chunk[0].0);
                let seen = poll(RESUME_BOUND * 2, || {
                    let there: bool = redis.query(&["EXISTS", &first]);
                    there.then(|| k.elapsed())
                });
                resumed_after = Some(seen.unwrap_or_else(|| {
                    panic!(
                        "no command published after the kill was consumed within {:?}\n{}",
                        RESUME_BOUND * 2,
                        coordinator.report()
                    )
                }));
                // Then the live task's work order (rabbitmqctl takes a
                // second or more per look: this figure is an upper bound).
                let ordered = poll(RESUME_BOUND, || {
                    let ready = cluster.queue_counts().get(WORK_QUEUE).map_or(0, |c| c.0);
                    (ready >= 1).then(|| k.elapsed())
                });
                order_after = Some(ordered.unwrap_or_else(|| {
                    panic!(
                        "no work order reached {WORK_QUEUE} within {RESUME_BOUND:?} of the kill\n{}",
                        coordinator.report()
                    )
                }));
            }
            continue;
        }
        // kill -9 of the coordinator's node while this window is in flight.
        let pid = cluster.nodes()[victim].pid().expect("node runs");
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(3));
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            Instant::now()
        });
        let results = producer.publish_batch(&msgs, Duration::from_secs(5));
        killed_at = Some(killer.join().expect("killer thread"));
        let lost: Vec<(Vec<u8>, String)> = msgs
            .into_iter()
            .zip(&results)
            .filter(|(_, r)| r.is_err())
            .map(|(m, _)| m)
            .collect();
        unconfirmed += lost.len();
        cluster.node_mut(victim).kill9();
        eprintln!(
            "kill -9 of node {victim} in window {b}: {} of {} unconfirmed",
            lost.len(),
            chunk.len()
        );
        republished += lost.len();
        republished += producer.publish_until_confirmed(lost, Duration::from_secs(120));
        // A task that starts now: the coordinator publishes (with confirms)
        // its work order, through the node it moved to.
        producer.publish_until_confirmed(
            vec![(body_of(&live), unique("cmd"))],
            Duration::from_secs(60),
        );
    }
    let resumed_after = resumed_after.expect("a window was published after the kill");
    eprintln!(
        "{n} commands confirmed in {:?}: {unconfirmed} unconfirmed at the kill, {republished} re-publishes, \
         producer failovers {}",
        t0.elapsed(),
        producer.failovers
    );
    let order_after = order_after.expect("the kill happened");
    eprintln!(
        "consumption resumed {resumed_after:?} after the kill; a work order published {order_after:?} after it"
    );
    assert!(unconfirmed > 0, "the kill caught no command in flight");
    assert!(
        producer.failovers >= 1,
        "the producer never moved to another node"
    );
    assert!(
        resumed_after <= RESUME_BOUND,
        "consumption resumed only {resumed_after:?} after the kill (bound {RESUME_BOUND:?})"
    );
    let moved_to = poll(Duration::from_secs(30), || {
        cluster.node_serving(COORDINATOR_CONNECTION).ok().flatten()
    });
    assert!(
        moved_to.is_some_and(|i| i != victim),
        "the coordinator is not connected to another node: {moved_to:?} {:?}",
        cluster.connections()
    );
    let after = cluster.queues().expect("list_queues");
    eprintln!(
        "coordinator now on node {moved_to:?}; leaders {:?}",
        after
            .iter()
            .map(|(q, i)| (q.as_str(), i.leader.clone()))
            .collect::<Vec<_>>()
    );

    // Every confirmed command is applied, once.
    let mut ids: Vec<&str> = commands.iter().map(|(id, _, _)| id.as_str()).collect();
    ids.push(&live_id);
    let drained = poll(Duration::from_secs(180), || {
        let c = cluster.queue_counts();
        let there = recorded(&redis, &ids);
        (c.get(COMMANDS_QUEUE) == Some(&(0, 0)) && there == ids.len()).then_some(there)
    });
    let there = recorded(&redis, &ids);
    assert_eq!(
        drained,
        Some(n + 1),
        "tasks in Redis: {there} of {n} + 1; queues {:?}",
        cluster.queue_counts()
    );
    let mut conn = redis.conn();
    let mut pipe = redis::pipe();
    for (id, _, _) in &commands {
        pipe.cmd("HMGET")
            .arg(keys::task(id))
            .arg("state")
            .arg("epoch");
    }
    let rows: Vec<(Option<String>, Option<u64>)> = pipe.query(&mut conn).expect("HMGET");
    let wrong: Vec<String> = commands
        .iter()
        .zip(&rows)
        .filter(|(_, (state, epoch))| state.as_deref() != Some("scheduled") || *epoch != Some(1))
        .map(|((id, _, _), (state, epoch))| format!("{id}: {state:?} epoch {epoch:?}"))
        .collect();
    let twice = rows
        .iter()
        .filter(|(_, e)| e.is_some_and(|e| e > 1))
        .count();
    eprintln!(
        "tasks: {n} recorded, {} lost, {twice} applied twice (epoch > 1), {} wrong",
        (n + 1).saturating_sub(there),
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "{} of {n} tasks are not one scheduled start: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    eprintln!(
        "coordinator: {} applied, {} skipped as applied before (redeliveries, re-publishes)",
        coordinator.commands_counted("accepted"),
        coordinator.commands_counted("duplicate")
    );
    assert_eq!(
        coordinator.commands_counted("accepted"),
        n as u64 + 1,
        "commands counted as applied by the coordinator"
    );
    let dead = producer.producer().dead_letters();
    assert!(
        dead.is_empty(),
        "{} dead letters: {:?}",
        dead.len(),
        dead.first().map(|d| &d.reason)
    );
    eprintln!(
        "RESULT rabbit-cluster: {n} confirmed, 0 lost, {twice} applied twice, resumed after {:.1} s, \
         work order after {:.1} s",
        resumed_after.as_secs_f64(),
        order_after.as_secs_f64()
    );
}

#[test]
fn confirmed_commands_survive_a_kill_of_the_coordinators_node() {
    confirmed_commands_survive_a_cluster_node_kill(2000);
}

/// `scripts/soak/rabbit-cluster.sh`: `VODFLEET_SOAK_COMMANDS` (10,000) commands,
/// one `kill -9` of the coordinator's node.
#[test]
#[ignore = "soak: scripts/soak/rabbit-cluster.sh"]
fn soak_confirmed_commands_across_a_cluster_node_kill() {
    let n = std::env::var("VODFLEET_SOAK_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    confirmed_commands_survive_a_cluster_node_kill(n);
}
