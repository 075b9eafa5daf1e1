//! Demuxing ahead of the pacer, on the runtime's small blocking pool.
//!
//! Reading a packet is a file read inside libavformat: fast from the page
//! cache, but a cold disk or a network filesystem can hold it for
//! milliseconds, and on an event-loop shard that would hold back every other
//! stream of the shard. So a task never reads on its shard: [`ReadAhead`]
//! hands the demuxer to a blocking-pool thread, which reads a small batch
//! (at most [`BATCH_PACKETS`] packets or [`BATCH_BYTES`] bytes, about half a
//! second of a 2 Mbit/s stream) while the task paces out the batch before it.
//! Memory stays bounded: at most two batches per task.
//!
//! It also tells the end of a file from a failure: libavformat reports errors
//! other than end-of-file for a damaged stretch, and `ffmpeg-next`'s packet
//! iterator retries those forever. Here a few in a row are skipped (a damaged
//! packet), more fail the item as [`Fault::StreamEnded`].
//!
//! Alternatives considered (docs/design/engine.md): reading inline on the
//! shard (what the engine did first: one slow read stalls a shard), and a
//! reader thread per task (thread count grows with the streams).

use crate::error::{Fault, MediaError};
use ffmpeg_next as ff;
use std::collections::VecDeque;
use tokio::task::JoinHandle;

/// Packets read per trip to the blocking pool.
pub const BATCH_PACKETS: usize = 32;
/// Bytes read per trip to the blocking pool.
pub const BATCH_BYTES: usize = 256 * 1024;
/// Read errors in a row that are skipped before the item fails.
const MAX_ERRORS_IN_A_ROW: u32 = 8;

/// How a batch ended early.
enum End {
    Eof,
    Failed(String),
}

struct Batch {
    packets: Vec<ff::Packet>,
    end: Option<End>,
}

/// A demuxer whose reads happen ahead, off the task's thread.
pub struct ReadAhead {
    /// The demuxer, when no read is in flight.
    input: Option<ff::format::context::Input>,
    /// The read in flight: it gives the demuxer back with its batch.
    pending: Option<JoinHandle<(ff::format::context::Input, Batch)>>,
    ready: VecDeque<ff::Packet>,
    /// Set once a batch ended with end-of-file or a failure: nothing is read after it.
    end: Option<End>,
    time_bases: Vec<ff::Rational>,
}

impl ReadAhead {
    pub fn new(input: ff::format::context::Input) -> ReadAhead {
        ReadAhead {
            time_bases: input.streams().map(|s| s.time_base()).collect(),
            input: Some(input),
            pending: None,
            ready: VecDeque::new(),
            end: None,
        }
    }

    /// The time base of stream `index`.
    pub fn time_base(&self, index: usize) -> ff::Rational {
        self.time_bases[index]
    }

    /// The demuxer itself, to seek or look at its index: waits for the read in
    /// flight and drops what was read ahead.
    pub async fn input(&mut self) -> Result<&mut ff::format::context::Input, MediaError> {
        self.land().await?;
        self.ready.clear();
        self.end = None;
        Ok(self.input.as_mut().expect("no read in flight"))
    }

    /// The next packet; `None` at the end of the file. Cancel-safe: a read in
    /// flight goes on and is picked up by the next call.
    pub async fn next(&mut self) -> Result<Option<ff::Packet>, MediaError> {
        loop {
            if let Some(p) = self.ready.pop_front() {
                // Keep one batch ahead: the next read runs while this one is paced out.
                self.read_more();
                return Ok(Some(p));
            }
            match self.end.take() {
                Some(End::Eof) => {
                    self.end = Some(End::Eof);
                    return Ok(None);
                }
                Some(End::Failed(cause)) => {
                    return Err(MediaError::new(Fault::StreamEnded, cause));
                }
                None => {}
            }
            self.read_more();
            self.land().await?;
        }
    }

    /// Starts reading the next batch unless one is in flight or the file ended.
    fn read_more(&mut self) {
        if self.pending.is_some() || self.end.is_some() {
            return;
        }
        if let Some(input) = self.input.take() {
            self.pending = Some(tokio::task::spawn_blocking(move || read_batch(input)));
        }
    }

    /// Waits for the read in flight, if any, and takes its batch.
    async fn land(&mut self) -> Result<(), MediaError> {
        let Some(handle) = self.pending.as_mut() else {
            return Ok(());
        };
        // Awaited through `&mut`: cancelling this leaves the handle in place.
        let landed = handle.await;
        self.pending = None;
        let (input, batch) = landed.map_err(|e| {
            MediaError::new(Fault::Local, format!("the demuxer's read was lost: {e}"))
        })?;
        self.input = Some(input);
        self.ready.extend(batch.packets);
        self.end = batch.end;
        Ok(())
    }
}

/// Reads up to one batch (on a blocking-pool thread).
fn read_batch(mut input: ff::format::context::Input) -> (ff::format::context::Input, Batch) {
    let mut packets = Vec::with_capacity(BATCH_PACKETS);
    let mut bytes = 0;
    let mut errors = 0;
    let end = loop {
        if packets.len() >= BATCH_PACKETS || bytes >= BATCH_BYTES {
            break None;
        }
        let mut p = ff::Packet::empty();
        match p.read(&mut input) {
            Ok(()) => {
                errors = 0;
                bytes += p.size();
                packets.push(p);
            }
            Err(ff::Error::Eof) => break Some(End::Eof),
            Err(e) => {
                errors += 1;
                if errors >= MAX_ERRORS_IN_A_ROW {
                    break Some(End::Failed(format!(
                        "the file cannot be read on ({errors} read errors in a row, the last: {e})"
                    )));
                }
            }
        }
    };
    (input, Batch { packets, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(rt: &tokio::runtime::Runtime, r: &mut ReadAhead) -> Vec<(usize, Option<i64>)> {
        rt.block_on(async {
            let mut got = Vec::new();
            while let Some(p) = r.next().await.expect("a clean file reads to its end") {
                got.push((p.stream(), p.dts()));
            }
            got
        })
    }

    #[test]
    fn reads_ahead_exactly_what_the_demuxer_gives_and_restarts_after_a_seek() {
        crate::media::init();
        let path = crate::media::tests::gop2_file();
        let direct: Vec<(usize, Option<i64>)> = crate::media::open_input(&path)
            .unwrap()
            .packets()
            .map(|(s, p)| (s.index(), p.dts()))
            .collect();
        assert!(direct.len() > 2 * BATCH_PACKETS, "several batches");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let mut r = ReadAhead::new(crate::media::open_input(&path).unwrap());
        assert_eq!(read_all(&rt, &mut r), direct, "same packets, same order");
        // After the end, a seek back to the start reads the whole file again.
        rt.block_on(async {
            let input = r.input().await.unwrap();
            input.seek(0, ..1).unwrap();
        });
        assert_eq!(read_all(&rt, &mut r), direct);
        // A seek in the middle of a read-ahead drops what was read ahead.
        let first = rt.block_on(async {
            r.input().await.unwrap().seek(0, ..1).unwrap();
            r.next().await.unwrap().unwrap().dts()
        });
        assert_eq!(first, direct[0].1);
        rt.block_on(async {
            r.input().await.unwrap().seek(0, ..1).unwrap();
        });
        assert_eq!(read_all(&rt, &mut r), direct);
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }
}
