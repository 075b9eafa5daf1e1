//! Callbacks to `transcallbackurl` (docs/contract.md#callbacks).
//!
//! Queued without waiting (a slow receiver never delays a command or a stream),
//! sent by a background task with bounded concurrency, signed like the API,
//! retried with backoff until the receiver answers 2xx with a non-empty body,
//! then given up and counted. The URL policy of sources applies.

use crate::metrics::Metrics;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vodfleet_proto::{redact, sign, Cmd, TaskSpec};

/// One callback to deliver.
#[derive(Debug, Clone)]
pub struct Callback {
    pub url: String,
    pub payload: Value,
}

#[derive(Clone)]
pub struct Callbacks {
    tx: mpsc::Sender<Callback>,
}

/// The seed's shape plus `event`, `event_id` and `timestamp`. Source and
/// destination URLs are redacted (the receiver may be a third party);
/// `forward_index` says which destination an event is about.
#[allow(clippy::too_many_arguments)]
pub fn payload(
    event: &str,
    code: u8,
    msg: &str,
    cmd: Cmd,
    spec: &TaskSpec,
    forward: Option<usize>,
    event_id: &str,
    now_ms: u64,
) -> Value {
    let srcurl: Vec<Value> = spec
        .sources
        .iter()
        .map(|s| json!({"url": redact::source(&s.url)}))
        .collect();
    let forwardurl = match forward {
        Some(i) => spec
            .forwards
            .get(i)
            .map(|f| redact::destination(&f.url))
            .unwrap_or_default(),
        None => spec
            .forwards
            .iter()
            .map(|f| redact::destination(&f.url))
            .collect::<Vec<_>>()
            .join(","),
    };
    let mut v = json!({
        "msg": msg,
        "code": code.to_string(),
        "srcurl": serde_json::to_string(&srcurl).expect("json"),
        "cmd": cmd.code(),
        "id": spec.id,
        "forwardurl": forwardurl,
        "event": event,
        "event_id": event_id,
        "timestamp": now_ms,
    });
    if let Some(i) = forward {
        v["forward_index"] = json!(i);
    }
    v
}

impl Callbacks {
    pub fn spawn(
        metrics: Arc<Metrics>,
        key: Option<(String, Vec<u8>)>,
        allow_private: bool,
        attempts: u32,
        backoff: Duration,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Callbacks {
        let (tx, mut rx) = mpsc::channel::<Callback>(10_000);
        let client = vodfleet_net::http_client(allow_private, Duration::from_secs(10));
        let limit = Arc::new(Semaphore::new(64));
        let t = tracker.clone();
        tracker.spawn(async move {
            loop {
                let cb = tokio::select! {
                    cb = rx.recv() => match cb { Some(cb) => cb, None => return },
                    _ = cancel.cancelled() => return,
                };
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    return;
                };
                let (client, key, metrics, cancel) =
                    (client.clone(), key.clone(), metrics.clone(), cancel.clone());
                t.spawn(async move {
                    deliver(
                        &client,
                        allow_private,
                        key.as_ref(),
                        &cb,
                        attempts,
                        backoff,
                        &metrics,
                        &cancel,
                    )
                    .await;
                    drop(permit);
                });
            }
        });
        Callbacks { tx }
    }

    /// Queues a callback; never waits. A full queue counts the callback as failed.
    pub fn send(&self, cb: Callback) {
        if self.tx.try_send(cb).is_err() {
            tracing::warn!("callback queue full; callback dropped");
        }
    }
}

/// The URL policy, once, before any attempt (a refusal is final, not retried):
/// the scheme, an IP-literal host in any spelling, and what a name resolves to.
/// The client's resolver checks names again on every connection and redirect.
async fn check_policy(raw: &str, allow_private: bool) -> Result<(), String> {
    let u = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    vodfleet_net::check_url(&u, allow_private)?;
    if let Some(url::Host::Domain(host)) = u.host() {
        if let Err(vodfleet_net::NameError::Refused(why)) =
            vodfleet_net::resolve_allowed(host, allow_private).await
        {
            return Err(why);
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn deliver(
    client: &reqwest::Client,
    allow_private: bool,
    key: Option<&(String, Vec<u8>)>,
    cb: &Callback,
    attempts: u32,
    backoff: Duration,
    metrics: &Metrics,
    cancel: &CancellationToken,
) {
    let shown = redact::source(&cb.url);
    if let Err(reason) = check_policy(&cb.url, allow_private).await {
        tracing::warn!(callback = %shown, reason, "callback refused by the URL policy");
        metrics.callbacks_failed.inc();
        return;
    }
    let body = serde_json::to_vec(&cb.payload).expect("json");
    // The signature covers the path and query the receiver sees.
    let path = url::Url::parse(&cb.url)
        .map(|u| match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        })
        .unwrap_or_default();
    let mut delay = backoff;
    for attempt in 1..=attempts.max(1) {
        let ts = crate::ctx::now_ms() / 1000;
        let mut req = client
            .post(&cb.url)
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(10));
        if let Some((id, secret)) = key {
            let nonce = sign::nonce();
            let signed = sign::Signed {
                method: "POST",
                path: &path,
                timestamp: ts,
                nonce: &nonce,
                body: &body,
            };
            req = req
                .header(sign::KEY_ID_HEADER, id)
                .header(sign::TIMESTAMP_HEADER, ts.to_string())
                .header(sign::NONCE_HEADER, &nonce)
                .header(sign::SIGNATURE_HEADER, sign::signature(secret, &signed));
        }
        let outcome = match req.body(body.clone()).send().await {
            Ok(resp) if resp.status().is_success() => match resp.bytes().await {
                Ok(b) if !b.is_empty() => Ok(()),
                Ok(_) => Err("2xx with an empty body".to_owned()),
                Err(e) => Err(format!("reading the answer: {e}")),
            },
            Ok(resp) => Err(format!("HTTP {}", resp.status())),
            Err(e) => Err(if e.is_timeout() {
                "timed out".to_owned()
            } else if e.is_connect() {
                "connect failed".to_owned()
            } else {
                "request failed".to_owned()
            }),
        };
        match outcome {
            Ok(()) => {
                metrics.callbacks_sent.inc();
                return;
            }
            Err(cause) => {
                tracing::debug!(callback = %shown, attempt, cause, "callback attempt failed");
                if attempt == attempts {
                    tracing::warn!(callback = %shown, attempts, cause, event_id = %cb.payload["event_id"], "callback given up");
                    metrics.callbacks_failed.inc();
                    return;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}
