//! Handing packets to the destinations: each waits for its real-time
//! deadline (batched into wake-ups), then goes to every destination at once;
//! the task's position follows what was handed over.

use super::{Halt, Task};
use crate::error::WorkerError;
use crate::media::OutPacket;
use crate::output::{Mode, Output};
use std::time::Instant;
use vodfleet_proto::Position;

/// How early a packet may leave before its real-time deadline: far below the
/// initial burst players already buffer.
const PACING_SLACK: std::time::Duration = std::time::Duration::from_millis(40);

/// The shortest time between two pacing wake-ups of a task. A wake-up sends
/// every packet that has become due since the last one (a 25 fps video and
/// AAC stream has about 3 per 50 ms), and each destination writes them with
/// one `writev`: about 20 wake-ups and writes per stream a second instead of
/// one per packet (about 68). A packet leaves at most this minus
/// `PACING_SLACK` (10 ms) after its deadline.
const WAKE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Decode order runs behind presentation by at most a few frames (B-frames).
const REORDER_WINDOW_MS: u64 = 500;

impl Task {
    /// Sends packets that are already on the output timeline (transcode mode).
    pub(super) async fn send_all(
        &mut self,
        o: &mut Output,
        pkts: Vec<OutPacket>,
    ) -> Result<(), Halt> {
        for mut p in pkts {
            // Encoders may start below zero (AAC priming) and must never go back per track.
            let last = &mut o.last_dts[p.track as usize];
            p.dts_us = p.dts_us.max(0).max(*last + 1);
            p.pts_us = p.pts_us.max(p.dts_us);
            *last = p.dts_us;
            let dts = p.dts_us;
            self.send(o, p).await?;
            // Encoded packets carry output time only; the timeline maps it back to the item.
            let (item, pass, origin) = o.playing;
            self.set_position(item, pass, o.timeline.source_time(dts) - origin, dts);
        }
        Ok(())
    }

    /// Encoders hold a few frames at the end of the task; sends them.
    pub(super) async fn flush_encoder(&mut self, o: &mut Output) -> Result<(), Halt> {
        if let Mode::Transcode(t) = &mut o.mode {
            let pkts = t.flush();
            self.send_all(o, pkts).await?;
        }
        Ok(())
    }

    /// Waits for the packet's deadline (answering control messages meanwhile),
    /// then offers it to every destination.
    pub(super) async fn send(&mut self, o: &mut Output, p: OutPacket) -> Result<(), Halt> {
        // A packet already due goes now; one that is not waits for the next
        // wake-up, at most one per WAKE_INTERVAL, which sends everything that
        // became due meanwhile.
        let deadline = o
            .pacer
            .deadline(p.dts_us)
            .checked_sub(PACING_SLACK)
            .unwrap_or_else(|| o.pacer.now());
        // Due at or before the current wake-up: part of its batch.
        let wake = if deadline <= self.last_wake {
            self.last_wake
        } else {
            deadline.max(self.last_wake + WAKE_INTERVAL)
        };
        loop {
            let now = Instant::now();
            if self.end_at.is_some_and(|e| now >= e) {
                return Err(Halt::End);
            }
            if now >= wake {
                if wake > self.last_wake {
                    self.last_wake = now;
                }
                break;
            }
            let until = self.end_at.map_or(wake, |e| e.min(wake));
            // The only wait in the pipeline: it ends at the deadline, at `end_ms` or on a control message.
            tokio::select! {
                biased;
                c = self.control.recv() => match c {
                    Some(c) => self.obey(c)?,
                    None => return Err(Halt::Stop),
                },
                _ = tokio::time::sleep_until(until.into()) => {}
            }
        }
        self.close_stopped(o);
        self.status
            .set_lag(o.pacer.lag(p.dts_us).as_millis() as u64);
        let Some(frame) = o.frame(&p) else {
            return Ok(());
        };
        if !o.fan_out(&frame) {
            return Err(Halt::Fail(WorkerError::AllDestinationsFailed {
                task: self.spec.id.clone(),
            }));
        }
        Ok(())
    }

    /// Closes the destinations a `Control::StopForwards` named (each reports `stopped`).
    fn close_stopped(&self, o: &mut Output) {
        for (d, stop) in o.dests.iter_mut().zip(&self.stop_requested) {
            if *stop && d.alive() {
                d.halt();
            }
        }
    }

    /// Records the last packet handed to the destinations (`src_us`: its offset in the item).
    pub(super) fn set_position(&self, item: usize, pass: u32, src_us: i64, out_dts: i64) {
        let mut p = self.status.position.lock().expect("position lock");
        let offset_ms = (src_us.max(0) / 1000) as u64;
        // With B-frames, packets leave in decode order: a packet's PTS can be below
        // one already sent. The position is the furthest picture sent, so a small
        // step back within the same item is reordering and is not a new position
        // (a jump back by more than that is a new range or a new pass).
        let reordered = p.item == item
            && p.loop_index == pass
            && offset_ms < p.offset_ms
            && p.offset_ms - offset_ms < REORDER_WINDOW_MS;
        *p = Position {
            item,
            loop_index: pass,
            offset_ms: if reordered { p.offset_ms } else { offset_ms },
            timeline_ms: (out_dts / 1000).max(0) as u64,
        };
    }
}
