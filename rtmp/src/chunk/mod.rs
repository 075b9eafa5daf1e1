//! The RTMP chunk stream: messages cut into chunks with compressed headers.
//!
//! [`ChunkWriter`] turns outgoing messages into chunk headers plus *slices* of the
//! message payload, appended to an [`OutQueue`] that is written with vectored
//! writes; the payload bytes are never copied. It uses type 0 headers for the
//! first message of a chunk stream (or when the message stream changes, time goes
//! backwards or the delta needs an extended timestamp), type 1 (timestamp delta,
//! length, type) for the next ones, and type 3 for every continuation chunk.
//! Timestamps ≥ 0xFFFFFF go into the extended timestamp field, which is repeated
//! on the message's type 3 continuation chunks (as Flash, ffmpeg and nginx-rtmp
//! with `publish_time_fix` expect).
//!
//! [`ChunkReader`] reassembles incoming chunks into [`Message`]s, honouring the
//! peer's Set Chunk Size and Abort messages, and rejects hostile input with
//! [`RtmpError::Protocol`] (never a panic, never an unbounded allocation).

mod read;
mod write;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

pub use read::ChunkReader;
pub use write::ChunkWriter;

/// The chunk size both sides start with.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;

/// The largest message an RTMP length field (24 bits) can describe.
pub const MAX_MESSAGE_LEN: usize = 0xFF_FFFF;

/// The largest chunk stream id the 3-byte basic header can carry.
pub const MAX_CSID: u32 = 65_599;

/// Where and when a message goes; its length is its payload's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    /// Chunk stream id (2..=65599; 2 is for protocol control messages).
    pub csid: u32,
    /// RTMP timestamp in milliseconds (wraps at 2³²).
    pub timestamp: u32,
    /// Message type id (see [`crate::message::type_id`]).
    pub type_id: u8,
    /// Message stream id (0 for the connection, the createStream result after).
    pub stream_id: u32,
}

/// A complete incoming message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The header it arrived with (timestamp resolved to an absolute value).
    pub header: MessageHeader,
    /// The reassembled body.
    pub payload: Bytes,
}

/// One piece of the outgoing byte stream.
#[derive(Debug)]
enum Segment {
    /// `OutQueue::headers[start..end]`.
    Header { start: usize, end: usize },
    /// A slice of a message payload (shared, not copied).
    Payload(Bytes),
}

/// Outgoing bytes waiting to be written: chunk headers in one reused buffer,
/// payloads as reference-counted slices, in stream order.
#[derive(Debug, Default)]
pub struct OutQueue {
    headers: Vec<u8>,
    segments: VecDeque<Segment>,
    len: usize,
}

impl OutQueue {
    /// An empty queue.
    pub fn new() -> OutQueue {
        OutQueue::default()
    }

    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of separate pieces (iovecs) queued.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    fn push_header(&mut self, bytes: &[u8]) {
        let start = self.headers.len();
        self.headers.extend_from_slice(bytes);
        let end = self.headers.len();
        self.len += bytes.len();
        if let Some(Segment::Header { end: last_end, .. }) = self.segments.back_mut() {
            if *last_end == start {
                *last_end = end;
                return;
            }
        }
        self.segments.push_back(Segment::Header { start, end });
    }

    fn push_payload(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.segments.push_back(Segment::Payload(bytes));
        }
    }

    /// Fills `dst` with the first queued pieces; returns how many it filled.
    pub fn io_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, seg) in dst.iter_mut().zip(self.segments.iter()) {
            *slot = IoSlice::new(match seg {
                Segment::Header { start, end } => &self.headers[*start..*end],
                Segment::Payload(b) => b,
            });
            n += 1;
        }
        n
    }

    /// Drops the first `n` bytes (they were written).
    pub fn advance(&mut self, mut n: usize) {
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.segments.front_mut() else {
                break;
            };
            let seg_len = match front {
                Segment::Header { start, end } => *end - *start,
                Segment::Payload(b) => b.len(),
            };
            if n >= seg_len {
                n -= seg_len;
                self.segments.pop_front();
            } else {
                match front {
                    Segment::Header { start, .. } => *start += n,
                    Segment::Payload(b) => b.advance(n),
                }
                n = 0;
            }
        }
        if self.segments.is_empty() {
            self.headers.clear();
        }
    }

    /// Forgets everything queued.
    pub fn clear(&mut self) {
        self.segments.clear();
        self.headers.clear();
        self.len = 0;
    }

    /// A copy of the queued bytes (tests and diagnostics).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        for seg in &self.segments {
            match seg {
                Segment::Header { start, end } => v.extend_from_slice(&self.headers[*start..*end]),
                Segment::Payload(b) => v.extend_from_slice(b),
            }
        }
        v
    }
}
