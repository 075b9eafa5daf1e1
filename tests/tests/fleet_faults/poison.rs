//! Row 3: a poison command, one whose handler fails every time it runs. The
//! product has no test hooks, so the poison is real: a stop for a task whose
//! stored record is unreadable (its `spec` in Redis is not JSON). Each
//! delivery fails, goes back to the queue, and on the last one the delivery
//! limit allows it is dead-lettered with the error as its reason. It must not
//! loop, and the commands after it must still be applied.

use std::time::Duration;
use vodfleet_proto::fleet::{keys, COMMANDS_QUEUE, COMMAND_DELIVERY_LIMIT};
use vodfleet_tests::fleet::{long_counter, now_ms, seed, FleetOptions};
use vodfleet_tests::{poll, unique, Fleet};

/// Handler failures the coordinators logged.
fn failures(fleet: &Fleet) -> usize {
    fleet
        .coordinators
        .iter()
        .map(|c| c.log().matches("command not applied").count())
        .sum()
}

#[test]
fn a_command_that_fails_its_handler_is_dead_lettered_with_its_reason_after_the_limit() {
    let opts = FleetOptions {
        workers: 0,
        ..FleetOptions::default()
    };
    let fleet = Fleet::start(opts);
    let mut producer = fleet.producer();
    let media = long_counter();
    let poisoned = fleet.new_task(&[&media], 1);
    let start = now_ms() + 3_600_000;
    let r = producer.request(&seed::with_window(
        poisoned.start(0),
        start,
        start + 600_000,
    ));
    assert_eq!(r["http_code"], "200", "{r}");
    let key = keys::task(&poisoned.id);
    poll(Duration::from_secs(5), || {
        fleet.redis.exists(&key).then_some(())
    })
    .expect("the scheduled task is recorded");
    fleet
        .redis
        .query::<i64>(&["HSET", &key, "spec", "{\"not\": json"]);

    let poison_id = unique("poison");
    producer.send_as(&poisoned.stop(), &poison_id);
    let dead = poll(Duration::from_secs(30), || {
        producer
            .dead_letters()
            .into_iter()
            .find(|d| d.message_id.as_deref() == Some(poison_id.as_str()))
    })
    .unwrap_or_else(|| {
        panic!(
            "the poison command was not dead-lettered within 30 s\n{}",
            fleet.reports()
        )
    });
    let reason = dead.reason.clone().unwrap_or_default();
    eprintln!("dead-lettered: {reason:?}, headers {:?}", dead.headers);
    assert!(
        reason.contains("unreadable") && reason.contains(&poisoned.id),
        "the reason names the task and what is wrong with it: {reason:?}"
    );
    let limit = COMMAND_DELIVERY_LIMIT as usize;
    assert!(
        reason.contains(&format!("after {} deliveries", limit + 1)),
        "dead-lettered on the last delivery the limit allows: {reason:?}"
    );

    // No loop: a command sent after it is applied, the queue is empty, and the
    // handler ran once per delivery, no more.
    let next = fleet.new_task(&[&media], 1);
    let r = producer.request(&seed::with_window(next.start(0), start, start + 600_000));
    assert_eq!(r["http_code"], "200", "a command after the poison: {r}");
    let counts = fleet.queue_counts();
    assert_eq!(counts[COMMANDS_QUEUE], (0, 0), "{counts:?}");
    let ran = failures(&fleet);
    eprintln!("handler runs of the poison command: {ran}");
    assert_eq!(ran, limit + 1, "{}", fleet.reports());
    // Nothing of it was applied, and the broken record was left for an operator.
    let h = fleet.redis.hgetall(&key);
    assert_eq!(h["state"], "scheduled", "{h:?}");
    assert_eq!(h["spec"], "{\"not\": json", "{h:?}");
}

/// The guard for a handler that crashes its process (nothing of ours runs to
/// dead-letter it): the queue's own delivery limit. With no coordinator
/// consuming, a consumer takes the command and hands it back, as a crashing
/// one would, until RabbitMQ dead-letters it with `delivery_limit` as the reason.
#[test]
fn a_command_that_crashes_its_consumer_is_dead_lettered_by_the_queue_after_the_limit() {
    let opts = FleetOptions {
        coordinators: 1,
        workers: 0,
        ..FleetOptions::default()
    };
    let mut fleet = Fleet::start(opts);
    // The coordinator declared the topology; now nobody consumes but us.
    fleet.coordinators[0].sigkill();
    let producer = fleet.producer();
    let media = long_counter();
    let task = fleet.new_task(&[&media], 1);
    let id = unique("crasher");
    producer.send_as(&task.stop(), &id);
    let mut counts = Vec::new();
    let emptied = poll(Duration::from_secs(20), || {
        match producer.take_and_return() {
            Some(c) => {
                counts.push(c);
                None
            }
            None if !counts.is_empty() => Some(()),
            None => None,
        }
    });
    assert!(emptied.is_some(), "still redelivered after {counts:?}");
    let limit = u64::from(COMMAND_DELIVERY_LIMIT);
    eprintln!("deliveries before the queue dead-lettered it: {counts:?}");
    assert_eq!(
        counts,
        (0..=limit).collect::<Vec<_>>(),
        "one delivery per try, no more"
    );
    let dead = poll(Duration::from_secs(10), || {
        producer
            .dead_letters()
            .into_iter()
            .find(|d| d.message_id.as_deref() == Some(id.as_str()))
    })
    .expect("dead-lettered by the queue");
    assert_eq!(
        dead.headers.get("x-first-death-reason").map(String::as_str),
        Some("delivery_limit"),
        "{:?}",
        dead.headers
    );
    assert_eq!(fleet.queue_counts()[COMMANDS_QUEUE], (0, 0));
}
