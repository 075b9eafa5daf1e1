//! What the server sends while we publish: control messages that need an answer,
//! status errors, EOF. A small task reads and decodes it; answers and the first
//! error wait in [`Shared`] for the writer (`Publisher::flush`).

use std::sync::{Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;

use crate::chunk::{ChunkReader, Message};
use crate::error::RtmpError;
use crate::message::{self, type_id, user_control, Command};

/// Incoming byte count and the server's acknowledgement window.
#[derive(Debug, Default)]
pub(super) struct AckState {
    window: u32,
    received: u64,
    acked: u64,
    /// The last Window Acknowledgement Size we sent in answer to Set Peer Bandwidth.
    answered_bandwidth: Option<u32>,
}

impl AckState {
    /// Counts `n` received bytes; an Acknowledgement is due each time the bytes
    /// received since the last one reach the server's window.
    pub(super) fn received(&mut self, n: usize) -> Option<Answer> {
        self.received += n as u64;
        if self.window > 0 && self.received - self.acked >= u64::from(self.window) {
            self.acked = self.received;
            return Some(Answer::Ack(self.received as u32));
        }
        None
    }
}

/// A control message we owe the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// Acknowledgement with the sequence number (bytes received, wrapping).
    Ack(u32),
    /// Ping Response echoing the request's timestamp.
    Pong(u32),
    /// Window Acknowledgement Size, answering Set Peer Bandwidth.
    WindowAckSize(u32),
}

impl Answer {
    /// Message type and body.
    pub(super) fn message(self) -> (u8, Bytes) {
        match self {
            Answer::Ack(n) => (type_id::ACK, message::acknowledgement(n)),
            Answer::Pong(t) => (
                type_id::USER_CONTROL,
                message::user_control(user_control::PING_RESPONSE, t),
            ),
            Answer::WindowAckSize(n) => (type_id::WINDOW_ACK_SIZE, message::window_ack_size(n)),
        }
    }
}

/// What an incoming message means for us.
#[derive(Debug)]
pub(super) enum Event {
    /// Nothing to do.
    Nothing,
    /// Send this back.
    Answer(Answer),
    /// A command (`_result`, `onStatus`, …).
    Command(Command),
}

/// Handles protocol and user control messages, decodes commands.
pub(super) fn classify(msg: &Message, acks: &mut AckState) -> Result<Event, RtmpError> {
    let body = &msg.payload[..];
    Ok(match msg.header.type_id {
        type_id::WINDOW_ACK_SIZE => {
            acks.window = message::read_u32(body, "Window Acknowledgement Size")?;
            Event::Nothing
        }
        type_id::SET_PEER_BANDWIDTH => {
            let size = message::read_u32(body, "Set Peer Bandwidth")?;
            if acks.answered_bandwidth == Some(size) {
                Event::Nothing
            } else {
                acks.answered_bandwidth = Some(size);
                Event::Answer(Answer::WindowAckSize(size))
            }
        }
        type_id::USER_CONTROL => match message::read_user_control(body)? {
            (user_control::PING_REQUEST, t) => Event::Answer(Answer::Pong(t)),
            _ => Event::Nothing,
        },
        type_id::COMMAND_AMF0 => Event::Command(Command::decode(body, false)?),
        type_id::COMMAND_AMF3 => Event::Command(Command::decode(body, true)?),
        // Set Chunk Size and Abort took effect in the chunk reader; acknowledgements,
        // media and data messages need nothing from a publisher.
        _ => Event::Nothing,
    })
}

/// An onStatus with level `error` as a refusal (texts scrubbed of `secrets`).
pub(super) fn status_error(cmd: &Command, secrets: &[&str]) -> Option<RtmpError> {
    (cmd.name == "onStatus" && cmd.info_str("level") == Some("error")).then(|| {
        RtmpError::refused(
            cmd.info_str("code").unwrap_or("onStatus error"),
            cmd.info_str("description").unwrap_or(""),
            secrets,
        )
    })
}

#[derive(Debug, Default)]
struct State {
    error: Option<RtmpError>,
    ack: Option<u32>,
    window: Option<u32>,
    pongs: [u32; 4],
    n_pongs: usize,
}

/// Between the reader task and the writer: the first error, and answers due.
#[derive(Debug, Default)]
pub(super) struct Shared {
    state: Mutex<State>,
    failed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `e` unless an error is already there, and wakes a waiting writer.
    pub(super) fn fail(&self, e: RtmpError) {
        self.lock().error.get_or_insert(e);
        self.failed.notify_waiters();
    }

    /// The first error the reader saw.
    pub(super) fn error(&self) -> Option<RtmpError> {
        self.lock().error.clone()
    }

