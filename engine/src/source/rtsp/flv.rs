//! The FLV stream a pull appends to its cache entry, one tag at a time, and
//! what it has reached (the [`Progress`] an item's open waits on).

use super::{Progress, MARGIN_MS, MAX_KEYFRAME_WAIT_MS, RESUME_GAP_MS};
use crate::source::cache::Producer;
use tokio::sync::watch;
use vodfleet_rtmp::flv;

/// A video stream's `avcC` record and the frame rate its parameters state
/// (seconds per frame as a fraction).
pub(super) type VideoParams = (Vec<u8>, Option<(u32, u32)>);

/// The FLV stream of a pull, appended tag by tag to a cache entry that
/// readers follow as it grows. Timestamps are ms from the start of the pull.
pub(super) struct FlvOut {
    pub(super) producer: Producer,
    progress: watch::Sender<Progress>,
    pub(super) started_unix_ms: u64,
    /// Where this session's media time 0 falls in the stream.
    pub(super) base_ms: u64,
    pub(super) max_ms: u64,
    last_video: Option<u64>,
    last_key: Option<u64>,
    last_audio: Option<u64>,
    avcc: Option<Vec<u8>>,
    asc: Option<Vec<u8>>,
    /// Whether this session's video has reached a keyframe (nothing is
    /// written before it, audio included, so every session starts decodable).
    keyed: bool,
    has_video: bool,
    /// `onMetaData` is written (before the first media tag).
    meta: bool,
}

impl FlvOut {
    pub(super) fn create(
        mut producer: Producer,
        progress: watch::Sender<Progress>,
        audio: bool,
        video: bool,
        started_unix_ms: u64,
    ) -> std::io::Result<FlvOut> {
        producer.append(&flv::file_header(audio, video))?;
        Ok(FlvOut {
            producer,
            progress,
            started_unix_ms,
            base_ms: 0,
            max_ms: 0,
            last_video: None,
            last_key: None,
            last_audio: None,
            avcc: None,
            asc: None,
            keyed: !video,
            has_video: video,
            meta: false,
        })
    }

    pub(super) fn bytes(&self) -> u64 {
        self.producer.appended()
    }

    /// Whether the media covers `end`: [`MARGIN_MS`] past it, and (with
    /// video) a keyframe at or after it, or [`MAX_KEYFRAME_WAIT_MS`] past it.
    pub(super) fn reached(&self, end: u64) -> bool {
        let keyed = !self.has_video || self.last_key.is_some_and(|k| k >= end);
        (keyed && self.max_ms >= end + MARGIN_MS) || self.max_ms >= end + MAX_KEYFRAME_WAIT_MS
    }

    pub(super) fn has_media(&self) -> bool {
        self.last_video.is_some() || self.last_audio.is_some()
    }

    /// A new session continues after what is written.
    pub(super) fn resume(&mut self) {
        if self.has_media() {
            self.base_ms = self.max_ms + RESUME_GAP_MS;
        }
        self.keyed = !self.has_video;
    }

    fn at(&self, t: retina::Timestamp) -> u64 {
        let ms = i128::from(t.elapsed()) * 1000 / i128::from(t.clock_rate().get());
        self.base_ms + u64::try_from(ms).unwrap_or(0)
    }

    /// `onMetaData` once, before the first media tag: the pull's start, and
    /// the frame rate the SPS states (libavformat's estimate from a few
    /// millisecond timestamps is off: 30 fps read as 30.3, which the slate,
    /// made at the item's rate, would then play).
    fn metadata(&mut self, fps: Option<(u32, u32)>) -> std::io::Result<()> {
        if !self.meta {
            let fps = fps
                .filter(|&(n, d)| n > 0 && d > 0)
                .map(|(n, d)| f64::from(d) / f64::from(n));
            let t = tag(18, 0, &creation_metadata(self.started_unix_ms, fps))?;
            self.producer.append(&t)?;
            self.meta = true;
        }
        Ok(())
    }

