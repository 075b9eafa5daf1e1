//! The heartbeat's second path: while the RabbitMQ link is down (or its
//! heartbeats go unanswered), the worker posts its heartbeat to a coordinator's
//! signed HTTP API (`POST /v1/heartbeats`) and applies the [`ToWorker::LeaseAck`]
//! that comes back, so a broker outage longer than the lease does not take
//! every stream off the air (docs/design/fleet.md, "Broker outage").
//!
//! A renewal this way is still one atomic script on the task's record in
//! Redis, so fencing stays exact. A coordinator that reaches RabbitMQ itself
//! refuses (409): then the broker works for everyone but this worker, which
//! cannot be controlled any more and must let its tasks go (its fence stops
//! them and they move to a worker the coordinators can reach).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use vodfleet_proto::fleet::{ToWorker, WorkerMessage};
use vodfleet_proto::sign::{signed_headers, ApiKey};

/// The API path heartbeats are posted to.
pub const PATH: &str = "/v1/heartbeats";

/// Why a heartbeat over HTTP renewed nothing.
#[derive(Debug, thiserror::Error)]
pub enum LifelineError {
    /// The coordinator reaches RabbitMQ: this worker alone is cut off (fence).
    #[error("refused by {url}: {msg}")]
    Refused { url: String, msg: String },
    /// Every coordinator failed to answer with an ack; the last failure.
    #[error("no coordinator answered ({attempts} tried); last: {last}")]
    Unanswered { attempts: usize, last: String },
}

impl LifelineError {
    /// The label of `vodfleet_worker_http_heartbeats_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            LifelineError::Refused { .. } => "refused",
            LifelineError::Unanswered { .. } => "failed",
        }
    }
}

/// The coordinators' HTTP API, tried in turn.
pub struct Lifeline {
    client: reqwest::Client,
    urls: Vec<reqwest::Url>,
    key: ApiKey,
    /// Which URL to try first: the last one that answered.
    first: AtomicUsize,
}

impl Lifeline {
    /// `urls` are base URLs (`http://vodfleet-coordinator:8080`); each request
    /// may take at most `timeout`. Operator configuration, not user input: no
    /// SSRF policy applies (the coordinators usually sit on a private address).
    pub fn new(urls: Vec<reqwest::Url>, key: ApiKey, timeout: Duration) -> Option<Lifeline> {
        if urls.is_empty() {
            return None;
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .ok()?;
        Some(Lifeline {
            client,
            urls,
            key,
            first: AtomicUsize::new(0),
        })
    }

    /// Posts `beat` (a [`WorkerMessage::Heartbeat`]) to one coordinator after
    /// another until one answers with its lease ack, or refuses.
    pub async fn beat(&self, beat: &WorkerMessage) -> Result<ToWorker, LifelineError> {
        let body = serde_json::to_vec(beat).expect("heartbeats serialise");
        let first = self.first.load(Ordering::Relaxed);
        let mut last = String::new();
        for n in 0..self.urls.len() {
            let i = (first + n) % self.urls.len();
            let url = &self.urls[i];
            let shown = vodfleet_proto::redact::source(url.as_str());
            match self.post(url, &body).await {
                Ok(ack) => {
                    self.first.store(i, Ordering::Relaxed);
                    return Ok(ack);
                }
                Err(Answer::Refused(msg)) => {
                    return Err(LifelineError::Refused { url: shown, msg });
                }
                Err(Answer::Failed(e)) => last = format!("{shown}: {e}"),
            }
        }
        Err(LifelineError::Unanswered {
            attempts: self.urls.len(),
            last,
        })
    }

    async fn post(&self, base: &reqwest::Url, body: &[u8]) -> Result<ToWorker, Answer> {
        let url = base.join(PATH).map_err(|e| Answer::Failed(e.to_string()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in signed_headers(&self.key, "POST", PATH, now, body) {
            req = req.header(name, value);
        }
        let resp = req
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| Answer::Failed(e.without_url().to_string()))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Answer::Failed(e.without_url().to_string()))?;
        if status == reqwest::StatusCode::CONFLICT {
            return Err(Answer::Refused(message(&bytes)));
        }
        if !status.is_success() {
            return Err(Answer::Failed(format!("{status}: {}", message(&bytes))));
        }
        match serde_json::from_slice::<ToWorker>(&bytes) {
            Ok(ack @ ToWorker::LeaseAck { .. }) => Ok(ack),
            Ok(_) => Err(Answer::Failed("the answer is not a lease ack".into())),
            Err(e) => Err(Answer::Failed(format!("unreadable answer: {e}"))),
        }
    }
}

/// One coordinator's answer, when it is not an ack.
enum Answer {
    Refused(String),
    Failed(String),
}

/// The `msg` of the seed's `{"http_code","msg"}` answer, or the text (bounded).
fn message(body: &[u8]) -> String {
    let parsed = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("msg").and_then(|m| m.as_str()).map(str::to_owned));
    parsed.unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}
