//! Contract tests for the seed-001 command body (docs/contract.md).
//!
//! `fixtures/seed001/*.json` are the seed's example request bodies copied verbatim
//! (tabs and all). Every one of them must parse, with the values the seed means.
//! The bad-input cases each check the exact `field` path and part of the `reason`.

use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};
use vodfleet_proto::command::{
    AudioCodec, Cut, Range, Transcode, VideoCodec, Watermark, WatermarkPosition,
    DEFAULT_MIN_WINDOW_MS, MAX_BODY_BYTES,
};
use vodfleet_proto::{parse_command, parse_task_entry, Cmd, Command, FieldError, RejectKind};

const START: &str = include_str!("fixtures/seed001/01_start.json");
const TERMINATE: &str = include_str!("fixtures/seed001/02_terminate.json");
const TIMED_START: &str = include_str!("fixtures/seed001/03_timed_start.json");
const TIMED_TERMINATE: &str = include_str!("fixtures/seed001/04_timed_terminate.json");
const UPDATE: &str = include_str!("fixtures/seed001/05_update_files.json");
const RESUME: &str = include_str!("fixtures/seed001/06_resume.json");
const TRANSCODE: &str = include_str!("fixtures/seed001/07_transcode_watermark.json");

/// 20181022153000 and 20181022155000, UTC, as Unix milliseconds.
const ABS_FROM_MS: u64 = 1_540_222_200_000;
const ABS_TO_MS: u64 = 1_540_223_400_000;
/// The timed example's `start` / `end`.
const TIMED_START_MS: u64 = 1_540_216_800_000;
const TIMED_END_MS: u64 = 1_540_220_400_000;

// ---------------------------------------------------------------- helpers

fn parse_ok(body: &[u8]) -> Command {
    match parse_command(body) {
        Ok(c) => c,
        Err(e) => panic!(
            "expected the body to parse, got {e:?}\nbody: {}",
            String::from_utf8_lossy(body)
        ),
    }
}

fn expect_reject(body: impl AsRef<[u8]>, field: &str, reason: &str) -> FieldError {
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn value(s: &str) -> Value {
    serde_json::from_str(s).expect("fixture is JSON")
}

/// The valid baseline every bad case starts from: the seed's start example.
fn baseline() -> Value {
    value(START)
}

/// One edit of a body, addressed by JSON pointer (`/list/0/src/1/url`).
enum Edit {
    Set(&'static str, Value),
    Del(&'static str),
}
use Edit::{Del, Set};

fn edit(mut v: Value, edits: Vec<Edit>) -> Value {
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
fn with(edits: Vec<Edit>) -> Vec<u8> {
    serde_json::to_vec(&edit(baseline(), edits)).unwrap()
}

/// Any fixture with some edits, as bytes.
fn fixture_with(fixture: &str, edits: Vec<Edit>) -> Vec<u8> {
    serde_json::to_vec(&edit(value(fixture), edits)).unwrap()
}

/// The baseline with `n` tasks (ids t0, t1, ...).
fn many_tasks(n: usize) -> Vec<u8> {
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

fn sources(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({ "url": format!("http://www.video.com/live/{i}.mp4") }))
            .collect(),
    )
}

/// The baseline padded with trailing whitespace to exactly `len` bytes.
fn padded_to(len: usize) -> Vec<u8> {
    let mut b = serde_json::to_vec(&baseline()).unwrap();
    assert!(b.len() <= len);
    b.resize(len, b' ');
    b
}

fn transcode_of(body: &[u8]) -> Transcode {
    parse_ok(body).tasks[0]
        .transcode
        .clone()
        .expect("a transcode")
}

fn fops(f: Value) -> Vec<u8> {
    with(vec![Set("/list/0/fops", f)])
}

// ---------------------------------------------------------------- the seed's examples

#[test]
fn seed_has_seven_example_bodies_and_all_are_fixtures() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed001");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "01_start.json",
            "02_terminate.json",
            "03_timed_start.json",
            "04_timed_terminate.json",
            "05_update_files.json",
            "06_resume.json",
            "07_transcode_watermark.json",
        ]
    );
    // Verbatim: the seed indents with tabs.
    for body in [
        START,
        TERMINATE,
        TIMED_START,
        TIMED_TERMINATE,
        UPDATE,
        RESUME,
        TRANSCODE,
    ] {
        assert!(body.starts_with("{\n\t\"transcallbackurl\": \"http://www.callback.com/api\",\n"));
    }
}

fn assert_seed_sources(c: &Command, names: [&str; 3]) {
    let s = &c.tasks[0].sources;
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].url, format!("http://www.video.com/live/{}", names[0]));
    assert_eq!(s[0].cut, Cut::Whole);
    assert_eq!(s[1].url, format!("http://www.video.com/live/{}", names[1]));
    assert_eq!(
        s[1].cut,
        Cut::Absolute(vec![Range {
            start_ms: ABS_FROM_MS,
            end_ms: ABS_TO_MS
        }])
    );
    assert_eq!(s[2].url, format!("http://www.video.com/live/{}", names[2]));
    assert_eq!(
        s[2].cut,
        Cut::Relative(vec![Range {
            start_ms: 300_000,
            end_ms: 500_000
        }])
    );
}

