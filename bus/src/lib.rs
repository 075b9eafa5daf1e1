//! RabbitMQ for vodfleet: one place that knows the topology
//! (docs/design/fleet.md#topology-declared-by-every-process-at-start-and-after-every-reconnect).
//!
//! Every process calls [`Bus::connect`] at start and again after a connection
//! loss; it declares the whole topology each time (declarations are idempotent),
//! so a restarted broker is rebuilt by whoever reconnects first. Publishing uses
//! publisher confirms: `publish_json` returns only once the broker has the message.
//!
//! The URL may list several nodes of a RabbitMQ cluster, comma-separated
//! ([`nodes`]); a connection goes to one of them and, once lost, is made again
//! to the next one that answers. The queues are quorum queues, replicated on
//! the cluster's nodes, so a confirmed message outlives the node that took it.

use backon::{ExponentialBuilder, Retryable};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use serde::Serialize;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vodfleet_proto::fleet::{
    COMMANDS_DEAD_QUEUE, COMMANDS_QUEUE, COMMAND_DELIVERY_LIMIT, CONTROL_EXCHANGE, EVENTS_QUEUE,
    WORK_QUEUE,
};

pub use lapin;

pub mod nodes;

/// How long one node gets to accept a connection (TCP and the AMQP handshake)
/// before the next node of the list is tried.
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What talking to RabbitMQ can fail with. Node addresses in it are printed
/// through [`nodes::display`]: never with credentials.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// An error of the AMQP client or the broker.
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused a publish.
    #[error("RabbitMQ did not confirm the message (nack)")]
    Nacked,
    /// No confirm (nor nack) came within [`CONFIRM_TIMEOUT`]: the message may
    /// or may not have been taken.
    #[error("RabbitMQ did not confirm the message within {0:?}")]
    Unconfirmed(Duration),
    /// A message could not be encoded as JSON.
    #[error("encoding a message: {0}")]
    Encode(#[from] serde_json::Error),
    /// The caller's cancellation fired first.
    #[error("stopped")]
    Cancelled,
    /// No reply came for a request.
    #[error("no reply within {0:?}")]
    NoReply(std::time::Duration),
    /// A node did not accept a connection within [`NODE_CONNECT_TIMEOUT`].
    #[error("RabbitMQ node {node} did not accept a connection within {timeout:?}")]
    ConnectTimeout {
        /// The node, without credentials.
        node: String,
        /// The time it was given.
        timeout: Duration,
    },
    /// `VODFLEET_AMQP_URL` names no node at all.
    #[error("no RabbitMQ URL configured")]
    NoNodes,
    /// Every node of a list failed this round; the last one's error.
    #[error(
        "none of the {tried} RabbitMQ nodes took the connection; the last one, {node}: {last}"
    )]
    AllNodesFailed {
        /// How many nodes were tried.
        tried: usize,
        /// The last node tried, without credentials.
        node: String,
        /// Why it failed.
        last: Box<BusError>,
    },
}

/// `url` with an AMQP heartbeat of `secs` seconds, unless it names one already;
/// for a comma-separated list of nodes, every URL of it.
///
/// RabbitMQ notices a peer that stopped answering only through heartbeats; until
/// then the deliveries it pushed to that peer stay unacked there. A worker that
/// is frozen (SIGSTOP, a VM paused) would otherwise sit on the work order that
/// re-issues its own task for RabbitMQ's default of 60 s.
pub fn with_heartbeat(url: &str, secs: u16) -> String {
    nodes::map_each(url, |url| {
        if url.contains("heartbeat=") {
            return url.to_owned();
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}heartbeat={}", secs.max(1))
    })
}

/// A connection with one confirming publisher channel.
pub struct Bus {
    conn: Connection,
    /// Replaced by a fresh channel when the broker nacks a publish
    /// ([`Bus::publish`]); cloned out, never held across an await.
    publisher: std::sync::Mutex<Channel>,
}

/// How long a publisher channel replaced after a nack stays open, so that
/// confirms still in flight on it can arrive.
const REPLACED_CHANNEL_GRACE: Duration = Duration::from_secs(10);

