//! RTSP sources (`rtsp://`, issue 8): pulled with `retina` over
//! TCP-interleaved RTP, H.264 and AAC depacketised and written, tag by tag,
//! as an FLV file in the task's directory, so that the rest of the engine
//! (open, cut, timeline) plays it like any other file
//! (docs/design/sources.md, "RTSP").
//!
//! - Time: media time 0 is the start of the pull (the NPT that `PLAY`'s
//!   `RTP-Info` anchors), so `relofftime` counts from there; the file's
//!   `onMetaData` `creationdate` is the wall clock at `PLAY`, so `absofftime`
//!   resolves against it like any recording's start.
//! - How long: until the last range end of every item naming this URL plus
//!   [`MARGIN_MS`] and the keyframe at or after it (where copy mode ends a
//!   cut; at most [`MAX_KEYFRAME_WAIT_MS`] past the end), or until the server
//!   ends the stream (TCP close, or an RTCP BYE on every stream); an item
//!   without an end pulls until the stream ends, at most [`MAX_PULL_SECS`] of
//!   media or [`MAX_PULL_BYTES`] of file.
//! - Failures: the source timeout bounds `DESCRIBE`, `SETUP`, `PLAY` and every
//!   wait for media; the source attempts cover connecting and each resume
//!   after a stall or a drop (a resumed pull appends after what it has).
//!   RTSP 4xx answers fail at once (wrong credentials: 401).
//! - Policy: the host is checked, a name resolved to allowed addresses only,
//!   and retina is given that address (it opens its own connection, so the
//!   checked address is what it dials). Credentials in the URL go to RTSP
//!   authentication, never into a message: URLs are shown redacted.

use super::Sources;
use crate::error::{ErrorKind, Fault, WorkerError};
use futures_util::StreamExt;
use retina::client::{
    Credentials, InitialTimestampPolicy, PlayOptions, SessionOptions, SetupOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use vodfleet_net as policy;
use vodfleet_proto::command::Cut;
use vodfleet_proto::{redact, TaskSpec};
use vodfleet_rtmp::flv;

/// Media pulled past the last range end, so the cut finds its end frame.
pub const MARGIN_MS: u64 = 1_000;
/// How far past the end a pull waits for the keyframe at or after it, where
/// a copy-mode cut ends (docs/design/timeline.md); a longer GOP ends the
/// item at the end of the pulled media instead.
pub const MAX_KEYFRAME_WAIT_MS: u64 = 10_000;
/// The most media one pull records (6 h); an item without an end on a
/// stream that goes on longer fails, naming this cap.
pub const MAX_PULL_SECS: u64 = 6 * 3600;
/// The largest file one pull writes (8 GiB).
pub const MAX_PULL_BYTES: u64 = 8 << 30;
/// RTCP BYE.
const RTCP_BYE: u8 = 203;
/// The gap left in the timestamps where a resumed pull continues (about a
/// frame): the media the server sent while we reconnected is lost anyway.
const RESUME_GAP_MS: u64 = 40;

/// How long each `rtsp://` URL of a task is pulled: what every item that
/// names it needs.
#[derive(Debug, Default)]
pub struct Limits(HashMap<String, Want>);

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Want {
    /// An item plays it whole: until the stream ends.
    to_end: bool,
    /// The last `relofftime` end (ms of the pull).
    rel_ms: Option<u64>,
    /// The last `absofftime` end (Unix ms).
    abs_ms: Option<u64>,
}

impl Limits {
    pub fn new(spec: &TaskSpec) -> Limits {
        let mut m: HashMap<String, Want> = HashMap::new();
        for s in spec.sources.iter().filter(|s| s.url.starts_with("rtsp:")) {
            let w = m.entry(s.url.clone()).or_default();
            let last = |r: &[vodfleet_proto::command::Range]| r.iter().map(|r| r.end_ms).max();
            match &s.cut {
                Cut::Whole => w.to_end = true,
                Cut::Relative(r) => w.rel_ms = w.rel_ms.max(last(r)),
                Cut::Absolute(r) => w.abs_ms = w.abs_ms.max(last(r)),
            }
        }
        Limits(m)
    }

    /// Until which media time (ms of the pull) to pull `url`, the pull having
    /// started at `start_unix_ms`; `None`: until the stream ends.
    fn until(&self, url: &str, start_unix_ms: u64) -> Option<u64> {
        let w = self.0.get(url).copied().unwrap_or(Want {
            to_end: true,
            ..Want::default()
        });
        if w.to_end {
            return None;
        }
        let abs = w.abs_ms.map(|end| end.saturating_sub(start_unix_ms));
        Some(w.rel_ms.max(abs).unwrap_or(0))
    }
}

/// Pulls `url` into an FLV file in the task's directory; returns its path.
pub(super) async fn pull(src: &Sources, url: &str) -> Result<PathBuf, WorkerError> {
    let parsed = url::Url::parse(url).map_err(|e| src.refuse(url, e.to_string()))?;
    policy::check_url_host(&parsed, src.cfg.allow_private_networks)
        .map_err(|r| src.refuse(url, r))?;
    let creds = match parsed.username() {
        "" => None,
        user => Some(Credentials {
            username: percent_decode(user),
            password: percent_decode(parsed.password().unwrap_or("")),
        }),
    };
    let mut bare = parsed.clone();
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    if let Some(w) = src.rtsp.0.get(url) {
        if !w.to_end && w.rel_ms.is_some_and(|ms| ms > MAX_PULL_SECS * 1000) {
            return Err(WorkerError::Unsupported {
                task: src.task_id.clone(),
                cause: format!(
                    "RTSP source {}: relofftime ends past the pull cap of {MAX_PULL_SECS} s (rtsp::MAX_PULL_SECS)",
                    redact::source(url)
                ),
            });
        }
    }
    let p = Pull {
        src,
        shown: url,
        bare,
        creds,
        dest: src.dir.join(format!("{}.flv", super::hex_digest(url))),
    };
    let _ = tokio::fs::remove_file(&p.dest).await;
    let mut out = None;
    let attempts = src.cfg.source_attempts.max(1);
    let m = crate::metrics::get();
    for attempt in 1..=attempts {
        m.source_download_attempts.inc();
        match p.attempt(attempt, &mut out).await {
            Ok(()) => break,
            Err(e) => {
                if !src.cancel.is_cancelled() {
                    m.source_download_failures.inc();
                }
                if e.kind() != ErrorKind::Retry || attempt == attempts {
                    return Err(e);
                }
                // Exponential, as the HTTP path's (source::http): 1×, 2×, 4×… up to 8×.
                let delay = src.cfg.retry_backoff * 2u32.pow((attempt - 1).min(3));
                tracing::warn!(task.id = %src.task_id, error = %e, retry_in_ms = delay.as_millis() as u64, "RTSP pull attempt failed");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = src.cancel.cancelled() => return Err(p.err(attempt, ErrorKind::Fail, Fault::Local, "task stopped")),
                }
            }
        }
    }
    let out = out.expect("a successful attempt made the file");
    tracing::info!(task.id = %src.task_id, url = %redact::source(url), media_ms = out.max_ms, bytes = out.bytes, "RTSP source pulled");
    Ok(p.dest)
}