fn assert_seed_forwards(c: &Command) {
    let urls: Vec<&str> = c.tasks[0].forwards.iter().map(|f| f.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "rtmp://www.push1.com/live/test",
            "rtmp://www.push2.com/live/test2"
        ]
    );
}

#[test]
fn seed_start_parses() {
    let c = parse_ok(START.as_bytes());
    assert_eq!(c.cmd, Cmd::Start);
    assert_eq!(
        c.callback_url.as_deref(),
        Some("http://www.callback.com/api")
    );
    assert_eq!(c.tasks.len(), 1);
    let t = &c.tasks[0];
    assert_eq!(t.id, "123");
    assert_seed_sources(&c, ["abc.mp4", "1.flv", "2.mp4"]);
    assert_seed_forwards(&c);
    assert!(t.forwards.iter().all(|f| f.reset_url.is_none()));
    assert_eq!(t.loop_count, 1);
    assert_eq!(t.first_item, 0, "index \"1\" is 1-based");
    assert!(!t.callback_file_info);
    assert!(!t.wait_current);
    assert_eq!((t.start_ms, t.end_ms), (None, None));
    assert_eq!(t.transcode, None);
    assert!(c.warnings.is_empty());
    assert!(c.check_timing(now_ms(), DEFAULT_MIN_WINDOW_MS).is_ok());
}

#[test]
fn seed_terminate_parses() {
    for body in [TERMINATE, TIMED_TERMINATE] {
        let c = parse_ok(body.as_bytes());
        assert_eq!(c.cmd, Cmd::Terminate);
        assert_eq!(
            c.callback_url.as_deref(),
            Some("http://www.callback.com/api")
        );
        let t = &c.tasks[0];
        assert_eq!(t.id, "123");
        assert!(
            t.sources.is_empty(),
            "the seed's src [{{\"url\": \"\"}}] names no media"
        );
        assert_seed_forwards(&c);
        assert_eq!((t.start_ms, t.end_ms), (None, None));
        assert_eq!(t.transcode, None);
        assert!(c.warnings.is_empty());
    }
}

#[test]
fn seed_timed_start_parses_and_its_2018_window_is_checked_against_now() {
    let c = parse_ok(TIMED_START.as_bytes());
    assert_eq!(c.cmd, Cmd::Start);
    let t = &c.tasks[0];
    assert_eq!(t.id, "123");
    assert_seed_sources(&c, ["abc.mp4", "1.flv", "2.mp4"]);
    assert_seed_forwards(&c);
    assert_eq!(t.loop_count, 1);
    assert_eq!(t.first_item, 0);
    assert_eq!(t.start_ms, Some(TIMED_START_MS));
    assert_eq!(t.end_ms, Some(TIMED_END_MS));

    // Today the 2018 end is long gone.
    let e = c.check_timing(now_ms(), DEFAULT_MIN_WINDOW_MS).unwrap_err();
    assert_eq!(e.kind, RejectKind::BadRequest);
    assert_eq!(e.field, "list[0].end");
    assert!(
        e.reason
            .contains("at least 300 s after start and after now"),
        "{}",
        e.reason
    );

    // Before the start, the one-hour window is fine.
    assert_eq!(c.check_timing(1_540_216_000_000, 5 * 60 * 1000), Ok(()));
}

#[test]
fn seed_update_parses() {
    let c = parse_ok(UPDATE.as_bytes());
    assert_eq!(c.cmd, Cmd::Update);
    let t = &c.tasks[0];
    assert_eq!(t.id, "123");
    assert_seed_sources(&c, ["d.mp4", "3.flv", "4.mp4"]);
    assert_seed_forwards(&c);
    assert_eq!(t.loop_count, 1);
    assert_eq!(t.first_item, 0);
    assert!(!t.callback_file_info);
    assert!(!t.wait_current, "waitCrtUrlFinish \"0\" switches now");

    let c = parse_ok(&fixture_with(
        UPDATE,
        vec![Set("/list/0/extendParam/waitCrtUrlFinish", json!("1"))],
    ));
    assert!(c.tasks[0].wait_current);
}

#[test]
fn seed_resume_parses_with_reset_url() {
    let c = parse_ok(RESUME.as_bytes());
    assert_eq!(c.cmd, Cmd::Resume);
    let t = &c.tasks[0];
    assert_eq!(t.id, "123");
    assert_seed_sources(&c, ["d.mp4", "3.flv", "4.mp4"]);
    assert_seed_forwards(&c);
    assert_eq!(t.forwards[0].reset_url, None);
    assert_eq!(
        t.forwards[1].reset_url.as_deref(),
        Some("rtmp://www.push3.com/live/test3")
    );
    assert_eq!(t.transcode, None);
    assert_eq!(t.loop_count, 0);
}

