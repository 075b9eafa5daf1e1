//! Contract tests for the seed-001 command body (docs/contract.md).
//!
//! `fixtures/seed001/*.json` are the seed's example request bodies copied verbatim
//! (tabs and all). Every one of them must parse, with the values the seed means.
//! The bad-input cases each check the exact `field` path and part of the `reason`.

use serde_json::json;
use vodfleet_proto::command::{
    AudioCodec, Cut, Range, Transcode, VideoCodec, Watermark, WatermarkPosition,
    DEFAULT_MIN_WINDOW_MS, MAX_BODY_BYTES,
};
use vodfleet_proto::{parse_task_entry, Cmd, Command, RejectKind};

mod body;
mod seed;

/// The refused bodies, one per line (kept unformatted so each case stays one line).
#[rustfmt::skip]
mod bad_input;

use body::{
    baseline, expect_reject, fixture_with, fops, many_tasks, now_ms, padded_to, parse_ok,
    transcode_of, with, Del, Set,
};
use seed::{
    assert_seed_forwards, assert_seed_sources, ABS_FROM_MS, ABS_TO_MS, RESUME, START, TERMINATE,
    TIMED_END_MS, TIMED_START, TIMED_START_MS, TIMED_TERMINATE, TRANSCODE, UPDATE,
};

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
fn vod_rtsp_and_s3_sources_are_accepted() {
    let c = parse_ok(&with(vec![
        Set("/list/0/src/0/url", json!("vod://movies/final.mp4")),
        Set("/list/0/src/1/url", json!("rtsp://cam.example.com/stream1")),
        Set("/list/0/src/2/url", json!("s3://media/2024/final.mp4")),
    ]));
    assert_eq!(c.tasks[0].sources[0].url, "vod://movies/final.mp4");
    assert_eq!(c.tasks[0].sources[1].url, "rtsp://cam.example.com/stream1");
    assert_eq!(c.tasks[0].sources[2].url, "s3://media/2024/final.mp4");
}

#[test]
fn an_s3_source_without_an_object_key_is_refused_by_name() {
    for url in ["s3://media", "s3://media/"] {
        expect_reject(
            with(vec![Set("/list/0/src/0/url", json!(url))]),
            "list[0].src[0].url",
            "s3://BUCKET/KEY",
        );
    }
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