struct Pull<'a> {
    src: &'a Sources,
    /// The source's URL as given (shown redacted).
    shown: &'a str,
    /// The URL without credentials; its host is replaced by the checked address.
    bare: url::Url,
    creds: Option<Credentials>,
    dest: PathBuf,
}

/// Why an attempt's pull stopped without an error.
enum Stop {
    Limit,
    StreamEnded,
}

impl Pull<'_> {
    fn err(
        &self,
        attempt: u32,
        kind: ErrorKind,
        fault: Fault,
        cause: impl Into<String>,
    ) -> WorkerError {
        WorkerError::Source {
            task: self.src.task_id.clone(),
            url: redact::source(self.shown),
            attempt,
            attempts: self.src.cfg.source_attempts,
            cause: cause.into(),
            kind,
            fault,
        }
    }

    /// A retina error: RTSP 4xx answers fail (asking again cannot change
    /// them), anything else is retried. Its first line, without the URL.
    fn retina_err(&self, attempt: u32, target: &url::Url, e: &retina::Error) -> WorkerError {
        let text = e.to_string();
        let mut cause = text.lines().next().unwrap_or_default().to_owned();
        cause = cause.replace(target.as_str(), &redact::source(self.shown));
        if let Some(pw) = self.creds.as_ref().map(|c| c.password.as_str()) {
            if !pw.is_empty() {
                cause = cause.replace(pw, "***");
            }
        }
        let cause = format!("RTSP: {cause}");
        match e.status_code() {
            Some(401) => self.err(
                attempt,
                ErrorKind::Fail,
                Fault::Refused,
                format!("{cause} (the server refused the credentials)"),
            ),
            Some(400..=499) => self.err(attempt, ErrorKind::Fail, Fault::Refused, cause),
            Some(_) => self.err(attempt, ErrorKind::Retry, Fault::Unreachable, cause),
            None if text.starts_with("Unable to connect") => {
                self.err(attempt, ErrorKind::Retry, Fault::Unreachable, cause)
            }
            None => self.err(attempt, ErrorKind::Retry, Fault::StreamEnded, cause),
        }
    }

    /// Races `fut` against the source timeout and the task's cancellation.
    async fn bounded<T>(
        &self,
        attempt: u32,
        what: &str,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, WorkerError> {
        let limit = self.src.cfg.source_timeout;
        tokio::select! {
            r = tokio::time::timeout(limit, fut) => r.map_err(|_| self.err(
                attempt,
                ErrorKind::Retry,
                Fault::TimedOut,
                format!("RTSP {what}: no answer for {} ms", limit.as_millis()),
            )),
            _ = self.src.cancel.cancelled() => Err(self.err(attempt, ErrorKind::Fail, Fault::Local, "task stopped")),
        }
    }

    /// The URL retina dials: the host checked by the URL policy, a name
    /// replaced by one of its allowed addresses.
    async fn target(&self, attempt: u32) -> Result<url::Url, WorkerError> {
        let mut t = self.bare.clone();
        if let Some(url::Host::Domain(host)) = self.bare.host() {
            let addrs =
                match policy::resolve_allowed(host, self.src.cfg.allow_private_networks).await {
                    Ok(a) => a,
                    Err(policy::NameError::Refused(why)) => {
                        return Err(self.src.refuse(self.shown, why))
                    }
                    Err(policy::NameError::Lookup(e)) => {
                        return Err(self.err(
                            attempt,
                            ErrorKind::Retry,
                            Fault::Unreachable,
                            format!("RTSP: cannot resolve {host}: {e}"),
                        ))
                    }
                };
            let _ = t.set_ip_host(addrs[0].ip());
        }
        Ok(t)
    }

    async fn attempt(&self, attempt: u32, out: &mut Option<FlvOut>) -> Result<(), WorkerError> {
        let target = self.target(attempt).await?;
        let re = |e: retina::Error| self.retina_err(attempt, &target, &e);
        let opts = SessionOptions::default()
            .creds(self.creds.clone())
            .user_agent(format!("vodfleet/{}", env!("CARGO_PKG_VERSION")));
        let mut session = self
            .bounded(
                attempt,
                "DESCRIBE",
                retina::client::Session::describe(target.clone(), opts),
            )
            .await?
            .map_err(re)?;
        let streams = session.streams();
        let find = |media: &str, enc: &str| {
            streams
                .iter()
                .position(|s| s.media() == media && s.encoding_name() == enc)
        };
        let (video, audio) = (find("video", "h264"), find("audio", "mpeg4-generic"));
        if video.is_none() && audio.is_none() {
            let offered: Vec<String> = streams
                .iter()
                .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
                .collect();
            return Err(WorkerError::Unsupported {
                task: self.src.task_id.clone(),
                cause: format!(
                    "RTSP source {}: no H.264 video or AAC audio stream (it offers: {})",
                    redact::source(self.shown),
                    offered.join(", ")
                ),
            });
        }
        for (i, s) in streams.iter().enumerate() {
            if Some(i) != video && Some(i) != audio && matches!(s.media(), "video" | "audio") {
                tracing::warn!(task.id = %self.src.task_id, url = %redact::source(self.shown), stream = i, codec = %s.encoding_name(), "RTSP stream not pulled: only H.264 and AAC are carried");
            }
        }
        for i in [video, audio].into_iter().flatten() {
            // MP4 framing: length-prefixed NAL units and an avcC record, raw
            // AAC and its AudioSpecificConfig: FLV's own forms.
            let setup = SetupOptions::default()
                .transport(Transport::Tcp(Default::default()))
                .frame_format(FrameFormat::MP4);
            self.bounded(attempt, "SETUP", session.setup(i, setup))
                .await?
                .map_err(re)?;
        }
        // RTP-Info's rtptime puts every stream on one time line (NPT) when
        // the server sends it; without it each stream starts at its first packet.
        let play = PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Permissive);
        let playing = self
            .bounded(attempt, "PLAY", session.play(play))
            .await?
            .map_err(re)?;
        let mut demuxed = playing.demuxed().map_err(re)?;
        let started_unix_ms = crate::event::unix_ms();
        let out = match out {
            Some(o) => {
                o.resume();
                tracing::info!(task.id = %self.src.task_id, url = %redact::source(self.shown), attempt, after_ms = o.base_ms, "RTSP pull resumed: appending");
                o
            }
            None => out.insert(
                FlvOut::create(
                    &self.dest,
                    audio.is_some(),
                    video.is_some(),
                    started_unix_ms,
                )
                .await
                .map_err(|e| self.cache_err(attempt, e))?,
            ),
        };
        let until = self.src.rtsp.until(self.shown, out.started_unix_ms);
        tracing::info!(task.id = %self.src.task_id, url = %redact::source(self.shown), attempt, until_ms = until, "RTSP pull playing");
        let mut byes = [video.is_none(), audio.is_none()];
        let mut last_media = Instant::now();
        let stop = loop {
            let deadline = last_media + self.src.cfg.source_timeout;
            let item = tokio::select! {
                r = tokio::time::timeout_at(deadline.into(), demuxed.next()) => r,
                _ = self.src.cancel.cancelled() => return Err(self.err(attempt, ErrorKind::Fail, Fault::Local, "task stopped")),
            };
            let item = match item {
                Err(_) => {
                    return Err(self.err(
                        attempt,
                        ErrorKind::Retry,
                        Fault::TimedOut,
                        format!(
                            "RTSP: no media for {} ms",
                            self.src.cfg.source_timeout.as_millis()
                        ),
                    ))
                }
                Ok(None) => break Stop::StreamEnded,
                Ok(Some(Err(e))) => return Err(re(e)),
                Ok(Some(Ok(item))) => item,
            };
            let written = match item {
                CodecItem::VideoFrame(f) if Some(f.stream_id()) == video => {
                    let params = match demuxed.streams()[f.stream_id()].parameters() {
                        Some(ParametersRef::Video(p)) => Some(p.extra_data().to_vec()),
                        _ => None,
                    };
                    out.video(&f, params).await
                }
                CodecItem::AudioFrame(f) if Some(f.stream_id()) == audio => {
                    let asc = match demuxed.streams()[f.stream_id()].parameters() {
                        Some(ParametersRef::Audio(p)) => Some(p.extra_data().to_vec()),
                        _ => None,
                    };
                    out.audio(&f, asc).await
                }
                CodecItem::Rtcp(p) => {
                    if p.pkts().any(|k| k.payload_type() == RTCP_BYE) {
                        let s = Some(p.stream_id());
                        byes[0] |= s == video;
                        byes[1] |= s == audio;
                        if byes.iter().all(|&b| b) {
                            break Stop::StreamEnded;
                        }
                    }
                    continue;
                }
                _ => continue,
            };
            if written.map_err(|e| self.cache_err(attempt, e))? {
                last_media = Instant::now();
            }
            if out.bytes > MAX_PULL_BYTES || out.max_ms > MAX_PULL_SECS * 1000 {
                return Err(self.err(
                    attempt,
                    ErrorKind::Fail,
                    Fault::Unsupported,
                    format!(
                        "RTSP: the stream went on past the pull cap of {MAX_PULL_SECS} s or {MAX_PULL_BYTES} bytes (rtsp::MAX_PULL_SECS, rtsp::MAX_PULL_BYTES); give the item a relofftime end"
                    ),
                ));
            }
            if until.is_some_and(|end| out.reached(end)) {
                break Stop::Limit;
            }
        };
        if matches!(stop, Stop::StreamEnded) && !out.has_media() {
            return Err(self.err(
                attempt,
                ErrorKind::Retry,
                Fault::StreamEnded,
                "RTSP: the server ended the stream before any media",
            ));
        }
        Ok(())
    }

    fn cache_err(&self, attempt: u32, e: std::io::Error) -> WorkerError {
        self.err(
            attempt,
            ErrorKind::Fail,
            Fault::Local,
            format!("cache file: {e}"),
        )
    }
}

