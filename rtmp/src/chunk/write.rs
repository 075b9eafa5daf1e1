//! Outgoing chunk stream.

use bytes::Bytes;

use super::{MessageHeader, OutQueue, DEFAULT_CHUNK_SIZE, MAX_CSID, MAX_MESSAGE_LEN};
use crate::error::RtmpError;

/// The 24-bit timestamp field value that says "see the extended timestamp".
const EXTENDED: u32 = 0xFF_FFFF;

/// What the last message on a chunk stream was, for header compression.
#[derive(Clone, Copy, Debug)]
struct Last {
    csid: u32,
    stream_id: u32,
    timestamp: u32,
}

/// Cuts outgoing messages into chunks (see the module doc for the header rules).
#[derive(Debug)]
pub struct ChunkWriter {
    chunk_size: usize,
    last: Vec<Last>,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        ChunkWriter::new()
    }
}

impl ChunkWriter {
    /// A writer with the protocol's initial chunk size (128).
    pub fn new() -> ChunkWriter {
        ChunkWriter {
            chunk_size: DEFAULT_CHUNK_SIZE as usize,
            last: Vec::new(),
        }
    }

    /// The current outgoing chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size as u32
    }

    /// Uses `size` (clamped to 1..=0x7FFFFFFF) from the next message on. Queue the
    /// Set Chunk Size message itself *before* calling this.
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.clamp(1, 0x7FFF_FFFF) as usize;
    }

    /// Appends `payload` as one message to `out`: chunk headers into the queue's
    /// header buffer, payload pieces as slices of `payload`.
    pub fn write(
        &mut self,
        h: &MessageHeader,
        payload: &Bytes,
        out: &mut OutQueue,
    ) -> Result<(), RtmpError> {
        if !(2..=MAX_CSID).contains(&h.csid) {
            return Err(RtmpError::protocol(format!(
                "chunk stream id {} out of range",
                h.csid
            )));
        }
        let len = payload.len();
        if len > MAX_MESSAGE_LEN {
            return Err(RtmpError::protocol(format!(
                "message of {len} bytes exceeds RTMP's limit of {MAX_MESSAGE_LEN}"
            )));
        }
        let slot = self.last.iter().position(|l| l.csid == h.csid);
        // Type 1 (delta) when this chunk stream carried a message of the same
        // message stream before and the delta fits 24 bits (time going backwards
        // wraps to a huge delta, so it gets a type 0 too).
        let delta = slot
            .map(|i| self.last[i])
            .filter(|l| l.stream_id == h.stream_id)
            .map(|l| h.timestamp.wrapping_sub(l.timestamp))
            .filter(|d| *d < EXTENDED);
        let (fmt, time) = match delta {
            Some(d) => (1u8, d),
            None => (0u8, h.timestamp),
        };
        let ext = (time >= EXTENDED).then_some(time);

        let mut hdr = [0u8; 18];
        let mut n = basic_header(&mut hdr, fmt, h.csid);
        hdr[n..n + 3].copy_from_slice(&time.min(EXTENDED).to_be_bytes()[1..]);
        hdr[n + 3..n + 6].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
        hdr[n + 6] = h.type_id;
        n += 7;
        if fmt == 0 {
            hdr[n..n + 4].copy_from_slice(&h.stream_id.to_le_bytes());
            n += 4;
        }
        if let Some(e) = ext {
            hdr[n..n + 4].copy_from_slice(&e.to_be_bytes());
            n += 4;
        }
        out.push_header(&hdr[..n]);

        let mut cont = [0u8; 7];
        let mut cn = basic_header(&mut cont, 3, h.csid);
        if let Some(e) = ext {
            cont[cn..cn + 4].copy_from_slice(&e.to_be_bytes());
            cn += 4;
        }
        let mut at = 0;
        while at < len {
            if at > 0 {
                out.push_header(&cont[..cn]);
            }
            let end = (at + self.chunk_size).min(len);
            out.push_payload(payload.slice(at..end));
            at = end;
        }

        let last = Last {
            csid: h.csid,
            stream_id: h.stream_id,
            timestamp: h.timestamp,
        };
        match slot {
            Some(i) => self.last[i] = last,
            None => self.last.push(last),
        }
        Ok(())
    }
}

/// Writes the basic header for `csid` (assumed 2..=65599) into `buf`; returns its length.
fn basic_header(buf: &mut [u8], fmt: u8, csid: u32) -> usize {
    let top = fmt << 6;
    match csid {
        0..=63 => {
            buf[0] = top | csid as u8;
            1
        }
        64..=319 => {
            buf[0] = top;
            buf[1] = (csid - 64) as u8;
            2
        }
        _ => {
            let v = csid - 64;
            buf[0] = top | 1;
            buf[1] = (v & 0xFF) as u8;
            buf[2] = (v >> 8) as u8;
            3
        }
    }
}
