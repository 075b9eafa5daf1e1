//! The command line (clap). Building bodies from it is `body.rs`'s job.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// vodctl: drive a vodfleet (start, stop, update, resume) and look at it (status, watch).
///
/// Configuration comes from the environment: VODFLEET_API_URL (or --api-url),
/// VODFLEET_API_KEYS (`id:secret,...`; the first key signs), VODFLEET_AMQP_URL
/// (for --via amqp), VODFLEET_MIN_WINDOW_MS (the local check of `end`).
///
/// Exit status: 0 the fleet accepted (HTTP 200), 1 it refused or could not be
/// reached, or the command failed the local check (nothing was sent), 2 usage.
#[derive(Debug, Parser)]
#[command(name = "vodctl", version, about, long_about)]
pub struct Cli {
    /// How commands reach the fleet: the coordinator's HTTP API, or the
    /// `vodfleet.commands` queue (waits up to 10 s for the coordinator's reply,
    /// which comes after the command is applied).
    #[arg(long, value_enum, default_value_t = Via::Http, global = true)]
    pub via: Via,

    /// Base URL of a coordinator's HTTP API.
    #[arg(
        long,
        env = "VODFLEET_API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub api_url: String,

    #[command(subcommand)]
    pub cmd: Sub,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    Http,
    Amqp,
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Start (or restart) a task: cmd "1".
    Start(Box<StartArgs>),
    /// Stop some or all of a task's destinations: cmd "2".
    ///
    /// The destinations must be named in full: the API never shows stream keys,
    /// so vodctl cannot look them up. Stopping every destination stops the task
    /// and records its position for `resume` (48 h).
    Stop(StopArgs),
    /// Replace a task's list of sources: cmd "3".
    Update(UpdateArgs),
    /// Resume a stopped task from its recorded position: cmd "5".
    Resume(ResumeArgs),
    /// Show every task as a table, or one task in detail.
    Status(StatusArgs),
    /// A live view of the fleet or of one task, redrawn every second; Ctrl-C quits.
    Watch(WatchArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Task id (letters, digits, - _ . :).
    #[arg(long, required_unless_present = "file")]
    pub id: Option<String>,
    /// A source, in play order (http(s) mp4/flv/m3u8, rtsp://, vod://NAME). Repeat for more.
    #[arg(long = "src", value_name = "URL", required_unless_present = "file")]
    pub src: Vec<String>,
    /// An RTMP(S) destination. Repeat for more.
    #[arg(long = "forward", value_name = "URL", required_unless_present = "file")]
    pub forward: Vec<String>,
    #[command(flatten)]
    pub cuts: CutArgs,
    /// Play the whole list N times (0 or absent: until stopped or --end).
    #[arg(long = "loop", value_name = "N")]
    pub loop_count: Option<u32>,
    /// Start at the Nth source (1-based).
    #[arg(long, value_name = "N")]
    pub index: Option<u32>,
    /// Ask for a callback at the start of every item (callBackFileInfo 1).
    #[arg(long)]
    pub callback_file_info: bool,
    /// Start time: a 13-digit Unix timestamp in ms, or +DURATION from now (+90s, +10m, +2h).
    #[arg(long, value_name = "MS", value_parser = parse_time)]
    pub start: Option<u64>,
    /// End time, like --start; at least 5 min after the start and after now.
    #[arg(long, value_name = "MS", value_parser = parse_time)]
    pub end: Option<u64>,
    #[command(flatten)]
    pub fops: FopsArgs,
    /// Where the fleet POSTs this task's callbacks (transcallbackurl).
    #[arg(long, value_name = "URL")]
    pub callback: Option<String>,
    /// Send this seed-001 body as it is (checked locally first) instead of building one.
    #[arg(long, value_name = "BODY.json", conflicts_with_all = [
        "id", "src", "forward", "relofftime", "absofftime", "loop_count", "index",
        "callback_file_info", "start", "end", "preset", "res", "fps", "bps", "vcodec",
        "acodec", "callback",
    ])]
    pub file: Option<PathBuf>,
}

/// Per-source time ranges. SRCIDX is the 1-based position of the --src
/// (like --index), so `--relofftime 2=300-500` cuts the second source.
#[derive(Debug, Args, Default)]
pub struct CutArgs {
    /// Play only these ranges of one source, in seconds: SRCIDX=A-B[;C-D...].
    #[arg(long, value_name = "SRCIDX=RANGES", value_parser = parse_indexed)]
    pub relofftime: Vec<(usize, String)>,
    /// Wall-clock ranges of one source (UTC): SRCIDX=yyyymmddHHMMSS-yyyymmddHHMMSS[;...].
    #[arg(long, value_name = "SRCIDX=RANGES", value_parser = parse_indexed)]
    pub absofftime: Vec<(usize, String)>,
}

