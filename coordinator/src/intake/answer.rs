//! What becomes of a delivery on `vodfleet.commands` once its command was
//! decided: the producer's reply, the ack, a refusal's callback and dead
//! letter, or a return to the queue (docs/contract.md#queue).

use super::response;
use crate::callback::{payload, Callback};
use crate::ctx::{now_ms, Ctx};
use crate::store::StoreError;
use sha2::{Digest, Sha256};
use std::time::Instant;
use vodfleet_bus::lapin::message::Delivery;
use vodfleet_bus::lapin::options::{BasicAckOptions, BasicNackOptions};
use vodfleet_bus::lapin::types::{AMQPValue, FieldTable, ShortString};
use vodfleet_bus::lapin::BasicProperties;
use vodfleet_proto::fleet::{COMMANDS_DEAD_QUEUE, COMMAND_DELIVERY_LIMIT, REASON_HEADER};
use vodfleet_proto::{Cmd, Command, FieldError};

/// How many times `d` was delivered before (RabbitMQ's `x-delivery-count`,
/// which quorum queues set on every redelivery; 0 on the first).
fn earlier_deliveries(d: &Delivery) -> u64 {
    let count = d
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned());
    match count {
        Some(AMQPValue::LongLongInt(n)) => n.max(0) as u64,
        Some(AMQPValue::LongInt(n)) => n.max(0) as u64,
        Some(AMQPValue::LongUInt(n)) => n.into(),
        Some(AMQPValue::ShortInt(n)) => n.max(0) as u64,
        Some(AMQPValue::ShortUInt(n)) => n.into(),
        Some(AMQPValue::ShortShortInt(n)) => n.max(0) as u64,
        Some(AMQPValue::ShortShortUInt(n)) => n.into(),
        _ => 0,
    }
}

/// A command whose handler failed (not a refusal, not Redis restarting): back
/// to the queue for another try, except on its last delivery under the
/// queue's delivery limit, where it is dead-lettered by us with the error as
/// its reason (RabbitMQ would dead-letter it next, but only as
/// `delivery_limit`, without saying why).
pub(super) async fn give_back(
    ctx: &Ctx,
    d: &Delivery,
    code: &str,
    e: &StoreError,
    delivered: Instant,
) {
    let deliveries = earlier_deliveries(d) + 1;
    if deliveries > u64::from(COMMAND_DELIVERY_LIMIT) {
        let reason = format!("not applied after {deliveries} deliveries: {e}");
        tracing::error!(error = %e, deliveries, "command not applied; dead-lettering it");
        if dead_letter(ctx, d, &reason).await {
            ctx.metrics
                .commands
                .with_label_values(&[code, "rejected"])
                .inc();
            ctx.metrics.intake_done(code, "rejected", delivered);
        }
        return;
    }
    tracing::error!(error = %e, deliveries, "command not applied; returning it to the queue");
    requeue(d).await;
}

/// Answers, calls back and dead-letters a refused command; changes nothing else.
pub(super) async fn refuse(
    ctx: &Ctx,
    d: &Delivery,
    e: FieldError,
    cmd: Option<&Command>,
    delivered: Instant,
) {
    let code = e.kind.http_code();
    let msg = e.to_string();
    tracing::info!(reason = %msg, "command refused");
    let code_of = cmd.map_or("invalid", |c| c.cmd.code());
    ctx.metrics
        .commands
        .with_label_values(&[code_of, "rejected"])
        .inc();
    reply(ctx, d, code, &msg).await;
    // A failure callback where the body named a URL we may call.
    let raw: Option<serde_json::Value> = serde_json::from_slice(&d.data).ok();
    let url = cmd.and_then(|c| c.callback_url.clone()).or_else(|| {
        raw.as_ref()
            .and_then(|v| v.get("transcallbackurl"))
            .and_then(|u| u.as_str())
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .map(str::to_owned)
    });
    if let Some(url) = url {
        let now = now_ms();
        let id = format!("refused:{}", hex::encode(&Sha256::digest(&d.data)[..8]));
        let spec = cmd.and_then(|c| c.tasks.first().cloned());
        let mut p = match &spec {
            Some(s) => payload(
                "failed",
                1,
                &msg,
                cmd.map_or(Cmd::Start, |c| c.cmd),
                s,
                None,
                &id,
                now,
            ),
            None => {
                serde_json::json!({"msg": msg, "code": "1", "srcurl": "", "cmd": "", "id": "", "forwardurl": "", "event": "failed", "event_id": id, "timestamp": now})
            }
        };
        p["msg"] = msg.clone().into();
        ctx.callbacks.send(Callback { url, payload: p });
    }
    if dead_letter(ctx, d, &msg).await {
        ctx.metrics.intake_done(code_of, "rejected", delivered);
    }
}

/// Republishes `d` to `vodfleet.commands.dead` with `reason` and acks it; if
/// that fails, returns it to the queue (RabbitMQ's delivery limit ends it).
/// True when it was dead-lettered.
pub(super) async fn dead_letter(ctx: &Ctx, d: &Delivery, reason: &str) -> bool {
    let mut headers = FieldTable::default();
    headers.insert(
        REASON_HEADER.into(),
        AMQPValue::LongString(reason.to_owned().into()),
    );
    // The producer's ids stay with it, so an operator can tell which command it was.
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(m) = d.properties.message_id() {
        props = props.with_message_id(m.clone());
    }
    if let Some(c) = d.properties.correlation_id() {
        props = props.with_correlation_id(c.clone());
    }
    let dead = match ctx.bus.get().await {
        Some(b) => b
            .publish("", COMMANDS_DEAD_QUEUE, &d.data, props)
            .await
            .map_err(|e| e.to_string()),
        None => Err("not connected".into()),
    };
    match dead {
        Ok(()) => {
            ack(d).await;
            true
        }
        Err(e) => {
            // Could not dead-letter it ourselves: let RabbitMQ's delivery limit do it.
            tracing::warn!(error = %e, "command not dead-lettered; returning it to the queue");
            requeue(d).await;
            false
        }
    }
}

pub(super) async fn reply(ctx: &Ctx, d: &Delivery, code: u16, msg: &str) {
    let (Some(to), corr) = (
        d.properties.reply_to().clone(),
        d.properties.correlation_id().clone(),
    ) else {
        return;
    };
    let body = serde_json::to_vec(&response(code, msg)).expect("json");
    let mut props =
        BasicProperties::default().with_content_type(ShortString::from("application/json"));
    if let Some(c) = corr {
        props = props.with_correlation_id(c);
    }
    if let Some(b) = ctx.bus.get().await {
        if let Err(e) = b.publish("", to.as_str(), &body, props).await {
            tracing::warn!(error = %e, "reply to the producer not delivered");
        }
    }
}

pub(super) async fn ack(d: &Delivery) {
    if let Err(e) = d.ack(BasicAckOptions::default()).await {
        tracing::warn!(error = %e, "ack failed; RabbitMQ will redeliver and the tasks' marks make it a no-op");
    }
}

/// Returns `d` to the queue (its redelivery counts towards the delivery limit).
pub async fn requeue(d: &Delivery) {
    let _ = d
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
}