/// The FLV file a pull appends to, one flushed tag at a time (a reader may
/// follow it as it grows). Timestamps are ms from the start of the pull.
struct FlvOut {
    file: tokio::fs::File,
    started_unix_ms: u64,
    bytes: u64,
    /// Where this session's media time 0 falls in the file.
    base_ms: u64,
    max_ms: u64,
    last_video: Option<u64>,
    last_key: Option<u64>,
    last_audio: Option<u64>,
    avcc: Option<Vec<u8>>,
    asc: Option<Vec<u8>>,
    /// Whether this session's video has reached a keyframe (nothing is
    /// written before it, audio included, so every session starts decodable).
    keyed: bool,
    has_video: bool,
}

impl FlvOut {
    async fn create(
        path: &Path,
        audio: bool,
        video: bool,
        started_unix_ms: u64,
    ) -> std::io::Result<FlvOut> {
        let mut file = tokio::fs::File::create(path).await?;
        let mut head = flv::file_header(audio, video).to_vec();
        head.extend(tag(18, 0, &creation_metadata(started_unix_ms))?);
        file.write_all(&head).await?;
        file.flush().await?;
        Ok(FlvOut {
            file,
            started_unix_ms,
            bytes: head.len() as u64,
            base_ms: 0,
            max_ms: 0,
            last_video: None,
            last_key: None,
            last_audio: None,
            avcc: None,
            asc: None,
            keyed: !video,
            has_video: video,
        })
    }

