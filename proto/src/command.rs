//! The command contract (docs/contract.md): seed-001 bodies validated into typed commands.
//!
//! Validation is split in two: [`parse_command`] checks everything that does not
//! depend on the clock (shape, types, limits, value syntax, codec carriage), and
//! [`Command::check_timing`] checks `start`/`end` against "now", so that a stored
//! command can be re-validated later without re-parsing.

use crate::error::{FieldError, FieldPath};
use crate::wire::{self, Lenient};
use serde::{Deserialize, Serialize};

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

/// Parses and validates a whole command body (the seed-001 JSON).
pub fn parse_command(body: &[u8]) -> Result<Command, FieldError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(FieldError::new(
            "",
            format!(
                "body is {} bytes; the limit is {MAX_BODY_BYTES}",
                body.len()
            ),
        ));
    }
    require_objects(body, true)?;
    let raw: wire::Body = deserialize(body)?;
    let root = FieldPath::root();
    let cmd = match raw.cmd.0.as_str() {
        "1" => Cmd::Start,
        "2" => Cmd::Terminate,
        "3" => Cmd::Update,
        "5" => Cmd::Resume,
        other => {
            return Err(root.key("cmd").err(format!(
                "unknown command {other:?}; expected \"1\" (start), \"2\" (terminate), \"3\" (update list) or \"5\" (resume)"
            )))
        }
    };
    if raw.kind != "video" {
        return Err(root
            .key("type")
            .err(format!("must be \"video\", got {:?}", raw.kind)));
    }
    let callback_url = match raw.transcallbackurl.as_deref() {
        None | Some("") => None,
        Some(u) => Some(check_url(
            &root.key("transcallbackurl"),
            u,
            &["http", "https"],
        )?),
    };
    let list = root.key("list");
    if raw.list.is_empty() {
        return Err(list.err("must name at least one task"));
    }
    if raw.list.len() > MAX_TASKS {
        return Err(list.err(format!(
            "has {} tasks; the limit is {MAX_TASKS}",
            raw.list.len()
        )));
    }
    let mut warnings = Vec::new();
    let mut tasks = Vec::with_capacity(raw.list.len());
    for (i, t) in raw.list.into_iter().enumerate() {
        let spec = task(cmd, &list.index(i), t, &mut warnings)?;
        if tasks.iter().any(|o: &TaskSpec| o.id == spec.id) {
            return Err(list
                .index(i)
                .key("id")
                .err(format!("task id {:?} appears twice", spec.id)));
        }
        tasks.push(spec);
    }
    Ok(Command {
        cmd,
        callback_url,
        tasks,
        warnings,
    })
}

/// Parses one `list[]` entry as a start command (what `vodfleet-worker play` reads).
pub fn parse_task_entry(body: &[u8]) -> Result<(TaskSpec, Vec<Warning>), FieldError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(FieldError::new(
            "",
            format!("body is over {MAX_BODY_BYTES} bytes"),
        ));
    }
    require_objects(body, false)?;
    let raw: wire::Task = deserialize(body)?;
    let mut warnings = Vec::new();
    let spec = task(Cmd::Start, &FieldPath::root(), raw, &mut warnings)?;
    Ok((spec, warnings))
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

/// serde's derived structs also accept JSON arrays by position; the contract is
/// objects with named fields, so refuse an array wherever an object belongs.
fn require_objects(body: &[u8], whole_body: bool) -> Result<(), FieldError> {
    use serde_json::Value;
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Ok(()); // syntax errors are reported, with their position, by `deserialize`
    };
    fn object(v: &Value, at: &FieldPath) -> Result<(), FieldError> {
        match v {
            Value::Object(_) | Value::Null => Ok(()),
            _ => Err(at.err("must be a JSON object")),
        }
    }
    fn each(v: &Value, key: &str, at: &FieldPath) -> Result<(), FieldError> {
        if let Some(Value::Array(items)) = v.get(key) {
            for (i, item) in items.iter().enumerate() {
                object(item, &at.key(key).index(i))?;
            }
        }
        Ok(())
    }
    let task = |t: &Value, at: &FieldPath| -> Result<(), FieldError> {
        object(t, at)?;
        each(t, "src", at)?;
        each(t, "forward", at)?;
        for k in ["extendParam", "fops"] {
            if let Some(x) = t.get(k) {
                object(x, &at.key(k))?;
            }
        }
        Ok(())
    };
    let root = FieldPath::root();
    if !whole_body {
        return task(&v, &root);
    }
    object(&v, &root)?;
    if let Some(Value::Array(list)) = v.get("list") {
        for (i, t) in list.iter().enumerate() {
            task(t, &root.key("list").index(i))?;
        }
    }
    Ok(())
}