#[test]
fn seed_transcode_example_is_refused_for_libx265() {
    let e = expect_reject(
        TRANSCODE.as_bytes(),
        "list[0].fops.vcodec",
        "cannot be carried over RTMP/FLV",
    );
    assert!(e.reason.contains("libx265"), "{}", e.reason);
    assert!(
        e.reason.contains("libx264"),
        "the refusal says what to use: {}",
        e.reason
    );
    assert_eq!(e.to_string(), format!("list[0].fops.vcodec: {}", e.reason));
}

#[test]
fn seed_transcode_example_with_libx264_parses_with_swap_warning() {
    let body = TRANSCODE.replace("\"libx265\"", "\"libx264\"");
    assert_ne!(body, TRANSCODE);
    let c = parse_ok(body.as_bytes());
    assert_eq!(c.cmd, Cmd::Start);
    let t = &c.tasks[0];
    assert_seed_sources(&c, ["d.mp4", "3.flv", "4.mp4"]);
    assert_seed_forwards(&c);
    assert_eq!(
        t.sources[0].watermark,
        Some(Watermark {
            image_url: "http://ws.test.com/live/picture1.jpg".into(),
            position: WatermarkPosition::TopLeft
        })
    );
    assert_eq!(t.sources[1].watermark, None);
    assert_eq!(
        t.transcode,
        Some(Transcode {
            width: Some(1280),
            height: Some(640),
            fps: Some((25, 1)),
            video_kbps: Some(1200),
            vcodec: VideoCodec::H264,
            acodec: AudioCodec::Mp3,
        })
    );
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert_eq!(c.warnings[0].field, "list[0].fops");
    assert!(
        c.warnings[0].message.contains("swapped"),
        "{}",
        c.warnings[0].message
    );
}

#[test]
fn res_and_fps_the_right_way_round_give_no_warning() {
    let c = parse_ok(&fops(
        json!({"res": "1280x640", "fps": "25", "bps": "1200"}),
    ));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let t = c.tasks[0].transcode.clone().unwrap();
    assert_eq!(
        (t.width, t.height, t.fps, t.video_kbps),
        (Some(1280), Some(640), Some((25, 1)), Some(1200))
    );
}