    /// Whether the media covers `end`: [`MARGIN_MS`] past it, and (with
    /// video) a keyframe at or after it, or [`MAX_KEYFRAME_WAIT_MS`] past it.
    fn reached(&self, end: u64) -> bool {
        let keyed = !self.has_video || self.last_key.is_some_and(|k| k >= end);
        (keyed && self.max_ms >= end + MARGIN_MS) || self.max_ms >= end + MAX_KEYFRAME_WAIT_MS
    }

    fn has_media(&self) -> bool {
        self.last_video.is_some() || self.last_audio.is_some()
    }

    /// A new session continues after what is written.
    fn resume(&mut self) {
        if self.has_media() {
            self.base_ms = self.max_ms + RESUME_GAP_MS;
        }
        self.keyed = !self.has_video;
    }

    fn at(&self, t: retina::Timestamp) -> u64 {
        let ms = i128::from(t.elapsed()) * 1000 / i128::from(t.clock_rate().get());
        self.base_ms + u64::try_from(ms).unwrap_or(0)
    }

    async fn put(&mut self, kind: u8, ms: u64, body: &[u8]) -> std::io::Result<()> {
        // FLV's timestamps are 32 bits of ms (49 days): far past MAX_PULL_SECS.
        let t = tag(kind, ms as u32, body)?;
        self.file.write_all(&t).await?;
        self.file.flush().await?;
        self.bytes += t.len() as u64;
        self.max_ms = self.max_ms.max(ms);
        Ok(())
    }