fn deserialize<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FieldError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let mut path = FieldPath::root();
        for seg in e.path().iter() {
            path = match seg {
                serde_path_to_error::Segment::Seq { index } => path.index(*index),
                serde_path_to_error::Segment::Map { key } => path.key(key),
                serde_path_to_error::Segment::Enum { variant } => path.key(variant),
                serde_path_to_error::Segment::Unknown => path,
            };
        }
        let inner = e.inner();
        let mut msg = inner.to_string();
        if let Some(cut) = msg.find(" at line ") {
            msg.truncate(cut);
        }
        if inner.is_syntax() || inner.is_eof() {
            return FieldError::new("", format!("body is not valid JSON: {msg}"));
        }
        // An unknown key is already the last segment of the path (it failed as a key).
        if msg.starts_with("unknown field `") {
            return path.err("unknown field");
        }
        // serde names a missing key only in the message: lift it into the path.
        if let Some(name) = msg
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            return path.key(name).err("is required");
        }
        path.err(msg)
    })?;
    // Like serde_json::from_slice: anything after the value (a second body, junk) is refused.
    de.end().map_err(|e| {
        let mut msg = e.to_string();
        if let Some(cut) = msg.find(" at line ") {
            msg.truncate(cut);
        }
        FieldError::new("", format!("body is not valid JSON: {msg}"))
    })?;
    Ok(value)
}

fn task(
    cmd: Cmd,
    at: &FieldPath,
    t: wire::Task,
    warnings: &mut Vec<Warning>,
) -> Result<TaskSpec, FieldError> {
    let id = t.id.0;
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(at
            .key("id")
            .err(format!("must be 1 to {MAX_ID_LEN} characters")));
    }
    // Task ids become Redis keys and log fields: keep them to a safe alphabet.
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(at
            .key("id")
            .err("may contain only letters, digits and - _ . :"));
    }

    let sources = match cmd {
        // cmd 2 carries `src: [{"url": ""}]` in the seed; it names no media.
        Cmd::Terminate => Vec::new(),
        // cmd 5 continues the recorded list; a `src` sent with it (the seed's example
        // has one) is checked but not used, and may be left out.
        Cmd::Resume if t.src.is_empty() => Vec::new(),
        _ => {
            let p = at.key("src");
            if t.src.is_empty() {
                return Err(p.err("must list at least one source"));
            }
            if t.src.len() > MAX_SOURCES {
                return Err(p.err(format!(
                    "has {} sources; the limit is {MAX_SOURCES}",
                    t.src.len()
                )));
            }
            t.src
                .into_iter()
                .enumerate()
                .map(|(i, s)| source(&p.index(i), s))
                .collect::<Result<_, _>>()?
        }
    };

    let fp = at.key("forward");
    if t.forward.is_empty() && cmd != Cmd::Update {
        return Err(fp.err("must list at least one destination"));
    }
    if t.forward.len() > MAX_FORWARDS {
        return Err(fp.err(format!(
            "has {} destinations; the limit is {MAX_FORWARDS}",
            t.forward.len()
        )));
    }
    let mut forwards: Vec<ForwardSpec> = Vec::with_capacity(t.forward.len());
    for (i, f) in t.forward.into_iter().enumerate() {
        let p = fp.index(i);
        let url = check_url(&p.key("url"), &f.url, &["rtmp", "rtmps"])?;
        if forwards.iter().any(|o| o.url == url) {
            return Err(p.key("url").err("the same destination is listed twice"));
        }
        let reset_url = match f.reset_url {
            None => None,
            Some(_) if cmd != Cmd::Resume => {
                return Err(p
                    .key("resetUrl")
                    .err("is only allowed with cmd \"5\" (resume)"))
            }
            Some(r) if r.is_empty() => None,
            Some(r) => Some(check_url(&p.key("resetUrl"), &r, &["rtmp", "rtmps"])?),
        };
        forwards.push(ForwardSpec { url, reset_url });
    }

    let ep = at.key("extendParam");
    let (mut loop_count, mut first_item, mut callback_file_info, mut wait_current) =
        (0, 0, false, false);
    if let Some(e) = t.extend_param {
        if cmd == Cmd::Resume {
            return Err(ep.err(
                "is not allowed with cmd \"5\": a resume continues with the recorded settings",
            ));
        }
        if cmd == Cmd::Terminate {
            return Err(ep.err("is not allowed with cmd \"2\" (terminate)"));
        }
        if let Some(v) = &e.loop_count {
            loop_count = uint(&ep.key("loop"), v, 0, MAX_LOOP)?;
        }
        if let Some(v) = &e.index {
            let n = sources.len().max(1) as u32;
            first_item = uint(&ep.key("index"), v, 1, n)? as usize - 1;
        }
        if let Some(v) = &e.call_back_file_info {
            callback_file_info = uint(&ep.key("callBackFileInfo"), v, 0, 1)? == 1;
        }
        if let Some(v) = &e.wait_crt_url_finish {
            if cmd != Cmd::Update {
                return Err(ep
                    .key("waitCrtUrlFinish")
                    .err("is only meaningful with cmd \"3\" (update list)"));
            }
            wait_current = uint(&ep.key("waitCrtUrlFinish"), v, 0, 1)? == 1;
        }
    }

    let (start_ms, end_ms) = (
        t.start
            .as_ref()
            .map(|v| timestamp(&at.key("start"), v))
            .transpose()?,
        t.end
            .as_ref()
            .map(|v| timestamp(&at.key("end"), v))
            .transpose()?,
    );
    if cmd == Cmd::Terminate && (start_ms.is_some() || end_ms.is_some()) {
        let f = if start_ms.is_some() { "start" } else { "end" };
        return Err(at.key(f).err("is not allowed with cmd \"2\" (terminate)"));
    }
    if let (Some(s), Some(e)) = (start_ms, end_ms) {
        if e <= s {
            return Err(at.key("end").err("must be after start"));
        }
    }

    let transcode = match t.fops {
        None => None,
        Some(_) if cmd == Cmd::Resume => {
            return Err(at
                .key("fops")
                .err("is not allowed with cmd \"5\": a resume cannot change transcoding"))
        }
        Some(_) if cmd == Cmd::Terminate => {
            return Err(at
                .key("fops")
                .err("is not allowed with cmd \"2\" (terminate)"))
        }
        Some(f) => fops(&at.key("fops"), f, warnings)?,
    };
    Ok(TaskSpec {
        id,
        sources,
        forwards,
        loop_count,
        first_item,
        callback_file_info,
        wait_current,
        start_ms,
        end_ms,
        transcode,
    })
}

