//! Property test of the API's signature check (issue 9, row 10): a signed request
//! gets in once; every random mutation of it is refused, with the reason that
//! fits. `sign::check` is what the coordinator's HTTP API runs; the replay store
//! here is a set where the coordinator has Redis `SET NX` on the same key (the
//! fleet-level test in tests/tests/fleet_api.rs drives the real one).

use proptest::prelude::*;
use std::collections::HashSet;
use vodfleet_proto::sign::{self, Presented, Refusal, MAX_SKEW_SECS};

const NOW: u64 = 1_800_000_000;
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const PATHS: [&str; 4] = [
    "/api/cdn/v2/forwardRequest.action",
    "/v1/commands",
    "/v1/tasks",
    "/v1/tasks/abc",
];

fn keys() -> Vec<(String, Vec<u8>)> {
    vec![
        ("old".into(), b"old-secret-0123456789".to_vec()),
        ("new".into(), b"new-secret-9876543210".to_vec()),
    ]
}

/// A request as it arrives: what is signed, and the four headers.
#[derive(Clone, Debug, PartialEq)]
struct Req {
    method: String,
    path: String,
    body: Vec<u8>,
    key_id: Option<String>,
    ts: Option<String>,
    nonce: Option<String>,
    sig: Option<String>,
}

impl Req {
    fn signed(key: usize, method: &str, path: &str, ts: u64, nonce: &str, body: &[u8]) -> Req {
        let (id, secret) = &keys()[key];
        let s = sign::Signed {
            method,
            path,
            timestamp: ts,
            nonce,
            body,
        };
        Req {
            method: method.into(),
            path: path.into(),
            body: body.into(),
            key_id: Some(id.clone()),
            ts: Some(ts.to_string()),
            nonce: Some(nonce.into()),
            sig: Some(sign::signature(secret, &s)),
        }
    }

    /// The same request signed again with another timestamp (a real client with a bad clock).
    fn resigned_at(&self, key: usize, ts: u64) -> Req {
        Req::signed(
            key,
            &self.method,
            &self.path,
            ts,
            self.nonce.as_deref().unwrap(),
            &self.body,
        )
    }
}

/// The coordinator's verifier: `sign::check`, then the replay store.
struct Verifier {
    keys: Vec<(String, Vec<u8>)>,
    seen: HashSet<String>,
}

impl Verifier {
    fn new() -> Verifier {
        Verifier {
            keys: keys(),
            seen: HashSet::new(),
        }
    }

    fn admit(&mut self, r: &Req) -> Result<(), Refusal> {
        let headers = match (&r.key_id, &r.ts, &r.nonce, &r.sig) {
            (Some(key_id), Some(timestamp), Some(nonce), Some(signature)) => Some(Presented {
                key_id,
                timestamp,
                nonce,
                signature,
            }),
            _ => None,
        };
        let replay_key = sign::check(&self.keys, NOW, &r.method, &r.path, headers, &r.body)?;
        if !self.seen.insert(replay_key) {
            return Err(Refusal::Replay);
        }
        Ok(())
    }
}

