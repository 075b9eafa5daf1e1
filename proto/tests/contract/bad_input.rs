//! The bad-input cases: each checks the exact `field` path and part of the `reason`.

use super::body::sources;
use super::*;
use serde_json::Value;

/// One refused body per test: `bad!(name, body, field, reason fragment)`.
macro_rules! bad {
    ($name:ident, $body:expr, $field:expr, $reason:expr) => {
        #[test]
        fn $name() {
            expect_reject($body, $field, $reason);
        }
    };
}

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
