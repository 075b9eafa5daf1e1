//! What ffprobe and ffmpeg read from a file (normally what nginx recorded).

use serde_json::Value;
use std::path::Path;
use std::process::Command;

use crate::media::{ffmpeg, ffprobe};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Video,
    Audio,
    Other,
}

/// One packet, times in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pkt {
    pub kind: Kind,
    pub pts: f64,
    pub dts: f64,
    /// 0 when the container gives none.
    pub duration: f64,
    pub size: u64,
    pub key: bool,
}

fn run_json(args: &[&str], path: &Path) -> Value {
    let out = Command::new(ffprobe())
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("run ffprobe: {e}"));
    assert!(
        out.status.success(),
        "ffprobe {args:?} {} failed: {}\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ffprobe output is not JSON: {e}"))
}

fn num(v: &Value, field: &str) -> Option<f64> {
    match &v[field] {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// Every packet of `path`, in file order.
pub fn packets(path: &Path) -> Vec<Pkt> {
    assert!(path.exists(), "{} does not exist", path.display());
    let v = run_json(
        &[
            "-v",
            "error",
            "-show_entries",
            "packet=codec_type,pts_time,dts_time,duration_time,size,flags",
            "-of",
            "json",
        ],
        path,
    );
    let list = v["packets"].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|p| {
            let kind = match p["codec_type"].as_str() {
                Some("video") => Kind::Video,
                Some("audio") => Kind::Audio,
                _ => Kind::Other,
            };
            let dts = num(p, "dts_time");
            let pts = num(p, "pts_time");
            Pkt {
                kind,
                pts: pts.or(dts).unwrap_or(f64::NAN),
                dts: dts.or(pts).unwrap_or(f64::NAN),
                duration: num(p, "duration_time").unwrap_or(0.0),
                size: num(p, "size").unwrap_or(0.0) as u64,
                key: p["flags"].as_str().is_some_and(|f| f.contains('K')),
            }
        })
        .collect()
}

pub fn video(pkts: &[Pkt]) -> Vec<Pkt> {
    pkts.iter()
        .copied()
        .filter(|p| p.kind == Kind::Video)
        .collect()
}

pub fn audio(pkts: &[Pkt]) -> Vec<Pkt> {
    pkts.iter()
        .copied()
        .filter(|p| p.kind == Kind::Audio)
        .collect()
}

/// The typical packet duration of one stream: the median positive DTS step
/// (used when the container gives no packet durations).
pub fn typical_step(pkts: &[Pkt]) -> f64 {
    let mut d: Vec<f64> = pkts
        .windows(2)
        .map(|w| w[1].dts - w[0].dts)
        .filter(|d| *d > 0.0)
        .collect();
    if d.is_empty() {
        return 0.0;
    }
    d.sort_by(|a, b| a.total_cmp(b));
    d[d.len() / 2]
}

fn durations_or_step(pkts: &[Pkt]) -> impl Fn(&Pkt) -> f64 {
    let step = typical_step(pkts);
    move |p: &Pkt| if p.duration > 0.0 { p.duration } else { step }
}

/// Earliest presentation time of one stream's packets.
pub fn start(pkts: &[Pkt]) -> f64 {
    pkts.iter().map(|p| p.pts).fold(f64::INFINITY, f64::min)
}

/// End of one stream: the latest `pts + duration` (B-frames make the last packet
/// in decode order not the last one shown).
pub fn end(pkts: &[Pkt]) -> f64 {
    let dur = durations_or_step(pkts);
    pkts.iter()
        .map(|p| p.pts + dur(p))
        .fold(f64::NEG_INFINITY, f64::max)
}

/// Presented duration of one stream: [`end`] − [`start`]; 0 for no packets.
pub fn span(pkts: &[Pkt]) -> f64 {
    if pkts.is_empty() {
        0.0
    } else {
        end(pkts) - start(pkts)
    }
}

/// The first place where DTS goes backwards in one stream, if any.
pub fn dts_regression(pkts: &[Pkt]) -> Option<(usize, f64, f64)> {
    pkts.windows(2)
        .enumerate()
        .find(|(_, w)| w[1].dts < w[0].dts)
        .map(|(i, w)| (i + 1, w[0].dts, w[1].dts))
}

/// The largest DTS step between consecutive packets of one stream, and where.
pub fn max_dts_gap(pkts: &[Pkt]) -> (f64, f64) {
    pkts.windows(2)
        .map(|w| (w[1].dts - w[0].dts, w[0].dts))
        .fold((0.0, 0.0), |m, g| if g.0 > m.0 { g } else { m })
}

/// Average bitrate of one stream in kbit/s: payload bytes over presented duration.
pub fn kbps(pkts: &[Pkt]) -> f64 {
    let bytes: u64 = pkts.iter().map(|p| p.size).sum();
    let secs = span(pkts);
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 * 8.0 / secs / 1000.0
    }
}

