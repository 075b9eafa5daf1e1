//! HTTP for the fleet tests: a tiny HTTP/1.1 client ([`http_request`]), the
//! message reader the callback receiver shares, and request signing.

use super::now_ms;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use vodfleet_proto::sign;

/// One HTTP response.
#[derive(Clone, Debug)]
pub struct HttpReply {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.x request or response as read from the wire.
pub(super) struct Message {
    /// The request or status line.
    pub(super) start: String,
    /// Header names lower-cased.
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

/// Reads an HTTP/1.x message head and body from `s` (Content-Length, chunked, or
/// until EOF).
pub(super) fn read_message(s: &mut TcpStream) -> Result<Message, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "connection closed before a full head ({} bytes)",
                    buf.len()
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read head: {e}")),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut read_more = |rest: &mut Vec<u8>| -> Result<bool, String> {
        match s.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                rest.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) => Err(format!("read body: {e}")),
        }
    };
    let body = if let Some(len) = get("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad content-length {len:?}"))?;
        while rest.len() < len {
            if !read_more(&mut rest)? {
                return Err(format!("body ended at {} of {len} bytes", rest.len()));
            }
        }
        rest.truncate(len);
        rest
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        let mut pos = 0;
        loop {
            let line_end = loop {
                if let Some(p) = rest[pos..].windows(2).position(|w| w == b"\r\n") {
                    break pos + p;
                }
                if !read_more(&mut rest)? {
                    return Err("chunked body ended early".into());
                }
            };
            let size_text = String::from_utf8_lossy(&rest[pos..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            pos = line_end + 2;
            if size == 0 {
                break;
            }
            while rest.len() < pos + size + 2 {
                if !read_more(&mut rest)? {
                    return Err("chunk ended early".into());
                }
            }
            body.extend_from_slice(&rest[pos..pos + size]);
            pos += size + 2;
        }
        body
    } else if start.starts_with("HTTP/") {
        while read_more(&mut rest)? {}
        rest
    } else {
        // A request without a length has no body.
        Vec::new()
    };
    Ok(Message {
        start,
        headers,
        body,
    })
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (`Connection: close`).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<HttpReply, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let Message {
        start,
        headers,
        body,
    } = read_message(&mut s)?;
    let status = start
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {start:?}"))?;
    Ok(HttpReply {
        status,
        headers,
        body,
    })
}

/// The signature headers for a `method` request to `path` with `body`, signed now
/// with (`key_id`, `secret`) and a fresh nonce.
pub fn signed_headers(
    key_id: &str,
    secret: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> Vec<(String, String)> {
    let ts = now_ms() / 1000;
    signed_headers_at(key_id, secret, method, path, ts, body)
}

/// Like [`signed_headers`] with a given Unix timestamp (seconds).
pub fn signed_headers_at(
    key_id: &str,
    secret: &str,
    method: &str,
    path: &str,
    ts: u64,
    body: &[u8],
) -> Vec<(String, String)> {
    let key = sign::ApiKey {
        id: key_id.into(),
        secret: secret.as_bytes().to_vec(),
    };
    sign::signed_headers(&key, method, path, ts, body)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// Checks the signature headers of a signed message (a callback) against `keys`
/// (`id` → secret): a known key id, a timestamp within ±300 s of now, and a valid
/// `v1=` HMAC over `"{ts}.{nonce}.{METHOD}.{path}.{body}"`.
pub fn verify_signed(
    headers: &BTreeMap<String, String>,
    method: &str,
    path: &str,
    body: &[u8],
    keys: &[(&str, &str)],
) -> Result<(), String> {
    let h = |n: &str| {
        headers
            .get(n)
            .ok_or_else(|| format!("no {n} header (headers: {:?})", headers.keys()))
    };
    let id = h(sign::KEY_ID_HEADER)?;
    let ts_text = h(sign::TIMESTAMP_HEADER)?;
    let nonce = h(sign::NONCE_HEADER)?;
    let sig = h(sign::SIGNATURE_HEADER)?;
    let secret = keys
        .iter()
        .find(|(k, _)| k == id)
        .map(|(_, s)| *s)
        .ok_or_else(|| format!("unknown key id {id:?}"))?;
    let ts: u64 = ts_text
        .parse()
        .map_err(|_| format!("timestamp {ts_text:?} is not Unix seconds"))?;
    let now = now_ms() / 1000;
    if ts.abs_diff(now) > sign::MAX_SKEW_SECS {
        return Err(format!("timestamp {ts} is {} s from now", ts.abs_diff(now)));
    }
    let req = sign::Signed {
        method,
        path,
        timestamp: ts,
        nonce,
        body,
    };
    if !sign::verify(secret.as_bytes(), &req, sig) {
        return Err(format!("signature {sig:?} does not verify for key {id:?}"));
    }
    Ok(())
}
