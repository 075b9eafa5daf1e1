//! Entries fed by a producer inside the worker rather than a download: an
//! RTSP pull appends its FLV tags (source::rtsp), readers play them as they
//! arrive, and the entry's length is known only when the producer ends
//! (docs/design/sources.md, "RTSP"). Such an entry is append-only and
//! private to one task: its key is the task's, never another task's, and
//! [`Cache::remove`] takes it out when the task ends.

use super::{Cache, Entry, Pin};
use crate::error::WorkerError;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

impl Cache {
    /// A new entry under `key` (a key of the task's own, so nothing else ever
    /// pins it) whose bytes `Producer::append` writes; `shown` names it in
    /// messages (the source's URL, redacted there). An entry left under the
    /// same key is removed first.
    pub fn produce(
        self: &Arc<Self>,
        key: &str,
        shown: &str,
        task_id: &str,
    ) -> std::io::Result<(Pin, Producer)> {
        self.remove(key);
        let entry = self.make_entry(key, shown)?;
        {
            let mut st = entry.lock();
            st.pins = 1;
            st.last_used = self.tick.fetch_add(1, Ordering::Relaxed);
            st.task_id = task_id.to_owned();
            // "A driver runs" for readers: bytes may still come.
            st.driver = true;
            st.progress_at = Instant::now();
        }
        self.map().insert(key.to_owned(), entry.clone());
        let pin = Pin {
            cache: self.clone(),
            entry: entry.clone(),
        };
        let producer = Producer {
            cache: self.clone(),
            entry,
            at: 0,
            done: false,
        };
        Ok((pin, producer))
    }

    /// Removes the entry under `key` now, pinned or not (its task ended):
    /// readers still open read what they hold, then the end of the stream.
    pub fn remove(&self, key: &str) {
        let Some(e) = self.map().remove(key) else {
            return;
        };
        let mut st = e.lock();
        st.evicted = true;
        st.driver = false;
        let freed = st.held.total();
        drop(st);
        e.cancel.cancel();
        e.changed();
        let _ = std::fs::remove_file(&e.path);
        let left = self.total.fetch_sub(freed, Ordering::Relaxed) - freed;
        crate::metrics::get().source_cache_bytes.set(left as i64);
    }
}

/// Appends to an entry made by [`Cache::produce`]; dropping it without
/// [`Producer::finish`] or [`Producer::fail`] ends the entry as a stopped
/// download (readers get an error after what is held).
pub struct Producer {
    cache: Arc<Cache>,
    entry: Arc<Entry>,
    at: u64,
    done: bool,
}

impl Producer {
    /// Appends `bytes` (a page-cache write, on the producer's runtime
    /// thread, as a download's chunk) and wakes the readers.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.entry.file.write_all_at(bytes, self.at)?;
        let end = self.at + bytes.len() as u64;
        let mut st = self.entry.lock();
        if st.evicted {
            return Err(std::io::Error::other("the cache entry was removed"));
        }
        let added = st.held.insert(self.at, end);
        self.at = end;
        st.started = true;
        st.cursor = Some(end);
        st.progress_at = Instant::now();
        drop(st);
        self.entry.changed();
        if added > 0 {
            self.cache.account(added);
        }
        Ok(())
    }

    /// Bytes appended so far.
    pub fn appended(&self) -> u64 {
        self.at
    }

    /// The stream ended: its length is what was appended (readers get EOF there).
    pub fn finish(mut self) {
        let at = self.at;
        self.end(|st| st.len = Some(at));
    }

    /// The producer failed: readers get `e` once past what is held.
    pub fn fail(mut self, e: WorkerError) {
        self.end(|st| st.failed = Some(e));
    }

    fn end(&mut self, set: impl FnOnce(&mut super::State)) {
        let mut st = self.entry.lock();
        set(&mut st);
        st.driver = false;
        st.cursor = None;
        drop(st);
        self.done = true;
        self.entry.changed();
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if !self.done {
            self.end(|_| {});
        }
    }
}