/// The longest a publish waits for the broker's confirm: a broker that takes
/// the message but never answers (a stuck quorum queue) must not stall its
/// caller (the reaper, an HTTP request, the outbox) for good.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

impl Bus {
    /// Connects and declares the topology once. `urls` is one AMQP URL or a
    /// comma-separated list of cluster nodes: each is tried once, in turn,
    /// starting at this process's rotating offset ([`nodes`]); the first that
    /// takes the connection and the declarations wins.
    pub async fn connect(urls: &str, name: &str) -> Result<Bus, BusError> {
        let list = nodes::split(urls);
        let n = list.len();
        let mut last = BusError::NoNodes;
        for i in nodes::order(n, nodes::round_start()) {
            match Self::connect_node(list[i], name).await {
                Ok(bus) => {
                    nodes::connected(i, n);
                    if n > 1 {
                        tracing::info!(node = %nodes::display(list[i]), "connected to a RabbitMQ cluster node");
                    }
                    return Ok(bus);
                }
                Err(e) if n > 1 => {
                    tracing::warn!(node = %nodes::display(list[i]), error = %e, "RabbitMQ node unreachable; trying the next one");
                    last = BusError::AllNodesFailed {
                        tried: n,
                        node: nodes::display(list[i]),
                        last: Box::new(e),
                    };
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// One node: connect (bounded by [`NODE_CONNECT_TIMEOUT`]), open the
    /// confirming publisher channel, declare the topology.
    async fn connect_node(url: &str, name: &str) -> Result<Bus, BusError> {
        let props = ConnectionProperties::default()
            .with_connection_name(name.into())
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let conn = tokio::time::timeout(NODE_CONNECT_TIMEOUT, Connection::connect(url, props))
            .await
            .map_err(|_| BusError::ConnectTimeout {
                node: nodes::display(url),
                timeout: NODE_CONNECT_TIMEOUT,
            })??;
        let publisher = conn.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        declare(&publisher).await?;
        Ok(Bus {
            conn,
            publisher: std::sync::Mutex::new(publisher),
        })
    }

    /// Connects, retrying with backoff until it works or `cancel` fires. Each
    /// attempt is one round over every node of `url` ([`Bus::connect`]); the
    /// backoff is between rounds.
    pub async fn connect_with_retry(
        url: &str,
        name: &str,
        cancel: &CancellationToken,
    ) -> Result<Bus, BusError> {
        let attempt = || async { Bus::connect(url, name).await };
        let retrying = attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .without_max_times(),
            )
            .notify(|e, d| tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "RabbitMQ unreachable; retrying"));
        tokio::select! {
            r = retrying => r,
            _ = cancel.cancelled() => Err(BusError::Cancelled),
        }
    }

    /// Whether the connection is still up.
    pub fn is_connected(&self) -> bool {
        self.conn.status().connected()
    }

    /// Publishes `msg` as persistent JSON and waits for the broker's confirm.
    pub async fn publish_json<T: Serialize>(
        &self,
        exchange: &str,
        routing_key: &str,
        msg: &T,
    ) -> Result<(), BusError> {
        let body = serde_json::to_vec(msg)?;
        self.publish(exchange, routing_key, &body, json_props())
            .await
    }

    /// Publishes raw bytes with the given properties and waits for the confirm.
    ///
    /// A nack is retried once on a fresh publisher channel, which then
    /// replaces this one: on RabbitMQ 3.10 a publisher that moved to a
    /// surviving node while the quorum queues elected new leaders (a node
    /// was killed) was seen to get a nack for every later publish on its
    /// channel, while a fresh connection to the same node got confirms at
    /// once (docs/RELIABILITY.md, "RabbitMQ cluster (issue 10)").
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BusError> {
        let ch = self.publisher();
        if publish_on(&ch, exchange, routing_key, body, props.clone()).await? {
            return Ok(());
        }
        tracing::warn!(
            exchange,
            routing_key,
            "RabbitMQ nacked a publish; retrying once on a fresh channel"
        );
        let fresh = self.renew_publisher(&ch).await?;
        if publish_on(&fresh, exchange, routing_key, body, props).await? {
            return Ok(());
        }
        Err(BusError::Nacked)
    }

    /// The current publisher channel.
    fn publisher(&self) -> Channel {
        self.publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces `nacked` as the publisher channel by a fresh confirming one
    /// (unless another caller did so already) and returns the current one.
    /// The old channel is closed after [`REPLACED_CHANNEL_GRACE`].
    async fn renew_publisher(&self, nacked: &Channel) -> Result<Channel, BusError> {
        let fresh = self.conn.create_channel().await?;
        fresh
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let (current, spare) = {
            let mut cur = self.publisher.lock().unwrap_or_else(|e| e.into_inner());
            if cur.id() == nacked.id() {
                let old = std::mem::replace(&mut *cur, fresh.clone());
                (fresh, old)
            } else {
                (cur.clone(), fresh)
            }
        };
        tokio::spawn(async move {
            tokio::time::sleep(REPLACED_CHANNEL_GRACE).await;
            let _ = spare.close(200, "replaced").await;
        });
        Ok(current)
    }

    /// A consumer on its own channel, with at most `prefetch` unacked deliveries.
    pub async fn consume(
        &self,
        queue: &str,
        tag: &str,
        prefetch: u16,
    ) -> Result<(Channel, Consumer), BusError> {
        let ch = self.conn.create_channel().await?;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let consumer = ch
            .basic_consume(
                queue,
                tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((ch, consumer))
    }

    /// A fresh channel on this connection (for declarations of one's own).
    pub async fn channel(&self) -> Result<Channel, BusError> {
        Ok(self.conn.create_channel().await?)
    }

    /// Request/reply: publishes `body` to `queue` with a `reply_to` queue of our
    /// own and `correlation_id` = `message_id` = `id`, and returns the body of the
    /// reply carrying that correlation id (the seed's response, for commands).
    pub async fn request(
        &self,
        queue: &str,
        body: &[u8],
        id: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        let ch = self.conn.create_channel().await?;
        let opts = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let reply_queue = ch.queue_declare("", opts, FieldTable::default()).await?;
        let consume = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let mut replies = ch
            .basic_consume(
                reply_queue.name().as_str(),
                "reply",
                consume,
                FieldTable::default(),
            )
            .await?;
        let props = json_props()
            .with_reply_to(reply_queue.name().clone())
            .with_correlation_id(ShortString::from(id))
            .with_message_id(ShortString::from(id));
        self.publish("", queue, body, props).await?;
        let wait = async {
            use futures_util::StreamExt;
            while let Some(d) = replies.next().await {
                let d = d?;
                if d.properties.correlation_id().as_ref().map(|c| c.as_str()) == Some(id) {
                    return Ok(d.data);
                }
            }
            Err(BusError::Cancelled)
        };
        let r = tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(BusError::NoReply(timeout)));
        let _ = ch.close(200, "done").await;
        r
    }

    /// Declares this worker's exclusive control queue, bound to its id; returns its name.
    pub async fn declare_control_queue(&self, worker_id: &str) -> Result<String, BusError> {
        let name = vodfleet_proto::fleet::control_queue(worker_id);
        let opts = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let ch = self.publisher();
        ch.queue_declare(&name, opts, FieldTable::default()).await?;
        ch.queue_bind(
            &name,
            CONTROL_EXCHANGE,
            worker_id,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        Ok(name)
    }

    /// Closes the connection (errors ignored: it may be gone already).
    pub async fn close(&self) {
        let _ = self.conn.close(200, "bye").await;
    }

    /// Closes the connection and waits, within `timeout`, until lapin's I/O
    /// thread has ended, so the runtime it uses can be shut down after this
    /// without that thread logging a reactor error. Clones of the `Arc` held
    /// elsewhere are waited for (they are dropped as their holders see the
    /// link gone); if they outlive `timeout`, the connection is only closed.
    pub async fn shutdown(self: std::sync::Arc<Self>, timeout: Duration) {
        let until = tokio::time::Instant::now() + timeout;
        let _ = tokio::time::timeout_at(until, self.close()).await;
        let mut me = self;
        let bus = loop {
            match std::sync::Arc::try_unwrap(me) {
                Ok(bus) => break bus,
                Err(shared) if tokio::time::Instant::now() < until => {
                    me = shared;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => return,
            }
        };
        let Bus { conn, publisher } = bus;
        drop(publisher);
        // `run` joins the I/O thread, which ends once the connection is closed.
        let io = tokio::task::spawn_blocking(move || conn.run());
        let _ = tokio::time::timeout_at(until, io).await;
    }
}

/// Publishes on `ch` and waits for the broker's answer: `true` for an ack,
/// `false` for a nack.
async fn publish_on(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<bool, BusError> {
    let pending = ch
        .basic_publish(
            exchange,
            routing_key,
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await?;
    let confirm = tokio::time::timeout(CONFIRM_TIMEOUT, pending)
        .await
        .map_err(|_| BusError::Unconfirmed(CONFIRM_TIMEOUT))??;
    Ok(!confirm.is_nack())
}

/// Persistent JSON message properties.
pub fn json_props() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
}

/// Declares the queues and exchanges of docs/design/fleet.md's topology (idempotent).
pub async fn declare(ch: &Channel) -> Result<(), BusError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let quorum = |extra: &[(&str, AMQPValue)]| {
        let mut t = FieldTable::default();
        t.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        for (k, v) in extra {
            t.insert((*k).into(), v.clone());
        }
        t
    };
    ch.queue_declare(COMMANDS_DEAD_QUEUE, durable, quorum(&[]))
        .await?;
    ch.queue_declare(
        COMMANDS_QUEUE,
        durable,
        quorum(&[
            (
                "x-delivery-limit",
                AMQPValue::LongInt(COMMAND_DELIVERY_LIMIT as i32),
            ),
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString(COMMANDS_DEAD_QUEUE.into()),
            ),
        ]),
    )
    .await?;
    ch.queue_declare(WORK_QUEUE, durable, quorum(&[])).await?;
    ch.queue_declare(EVENTS_QUEUE, durable, quorum(&[])).await?;
    ch.exchange_declare(
        CONTROL_EXCHANGE,
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_heartbeat_is_added_once() {
        assert_eq!(
            super::with_heartbeat("amqp://h:5672/%2f", 2),
            "amqp://h:5672/%2f?heartbeat=2"
        );
        assert_eq!(
            super::with_heartbeat("amqp://h/v?frame_max=8192", 0),
            "amqp://h/v?frame_max=8192&heartbeat=1"
        );
        assert_eq!(
            super::with_heartbeat("amqp://h/v?heartbeat=30", 2),
            "amqp://h/v?heartbeat=30"
        );
    }

    #[test]
    fn a_heartbeat_is_added_to_every_node_of_a_list() {
        assert_eq!(
            super::with_heartbeat("amqp://a:1/v, amqp://b:2/v?heartbeat=9,amqp://c:3/v?x=1", 4),
            "amqp://a:1/v?heartbeat=4,amqp://b:2/v?heartbeat=9,amqp://c:3/v?x=1&heartbeat=4"
        );
    }

    #[tokio::test]
    async fn a_list_of_dead_nodes_fails_without_printing_credentials() {
        let dead = |p: u16| format!("amqp://user:s3cret@127.0.0.1:{p}/%2f");
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            })
            .collect();
        let urls = format!("{},{}", dead(ports[0]), dead(ports[1]));
        let err = match super::Bus::connect(&urls, "bus-unit").await {
            Ok(_) => panic!("connected to a closed port"),
            Err(e) => e,
        };
        let shown = err.to_string();
        assert!(
            matches!(err, super::BusError::AllNodesFailed { tried: 2, .. }),
            "{shown}"
        );
        assert!(
            !shown.contains("s3cret") && !shown.contains("user"),
            "{shown}"
        );
        assert!(shown.contains("127.0.0.1:"), "{shown}");
    }

    #[tokio::test]
    async fn no_url_is_an_error() {
        assert!(matches!(
            super::Bus::connect(" , ", "bus-unit").await,
            Err(super::BusError::NoNodes)
        ));
    }
}
