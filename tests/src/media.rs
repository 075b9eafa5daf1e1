//! Test media, generated at test time with the ffmpeg CLI (lavfi sources), small
//! and short, cached in one directory shared by every test process:
//! `$TMPDIR/vodfleet-test-media/`. File names carry a hash of the exact recipe,
//! so a changed recipe never picks up a stale file. Nothing here is committed.
//!
//! The worker reads these files as `vod://NAME` with `VODFLEET_MEDIA_ROOT` set to
//! [`media_dir`]; HTTP tests serve the same files from [`crate::HttpServer`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Bump when the generation command changes in a way the recipe string misses.
const RECIPE_VERSION: u32 = 1;

/// The lavfi video source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Moving test pattern with a counter (`testsrc2`).
    TestSrc2,
    /// Static colour bars (`smptebars`); visually unlike `testsrc2`.
    SmpteBars,
    /// The older `testsrc` pattern (moving, different layout).
    TestSrc,
    /// A flat mid-grey picture (for judging what is drawn over it).
    Grey,
}

impl Pattern {
    fn lavfi(self) -> &'static str {
        match self {
            Pattern::TestSrc2 => "testsrc2",
            Pattern::SmpteBars => "smptebars",
            Pattern::TestSrc => "testsrc",
            Pattern::Grey => "color=c=0x808080",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    Mp4,
    Flv,
    /// MPEG-TS: AAC ADTS-framed, no AudioSpecificConfig in the codec parameters.
    Ts,
}

impl Container {
    fn ext(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Flv => "flv",
            Container::Ts => "ts",
        }
    }
}

/// How to make a file: H.264 (libx264, yuv420p, fixed GOP, no scene-cut keyframes;
/// or HEVC with [`MediaSpec::hevc`]) plus stereo AAC 44.1 kHz from a sine tone.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaSpec {
    pub container: Container,
    pub pattern: Pattern,
    pub secs: f64,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Keyframe interval in frames (`-g N -keyint_min N -sc_threshold 0`).
    pub gop: u32,
    pub tone_hz: u32,
    /// Temporal noise over the picture so an encoder has to spend its whole
    /// bitrate budget (for bitrate assertions).
    pub noise: bool,
    /// H.264 B-frames (`-bf`); `None` leaves x264's default.
    pub bframes: Option<u32>,
    /// Container metadata (`-metadata KEY=VALUE`), e.g. `creation_time`.
    pub tags: Vec<(String, String)>,
    /// MP3 audio (libmp3lame) instead of AAC.
    pub mp3: bool,
    /// Audio sample rate (Hz) and channel count.
    pub audio: (u32, u32),
    /// HEVC video (libx265) instead of H.264; mp4 only (FLV cannot carry it).
    pub hevc: bool,
}

impl MediaSpec {
    /// `size` is `"WxH"`.
    pub fn new(container: Container, secs: f64, size: &str, fps: u32, gop: u32) -> MediaSpec {
        let (w, h) = size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
            .unwrap_or_else(|| panic!("size must be WxH, got {size:?}"));
        MediaSpec {
            container,
            pattern: Pattern::TestSrc2,
            secs,
            width: w,
            height: h,
            fps,
            gop,
            tone_hz: 440,
            noise: false,
            bframes: None,
            tags: Vec::new(),
            mp3: false,
            audio: (44_100, 2),
            hevc: false,
        }
    }

    pub fn pattern(mut self, p: Pattern) -> Self {
        self.pattern = p;
        self
    }

    pub fn tone(mut self, hz: u32) -> Self {
        self.tone_hz = hz;
        self
    }

    pub fn noise(mut self) -> Self {
        self.noise = true;
        self
    }

    pub fn bframes(mut self, n: u32) -> Self {
        self.bframes = Some(n);
        self
    }

    /// MP3 audio instead of AAC (an unlike seam in a copy-mode playlist).
    pub fn mp3(mut self) -> Self {
        self.mp3 = true;
        self
    }

    /// HEVC video (libx265, tagged `hvc1`) instead of H.264: an unlike seam
    /// in a copy-mode playlist. Needs an mp4.
    pub fn hevc(mut self) -> Self {
        assert_eq!(self.container, Container::Mp4, "FLV cannot carry HEVC");
        self.hevc = true;
        self
    }

    /// Audio at `rate` Hz with `channels` channels (44.1 kHz stereo otherwise).
    pub fn audio(mut self, rate: u32, channels: u32) -> Self {
        self.audio = (rate, channels);
        self
    }