    /// Writes one access unit (and a sequence header first when the
    /// parameter sets are new); `false` if it was dropped before a keyframe.
    async fn video(
        &mut self,
        f: &retina::codec::VideoFrame,
        avcc: Option<Vec<u8>>,
    ) -> std::io::Result<bool> {
        if !self.keyed && !f.is_random_access_point() {
            return Ok(false);
        }
        self.keyed = true;
        // RTP carries presentation times only: DTS = PTS, kept strictly
        // increasing (streams with B-frames are not reordered; see the design note).
        let ms = self.at(f.timestamp());
        let ms = self.last_video.map_or(ms, |l| ms.max(l + 1));
        if let Some(avcc) = avcc.filter(|a| self.avcc.as_ref() != Some(a)) {
            let head = flv::avc_sequence_header(&avcc).map_err(std::io::Error::other)?;
            self.put(9, ms, &head).await?;
            self.avcc = Some(avcc);
        }
        if self.avcc.is_none() {
            return Ok(false);
        }
        let body = flv::avc_frame(f.data(), f.is_random_access_point(), 0);
        self.put(9, ms, &body).await?;
        self.last_video = Some(ms);
        if f.is_random_access_point() {
            self.last_key = Some(ms);
        }
        Ok(true)
    }

    async fn audio(
        &mut self,
        f: &retina::codec::AudioFrame,
        asc: Option<Vec<u8>>,
    ) -> std::io::Result<bool> {
        if !self.keyed {
            return Ok(false);
        }
        let ms = self.at(f.timestamp());
        let ms = self.last_audio.map_or(ms, |l| ms.max(l + 1));
        if let Some(asc) = asc.filter(|a| self.asc.as_ref() != Some(a)) {
            self.put(8, ms, &flv::aac_sequence_header(&asc)).await?;
            self.asc = Some(asc);
        }
        if self.asc.is_none() {
            return Ok(false);
        }
        self.put(8, ms, &flv::aac_frame(f.data())).await?;
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
/// which `absofftime` resolves against (media::recording_start_ms).
fn creation_metadata(unix_ms: u64) -> Vec<u8> {
    use vodfleet_rtmp::amf0::Value;
    let s = vodfleet_proto::civil::iso8601_utc(unix_ms);
    let date = format!("{}.{:03}Z", s.trim_end_matches('Z'), unix_ms % 1000);
    let mut out = Vec::new();
    Value::string("onMetaData").encode(&mut out);
    Value::EcmaArray(vec![("creationdate".into(), Value::String(date))]).encode(&mut out);
    out
}

/// `%XX` escapes decoded (URL userinfo); invalid escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[path = "rtsp_tests.rs"]
mod tests;