/// Frames per second measured from the packets: (n − 1) over the DTS range.
pub fn measured_fps(pkts: &[Pkt]) -> f64 {
    if pkts.len() < 2 {
        return 0.0;
    }
    let first = pkts.iter().map(|p| p.dts).fold(f64::INFINITY, f64::min);
    let last = pkts.iter().map(|p| p.dts).fold(f64::NEG_INFINITY, f64::max);
    (pkts.len() - 1) as f64 / (last - first)
}

#[derive(Clone, Debug, Default)]
pub struct StreamInfo {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// `r_frame_rate` as a number (0 if unknown).
    pub r_frame_rate: f64,
    /// `avg_frame_rate` as a number (0 if unknown).
    pub avg_frame_rate: f64,
    pub sample_rate: u32,
    pub channels: u32,
}

fn rate(v: &Value) -> f64 {
    let s = v.as_str().unwrap_or("0/0");
    match s.split_once('/') {
        Some((n, d)) => {
            let (n, d): (f64, f64) = (n.parse().unwrap_or(0.0), d.parse().unwrap_or(0.0));
            if d == 0.0 {
                0.0
            } else {
                n / d
            }
        }
        None => s.parse().unwrap_or(0.0),
    }
}

fn stream_info(path: &Path, select: &str) -> StreamInfo {
    let v = run_json(
        &[
            "-v",
            "error",
            "-select_streams",
            select,
            "-show_entries",
            "stream=codec_name,width,height,r_frame_rate,avg_frame_rate,sample_rate,channels",
            "-of",
            "json",
        ],
        path,
    );
    let s = &v["streams"][0];
    assert!(
        s.is_object(),
        "{} has no {select} stream: {v}",
        path.display()
    );
    StreamInfo {
        codec: s["codec_name"].as_str().unwrap_or("").to_owned(),
        width: s["width"].as_u64().unwrap_or(0) as u32,
        height: s["height"].as_u64().unwrap_or(0) as u32,
        r_frame_rate: rate(&s["r_frame_rate"]),
        avg_frame_rate: rate(&s["avg_frame_rate"]),
        sample_rate: num(s, "sample_rate").unwrap_or(0.0) as u32,
        channels: s["channels"].as_u64().unwrap_or(0) as u32,
    }
}

/// The first video stream's codec, size and frame rates.
pub fn video_info(path: &Path) -> StreamInfo {
    stream_info(path, "v:0")
}

/// The first audio stream's codec, sample rate and channels.
pub fn audio_info(path: &Path) -> StreamInfo {
    stream_info(path, "a:0")
}

/// Everything ffmpeg complains about while decoding the whole file
/// (`ffmpeg -v error -i PATH -f null -`); empty for a clean stream.
pub fn decode_errors(path: &Path) -> String {
    let out = Command::new(ffmpeg())
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap_or_else(|e| panic!("run ffmpeg: {e}"));
    let mut s = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        s.push_str(&format!("\nffmpeg exited with {}", out.status));
    }
    s
}

