//! HMAC-SHA256 request and callback signatures (DESIGN §2).
//!
//! The signed message is `"{timestamp}.{body}"`; headers carry the key id, the
//! Unix timestamp in seconds and `v1=<hex>`. Several keys may be valid at once
//! (rotation); a verifier accepts a timestamp within ±300 s and remembers
//! signatures it has seen inside that window so a replay is refused.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const KEY_ID_HEADER: &str = "x-vodfleet-key-id";
pub const TIMESTAMP_HEADER: &str = "x-vodfleet-timestamp";
pub const SIGNATURE_HEADER: &str = "x-vodfleet-signature";
/// How far a signed timestamp may be from the verifier's clock.
pub const MAX_SKEW_SECS: u64 = 300;

/// `v1=<hex>` for `body` signed with `secret` at `timestamp` (Unix seconds).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature in constant time.
pub fn verify(secret: &[u8], timestamp: u64, body: &[u8], given: &str) -> bool {
    let Some(hex_sig) = given.strip_prefix("v1=") else {
        return false;
    };
    let Ok(raw) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&raw).is_ok()
}

/// A fresh nonce: time, a process-wide counter and the pid, hashed.
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

    #[test]
    fn a_signature_verifies_only_for_its_body_time_and_key() {
        let s = signature(b"k1-secret-0123456789", 1_700_000_000, b"{}");
        assert!(verify(b"k1-secret-0123456789", 1_700_000_000, b"{}", &s));
        assert!(!verify(b"k1-secret-0123456789", 1_700_000_001, b"{}", &s));
        assert!(!verify(b"k1-secret-0123456789", 1_700_000_000, b"{ }", &s));
        assert!(!verify(b"another-secret-0123", 1_700_000_000, b"{}", &s));
        assert!(!verify(
            b"k1-secret-0123456789",
            1_700_000_000,
            b"{}",
            "v1=zz"
        ));
    }

    #[test]
    fn keys_parse_with_rotation() {
        let k = parse_keys("old:0123456789abcdef, new:fedcba9876543210").unwrap();
        assert_eq!(k.len(), 2);
        assert!(parse_keys("short:abc").is_err());
        assert!(parse_keys("nocolon").is_err());
    }
}