#[test]
fn parsed_command_survives_a_serde_round_trip() {
    // Stored commands are re-validated later with check_timing, so they must round-trip.
    for body in [START, TERMINATE, TIMED_START, UPDATE, RESUME] {
        let c = parse_ok(body.as_bytes());
        let back: Command = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}

// ---------------------------------------------------------------- strings or numbers

#[test]
fn numeric_fields_accept_strings_or_numbers() {
    let as_strings = parse_ok(&with(vec![
        Set("/list/0/extendParam/loop", json!("2")),
        Set("/list/0/extendParam/index", json!("3")),
        Set("/list/0/extendParam/callBackFileInfo", json!("1")),
    ]));
    let as_numbers = parse_ok(&with(vec![
        Set("/list/0/extendParam/loop", json!(2)),
        Set("/list/0/extendParam/index", json!(3)),
        Set("/list/0/extendParam/callBackFileInfo", json!(1)),
    ]));
    assert_eq!(as_strings, as_numbers);
    let t = &as_numbers.tasks[0];
    assert_eq!(
        (t.loop_count, t.first_item, t.callback_file_info),
        (2, 2, true)
    );
}

#[test]
fn cmd_and_id_accept_numbers() {
    let c = parse_ok(&with(vec![
        Set("/cmd", json!(1)),
        Set("/list/0/id", json!(123)),
    ]));
    assert_eq!(c, parse_ok(START.as_bytes()));
}

#[test]
fn timestamps_accept_numbers() {
    let as_numbers = parse_ok(&fixture_with(
        TIMED_START,
        vec![
            Set("/list/0/start", json!(1540216800000u64)),
            Set("/list/0/end", json!(1540220400000u64)),
        ],
    ));
    assert_eq!(as_numbers, parse_ok(TIMED_START.as_bytes()));
    assert_eq!(as_numbers.tasks[0].start_ms, Some(TIMED_START_MS));
    assert_eq!(as_numbers.tasks[0].end_ms, Some(TIMED_END_MS));
}

#[test]
fn fops_numbers_accept_numbers() {
    let s = transcode_of(&fops(
        json!({"bps": "1200", "fps": "29.97", "res": "1280x720"}),
    ));
    let n = transcode_of(&fops(json!({"bps": 1200, "fps": 29.97, "res": "1280x720"})));
    assert_eq!(s, n);
    assert_eq!(n.fps, Some((2997, 100)));
    assert_eq!(n.video_kbps, Some(1200));
}

#[test]
fn loop_absent_or_zero_means_until_stopped() {
    let absent = parse_ok(&with(vec![Del("/list/0/extendParam")]));
    let zero = parse_ok(&with(vec![Set("/list/0/extendParam/loop", json!(0))]));
    assert_eq!(absent.tasks[0].loop_count, 0);
    assert_eq!(zero.tasks[0].loop_count, 0);
}

// ---------------------------------------------------------------- presets and cuts

#[test]
fn presets_follow_the_seed_003_ladder() {
    for (name, w, h, kbps) in [
        ("360p", 640, 360, 400),
        ("480p", 854, 480, 600),
        ("720p", 1280, 720, 1000),
        ("1080p", 1920, 1080, 2000),
    ] {
        let t = transcode_of(&fops(json!({ "preset": name })));
        assert_eq!(
            (t.width, t.height, t.video_kbps),
            (Some(w), Some(h), Some(kbps)),
            "{name}"
        );
        assert_eq!(t.fps, None, "{name} keeps the source frame rate");
        assert_eq!(
            (t.vcodec, t.acodec),
            (VideoCodec::H264, AudioCodec::Aac),
            "{name}"
        );
    }
}

#[test]
fn relofftime_wins_and_takes_several_ranges() {
    let c = parse_ok(&with(vec![
        Set("/list/0/src/1/relofftime", json!("0-10; 20.5-30")),
        Set(
            "/list/0/src/1/absofftime",
            json!("20181022153000-20181022155000"),
        ),
    ]));
    assert_eq!(
        c.tasks[0].sources[1].cut,
        Cut::Relative(vec![
            Range {
                start_ms: 0,
                end_ms: 10_000
            },
            Range {
                start_ms: 20_500,
                end_ms: 30_000
            }
        ])
    );
}

#[test]
fn absofftime_takes_several_ranges_in_utc() {
    let c = parse_ok(&with(vec![Set(
        "/list/0/src/1/absofftime",
        json!("19700101000000-19700101000001;20181022153000-20181022155000"),
    )]));
    assert_eq!(
        c.tasks[0].sources[1].cut,
        Cut::Absolute(vec![
            Range {
                start_ms: 0,
                end_ms: 1000
            },
            Range {
                start_ms: ABS_FROM_MS,
                end_ms: ABS_TO_MS
            }
        ])
    );
}

#[test]
fn vod_and_rtsp_sources_are_accepted() {
    let c = parse_ok(&with(vec![
        Set("/list/0/src/0/url", json!("vod://movies/final.mp4")),
        Set("/list/0/src/1/url", json!("rtsp://cam.example.com/stream1")),
    ]));
    assert_eq!(c.tasks[0].sources[0].url, "vod://movies/final.mp4");
    assert_eq!(c.tasks[0].sources[1].url, "rtsp://cam.example.com/stream1");
}

// ---------------------------------------------------------------- timing

#[test]
fn timing_window_boundaries() {
    let start = TIMED_START_MS;
    let timed = |end: u64| {
        parse_ok(&fixture_with(
            TIMED_START,
            vec![
                Set("/list/0/start", json!(start.to_string())),
                Set("/list/0/end", json!(end.to_string())),
            ],
        ))
    };
    let before = start - 60_000;
    assert_eq!(
        timed(start + DEFAULT_MIN_WINDOW_MS).check_timing(before, DEFAULT_MIN_WINDOW_MS),
        Ok(())
    );
    let e = timed(start + DEFAULT_MIN_WINDOW_MS - 1)
        .check_timing(before, DEFAULT_MIN_WINDOW_MS)
        .unwrap_err();
    assert_eq!(e.field, "list[0].end");

    // start <= now starts now: the window is then measured from now.
    let c = timed(start + 3_600_000);
    let later = start + 3_600_000 - DEFAULT_MIN_WINDOW_MS;
    assert_eq!(c.check_timing(later, DEFAULT_MIN_WINDOW_MS), Ok(()));
    let e = c
        .check_timing(later + 1, DEFAULT_MIN_WINDOW_MS)
        .unwrap_err();
    assert_eq!(e.field, "list[0].end");
    assert_eq!(e.kind, RejectKind::BadRequest);
}

#[test]
fn timing_with_end_only_is_measured_from_now() {
    let now = now_ms();
    let c = parse_ok(&with(vec![Set("/list/0/end", json!(now + 10 * 60_000))]));
    assert_eq!(c.tasks[0].start_ms, None);
    assert_eq!(c.check_timing(now, DEFAULT_MIN_WINDOW_MS), Ok(()));
    let e = c
        .check_timing(now + 6 * 60_000, DEFAULT_MIN_WINDOW_MS)
        .unwrap_err();
    assert_eq!(e.field, "list[0].end");
}

#[test]
fn timing_names_the_failing_task() {
    let mut v = baseline();
    let mut second = v["list"][0].clone();
    second["id"] = json!("456");
    second["start"] = json!("1540216800000");
    second["end"] = json!("1540220400000");
    v["list"].as_array_mut().unwrap().push(second);
    let c = parse_ok(&serde_json::to_vec(&v).unwrap());
    let e = c.check_timing(now_ms(), DEFAULT_MIN_WINDOW_MS).unwrap_err();
    assert_eq!(e.field, "list[1].end");
}

// ---------------------------------------------------------------- limits that pass

#[test]
fn body_of_exactly_64_kib_is_accepted() {
    assert_eq!(MAX_BODY_BYTES, 64 * 1024);
    let c = parse_ok(&padded_to(MAX_BODY_BYTES));
    assert_eq!(c, parse_ok(START.as_bytes()));
}

#[test]
fn fifty_tasks_are_accepted() {
    assert_eq!(parse_ok(&many_tasks(50)).tasks.len(), 50);
}

// ---------------------------------------------------------------- parse_task_entry

#[test]
fn task_entry_parses_like_a_list_entry() {
    let entry = serde_json::to_vec(&baseline()["list"][0]).unwrap();
    let (spec, warnings) = parse_task_entry(&entry).unwrap();
    assert_eq!(spec, parse_ok(START.as_bytes()).tasks[0]);
    assert!(warnings.is_empty());
}

#[test]
fn task_entry_errors_are_relative_to_the_entry() {
    let mut entry = baseline()["list"][0].clone();
    entry["src"][2]["relofftime"] = json!("5-3");
    let e = parse_task_entry(&serde_json::to_vec(&entry).unwrap()).unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_str()),
        (RejectKind::BadRequest, "src[2].relofftime")
    );
    assert!(e.reason.contains("ends before it starts"), "{}", e.reason);

    entry = baseline()["list"][0].clone();
    entry["bogus"] = json!(1);
    let e = parse_task_entry(&serde_json::to_vec(&entry).unwrap()).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.reason.as_str()),
        ("bogus", "unknown field")
    );
}

