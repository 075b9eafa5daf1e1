//! The FFmpeg glue: everything that touches libav* through `ffmpeg-next`, and
//! the only module with `unsafe` (each block says why it is sound).
//!
//! - sources are opened from local files only, with a `file`-only protocol
//!   whitelist, so a playlist inside a media file cannot make libavformat fetch
//!   anything (docs/ARCHITECTURE.md, "Secrets" and "Sources");
//! - libavformat writes nothing to the network: destinations are our own
//!   FLV/RTMP writer (`vodfleet-rtmp`).

pub mod adts;
pub mod avio;
pub mod demux;
pub mod slate;
pub mod transcode;
pub mod watermark;

use ffmpeg_next as ff;
use std::ffi::c_int;
use std::path::Path;
use std::sync::OnceLock;

pub use ff::codec::Id as CodecId;

/// Initialises libav* once and keeps its own logging quiet: failures reach
/// our logs through the errors we return, where they carry task and position.
pub fn init() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        ff::init().expect("libav* initialises");
        let level = if std::env::var("VODFLEET_LIBAV_LOG").is_ok() {
            ff::log::Level::Info
        } else {
            ff::log::Level::Fatal
        };
        ff::log::set_level(level);
    });
}

/// What [`open_input`] opens: a local file (a path), or a source streamed
/// through the worker's cache ([`crate::source::Media`]).
pub trait Openable {
    fn open(self) -> Result<ff::format::context::Input, ff::Error>;
}

impl<P: AsRef<Path> + ?Sized> Openable for &P {
    /// A local media file. Only the `file` protocol is allowed, so nested
    /// references (HLS, concat, `subfile`…) cannot reach the network.
    fn open(self) -> Result<ff::format::context::Input, ff::Error> {
        let mut opts = ff::Dictionary::new();
        opts.set("protocol_whitelist", "file");
        ff::format::input_with_dictionary(self.as_ref(), opts)
    }
}

impl Openable for crate::source::Media {
    /// A stream reads through a custom I/O context ([`avio`]), which opens
    /// nothing else.
    fn open(self) -> Result<ff::format::context::Input, ff::Error> {
        match self {
            crate::source::Media::File(path) => (&path).open(),
            crate::source::Media::Stream(reader) => avio::open_stream(reader),
        }
    }
}

/// Opens media for demuxing: a local file or a streamed source ([`Openable`]).
pub fn open_input(src: impl Openable) -> Result<ff::format::context::Input, ff::Error> {
    src.open()
}

/// When the recording started, as its container states it (Unix ms): mp4 and
/// Matroska `creation_time`, FLV `onMetaData` `creationdate` (or a
/// `creation_time` an FFmpeg muxer wrote there). `absofftime` is resolved
/// against it (docs/contract.md#src).
pub fn recording_start_ms(input: &ff::format::context::Input) -> Option<u64> {
    let meta = input.metadata();
    ["creation_time", "creationdate", "creation_date"]
        .iter()
        .find_map(|k| {
            meta.get(k)
                .and_then(vodfleet_proto::civil::recording_start_ms)
        })
}

/// Where to seek to start at the keyframe nearest to `target_us` (AV_TIME_BASE),
/// from the index of stream `stream`, if the container has one (mp4 does; FLV
/// may not). Returns `(seek_to, keyframe_dts)`: index entries are decode times,
/// while seeking compares presentation times, so the seek target is placed
/// halfway to the following keyframe, where "the keyframe at or before" can only
/// be the one chosen.
pub fn nearest_keyframe(
    input: &ff::format::context::Input,
    stream: usize,
    target_us: i64,
) -> Option<(i64, i64)> {
    let st = input.stream(stream)?;
    let tb = st.time_base();
    let (num, den) = (tb.0 as i64, tb.1 as i64);
    if num <= 0 || den <= 0 {
        return None;
    }
    let to_tb = |us: i64| us * den / (1_000_000 * num);
    let to_us = |t: i64| t * 1_000_000 * num / den;
    let ts = to_tb(target_us);
    // SAFETY: the stream belongs to `input`, which outlives this call; index
    // entries are read by value, not kept.
    let (chosen, next) = unsafe {
        let s = st.as_ptr() as *mut ff::ffi::AVStream;
        let entry = |i: c_int| {
            if i < 0 {
                return None;
            }
            let e = ff::ffi::avformat_index_get_entry(s, i);
            (!e.is_null()).then(|| (*e).timestamp)
        };
        let before = entry(ff::ffi::av_index_search_timestamp(
            s,
            ts,
            ff::ffi::AVSEEK_FLAG_BACKWARD as c_int,
        ));
        let after = entry(ff::ffi::av_index_search_timestamp(s, ts, 0));
        let chosen = match (before, after) {
            (Some(b), Some(a)) => {
                if ts - b <= a - ts {
                    b
                } else {
                    a
                }
            }
            (b, a) => b.or(a)?,
        };
        (
            chosen,
            entry(ff::ffi::av_index_search_timestamp(s, chosen + 1, 0)),
        )
    };
    let half_gop = next.map_or(to_tb(500_000), |n| (n - chosen) / 2);
    Some((to_us(chosen + half_gop), to_us(chosen)))
}

