//! The API's signature check (`sign::check`, what the coordinator runs on every
//! request) on arbitrary headers, path and body. Must never panic; whatever it
//! accepts verifies against the configured key, within the clock window, and
//! has a replay key that does not depend on how the signature's hex is spelled.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vodfleet_proto::sign::{self, Presented, MAX_SKEW_SECS};

const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    // Fields separated by 0xFF: key id, timestamp, nonce, signature, method, path, body.
    let parts: Vec<&[u8]> = data.splitn(7, |b| *b == 0xFF).collect();
    let text =
        |i: usize| String::from_utf8_lossy(parts.get(i).copied().unwrap_or_default()).into_owned();
    let (key_id, ts, nonce, sig, method, path) =
        (text(0), text(1), text(2), text(3), text(4), text(5));
    let body = parts.get(6).copied().unwrap_or_default();
    let keys = vec![("k".to_owned(), b"fuzz-secret-0123456789".to_vec())];
    let presented = Presented {
        key_id: &key_id,
        timestamp: &ts,
        nonce: &nonce,
        signature: &sig,
    };
    let _ = sign::check(&keys, NOW, &method, &path, Some(presented), body);
    // A correctly signed request built from the same fields is accepted, and an
    // upper-case spelling of its signature has the same replay key.
    if nonce.is_empty() || nonce.len() > 64 {
        return;
    }
    let t = NOW - MAX_SKEW_SECS + (body.len() as u64 % (2 * MAX_SKEW_SECS + 1));
    let signed = sign::Signed {
        method: &method,
        path: &path,
        timestamp: t,
        nonce: &nonce,
        body,
    };
    let good = sign::signature(&keys[0].1, &signed);
    let t = t.to_string();
    let ok = |signature: &str| {
        sign::check(
            &keys,
            NOW,
            &method,
            &path,
            Some(Presented {
                key_id: "k",
                timestamp: &t,
                nonce: &nonce,
                signature,
            }),
            body,
        )
    };
    let a = ok(&good).expect("a correctly signed request is accepted");
    let b = ok(&format!("v1={}", good[3..].to_uppercase())).expect("upper-case hex too");
    assert_eq!(a, b, "one request, one replay key");
});
