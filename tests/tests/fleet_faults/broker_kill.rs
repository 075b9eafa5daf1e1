//! Row 1: commands published with confirms while RabbitMQ is `kill -9`ed and
//! restarted. Every command the broker confirmed becomes exactly one task;
//! the producer re-publishes the ones it got no confirm for under the same
//! message id, and none of them is applied twice. The suite runs 1,000
//! commands and one kill; `scripts/soak/faults.sh broker-kill` runs 10,000 and two.
//!
//! The commands start tasks an hour ahead: each is recorded as `scheduled` at
//! epoch 1 without a stream, so thousands fit on one machine. A command
//! applied twice would leave epoch 2.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};
use vodfleet_proto::fleet::{keys, COMMANDS_QUEUE};
use vodfleet_tests::fleet::{body_of, long_counter, now_ms, seed, FleetOptions, Producer};
use vodfleet_tests::{poll, unique, Fleet};

/// Commands in flight at once (published, then their confirms awaited).
const WINDOW: usize = 100;

/// `vodfleet_commands_total{result=RESULT}` over every coordinator.
fn counted(fleet: &Fleet, result: &str) -> u64 {
    fleet
        .coordinators
        .iter()
        .map(|c| c.commands_counted(result))
        .sum()
}

/// Publishes `msgs` until each is confirmed, reconnecting when the broker is
/// away (up to 120 s in all). Returns how many publishes it took beyond one each.
fn publish_until_confirmed(
    fleet: &Fleet,
    producer: &mut Producer,
    msgs: Vec<(Vec<u8>, String)>,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut todo = msgs;
    let mut extra = 0;
    let mut first = true;
    while !todo.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} commands never confirmed",
            todo.len()
        );
        if !first {
            extra += todo.len();
            std::thread::sleep(Duration::from_millis(250));
            if !producer.is_connected() {
                *producer = fleet.producer();
            }
        }
        first = false;
        let results = producer.publish_batch(&todo, Duration::from_secs(10));
        todo = todo
            .into_iter()
            .zip(results)
            .filter(|(_, r)| r.is_err())
            .map(|(m, _)| m)
            .collect();
    }
    extra
}

