//! The coordinator's HTTP API, signed as `vodfleet_proto::sign` says.
//!
//! A signature covers only the timestamp (seconds) and the body, not the method
//! or the path, and the coordinator accepts each signature once (remembered
//! for 600 s). Two reads with one key in the same second (any two GETs: they
//! all sign the empty body) therefore look like a replay to it. This client
//! never reuses a timestamp itself, and when the server still answers "replay"
//! (another process used that second), it signs again with a timestamp picked
//! at random inside the accepted ±300 s window (less a margin for clock skew):
//! a refused request changed nothing, so trying again is safe. The scheme
//! still caps one key at about one identical request per second in the long run.

use crate::reply::Reply;
use anyhow::{Context as _, Result};
use std::sync::Mutex;
use std::time::Duration;
use vodfleet_proto::sign;

/// How often a request refused as a replay is signed again.
const REPLAY_RETRIES: u32 = 10;
/// Retried timestamps stay this far inside the server's ±300 s window, for clock skew.
const SKEW_MARGIN_SECS: u64 = 60;

/// The first key of `VODFLEET_API_KEYS`.
#[derive(Clone)]
pub struct Key {
    pub id: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({:?}, <secret>)", self.id)
    }
}

/// The three headers of a signed request.
pub fn signed_headers(key: &Key, timestamp: u64, body: &[u8]) -> [(&'static str, String); 3] {
    [
        (sign::KEY_ID_HEADER, key.id.clone()),
        (sign::TIMESTAMP_HEADER, timestamp.to_string()),
        (
            sign::SIGNATURE_HEADER,
            sign::signature(&key.secret, timestamp, body),
        ),
    ]
}

/// What an API call came back with: the HTTP status and the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The seed's `{"http_code","msg"}`, or the status and the text of the body.
    pub fn reply(&self) -> Reply {
        Reply::parse(&self.body).unwrap_or_else(|| Reply {
            http_code: self.status,
            msg: String::from_utf8_lossy(&self.body).trim().to_owned(),
        })
    }
}

pub struct Api {
    base: String,
    key: Option<Key>,
    http: reqwest::Client,
    /// The last timestamp signed with (Unix s): never used twice by this process.
    last_ts: Mutex<u64>,
}

impl Api {
    pub fn new(base: &str, key: Option<Key>) -> Result<Api> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("vodctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            base: base.trim_end_matches('/').to_owned(),
            key,
            http,
            last_ts: Mutex::new(0),
        })
    }

    /// A timestamp this process has not signed with: now, or one past the last.
    fn next_timestamp(&self) -> u64 {
        let mut last = self.last_ts.lock().expect("not poisoned");
        *last = (crate::now_ms() / 1000).max(*last + 1);
        *last
    }

    /// A timestamp for a retry after a replay refusal: anywhere in the
    /// accepted window, less the margin. Not recorded as the last one.
    fn retry_timestamp(&self, attempt: u32) -> u64 {
        let now = crate::now_ms() / 1000;
        let span = sign::MAX_SKEW_SECS - SKEW_MARGIN_SECS;
        let r = mix(crate::now_ms() ^ (u64::from(std::process::id()) << 32) ^ u64::from(attempt));
        now - span + r % (2 * span + 1)
    }

    /// POSTs a command body to `/v1/commands`.
    pub async fn command(&self, body: &[u8]) -> Result<Answer> {
        self.call(reqwest::Method::POST, "/v1/commands", body).await
    }

    /// `GET /v1/tasks` or `GET /v1/tasks/{id}`.
    pub async fn tasks(&self, id: Option<&str>) -> Result<Answer> {
        let path = match id {
            None => "/v1/tasks".to_owned(),
            Some(id) => format!("/v1/tasks/{}", path_segment(id)),
        };
        self.call(reqwest::Method::GET, &path, b"").await
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: &[u8]) -> Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut tries = 0;
        loop {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(key) = &self.key {
                let ts = if tries == 0 {
                    self.next_timestamp()
                } else {
                    self.retry_timestamp(tries)
                };
                for (name, value) in signed_headers(key, ts, body) {
                    req = req.header(name, value);
                }
            }
            if method == reqwest::Method::POST {
                req = req
                    .header("content-type", "application/json")
                    .body(body.to_vec());
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("{method} {url}: the coordinator could not be reached"))?;
            let status = resp.status().as_u16();
            let bytes = resp
                .bytes()
                .await
                .with_context(|| format!("{method} {url}: reading the answer"))?;
            let answer = Answer {
                status,
                body: bytes.to_vec(),
            };
            tries += 1;
            let replay = status == 403 && answer.reply().msg.contains("replay");
            if replay && tries <= REPLAY_RETRIES {
                tracing::debug!(
                    tries,
                    "signature refused as a replay; signing again with a later timestamp"
                );
                continue;
            }
            return Ok(answer);
        }
    }
}

