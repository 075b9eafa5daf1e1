//! Connection setup: TCP (+TLS), handshake, connect, createStream, publish.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tracing::Instrument;

use super::reader::{self, AckState, Event, ReaderParts, Shared};
use super::{write_queue, PublishOptions, Publisher, TlsRoots};
use crate::amf0::Value;
use crate::chunk::{ChunkReader, ChunkWriter, MessageHeader, OutQueue};
use crate::error::RtmpError;
use crate::handshake;
use crate::message::{self, type_id, Command, CONTROL_CSID};
use crate::url::Target;

/// The chunk stream our commands travel on.
pub(super) const COMMAND_CSID: u32 = 3;

/// `flashVer` in connect: what encoders such as ffmpeg and OBS send when publishing.
const FLASH_VER: &str = "FMLE/3.0 (compatible; vodfleet)";

/// The reason of a `Closed` error for a clean end of the stream.
const EOF: &str = "the server closed the connection";

const STAGES: [&str; 6] = [
    "connecting",
    "TLS handshake",
    "RTMP handshake",
    "connect",
    "createStream",
    "publish",
];

/// Connects and publishes, all within `opts.timeout`.
pub(super) async fn establish(
    target: &Target,
    opts: &PublishOptions,
    span: tracing::Span,
) -> Result<Publisher, RtmpError> {
    let stage = AtomicU8::new(0);
    let setup = async {
        let tcp = tcp_connect(target).await?;
        if target.is_tls() {
            stage.store(1, Ordering::Relaxed);
            let roots = opts.tls.clone().unwrap_or_else(TlsRoots::public);
            let tls = roots.connect(target.host(), tcp).await?;
            publish_over(tls, target, opts, &stage, span).await
        } else {
            publish_over(tcp, target, opts, &stage, span).await
        }
    };
    match tokio::time::timeout(opts.timeout, setup).await {
        Ok(r) => r,
        Err(_) => Err(RtmpError::TimedOut {
            stage: STAGES[usize::from(stage.load(Ordering::Relaxed)).min(STAGES.len() - 1)],
            after: opts.timeout,
        }),
    }
}

async fn tcp_connect(target: &Target) -> Result<TcpStream, RtmpError> {
    let (host, port) = (target.host(), target.port());
    let addrs =
        tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| RtmpError::Unreachable {
                reason: format!("cannot resolve {host}: {e}"),
            })?;
    let mut last = format!("{host} resolved to no address");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(RtmpError::Unreachable { reason: last })
}

/// The connection during setup: we alternate between writing commands and
/// reading until the answer we wait for arrives.
struct Setup<S> {
    io: S,
    out: OutQueue,
    chunks_out: ChunkWriter,
    parts: ReaderParts,
}