/// A one-line summary of a recording for assertion messages.
pub fn summary(pkts: &[Pkt]) -> String {
    let (v, a) = (video(pkts), audio(pkts));
    format!(
        "video: {} pkts, {:.3}..{:.3} s (span {:.3}); audio: {} pkts, {:.3}..{:.3} s (span {:.3})",
        v.len(),
        if v.is_empty() { 0.0 } else { start(&v) },
        if v.is_empty() { 0.0 } else { end(&v) },
        span(&v),
        a.len(),
        if a.is_empty() { 0.0 } else { start(&a) },
        if a.is_empty() { 0.0 } else { end(&a) },
        span(&a),
    )
}

/// A recorded file read once: its packets split by stream.
#[derive(Clone, Debug)]
pub struct Recording {
    pub path: std::path::PathBuf,
    pub packets: Vec<Pkt>,
    pub video: Vec<Pkt>,
    pub audio: Vec<Pkt>,
}

impl Recording {
    pub fn read(path: &Path) -> Recording {
        let packets = packets(path);
        eprintln!("recording {}: {}", path.display(), summary(&packets));
        Recording {
            path: path.to_path_buf(),
            video: video(&packets),
            audio: audio(&packets),
            packets,
        }
    }

    /// Presented video duration: first video PTS to the end of the last frame.
    pub fn video_secs(&self) -> f64 {
        span(&self.video)
    }

    pub fn summary(&self) -> String {
        format!("{}: {}", self.path.display(), summary(&self.packets))
    }

    /// Panics unless video and audio DTS each never decrease.
    pub fn assert_monotonic(&self) {
        for (name, pkts) in [("video", &self.video), ("audio", &self.audio)] {
            if let Some((i, a, b)) = dts_regression(pkts) {
                panic!(
                    "{name} DTS goes back at packet {i}: {a:.3} -> {b:.3} s ({})",
                    self.summary()
                );
            }
        }
    }

    /// Panics if `stream` ("video" or "audio") has a DTS step of `max_s`
    /// seconds or more between consecutive packets: a hole on air.
    pub fn assert_no_gap(&self, stream: &str, max_s: f64) {
        let pkts = match stream {
            "video" => &self.video,
            "audio" => &self.audio,
            other => panic!("no stream {other:?} in a recording"),
        };
        let (gap, at) = max_dts_gap(pkts);
        assert!(
            gap < max_s,
            "{stream} gap of {gap:.3} s at {at:.3} s: {}",
            self.summary()
        );
    }

    /// Panics if ffmpeg reports anything while decoding the whole recording.
    pub fn assert_decodes_cleanly(&self) {
        let errors = decode_errors(&self.path);
        assert!(
            errors.trim().is_empty(),
            "decoding {} reports errors:\n{errors}",
            self.path.display()
        );
    }
}

/// Folds repeats: what a player's decoder saw change across the seams, in order.
pub fn runs(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut runs: Vec<String> = Vec::new();
    for v in values {
        if !v.is_empty() && runs.last() != Some(&v) {
            runs.push(v);
        }
    }
    runs
}

/// "W,H" of every decoded video frame, repeats folded.
pub fn picture_sizes(path: &Path) -> Vec<String> {
    let out = Command::new(ffprobe())
        .args(["-v", "error", "-select_streams", "v", "-show_entries"])
        .args(["frame=width,height", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("run ffprobe: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    runs(
        text.lines()
            .map(|l| l.trim().trim_end_matches(',').to_owned()),
    )
}

/// "RATE,CHANNELS" of every decoded audio frame, repeats folded (ffprobe 5.1
/// does not print a frame's sample rate; `ashowinfo` after the decoder does).
pub fn audio_parameters(path: &Path) -> Vec<String> {
    let out = Command::new(ffmpeg())
        .args(["-hide_banner", "-nostdin", "-nostats", "-v", "info", "-i"])
        .arg(path)
        .args(["-map", "0:a", "-af", "ashowinfo", "-f", "null", "-"])
        .output()
        .unwrap_or_else(|e| panic!("run ffmpeg: {e}"));
    let text = String::from_utf8_lossy(&out.stderr);
    let field = |line: &str, name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name).map(str::to_owned))
            .unwrap_or_default()
    };
    runs(
        text.lines()
            .filter(|l| l.contains("Parsed_ashowinfo"))
            .map(|l| format!("{},{}", field(l, "rate:"), field(l, "channels:"))),
    )
}
