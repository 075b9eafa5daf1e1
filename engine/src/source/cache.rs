//! The worker's shared download cache: one sparse file per source URL under
//! `VODFLEET_CACHE_DIR`, one download per URL whatever the number of tasks
//! and loops that play it, and readers that play while it downloads
//! (docs/design/sources.md, "Streaming sources").
//!
//! - An [`Entry`] holds a [`RangeSet`] of the bytes its file has, its length
//!   once a response said, and at most one download driver (a tokio task on
//!   the host's runtime) that fetches with `source::http`'s policy, timeouts,
//!   attempts, backoff and `Range` resume, region by region.
//! - A [`Pin`] keeps an entry from eviction; a [`Reader`] (blocking: it runs
//!   on the blocking pool, inside libavformat's reads) reads held bytes and
//!   waits for the others. A read far from where the download is asks the
//!   driver to fetch from there first: an mp4 whose `moov` follows `mdat`
//!   gets its `moov` by a `Range` request, then the download goes on where
//!   playback reads.
//! - Entries nobody pins are evicted least recently used first once the
//!   cache holds more than `VODFLEET_CACHE_MAX_BYTES`; a pinned entry never
//!   is, so the bound may be exceeded by what running tasks read.
//!
//! Memory is O(1) in a file's length: bytes go from the socket to the file,
//! and a range set has one interval per region fetched.

use super::http::{Fetch, Sink};
use super::ranges::{eviction_order, RangeSet};
use crate::config::Config;
use crate::error::{ErrorKind, Fault, WorkerError};
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use vodfleet_proto::redact;

mod reader;
mod segments;
mod stream;
use reader::retask;
pub use reader::Reader;
pub use stream::Producer;

/// A read this close ahead of the download's next byte waits for it rather
/// than asking for a new request (about a second of a 16 Mbit/s download).
const SOON_BYTES: u64 = 2 * 1024 * 1024;
/// A transfer started for a waiting reader delivers at least this much
/// before another reader elsewhere may interrupt it, so that two readers far
/// apart share the download instead of trading one chunk each.
const MIN_RUN_BYTES: u64 = 512 * 1024;
/// How often a waiting reader looks at its task's cancellation.
const WAIT_SLICE: Duration = Duration::from_millis(100);

struct State {
    held: RangeSet,
    len: Option<u64>,
    /// Why the last driver gave up; cleared when a new one starts.
    failed: Option<WorkerError>,
    /// A driver runs.
    driver: bool,
    /// A response began since the entry was made.
    started: bool,
    /// Where the running transfer writes next.
    cursor: Option<u64>,
    /// Bytes the running transfer wrote, and whether it was started for a waiting reader.
    run_bytes: u64,
    run_for_want: bool,
    /// A reader waits for this byte, which the running transfer will not bring soon.
    want: Option<u64>,
    /// Where readers last waited: the next transfer starts at the first gap from here.
    focus: u64,
    pins: usize,
    last_used: u64,
    evicted: bool,
    /// What the driver fetches (the presigned URL of an `s3://` source, fresh from the latest pin).
    fetch_url: String,
    /// The latest pinning task, named in the driver's logs.
    task_id: String,
    /// When bytes last arrived (or the entry was pinned).
    progress_at: Instant,
    /// Stops the running transfer when the last pin goes.
    run_cancel: Option<CancellationToken>,
    /// An HLS playlist's segments, fetched one after another into the file
    /// instead of one URL ([`segments`]); the first not yet whole, and where it starts.
    segments: Option<Arc<Vec<String>>>,
    seg_next: usize,
    seg_base: u64,
}

impl State {
    fn complete(&self) -> bool {
        self.len.is_some_and(|l| self.held.run_from(0) >= l)
    }

    /// Where the next transfer starts, if any byte is missing.
    fn next_start(&self) -> Option<u64> {
        let in_file = |p: u64| self.len.is_none_or(|l| p < l);
        let g = self.held.next_gap(self.want.unwrap_or(self.focus));
        if in_file(g) {
            return Some(g);
        }
        let g = self.held.next_gap(0);
        in_file(g).then_some(g)
    }
}

/// One source URL's file in the cache.
pub struct Entry {
    key: String,
    /// The source's URL, named (redacted) in messages: the key, but for a
    /// task's own entry ([`stream`]).
    shown: String,
    path: PathBuf,
    file: std::fs::File,
    state: Mutex<State>,
    /// Readers on the blocking pool wait here.
    cond: Condvar,
    /// Async waiters (a task opening the source) wait here.
    notify: tokio::sync::Notify,
    /// Stops the driver when the entry is evicted.
    cancel: CancellationToken,
}