fn source(at: &FieldPath, s: wire::Src) -> Result<SourceSpec, FieldError> {
    let url = check_url(&at.key("url"), &s.url, &["http", "https", "rtsp", "vod"])?;
    if let Some(name) = url.strip_prefix("vod://") {
        check_vod_name(&at.key("url"), name)?;
    }
    let cut = match (s.relofftime.as_deref(), s.absofftime.as_deref()) {
        (Some(r), _) if !r.is_empty() => {
            Cut::Relative(ranges(&at.key("relofftime"), r, parse_seconds)?)
        }
        (_, Some(a)) if !a.is_empty() => {
            Cut::Absolute(ranges(&at.key("absofftime"), a, parse_civil)?)
        }
        _ => Cut::Whole,
    };
    let watermark = match (s.wmimage, s.wmposition) {
        (None, None) => None,
        (Some(img), pos) => {
            let image_url = check_url(&at.key("wmimage"), &img, &["http", "https", "vod"])?;
            let position = match pos.as_deref() {
                None => WatermarkPosition::TopLeft,
                Some(p) => watermark_position(p).ok_or_else(|| {
                    at.key("wmposition").err(format!(
                        "unknown position {p:?}; expected one of TOP_LEFT, TOP_CENTER, TOP_RIGHT, CENTER_LEFT, CENTER, CENTER_RIGHT, BOTTOM_LEFT, BOTTOM_CENTER, BOTTOM_RIGHT"
                    ))
                })?,
            };
            Some(Watermark {
                image_url,
                position,
            })
        }
        (None, Some(_)) => {
            return Err(at
                .key("wmimage")
                .err("is required when wmposition is given"))
        }
    };
    Ok(SourceSpec {
        url,
        cut,
        watermark,
    })
}

fn watermark_position(p: &str) -> Option<WatermarkPosition> {
    use WatermarkPosition::*;
    Some(match p {
        "TOP_LEFT" => TopLeft,
        "TOP_CENTER" => TopCenter,
        "TOP_RIGHT" => TopRight,
        "CENTER_LEFT" => CenterLeft,
        "CENTER" => Center,
        "CENTER_RIGHT" => CenterRight,
        "BOTTOM_LEFT" => BottomLeft,
        "BOTTOM_CENTER" => BottomCenter,
        "BOTTOM_RIGHT" => BottomRight,
        _ => return None,
    })
}

