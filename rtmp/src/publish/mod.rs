//! Publishing FLV tags live to an RTMP(S) server.
//!
//! [`Publisher::connect`] opens TCP (or TLS), does the handshake and the
//! connect → releaseStream/FCPublish/createStream → publish exchange. Then the
//! caller [`queue`](Publisher::queue)s tags (chunk headers are built, payloads are
//! sliced, never copied) and [`flush`](Publisher::flush)es them with vectored
//! writes: one `writev` for everything queued in one wake-up, as long as it fits
//! 64 pieces. A small reader task decodes what the server sends meanwhile (acks,
//! pings, status errors, EOF); `flush` sends the answers and reports its errors.
//!
//! Rules for the caller:
//! - Timestamps are RTMP timestamps (DTS in ms, wrapping at 2³²) and must not go
//!   backwards per [`TagKind`]: each kind has its own chunk stream and
//!   timestamp deltas are computed per chunk stream. Start at or near 0 for a
//!   new connection.
//! - After a reconnect send the metadata, the AVC and AAC sequence headers again,
//!   then start video at a keyframe: the new session knows nothing.
//! - Any error from `flush` is final for this `Publisher` (later calls return it
//!   again); drop it (or [`close`](Publisher::close) it) and connect anew if
//!   [`ErrorKind::is_retryable`](crate::error::ErrorKind::is_retryable).

mod reader;
mod session;
mod tls;

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::amf0::Value;
use crate::chunk::{ChunkWriter, MessageHeader, OutQueue};
use crate::error::RtmpError;
use crate::message::{type_id, Command, CONTROL_CSID};
use crate::url::Target;

pub use tls::TlsRoots;

/// The kind of an FLV tag, which is also its RTMP message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagKind {
    /// Audio (message type 8).
    Audio = 8,
    /// Video (message type 9).
    Video = 9,
    /// Script data such as `onMetaData` (message type 18, AMF0).
    Data = 18,
}

impl TagKind {
    /// The RTMP message type id.
    pub fn type_id(self) -> u8 {
        self as u8
    }

    /// The chunk stream this kind travels on (audio 4, data 5, video 6).
    fn csid(self) -> u32 {
        match self {
            TagKind::Audio => 4,
            TagKind::Data => 5,
            TagKind::Video => 6,
        }
    }
}

/// One FLV tag to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// Audio, video or data.
    pub kind: TagKind,
    /// RTMP timestamp (decode time in ms; wraps at 2³²).
    pub timestamp_ms: u32,
    /// The tag body (see [`crate::flv`]); shared, never copied.
    pub payload: Bytes,
}

/// How to connect and publish.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// Bounds TCP connect + TLS + handshake + connect/createStream/publish
    /// together, and separately each [`Publisher::flush`].
    pub timeout: Duration,
    /// Outgoing chunk size (sent as Set Chunk Size before connect). Large chunks
    /// mean one chunk header per tag; nginx-rtmp and ffmpeg accept any size.
    pub chunk_size: u32,
    /// Trust anchors for `rtmps://`; `None` uses [`TlsRoots::public`].
    pub tls: Option<Arc<TlsRoots>>,
}

impl Default for PublishOptions {
    /// 10 s timeout, 64 KiB chunks, public TLS roots.
    fn default() -> Self {
        PublishOptions {
            timeout: Duration::from_secs(10),
            chunk_size: 65_536,
            tls: None,
        }
    }
}

/// Most pieces (chunk headers and payload slices) given to one `writev`.
const MAX_IOVECS: usize = 64;

/// Writes everything in `q` with vectored writes, then flushes `io`. Progress is
/// recorded in `q` after each write, so a cancelled call loses nothing.
async fn write_queue<W: AsyncWrite + Unpin + ?Sized>(
    io: &mut W,
    q: &mut OutQueue,
) -> std::io::Result<()> {
    while !q.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = q.io_slices(&mut slices);
        let written = io.write_vectored(&slices[..n]).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        q.advance(written);
    }
    io.flush().await
}

