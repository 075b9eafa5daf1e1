//! HMAC-SHA256 request and callback signatures (docs/contract.md#signatures,
//! docs/design/fleet.md#signatures).
//!
//! The signed message is `"{timestamp}.{nonce}.{METHOD}.{path}.{body}"`, so a
//! signature is bound to one request: its method, its path (with query), its body
//! and a nonce the client picks (two identical requests in the same second still
//! differ). Headers carry the key id, the Unix timestamp in seconds, the nonce
//! and `v1=<hex>`. Several keys may be valid at once (rotation); a verifier
//! accepts a timestamp within ±300 s and remembers the signatures it has seen
//! inside that window, so a replay is refused.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const KEY_ID_HEADER: &str = "x-vodfleet-key-id";
pub const TIMESTAMP_HEADER: &str = "x-vodfleet-timestamp";
pub const SIGNATURE_HEADER: &str = "x-vodfleet-signature";
pub const NONCE_HEADER: &str = "x-vodfleet-nonce";
/// How far a signed timestamp may be from the verifier's clock.
pub const MAX_SKEW_SECS: u64 = 300;

/// What a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub method: &'a str,
    /// Path and query, as sent (`/v1/tasks/abc`, `/cb?x=1`).
    pub path: &'a str,
    /// Unix seconds.
    pub timestamp: u64,
    /// 1 to 64 characters chosen by the signer, unique per request.
    pub nonce: &'a str,
    pub body: &'a [u8],
}

fn mac(secret: &[u8], r: &Signed) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(
        format!(
            "{}.{}.{}.{}.",
            r.timestamp,
            r.nonce,
            r.method.to_ascii_uppercase(),
            r.path
        )
        .as_bytes(),
    );
    mac.update(r.body);
    mac
}

/// `v1=<hex>` for request `r` signed with `secret`.
pub fn signature(secret: &[u8], r: &Signed) -> String {
    format!("v1={}", hex::encode(mac(secret, r).finalize().into_bytes()))
}

/// Checks a signature in constant time.
pub fn verify(secret: &[u8], r: &Signed, given: &str) -> bool {
    let Some(hex_sig) = given.strip_prefix("v1=") else {
        return false;
    };
    let Ok(raw) = hex::decode(hex_sig) else {
        return false;
    };
    if r.nonce.is_empty() || r.nonce.len() > 64 {
        return false;
    }
    mac(secret, r).verify_slice(&raw).is_ok()
}

/// One API key: its id and its secret (the secret never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Sent in `x-vodfleet-key-id`.
    pub id: String,
    /// The HMAC key.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({:?}, <secret>)", self.id)
    }
}

/// The four headers that sign a request (`timestamp` in Unix seconds, a fresh nonce).
pub fn signed_headers(
    key: &ApiKey,
    method: &str,
    path: &str,
    timestamp: u64,
    body: &[u8],
) -> [(&'static str, String); 4] {
    let nonce = nonce();
    let req = Signed {
        method,
        path,
        timestamp,
        nonce: &nonce,
        body,
    };
    [
        (KEY_ID_HEADER, key.id.clone()),
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (SIGNATURE_HEADER, signature(&key.secret, &req)),
        (NONCE_HEADER, nonce),
    ]
}

/// The four signature headers of a request, as received.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub key_id: &'a str,
    /// Unix seconds, as text.
    pub timestamp: &'a str,
    pub nonce: &'a str,
    /// `v1=<hex>`.
    pub signature: &'a str,
}

/// Why a request is not let in (every refusal is a 403 on the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request is not signed (x-vodfleet-key-id, x-vodfleet-timestamp, x-vodfleet-nonce, x-vodfleet-signature)")]
    Unsigned,
    #[error("x-vodfleet-timestamp is not Unix seconds")]
    BadTimestamp,
    #[error("the timestamp is more than {MAX_SKEW_SECS} s from the server's clock")]
    Stale,
    #[error("unknown key id")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("this signed request was already used (replay)")]
    Replay,
}

