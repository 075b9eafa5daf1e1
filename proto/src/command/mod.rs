//! The command contract (docs/contract.md): seed-001 bodies validated into typed commands.
//!
//! Validation is split in two: [`parse_command`] checks everything that does not
//! depend on the clock (shape, types, limits, value syntax, codec carriage), and
//! [`Command::check_timing`] checks `start`/`end` against "now", so that a stored
//! command can be re-validated later without re-parsing.
//!
//! Submodules: `body` (the whole body: JSON shape, `cmd`, `list[]`), `task` (one
//! `list[]` entry: sources, destinations, `extendParam`, start/end), `transcode`
//! (`fops`), `cut` (`relofftime`/`absofftime` ranges), `value` (numbers,
//! timestamps, URLs, `vod://` names).

mod body;
mod cut;
mod task;
mod transcode;
mod value;

use crate::error::{FieldError, FieldPath};
use serde::{Deserialize, Serialize};

pub use body::{parse_command, parse_task_entry};

/// Largest body accepted, in bytes (docs/contract.md#limits).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const MAX_TASKS: usize = 50;
pub const MAX_SOURCES: usize = 100;
pub const MAX_FORWARDS: usize = 10;
pub const MAX_RANGES: usize = 100;
pub const MAX_URL_LEN: usize = 2048;
pub const MAX_ID_LEN: usize = 128;
/// `extendParam.loop` above this is treated as a typo, not a wish.
pub const MAX_LOOP: u32 = 1_000_000;
/// The seed's rule: `end` at least five minutes after `start` and after now.
pub const DEFAULT_MIN_WINDOW_MS: u64 = 5 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmd {
    /// cmd "1": start (or restart) a task.
    Start,
    /// cmd "2": stop some or all of a task's destinations.
    Terminate,
    /// cmd "3": replace the list of sources.
    Update,
    /// cmd "5": resume from the recorded position.
    Resume,
}

impl Cmd {
    pub fn code(self) -> &'static str {
        match self {
            Cmd::Start => "1",
            Cmd::Terminate => "2",
            Cmd::Update => "3",
            Cmd::Resume => "5",
        }
    }
}

/// A validated command body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub cmd: Cmd,
    pub callback_url: Option<String>,
    pub tasks: Vec<TaskSpec>,
    /// Accepted oddities the producer should hear about (e.g. swapped `res`/`fps`).
    #[serde(default)]
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub field: String,
    pub message: String,
}

/// One entry of `list[]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub id: String,
    /// Empty for cmd 2 (terminate), where the seed sends `[{"url": ""}]`.
    pub sources: Vec<SourceSpec>,
    pub forwards: Vec<ForwardSpec>,
    /// 0 = until stopped or `end`; N = the whole list N times.
    pub loop_count: u32,
    /// 0-based index of the first item (the wire's `index` is 1-based).
    pub first_item: usize,
    pub callback_file_info: bool,
    /// cmd 3 only: switch after the current item instead of now.
    pub wait_current: bool,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub transcode: Option<Transcode>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSpec {
    pub url: String,
    pub cut: Cut,
    pub watermark: Option<Watermark>,
}

/// Which parts of an item play. `relofftime` wins over `absofftime` (seed 001).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cut {
    Whole,
    /// Offsets from the start of the item, in milliseconds, played in the order given.
    Relative(Vec<Range>),
    /// Wall-clock ranges (UTC, Unix milliseconds), resolved against the
    /// recording's start time when the item is opened.
    Absolute(Vec<Range>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    pub image_url: String,
    pub position: WatermarkPosition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatermarkPosition {
    TopLeft,
    TopCenter,
    TopRight,
    CenterLeft,
    Center,
    CenterRight,
    BottomLeft,
    BottomCenter,
    BottomRight,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardSpec {
    pub url: String,
    /// cmd 5 only: publish to this URL instead when resuming.
    pub reset_url: Option<String>,
}

/// Encoding settings from `fops`. Absent fields keep the source's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcode {
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Frames per second as a rational (`29.97` becomes 2997/100).
    pub fps: Option<(u32, u32)>,
    pub video_kbps: Option<u32>,
    pub vcodec: VideoCodec,
    pub acodec: AudioCodec,
}

impl Default for Transcode {
    /// H.264 and AAC, everything else as the source has it.
    fn default() -> Self {
        Transcode {
            width: None,
            height: None,
            fps: None,
            video_kbps: None,
            vcodec: VideoCodec::H264,
            acodec: AudioCodec::Aac,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VideoCodec {
    H264,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AudioCodec {
    Aac,
    Mp3,
}

/// The seed-003 ladder: `fops.preset` → (width, height, kbit/s).
pub fn preset(name: &str) -> Option<(u32, u32, u32)> {
    match name {
        "360p" => Some((640, 360, 400)),
        "480p" => Some((854, 480, 600)),
        "720p" => Some((1280, 720, 1000)),
        "1080p" => Some((1920, 1080, 2000)),
        _ => None,
    }
}

impl Command {
    /// The clock-dependent rules for `start`/`end`: 13-digit timestamps were checked
    /// at parse time; here `end` must be at least `min_window_ms` after `start`
    /// and after `now_ms`.
    pub fn check_timing(&self, now_ms: u64, min_window_ms: u64) -> Result<(), FieldError> {
        for (i, t) in self.tasks.iter().enumerate() {
            t.check_timing(
                &FieldPath::root().key("list").index(i),
                now_ms,
                min_window_ms,
            )?;
        }
        Ok(())
    }
}

impl TaskSpec {
    pub fn check_timing(
        &self,
        at: &FieldPath,
        now_ms: u64,
        min_window_ms: u64,
    ) -> Result<(), FieldError> {
        if let Some(end) = self.end_ms {
            let from = self.start_ms.unwrap_or(now_ms).max(now_ms);
            if end < from.saturating_add(min_window_ms) {
                return Err(at.key("end").err(format!(
                    "must be at least {} s after start and after now (end {end}, start {}, now {now_ms})",
                    min_window_ms / 1000,
                    self.start_ms.map_or("absent".into(), |s| s.to_string()),
                )));
            }
        }
        Ok(())
    }
}