/// splitmix64: spreads a few changing bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Task ids are `[A-Za-z0-9-_.:]`; anything else is percent-encoded so a bad id
/// reaches the server as one path segment (and gets its 404) instead of another route.
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            id: "ops".into(),
            secret: b"0123456789abcdef0123".to_vec(),
        }
    }

    fn header<'a>(h: &'a [(&'static str, String); 3], name: &str) -> &'a str {
        &h.iter().find(|(n, _)| *n == name).expect(name).1
    }

    #[test]
    fn a_signed_request_verifies() {
        let body = br#"{"cmd":"2","type":"video","list":[]}"#;
        let h = signed_headers(&key(), 1_700_000_123, body);
        assert_eq!(header(&h, "x-vodfleet-key-id"), "ops");
        assert_eq!(header(&h, "x-vodfleet-timestamp"), "1700000123");
        let sig = header(&h, "x-vodfleet-signature");
        assert!(sig.starts_with("v1="));
        assert!(sign::verify(&key().secret, 1_700_000_123, body, sig));
        assert!(!sign::verify(&key().secret, 1_700_000_124, body, sig));
        assert!(!sign::verify(
            b"another-secret-0123456",
            1_700_000_123,
            body,
            sig
        ));
        // GETs sign the empty body.
        let g = signed_headers(&key(), 1_700_000_123, b"");
        assert!(sign::verify(
            &key().secret,
            1_700_000_123,
            b"",
            header(&g, "x-vodfleet-signature")
        ));
    }

    #[test]
    fn timestamps_never_repeat_in_one_process() {
        let api = Api::new("http://127.0.0.1:1", Some(key())).unwrap();
        let a = api.next_timestamp();
        let b = api.next_timestamp();
        let c = api.next_timestamp();
        assert!(a < b && b < c);
        let now = crate::now_ms() / 1000;
        assert!(a.abs_diff(now) <= 1 && c - now < sign::MAX_SKEW_SECS);
    }

    #[test]
    fn retries_spread_over_the_accepted_window() {
        let api = Api::new("http://127.0.0.1:1", Some(key())).unwrap();
        let now = crate::now_ms() / 1000;
        let ts: Vec<u64> = (1..=50).map(|a| api.retry_timestamp(a)).collect();
        for t in &ts {
            assert!(
                t.abs_diff(now) <= sign::MAX_SKEW_SECS - SKEW_MARGIN_SECS + 1,
                "{t} vs {now}"
            );
        }
        let mut distinct = ts.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 40, "{ts:?}");
    }

    #[test]
    fn the_key_secret_is_not_printed() {
        assert!(!format!("{:?}", key()).contains("0123456789"));
    }

    #[test]
    fn ids_stay_one_path_segment() {
        assert_eq!(path_segment("a-b_c.d:e"), "a-b_c.d:e");
        assert_eq!(path_segment("../x y"), "..%2Fx%20y");
    }
}
