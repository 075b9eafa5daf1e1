//! Seed-001 command bodies (numeric fields as strings, like the seed's examples).

use serde_json::{json, Value};

fn urls(list: &[String]) -> Vec<Value> {
    list.iter().map(|u| json!({ "url": u })).collect()
}

/// `{"cmd": cmd, "type": "video", "list": [task]}`
pub fn body(cmd: &str, task: Value) -> Value {
    json!({ "cmd": cmd, "type": "video", "list": [task] })
}

/// cmd "1": play `srcs` into `forwards`, `loop` times (0 = until stopped).
pub fn start(id: &str, srcs: &[String], forwards: &[String], loop_count: u32) -> Value {
    body(
        "1",
        json!({
            "id": id,
            "src": urls(srcs),
            "forward": urls(forwards),
            "extendParam": { "loop": loop_count.to_string(), "index": "1", "callBackFileInfo": "0" }
        }),
    )
}

/// cmd "2" for `forwards` (all of them, or a subset), as the seed sends it.
pub fn stop(id: &str, forwards: &[String]) -> Value {
    body(
        "2",
        json!({ "id": id, "src": [{ "url": "" }], "forward": urls(forwards) }),
    )
}

/// cmd "3": the new list, now (`wait_current` false) or after the current item.
pub fn update(id: &str, srcs: &[String], forwards: &[String], wait_current: bool) -> Value {
    body(
        "3",
        json!({
            "id": id,
            "src": urls(srcs),
            "forward": urls(forwards),
            "extendParam": { "waitCrtUrlFinish": if wait_current { "1" } else { "0" } }
        }),
    )
}

/// cmd "5": resume (no `extendParam`, no `fops`: the seed refuses them).
pub fn resume(id: &str, srcs: &[String], forwards: &[String]) -> Value {
    body(
        "5",
        json!({ "id": id, "src": urls(srcs), "forward": urls(forwards) }),
    )
}

/// Adds `transcallbackurl`.
pub fn with_callback(mut body: Value, url: &str) -> Value {
    body["transcallbackurl"] = json!(url);
    body
}

/// Sets `list[0].extendParam.KEY = value`.
pub fn with_param(mut body: Value, key: &str, value: &str) -> Value {
    body["list"][0]["extendParam"][key] = json!(value);
    body
}

/// Sets `list[0].start` and `list[0].end` (13-digit ms, as strings).
pub fn with_window(mut body: Value, start_ms: u64, end_ms: u64) -> Value {
    body["list"][0]["start"] = json!(start_ms.to_string());
    body["list"][0]["end"] = json!(end_ms.to_string());
    body
}

#[cfg(test)]
mod tests {
    use crate::fleet::{body_of, seed};

    #[test]
    fn seed_bodies_parse_with_the_contract() {
        let fwd = vec!["rtmp://127.0.0.1:1935/live/k".to_owned()];
        let src = vec!["vod://a.mp4".to_owned()];
        for b in [
            seed::start("t1", &src, &fwd, 0),
            seed::stop("t1", &fwd),
            seed::update("t1", &src, &fwd, true),
            seed::resume("t1", &src, &fwd),
            seed::with_window(
                seed::start("t1", &src, &fwd, 0),
                1_900_000_000_000,
                1_900_000_400_000,
            ),
        ] {
            vodfleet_proto::parse_command(&body_of(&b)).unwrap_or_else(|e| panic!("{e} in {b}"));
        }
    }
}
