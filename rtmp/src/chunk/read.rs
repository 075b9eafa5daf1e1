//! Incoming chunk stream: reassembly into messages.

use bytes::{Buf, BytesMut};

use super::{Message, MessageHeader, DEFAULT_CHUNK_SIZE};
use crate::error::RtmpError;
use crate::message::type_id;

/// How many chunk streams a peer may use at once.
const MAX_CHUNK_STREAMS: usize = 64;

/// Default limit on one incoming message (what servers send a publisher is tiny;
/// nginx-rtmp uses the same limit in the other direction).
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;

/// Per chunk stream: the last header (for compressed headers) and the message
/// being reassembled.
#[derive(Debug)]
struct InStream {
    csid: u32,
    /// Whether a type 0/1 header was seen (length and type are known).
    known: bool,
    timestamp: u32,
    delta: u32,
    len: usize,
    type_id: u8,
    stream_id: u32,
    /// Whether the last type 0/1/2 header carried an extended timestamp: its type 3
    /// chunks carry one too.
    ext: bool,
    in_progress: bool,
    partial: BytesMut,
}

/// Reassembles chunks into messages (see the module doc).
#[derive(Debug)]
pub struct ChunkReader {
    chunk_size: usize,
    max_message: usize,
    streams: Vec<InStream>,
}

impl Default for ChunkReader {
    fn default() -> Self {
        ChunkReader::new()
    }
}

enum Step {
    NeedMore,
    Partial,
    Done(Message),
}