fn closed(e: std::io::Error) -> RtmpError {
    RtmpError::Closed {
        reason: e.to_string(),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Setup<S> {
    fn queue(
        &mut self,
        csid: u32,
        type_id: u8,
        stream_id: u32,
        body: &Bytes,
    ) -> Result<(), RtmpError> {
        let h = MessageHeader {
            csid,
            timestamp: 0,
            type_id,
            stream_id,
        };
        self.chunks_out.write(&h, body, &mut self.out)
    }

    fn command(
        &mut self,
        stream_id: u32,
        name: &str,
        txn: f64,
        object: Value,
        args: Vec<Value>,
    ) -> Result<(), RtmpError> {
        let body = Command::new(name, txn, object, args).encode();
        self.queue(COMMAND_CSID, type_id::COMMAND_AMF0, stream_id, &body)
    }

    async fn send(&mut self) -> Result<(), RtmpError> {
        write_queue(&mut self.io, &mut self.out)
            .await
            .map_err(closed)
    }

    /// Reads until the next command, answering control messages on the way.
    async fn next_command(&mut self) -> Result<Command, RtmpError> {
        loop {
            while let Some(msg) = self.parts.chunks.read(&mut self.parts.buf)? {
                match reader::classify(&msg, &mut self.parts.acks)? {
                    Event::Nothing => {}
                    Event::Command(c) => return Ok(c),
                    Event::Answer(a) => {
                        let (ty, body) = a.message();
                        self.queue(CONTROL_CSID, ty, 0, &body)?;
                        self.send().await?;
                    }
                }
            }
            self.parts.buf.reserve(4096);
            let n = self
                .io
                .read_buf(&mut self.parts.buf)
                .await
                .map_err(closed)?;
            if n == 0 {
                return Err(RtmpError::Closed {
                    reason: EOF.to_owned(),
                });
            }
            if let Some(a) = self.parts.acks.received(n) {
                let (ty, body) = a.message();
                self.queue(CONTROL_CSID, ty, 0, &body)?;
                self.send().await?;
            }
        }
    }

    /// Waits for `_result` to transaction `txn`; `_error` to it or an onStatus
    /// error is a refusal. Errors to other transactions (releaseStream and
    /// FCPublish, which many servers do not know) are ignored.
    async fn result(&mut self, txn: f64) -> Result<Command, RtmpError> {
        loop {
            let c = self.next_command().await?;
            let secrets = [
                self.parts.secrets[0].as_str(),
                self.parts.secrets[1].as_str(),
            ];
            if let Some(e) = reader::status_error(&c, &secrets) {
                return Err(e);
            }
            if c.transaction != txn {
                continue;
            }
            match c.name.as_str() {
                "_result" if c.info_str("level") == Some("error") => {
                    return Err(refusal(&c, "_result error", &secrets))
                }
                "_result" => return Ok(c),
                "_error" => return Err(refusal(&c, "_error", &secrets)),
                _ => {}
            }
        }
    }
}

fn refusal(c: &Command, fallback: &str, secrets: &[&str]) -> RtmpError {
    RtmpError::refused(
        c.info_str("code").unwrap_or(fallback),
        c.info_str("description").unwrap_or(""),
        secrets,
    )
}

async fn publish_over<S>(
    mut io: S,
    target: &Target,
    opts: &PublishOptions,
    stage: &AtomicU8,
    span: tracing::Span,
) -> Result<Publisher, RtmpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    stage.store(2, Ordering::Relaxed);
    handshake::client(&mut io).await?;
    let secrets = target.secrets().map(str::to_owned);
    let mut s = Setup {
        io,
        out: OutQueue::new(),
        chunks_out: ChunkWriter::new(),
        parts: ReaderParts {
            buf: BytesMut::with_capacity(8192),
            chunks: ChunkReader::new(),
            acks: AckState::default(),
            secrets,
        },
    };

    // Set Chunk Size first (ffmpeg's server accepts exactly one message before
    // connect, and that one), then connect.
    stage.store(3, Ordering::Relaxed);
    let chunk_size = opts.chunk_size.clamp(1, 0x7FFF_FFFF);
    s.queue(
        CONTROL_CSID,
        type_id::SET_CHUNK_SIZE,
        0,
        &message::set_chunk_size(chunk_size),
    )?;
    s.chunks_out.set_chunk_size(chunk_size);
    let connect = Value::object([
        ("app", Value::string(target.app())),
        ("type", Value::string("nonprivate")),
        ("flashVer", Value::string(FLASH_VER)),
        ("tcUrl", Value::string(target.tc_url())),
    ]);
    s.command(0, "connect", 1.0, connect, vec![])?;
    s.send().await?;
    s.result(1.0).await?;

    stage.store(4, Ordering::Relaxed);
    let name = Value::string(target.stream_name());
    s.command(0, "releaseStream", 2.0, Value::Null, vec![name.clone()])?;
    s.command(0, "FCPublish", 3.0, Value::Null, vec![name.clone()])?;
    s.command(0, "createStream", 4.0, Value::Null, vec![])?;
    s.send().await?;
    let created = s.result(4.0).await?;
    let stream_id = created
        .args
        .iter()
        .find_map(Value::as_f64)
        .filter(|id| id.is_finite() && *id >= 0.0 && *id <= f64::from(u32::MAX))
        .ok_or_else(|| RtmpError::protocol("createStream _result without a valid stream id"))?
        as u32;

    stage.store(5, Ordering::Relaxed);
    s.command(
        stream_id,
        "publish",
        5.0,
        Value::Null,
        vec![name, Value::string("live")],
    )?;
    s.send().await?;
    wait_publish_start(&mut s).await?;
    tracing::debug!(stream_id, "publishing");

    let Setup {
        io,
        chunks_out,
        parts,
        ..
    } = s;
    let (rd, wr) = tokio::io::split(io);
    let shared = Arc::new(Shared::default());
    let reader = tokio::spawn(reader::run(rd, parts, shared.clone()).instrument(span.clone()));
    Ok(Publisher {
        io: Box::new(wr),
        chunks: chunks_out,
        queue: OutQueue::new(),
        stream_id,
        stream_name: target.stream_name().to_owned(),
        shared,
        reader,
        timeout: opts.timeout,
        failed: None,
        span,
    })
}

/// After `publish`: onStatus `NetStream.Publish.Start` is success; an error
/// status, `_error`, or the server hanging up (nginx-rtmp's answer when its
/// `on_publish` hook says no) is a refusal.
async fn wait_publish_start<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Setup<S>,
) -> Result<(), RtmpError> {
    loop {
        let c = match s.next_command().await {
            Ok(c) => c,
            Err(RtmpError::Closed { reason }) => {
                return Err(RtmpError::Refused {
                    code: "connection closed".to_owned(),
                    description: if reason == EOF {
                        "the server hung up in answer to publish".to_owned()
                    } else {
                        format!("the server hung up in answer to publish ({reason})")
                    },
                })
            }
            Err(e) => return Err(e),
        };
        let secrets = [s.parts.secrets[0].as_str(), s.parts.secrets[1].as_str()];
        if let Some(e) = reader::status_error(&c, &secrets) {
            return Err(e);
        }
        if c.name == "_error" && c.transaction == 5.0 {
            return Err(refusal(&c, "_error", &secrets));
        }
        if c.name == "onStatus" && c.info_str("code") == Some("NetStream.Publish.Start") {
            return Ok(());
        }
    }
}