/// Codec parameters of a stream, shared read-only by the task and its output.
#[derive(Clone)]
pub struct SharedParams(pub ff::codec::Parameters);

// SAFETY: AVCodecParameters is plain data owned by this value. Threads only
// read it (avcodec_parameters_copy into their own muxer), never mutate it.
unsafe impl Sync for SharedParams {}

impl SharedParams {
    pub fn codec_id(&self) -> CodecId {
        self.0.id()
    }

    /// Picture width and height (0 when not a video stream).
    pub fn size(&self) -> (u32, u32) {
        // SAFETY: plain reads of fields of the AVCodecParameters this value owns.
        unsafe {
            let p = self.0.as_ptr();
            ((*p).width.max(0) as u32, (*p).height.max(0) as u32)
        }
    }

    /// Sample rate and channel count (0 when not an audio stream).
    pub fn audio_format(&self) -> (u32, u16) {
        // SAFETY: plain reads of fields of the AVCodecParameters this value owns.
        unsafe {
            let p = self.0.as_ptr();
            (
                (*p).sample_rate.max(0) as u32,
                (*p).ch_layout.nb_channels.clamp(0, u16::MAX as i32) as u16,
            )
        }
    }

    pub fn extradata(&self) -> &[u8] {
        // SAFETY: the pointer and size come from the same AVCodecParameters,
        // which this value owns and keeps alive for the returned borrow.
        unsafe {
            let p = self.0.as_ptr();
            if (*p).extradata.is_null() || (*p).extradata_size <= 0 {
                &[]
            } else {
                std::slice::from_raw_parts((*p).extradata, (*p).extradata_size as usize)
            }
        }
    }
}

/// Codec parameters of the output tracks.
#[derive(Clone)]
pub struct StreamSetup {
    pub video: Option<SharedParams>,
    pub audio: Option<SharedParams>,
}

/// A packet on its way to the fan-out, on the output timeline.
pub struct OutPacket {
    pub packet: ff::Packet,
    pub track: crate::timeline::Track,
    pub key: bool,
    /// Output timestamps in microseconds.
    pub pts_us: i64,
    pub dts_us: i64,
}

#[cfg(test)]
pub(crate) mod tests {
    /// A 10 s file with a keyframe every 2 s, made by the ffmpeg CLI (one per test).
    pub(crate) fn gop2_file() -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("vodfleet-media-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gop2.mp4");
        let ok = std::process::Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-t",
                "10",
            ])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-g",
                "50",
                "-keyint_min",
                "50",
                "-sc_threshold",
                "0",
            ])
            .arg(&path)
            .status()
            .expect("ffmpeg CLI")
            .success();
        assert!(ok, "ffmpeg could not make the test file");
        path
    }

    #[test]
    fn nearest_keyframe_picks_the_closer_side() {
        super::init();
        let path = gop2_file();
        let input = super::open_input(&path).unwrap();
        let v = input
            .streams()
            .best(ffmpeg_next::media::Type::Video)
            .unwrap()
            .index();
        // Keyframes are shown at 0, 2, 4, 6, 8 s; two B-frames put their decode time 80 ms earlier.
        let keyframe_at = |target_us: i64| {
            let (seek, dts) =
                super::nearest_keyframe(&input, v, target_us).expect("mp4 has an index");
            assert!(
                seek > dts,
                "the seek target lies after the keyframe's decode time"
            );
            dts + 80_000
        };
        assert_eq!(
            keyframe_at(5_840_000),
            6_000_000,
            "closer to 6 s than to 4 s"
        );
        assert_eq!(keyframe_at(4_900_000), 4_000_000);
        assert_eq!(keyframe_at(0), 0);
        // And seeking there really lands on that keyframe.
        let mut input = input;
        let (seek, _) = super::nearest_keyframe(&input, v, 5_840_000).unwrap();
        input.seek(seek, ..seek + 1).unwrap();
        let (st, first) = input.packets().find(|(s, _)| s.index() == v).unwrap();
        let tb = st.time_base();
        let pts_us = first.pts().unwrap() * 1_000_000 * tb.0 as i64 / tb.1 as i64;
        assert_eq!((pts_us, first.is_key()), (6_000_000, true));
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }
}