impl Entry {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.cond.notify_all();
        self.notify.notify_waiters();
    }
}

/// The worker's cache, shared by every task ([`crate::Engine`] makes one).
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    cfg: Config,
    client: reqwest::Client,
    rt: tokio::runtime::Handle,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    total: AtomicU64,
    tick: AtomicU64,
    ids: AtomicU64,
}

impl Cache {
    /// A cache in `cfg.cache_dir/streams-PID` (directories left by processes
    /// that are gone are removed); downloads run on `rt`.
    pub fn new(cfg: &Config, rt: tokio::runtime::Handle) -> std::io::Result<Arc<Cache>> {
        std::fs::create_dir_all(&cfg.cache_dir)?;
        remove_stale(&cfg.cache_dir);
        let dir = cfg
            .cache_dir
            .join(format!("streams-{}", std::process::id()));
        // A restarted container may run under the same PID on the same volume:
        // what a directory of ours holds at start is a previous process's.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(Cache {
            dir,
            max_bytes: cfg.cache_max_bytes,
            client: vodfleet_net::http_client(cfg.allow_private_networks, cfg.source_timeout),
            cfg: cfg.clone(),
            rt,
            entries: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
            tick: AtomicU64::new(0),
            ids: AtomicU64::new(0),
        }))
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes the cache's files hold.
    pub fn held_bytes(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Pins the entry of `url` (made if new) and makes sure its download
    /// runs: `fetch_url` is what is fetched (the URL itself, or an `s3://`
    /// source's presigned URL), `task_id` names the task in the driver's logs.
    pub fn pin(
        self: &Arc<Self>,
        url: &str,
        fetch_url: &str,
        task_id: &str,
    ) -> std::io::Result<Pin> {
        self.pin_entry(url, task_id, |st| st.fetch_url = fetch_url.to_owned())
    }

    /// Pins the entry of the HLS source `url`, whose media is `segments`
    /// (absolute URLs, the init section first) concatenated: fetched one after
    /// another, each under the URL policy, while readers read (a plan given
    /// by an earlier pin stays).
    pub fn pin_segments(
        self: &Arc<Self>,
        url: &str,
        segments: Vec<String>,
        task_id: &str,
    ) -> std::io::Result<Pin> {
        self.pin_entry(url, task_id, |st| {
            st.segments.get_or_insert_with(|| Arc::new(segments));
        })
    }

    fn pin_entry(
        self: &Arc<Self>,
        url: &str,
        task_id: &str,
        set: impl FnOnce(&mut State),
    ) -> std::io::Result<Pin> {
        let m = crate::metrics::get();
        let entry = {
            let mut map = self.map();
            match map.get(url) {
                Some(e) => {
                    m.source_cache_hits.inc();
                    e.clone()
                }
                None => {
                    m.source_cache_misses.inc();
                    let e = self.make_entry(url, url)?;
                    map.insert(url.to_owned(), e.clone());
                    e
                }
            }
        };
        let mut st = entry.lock();
        st.pins += 1;
        st.last_used = self.tick.fetch_add(1, Ordering::Relaxed);
        set(&mut st);
        st.task_id = task_id.to_owned();
        if !st.driver && !st.complete() {
            st.driver = true;
            st.failed = None;
            st.progress_at = Instant::now();
            let (cache, e) = (self.clone(), entry.clone());
            self.rt.spawn(async move { cache.drive(e).await });
        }
        drop(st);
        Ok(Pin {
            cache: self.clone(),
            entry,
        })
    }

    /// A new entry (not yet in the map) with an empty file of its own.
    fn make_entry(&self, key: &str, shown: &str) -> std::io::Result<Arc<Entry>> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{}-{id}", super::hex_digest(key)));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        Ok(Arc::new(Entry {
            key: key.to_owned(),
            shown: shown.to_owned(),
            path,
            file,
            state: Mutex::new(State {
                held: RangeSet::default(),
                len: None,
                failed: None,
                driver: false,
                started: false,
                cursor: None,
                run_bytes: 0,
                run_for_want: false,
                want: None,
                focus: 0,
                pins: 0,
                last_used: 0,
                evicted: false,
                fetch_url: String::new(),
                task_id: String::new(),
                progress_at: Instant::now(),
                run_cancel: None,
                segments: None,
                seg_next: 0,
                seg_base: 0,
            }),
            cond: Condvar::new(),
            notify: tokio::sync::Notify::new(),
            cancel: CancellationToken::new(),
        }))
    }

    /// The download driver of `entry`: a transfer from the first missing byte
    /// readers need, then the next, until the file is whole, it fails, or
    /// nobody pins it.
    async fn drive(self: Arc<Self>, entry: Arc<Entry>) {
        if entry.lock().segments.is_some() {
            return self.drive_segments(entry).await;
        }
        loop {
            let (from, fetch_url, task_id, run) = {
                let mut st = entry.lock();
                let next = (!st.evicted && st.pins > 0)
                    .then(|| st.next_start())
                    .flatten();
                let Some(from) = next else {
                    st.driver = false;
                    st.cursor = None;
                    drop(st);
                    entry.changed();
                    return;
                };
                st.run_for_want = st.want.is_some();
                st.want = None;
                st.run_bytes = 0;
                st.cursor = Some(from);
                let run = entry.cancel.child_token();
                st.run_cancel = Some(run.clone());
                (from, st.fetch_url.clone(), st.task_id.clone(), run)
            };
            let mut sink = EntrySink {
                cache: &self,
                entry: &entry,
                requested: from,
                at: from,
                ranged: true,
            };
            let fetched = Fetch {
                client: &self.client,
                cfg: &self.cfg,
                task_id: &task_id,
                url: &fetch_url,
                shown: &entry.shown,
                cancel: &run,
            }
            .run(&mut sink)
            .await;
            if let Err(e) = fetched {
                let mut st = entry.lock();
                if run.is_cancelled() && !st.evicted && st.pins > 0 {
                    // Stopped when its last reader left, and pinned again since: go on.
                    continue;
                }
                // A transfer stopped for want of readers is not a failure.
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

    /// Counts `added` bytes and evicts while the cache holds too much.
    fn account(&self, added: u64) {
        let total = self.total.fetch_add(added, Ordering::Relaxed) + added;
        crate::metrics::get().source_cache_bytes.set(total as i64);
        if total > self.max_bytes {
            self.evict();
        }
    }

    /// Evicts unpinned entries, least recently used first, until the cache
    /// holds at most its bound (or nothing unpinned is left).
    fn evict(&self) {
        let mut map = self.map();
        let mut candidates = Vec::new();
        for e in map.values() {
            let st = e.lock();
            if st.pins == 0 {
                candidates.push((e.clone(), st.last_used, st.held.total()));
            }
        }
        let keys: Vec<(u64, u64)> = candidates.iter().map(|c| (c.1, c.2)).collect();
        let total = self.total.load(Ordering::Relaxed);
        for i in eviction_order(&keys, total, self.max_bytes) {
            let e = &candidates[i].0;
            let mut st = e.lock();
            if st.pins > 0 {
                continue; // pinned since the candidates were listed
            }
            st.evicted = true;
            let freed = st.held.total();
            drop(st);
            e.cancel.cancel();
            map.remove(&e.key);
            let _ = std::fs::remove_file(&e.path);
            let left = self.total.fetch_sub(freed, Ordering::Relaxed) - freed;
            let m = crate::metrics::get();
            m.source_cache_evictions.inc();
            m.source_cache_bytes.set(left as i64);
            tracing::debug!(url = %redact::source(&e.shown), bytes = freed, "cache entry evicted");
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes `streams-PID` directories of processes that no longer run (Linux:
/// `/proc/PID`); elsewhere nothing is removed.
fn remove_stale(cache_dir: &std::path::Path) {
    let Ok(list) = std::fs::read_dir(cache_dir) else {
        return;
    };
    for d in list.flatten() {
        let name = d.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("streams-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let proc_dir = std::path::Path::new("/proc");
        if proc_dir.is_dir() && !proc_dir.join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(d.path());
        }
    }
}

/// Writes one transfer's body into an entry's file at its offset.
struct EntrySink<'a> {
    cache: &'a Cache,
    entry: &'a Arc<Entry>,
    /// Where the transfer was asked to start.
    requested: u64,
    /// Where the next byte of the body goes.
    at: u64,
    /// The response starts where we asked: false when a server ignored our
    /// `Range` and sends from byte 0, which is then read through, never
    /// interrupted (asking again would start at 0 again).
    ranged: bool,
}

impl Sink for EntrySink<'_> {
    fn resume_at(&mut self) -> std::io::Result<u64> {
        // A retry resumes where this transfer got to.
        Ok(self.at)
    }

    fn begin(&mut self, from: u64, total: Option<u64>) -> std::io::Result<()> {
        self.at = from;
        self.ranged = from == self.requested;
        let mut st = self.entry.lock();
        if let Some(t) = total {
            st.len = Some(t);
        }
        st.started = true;
        st.cursor = Some(from);
        drop(st);
        self.entry.changed();
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> std::io::Result<bool> {
        // A page-cache write of one chunk, on the download's runtime thread
        // (see `Sink`); readers read it back with `read_at`.
        self.entry.file.write_all_at(chunk, self.at)?;
        let end = self.at + chunk.len() as u64;
        let mut st = self.entry.lock();
        if st.evicted {
            return Ok(false);
        }
        let added = st.held.insert(self.at, end);
        self.at = end;
        st.cursor = Some(end);
        st.run_bytes += chunk.len() as u64;
        st.progress_at = Instant::now();
        // Go on unless: nobody pins the entry any more, the transfer ran into
        // bytes already held (a server that ignored our Range is read through
        // up to where we asked), or a reader waits for bytes elsewhere.
        let into_held = end >= self.requested && st.held.run_from(end) > 0;
        let wanted_elsewhere = self.ranged
            && st.want.is_some_and(|w| !(end <= w && w < end + SOON_BYTES))
            && (!st.run_for_want || st.run_bytes >= MIN_RUN_BYTES);
        let go_on = st.pins > 0 && !into_held && !wanted_elsewhere;
        if !go_on {
            st.cursor = None;
        }
        drop(st);
        self.entry.changed();
        if added > 0 {
            self.cache.account(added);
        }
        Ok(go_on)
    }

    fn finish(&mut self) -> std::io::Result<()> {
        // Every transfer asks for everything from its start: its end is the file's.
        self.ended_at(Some(self.at))
    }

    fn beyond_end(&mut self, total: Option<u64>) -> std::io::Result<()> {
        // 416: the file is shorter than where we asked; the server may say how long.
        let held = self.entry.lock().held.next_gap(0);
        self.ended_at(Some(total.unwrap_or(held.min(self.at))))
    }
}

impl EntrySink<'_> {
    fn ended_at(&mut self, len: Option<u64>) -> std::io::Result<()> {
        let mut st = self.entry.lock();
        st.len = len.or(st.len);
        st.cursor = None;
        drop(st);
        self.entry.changed();
        Ok(())
    }
}

/// Keeps an entry from eviction while held.
pub struct Pin {
    cache: Arc<Cache>,
    entry: Arc<Entry>,
}

impl Pin {
    /// Waits until the download has begun (a response came: the length is
    /// known, or bytes arrive), the file is whole, or the download failed
    /// (its error is returned). `cancel` ends the wait.
    pub async fn started(
        &self,
        task_id: &str,
        cancel: &CancellationToken,
    ) -> Result<(), WorkerError> {
        loop {
            let notified = self.entry.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.entry.lock();
                if st.started || st.complete() {
                    return Ok(());
                }
                if let Some(e) = &st.failed {
                    return Err(retask(e, task_id, None));
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = cancel.cancelled() => return Err(WorkerError::Source {
                    task: task_id.to_owned(),
                    url: redact::source(&self.entry.shown),
                    attempt: 0,
                    attempts: self.cache.cfg.source_attempts,
                    cause: "task stopped".into(),
                    kind: ErrorKind::Fail,
                    fault: Fault::Local,
                }),
            }
        }
    }

    /// Another pin of the same entry.
    pub fn another(&self) -> Pin {
        let mut st = self.entry.lock();
        st.pins += 1;
        st.last_used = self.cache.tick.fetch_add(1, Ordering::Relaxed);
        drop(st);
        Pin {
            cache: self.cache.clone(),
            entry: self.entry.clone(),
        }
    }

    /// A blocking reader from byte 0, for `task_id`; `cancel` ends its waits.
    pub fn reader(self, task_id: &str, cancel: CancellationToken) -> Reader {
        let cfg = &self.cache.cfg;
        // The driver gives up after its attempts; this only guards against a
        // download that neither progresses nor fails.
        let backoff: Duration = (0..cfg.source_attempts)
            .map(|i| cfg.retry_backoff * 2u32.saturating_pow(i.min(3)))
            .sum();
        let patience = cfg.source_timeout * (cfg.source_attempts + 1) + backoff;
        Reader::new(self, task_id, cancel, patience)
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut st = self.entry.lock();
        st.pins -= 1;
        st.last_used = self.cache.tick.fetch_add(1, Ordering::Relaxed);
        if st.pins == 0 {
            // Nobody reads it: the download stops (a later pin resumes it).
            if let Some(run) = st.run_cancel.take() {
                run.cancel();
            }
        }
        drop(st);
        if self.cache.held_bytes() > self.cache.max_bytes {
            self.cache.evict();
        }
    }
}

#[cfg(test)]
mod tests;
