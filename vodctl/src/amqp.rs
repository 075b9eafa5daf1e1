//! `--via amqp`: publish the body to `vodfleet.commands` and wait for the
//! coordinator's reply on an exclusive queue of our own.
//!
//! Unlike the HTTP API, whose 200 means "validated and queued", the AMQP reply
//! is sent after the command was applied, so refusals that depend on the
//! fleet's state (a resume with no record) come back here.

use crate::reply::Reply;
use anyhow::{bail, Context as _, Result};
use std::time::Duration;
use vodfleet_bus::{Bus, BusError};
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
    let id = crate::unique_id();
    tracing::debug!(correlation_id = %id, "publishing the command and waiting for the reply");
    match bus.request(COMMANDS_QUEUE, body, &id, REPLY_TIMEOUT).await {
        Ok(data) => Reply::parse(&data).with_context(|| {
            format!("the reply is not {{\"http_code\",\"msg\"}}: {}", String::from_utf8_lossy(&data))
        }),
        Err(BusError::NoReply(_)) => bail!(
            "the command is queued on {COMMANDS_QUEUE}, but no coordinator replied within {} s (is one running on this vhost?)",
            REPLY_TIMEOUT.as_secs()
        ),
        Err(e) => Err(e).with_context(|| format!("sending the command to {COMMANDS_QUEUE}")),
    }
}