    fn put(&mut self, kind: u8, ms: u64, body: &[u8], key: bool) -> std::io::Result<()> {
        // FLV's timestamps are 32 bits of ms (49 days): far past MAX_PULL_SECS.
        let t = tag(kind, ms as u32, body)?;
        self.producer.append(&t)?;
        self.max_ms = self.max_ms.max(ms);
        let max_ms = self.max_ms;
        self.progress.send_modify(|p| {
            p.first_ms.get_or_insert(ms);
            p.max_ms = max_ms;
            if key {
                p.last_key_ms = Some(ms);
            }
        });
        Ok(())
    }

    /// Writes one access unit (and a sequence header first when the
    /// parameter sets are new); `false` if it was dropped before a keyframe.
    /// `params`: the `avcC` record and the frame rate (seconds per frame as
    /// a fraction) the stream's parameters state.
    pub(super) fn video(
        &mut self,
        f: &retina::codec::VideoFrame,
        params: Option<VideoParams>,
    ) -> std::io::Result<bool> {
        if !self.keyed && !f.is_random_access_point() {
            return Ok(false);
        }
        let (avcc, fps) = params.map_or((None, None), |(a, f)| (Some(a), f));
        self.metadata(fps)?;
        self.keyed = true;
        // RTP carries presentation times only: DTS = PTS, kept strictly
        // increasing (streams with B-frames are not reordered; see the design note).
        let ms = self.at(f.timestamp());
        let ms = self.last_video.map_or(ms, |l| ms.max(l + 1));
        if let Some(avcc) = avcc.filter(|a| self.avcc.as_ref() != Some(a)) {
            let head = flv::avc_sequence_header(&avcc).map_err(std::io::Error::other)?;
            self.put(9, ms, &head, false)?;
            self.avcc = Some(avcc);
        }
        if self.avcc.is_none() {
            return Ok(false);
        }
        let key = f.is_random_access_point();
        let body = flv::avc_frame(f.data(), key, 0);
        self.put(9, ms, &body, key)?;
        self.last_video = Some(ms);
        if key {
            self.last_key = Some(ms);
        }
        Ok(true)
    }

    pub(super) fn audio(
        &mut self,
        f: &retina::codec::AudioFrame,
        asc: Option<Vec<u8>>,
    ) -> std::io::Result<bool> {
        if !self.keyed {
            return Ok(false);
        }
        self.metadata(None)?;
        let ms = self.at(f.timestamp());
        let ms = self.last_audio.map_or(ms, |l| ms.max(l + 1));
        if let Some(asc) = asc.filter(|a| self.asc.as_ref() != Some(a)) {
            self.put(8, ms, &flv::aac_sequence_header(&asc), false)?;
            self.asc = Some(asc);
        }
        if self.asc.is_none() {
            return Ok(false);
        }
        // Audio-only: every frame is a place playback may start.
        self.put(8, ms, &flv::aac_frame(f.data()), !self.has_video)?;
        self.last_audio = Some(ms);
        Ok(true)
    }
}

fn tag(kind: u8, ms: u32, body: &[u8]) -> std::io::Result<Vec<u8>> {
    flv::file_tag(kind, ms, body).ok_or_else(|| {
        std::io::Error::other(format!("a {} byte frame is too large for FLV", body.len()))
    })
}

/// `onMetaData` with `creationdate`: when the pull started (ISO 8601 UTC, ms),
/// which `absofftime` resolves against (media::recording_start_ms); and the
/// video's `framerate` when known.
pub(super) fn creation_metadata(unix_ms: u64, fps: Option<f64>) -> Vec<u8> {
    use vodfleet_rtmp::amf0::Value;
    let s = vodfleet_proto::civil::iso8601_utc(unix_ms);
    let date = format!("{}.{:03}Z", s.trim_end_matches('Z'), unix_ms % 1000);
    let mut out = Vec::new();
    Value::string("onMetaData").encode(&mut out);
    let mut fields = vec![("creationdate".into(), Value::String(date))];
    if let Some(fps) = fps {
        fields.push(("framerate".into(), Value::Number(fps)));
    }
    Value::EcmaArray(fields).encode(&mut out);
    out
}