/// Checks a request's signature headers against `keys` (`id` → secret) and
/// `now_secs`: a known key, a timestamp within ±[`MAX_SKEW_SECS`], a valid MAC
/// over method, path, timestamp, nonce and body. Replays are the caller's part:
/// the `Ok` value is the request's replay key, to be remembered for
/// 2 × [`MAX_SKEW_SECS`] and refused when seen again. It is the key id and the
/// MAC's bytes in lower-case hex, so one signed request has one replay key
/// however its signature is spelled (`v1=AB…` and `v1=ab…` are the same MAC).
pub fn check(
    keys: &[(String, Vec<u8>)],
    now_secs: u64,
    method: &str,
    path: &str,
    headers: Option<Presented>,
    body: &[u8],
) -> Result<String, Refusal> {
    let h = headers.ok_or(Refusal::Unsigned)?;
    // Digits only: `u64::from_str` would also take a leading `+`.
    if h.timestamp.is_empty() || !h.timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::BadTimestamp);
    }
    let timestamp: u64 = h.timestamp.parse().map_err(|_| Refusal::BadTimestamp)?;
    if now_secs.abs_diff(timestamp) > MAX_SKEW_SECS {
        return Err(Refusal::Stale);
    }
    let (_, secret) = keys
        .iter()
        .find(|(id, _)| id == h.key_id)
        .ok_or(Refusal::UnknownKey)?;
    let r = Signed {
        method,
        path,
        timestamp,
        nonce: h.nonce,
        body,
    };
    if !verify(secret, &r, h.signature) {
        return Err(Refusal::BadSignature);
    }
    let raw = h
        .signature
        .strip_prefix("v1=")
        .and_then(|x| hex::decode(x).ok())
        .ok_or(Refusal::BadSignature)?;
    Ok(format!("{}:{}", h.key_id, hex::encode(raw)))
}

/// A fresh nonce: time and a process-wide counter, hashed (unique enough per signer).
pub fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let digest =
        <Sha256 as sha2::Digest>::digest(format!("{t}.{n}.{}", std::process::id()).as_bytes());
    hex::encode(&digest[..12])
}

/// Parses `VODFLEET_API_KEYS`-style lists: `id1:secret1,id2:secret2`.
pub fn parse_keys(s: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once(':') {
            Some((id, secret)) if !id.is_empty() && secret.len() >= 16 => {
                Ok((id.to_owned(), secret.as_bytes().to_vec()))
            }
            Some((id, _)) => Err(format!(
                "key {id:?}: the secret must be at least 16 characters"
            )),
            None => Err(format!("{p:?} is not KEY_ID:SECRET")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(
        method: &'a str,
        path: &'a str,
        timestamp: u64,
        nonce: &'a str,
        body: &'a [u8],
    ) -> Signed<'a> {
        Signed {
            method,
            path,
            timestamp,
            nonce,
            body,
        }
    }

    #[test]
    fn a_signature_covers_method_path_time_nonce_body_and_key() {
        let k = b"k1-secret-0123456789";
        let r = req("POST", "/v1/commands", 1_700_000_000, "n1", b"{}");
        let s = signature(k, &r);
        assert!(verify(k, &r, &s));
        assert!(
            verify(
                k,
                &req("post", "/v1/commands", 1_700_000_000, "n1", b"{}"),
                &s
            ),
            "method case does not matter"
        );
        for other in [
            req("GET", "/v1/commands", 1_700_000_000, "n1", b"{}"),
            req("POST", "/v1/tasks", 1_700_000_000, "n1", b"{}"),
            req("POST", "/v1/commands", 1_700_000_001, "n1", b"{}"),
            req("POST", "/v1/commands", 1_700_000_000, "n2", b"{}"),
            req("POST", "/v1/commands", 1_700_000_000, "n1", b"{ }"),
        ] {
            assert!(!verify(k, &other, &s), "{other:?} must not verify");
        }
        assert!(!verify(b"another-secret-0123", &r, &s));
        assert!(!verify(k, &r, "v1=zz"));
        assert!(
            !verify(
                k,
                &req("POST", "/v1/commands", 1_700_000_000, "", b"{}"),
                &signature(k, &req("POST", "/v1/commands", 1_700_000_000, "", b"{}"))
            ),
            "a nonce is required"
        );
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
    }

    #[test]
    fn keys_parse_with_rotation() {
        let k = parse_keys("old:0123456789abcdef, new:fedcba9876543210").unwrap();
        assert_eq!(k.len(), 2);
        assert!(parse_keys("short:abc").is_err());
        assert!(parse_keys("nocolon").is_err());
    }
}
