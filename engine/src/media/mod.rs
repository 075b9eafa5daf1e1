//! The FFmpeg glue: everything that touches libav* through `ffmpeg-next`, and
//! the only module with `unsafe` (each block says why it is sound).
//!
//! - sources are opened from local files only, with a `file`-only protocol
//!   whitelist, so a playlist inside a media file cannot make libavformat fetch
//!   anything (DESIGN §5);
//! - destinations are FLV over RTMP(S), opened with an interrupt callback that
//!   bounds every connect and write by a deadline and by the task's stop flag.

pub mod transcode;

use ffmpeg_next as ff;
use std::ffi::{c_int, c_void, CString};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use ff::codec::Id as CodecId;
use ff::packet::{Mut as _, Ref as _};

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

/// Opens a local media file for demuxing. Only the `file` protocol is allowed,
/// so nested references (HLS, concat, `subfile`…) cannot reach the network.
pub fn open_input(path: &Path) -> Result<ff::format::context::Input, ff::Error> {
    let mut opts = ff::Dictionary::new();
    opts.set("protocol_whitelist", "file");
    ff::format::input_with_dictionary(path, opts)
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

/// Stream parameters shared read-only by the destination threads.
#[derive(Clone)]
pub struct SharedParams(pub ff::codec::Parameters);

// SAFETY: AVCodecParameters is plain data owned by this value. Threads only
// read it (avcodec_parameters_copy into their own muxer), never mutate it.
unsafe impl Sync for SharedParams {}

impl SharedParams {
    pub fn codec_id(&self) -> CodecId {
        self.0.id()
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

/// A packet on its way to the destinations. The payload is reference-counted
/// by libav; each destination takes a new reference, never a copy.
pub struct OutPacket {
    pub packet: ff::Packet,
    pub track: crate::timeline::Track,
    pub key: bool,
    /// Output timestamps in microseconds.
    pub pts_us: i64,
    pub dts_us: i64,
    /// The track's codec configuration (SPS/PPS, AudioSpecificConfig) this packet
    /// needs. Shared, not copied; a destination sends a new sequence header when
    /// it differs from the one it last sent (a seam between unlike files).
    pub config: Option<Arc<Vec<u8>>>,
}

impl OutPacket {
    /// A new reference to the same payload, for one destination's muxer.
    pub fn share(&self) -> ff::Packet {
        let mut p = ff::Packet::empty();
        // SAFETY: av_packet_ref makes `p` a new reference to the source's
        // refcounted buffer (copying it only if the source is not refcounted);
        // `p` is empty and owned here, and is unreferenced when dropped.
        let r = unsafe { ff::ffi::av_packet_ref(p.as_mut_ptr(), self.packet.as_ptr()) };
        assert!(r >= 0, "av_packet_ref failed: {r}");
        p
    }
}

/// Attaches new codec configuration to a packet so the FLV muxer writes a new
/// sequence header before it (flvenc honours AV_PKT_DATA_NEW_EXTRADATA).
pub fn attach_new_extradata(pkt: &mut ff::Packet, extra: &[u8]) {
    // SAFETY: av_packet_new_side_data allocates `extra.len()` bytes owned by the
    // packet; we fill exactly that many.
    unsafe {
        let dst = ff::ffi::av_packet_new_side_data(
            pkt.as_mut_ptr(),
            ff::ffi::AVPacketSideDataType::AV_PKT_DATA_NEW_EXTRADATA,
            extra.len(),
        );
        if !dst.is_null() {
            std::ptr::copy_nonoverlapping(extra.as_ptr(), dst, extra.len());
        }
    }
}

/// Deadline and stop flag consulted by libav's blocking I/O through the
/// interrupt callback (polled about every 100 ms inside connect, read and write).
pub struct Interrupt {
    deadline_ms: AtomicU64,
    stop: AtomicBool,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Interrupt {
    pub fn new() -> Arc<Interrupt> {
        Arc::new(Interrupt {
            deadline_ms: AtomicU64::new(u64::MAX),
            stop: AtomicBool::new(false),
        })
    }
    /// The next blocking call must finish within `d`.
    pub fn arm(&self, d: Duration) {
        let at = Instant::now() + d;
        self.deadline_ms.store(
            at.duration_since(epoch()).as_millis() as u64,
            Ordering::Relaxed,
        );
    }
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    fn fired(&self) -> bool {
        self.stopped()
            || (Instant::now().duration_since(epoch()).as_millis() as u64)
                > self.deadline_ms.load(Ordering::Relaxed)
    }
}

extern "C" fn interrupt_cb(opaque: *mut c_void) -> c_int {
    // SAFETY: `opaque` is the Interrupt inside the Arc held by `Muxer`, which
    // outlives the AVFormatContext whose callback this is (field order in Muxer).
    let i = unsafe { &*(opaque as *const Interrupt) };
    i.fired() as c_int
}

/// An FLV muxer writing to one RTMP(S) destination.
pub struct Muxer {
    // Declared first so it is dropped (closing the connection) before `interrupt`.
    out: ff::format::context::Output,
    interrupt: Arc<Interrupt>,
    /// Output stream index per track (video, audio).
    index: [Option<usize>; 2],
}

impl Muxer {
    /// Connects, publishes and writes the FLV header and sequence headers.
    /// `timeout` bounds the connect and the header write together.
    pub fn connect(
        url: &str,
        video: Option<&SharedParams>,
        audio: Option<&SharedParams>,
        interrupt: Arc<Interrupt>,
        timeout: Duration,
    ) -> Result<Muxer, String> {
        let c_url = CString::new(url).map_err(|_| "URL contains a NUL byte".to_owned())?;
        let c_fmt = CString::new("flv").expect("static");
        interrupt.arm(timeout);
        // SAFETY: standard libavformat output setup. Every pointer passed is
        // valid for the call; on failure the context is freed before returning;
        // on success ownership moves into `Output::wrap`, whose Drop closes the
        // AVIOContext and frees the format context.
        let out = unsafe {
            let mut ctx: *mut ff::ffi::AVFormatContext = std::ptr::null_mut();
            let r = ff::ffi::avformat_alloc_output_context2(
                &mut ctx,
                std::ptr::null_mut(),
                c_fmt.as_ptr(),
                c_url.as_ptr(),
            );
            if r < 0 || ctx.is_null() {
                return Err(format!("allocating the FLV muxer: {}", ff::Error::from(r)));
            }
            (*ctx).interrupt_callback = ff::ffi::AVIOInterruptCB {
                callback: Some(interrupt_cb),
                opaque: Arc::as_ptr(&interrupt) as *mut c_void,
            };
            let mut opts = ff::Dictionary::new();
            opts.set("rtmp_live", "live");
            opts.set("tcp_nodelay", "1");
            let mut raw_opts = opts.disown();
            let r = ff::ffi::avio_open2(
                &mut (*ctx).pb,
                c_url.as_ptr(),
                ff::ffi::AVIO_FLAG_WRITE,
                &(*ctx).interrupt_callback,
                &mut raw_opts,
            );
            ff::Dictionary::own(raw_opts);
            if r < 0 {
                ff::ffi::avformat_free_context(ctx);
                return Err(connect_error(r, &interrupt));
            }
            ff::format::context::Output::wrap(ctx)
        };
        let mut m = Muxer {
            out,
            interrupt,
            index: [None, None],
        };
        for (slot, params) in [(0, video), (1, audio)] {
            if let Some(p) = params {
                let mut st = m
                    .out
                    .add_stream(ff::encoder::find(CodecId::None))
                    .map_err(|e| format!("adding a stream: {e}"))?;
                st.set_parameters(p.0.clone());
                // SAFETY: the stream was just created by this muxer and is not shared;
                // a zero tag lets the FLV muxer choose its own codec tag.
                unsafe { (*st.parameters().as_mut_ptr()).codec_tag = 0 };
                st.set_time_base(ff::Rational(1, 1000));
                m.index[slot] = Some(st.index());
            }
        }
        let mut hdr = ff::Dictionary::new();
        // Live output: there is no file to seek back into for duration and size.
        hdr.set("flvflags", "no_duration_filesize");
        m.out
            .write_header_with(hdr)
            .map_err(|e| connect_error_ff(e, &m.interrupt))?;
        Ok(m)
    }

    /// Writes one packet; `timeout` bounds how long the write may block.
    pub fn write(
        &mut self,
        p: &OutPacket,
        extradata: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<(), String> {
        let Some(index) = self.index[p.track as usize] else {
            return Ok(());
        };
        let mut pkt = p.share();
        pkt.set_stream(index);
        let tb = self
            .out
            .stream(index)
            .map(|s| s.time_base())
            .unwrap_or(ff::Rational(1, 1000));
        let to_tb = |us: i64| us * tb.1 as i64 / (1_000_000 * tb.0 as i64);
        pkt.set_pts(Some(to_tb(p.pts_us)));
        pkt.set_dts(Some(to_tb(p.dts_us)));
        if let Some(extra) = extradata {
            attach_new_extradata(&mut pkt, extra);
        }
        self.interrupt.arm(timeout);
        pkt.write(&mut self.out)
            .map(|_| ())
            .map_err(|e| connect_error_ff(e, &self.interrupt))
    }

    /// Ends the session cleanly (FLV trailer) within `timeout`.
    pub fn finish(mut self, timeout: Duration) {
        self.interrupt.arm(timeout);
        let _ = self.out.write_trailer();
    }
}

fn connect_error(code: c_int, i: &Interrupt) -> String {
    connect_error_ff(ff::Error::from(code), i)
}

fn connect_error_ff(e: ff::Error, i: &Interrupt) -> String {
    if i.stopped() {
        "stopped".into()
    } else if i.fired() {
        "timed out".into()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    /// A 10 s file with a keyframe every 2 s, made by the ffmpeg CLI.
    fn gop2_file() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vodfleet-media-test-{}", std::process::id()));
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