// ---------------------------------------------------------------- bad inputs

/// One refused body per test: `bad!(name, body, field, reason fragment)`.
macro_rules! bad {
    ($name:ident, $body:expr, $field:expr, $reason:expr) => {
        #[test]
        fn $name() {
            expect_reject($body, $field, $reason);
        }
    };
}

/// The refused bodies, one per line (kept unformatted so each case stays one line).
#[rustfmt::skip]
mod bad_input {
    use super::*;

    // Whole body.
    bad!(bad_body_over_64_kib, padded_to(MAX_BODY_BYTES + 1), "", "the limit is 65536");
    bad!(bad_json_truncated, br#"{"cmd": "1", "type": "video","#, "", "not valid JSON");
    bad!(bad_json_trailing_garbage, [START.as_bytes(), b"x"].concat(), "", "not valid JSON");
    bad!(bad_json_two_bodies, [START, TERMINATE].concat().into_bytes(), "", "not valid JSON");
    bad!(bad_json_not_an_object, br#""video""#, "", "must be a JSON object");
    bad!(bad_json_duplicate_key, START.replacen("\"cmd\": \"1\",", "\"cmd\": \"1\", \"cmd\": \"2\",", 1).into_bytes(), "", "duplicate field `cmd`");
    bad!(bad_src_duplicate_key, START.replacen("\"relofftime\": \"300-500\"", "\"relofftime\": \"300-500\", \"relofftime\": \"1-2\"", 1).into_bytes(), "list[0].src[2]", "duplicate field `relofftime`");
    bad!(bad_unknown_top_level_field, with(vec![Set("/priority", json!("high"))]), "priority", "unknown field");
    bad!(bad_missing_cmd, with(vec![Del("/cmd")]), "cmd", "is required");
    bad!(bad_missing_type, with(vec![Del("/type")]), "type", "is required");
    bad!(bad_cmd_4, with(vec![Set("/cmd", json!("4"))]), "cmd", "unknown command \"4\"");
    bad!(bad_cmd_bool, with(vec![Set("/cmd", json!(true))]), "cmd", "a number or a string");
    bad!(bad_type_audio, with(vec![Set("/type", json!("audio"))]), "type", "must be \"video\"");
    bad!(bad_callback_ftp, with(vec![Set("/transcallbackurl", json!("ftp://www.callback.com/api"))]), "transcallbackurl", "scheme \"ftp\" is not supported");
    bad!(bad_callback_not_a_url, with(vec![Set("/transcallbackurl", json!("callback"))]), "transcallbackurl", "is not a URL");

    // list[].
    bad!(bad_list_empty, with(vec![Set("/list", json!([]))]), "list", "at least one task");
    bad!(bad_list_over_limit, many_tasks(51), "list", "has 51 tasks; the limit is 50");
    bad!(bad_list_duplicate_id, {
        let mut v = baseline();
        let t = v["list"][0].clone();
        v["list"].as_array_mut().unwrap().push(t);
        serde_json::to_vec(&v).unwrap()
    }, "list[1].id", "appears twice");
    bad!(bad_id_missing, with(vec![Del("/list/0/id")]), "list[0].id", "is required");
    bad!(bad_id_bad_chars, with(vec![Set("/list/0/id", json!("a/../b c"))]), "list[0].id", "may contain only");
    bad!(bad_id_empty, with(vec![Set("/list/0/id", json!(""))]), "list[0].id", "must be 1 to 128 characters");
    bad!(bad_id_too_long, with(vec![Set("/list/0/id", json!("a".repeat(129)))]), "list[0].id", "must be 1 to 128 characters");
    bad!(bad_task_unknown_field, with(vec![Set("/list/0/Start", json!("1540216800000"))]), "list[0].Start", "unknown field");

    // src[].
    bad!(bad_src_unknown_field, with(vec![Set("/list/0/src/1/offset", json!("10"))]), "list[0].src[1].offset", "unknown field");
    bad!(bad_src_empty_on_start, with(vec![Set("/list/0/src", json!([]))]), "list[0].src", "at least one source");
    bad!(bad_src_over_limit, with(vec![Set("/list/0/src", sources(101))]), "list[0].src", "the limit is 100");
    bad!(bad_src_url_empty_on_start, with(vec![Set("/list/0/src/0/url", json!(""))]), "list[0].src[0].url", "must not be empty");
    bad!(bad_src_url_ftp, with(vec![Set("/list/0/src/2/url", json!("ftp://www.video.com/live/2.mp4"))]), "list[0].src[2].url", "scheme \"ftp\" is not supported");
    bad!(bad_src_url_file, with(vec![Set("/list/0/src/0/url", json!("file:///etc/passwd"))]), "list[0].src[0].url", "scheme \"file\" is not supported");
    bad!(bad_src_url_too_long, with(vec![Set("/list/0/src/0/url", json!(format!("http://a.com/{}", "x".repeat(2048))))]), "list[0].src[0].url", "the limit is 2048");
    bad!(bad_src_vod_traversal, with(vec![Set("/list/0/src/0/url", json!("vod://../etc/passwd"))]), "list[0].src[0].url", "relative path inside the media root");
    bad!(bad_src_vod_inner_traversal, with(vec![Set("/list/0/src/0/url", json!("vod://movies/../../etc/passwd"))]), "list[0].src[0].url", "relative path inside the media root");
    bad!(bad_src_vod_encoded_traversal, with(vec![Set("/list/0/src/0/url", json!("vod://movies/%2e%2e/secret"))]), "list[0].src[0].url", "relative path inside the media root");
    bad!(bad_relofftime_reversed, with(vec![Set("/list/0/src/2/relofftime", json!("5-3"))]), "list[0].src[2].relofftime", "ends before it starts");
    bad!(bad_relofftime_not_a_range, with(vec![Set("/list/0/src/2/relofftime", json!("abc"))]), "list[0].src[2].relofftime", "is not START-END");
    bad!(bad_relofftime_open_end, with(vec![Set("/list/0/src/2/relofftime", json!("1-"))]), "list[0].src[2].relofftime", "\"\" is not a valid time");
    bad!(bad_relofftime_negative, with(vec![Set("/list/0/src/2/relofftime", json!("-5-3"))]), "list[0].src[2].relofftime", "is not a valid time");
    bad!(bad_relofftime_only_separators, with(vec![Set("/list/0/src/2/relofftime", json!(";;"))]), "list[0].src[2].relofftime", "names no range");
    bad!(bad_relofftime_too_many_ranges, with(vec![Set("/list/0/src/2/relofftime", json!((0..101).map(|i| format!("{}-{}", 2 * i, 2 * i + 1)).collect::<Vec<_>>().join(";")))]), "list[0].src[2].relofftime", "the limit is 100");
    bad!(bad_absofftime_month_13, with(vec![Set("/list/0/src/1/absofftime", json!("20181322000000-20181322010000"))]), "list[0].src[1].absofftime", "\"20181322000000\" is not a valid time");
    bad!(bad_absofftime_feb_30, with(vec![Set("/list/0/src/1/absofftime", json!("20180230000000-20180301000000"))]), "list[0].src[1].absofftime", "\"20180230000000\" is not a valid time");
    bad!(bad_absofftime_short, with(vec![Set("/list/0/src/1/absofftime", json!("201810221530-201810221550"))]), "list[0].src[1].absofftime", "is not a valid time");
    bad!(bad_wmposition_unknown, with(vec![Set("/list/0/src/0/wmimage", json!("http://ws.test.com/a.png")), Set("/list/0/src/0/wmposition", json!("MIDDLE"))]), "list[0].src[0].wmposition", "unknown position \"MIDDLE\"");
    bad!(bad_wmposition_without_image, with(vec![Set("/list/0/src/0/wmposition", json!("TOP_LEFT"))]), "list[0].src[0].wmimage", "required when wmposition is given");
    bad!(bad_wmimage_ftp, with(vec![Set("/list/0/src/0/wmimage", json!("ftp://ws.test.com/a.png"))]), "list[0].src[0].wmimage", "scheme \"ftp\"");

    // forward[].
    bad!(bad_forward_empty, with(vec![Set("/list/0/forward", json!([]))]), "list[0].forward", "at least one destination");
    bad!(bad_forward_http, with(vec![Set("/list/0/forward/1/url", json!("http://www.push2.com/live/test2"))]), "list[0].forward[1].url", "scheme \"http\" is not supported");
    bad!(bad_forward_duplicate, with(vec![Set("/list/0/forward/1/url", json!("rtmp://www.push1.com/live/test"))]), "list[0].forward[1].url", "listed twice");
    bad!(bad_forward_over_limit, with(vec![Set("/list/0/forward", Value::Array((0..11).map(|i| json!({"url": format!("rtmp://p.com/live/{i}")})).collect()))]), "list[0].forward", "the limit is 10");
    bad!(bad_forward_unknown_field, with(vec![Set("/list/0/forward/0/reseturl", json!("rtmp://x.com/a"))]), "list[0].forward[0].reseturl", "unknown field");
    bad!(bad_reset_url_on_start, with(vec![Set("/list/0/forward/0/resetUrl", json!("rtmp://www.push3.com/live/test3"))]), "list[0].forward[0].resetUrl", "only allowed with cmd \"5\"");
    bad!(bad_reset_url_http_on_resume, fixture_with(RESUME, vec![Set("/list/0/forward/1/resetUrl", json!("http://www.push3.com/live/test3"))]), "list[0].forward[1].resetUrl", "scheme \"http\"");

    // extendParam.
    bad!(bad_loop_negative, with(vec![Set("/list/0/extendParam/loop", json!("-1"))]), "list[0].extendParam.loop", "\"-1\" is not a whole number");
    bad!(bad_loop_negative_number, with(vec![Set("/list/0/extendParam/loop", json!(-1))]), "list[0].extendParam.loop", "\"-1\" is not a whole number");
    bad!(bad_loop_word, with(vec![Set("/list/0/extendParam/loop", json!("x"))]), "list[0].extendParam.loop", "\"x\" is not a whole number");
    bad!(bad_loop_fraction, with(vec![Set("/list/0/extendParam/loop", json!(1.5))]), "list[0].extendParam.loop", "is not a whole number");
    bad!(bad_loop_huge, with(vec![Set("/list/0/extendParam/loop", json!("1000001"))]), "list[0].extendParam.loop", "out of range 0..=1000000");
    bad!(bad_index_zero, with(vec![Set("/list/0/extendParam/index", json!("0"))]), "list[0].extendParam.index", "0 is out of range 1..=3");
    bad!(bad_index_beyond_sources, with(vec![Set("/list/0/extendParam/index", json!(4))]), "list[0].extendParam.index", "4 is out of range 1..=3");
    bad!(bad_callback_file_info_2, with(vec![Set("/list/0/extendParam/callBackFileInfo", json!("2"))]), "list[0].extendParam.callBackFileInfo", "2 is out of range 0..=1");
    bad!(bad_wait_on_start, with(vec![Set("/list/0/extendParam/waitCrtUrlFinish", json!("1"))]), "list[0].extendParam.waitCrtUrlFinish", "only meaningful with cmd \"3\"");
    bad!(bad_wait_2_on_update, fixture_with(UPDATE, vec![Set("/list/0/extendParam/waitCrtUrlFinish", json!("2"))]), "list[0].extendParam.waitCrtUrlFinish", "out of range 0..=1");
    bad!(bad_extend_param_unknown_field, with(vec![Set("/list/0/extendParam/loops", json!("1"))]), "list[0].extendParam.loops", "unknown field");
    bad!(bad_extend_param_on_resume, fixture_with(RESUME, vec![Set("/list/0/extendParam", json!({"loop": "1"}))]), "list[0].extendParam", "not allowed with cmd \"5\"");
    bad!(bad_extend_param_on_terminate, fixture_with(TERMINATE, vec![Set("/list/0/extendParam", json!({"loop": "1"}))]), "list[0].extendParam", "not allowed with cmd \"2\"");

    // start / end.
    bad!(bad_start_12_digits, with(vec![Set("/list/0/start", json!("154021680000"))]), "list[0].start", "not a 13-digit Unix timestamp");
    bad!(bad_start_seconds_number, with(vec![Set("/list/0/start", json!(1540216800))]), "list[0].start", "not a 13-digit Unix timestamp");
    bad!(bad_end_word, with(vec![Set("/list/0/end", json!("tomorrow"))]), "list[0].end", "not a 13-digit Unix timestamp");
    bad!(bad_end_before_start, fixture_with(TIMED_START, vec![Set("/list/0/end", json!("1540216700000"))]), "list[0].end", "must be after start");
    bad!(bad_end_equals_start, fixture_with(TIMED_START, vec![Set("/list/0/end", json!("1540216800000"))]), "list[0].end", "must be after start");
    bad!(bad_start_on_terminate, fixture_with(TERMINATE, vec![Set("/list/0/start", json!("1540216800000"))]), "list[0].start", "not allowed with cmd \"2\"");
    bad!(bad_end_on_terminate, fixture_with(TERMINATE, vec![Set("/list/0/end", json!("1540220400000"))]), "list[0].end", "not allowed with cmd \"2\"");

    // fops.
    bad!(bad_vcodec_libvpx, fops(json!({"vcodec": "libvpx"})), "list[0].fops.vcodec", "\"libvpx\" cannot be carried over RTMP/FLV");
    bad!(bad_acodec_libvorbis, fops(json!({"vcodec": "libx264", "acodec": "libvorbis"})), "list[0].fops.acodec", "\"libvorbis\" cannot be carried over RTMP/FLV");
    bad!(bad_res_odd_width, fops(json!({"res": "1281x720"})), "list[0].fops.res", "even sides");
    bad!(bad_res_odd_width_with_fps, fops(json!({"res": "1281x720", "fps": "25"})), "list[0].fops.res", "\"1281x720\" is not WIDTHxHEIGHT");
    bad!(bad_res_too_big, fops(json!({"res": "8192x4320"})), "list[0].fops.res", "from 16 to 4096");
    bad!(bad_res_bare_number, fops(json!({"res": "25"})), "list[0].fops.res", "is not WIDTHxHEIGHT");
    bad!(bad_fps_zero, fops(json!({"fps": "0"})), "list[0].fops.fps", "not a frame rate from 1 to 120");
    bad!(bad_fps_too_high, fops(json!({"fps": 240})), "list[0].fops.fps", "not a frame rate from 1 to 120");
    // 429496730 * 10 overflows u32 and would wrap to 4, so "…​.6" must not become 1 fps (or panic).
    bad!(bad_fps_overflow, fops(json!({"fps": "429496730.6"})), "list[0].fops.fps", "not a frame rate from 1 to 120");
    bad!(bad_bps_word, fops(json!({"bps": "fast"})), "list[0].fops.bps", "\"fast\" is not a whole number");
    bad!(bad_bps_too_low, fops(json!({"bps": 10})), "list[0].fops.bps", "out of range 50..=100000");
    bad!(bad_preset_4k, fops(json!({"preset": "4k"})), "list[0].fops.preset", "unknown preset \"4k\"");
    bad!(bad_fops_unknown_field, fops(json!({"crf": "23"})), "list[0].fops.crf", "unknown field");
    bad!(bad_fops_on_resume, fixture_with(RESUME, vec![Set("/list/0/fops", json!({"vcodec": "libx264"}))]), "list[0].fops", "not allowed with cmd \"5\"");
    bad!(bad_fops_on_terminate, fixture_with(TERMINATE, vec![Set("/list/0/fops", json!({"vcodec": "libx264"}))]), "list[0].fops", "not allowed with cmd \"2\"");
}

/// serde's derived structs would take arrays by position; the contract is named fields.
#[test]
fn arrays_in_place_of_objects_are_refused() {
    let whole = br#"["", "1", "video", [["123", [["http://a.example/x.mp4", null, null, null, null]], [["rtmp://b.example/live/k", null]], null, null, null, null]]]"#;
    let e = vodfleet_proto::parse_command(whole).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.reason.as_str()),
        ("", "must be a JSON object")
    );
    let nested = br#"{"cmd":"1","type":"video","list":[{"id":"a","src":[["http://a.example/x.mp4"]],"forward":[{"url":"rtmp://b.example/live/k"}]}]}"#;
    let e = vodfleet_proto::parse_command(nested).unwrap_err();
    assert_eq!(e.field, "list[0].src[0]");
    let entry = br#"{"id":"a","src":[{"url":"http://a.example/x.mp4"}],"forward":[{"url":"rtmp://b.example/live/k"}],"fops":["1"]}"#;
    let e = vodfleet_proto::parse_task_entry(entry).unwrap_err();
    assert_eq!(e.field, "fops");
}

/// cmd 5 resumes the recorded list: `src` may be left out.
#[test]
fn resume_needs_no_src() {
    let body = br#"{"cmd":"5","type":"video","list":[{"id":"123","forward":[{"url":"rtmp://a.example/live/k","resetUrl":"rtmp://b.example/live/k2"}]}]}"#;
    let c = vodfleet_proto::parse_command(body).expect("cmd 5 without src");
    assert!(c.tasks[0].sources.is_empty());
    assert_eq!(
        c.tasks[0].forwards[0].reset_url.as_deref(),
        Some("rtmp://b.example/live/k2")
    );
}
