//! Issue 10, the ramp: a coordinator answers each worker's heartbeats on their
//! own, so one worker's heavy heartbeat does not hold back the others', and a
//! heartbeat that a newer one of its worker overtook while it waited is
//! skipped (coordinator/src/inbox.rs, docs/CAPACITY.md).
//!
//! The workers are plain AMQP clients here: they publish heartbeats to
//! `vodfleet.events` and read the LeaseAcks from their control queues, with
//! the timing measured at the client.

use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vodfleet_proto::fleet::{
    DestinationState, TaskBeat, ToWorker, WorkerMessage, CONTROL_EXCHANGE, EVENTS_QUEUE,
};
use vodfleet_proto::Position;
use vodfleet_tests::fleet::{metric_sum, now_ms, FleetOptions};
use vodfleet_tests::{poll, Fleet};

/// Task lines in the heavy heartbeat: enough to keep a coordinator busy for a
/// second or more (each line is one renew script; these tasks are unknown to
/// Redis, so they come back in `unknown`, at the same cost).
const HEAVY_LINES: usize = 40_000;
/// Workers with one task each, heartbeating right behind the heavy one.
const LIGHT_WORKERS: usize = 50;

fn beat(worker: &str, seq: u64, sent_ms: u64, lines: usize) -> Vec<u8> {
    let tasks = (0..lines)
        .map(|n| TaskBeat {
            task_id: format!("{worker}-t{n:05}"),
            epoch: 1,
            position: Position::default(),
            destinations: vec![DestinationState::Live],
        })
        .collect();
    serde_json::to_vec(&WorkerMessage::Heartbeat {
        worker_id: worker.to_owned(),
        seq,
        sent_ms,
        free_slots: 0,
        tasks,
    })
    .expect("serialises")
}

type Acks = BTreeMap<(String, u64), Duration>;

/// Reads LeaseAcks into `acks` (worker, seq → arrival since `t0`) until `done`
/// holds for them or `deadline` passes.
async fn read_until(
    consumer: &mut lapin::Consumer,
    acks: &mut Acks,
    t0: Instant,
    deadline: Instant,
    done: &dyn Fn(&Acks) -> bool,
) {
    use futures_util::StreamExt;
    while !done(acks) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(Ok(d))) = tokio::time::timeout(left, consumer.next()).await else {
            return;
        };
        if let Ok(ToWorker::LeaseAck { seq, .. }) = serde_json::from_slice(&d.data) {
            acks.insert((d.routing_key.to_string(), seq), t0.elapsed());
        }
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
}

#[test]
fn a_heavy_heartbeat_holds_back_no_other_worker_and_overtaken_ones_are_skipped() {
    let fleet = Fleet::start(FleetOptions {
        coordinators: 1,
        workers: 0,
        lease_ttl_ms: 10_000,
        ..FleetOptions::default()
    });
    let url = fleet.amqp_url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let heavy = "heavy".to_owned();
    let light: Vec<String> = (0..LIGHT_WORKERS)
        .map(|n| format!("light-{n:02}"))
        .collect();
    // (worker, seq) → when its LeaseAck arrived, relative to the first publish.
    let acks: Acks = rt.block_on(async {
        let props = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let conn = Connection::connect(&url, props).await.expect("AMQP");
        let ch = conn.create_channel().await.unwrap();
        // One control queue for all: bound once per worker id, as each worker's own would be.
        let q = ch
            .queue_declare(
                "",
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        for w in light.iter().chain([&heavy]) {
            ch.queue_bind(
                q.name().as_str(),
                CONTROL_EXCHANGE,
                w,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        }
        let mut acks_in = ch
            .basic_consume(
                q.name().as_str(),
                "acks",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let publish = |body: Vec<u8>| {
            let ch = ch.clone();
            async move {
                ch.basic_publish(
                    "",
                    EVENTS_QUEUE,
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            }
        };
        let mut acks = BTreeMap::new();
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(120);
        // The heavy worker's big heartbeat, then the light workers'.
        let sent = now_ms();
        publish(beat(&heavy, 1, sent, HEAVY_LINES)).await;
        for w in &light {
            publish(beat(w, 1, sent, 1)).await;
        }
        let lights_done = |a: &Acks| light.iter().all(|w| a.contains_key(&(w.clone(), 1)));
        read_until(&mut acks_in, &mut acks, t0, deadline, &lights_done).await;
        // While the big one is (still) handled: three small heartbeats of the
        // heavy worker, each newer than the one before.
        let small_sent = t0.elapsed();
        for seq in 2..=4 {
            publish(beat(&heavy, seq, sent + seq, 1)).await;
        }
        read_until(&mut acks_in, &mut acks, t0, deadline, &|a| {
            a.contains_key(&(heavy.clone(), 4))
        })
        .await;
        acks.insert(("(small beats published)".into(), 0), small_sent);
        // Anything for the skipped beats would be here by now.
        let settle = Instant::now() + Duration::from_secs(2);
        read_until(&mut acks_in, &mut acks, t0, settle, &|_| false).await;
        let _ = conn.close(200, "bye").await;
        acks
    });
    let report = format!(
        "acks (worker, seq) → arrival: {acks:?}\n{}",
        fleet.reports()
    );
    let heavy_at = *acks
        .get(&(heavy.clone(), 1))
        .unwrap_or_else(|| panic!("the heavy heartbeat was never answered\n{report}"));
    let slowest_light = light
        .iter()
        .map(|w| {
            *acks
                .get(&(w.clone(), 1))
                .unwrap_or_else(|| panic!("{w} was never answered\n{report}"))
        })
        .max()
        .expect("light workers");
    eprintln!("heavy heartbeat ({HEAVY_LINES} lines) answered after {heavy_at:?}; slowest of {LIGHT_WORKERS} light ones {slowest_light:?}");
    assert!(
        slowest_light < heavy_at,
        "a light worker waited for the heavy one: slowest light ack {slowest_light:?}, heavy ack {heavy_at:?}\n{report}"
    );
    // Beats 2 and 3 waited behind beat 1 and were overtaken by beat 4: skipped.
    let small_sent = acks[&("(small beats published)".to_owned(), 0)];
    assert!(
        small_sent < heavy_at,
        "inconclusive: the heavy heartbeat was answered ({heavy_at:?}) before its small ones were published ({small_sent:?}); raise HEAVY_LINES\n{report}"
    );
    let heavy_seqs: Vec<u64> = acks
        .keys()
        .filter(|(w, _)| *w == heavy)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(heavy_seqs, [1, 4], "{report}");
    let text = fleet.coordinator().metrics();
    assert_eq!(
        metric_sum(&text, "vodfleet_heartbeats_superseded_total"),
        Some(2.0),
        "{report}"
    );
    // Skipped beats are taken off the queue all the same.
    let drained = poll(Duration::from_secs(15), || {
        let counts = fleet.queue_counts();
        (counts.get(EVENTS_QUEUE) == Some(&(0, 0))).then_some(())
    });
    assert!(
        drained.is_some(),
        "vodfleet.events still holds messages: {:?}",
        fleet.queue_counts()
    );
}
