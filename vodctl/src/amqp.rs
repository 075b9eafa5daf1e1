//! `--via amqp`: publish the body to `vodfleet.commands` and wait for the
//! coordinator's reply on an exclusive queue of our own.
//!
//! Unlike the HTTP API, whose 200 means "validated and queued", the AMQP reply
//! is sent after the command was applied, so refusals that depend on the
//! fleet's state (a resume with no record) come back here.

use crate::reply::Reply;
use anyhow::{bail, Context as _, Result};
use futures_util::StreamExt;
use std::time::Duration;
use vodfleet_bus::lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use vodfleet_bus::lapin::types::{FieldTable, ShortString};
use vodfleet_bus::{json_props, Bus};
use vodfleet_proto::fleet::COMMANDS_QUEUE;

pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes `body` and returns the coordinator's reply.
///
/// The message carries a `message_id` of its own, so two identical commands
/// sent on purpose (stop, resume, stop) are two commands to the coordinator's
/// de-duplication, not one.
pub async fn send(url: &str, body: &[u8]) -> Result<Reply> {
    let bus = tokio::time::timeout(REPLY_TIMEOUT, Bus::connect(url, "vodctl"))
        .await
        .context("RabbitMQ did not answer within 10 s")?
        .context("connecting to RabbitMQ (VODFLEET_AMQP_URL)")?;
    let r = exchange(&bus, body).await;
    bus.close().await;
    r
}

async fn exchange(bus: &Bus, body: &[u8]) -> Result<Reply> {
    let ch = bus.channel().await?;
    let queue = ch
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
        .context("declaring the reply queue")?;
    let mut replies = ch
        .basic_consume(
            queue.name().as_str(),
            "vodctl",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .context("consuming the reply queue")?;
    let id = crate::unique_id();
    let props = json_props()
        .with_reply_to(queue.name().clone())
        .with_correlation_id(ShortString::from(id.clone()))
        .with_message_id(ShortString::from(id.clone()));
    bus.publish("", COMMANDS_QUEUE, body, props)
        .await
        .with_context(|| format!("publishing to {COMMANDS_QUEUE}"))?;
    tracing::debug!(correlation_id = %id, "command published; waiting for the reply");
    let wait = async {
        while let Some(d) = replies.next().await {
            let d = d.context("reading the reply queue")?;
            if d.properties.correlation_id().as_ref().map(|c| c.as_str()) != Some(id.as_str()) {
                continue;
            }
            return Reply::parse(&d.data).with_context(|| {
                format!(
                    "the reply is not {{\"http_code\",\"msg\"}}: {}",
                    String::from_utf8_lossy(&d.data)
                )
            });
        }
        bail!("the reply queue was closed")
    };
    match tokio::time::timeout(REPLY_TIMEOUT, wait).await {
        Ok(r) => r,
        Err(_) => bail!(
            "the command is queued on {COMMANDS_QUEUE}, but no coordinator replied within {} s (is one running on this vhost?)",
            REPLY_TIMEOUT.as_secs()
        ),
    }
}
