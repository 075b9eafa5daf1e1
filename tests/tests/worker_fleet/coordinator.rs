//! The coordinator's part, played by the test: work orders and control
//! messages out, worker messages in, heartbeats answered with lease acks.

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use vodfleet_proto::fleet::{
    DestinationState, EventKind, ToWorker, WorkOrder, WorkerMessage, CONTROL_EXCHANGE,
    EVENTS_QUEUE, WORK_QUEUE,
};
use vodfleet_proto::{Position, TaskSpec};
use vodfleet_tests::fleet::now_ms;
use vodfleet_tests::{poll, FleetWorker, Vhost};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the fake coordinator answers heartbeats.
#[derive(Clone, Debug, PartialEq)]
pub enum Acks {
    /// Renew every task, except those listed in `revoke`, which are revoked.
    Renew,
    /// Answer nothing (a coordinator that is gone).
    Withhold,
}

/// A heartbeat the fake coordinator answered.
#[derive(Clone, Debug)]
pub struct Answered {
    pub sent_ms: u64,
    pub renewed: Vec<String>,
}

/// The coordinator's part, played by the test over a plain AMQP connection.
pub struct FakeCoordinator {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    /// Every worker message, with when it arrived.
    pub log: Arc<Mutex<Vec<(Instant, WorkerMessage)>>>,
    acks: Arc<Mutex<Acks>>,
    pub revoke: Arc<Mutex<Vec<String>>>,
    pub answered: Arc<Mutex<Vec<Answered>>>,
}

