//! Command bodies for the tests: the baseline with edits, parsed or refused.

use super::seed::START;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};
use vodfleet_proto::command::Transcode;
use vodfleet_proto::{parse_command, Command, FieldError, RejectKind};

pub fn parse_ok(body: &[u8]) -> Command {
    match parse_command(body) {
        Ok(c) => c,
        Err(e) => panic!(
            "expected the body to parse, got {e:?}\nbody: {}",
            String::from_utf8_lossy(body)
        ),
    }
}

pub fn expect_reject(body: impl AsRef<[u8]>, field: &str, reason: &str) -> FieldError {
    let e = match parse_command(body.as_ref()) {
        Ok(c) => panic!("expected a refusal on {field:?}, got {c:?}"),
        Err(e) => e,
    };
    assert_eq!(e.kind, RejectKind::BadRequest, "kind of {e:?}");
    assert_eq!(e.kind.http_code(), 400);
    assert_eq!(e.field, field, "field of {e:?}");
    assert!(
        e.reason.contains(reason),
        "reason {:?} should contain {reason:?}",
        e.reason
    );
    e
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn value(s: &str) -> Value {
    serde_json::from_str(s).expect("fixture is JSON")
}

/// The valid baseline every bad case starts from: the seed's start example.
pub fn baseline() -> Value {
    value(START)
}

/// One edit of a body, addressed by JSON pointer (`/list/0/src/1/url`).
pub enum Edit {
    Set(&'static str, Value),
    Del(&'static str),
}
pub use Edit::{Del, Set};

pub fn edit(mut v: Value, edits: Vec<Edit>) -> Value {
    for e in edits {
        let (ptr, new) = match e {
            Set(p, val) => (p, Some(val)),
            Del(p) => (p, None),
        };
        let (parent, key) = ptr.rsplit_once('/').expect("pointer starts with /");
        let target = v
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("no {parent:?} in body"));
        match (target, new) {
            (Value::Object(m), Some(val)) => {
                m.insert(key.to_owned(), val);
            }
            (Value::Object(m), None) => {
                m.remove(key)
                    .unwrap_or_else(|| panic!("nothing to delete at {ptr:?}"));
            }
            (Value::Array(a), Some(val)) => a[key.parse::<usize>().unwrap()] = val,
            (Value::Array(a), None) => {
                a.remove(key.parse::<usize>().unwrap());
            }
            (other, _) => panic!("{parent:?} is {other}, not a container"),
        }
    }
    v
}

/// The baseline with some edits, as bytes.
pub fn with(edits: Vec<Edit>) -> Vec<u8> {
    serde_json::to_vec(&edit(baseline(), edits)).unwrap()
}

/// Any fixture with some edits, as bytes.
pub fn fixture_with(fixture: &str, edits: Vec<Edit>) -> Vec<u8> {
    serde_json::to_vec(&edit(value(fixture), edits)).unwrap()
}

/// The baseline with `n` tasks (ids t0, t1, ...).
pub fn many_tasks(n: usize) -> Vec<u8> {
    let mut v = baseline();
    let task = v["list"][0].clone();
    let list = (0..n)
        .map(|i| {
            let mut t = task.clone();
            t["id"] = json!(format!("t{i}"));
            t
        })
        .collect();
    v["list"] = Value::Array(list);
    serde_json::to_vec(&v).unwrap()
}

pub fn sources(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({ "url": format!("http://www.video.com/live/{i}.mp4") }))
            .collect(),
    )
}

/// The baseline padded with trailing whitespace to exactly `len` bytes.
pub fn padded_to(len: usize) -> Vec<u8> {
    let mut b = serde_json::to_vec(&baseline()).unwrap();
    assert!(b.len() <= len);
    b.resize(len, b' ');
    b
}

pub fn transcode_of(body: &[u8]) -> Transcode {
    parse_ok(body).tasks[0]
        .transcode
        .clone()
        .expect("a transcode")
}

pub fn fops(f: Value) -> Vec<u8> {
    with(vec![Set("/list/0/fops", f)])
}
