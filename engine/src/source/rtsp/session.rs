//! One RTSP session of a pull: `DESCRIBE`, `SETUP`, `PLAY` with `retina`,
//! then depacketised frames appended as FLV tags until the pull has what
//! its items need, the server ends the stream, or the session fails.

use super::flv::FlvOut;
use super::{Ctx, Progress, MAX_PULL_BYTES, MAX_PULL_SECS, RTCP_BYE};
use crate::error::{ErrorKind, Fault, WorkerError};
use crate::source::cache::Producer;
use futures_util::StreamExt;
use retina::client::{
    Credentials, InitialTimestampPolicy, PlayOptions, SessionOptions, SetupOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use std::time::Instant;
use tokio::sync::watch;
use vodfleet_net as policy;
use vodfleet_proto::redact;

pub(super) struct Pull<'a> {
    pub(super) ctx: &'a Ctx,
    /// The source's URL as given (shown redacted).
    pub(super) shown: &'a str,
    /// The URL without credentials; its host is replaced by the checked address.
    pub(super) bare: url::Url,
    pub(super) creds: Option<Credentials>,
}

/// Where the pull's bytes go: the cache entry's producer until the first
/// session has played, then the FLV stream that owns it.
pub(super) enum Out {
    Before(Producer, watch::Sender<Progress>),
    Flv(FlvOut),
    Gone,
}

/// Why an attempt's pull stopped without an error.
enum Stop {
    Limit,
    StreamEnded,
}

impl Pull<'_> {
    pub(super) fn err(
        &self,
        attempt: u32,
        kind: ErrorKind,
        fault: Fault,
        cause: impl Into<String>,
    ) -> WorkerError {
        WorkerError::Source {
            task: self.ctx.task_id.clone(),
            url: redact::source(self.shown),
            attempt,
            attempts: self.ctx.cfg.source_attempts,
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
        let limit = self.ctx.cfg.source_timeout;
        tokio::select! {
            r = tokio::time::timeout(limit, fut) => r.map_err(|_| self.err(
                attempt,
                ErrorKind::Retry,
                Fault::TimedOut,
                format!("RTSP {what}: no answer for {} ms", limit.as_millis()),
            )),
            _ = self.ctx.cancel.cancelled() => Err(self.err(attempt, ErrorKind::Fail, Fault::Local, "task stopped")),
        }
    }

    /// The URL retina dials: the host checked by the URL policy, a name
    /// replaced by one of its allowed addresses.
    async fn target(&self, attempt: u32) -> Result<url::Url, WorkerError> {
        let mut t = self.bare.clone();
        if let Some(url::Host::Domain(host)) = self.bare.host() {
            let addrs =
                match policy::resolve_allowed(host, self.ctx.cfg.allow_private_networks).await {
                    Ok(a) => a,
                    Err(policy::NameError::Refused(why)) => {
                        return Err(self.ctx.refuse(self.shown, why))
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

    pub(super) async fn attempt(&self, attempt: u32, out: &mut Out) -> Result<(), WorkerError> {
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
                task: self.ctx.task_id.clone(),
                cause: format!(
                    "RTSP source {}: no H.264 video or AAC audio stream (it offers: {})",
                    redact::source(self.shown),
                    offered.join(", ")
                ),
            });
        }
        for (i, s) in streams.iter().enumerate() {
            if Some(i) != video && Some(i) != audio && matches!(s.media(), "video" | "audio") {
                tracing::warn!(task.id = %self.ctx.task_id, url = %redact::source(self.shown), stream = i, codec = %s.encoding_name(), "RTSP stream not pulled: only H.264 and AAC are carried");
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
        if let Out::Before(..) = out {
            let Out::Before(producer, progress) = std::mem::replace(out, Out::Gone) else {
                unreachable!()
            };
            progress.send_modify(|p| p.started_unix_ms = Some(started_unix_ms));
            let flv = FlvOut::create(
                producer,
                progress,
                audio.is_some(),
                video.is_some(),
                started_unix_ms,
            )
            .map_err(|e| self.cache_err(attempt, e))?;
            *out = Out::Flv(flv);
        } else if let Out::Flv(o) = out {
            o.resume();
            tracing::info!(task.id = %self.ctx.task_id, url = %redact::source(self.shown), attempt, after_ms = o.base_ms, "RTSP pull resumed: appending");
        }
        let Out::Flv(out) = out else {
            return Err(self.cache_err(attempt, std::io::Error::other("the stream is gone")));
        };
        let until = self.ctx.limits.until(self.shown, out.started_unix_ms);
        tracing::info!(task.id = %self.ctx.task_id, url = %redact::source(self.shown), attempt, until_ms = until, "RTSP pull playing");
        let mut byes = [video.is_none(), audio.is_none()];
        let mut last_media = Instant::now();
        let stop = loop {
            let deadline = last_media + self.ctx.cfg.source_timeout;
            let item = tokio::select! {
                r = tokio::time::timeout_at(deadline.into(), demuxed.next()) => r,
                _ = self.ctx.cancel.cancelled() => return Err(self.err(attempt, ErrorKind::Fail, Fault::Local, "task stopped")),
            };
            let item = match item {
                Err(_) => {
                    return Err(self.err(
                        attempt,
                        ErrorKind::Retry,
                        Fault::TimedOut,
                        format!(
                            "RTSP: no media for {} ms",
                            self.ctx.cfg.source_timeout.as_millis()
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
                        Some(ParametersRef::Video(p)) => {
                            Some((p.extra_data().to_vec(), p.frame_rate()))
                        }
                        _ => None,
                    };
                    out.video(&f, params)
                }
                CodecItem::AudioFrame(f) if Some(f.stream_id()) == audio => {
                    let asc = match demuxed.streams()[f.stream_id()].parameters() {
                        Some(ParametersRef::Audio(p)) => Some(p.extra_data().to_vec()),
                        _ => None,
                    };
                    out.audio(&f, asc)
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
            if out.bytes() > MAX_PULL_BYTES || out.max_ms > MAX_PULL_SECS * 1000 {
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