    /// Keeps an answer for the writer (only the latest ack/window and the last
    /// four pings matter).
    pub(super) fn push(&self, a: Answer) {
        let mut s = self.lock();
        match a {
            Answer::Ack(n) => s.ack = Some(n),
            Answer::WindowAckSize(n) => s.window = Some(n),
            Answer::Pong(t) => {
                let i = s.n_pongs.min(3);
                s.pongs[i] = t;
                s.n_pongs = i + 1;
            }
        }
    }

    /// Hands every pending answer to `f` and forgets them.
    pub(super) fn take_answers(&self, mut f: impl FnMut(Answer)) {
        let mut s = self.lock();
        if let Some(n) = s.window.take() {
            f(Answer::WindowAckSize(n));
        }
        if let Some(n) = s.ack.take() {
            f(Answer::Ack(n));
        }
        for i in 0..s.n_pongs {
            f(Answer::Pong(s.pongs[i]));
        }
        s.n_pongs = 0;
    }

    /// Returns once an error has been recorded.
    pub(super) async fn failed(&self) {
        loop {
            let notified = self.failed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().error.is_some() {
                return;
            }
            notified.await;
        }
    }
}

/// Everything the reader task takes over from the connection setup.
pub(super) struct ReaderParts {
    pub(super) buf: BytesMut,
    pub(super) chunks: ChunkReader,
    pub(super) acks: AckState,
    pub(super) secrets: [String; 2],
}

/// The reader task: runs until EOF, a read error, a protocol error or a status
/// error, records it in `shared`, and ends. (The publisher aborts it when dropped.)
pub(super) async fn run<R: AsyncRead + Unpin>(
    mut rd: R,
    mut parts: ReaderParts,
    shared: std::sync::Arc<Shared>,
) {
    let e = read_until_error(&mut rd, &mut parts, &shared).await;
    tracing::debug!(error = %e, "RTMP reader stopped");
    shared.fail(e);
}

async fn read_until_error<R: AsyncRead + Unpin>(
    rd: &mut R,
    p: &mut ReaderParts,
    shared: &Shared,
) -> RtmpError {
    let secrets = [p.secrets[0].as_str(), p.secrets[1].as_str()];
    loop {
        loop {
            let msg = match p.chunks.read(&mut p.buf) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => return e,
            };
            match classify(&msg, &mut p.acks) {
                Err(e) => return e,
                Ok(Event::Answer(a)) => shared.push(a),
                Ok(Event::Command(c)) => {
                    if let Some(e) = status_error(&c, &secrets) {
                        return e;
                    }
                    if c.name == "close" {
                        return RtmpError::Closed {
                            reason: "the server sent close".to_owned(),
                        };
                    }
                }
                Ok(Event::Nothing) => {}
            }
        }
        p.buf.reserve(4096);
        match rd.read_buf(&mut p.buf).await {
            Ok(0) => {
                return RtmpError::Closed {
                    reason: "the server closed the connection".to_owned(),
                }
            }
            Ok(n) => {
                if let Some(a) = p.acks.received(n) {
                    shared.push(a);
                }
            }
            Err(e) => {
                return RtmpError::Closed {
                    reason: e.to_string(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_follow_the_window() {
        let mut a = AckState::default();
        assert_eq!(a.received(10_000), None, "no window, no acks");
        a.window = 2500;
        assert_eq!(a.received(1000), Some(Answer::Ack(11_000)));
        assert_eq!(a.received(2499), None);
        assert_eq!(a.received(1), Some(Answer::Ack(13_500)));
    }

    #[test]
    fn shared_keeps_latest_answers() {
        let s = Shared::default();
        for a in [
            Answer::Ack(1),
            Answer::Ack(2),
            Answer::Pong(5),
            Answer::WindowAckSize(9),
        ] {
            s.push(a);
        }
        for t in 10..20 {
            s.push(Answer::Pong(t));
        }
        let mut got = Vec::new();
        s.take_answers(|a| got.push(a));
        assert_eq!(
            got,
            [
                Answer::WindowAckSize(9),
                Answer::Ack(2),
                Answer::Pong(5),
                Answer::Pong(10),
                Answer::Pong(11),
                Answer::Pong(19)
            ]
        );
        let mut again = Vec::new();
        s.take_answers(|a| again.push(a));
        assert!(again.is_empty());
        s.fail(RtmpError::Closed { reason: "a".into() });
        s.fail(RtmpError::Closed { reason: "b".into() });
        assert_eq!(s.error(), Some(RtmpError::Closed { reason: "a".into() }));
    }
}