fn fops(
    at: &FieldPath,
    f: wire::Fops,
    warnings: &mut Vec<Warning>,
) -> Result<Option<Transcode>, FieldError> {
    let (mut width, mut height, mut video_kbps) = (None, None, None);
    if let Some(p) = f.preset.as_deref() {
        let (w, h, b) = preset(p).ok_or_else(|| {
            at.key("preset").err(format!(
                "unknown preset {p:?}; expected 360p, 480p, 720p or 1080p"
            ))
        })?;
        (width, height, video_kbps) = (Some(w), Some(h), Some(b));
    }
    let (mut res, mut fps) = (f.res.map(|v| v.0), f.fps.map(|v| v.0));
    // The seed's own example sends "res":"25","fps":"1280x640". The shapes cannot be
    // confused, so take them the right way round and say so.
    if let (Some(r), Some(p)) = (&res, &fps) {
        if parse_res(r).is_none() && parse_res(p).is_some() && parse_fps(r).is_some() {
            warnings.push(Warning {
                field: at.as_str().to_owned(),
                message: format!(
                    "res {r:?} and fps {p:?} look swapped; using res {p:?} and fps {r:?}"
                ),
            });
            std::mem::swap(&mut res, &mut fps);
        }
    }
    if let Some(r) = res.as_deref().filter(|r| !r.is_empty()) {
        let (w, h) = parse_res(r).ok_or_else(|| {
            at.key("res").err(format!(
                "{r:?} is not WIDTHxHEIGHT with even sides from 16 to 4096"
            ))
        })?;
        (width, height) = (Some(w), Some(h));
    }
    let fps = match fps.as_deref().filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => Some(parse_fps(p).ok_or_else(|| {
            at.key("fps")
                .err(format!("{p:?} is not a frame rate from 1 to 120"))
        })?),
    };
    if let Some(b) = &f.bps {
        if !b.0.is_empty() {
            video_kbps = Some(uint(&at.key("bps"), b, 50, 100_000)?);
        }
    }
    let vcodec = match f.vcodec.as_deref() {
        None | Some("") | Some("libx264") | Some("h264") | Some("x264") => VideoCodec::H264,
        Some(other) => {
            return Err(at.key("vcodec").err(format!(
                "{other:?} cannot be carried over RTMP/FLV, which carries H.264 video; use libx264"
            )))
        }
    };
    let acodec = match f.acodec.as_deref() {
        None | Some("") | Some("aac") | Some("libfaac") | Some("libfdk_aac") => AudioCodec::Aac,
        Some("libmp3lame") | Some("mp3") => AudioCodec::Mp3,
        Some(other) => {
            return Err(at.key("acodec").err(format!(
                "{other:?} cannot be carried over RTMP/FLV, which carries AAC or MP3 audio; use aac or libmp3lame"
            )))
        }
    };
    let any = width.is_some()
        || fps.is_some()
        || video_kbps.is_some()
        || f.vcodec.is_some()
        || f.acodec.is_some();
    Ok(any.then_some(Transcode {
        width,
        height,
        fps,
        video_kbps,
        vcodec,
        acodec,
    }))
}

fn parse_res(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once(['x', 'X'])?;
    let (w, h): (u32, u32) = (w.trim().parse().ok()?, h.trim().parse().ok()?);
    let ok = |v: u32| (16..=4096).contains(&v) && v % 2 == 0;
    (ok(w) && ok(h)).then_some((w, h))
}

fn parse_fps(s: &str) -> Option<(u32, u32)> {
    let (num, den) = match s.split_once('.') {
        None => (s.parse::<u32>().ok()?, 1),
        Some((i, f)) if !f.is_empty() && f.len() <= 3 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let den = 10u32.pow(f.len() as u32);
            (
                i.parse::<u32>()
                    .ok()?
                    .checked_mul(den)?
                    .checked_add(f.parse::<u32>().ok()?)?,
                den,
            )
        }
        _ => return None,
    };
    (num >= den && num <= 120 * den).then_some((num, den))
}

fn uint(at: &FieldPath, v: &Lenient, min: u32, max: u32) -> Result<u32, FieldError> {
    let n: u64 =
        v.0.parse()
            .map_err(|_| at.err(format!("{:?} is not a whole number", v.0)))?;
    if n < min as u64 || n > max as u64 {
        return Err(at.err(format!("{n} is out of range {min}..={max}")));
    }
    Ok(n as u32)
}

