//! Tasks as `GET /v1/tasks[/{id}]` returns them, rendered for a terminal.
//!
//! The API already hides stream keys and signed query strings; every URL is
//! passed through `vodfleet_proto::redact` again before it is printed, so
//! vodctl never shows one even if a server someday sends it.

use serde::Deserialize;
use std::fmt::Write as _;
use vodfleet_proto::{redact, Position};

/// The coordinator's `TaskView` (coordinator/src/store.rs), read leniently:
/// absent fields take defaults and unknown ones are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Task {
    pub id: String,
    pub state: String,
    pub epoch: u64,
    pub worker: Option<String>,
    pub position: Option<Position>,
    pub sources: Vec<String>,
    pub destinations: Vec<Destination>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub updated_ms: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Destination {
    pub url: String,
    /// connecting, live, reconnecting, failed, stopped; absent until a worker reports.
    pub state: Option<String>,
}

/// `ms` as `hh:mm:ss` (hours grow past 99 if they must).
pub fn hms(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Unix ms as `yyyy-mm-dd HH:MM:SSZ`.
pub fn utc(ms: u64) -> String {
    vodfleet_proto::civil::iso8601_utc(ms).replacen('T', " ", 1)
}

/// `rtmp://host:1935/…` → `host:1935`.
fn host_of(redacted: &str) -> &str {
    let rest = redacted.split_once("://").map_or(redacted, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

fn dest_state(d: &Destination) -> &str {
    d.state.as_deref().unwrap_or("pending")
}

/// "item 2/5" style: 1-based, with the list length.
fn item(t: &Task) -> String {
    match &t.position {
        Some(p) => format!("{}/{}", p.item + 1, t.sources.len()),
        None => format!("-/{}", t.sources.len()),
    }
}

/// One line per task, aligned: ID STATE WORKER ITEM LOOP POSITION DESTINATIONS.
pub fn table(tasks: &[Task]) -> String {
    if tasks.is_empty() {
        return "no tasks\n".to_owned();
    }
    let mut rows = vec![[
        "ID",
        "STATE",
        "WORKER",
        "ITEM",
        "LOOP",
        "POSITION",
        "DESTINATIONS",
    ]
    .map(str::to_owned)];
    for t in tasks {
        let dests = t
            .destinations
            .iter()
            .map(|d| {
                format!(
                    "{} {}",
                    host_of(&redact::destination(&d.url)),
                    dest_state(d)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        rows.push([
            t.id.clone(),
            t.state.clone(),
            t.worker.clone().unwrap_or_else(|| "-".into()),
            item(t),
            t.position
                .map_or("-".into(), |p| (p.loop_index + 1).to_string()),
            t.position.map_or("-".into(), |p| hms(p.offset_ms)),
            if dests.is_empty() { "-".into() } else { dests },
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c] - cell.chars().count();
                let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Counts per state: "3 tasks: 2 running, 1 leased".
pub fn summary(tasks: &[Task]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for t in tasks {
        match counts.iter_mut().find(|(s, _)| *s == t.state) {
            Some((_, n)) => *n += 1,
            None => counts.push((&t.state, 1)),
        }
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let n = tasks.len();
    let noun = if n == 1 { "task" } else { "tasks" };
    if parts.is_empty() {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}: {}", parts.join(", "))
    }
}

/// One task in detail. `now_ms` dates `updated` ("4 s ago").
pub fn detail(t: &Task, now_ms: u64) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "task      {}", t.id);
    let _ = writeln!(o, "state     {} (epoch {})", t.state, t.epoch);
    let _ = writeln!(o, "worker    {}", t.worker.as_deref().unwrap_or("-"));
    match &t.position {
        Some(p) => {
            let _ = writeln!(
                o,
                "item      {} of {}, loop {}",
                p.item + 1,
                t.sources.len(),
                p.loop_index + 1
            );
            let _ = writeln!(
                o,
                "position  {} into the item, {} on air",
                hms(p.offset_ms),
                hms(p.timeline_ms)
            );
        }
        None => {
            let _ = writeln!(o, "position  - (no worker has reported yet)");
        }
    }
    let when = |ms: u64| if ms == 0 { "-".to_owned() } else { utc(ms) };
    let _ = writeln!(o, "start     {}", when(t.start_ms));
    let _ = writeln!(o, "end       {}", when(t.end_ms));
    if t.updated_ms > 0 {
        let ago = now_ms.saturating_sub(t.updated_ms) / 1000;
        let _ = writeln!(o, "updated   {} ({ago} s ago)", utc(t.updated_ms));
    }
    if let Some(e) = &t.error {
        let _ = writeln!(o, "error     {e}");
    }
    let _ = writeln!(o, "sources");
    let current = t.position.map(|p| p.item);
    for (i, s) in t.sources.iter().enumerate() {
        let mark = if current == Some(i) { ">" } else { " " };
        let _ = writeln!(o, "  {mark} {}. {}", i + 1, redact::source(s));
    }
    let _ = writeln!(o, "destinations");
    for (i, d) in t.destinations.iter().enumerate() {
        let _ = writeln!(
            o,
            "    {}. {}  {}",
            i + 1,
            redact::destination(&d.url),
            dest_state(d)
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Task {
        serde_json::from_value(serde_json::json!({
            "id": "lobby",
            "state": "running",
            "epoch": 3,
            "worker": "w-1",
            "position": {"item": 1, "loop_index": 0, "offset_ms": 3_723_000u64, "timeline_ms": 7_200_000u64},
            "sources": ["https://cdn.example/a.mp4?…", "vod://b.flv"],
            "destinations": [
                {"url": "rtmp://push.example:1935/…", "state": "live"},
                {"url": "rtmps://other.example/…", "state": null}
            ],
            "start_ms": 0, "end_ms": 0, "updated_ms": 1_700_000_000_000u64,
            "some_future_field": true
        }))
        .unwrap()
    }

    #[test]
    fn times_format() {
        assert_eq!(hms(3_723_999), "01:02:03");
        assert_eq!(hms(360_000_000), "100:00:00");
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(1_540_222_200_000), "2018-10-22 15:30:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
    }

    #[test]
    fn the_table_has_one_aligned_row_per_task() {
        let mut other = sample();
        other.id = "b".into();
        other.state = "leased".into();
        other.worker = None;
        other.position = None;
        let t = table(&[sample(), other]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID     STATE"));
        assert!(
            lines[1].contains("running")
                && lines[1].contains("2/2")
                && lines[1].contains("01:02:03")
        );
        assert!(lines[1].contains("push.example:1935 live, other.example pending"));
        assert!(lines[2].starts_with("b      leased   -"));
        assert_eq!(summary(&[sample(), sample()]), "2 tasks: 2 running");
    }

    #[test]
    fn detail_marks_the_current_item() {
        let d = detail(&sample(), 1_700_000_004_000);
        assert!(d.contains("item      2 of 2, loop 1"));
        assert!(d.contains("01:02:03 into the item, 02:00:00 on air"));
        assert!(d.contains("  > 2. vod://b.flv"));
        assert!(d.contains("(4 s ago)"));
        assert!(d.contains("end       -"));
    }

    #[test]
    fn stream_keys_are_never_printed_even_if_sent() {
        let mut t = sample();
        t.destinations[0].url = "rtmp://push.example/live/SECRETKEY?token=TOK".into();
        t.sources[0] = "https://u:PW@cdn.example/a.mp4?sig=SIG".into();
        for out in [table(std::slice::from_ref(&t)), detail(&t, 0)] {
            for secret in ["SECRETKEY", "TOK", "PW", "SIG"] {
                assert!(!out.contains(secret), "{secret} in\n{out}");
            }
        }
    }
}