/// A live publishing session (see the module doc). Dropping it ends the reader
/// task and closes the connection; [`close`](Publisher::close) first tells the
/// server.
pub struct Publisher {
    io: Box<dyn AsyncWrite + Send + Unpin>,
    chunks: ChunkWriter,
    queue: OutQueue,
    stream_id: u32,
    /// A secret (it is the stream key): sent in FCUnpublish, never printed.
    stream_name: String,
    shared: Arc<reader::Shared>,
    reader: JoinHandle<()>,
    timeout: Duration,
    failed: Option<RtmpError>,
    span: tracing::Span,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("stream_id", &self.stream_id)
            .field("queued_bytes", &self.queue.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Connects to `target` and publishes its stream name as `live` (see the
    /// module doc for what is sent). Errors: [`RtmpError::Unreachable`] (DNS,
    /// TCP), [`RtmpError::Tls`], [`RtmpError::TimedOut`] (the whole setup took
    /// longer than `opts.timeout`), [`RtmpError::Refused`] (`_error`, an error
    /// status, or the server hanging up in answer to publish),
    /// [`RtmpError::Closed`] (the server hung up earlier), [`RtmpError::Protocol`].
    pub async fn connect(target: &Target, opts: &PublishOptions) -> Result<Publisher, RtmpError> {
        let span = tracing::info_span!("rtmp", dest = %target.redacted());
        session::establish(target, opts, span.clone())
            .instrument(span)
            .await
    }

    /// The message stream id the server gave us.
    pub fn stream_id(&self) -> u32 {
        self.stream_id
    }

    /// Appends `tag` to the outgoing queue: chunk headers plus slices of
    /// `tag.payload`. A payload over RTMP's 16 MiB message limit makes the
    /// publisher fail (the next flush returns [`RtmpError::Protocol`]).
    pub fn queue(&mut self, tag: &Tag) {
        if self.failed.is_some() {
            return;
        }
        let h = MessageHeader {
            csid: tag.kind.csid(),
            timestamp: tag.timestamp_ms,
            type_id: tag.kind.type_id(),
            stream_id: self.stream_id,
        };
        if let Err(e) = self.chunks.write(&h, &tag.payload, &mut self.queue) {
            self.failed = Some(e);
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queue.len()
    }

    fn queue_answers(&mut self) {
        let (chunks, queue) = (&mut self.chunks, &mut self.queue);
        self.shared.take_answers(|a| {
            let (ty, body) = a.message();
            let h = MessageHeader {
                csid: CONTROL_CSID,
                timestamp: 0,
                type_id: ty,
                stream_id: 0,
            };
            // Control bodies are a few bytes on csid 2: this cannot fail.
            let _ = chunks.write(&h, &body, queue);
        });
    }

    fn fail(&mut self, e: RtmpError) -> RtmpError {
        // The reader's error (e.g. the server's refusal) explains a failed write
        // better than the write's own (broken pipe).
        let e = self.shared.error().unwrap_or(e);
        self.failed = Some(e.clone());
        e
    }

    /// Writes everything queued (plus answers owed to the server) with as few
    /// vectored writes as possible, within the publish timeout. Returns the
    /// reader task's error if it saw one (status error → `Refused`, EOF →
    /// `Closed`); a blocked write is abandoned as soon as such an error arrives.
    pub async fn flush(&mut self) -> Result<(), RtmpError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if let Some(e) = self.shared.error() {
            return Err(self.fail(e));
        }
        self.queue_answers();
        if self.queue.is_empty() {
            return Ok(());
        }
        let write = async {
            tokio::select! {
                biased;
                r = write_queue(&mut self.io, &mut self.queue) => r.map_err(|e| RtmpError::Closed { reason: e.to_string() }),
                () = self.shared.failed() => Err(self.shared.error().unwrap_or(RtmpError::Closed { reason: "reader stopped".into() })),
            }
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.fail(e)),
            Err(_) => Err(self.fail(RtmpError::TimedOut {
                stage: "flush",
                after: self.timeout,
            })),
        }
    }

    /// Ends the session politely within `timeout`: anything queued is written,
    /// then FCUnpublish and deleteStream, then the connection is shut down and
    /// the server's answers are read until it closes. Best effort: errors are
    /// ignored (the reader task is stopped in any case).
    pub async fn close(mut self, timeout: Duration) {
        let span = self.span.clone();
        let polite = async {
            if self.failed.is_none() && self.shared.error().is_none() {
                let name = Value::string(self.stream_name.as_str());
                let cmds = [
                    (0, Command::new("FCUnpublish", 6.0, Value::Null, vec![name])),
                    (
                        0,
                        Command::new(
                            "deleteStream",
                            7.0,
                            Value::Null,
                            vec![Value::Number(self.stream_id.into())],
                        ),
                    ),
                ];
                for (stream_id, c) in cmds {
                    let h = MessageHeader {
                        csid: session::COMMAND_CSID,
                        timestamp: 0,
                        type_id: type_id::COMMAND_AMF0,
                        stream_id,
                    };
                    let _ = self.chunks.write(&h, &c.encode(), &mut self.queue);
                }
                if let Err(e) = write_queue(&mut self.io, &mut self.queue).await {
                    tracing::debug!(error = %e, "closing: write failed");
                }
            }
            let _ = self.io.shutdown().await;
            // The server closes its side once it has seen ours; reading until
            // then keeps unread answers from turning our close into a reset.
            let _ = (&mut self.reader).await;
        };
        if tokio::time::timeout(timeout, polite.instrument(span))
            .await
            .is_err()
        {
            tracing::debug!("closing: server did not hang up within {timeout:?}");
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The engine runs publishers on any runtime: connect and flush must be Send.
    #[allow(dead_code)]
    fn futures_are_send(t: &Target, o: &PublishOptions, p: &mut Publisher) {
        assert_send(&Publisher::connect(t, o));
        assert_send(&p.flush());
    }

    #[test]
    fn tag_kinds_are_message_types() {
        assert_eq!(
            [TagKind::Audio, TagKind::Video, TagKind::Data].map(TagKind::type_id),
            [type_id::AUDIO, type_id::VIDEO, type_id::DATA_AMF0]
        );
        let o = PublishOptions::default();
        assert_eq!((o.timeout, o.chunk_size), (Duration::from_secs(10), 65_536));
    }
}