fn timestamp(at: &FieldPath, v: &Lenient) -> Result<u64, FieldError> {
    if v.0.len() != 13 || !v.0.bytes().all(|b| b.is_ascii_digit()) {
        return Err(at.err(format!(
            "{:?} is not a 13-digit Unix timestamp in milliseconds",
            v.0
        )));
    }
    Ok(v.0.parse().expect("13 digits fit in u64"))
}

fn check_url(at: &FieldPath, raw: &str, schemes: &[&str]) -> Result<String, FieldError> {
    if raw.is_empty() {
        return Err(at.err("must not be empty"));
    }
    if raw.len() > MAX_URL_LEN {
        return Err(at.err(format!(
            "is {} characters; the limit is {MAX_URL_LEN}",
            raw.len()
        )));
    }
    let u = url::Url::parse(raw).map_err(|e| at.err(format!("is not a URL: {e}")))?;
    if !schemes.contains(&u.scheme()) {
        return Err(at.err(format!(
            "scheme {:?} is not supported here; expected one of {}",
            u.scheme(),
            schemes.join(", ")
        )));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(at.err("has no host"));
    }
    Ok(raw.to_owned())
}

/// `vod://NAME` names a file under the media root; nothing may climb out of it.
fn check_vod_name(at: &FieldPath, name: &str) -> Result<(), FieldError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.contains('\\')
        || name.contains('\0')
        || name.contains('?')
        || name.contains('%')
        || name
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if bad {
        return Err(at.err("vod:// names must be a relative path inside the media root (no '..', '%', empty segments or leading '/')"));
    }
    Ok(())
}

fn ranges(
    at: &FieldPath,
    s: &str,
    parse: fn(&str) -> Option<u64>,
) -> Result<Vec<Range>, FieldError> {
    let parts: Vec<&str> = s.split(';').filter(|p| !p.trim().is_empty()).collect();
    if parts.is_empty() {
        return Err(at.err("names no range"));
    }
    if parts.len() > MAX_RANGES {
        return Err(at.err(format!(
            "has {} ranges; the limit is {MAX_RANGES}",
            parts.len()
        )));
    }
    parts
        .into_iter()
        .map(|p| {
            let (a, b) = p
                .split_once('-')
                .ok_or_else(|| at.err(format!("range {p:?} is not START-END")))?;
            let (a, b) = (
                parse(a.trim())
                    .ok_or_else(|| at.err(format!("range {p:?}: {a:?} is not a valid time")))?,
                parse(b.trim())
                    .ok_or_else(|| at.err(format!("range {p:?}: {b:?} is not a valid time")))?,
            );
            if b <= a {
                return Err(at.err(format!("range {p:?} ends before it starts")));
            }
            Ok(Range {
                start_ms: a,
                end_ms: b,
            })
        })
        .collect()
}

/// Seconds, possibly fractional (millisecond precision), as milliseconds.
fn parse_seconds(s: &str) -> Option<u64> {
    let (i, f) = s.split_once('.').unwrap_or((s, ""));
    if i.is_empty()
        || !i.bytes().all(|b| b.is_ascii_digit())
        || f.len() > 3
        || !f.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac = format!("{f:0<3}").parse::<u64>().ok()?;
    i.parse::<u64>().ok()?.checked_mul(1000)?.checked_add(frac)
}

/// `yyyymmddHHMMSS` (UTC) as Unix milliseconds.
fn parse_civil(s: &str) -> Option<u64> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(4..6)?,
        n(6..8)?,
        n(8..10)?,
        n(10..12)?,
        n(12..14)?,
    );
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || d == 0
        || d > dim[mo as usize - 1]
        || h > 23
        || mi > 59
        || se > 59
    {
        return None;
    }
    Some(
        (days_from_civil(y as i64, mo, d) as u64 * 86_400 + (h * 3600 + mi * 60 + se) as u64)
            * 1000,
    )
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time_is_utc_unix() {
        assert_eq!(parse_civil("19700101000000"), Some(0));
        assert_eq!(parse_civil("20181022153000"), Some(1_540_222_200_000));
        assert_eq!(parse_civil("20180230000000"), None);
    }

    #[test]
    fn seconds_allow_millisecond_fractions() {
        assert_eq!(parse_seconds("300"), Some(300_000));
        assert_eq!(parse_seconds("1.5"), Some(1_500));
        assert_eq!(parse_seconds("1.2345"), None);
        assert_eq!(parse_seconds("-1"), None);
    }

    #[test]
    fn fps_accepts_decimals() {
        assert_eq!(parse_fps("25"), Some((25, 1)));
        assert_eq!(parse_fps("29.97"), Some((2997, 100)));
        assert_eq!(parse_fps("0"), None);
        assert_eq!(parse_fps("1280x640"), None);
    }
}
