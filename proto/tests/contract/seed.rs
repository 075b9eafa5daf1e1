//! The seed's example bodies (`tests/fixtures/seed001/`, verbatim) and the
//! values they mean.

use vodfleet_proto::command::{Cut, Range};
use vodfleet_proto::Command;

pub const START: &str = include_str!("../fixtures/seed001/01_start.json");
pub const TERMINATE: &str = include_str!("../fixtures/seed001/02_terminate.json");
pub const TIMED_START: &str = include_str!("../fixtures/seed001/03_timed_start.json");
pub const TIMED_TERMINATE: &str = include_str!("../fixtures/seed001/04_timed_terminate.json");
pub const UPDATE: &str = include_str!("../fixtures/seed001/05_update_files.json");
pub const RESUME: &str = include_str!("../fixtures/seed001/06_resume.json");
pub const TRANSCODE: &str = include_str!("../fixtures/seed001/07_transcode_watermark.json");

/// 20181022153000 and 20181022155000, UTC, as Unix milliseconds.
pub const ABS_FROM_MS: u64 = 1_540_222_200_000;
pub const ABS_TO_MS: u64 = 1_540_223_400_000;
/// The timed example's `start` / `end`.
pub const TIMED_START_MS: u64 = 1_540_216_800_000;
pub const TIMED_END_MS: u64 = 1_540_220_400_000;

pub fn assert_seed_sources(c: &Command, names: [&str; 3]) {
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

pub fn assert_seed_forwards(c: &Command) {
    let urls: Vec<&str> = c.tasks[0].forwards.iter().map(|f| f.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "rtmp://www.push1.com/live/test",
            "rtmp://www.push2.com/live/test2"
        ]
    );
}