fn confirmed_commands_survive_kills(n: usize, kills: usize) {
    let opts = FleetOptions {
        workers: 0,
        ..FleetOptions::default()
    };
    let mut fleet = Fleet::start_private(opts);
    let media = long_counter();
    let start = now_ms() + 3_600_000;
    let tasks: Vec<(String, Vec<u8>, String)> = (0..n)
        .map(|_| {
            let t = fleet.new_task(&[&media], 1);
            let body = body_of(&seed::with_window(t.start(0), start, start + 600_000));
            (t.id, body, unique("cmd"))
        })
        .collect();
    let batches = n.div_ceil(WINDOW);
    let kill_at: BTreeSet<usize> = (0..kills)
        .map(|k| batches * (k + 1) / (kills + 1))
        .collect();
    let mut producer = fleet.producer();
    let (mut unconfirmed, mut republished) = (0, 0);
    let t0 = Instant::now();
    for (b, chunk) in tasks.chunks(WINDOW).enumerate() {
        let msgs: Vec<(Vec<u8>, String)> = chunk
            .iter()
            .map(|(_, body, id)| (body.clone(), id.clone()))
            .collect();
        if !kill_at.contains(&b) {
            republished += publish_until_confirmed(&fleet, &mut producer, msgs);
            continue;
        }
        // kill -9 while this window is in flight. Its first half is confirmed
        // before; then the broker is frozen (SIGSTOP) so the second half is
        // surely sent and unconfirmed when the SIGKILL comes: a broker that
        // answers 100 publishes within a few ms would otherwise confirm the
        // whole window before any kill could land.
        let (before, during) = msgs.split_at(msgs.len() / 2);
        republished += publish_until_confirmed(&fleet, &mut producer, before.to_vec());
        let pid = fleet.rabbit().pid().expect("node runs");
        let group = format!("-{pid}");
        let signal = |sig: &str| {
            Command::new("kill")
                .args([sig, "--", &group])
                .status()
                .expect("kill")
        };
        assert!(signal("-STOP").success(), "SIGSTOP the broker");
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status()
        });
        let results = producer.publish_batch(during, Duration::from_secs(5));
        let _ = killer.join();
        let lost: Vec<(Vec<u8>, String)> = during
            .iter()
            .cloned()
            .zip(&results)
            .filter(|(_, r)| r.is_err())
            .map(|(m, _)| m)
            .collect();
        unconfirmed += lost.len();
        fleet.rabbit().kill9();
        let away = Instant::now();
        fleet.rabbit().start_again();
        eprintln!(
            "kill -9 in window {b}: {} of {} unconfirmed; broker back after {:?}",
            lost.len(),
            chunk.len(),
            away.elapsed()
        );
        producer = fleet.producer();
        republished += lost.len();
        republished += publish_until_confirmed(&fleet, &mut producer, lost);
    }
    eprintln!(
        "{n} commands confirmed in {:?}: {unconfirmed} unconfirmed at a kill, {republished} re-publishes",
        t0.elapsed()
    );
    assert!(
        unconfirmed > 0 || kills == 0,
        "no kill caught a command in flight"
    );

    // Every command is applied, once.
    let drained = poll(Duration::from_secs(180), || {
        let c = fleet.queue_counts();
        let scard = fleet.redis.task_count();
        (c.get(COMMANDS_QUEUE) == Some(&(0, 0)) && scard >= n).then_some(scard)
    });
    let scard = fleet.redis.task_count();
    assert_eq!(
        drained,
        Some(n),
        "tasks in Redis: {scard} of {n}; queues {:?}",
        fleet.queue_counts()
    );
    let mut conn = fleet.redis.conn();
    let mut pipe = redis::pipe();
    for (id, _, _) in &tasks {
        pipe.cmd("HMGET")
            .arg(keys::task(id))
            .arg("state")
            .arg("epoch");
    }
    let rows: Vec<(Option<String>, Option<u64>)> = pipe.query(&mut conn).expect("HMGET");
    let mut wrong: Vec<String> = Vec::new();
    for ((id, _, _), (state, epoch)) in tasks.iter().zip(&rows) {
        if state.as_deref() != Some("scheduled") || *epoch != Some(1) {
            wrong.push(format!("{id}: {state:?} epoch {epoch:?}"));
        }
    }
    let twice = rows
        .iter()
        .filter(|(_, e)| e.is_some_and(|e| e > 1))
        .count();
    eprintln!(
        "tasks: {n} recorded, {twice} applied twice (epoch > 1), {} wrong",
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "{} of {n} tasks are not one scheduled start: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    eprintln!(
        "coordinators: {} applied, {} skipped as applied before (redeliveries, re-publishes)",
        counted(&fleet, "accepted"),
        counted(&fleet, "duplicate")
    );
    assert_eq!(
        counted(&fleet, "accepted"),
        n as u64,
        "commands counted as applied by the coordinators"
    );
    let dead = producer.dead_letters();
    assert!(
        dead.is_empty(),
        "{} dead letters: {:?}",
        dead.len(),
        dead.first().map(|d| &d.reason)
    );
}

#[test]
fn confirmed_commands_become_one_task_each_across_a_broker_kill() {
    confirmed_commands_survive_kills(1000, 1);
}

/// `scripts/soak/faults.sh broker-kill`: `VODFLEET_SOAK_COMMANDS` (10,000) commands,
/// `VODFLEET_SOAK_KILLS` (2) kills.
#[test]
#[ignore = "soak: scripts/soak/faults.sh broker-kill"]
fn soak_confirmed_commands_across_broker_kills() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    confirmed_commands_survive_kills(
        env("VODFLEET_SOAK_COMMANDS", 10_000),
        env("VODFLEET_SOAK_KILLS", 2),
    );
}
