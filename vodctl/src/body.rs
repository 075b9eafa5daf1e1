//! Seed-001 command bodies built from the command line, and the local check
//! every body passes before it leaves the machine.

use crate::cli::{CutArgs, FopsArgs, ResumeArgs, StartArgs, StopArgs, UpdateArgs};
use serde_json::{json, Map, Value};
use vodfleet_proto::{parse_command, Cmd, Command, FieldError};

/// What `resume` sends as `src` when none is given. A cmd "5" body may leave
/// `src` out; the coordinator resumes the recorded list and ignores any it is
/// sent (docs/contract.md#resume).
pub const RESUME_PLACEHOLDER_SRC: &str = "vod://vodctl-resume-uses-the-recorded-list";

/// cmd "1". `args.file` is handled by the caller (it is sent as is).
/// Errs (a usage error) when a cut names a source that was not given.
pub fn start(a: &StartArgs) -> Result<Value, String> {
    let mut task = Map::new();
    task.insert("id".into(), json!(a.id.clone().unwrap_or_default()));
    task.insert("src".into(), sources(&a.src, &a.cuts)?);
    task.insert("forward".into(), forwards(&a.forward, &[]));
    let mut ext = Map::new();
    if let Some(n) = a.loop_count {
        ext.insert("loop".into(), json!(n.to_string()));
    }
    if let Some(n) = a.index {
        ext.insert("index".into(), json!(n.to_string()));
    }
    if a.callback_file_info {
        ext.insert("callBackFileInfo".into(), json!("1"));
    }
    if !ext.is_empty() {
        task.insert("extendParam".into(), Value::Object(ext));
    }
    if let Some(s) = a.start {
        task.insert("start".into(), json!(s));
    }
    if let Some(e) = a.end {
        task.insert("end".into(), json!(e));
    }
    if let Some(f) = fops(&a.fops) {
        task.insert("fops".into(), f);
    }
    Ok(envelope(Cmd::Start, a.callback.as_deref(), task))
}

/// cmd "2".
pub fn stop(a: &StopArgs) -> Value {
    let mut task = Map::new();
    task.insert("id".into(), json!(a.id));
    task.insert("forward".into(), forwards(&a.forward, &[]));
    envelope(Cmd::Terminate, a.callback.as_deref(), task)
}

/// cmd "3". Errs like [`start`].
pub fn update(a: &UpdateArgs) -> Result<Value, String> {
    let mut task = Map::new();
    task.insert("id".into(), json!(a.id));
    task.insert("src".into(), sources(&a.src, &a.cuts)?);
    if a.wait_current {
        task.insert("extendParam".into(), json!({"waitCrtUrlFinish": "1"}));
    }
    Ok(envelope(Cmd::Update, a.callback.as_deref(), task))
}

/// cmd "5". A `--reset OLD=NEW` whose OLD is not among `--forward` adds it.
pub fn resume(a: &ResumeArgs) -> Value {
    let mut task = Map::new();
    task.insert("id".into(), json!(a.id));
    let src: Vec<String> = if a.src.is_empty() {
        vec![RESUME_PLACEHOLDER_SRC.to_owned()]
    } else {
        a.src.clone()
    };
    let src = sources(&src, &CutArgs::default()).expect("no cuts");
    task.insert("src".into(), src);
    task.insert("forward".into(), forwards(&a.forward, &a.reset));
    envelope(Cmd::Resume, a.callback.as_deref(), task)
}

fn envelope(cmd: Cmd, callback: Option<&str>, task: Map<String, Value>) -> Value {
    let mut body = Map::new();
    if let Some(cb) = callback {
        body.insert("transcallbackurl".into(), json!(cb));
    }
    body.insert("cmd".into(), json!(cmd.code()));
    body.insert("type".into(), json!("video"));
    body.insert("list".into(), json!([Value::Object(task)]));
    Value::Object(body)
}

/// `src[]`, with each source's cuts.
fn sources(urls: &[String], cuts: &CutArgs) -> Result<Value, String> {
    for (flag, given) in [
        ("--relofftime", &cuts.relofftime),
        ("--absofftime", &cuts.absofftime),
    ] {
        if let Some((i, _)) = given.iter().find(|(i, _)| *i >= urls.len()) {
            return Err(format!(
                "{flag} {}=...: there are only {} --src (sources are numbered from 1)",
                i + 1,
                urls.len()
            ));
        }
    }
    let list = urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let mut s = Map::new();
            s.insert("url".into(), json!(url));
            for (key, given) in [
                ("relofftime", &cuts.relofftime),
                ("absofftime", &cuts.absofftime),
            ] {
                // The last one given for a source wins, as with any repeated flag.
                if let Some((_, v)) = given.iter().rev().find(|(j, _)| *j == i) {
                    s.insert(key.into(), json!(v));
                }
            }
            Value::Object(s)
        })
        .collect();
    Ok(Value::Array(list))
}