impl FakeCoordinator {
    /// Connects, declares what the worker declares (same arguments), and starts
    /// reading `vodfleet.events`, answering every worker's heartbeats.
    pub fn start(vhost: &Vhost) -> FakeCoordinator {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let url = vhost.url();
        let (channel, consumer) = rt.block_on(async {
            let props = ConnectionProperties::default()
                .with_executor(tokio_executor_trait::Tokio::current())
                .with_reactor(tokio_reactor_trait::Tokio);
            let conn = Connection::connect(&url, props)
                .await
                .expect("AMQP connect");
            let ch = conn.create_channel().await.expect("channel");
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .expect("confirms");
            let mut quorum = FieldTable::default();
            quorum.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            for q in [WORK_QUEUE, EVENTS_QUEUE] {
                let durable = QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                ch.queue_declare(q, durable, quorum.clone())
                    .await
                    .expect("declare queue");
            }
            let durable = ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.exchange_declare(
                CONTROL_EXCHANGE,
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await
            .expect("declare exchange");
            let events_ch = conn.create_channel().await.expect("channel");
            let consumer = events_ch
                .basic_consume(
                    EVENTS_QUEUE,
                    "test-coordinator",
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("consume events");
            std::mem::forget(conn); // lives as long as the runtime
            (ch, consumer)
        });
        let c = FakeCoordinator {
            rt,
            channel,
            log: Arc::default(),
            acks: Arc::new(Mutex::new(Acks::Renew)),
            revoke: Arc::default(),
            answered: Arc::default(),
        };
        let (log, acks, revoke, answered, ch) = (
            c.log.clone(),
            c.acks.clone(),
            c.revoke.clone(),
            c.answered.clone(),
            c.channel.clone(),
        );
        c.rt.spawn(async move {
            let mut consumer = consumer;
            while let Some(Ok(d)) = consumer.next().await {
                let _ = d.acker.ack(BasicAckOptions::default()).await;
                let msg: WorkerMessage = match serde_json::from_slice(&d.data) {
                    Ok(m) => m,
                    Err(e) => panic!(
                        "worker message that is not the contract: {e}: {}",
                        String::from_utf8_lossy(&d.data)
                    ),
                };
                if let WorkerMessage::Heartbeat {
                    worker_id,
                    seq,
                    sent_ms,
                    tasks,
                    ..
                } = &msg
                {
                    let policy = lock(&acks).clone();
                    if policy == Acks::Renew {
                        let revoke = lock(&revoke).clone();
                        let (revoked, renewed): (Vec<_>, Vec<_>) = tasks
                            .iter()
                            .map(|t| (t.task_id.clone(), t.epoch))
                            .partition(|(t, _)| revoke.contains(t));
                        lock(&answered).push(Answered {
                            sent_ms: *sent_ms,
                            renewed: renewed.iter().map(|(t, _)| t.clone()).collect(),
                        });
                        let ack = ToWorker::LeaseAck {
                            seq: *seq,
                            renewed,
                            revoked,
                            unknown: vec![],
                        };
                        publish(&ch, CONTROL_EXCHANGE, worker_id, &ack).await;
                    }
                }
                lock(&log).push((Instant::now(), msg));
            }
        });
        c
    }

    pub fn order(&self, spec: TaskSpec, epoch: u64, resume: Option<Position>) {
        let order = WorkOrder {
            task_id: spec.id.clone(),
            epoch,
            spec,
            resume,
            resume_estimated: false,
            issued_ms: now_ms(),
            callback_url: None,
        };
        self.publish_raw(WORK_QUEUE, &serde_json::to_vec(&order).unwrap());
    }

    pub fn publish_raw(&self, queue: &str, body: &[u8]) {
        self.rt.block_on(async {
            self.channel
                .basic_publish(
                    "",
                    queue,
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default(),
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
        });
    }

    pub fn control(&self, worker: &FleetWorker, msg: &ToWorker) {
        self.rt
            .block_on(publish(&self.channel, CONTROL_EXCHANGE, worker.id(), msg));
    }

    /// Messages waiting in the work queue (not yet delivered to a consumer).
    pub fn work_backlog(&self) -> u32 {
        self.rt.block_on(async {
            let opts = QueueDeclareOptions {
                passive: true,
                durable: true,
                ..Default::default()
            };
            let mut quorum = FieldTable::default();
            quorum.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            self.channel
                .queue_declare(WORK_QUEUE, opts, quorum)
                .await
                .expect("passive declare")
                .message_count()
        })
    }

    pub fn messages(&self) -> Vec<WorkerMessage> {
        lock(&self.log).iter().map(|(_, m)| m.clone()).collect()
    }

    /// Waits for the first message (seen or future) for which `f` says `Some`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&WorkerMessage) -> Option<T>,
    ) -> T {
        poll(timeout, || lock(&self.log).iter().find_map(|(_, m)| f(m)))
            .unwrap_or_else(|| panic!("no {what} within {timeout:?}; got:\n{:#?}", self.messages()))
    }

    /// Heartbeat lines of `task` (position, destinations), in order.
    pub fn beats_of(&self, task: &str) -> Vec<(Position, Vec<DestinationState>)> {
        self.messages()
            .into_iter()
            .filter_map(|m| match m {
                WorkerMessage::Heartbeat { tasks, .. } => tasks
                    .into_iter()
                    .find(|t| t.task_id == task)
                    .map(|t| (t.position, t.destinations)),
                _ => None,
            })
            .collect()
    }

    pub fn last_free_slots(&self) -> Option<u32> {
        self.messages().into_iter().rev().find_map(|m| match m {
            WorkerMessage::Heartbeat { free_slots, .. } => Some(free_slots),
            _ => None,
        })
    }

    /// Task events of `task`, in order.
    pub fn events_of(&self, task: &str) -> Vec<(EventKind, Option<usize>, String)> {
        self.messages()
            .into_iter()
            .filter_map(|m| match m {
                WorkerMessage::Event { task_id, event, .. } if task_id == task => {
                    Some((event.kind, event.index, event.message))
                }
                _ => None,
            })
            .collect()
    }

    pub fn set_acks(&self, a: Acks) {
        *lock(&self.acks) = a;
    }
}

async fn publish(ch: &Channel, exchange: &str, key: &str, msg: &ToWorker) {
    ch.basic_publish(
        exchange,
        key,
        BasicPublishOptions::default(),
        &serde_json::to_vec(msg).unwrap(),
        BasicProperties::default(),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
}
