//! HTTP on the coordinator (docs/contract.md#http-api; metrics in docs/METRICS.md).
//!
//! `POST /api/cdn/v2/forwardRequest.action` (the seed's path) and
//! `POST /v1/commands` validate a command and publish it to `vodfleet.commands`,
//! so HTTP and AMQP producers share one intake path. `GET /v1/tasks[/{id}]`
//! read Redis (the listing is paged: `?limit=N&cursor=C`). `POST /v1/heartbeats` renews a worker's leases while RabbitMQ
//! is down (docs/design/fleet.md, "Broker outage"). All of these need an HMAC-SHA256 signature (docs in
//! `vodfleet_proto::sign`); `/metrics`, `/healthz` and `/readyz` do not.

use crate::ctx::{now_ms, Ctx};
use crate::intake::response;
use crate::store::Cursor;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use vodfleet_proto::command::MAX_BODY_BYTES;
use vodfleet_proto::fleet::{WorkerMessage, COMMANDS_QUEUE};
use vodfleet_proto::{parse_command, sign, Cmd, FieldError};

/// The largest heartbeat taken over HTTP: about 100,000 tasks' lines.
pub const HEARTBEAT_MAX_BYTES: usize = 16 * 1024 * 1024;

pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/api/cdn/v2/forwardRequest.action", post(command))
        .route("/v1/commands", post(command))
        // A heartbeat lists every task of its worker: thousands of lines.
        .route(
            "/v1/heartbeats",
            post(heartbeat).layer(axum::extract::DefaultBodyLimit::max(HEARTBEAT_MAX_BYTES)),
        )
        .route("/v1/tasks", get(list))
        .route("/v1/tasks/{id}", get(one))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        // A little over the command limit so an oversized body gets our own 400, not a bare 413.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES + 1024))
        .with_state(ctx)
}

fn seed_error(code: u16, msg: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(response(code, msg))).into_response()
}

/// Why a request is not let in: (HTTP code, message).
type Refusal = (u16, String);

/// Checks the request's signature (`sign::check`), then that it was not seen before.
async fn check_signature(
    ctx: &Ctx,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Refusal> {
    if ctx.cfg.auth_disabled {
        return Ok(());
    }
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let presented = match (
        h(sign::KEY_ID_HEADER),
        h(sign::TIMESTAMP_HEADER),
        h(sign::NONCE_HEADER),
        h(sign::SIGNATURE_HEADER),
    ) {
        (Some(key_id), Some(timestamp), Some(nonce), Some(signature)) => Some(sign::Presented {
            key_id,
            timestamp,
            nonce,
            signature,
        }),
        _ => None,
    };
    let forbid = |why: sign::Refusal| (403, format!("forbidden: {why}"));
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let replay_key = sign::check(
        &ctx.cfg.api_keys,
        now_ms() / 1000,
        method.as_str(),
        path,
        presented,
        body,
    )
    .map_err(forbid)?;
    // A signature is good once: remembered (in Redis, shared by every replica) for the skew window.
    let mut c = ctx.store.conn();
    let fresh: Option<String> = redis::cmd("SET")
        .arg(format!("vodfleet:replay:{replay_key}"))
        .arg(1)
        .arg("NX")
        .arg("EX")
        .arg(2 * sign::MAX_SKEW_SECS)
        .query_async(&mut c)
        .await
        .map_err(|_| (503, "cannot check for replays right now".to_owned()))?;
    if fresh.is_none() {
        return Err(forbid(sign::Refusal::Replay));
    }
    Ok(())
}

async fn authenticate(
    ctx: &Ctx,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Response> {
    check_signature(ctx, method, uri, headers, body)
        .await
        .map_err(|(code, msg)| seed_error(code, &msg))
}

async fn command(
    State(ctx): State<Arc<Ctx>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&ctx, &method, &uri, &headers, &body).await {
        ctx.metrics
            .commands
            .with_label_values(&["http", "forbidden"])
            .inc();
        return r;
    }
    let now = now_ms();
    let checked = parse_command(&body).and_then(|c| {
        if c.cmd == Cmd::Start {
            c.check_timing(now, ctx.cfg.min_window.as_millis() as u64)?;
        }
        Ok(c)
    });
    let cmd = match checked {
        Ok(c) => c,
        Err(e) => {
            ctx.metrics
                .commands
                .with_label_values(&["http", "rejected"])
                .inc();
            return field_error(&e);
        }
    };
    // A resume without a record can be refused now rather than only by callback.
    if cmd.cmd == Cmd::Resume {
        for (i, t) in cmd.tasks.iter().enumerate() {
            match ctx.store.resume_record(&t.id).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let why = format!(
                        "list[{i}].id: no resume record for task {:?}: it was not stopped with cmd \"2\", or the record is older than 48 h",
                        t.id
                    );
                    return seed_error(400, &why);
                }
                Err(e) => return seed_error(503, &format!("task store unavailable: {e}")),
            }
        }
    }
    let Some(bus) = ctx.bus.get().await else {
        return seed_error(503, "the command queue is unavailable; try again");
    };
    // Each HTTP request is its own command: a fresh message id, so the same body
    // sent again later on purpose is not mistaken for a redelivery.
    let props = vodfleet_bus::json_props().with_message_id(sign::nonce().into());
    if let Err(e) = bus.publish("", COMMANDS_QUEUE, &body, props).await {
        tracing::warn!(error = %e, "HTTP command not queued");
        return seed_error(503, "the command queue is unavailable; try again");
    }
    (StatusCode::OK, Json(response(200, "receive task success!"))).into_response()
}