    /// A container metadata entry (mp4 `creation_time`, FLV `onMetaData`).
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.push((key.into(), value.into()));
        self
    }

    fn ffmpeg_args(&self, out: &Path) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-hide_banner".into(),
            "-nostdin".into(),
            "-v".into(),
            "error".into(),
            "-y".into(),
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            format!(
                "{}{}size={}x{}:rate={}",
                self.pattern.lavfi(),
                if self.pattern.lavfi().contains('=') {
                    ':'
                } else {
                    '='
                },
                self.width,
                self.height,
                self.fps
            ),
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            format!(
                "sine=frequency={}:sample_rate={}",
                self.tone_hz, self.audio.0
            ),
            "-t".into(),
            format!("{}", self.secs),
        ];
        if self.noise {
            a.extend(["-vf".into(), "noise=alls=24:allf=t+u".into()]);
        }
        if self.hevc {
            a.extend(["-c:v", "libx265", "-tag:v", "hvc1"].map(String::from));
            a.extend(["-preset", "veryfast", "-pix_fmt", "yuv420p"].map(String::from));
            // The same fixed GOP through x265's own options; its banner silenced.
            let g = self.gop;
            a.extend([
                "-x265-params".into(),
                format!("keyint={g}:min-keyint={g}:scenecut=0:log-level=error"),
            ]);
        } else {
            a.extend(
                [
                    "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g",
                ]
                .map(String::from),
            );
            a.push(self.gop.to_string());
            a.extend(["-keyint_min".into(), self.gop.to_string()]);
            a.extend(["-sc_threshold".into(), "0".into()]);
        }
        if let Some(bf) = self.bframes {
            a.extend(["-bf".into(), bf.to_string()]);
        }
        let acodec = if self.mp3 { "libmp3lame" } else { "aac" };
        a.extend(["-c:a".into(), acodec.into()]);
        a.extend(["-ac".into(), self.audio.1.to_string()]);
        a.extend(["-ar".into(), self.audio.0.to_string()]);
        a.extend(["-b:a".into(), "96k".into()]);
        for (k, v) in &self.tags {
            a.extend(["-metadata".into(), format!("{k}={v}")]);
        }
        match self.container {
            Container::Mp4 => {
                a.extend(["-movflags", "+faststart", "-f", "mp4"].map(String::from));
            }
            Container::Flv => a.extend(["-f", "flv"].map(String::from)),
            Container::Ts => a.extend(["-f", "mpegts"].map(String::from)),
        }
        a.push(out.to_str().expect("utf-8 path").into());
        a
    }

    /// File name: readable parameters plus a hash of the full recipe.
    fn file_name(&self) -> String {
        let recipe = format!("v{RECIPE_VERSION} {:?}", self.ffmpeg_args(Path::new("OUT")));
        format!(
            "{}-{}x{}-{}fps-g{}-{}s-{}hz{}-{:016x}.{}",
            self.pattern.lavfi(),
            self.width,
            self.height,
            self.fps,
            self.gop,
            self.secs,
            self.tone_hz,
            if self.noise { "-noise" } else { "" },
            fnv1a(recipe.as_bytes()),
            self.container.ext()
        )
    }

    /// Generates the file unless the cache already has it.
    pub fn generate(&self) -> Media {
        let name = self.file_name();
        let path = media_dir().join(&name);
        if !path.exists() {
            static GEN: Mutex<()> = Mutex::new(());
            let _one_at_a_time = GEN.lock().unwrap_or_else(|e| e.into_inner());
            if !path.exists() {
                // Other test processes may generate the same file: write aside, rename.
                static N: AtomicU64 = AtomicU64::new(0);
                let tmp = media_dir().join(format!(
                    ".{name}.{}-{}.tmp",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                let out = Command::new(ffmpeg())
                    .args(self.ffmpeg_args(&tmp))
                    .output()
                    .unwrap_or_else(|e| panic!("run ffmpeg: {e} (is ffmpeg installed?)"));
                if !out.status.success() {
                    let _ = std::fs::remove_file(&tmp);
                    panic!(
                        "ffmpeg failed to generate {name}: {}\n{}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                std::fs::rename(&tmp, &path).unwrap_or_else(|e| {
                    panic!("rename {} -> {}: {e}", tmp.display(), path.display())
                });
            }
        }
        Media {
            path,
            name,
            spec: self.clone(),
        }
    }
}

/// A generated file.
#[derive(Clone, Debug)]
pub struct Media {
    pub path: PathBuf,
    /// File name inside [`media_dir`].
    pub name: String,
    pub spec: MediaSpec,
}

impl Media {
    /// An mp4 (moov first) of `secs` seconds, `size` "WxH".
    pub fn mp4(secs: f64, size: &str, fps: u32, gop: u32, pattern: Pattern) -> Media {
        MediaSpec::new(Container::Mp4, secs, size, fps, gop)
            .pattern(pattern)
            .generate()
    }

    /// An FLV of `secs` seconds, `size` "WxH".
    pub fn flv(secs: f64, size: &str, fps: u32, gop: u32, pattern: Pattern) -> Media {
        MediaSpec::new(Container::Flv, secs, size, fps, gop)
            .pattern(pattern)
            .generate()
    }

    /// `vod://NAME`, for a worker whose `VODFLEET_MEDIA_ROOT` is [`media_dir`].
    pub fn vod_url(&self) -> String {
        format!("vod://{}", self.name)
    }

    pub fn len(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap_or_else(|e| panic!("read {}: {e}", self.path.display()))
    }

    /// Duration of the video stream as ffprobe measures it from the packets
    /// (first PTS to end of the last frame).
    pub fn video_secs(&self) -> f64 {
        let pkts = crate::probe::packets(&self.path);
        crate::probe::span(&crate::probe::video(&pkts))
    }
}

/// The shared cache directory (created on first use).
pub fn media_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::var_os("VODFLEET_TEST_MEDIA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("vodfleet-test-media"));
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        d
    })
}

pub fn ffmpeg() -> String {
    std::env::var("VODFLEET_FFMPEG").unwrap_or_else(|_| "ffmpeg".into())
}

pub fn ffprobe() -> String {
    std::env::var("VODFLEET_FFPROBE").unwrap_or_else(|_| "ffprobe".into())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
