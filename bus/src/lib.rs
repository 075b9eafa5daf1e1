//! RabbitMQ for vodfleet: one place that knows the topology
//! (docs/design/fleet.md#topology-declared-by-every-process-at-start-and-after-every-reconnect).
//!
//! Every process calls [`Bus::connect`] at start and again after a connection
//! loss; it declares the whole topology each time (declarations are idempotent),
//! so a restarted broker is rebuilt by whoever reconnects first. Publishing uses
//! publisher confirms: `publish_json` returns only once the broker has the message.

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

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ did not confirm the message (nack)")]
    Nacked,
    #[error("encoding a message: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("stopped")]
    Cancelled,
    #[error("no reply within {0:?}")]
    NoReply(std::time::Duration),
}

/// `url` with an AMQP heartbeat of `secs` seconds, unless it names one already.
///
/// RabbitMQ notices a peer that stopped answering only through heartbeats; until
/// then the deliveries it pushed to that peer stay unacked there. A worker that
/// is frozen (SIGSTOP, a VM paused) would otherwise sit on the work order that
/// re-issues its own task for RabbitMQ's default of 60 s.
pub fn with_heartbeat(url: &str, secs: u16) -> String {
    if url.contains("heartbeat=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}heartbeat={}", secs.max(1))
}

/// A connection with one confirming publisher channel.
pub struct Bus {
    conn: Connection,
    publisher: Channel,
}

impl Bus {
    /// Connects and declares the topology once.
    pub async fn connect(url: &str, name: &str) -> Result<Bus, BusError> {
        let props = ConnectionProperties::default()
            .with_connection_name(name.into())
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let conn = Connection::connect(url, props).await?;
        let publisher = conn.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        declare(&publisher).await?;
        Ok(Bus { conn, publisher })
    }

    /// Connects, retrying with backoff until it works or `cancel` fires.
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
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BusError> {
        let confirm = self
            .publisher
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await?
            .await?;
        if confirm.is_nack() {
            return Err(BusError::Nacked);
        }
        Ok(())
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
        self.publisher
            .queue_declare(&name, opts, FieldTable::default())
            .await?;
        self.publisher
            .queue_bind(
                &name,
                CONTROL_EXCHANGE,
                worker_id,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(name)
    }

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
}