/// A worker's heartbeat over HTTP, answered with the [`LeaseAck`](vodfleet_proto::fleet::ToWorker::LeaseAck)
/// RabbitMQ would have carried. Only while RabbitMQ does not carry heartbeats
/// for this coordinator either ([`Ctx::broker_carries_heartbeats`]): a worker
/// cut off from a broker that works for everyone else is refused, so it fences
/// its tasks and they move to a worker the coordinators can reach
/// (docs/RELIABILITY.md, row 5).
async fn heartbeat(
    State(ctx): State<Arc<Ctx>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&ctx, &method, &uri, &headers, &body).await {
        ctx.metrics.http_heartbeat("forbidden");
        return r;
    }
    let beat = match serde_json::from_slice::<WorkerMessage>(&body) {
        Ok(WorkerMessage::Heartbeat {
            worker_id,
            seq,
            sent_ms,
            tasks,
            ..
        }) => (worker_id, seq, sent_ms, tasks),
        Ok(_) => {
            ctx.metrics.http_heartbeat("rejected");
            return seed_error(400, "kind: only \"heartbeat\" messages are taken here");
        }
        Err(e) => {
            ctx.metrics.http_heartbeat("rejected");
            return seed_error(400, &format!("body: not a heartbeat: {e}"));
        }
    };
    if ctx.broker_carries_heartbeats().await {
        ctx.metrics.http_heartbeat("refused");
        return seed_error(
            409,
            "RabbitMQ carries heartbeats at this coordinator: a worker that cannot reach it must stop its tasks",
        );
    }
    let (worker_id, seq, sent_ms, tasks) = beat;
    match crate::lease::renew(&ctx, &worker_id, seq, sent_ms, tasks).await {
        Ok(ack) => {
            ctx.metrics.http_heartbeat("renewed");
            Json(ack).into_response()
        }
        Err(e) => {
            ctx.metrics.http_heartbeat("failed");
            seed_error(503, &format!("task store unavailable: {e}"))
        }
    }
}

fn field_error(e: &FieldError) -> Response {
    seed_error(e.kind.http_code(), &e.to_string())
}

async fn list(
    State(ctx): State<Arc<Ctx>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authenticate(&ctx, &method, &uri, &headers, b"").await {
        return r;
    }
    let (cursor, limit) = match page_params(uri.query().unwrap_or("")) {
        Ok(p) => p,
        Err(msg) => return seed_error(400, &msg),
    };
    match ctx.store.page(cursor.as_ref(), limit).await {
        Ok(page) => Json(serde_json::json!({
            "tasks": page.tasks,
            "next": page.next.map(|c| c.to_string()),
        }))
        .into_response(),
        Err(e) => seed_error(503, &format!("task store unavailable: {e}")),
    }
}

/// Tasks per page of `GET /v1/tasks` when `limit` is not given.
pub const DEFAULT_PAGE: usize = 100;
/// The largest `limit` of `GET /v1/tasks`.
pub const MAX_PAGE: usize = 1000;

/// `cursor` and `limit` of `GET /v1/tasks` (docs/contract.md#http-api); the
/// error names the field.
fn page_params(query: &str) -> Result<(Option<Cursor>, usize), String> {
    let mut cursor = None;
    let mut limit = DEFAULT_PAGE;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        format!("limit: {v:?} is not a whole number from 1 to {MAX_PAGE}")
                    })?;
            }
            "cursor" if v.is_empty() => cursor = None,
            "cursor" => {
                cursor = Some(v.parse().map_err(|e| format!("cursor: {v:?} is {e}"))?);
            }
            _ => {}
        }
    }
    Ok((cursor, limit))
}

async fn one(
    State(ctx): State<Arc<Ctx>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authenticate(&ctx, &method, &uri, &headers, b"").await {
        return r;
    }
    match ctx.store.get(&id).await {
        Ok(Some(t)) => Json(t).into_response(),
        Ok(None) => seed_error(404, &format!("no task {id:?}")),
        Err(e) => seed_error(503, &format!("task store unavailable: {e}")),
    }
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        ctx.metrics.render(),
    )
}

async fn ready(State(ctx): State<Arc<Ctx>>) -> Response {
    let bus = ctx.bus.get().await.is_some_and(|b| b.is_connected());
    let redis = ctx.store.ping().await;
    let body = serde_json::json!({"rabbitmq": bus, "redis": redis});
    let status = if bus && redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_params_default_and_name_the_bad_field() {
        assert_eq!(page_params("").unwrap(), (None, DEFAULT_PAGE));
        let (c, n) = page_params("limit=7&cursor=3.0").unwrap();
        assert_eq!((c.unwrap().to_string(), n), ("3.0".to_owned(), 7));
        for (q, field) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=x", "limit"),
            ("cursor=nope", "cursor"),
            ("cursor=99.0", "cursor"),
        ] {
            let e = page_params(q).unwrap_err();
            assert!(e.starts_with(field), "{q}: {e}");
        }
    }
}
