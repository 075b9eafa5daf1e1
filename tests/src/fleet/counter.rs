//! Media that carries its own frame numbers ([`counter_mp4`], [`read_counters`]),
//! so "where the stream was" is judged from the pictures, not from our reports.

use super::run;
use crate::media::{ffmpeg, media_dir, Container, Media, MediaSpec, Pattern};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Bits of the frame number in a counter value; the bits above carry a tag.
pub const FRAME_BITS: u32 = 12;
/// Blocks (bits) drawn per frame.
const COUNTER_BLOCKS: u32 = 16;

/// The frame number of a counter value.
pub fn frame_of(v: u32) -> u32 {
    v & ((1 << FRAME_BITS) - 1)
}

/// The tag of a counter value (which file the frame came from).
pub fn tag_of(v: u32) -> u32 {
    v >> FRAME_BITS
}

/// A 320x240 mp4 of `secs` seconds whose frame `n` shows the number `n` (tag 0).
pub fn counter_mp4(secs: f64, fps: u32, gop: u32) -> Media {
    counter_media(secs, "320x240", fps, gop, 0)
}

/// An H.264/AAC mp4 (`testsrc2` + a sine) whose frame `n` carries
/// `tag << FRAME_BITS | n` in 16 black/white blocks across the top sixth of the
/// picture (most significant bit on the left), big enough to survive any
/// encoder setting and any scaling. [`read_counters`] reads them back.
pub fn counter_media(secs: f64, size: &str, fps: u32, gop: u32, tag: u32) -> Media {
    let frames = (secs * fps as f64).ceil() as u64;
    assert!(
        frames < (1 << FRAME_BITS),
        "{frames} frames do not fit in {FRAME_BITS} bits"
    );
    assert!(
        tag < 1 << (COUNTER_BLOCKS - FRAME_BITS),
        "tag {tag} too big"
    );
    let (w, h) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .unwrap_or_else(|| panic!("size must be WxH, got {size:?}"));
    let offset = tag << FRAME_BITS;
    let filter = format!(
        "[0:v]format=yuv420p,split[a][b];\
         [b]crop=iw:ih/6:0:0,geq=lum='if(bitand(N+{offset},pow(2,{top}-floor(X*{COUNTER_BLOCKS}/W))),235,16)':cb=128:cr=128[c];\
         [a][c]overlay=0:0:format=yuv420[v]",
        top = COUNTER_BLOCKS - 1
    );
    let args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={w}x{h}:rate={fps}"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        &format!("{secs}"),
        "-filter_complex",
        &filter,
        "-map",
        "[v]",
        "-map",
        "1:a",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-g",
        &gop.to_string(),
        "-keyint_min",
        &gop.to_string(),
        "-sc_threshold",
        "0",
        "-c:a",
        "aac",
        "-ac",
        "2",
        "-ar",
        "44100",
        "-b:a",
        "96k",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
    ]
    .map(String::from)
    .to_vec();
    let recipe = format!("counter v1 {args:?}");
    let name = format!(
        "counter-t{tag}-{w}x{h}-{fps}fps-g{gop}-{secs}s-{:016x}.mp4",
        recipe_hash(&recipe)
    );
    let path = media_dir().join(&name);
    if !path.exists() {
        // Other test processes may generate the same file: write aside, rename.
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(media_dir())
            .unwrap_or_else(|e| panic!("temp file in {}: {e}", media_dir().display()));
        let mut cmd = Command::new(ffmpeg());
        cmd.args(&args).arg(tmp.path());
        if let Err(e) = run(&mut cmd, Duration::from_secs(300)) {
            panic!("ffmpeg failed to generate {name}: {e}");
        }
        tmp.persist(&path)
            .unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
    }
    let mut spec = MediaSpec::new(Container::Mp4, secs, size, fps, gop).pattern(Pattern::TestSrc2);
    spec.tone_hz = 440;
    Media { path, name, spec }
}

/// A hash of a recipe, for cache file names (a changed recipe never picks up a
/// stale file; a new toolchain at worst regenerates).
fn recipe_hash(recipe: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    recipe.hash(&mut h);
    h.finish()
}

/// The counter value of every decoded video frame of `path` (any container
/// ffmpeg reads, e.g. an nginx recording), in display order. Frames whose blocks
/// are not clearly black or white (a damaged picture) are left out, and counted
/// on stderr.
pub fn read_counters(path: &Path) -> Vec<u32> {
    assert!(path.exists(), "{} does not exist", path.display());
    let out = Command::new(ffmpeg())
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args([
            "-an",
            "-vf",
            &format!("crop=iw:ih/6:0:0,scale={COUNTER_BLOCKS}:1:flags=area,format=gray"),
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "pipe:1",
        ])
        .output()
        .unwrap_or_else(|e| panic!("run ffmpeg: {e}"));
    assert!(
        out.status.success() || !out.stdout.is_empty(),
        "ffmpeg could not decode {}: {}\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut values = Vec::new();
    let mut unclear = 0;
    for frame in out.stdout.chunks_exact(COUNTER_BLOCKS as usize) {
        if frame.iter().any(|&b| (64..192).contains(&b)) {
            unclear += 1;
            continue;
        }
        values.push(
            frame
                .iter()
                .fold(0u32, |v, &b| v << 1 | u32::from(b >= 128)),
        );
    }
    if unclear > 0 {
        eprintln!(
            "read_counters {}: {unclear} frame(s) with unclear blocks left out",
            path.display()
        );
    }
    values
}

/// The runs of one file playing in a counter sequence, as (tag, first frame,
/// last frame): a new run starts when the tag changes or the frame number goes
/// back (the file started again).
pub fn tag_runs(values: &[u32]) -> Vec<(u32, u32, u32)> {
    let mut runs: Vec<(u32, u32, u32)> = Vec::new();
    for &v in values {
        match runs.last_mut() {
            Some(r) if r.0 == tag_of(v) && frame_of(v) >= r.2 => r.2 = frame_of(v),
            _ => runs.push((tag_of(v), frame_of(v), frame_of(v))),
        }
    }
    runs
}

/// Compact text of a counter sequence: runs of consecutive values as `a..=b`.
pub fn counter_runs(values: &[u32]) -> String {
    let mut runs: Vec<String> = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let mut j = i;
        while j + 1 < values.len() && values[j + 1] == values[j] + 1 {
            j += 1;
        }
        runs.push(if i == j {
            format!("{}", values[i])
        } else {
            format!("{}..={}", values[i], values[j])
        });
        i = j + 1;
    }
    runs.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_values_split() {
        let v = 3 << FRAME_BITS | 77;
        assert_eq!((tag_of(v), frame_of(v)), (3, 77));
        assert_eq!(counter_runs(&[1, 2, 3, 7, 9, 10]), "1..=3, 7, 9..=10");
        let t = |tag: u32, n: u32| tag << FRAME_BITS | n;
        let seq = [
            t(1, 0),
            t(1, 1),
            t(2, 0),
            t(2, 1),
            t(1, 0),
            t(1, 5),
            t(1, 0),
        ];
        assert_eq!(
            tag_runs(&seq),
            vec![(1, 0, 1), (2, 0, 1), (1, 0, 5), (1, 0, 0)]
        );
    }
}