/// What an attacker changes.
#[derive(Clone, Debug)]
enum Mutation {
    /// One bit of the MAC flipped.
    FlipSignatureBit(usize, u8),
    /// Any text as the signature.
    GarbageSignature(String),
    /// Correctly signed, but that far in the past or the future.
    Stale(u64, bool),
    /// The timestamp header moved (within the window), the signature kept.
    OtherTimestamp(i64),
    /// A timestamp header that is not plain digits.
    TimestampText(String),
    /// One body byte changed.
    FlipBodyByte(usize, u8),
    /// Bytes appended to the body.
    AppendBody(Vec<u8>),
    /// The body cut short.
    TruncateBody(usize),
    /// Sent to another path (another route, a suffix, a query, another case).
    OtherPath(usize, String),
    /// Sent with another method.
    OtherMethod(usize),
    /// The other configured key's id on this key's signature.
    OtherKeyId,
    /// A key id nobody configured.
    UnknownKeyId(String),
    /// Another nonce header.
    OtherNonce(String),
    /// One header missing.
    DropHeader(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0usize..32, 0u8..8).prop_map(|(i, b)| Mutation::FlipSignatureBit(i, b)),
        "[ -~]{0,80}".prop_map(Mutation::GarbageSignature),
        (MAX_SKEW_SECS + 1..100_000_000, any::<bool>()).prop_map(|(d, f)| Mutation::Stale(d, f)),
        (-(MAX_SKEW_SECS as i64)..=MAX_SKEW_SECS as i64)
            .prop_filter("moved", |d| *d != 0)
            .prop_map(Mutation::OtherTimestamp),
        "[-+ a-z.]{1,3}[0-9]{0,12}".prop_map(Mutation::TimestampText),
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::FlipBodyByte(i, x)),
        proptest::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::AppendBody),
        any::<usize>().prop_map(Mutation::TruncateBody),
        (0usize..8, "[a-zA-Z0-9/?=&.%]{1,12}").prop_map(|(i, s)| Mutation::OtherPath(i, s)),
        (1usize..METHODS.len()).prop_map(Mutation::OtherMethod),
        Just(Mutation::OtherKeyId),
        "[a-z0-9:_-]{0,12}".prop_map(Mutation::UnknownKeyId),
        "[a-zA-Z0-9]{1,64}".prop_map(Mutation::OtherNonce),
        (0usize..4).prop_map(Mutation::DropHeader),
    ]
}

/// The mutated request and the refusal it must get (`None`: any refusal).
fn apply(orig: &Req, key: usize, m: &Mutation) -> (Req, Option<Refusal>) {
    let mut r = orig.clone();
    let ts: u64 = orig.ts.as_deref().unwrap().parse().unwrap();
    let want = match m {
        Mutation::FlipSignatureBit(i, b) => {
            let mut raw = hex::decode(&orig.sig.as_deref().unwrap()[3..]).unwrap();
            raw[*i] ^= 1 << b;
            r.sig = Some(format!("v1={}", hex::encode(raw)));
            Some(Refusal::BadSignature)
        }
        Mutation::GarbageSignature(s) => {
            r.sig = Some(s.clone());
            Some(Refusal::BadSignature)
        }
        Mutation::Stale(d, future) => {
            let at = if *future {
                NOW + d
            } else {
                NOW.saturating_sub(*d)
            };
            r = orig.resigned_at(key, at);
            Some(Refusal::Stale)
        }
        Mutation::OtherTimestamp(d) => {
            r.ts = Some(ts.saturating_add_signed(*d).to_string());
            None // stale or bad signature, depending on where it lands
        }
        Mutation::TimestampText(t) => {
            r.ts = Some(t.clone());
            Some(Refusal::BadTimestamp)
        }
        Mutation::FlipBodyByte(i, x) => {
            if r.body.is_empty() {
                r.body.push(*x);
            } else {
                let i = i % r.body.len();
                r.body[i] ^= x;
            }
            Some(Refusal::BadSignature)
        }
        Mutation::AppendBody(extra) => {
            r.body.extend_from_slice(extra);
            Some(Refusal::BadSignature)
        }
        Mutation::TruncateBody(n) => {
            if r.body.is_empty() {
                r.body.push(b'{');
            } else {
                r.body.truncate(n % r.body.len());
            }
            Some(Refusal::BadSignature)
        }
        Mutation::OtherPath(i, s) => {
            r.path = match i {
                0..=3 if PATHS[*i] != orig.path => PATHS[*i].to_owned(),
                0..=4 => format!("{}/{s}", orig.path),
                5 => format!("{}?{s}", orig.path),
                6 => orig.path.to_uppercase(),
                _ => format!("/{s}{}", orig.path),
            };
            if r.path == orig.path {
                r.path.push('/');
            }
            Some(Refusal::BadSignature)
        }
        Mutation::OtherMethod(k) => {
            let i = METHODS.iter().position(|m| *m == orig.method).unwrap();
            r.method = METHODS[(i + k) % METHODS.len()].to_owned();
            Some(Refusal::BadSignature)
        }
        Mutation::OtherKeyId => {
            r.key_id = Some(keys()[1 - key].0.clone());
            Some(Refusal::BadSignature)
        }
        Mutation::UnknownKeyId(id) => {
            r.key_id = Some(format!("x{id}"));
            Some(Refusal::UnknownKey)
        }
        Mutation::OtherNonce(n) => {
            r.nonce = Some(if Some(n) == orig.nonce.as_ref() {
                format!("{n}x")
            } else {
                n.clone()
            });
            Some(Refusal::BadSignature)
        }
        Mutation::DropHeader(i) => {
            match i {
                0 => r.key_id = None,
                1 => r.ts = None,
                2 => r.nonce = None,
                _ => r.sig = None,
            }
            Some(Refusal::Unsigned)
        }
    };
    (r, want)
}

