//! The coordinator's HTTP API, signed as `vodfleet_proto::sign` says: each
//! request's method, path, body, timestamp and a fresh nonce.

use crate::reply::Reply;
use anyhow::{Context as _, Result};
use std::time::Duration;
use vodfleet_proto::sign;

/// The first key of `VODFLEET_API_KEYS`.
pub type Key = sign::ApiKey;

pub use sign::signed_headers;

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
        })
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

    /// Every task: `GET /v1/tasks` page by page, following `next` to the end
    /// (docs/contract.md#http-api). The inner `Err` is a page the API refused.
    pub async fn all_tasks(&self) -> Result<std::result::Result<Vec<serde_json::Value>, Answer>> {
        /// One page, its tasks kept as JSON (`--json` prints them as sent).
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tasks: Vec<serde_json::Value>,
            #[serde(default)]
            next: Option<String>,
        }
        let mut tasks = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let a = self.task_page(cursor.as_deref(), LIST_PAGE).await?;
            if a.status != 200 {
                return Ok(Err(a));
            }
            let page: Page =
                serde_json::from_slice(&a.body).context("the API's answer is not a task list")?;
            tasks.extend(page.tasks);
            match page.next {
                // A server that hands back the cursor it was given would loop forever.
                Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                _ => return Ok(Ok(tasks)),
            }
        }
    }

    /// One page of `GET /v1/tasks` (`limit` tasks at most), from `cursor` on.
    pub async fn task_page(&self, cursor: Option<&str>, limit: usize) -> Result<Answer> {
        let mut path = format!("/v1/tasks?limit={limit}");
        if let Some(c) = cursor {
            path.push_str("&cursor=");
            path.push_str(&path_segment(c));
        }
        self.call(reqwest::Method::GET, &path, b"").await
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: &[u8]) -> Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(key) = &self.key {
            for (name, value) in
                signed_headers(key, method.as_str(), path, crate::now_ms() / 1000, body)
            {
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
        Ok(Answer {
            status,
            body: bytes.to_vec(),
        })
    }
}

/// Task ids are `[A-Za-z0-9-_.:]`; anything else is percent-encoded so a bad id
/// reaches the server as one path segment (and gets its 404) instead of another route.
/// Tasks asked for per page when listing them all (the API's largest page).
const LIST_PAGE: usize = 1000;

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

    fn header<'a>(h: &'a [(&'static str, String); 4], name: &str) -> &'a str {
        &h.iter().find(|(n, _)| *n == name).expect(name).1
    }

    #[test]
    fn a_signed_request_verifies_for_its_method_path_and_body_only() {
        let body = br#"{"cmd":"2","type":"video","list":[]}"#;
        let h = signed_headers(&key(), "POST", "/v1/commands", 1_700_000_123, body);
        assert_eq!(header(&h, "x-vodfleet-key-id"), "ops");
        assert_eq!(header(&h, "x-vodfleet-timestamp"), "1700000123");
        let (sig, nonce) = (
            header(&h, "x-vodfleet-signature"),
            header(&h, "x-vodfleet-nonce"),
        );
        let req = |method, path, body| sign::Signed {
            method,
            path,
            timestamp: 1_700_000_123,
            nonce,
            body,
        };
        assert!(sign::verify(
            &key().secret,
            &req("POST", "/v1/commands", body),
            sig
        ));
        assert!(!sign::verify(
            &key().secret,
            &req("POST", "/v1/tasks", body),
            sig
        ));
        assert!(!sign::verify(
            &key().secret,
            &req("GET", "/v1/commands", body),
            sig
        ));
        assert!(!sign::verify(
            b"another-secret-0123456",
            &req("POST", "/v1/commands", body),
            sig
        ));
    }

    #[test]
    fn two_identical_requests_in_one_second_sign_differently() {
        let a = signed_headers(&key(), "GET", "/v1/tasks", 1_700_000_123, b"");
        let b = signed_headers(&key(), "GET", "/v1/tasks", 1_700_000_123, b"");
        assert_ne!(
            header(&a, "x-vodfleet-signature"),
            header(&b, "x-vodfleet-signature")
        );
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