fn be24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl ChunkReader {
    /// A reader with the initial chunk size (128) and a 1 MiB message limit.
    pub fn new() -> ChunkReader {
        ChunkReader::with_max_message(DEFAULT_MAX_MESSAGE)
    }

    /// A reader that refuses messages longer than `max_message` bytes.
    pub fn with_max_message(max_message: usize) -> ChunkReader {
        ChunkReader {
            chunk_size: DEFAULT_CHUNK_SIZE as usize,
            max_message,
            streams: Vec::new(),
        }
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size as u32
    }

    /// Consumes whole chunks from the front of `buf` until one completes a
    /// message (returned) or `buf` holds only part of a chunk (`Ok(None)`; feed
    /// more bytes and call again). Set Chunk Size and Abort messages take effect
    /// here and are returned too.
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, RtmpError> {
        loop {
            match self.chunk(buf)? {
                Step::NeedMore => return Ok(None),
                Step::Partial => continue,
                Step::Done(m) => {
                    self.apply_control(&m)?;
                    return Ok(Some(m));
                }
            }
        }
    }

    fn apply_control(&mut self, m: &Message) -> Result<(), RtmpError> {
        match m.header.type_id {
            type_id::SET_CHUNK_SIZE => {
                let size =
                    m.payload.get(..4).map(be32).ok_or_else(|| {
                        RtmpError::protocol("Set Chunk Size shorter than 4 bytes")
                    })? & 0x7FFF_FFFF;
                if size == 0 {
                    return Err(RtmpError::protocol("Set Chunk Size of 0"));
                }
                self.chunk_size = size as usize;
            }
            type_id::ABORT => {
                let csid = m
                    .payload
                    .get(..4)
                    .map(be32)
                    .ok_or_else(|| RtmpError::protocol("Abort message shorter than 4 bytes"))?;
                if let Some(s) = self.streams.iter_mut().find(|s| s.csid == csid) {
                    s.in_progress = false;
                    s.partial.clear();
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn stream_index(&mut self, csid: u32) -> Result<usize, RtmpError> {
        if let Some(i) = self.streams.iter().position(|s| s.csid == csid) {
            return Ok(i);
        }
        if self.streams.len() >= MAX_CHUNK_STREAMS {
            return Err(RtmpError::protocol(format!(
                "more than {MAX_CHUNK_STREAMS} chunk streams"
            )));
        }
        self.streams.push(InStream {
            csid,
            known: false,
            timestamp: 0,
            delta: 0,
            len: 0,
            type_id: 0,
            stream_id: 0,
            ext: false,
            in_progress: false,
            partial: BytesMut::new(),
        });
        Ok(self.streams.len() - 1)
    }

    /// Parses one chunk; consumes nothing unless the whole chunk is in `buf`.
    fn chunk(&mut self, buf: &mut BytesMut) -> Result<Step, RtmpError> {
        let b = &buf[..];
        let Some(&first) = b.first() else {
            return Ok(Step::NeedMore);
        };
        let fmt = first >> 6;
        let (csid, mut p) = match first & 0x3F {
            0 if b.len() >= 2 => (64 + u32::from(b[1]), 2),
            1 if b.len() >= 3 => (64 + u32::from(b[1]) + 256 * u32::from(b[2]), 3),
            0 | 1 => return Ok(Step::NeedMore),
            c => (u32::from(c), 1),
        };
        let header_len = [11, 7, 3, 0][usize::from(fmt)];
        if b.len() < p + header_len {
            return Ok(Step::NeedMore);
        }
        let idx = self.stream_index(csid)?;
        let st = &self.streams[idx];
        if st.in_progress && fmt != 3 {
            return Err(RtmpError::protocol(format!(
                "type {fmt} chunk header on chunk stream {csid} in the middle of a message"
            )));
        }
        if !st.known && fmt >= 2 {
            return Err(RtmpError::protocol(format!(
                "chunk stream {csid} starts with a type {fmt} header"
            )));
        }
        let mut time_field = None;
        let (mut len, mut type_id, mut stream_id) = (st.len, st.type_id, st.stream_id);
        if fmt <= 2 {
            time_field = Some(be24(&b[p..]));
            p += 3;
        }
        if fmt <= 1 {
            len = be24(&b[p..]) as usize;
            type_id = b[p + 3];
            p += 4;
        }
        if fmt == 0 {
            stream_id = u32::from_le_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]]);
            p += 4;
        }
        let ext = match time_field {
            Some(t) => t == 0xFF_FFFF,
            None => st.ext,
        };
        let mut ext_value = None;
        if ext {
            if b.len() < p + 4 {
                return Ok(Step::NeedMore);
            }
            ext_value = Some(be32(&b[p..]));
            p += 4;
        }
        let msg_len = if st.in_progress { st.len } else { len };
        if msg_len > self.max_message {
            return Err(RtmpError::protocol(format!(
                "incoming message of {msg_len} bytes on chunk stream {csid} exceeds the limit of {}",
                self.max_message
            )));
        }
        let have = if st.in_progress { st.partial.len() } else { 0 };
        let piece = self.chunk_size.min(msg_len - have);
        if b.len() < p + piece {
            return Ok(Step::NeedMore);
        }

        // The whole chunk is here: commit.
        let st = &mut self.streams[idx];
        if !st.in_progress {
            match (fmt, ext_value.or(time_field)) {
                (0, Some(t)) => {
                    st.timestamp = t;
                    // A type 3 message right after a type 0 one repeats its
                    // timestamp as the delta (the spec's rule).
                    st.delta = t;
                }
                (_, Some(d)) => {
                    st.delta = d;
                    st.timestamp = st.timestamp.wrapping_add(d);
                }
                (_, None) => st.timestamp = st.timestamp.wrapping_add(st.delta),
            }
            if fmt <= 2 {
                st.ext = ext;
            }
            st.len = len;
            st.type_id = type_id;
            st.stream_id = stream_id;
            st.known = true;
            st.in_progress = true;
        }
        let header = MessageHeader {
            csid,
            timestamp: st.timestamp,
            type_id: st.type_id,
            stream_id: st.stream_id,
        };
        if have == 0 && piece == msg_len {
            // The message is one chunk: hand out the buffer's bytes without a copy.
            let mut whole = buf.split_to(p + piece);
            whole.advance(p);
            st.in_progress = false;
            return Ok(Step::Done(Message {
                header,
                payload: whole.freeze(),
            }));
        }
        st.partial.extend_from_slice(&buf[p..p + piece]);
        buf.advance(p + piece);
        if st.partial.len() < msg_len {
            return Ok(Step::Partial);
        }
        st.in_progress = false;
        Ok(Step::Done(Message {
            header,
            payload: st.partial.split().freeze(),
        }))
    }
}
