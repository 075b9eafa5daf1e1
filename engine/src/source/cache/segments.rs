//! Entries whose media is an HLS playlist's segments (the fMP4 init section
//! first) concatenated: MPEG-TS segments of one rendition make one transport
//! stream, fMP4 fragments after their init section one fragmented MP4
//! (source::hls). The driver fetches them in order, each a source of its own
//! (the URL policy checked again, the timeouts, the attempts, `Range` resume
//! inside the segment), appending to the entry's file while readers read.
//! Playback reads them in order, so a reader's far seek waits rather than
//! asking for another region; the file's length is known once the last
//! segment is in.

use super::{Cache, Entry};
use crate::source::http::{Fetch, Sink};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

impl Cache {
    pub(super) async fn drive_segments(self: Arc<Self>, entry: Arc<Entry>) {
        loop {
            let (url, base, have, task_id, run) = {
                let mut st = entry.lock();
                let plan = st.segments.clone().expect("a segmented entry");
                let whole = st.seg_next >= plan.len();
                if whole || st.evicted || st.pins == 0 {
                    if whole {
                        st.len = Some(st.seg_base);
                        st.started = true;
                    }
                    st.driver = false;
                    st.cursor = None;
                    drop(st);
                    entry.changed();
                    return;
                }
                let base = st.seg_base;
                // What an interrupted transfer of this segment already wrote.
                let have = st.held.next_gap(base) - base;
                let run = entry.cancel.child_token();
                st.run_cancel = Some(run.clone());
                st.cursor = Some(base + have);
                (
                    plan[st.seg_next].clone(),
                    base,
                    have,
                    st.task_id.clone(),
                    run,
                )
            };
            let mut sink = SegmentSink {
                cache: &self,
                entry: &entry,
                base,
                have,
                whole: false,
            };
            let fetched = match crate::source::check_fetch(&self.cfg, &task_id, &url, &url).await {
                Err(e) => Err(e),
                Ok(()) => {
                    Fetch {
                        client: &self.client,
                        cfg: &self.cfg,
                        task_id: &task_id,
                        url: &url,
                        shown: &url,
                        cancel: &run,
                    }
                    .run(&mut sink)
                    .await
                }
            };
            let (whole, len) = (sink.whole, sink.have);
            let mut st = entry.lock();
            match fetched {
                Ok(()) if whole => {
                    st.seg_base = base + len;
                    st.seg_next += 1;
                }
                // Stopped for want of readers: the loop's checks decide.
                Ok(()) => {}
                Err(_) if run.is_cancelled() && !st.evicted && st.pins > 0 => {}
                Err(e) => {
                    if !run.is_cancelled() {
                        st.failed = Some(e);
                    }
                    st.driver = false;
                    st.cursor = None;
                    drop(st);
                    entry.changed();
                    return;
                }
            }
        }
    }
}

/// Writes one segment's body after the segments before it.
struct SegmentSink<'a> {
    cache: &'a Cache,
    entry: &'a Arc<Entry>,
    /// Where the segment starts in the entry's file.
    base: u64,
    /// Bytes of the segment written.
    have: u64,
    /// The segment's body ended.
    whole: bool,
}

impl Sink for SegmentSink<'_> {
    fn resume_at(&mut self) -> std::io::Result<u64> {
        Ok(self.have)
    }

    fn begin(&mut self, from: u64, _total: Option<u64>) -> std::io::Result<()> {
        self.have = from;
        let mut st = self.entry.lock();
        st.started = true;
        st.cursor = Some(self.base + from);
        drop(st);
        self.entry.changed();
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> std::io::Result<bool> {
        let at = self.base + self.have;
        self.entry.file.write_all_at(chunk, at)?;
        let mut st = self.entry.lock();
        if st.evicted {
            return Ok(false);
        }
        let added = st.held.insert(at, at + chunk.len() as u64);
        self.have += chunk.len() as u64;
        st.cursor = Some(self.base + self.have);
        st.progress_at = Instant::now();
        let go_on = st.pins > 0;
        drop(st);
        self.entry.changed();
        if added > 0 {
            self.cache.account(added);
        }
        Ok(go_on)
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.whole = true;
        Ok(())
    }

    fn beyond_end(&mut self, _total: Option<u64>) -> std::io::Result<()> {
        // 416 for the rest of a segment we hold whole.
        self.whole = true;
        Ok(())
    }
}