/// Transcoding (`fops`). --res/--fps/--bps override what --preset sets.
#[derive(Debug, Args, Default)]
pub struct FopsArgs {
    /// 360p, 480p, 720p or 1080p (640x360@400k ... 1920x1080@2000k).
    #[arg(long)]
    pub preset: Option<String>,
    /// Output size, WIDTHxHEIGHT.
    #[arg(long, value_name = "WxH")]
    pub res: Option<String>,
    /// Output frame rate (25, 29.97, ...).
    #[arg(long, value_name = "N")]
    pub fps: Option<String>,
    /// Video bit rate in kbit/s.
    #[arg(long, value_name = "K")]
    pub bps: Option<u32>,
    /// Video codec (RTMP carries H.264: libx264).
    #[arg(long)]
    pub vcodec: Option<String>,
    /// Audio codec (aac or libmp3lame).
    #[arg(long)]
    pub acodec: Option<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[arg(long)]
    pub id: String,
    /// A destination to stop, as given at start (with its stream key). Repeat for more.
    #[arg(long = "forward", value_name = "URL", required = true)]
    pub forward: Vec<String>,
    #[arg(long, value_name = "URL")]
    pub callback: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[arg(long)]
    pub id: String,
    /// The new list of sources, in play order.
    #[arg(long = "src", value_name = "URL", required = true)]
    pub src: Vec<String>,
    #[command(flatten)]
    pub cuts: CutArgs,
    /// Switch after the current item ends instead of now (waitCrtUrlFinish 1).
    #[arg(long)]
    pub wait_current: bool,
    #[arg(long, value_name = "URL")]
    pub callback: Option<String>,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[arg(long)]
    pub id: String,
    /// A destination of the stopped task. Repeat for more. (The fleet resumes
    /// every recorded destination; naming one matters only with --reset.)
    #[arg(long = "forward", value_name = "URL")]
    pub forward: Vec<String>,
    /// Publish to NEW instead of OLD from now on: OLD=NEW (both full rtmp(s) URLs).
    #[arg(long, value_name = "OLD=NEW", value_parser = parse_reset)]
    pub reset: Vec<(String, String)>,
    /// Sources to put in the body. The fleet resumes the recorded list and
    /// ignores these; the contract requires at least one, so vodctl sends a
    /// placeholder when none is given.
    #[arg(long = "src", value_name = "URL")]
    pub src: Vec<String>,
    #[arg(long, value_name = "URL")]
    pub callback: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One task's id; without it, every task.
    pub id: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// One task's id; without it, the whole fleet.
    pub id: Option<String>,
    /// Seconds between refreshes (at least 1: the API takes one signed read per key per second).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
}

/// `SRCIDX=VALUE` with a 1-based index → (0-based index, value).
fn parse_indexed(s: &str) -> Result<(usize, String), String> {
    let (i, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not SRCIDX=RANGES (e.g. 1=300-500;900-960)"))?;
    let i: usize = i
        .trim()
        .parse()
        .ok()
        .filter(|&i| i >= 1)
        .ok_or_else(|| format!("{i:?} is not a source number (1 is the first --src)"))?;
    Ok((i - 1, v.trim().to_owned()))
}

/// `OLD=NEW`. URLs may hold `=` in their query, so split where NEW's scheme begins.
fn parse_reset(s: &str) -> Result<(String, String), String> {
    let at = ["=rtmp://", "=rtmps://"]
        .iter()
        .filter_map(|m| s.find(m))
        .min()
        .or_else(|| s.find('='))
        .ok_or_else(|| "expected OLD=NEW (two rtmp:// URLs)".to_owned())?;
    let (old, new) = (&s[..at], &s[at + 1..]);
    if old.is_empty() || new.is_empty() {
        return Err("expected OLD=NEW (two rtmp:// URLs)".into());
    }
    Ok((old.to_owned(), new.to_owned()))
}

/// A 13-digit Unix ms timestamp, `now`, or `+N[s|m|h|d]` from now.
fn parse_time(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(crate::now_ms());
    }
    if let Some(rel) = s.strip_prefix('+') {
        let (num, unit) =
            rel.split_at(rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len()));
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: expected +N followed by s, m, h or d"))?;
        let secs = match unit {
            "" | "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
        };
        return Ok(crate::now_ms() + secs * 1000);
    }
    if s.len() == 13 && s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(s.parse().expect("13 digits fit"));
    }
    Err(format!(
        "{s:?} is not a 13-digit Unix timestamp in ms, \"now\", or +DURATION (+90s, +10m, +2h)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_splits_where_the_new_url_begins() {
        assert_eq!(
            parse_reset("rtmp://a/live/k?t=1=rtmp://b/live/k2").unwrap(),
            ("rtmp://a/live/k?t=1".into(), "rtmp://b/live/k2".into())
        );
        assert_eq!(
            parse_reset("rtmp://a/x=rtmps://b/y").unwrap(),
            ("rtmp://a/x".into(), "rtmps://b/y".into())
        );
        assert!(parse_reset("rtmp://a/x").is_err());
    }

    #[test]
    fn indexed_values_are_one_based() {
        assert_eq!(parse_indexed("2=1-2;3-4").unwrap(), (1, "1-2;3-4".into()));
        assert!(parse_indexed("0=1-2").is_err());
        assert!(parse_indexed("1-2").is_err());
    }

    #[test]
    fn times_are_absolute_or_relative() {
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        let now = crate::now_ms();
        let t = parse_time("+10m").unwrap();
        assert!(t >= now + 600_000 && t < now + 660_000);
        assert!(parse_time("170000000000").is_err());
        assert!(parse_time("+10y").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