fn forwards(urls: &[String], resets: &[(String, String)]) -> Value {
    let mut list: Vec<Map<String, Value>> = urls
        .iter()
        .map(|u| {
            let mut f = Map::new();
            f.insert("url".into(), json!(u));
            f
        })
        .collect();
    for (old, new) in resets {
        match list.iter_mut().find(|f| f["url"] == *old) {
            Some(f) => {
                f.insert("resetUrl".into(), json!(new));
            }
            None => {
                let mut f = Map::new();
                f.insert("url".into(), json!(old));
                f.insert("resetUrl".into(), json!(new));
                list.push(f);
            }
        }
    }
    Value::Array(list.into_iter().map(Value::Object).collect())
}

fn fops(f: &FopsArgs) -> Option<Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    };
    put("preset", f.preset.clone());
    put("res", f.res.clone());
    put("fps", f.fps.clone());
    put("bps", f.bps.map(|b| b.to_string()));
    put("vcodec", f.vcodec.clone());
    put("acodec", f.acodec.clone());
    (!m.is_empty()).then_some(Value::Object(m))
}

/// The check a coordinator makes before it queues a command: the contract
/// (`parse_command`) and, for a start, `start`/`end` against this machine's
/// clock with the fleet's minimum window (`VODFLEET_MIN_WINDOW_MS`, default 5 min).
pub fn check(body: &[u8], now_ms: u64, min_window_ms: u64) -> Result<Command, FieldError> {
    let c = parse_command(body)?;
    if c.cmd == Cmd::Start {
        c.check_timing(now_ms, min_window_ms)?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Sub};
    use clap::Parser;
    use vodfleet_proto::command::{AudioCodec, Cut, Range};

    /// The smallest start command; tests append options to it.
    const START: &str = "start --id x --src vod://a.mp4 --forward rtmp://h/live/k";

    /// A command line (words split on white space, none of them has any) → its body.
    fn build(line: &str) -> Value {
        let cli = Cli::try_parse_from(std::iter::once("vodctl").chain(line.split_whitespace()))
            .unwrap_or_else(|e| panic!("{e}"));
        match &cli.cmd {
            Sub::Start(a) => start(a).unwrap(),
            Sub::Stop(a) => stop(a),
            Sub::Update(a) => update(a).unwrap(),
            Sub::Resume(a) => resume(a),
            other => panic!("not a command: {other:?}"),
        }
    }

    fn parsed(line: &str) -> Command {
        let body = serde_json::to_vec(&build(line)).unwrap();
        parse_command(&body).unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&body)))
    }

    fn refused(line: &str) -> FieldError {
        let body = serde_json::to_vec(&build(line)).unwrap();
        check(&body, 1_800_000_000_000, 300_000).unwrap_err()
    }

    #[test]
    fn start_round_trips_every_option() {
        let c = parsed(
            "start --id lobby-1 \
             --src https://cdn.example/a.mp4 --src vod://b.flv --src rtsp://cam.example/x \
             --forward rtmp://push.example/live/KEY1?t=a=b --forward rtmps://other.example/app/KEY2 \
             --loop 3 --index 2 --callback-file-info \
             --relofftime 2=300-500;900-960.5 --absofftime 3=20181022153000-20181022155000 \
             --start 1900000000000 --end 1900000600000 \
             --preset 720p --fps 29.97 --acodec libmp3lame \
             --callback https://hooks.example/cb",
        );
        assert_eq!(c.cmd, Cmd::Start);
        assert_eq!(c.callback_url.as_deref(), Some("https://hooks.example/cb"));
        let t = &c.tasks[0];
        assert_eq!(t.id, "lobby-1");
        let urls: Vec<&str> = t.sources.iter().map(|s| s.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://cdn.example/a.mp4",
                "vod://b.flv",
                "rtsp://cam.example/x"
            ]
        );
        assert_eq!(t.sources[0].cut, Cut::Whole);
        let range = |a, b| Range {
            start_ms: a,
            end_ms: b,
        };
        assert_eq!(
            t.sources[1].cut,
            Cut::Relative(vec![range(300_000, 500_000), range(900_000, 960_500)])
        );
        assert!(matches!(t.sources[2].cut, Cut::Absolute(ref r) if r.len() == 1));
        let fw: Vec<&str> = t.forwards.iter().map(|f| f.url.as_str()).collect();
        assert_eq!(
            fw,
            [
                "rtmp://push.example/live/KEY1?t=a=b",
                "rtmps://other.example/app/KEY2"
            ]
        );
        assert_eq!(t.loop_count, 3);
        assert_eq!(t.first_item, 1, "--index is 1-based like the wire");
        assert!(t.callback_file_info);
        assert_eq!(
            (t.start_ms, t.end_ms),
            (Some(1_900_000_000_000), Some(1_900_000_600_000))
        );
        let tc = t.transcode.as_ref().expect("fops");
        assert_eq!(
            (tc.width, tc.height, tc.video_kbps),
            (Some(1280), Some(720), Some(1000))
        );
        assert_eq!(tc.fps, Some((2997, 100)));
        assert_eq!(tc.acodec, AudioCodec::Mp3);
    }

    #[test]
    fn explicit_encoding_overrides_the_preset() {
        let c = parsed(&format!("{START} --preset 1080p --res 640x360 --bps 800"));
        let tc = c.tasks[0].transcode.clone().unwrap();
        assert_eq!(
            (tc.width, tc.height, tc.video_kbps),
            (Some(640), Some(360), Some(800))
        );
    }

    #[test]
    fn a_minimal_start_has_no_optional_fields() {
        assert_eq!(
            build(START),
            json!({"cmd": "1", "type": "video", "list": [{
                "id": "x", "src": [{"url": "vod://a.mp4"}], "forward": [{"url": "rtmp://h/live/k"}]
            }]})
        );
    }

    #[test]
    fn a_cut_past_the_last_source_is_a_usage_error() {
        let cli =
            Cli::try_parse_from(format!("vodctl {START} --relofftime 2=1-2").split_whitespace())
                .unwrap();
        let Sub::Start(a) = &cli.cmd else {
            unreachable!()
        };
        let e = start(a).unwrap_err();
        assert!(
            e.contains("--relofftime 2=") && e.contains("only 1 --src"),
            "{e}"
        );
    }

    #[test]
    fn stop_names_its_destinations() {
        let c = parsed("stop --id x --forward rtmp://h/live/k1 --forward rtmp://h/live/k2");
        assert_eq!(c.cmd, Cmd::Terminate);
        assert_eq!(c.tasks[0].forwards.len(), 2);
        assert!(c.tasks[0].sources.is_empty());
    }

    #[test]
    fn update_can_wait_for_the_current_item() {
        let c = parsed("update --id x --src vod://n.mp4 --relofftime 1=0-60 --wait-current");
        assert_eq!(c.cmd, Cmd::Update);
        let t = &c.tasks[0];
        assert!(t.wait_current);
        let whole_minute = Range {
            start_ms: 0,
            end_ms: 60_000,
        };
        assert_eq!(t.sources[0].cut, Cut::Relative(vec![whole_minute]));
        assert!(t.forwards.is_empty());
        assert!(!parsed("update --id x --src vod://n.mp4").tasks[0].wait_current);
    }

    #[test]
    fn resume_resets_and_adds_destinations() {
        let c = parsed(
            "resume --id x --forward rtmp://a/live/k1 --forward rtmp://b/live/k2 \
             --reset rtmp://b/live/k2=rtmp://c/live/k3 --reset rtmp://d/live/k4=rtmps://e/live/k5",
        );
        assert_eq!(c.cmd, Cmd::Resume);
        let f: Vec<(&str, Option<&str>)> = c.tasks[0]
            .forwards
            .iter()
            .map(|f| (f.url.as_str(), f.reset_url.as_deref()))
            .collect();
        assert_eq!(
            f,
            [
                ("rtmp://a/live/k1", None),
                ("rtmp://b/live/k2", Some("rtmp://c/live/k3")),
                ("rtmp://d/live/k4", Some("rtmps://e/live/k5")),
            ]
        );
        assert_eq!(c.tasks[0].sources[0].url, RESUME_PLACEHOLDER_SRC);
    }

    #[test]
    fn the_local_check_names_the_field() {
        let cases = [
            (
                "start --id x --src vod://a.mp4 --forward http://h/live/k",
                "list[0].forward[0].url",
            ),
            (
                &format!("{START} --relofftime 1=2-1"),
                "list[0].src[0].relofftime",
            ),
            (&format!("{START} --preset 4k"), "list[0].fops.preset"),
            // An end within 5 min of now (the check's clock is 1_800_000_000_000).
            (&format!("{START} --end 1800000060000"), "list[0].end"),
            ("resume --id x", "list[0].forward"),
        ];
        for (line, field) in cases {
            assert_eq!(refused(line).field, field, "{line}");
        }
    }
}
