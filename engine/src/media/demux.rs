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

/// The largest step forward between two packets of one stream that is still
/// timing rather than damage: a crafted or broken file whose next packet is
/// hours ahead would otherwise hold its task in the pacer's wait forever.
pub const MAX_TIMESTAMP_STEP_US: i64 = 60_000_000;
/// How far short of the end its index declares a file may end (an mp4's
/// sample tables are exact; a file cut short after its `moov` ends early).
pub const MAX_SHORTFALL_US: i64 = 1_000_000;

/// Damage a file's timing shows while a segment is read: a stream whose
/// timestamps leap ahead, and a file that ends before the end its own index
/// declares. Both fail the item as [`Fault::BadMedia`] with what was seen.
#[derive(Default)]
pub struct TimingCheck {
    /// Per track (video, audio): the last DTS and the furthest PTS + duration, µs.
    last_dts: [Option<i64>; 2],
    reach: [Option<i64>; 2],
}

impl TimingCheck {
    /// One packet of `track` (0 video, 1 audio), times in µs.
    pub fn packet(&mut self, track: usize, dts: i64, pts: i64, dur: i64) -> Result<(), MediaError> {
        if let Some(prev) = self.last_dts[track] {
            if dts.saturating_sub(prev) > MAX_TIMESTAMP_STEP_US {
                return Err(MediaError::new(
                    Fault::BadMedia,
                    format!(
                        "broken timing: the {} timestamps leap {} s ahead at {:.1} s",
                        ["video", "audio"][track],
                        dts.saturating_sub(prev) / 1_000_000,
                        prev as f64 / 1e6
                    ),
                ));
            }
        }
        self.last_dts[track] = Some(dts);
        let end = pts.saturating_add(dur.max(0));
        self.reach[track] = Some(self.reach[track].map_or(end, |r| r.max(end)));
        Ok(())
    }

    /// At the end of the file: `streams` are (track, stream index) of what is
    /// played, `from_us` where the segment began, `until_us` where it was to end.
    pub fn at_end(
        &self,
        reader: &ReadAhead,
        streams: &[(usize, usize)],
        from_us: i64,
        until_us: i64,
    ) -> Result<(), MediaError> {
        for &(track, idx) in streams {
            let Some(declared) = reader.declared_end_us.get(idx).copied().flatten() else {
                continue;
            };
            let reached = self.reach[track].unwrap_or(from_us);
            if until_us >= declared && reached.saturating_add(MAX_SHORTFALL_US) < declared {
                return Err(MediaError::new(
                    Fault::BadMedia,
                    format!(
                        "cut short: the file ends at {:.1} s, its index declares {:.1} s",
                        reached as f64 / 1e6,
                        declared as f64 / 1e6
                    ),
                ));
            }
        }
        Ok(())
    }
}

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
    /// Per stream, where its packets end by the container's own index (µs):
    /// only for mp4/mov, whose sample tables are exact.
    declared_end_us: Vec<Option<i64>>,
}

impl ReadAhead {
    pub fn new(input: ff::format::context::Input) -> ReadAhead {
        let indexed = input.format().name().starts_with("mov");
        let declared_end_us = input
            .streams()
            .map(|s| {
                let (tb, d, start) = (s.time_base(), s.duration(), s.start_time());
                let start = if start == ff::ffi::AV_NOPTS_VALUE {
                    0
                } else {
                    start
                };
                (indexed && d > 0 && tb.1 > 0).then(|| {
                    (start.saturating_add(d) as i128 * 1_000_000 * tb.0 as i128 / tb.1 as i128)
                        as i64
                })
            })
            .collect();
        ReadAhead {
            declared_end_us,
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
                    // A streamed source that failed: its own fault and words (media::avio).
                    let source = self
                        .input
                        .as_ref()
                        .and_then(crate::media::avio::source_error);
                    return Err(source.unwrap_or(MediaError::new(Fault::StreamEnded, cause)));
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

    #[test]
    fn a_timestamp_leap_within_a_stream_is_bad_media() {
        let mut t = TimingCheck::default();
        t.packet(0, 0, 0, 40_000).unwrap();
        t.packet(1, 5_000_000, 5_000_000, 20_000).unwrap();
        // A minute between two pictures is still timing (a slide show).
        t.packet(0, MAX_TIMESTAMP_STEP_US, MAX_TIMESTAMP_STEP_US, 40_000)
            .unwrap();
        let e = t
            .packet(0, 3 * MAX_TIMESTAMP_STEP_US, 0, 0)
            .expect_err("a leap of two minutes");
        assert_eq!(e.fault, Fault::BadMedia);
        assert!(
            e.cause.contains("video timestamps leap 120 s"),
            "{}",
            e.cause
        );
        assert_eq!(
            t.reach,
            [Some(MAX_TIMESTAMP_STEP_US + 40_000), Some(5_020_000)]
        );
    }

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