fn original() -> impl Strategy<Value = (usize, Req)> {
    (
        0usize..2,
        0usize..METHODS.len(),
        0usize..PATHS.len(),
        -(MAX_SKEW_SECS as i64)..=MAX_SKEW_SECS as i64,
        "[a-zA-Z0-9]{1,64}",
        proptest::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(|(key, m, p, skew, nonce, body)| {
            let ts = NOW.saturating_add_signed(skew);
            (
                key,
                Req::signed(key, METHODS[m], PATHS[p], ts, &nonce, &body),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Sent before or after the original, a mutated request is refused (for the
    /// reason that fits); the original gets in exactly once.
    #[test]
    fn every_mutation_is_refused_and_the_original_gets_in_once(
        (key, orig) in original(),
        muts in proptest::collection::vec(mutation(), 1..6),
    ) {
        let mut v = Verifier::new();
        let mutated: Vec<(Req, Option<Refusal>)> =
            muts.iter().map(|m| apply(&orig, key, m)).collect();
        for ((r, want), m) in mutated.iter().zip(&muts) {
            prop_assert_ne!(r, &orig, "{:?} left the request unchanged", m);
            let got = v.admit(r);
            prop_assert!(got.is_err(), "{:?} got in before the original: {:?}", m, r);
            if let (Some(want), Err(got)) = (want, &got) {
                prop_assert_eq!(got, want, "{:?}", m);
            }
        }
        prop_assert_eq!(v.admit(&orig), Ok(()), "the untouched request is let in");
        prop_assert_eq!(v.admit(&orig), Err(Refusal::Replay), "and only once");
        for ((r, _), m) in mutated.iter().zip(&muts) {
            prop_assert!(v.admit(r).is_err(), "{:?} got in after the original", m);
        }
    }

    /// Another spelling of the same signed request (the MAC's hex in upper or mixed
    /// case, leading zeros on the timestamp) is the same request: in any order,
    /// exactly one of them gets in.
    #[test]
    fn respellings_of_one_request_get_in_once_in_any_order(
        (_key, orig) in original(),
        case_mask in any::<u64>(),
        zeros in 1usize..4,
        order in any::<u8>(),
    ) {
        let sig = orig.sig.clone().unwrap();
        let mixed: String = sig[3..]
            .chars()
            .enumerate()
            .map(|(i, c)| if case_mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c })
            .collect();
        let mut upper = orig.clone();
        upper.sig = Some(format!("v1={}", sig[3..].to_uppercase()));
        let mut mixed_case = orig.clone();
        mixed_case.sig = Some(format!("v1={mixed}"));
        let mut padded = orig.clone();
        padded.ts = Some(format!("{}{}", "0".repeat(zeros), orig.ts.as_deref().unwrap()));
        let mut all = [orig, upper, mixed_case, padded];
        all.rotate_left(usize::from(order) % 4);
        let mut v = Verifier::new();
        let admitted: Vec<bool> = all.iter().map(|r| v.admit(r).is_ok()).collect();
        prop_assert_eq!(admitted.iter().filter(|a| **a).count(), 1, "{:?}", admitted);
        prop_assert!(admitted[0], "the first spelling sent is the one let in");
    }
}

#[test]
fn a_plus_sign_is_not_a_timestamp() {
    let r = Req::signed(0, "POST", "/v1/commands", NOW, "n", b"{}");
    let mut plus = r.clone();
    plus.ts = Some(format!("+{NOW}"));
    assert_eq!(Verifier::new().admit(&plus), Err(Refusal::BadTimestamp));
}
