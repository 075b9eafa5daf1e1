//! A plain AMQP producer ([`Producer`]): seed-001 bodies, replies, dead letters.

use crate::{poll, unique};
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vodfleet_proto::fleet::{COMMANDS_DEAD_QUEUE, COMMANDS_QUEUE, REASON_HEADER};

/// A message read back from `vodfleet.commands.dead`.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub body: Vec<u8>,
    /// The `x-vodfleet-reason` header.
    pub reason: Option<String>,
    /// Every header, values rendered as text.
    pub headers: BTreeMap<String, String>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
}

fn amqp_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// How long a [`Producer::request`] waits for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// A plain AMQP client, as any producer would write it: publishes seed-001
/// bodies to `vodfleet.commands` through the default exchange (persistent,
/// `mandatory`, publisher confirms), with a fresh `message_id` each time.
pub struct Producer {
    rt: Option<tokio::runtime::Runtime>,
    conn: Connection,
    ch: Channel,
    replies: Option<(String, Consumer)>,
}

impl Producer {
    /// Connects, retrying for up to 30 s (the broker may be restarting).
    pub fn connect(url: &str) -> Producer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (conn, ch) = rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let props = ConnectionProperties::default()
                    .with_connection_name("vodfleet-test-producer".into())
                    .with_executor(tokio_executor_trait::Tokio::current())
                    .with_reactor(tokio_reactor_trait::Tokio);
                let attempt = async {
                    let conn = Connection::connect(url, props).await?;
                    let ch = conn.create_channel().await?;
                    ch.confirm_select(ConfirmSelectOptions::default()).await?;
                    Ok::<_, lapin::Error>((conn, ch))
                };
                match attempt.await {
                    Ok(v) => break v,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => panic!("AMQP connect to {url}: {e}"),
                }
            }
        });
        Producer {
            rt: Some(rt),
            conn,
            ch,
            replies: None,
        }
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime")
    }

    fn publish(&self, body: &[u8], props: BasicProperties) {
        self.publish_as(body, props, &unique("msg"));
    }

    /// Publishes with the given `message_id` (a producer re-publishing a command
    /// it is not sure went through uses the same one).
    fn publish_as(&self, body: &[u8], props: BasicProperties, message_id: &str) {
        let props = props
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(message_id));
        let ch = &self.ch;
        let confirm = self.rt().block_on(async {
            let opts = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            tokio::time::timeout(Duration::from_secs(10), async {
                ch.basic_publish("", COMMANDS_QUEUE, opts, body, props)
                    .await?
                    .await
            })
            .await
        });
        match confirm {
            Err(_) => panic!("RabbitMQ did not confirm a publish within 10 s"),
            Ok(Err(e)) => panic!("publish to {COMMANDS_QUEUE}: {e}"),
            Ok(Ok(Confirmation::Ack(Some(ret)))) => panic!(
                "{COMMANDS_QUEUE} does not exist in this vhost (message returned: {:?}); \
                 is a coordinator up? It declares the topology",
                ret.reply_text
            ),
            Ok(Ok(Confirmation::Nack(_))) => panic!("RabbitMQ nacked the publish"),
            Ok(Ok(_)) => {}
        }
    }

    /// Publishes every `(body, message_id)` at once (persistent, `mandatory`)
    /// and then waits up to `timeout` for their confirms, as a producer with
    /// many commands in flight does. One result per message: `Ok` only when
    /// RabbitMQ confirmed it (acked, not returned); a producer re-publishes
    /// the others under the same message id.
    pub fn publish_batch(
        &self,
        batch: &[(Vec<u8>, String)],
        timeout: Duration,
    ) -> Vec<Result<(), String>> {
        let ch = &self.ch;
        self.rt().block_on(async {
            let opts = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            let mut pending = Vec::with_capacity(batch.len());
            for (body, id) in batch {
                let props = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type(ShortString::from("application/json"))
                    .with_message_id(ShortString::from(id.as_str()));
                pending.push(
                    ch.basic_publish("", COMMANDS_QUEUE, opts, body, props)
                        .await,
                );
            }
            let deadline = tokio::time::Instant::now() + timeout;
            let mut out = Vec::with_capacity(batch.len());
            for p in pending {
                let r = match p {
                    Err(e) => Err(format!("publish: {e}")),
                    Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                        Err(_) => Err("no confirm in time".to_string()),
                        Ok(Err(e)) => Err(format!("confirm: {e}")),
                        Ok(Ok(Confirmation::Ack(Some(_)))) => Err("returned: no queue".into()),
                        Ok(Ok(Confirmation::Nack(_))) => Err("nacked".into()),
                        Ok(Ok(_)) => Ok(()),
                    },
                };
                out.push(r);
            }
            out
        })
    }

    /// Publishes a JSON command body.
    pub fn send(&self, body: &Value) {
        self.send_raw(&serde_json::to_vec(body).expect("JSON"));
    }

    /// Publishes a JSON command body under a message id of the caller's.
    pub fn send_as(&self, body: &Value, message_id: &str) {
        let body = serde_json::to_vec(body).expect("JSON");
        self.publish_as(&body, BasicProperties::default(), message_id);
    }

    /// Publishes exact bytes (malformed, oversized, not UTF-8…).
    pub fn send_raw(&self, body: &[u8]) {
        self.publish(body, BasicProperties::default());
    }

    /// Publishes with `reply_to` + `correlation_id` and returns the reply
    /// (`{"http_code": …, "msg": …, "call_time": …}`); panics after 15 s.
    pub fn request(&mut self, body: &Value) -> Value {
        self.request_raw(&serde_json::to_vec(body).expect("JSON"))
    }

    /// Like [`Producer::request`] with exact bytes.
    pub fn request_raw(&mut self, body: &[u8]) -> Value {
        self.ensure_reply_queue();
        let corr = unique("corr");
        let queue = self.replies.as_ref().expect("reply queue").0.clone();
        let props = BasicProperties::default()
            .with_reply_to(ShortString::from(queue))
            .with_correlation_id(ShortString::from(corr.clone()));
        self.publish(body, props);
        let rt = self.rt.take().expect("runtime");
        let consumer = &mut self.replies.as_mut().expect("reply queue").1;
        let reply = rt.block_on(async {
            use futures_util::StreamExt;
            tokio::time::timeout(REPLY_TIMEOUT, async {
                while let Some(d) = consumer.next().await {
                    let d = d.map_err(|e| format!("reply consumer: {e}"))?;
                    let c = d
                        .properties
                        .correlation_id()
                        .as_ref()
                        .map(|c| c.as_str().to_owned());
                    if c.as_deref() == Some(corr.as_str()) {
                        return Ok(d.data);
                    }
                }
                Err("reply consumer ended".to_string())
            })
            .await
        });
        self.rt = Some(rt);
        match reply {
            Err(_) => panic!(
                "no reply with correlation_id {corr} within {REPLY_TIMEOUT:?} to {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ),
            Ok(Err(e)) => panic!("{e}"),
            Ok(Ok(data)) => serde_json::from_slice(&data).unwrap_or_else(|e| {
                panic!(
                    "reply is not JSON ({e}): {}",
                    String::from_utf8_lossy(&data)
                )
            }),
        }
    }

    fn ensure_reply_queue(&mut self) {
        if self.replies.is_some() {
            return;
        }
        let ch = &self.ch;
        let r = self.rt().block_on(async {
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
                .await?;
            let name = q.name().as_str().to_owned();
            let consumer = ch
                .basic_consume(
                    &name,
                    "replies",
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((name, consumer))
        });
        self.replies = Some(r.unwrap_or_else(|e| panic!("declare a reply queue: {e}")));
    }

    /// Takes (and acks) every message now in `vodfleet.commands.dead`.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        let ch = &self.ch;
        self.rt().block_on(async {
            let mut out = Vec::new();
            loop {
                let got = ch
                    .basic_get(COMMANDS_DEAD_QUEUE, BasicGetOptions { no_ack: true })
                    .await
                    .unwrap_or_else(|e| panic!("basic.get {COMMANDS_DEAD_QUEUE}: {e}"));
                let Some(m) = got else { break };
                let d = m.delivery;
                let headers: BTreeMap<String, String> = d
                    .properties
                    .headers()
                    .as_ref()
                    .map(|t| {
                        t.inner()
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), amqp_text(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(DeadLetter {
                    reason: headers.get(REASON_HEADER).cloned(),
                    headers,
                    message_id: d
                        .properties
                        .message_id()
                        .as_ref()
                        .map(|s| s.as_str().to_owned()),
                    correlation_id: d
                        .properties
                        .correlation_id()
                        .as_ref()
                        .map(|s| s.as_str().to_owned()),
                    body: d.data,
                });
            }
            out
        })
    }

    /// Takes the next message of `vodfleet.commands` and hands it back
    /// (`basic.nack` with requeue), as a consumer that crashes while holding it
    /// would. Returns its `x-delivery-count` header (absent on the first
    /// delivery: 0), or `None` when the queue is empty.
    pub fn take_and_return(&self) -> Option<u64> {
        let ch = &self.ch;
        self.rt().block_on(async {
            let got = ch
                .basic_get(COMMANDS_QUEUE, BasicGetOptions { no_ack: false })
                .await
                .unwrap_or_else(|e| panic!("basic.get {COMMANDS_QUEUE}: {e}"))?;
            let count = got
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-delivery-count").map(amqp_text))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            got.delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("basic.nack: {e}"));
            Some(count)
        })
    }

    /// Collects dead letters until there are at least `n` (or `timeout` passes).
    pub fn wait_dead_letters(&self, n: usize, timeout: Duration) -> Vec<DeadLetter> {
        let mut all = Vec::new();
        let _ = poll(timeout, || {
            all.extend(self.dead_letters());
            (all.len() >= n).then_some(())
        });
        all
    }

    pub fn is_connected(&self) -> bool {
        self.conn.status().connected()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            let conn = &self.conn;
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye")).await;
            });
            rt.shutdown_background();
        }
    }
}
