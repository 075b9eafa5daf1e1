//! Sources: turns each item's URL into what libavformat opens ([`Media`]).
//!
//! libavformat never sees a network URL (docs/ARCHITECTURE.md, "Secrets"):
//! `http(s)` sources and `s3://BUCKET/KEY` ones (a presigned `https` GET,
//! [`s3`]) are streamed through the worker's shared [`cache`]: playback
//! starts while the download goes on, and one download serves every task
//! and loop that plays the URL; an HLS playlist ([`hls`]) streams its
//! segments in order into one cache entry; an `rtsp://` pull ([`rtsp`])
//! appends FLV to a cache entry of the task's own, played while it is pulled.
//! `vod://NAME` is resolved inside
//! the media root; watermark images (and HLS playlists' text) are fetched
//! whole into the task's own directory. Downloads of later items start while
//! earlier ones play (docs/design/sources.md).

pub mod cache;
pub mod hls;
mod http;
mod ranges;
pub mod rtsp;
pub mod s3;

use vodfleet_net as policy;

use crate::config::Config;
use crate::error::{ErrorKind, Fault, WorkerError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use vodfleet_proto::{redact, TaskSpec};

type Slot = Arc<OnceCell<Result<PathBuf, Arc<WorkerError>>>>;
type Plan = Arc<OnceCell<Result<Vec<String>, WorkerError>>>;

/// What `media::open_input` opens for an item.
pub enum Media {
    /// A local file (`vod://`).
    File(PathBuf),
    /// An `http(s)`/`s3`/HLS source read from the shared cache while it
    /// downloads, or an `rtsp://` one while it is pulled.
    Stream(cache::Reader),
}

fn watermark_urls(spec: &TaskSpec) -> Vec<String> {
    let mut urls: Vec<String> = spec
        .sources
        .iter()
        .filter_map(|s| s.watermark.as_ref().map(|w| w.image_url.clone()))
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

pub struct Sources {
    cfg: Config,
    client: reqwest::Client,
    task_id: String,
    dir: PathBuf,
    cancel: CancellationToken,
    rt: tokio::runtime::Handle,
    slots: Mutex<HashMap<String, Slot>>,
    /// Recording start times playlists stated, by source URL (HLS).
    starts: Mutex<HashMap<String, u64>>,
    /// Watermark image URLs, and whether their names passed the policy.
    watermarks: Vec<String>,
    watermarks_checked: OnceCell<Result<(), Arc<WorkerError>>>,
    /// The worker's shared cache, where streamed sources download.
    cache: Arc<cache::Cache>,
    /// Pins taken by [`Sources::prefetch`], handed to the item's reader when it opens.
    prefetched: Mutex<HashMap<String, cache::Pin>>,
    /// HLS playlists parsed, by source URL: once per task however often the
    /// item is prefetched, opened or looped.
    plans: Mutex<HashMap<String, Plan>>,
    /// Streamed sources whose download failed before playing: later loops of
    /// this task fail them at once, as a downloaded file's failure did.
    failed: Mutex<HashMap<String, Arc<WorkerError>>>,
    /// How far each `rtsp://` source is pulled ([`rtsp`]).
    rtsp: Arc<rtsp::Limits>,
    /// This task's `rtsp://` pulls, by source URL: one per task, its cache
    /// entry the task's own (removed when the task ends), replayed by loops.
    pulls: Mutex<HashMap<String, Arc<rtsp::Pulling>>>,
    /// Stops the pulls when the task ends (or is stopped: a child of `cancel`).
    rtsp_cancel: CancellationToken,
}

impl Sources {
    pub fn new(
        cfg: &Config,
        spec: &TaskSpec,
        cancel: CancellationToken,
        rt: tokio::runtime::Handle,
        cache: Arc<cache::Cache>,
    ) -> std::io::Result<Arc<Sources>> {
        // One directory per run: a newer epoch of the same task on this worker must
        // not lose its files when the older run ends and removes its own.
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let task_id = spec.id.as_str();
        let dir = cfg.cache_dir.join(format!(
            "task-{}-{}-{run}",
            sanitize(task_id),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(Sources {
            client: policy::http_client(cfg.allow_private_networks, cfg.source_timeout),
            cfg: cfg.clone(),
            task_id: task_id.to_owned(),
            dir,
            rt,
            slots: Mutex::new(HashMap::new()),
            starts: Mutex::new(HashMap::new()),
            watermarks: watermark_urls(spec),
            watermarks_checked: OnceCell::new(),
            cache,
            prefetched: Mutex::new(HashMap::new()),
            plans: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            rtsp: Arc::new(rtsp::Limits::new(spec)),
            pulls: Mutex::new(HashMap::new()),
            rtsp_cancel: cancel.child_token(),
            cancel,
        }))
    }

    /// What libavformat opens for an item's `url`: a stream from the shared
    /// cache for `http(s)` and `s3` sources, once their download has begun
    /// (an error status, a refusal or a timeout fails here, before the item
    /// starts), else a local file ([`Sources::local`]).
    pub async fn open(&self, url: &str) -> Result<Media, Arc<WorkerError>> {
        if is_rtsp(url) {
            return self.open_rtsp(url).await;
        }
        if !streamed(url) {
            return self.local(url).await.map(Media::File);
        }
        self.check_watermarks_once().await?;
        if let Some(e) = lock(&self.failed).get(url) {
            return Err(e.clone());
        }
        let taken = lock(&self.prefetched).remove(url);
        let pin = match taken {
            Some(p) => p,
            None => self.pin(url).await.map_err(Arc::new)?,
        };
        match pin.started(&self.task_id, &self.cancel).await {
            Ok(()) => Ok(Media::Stream(
                pin.reader(&self.task_id, self.cancel.clone()),
            )),
            Err(e) => {
                let e = Arc::new(e);
                if !self.cancel.is_cancelled() {
                    lock(&self.failed).insert(url.to_owned(), e.clone());
                }
                Err(e)
            }
        }
    }

    /// An `rtsp://` item: its pull (started if it is not yet), once it holds
    /// what the item needs to open (rtsp::Pulling::ready).
    async fn open_rtsp(&self, url: &str) -> Result<Media, Arc<WorkerError>> {
        let pulling = self.rtsp_pull(url).map_err(Arc::new)?;
        pulling
            .ready(&self.rtsp, &self.cfg, &self.task_id, &self.cancel)
            .await?;
        Ok(Media::Stream(
            pulling.reader(&self.task_id, self.cancel.clone()),
        ))
    }

    /// Waits until the source `url` holds the item's media at `from_ms` (ms
    /// of the item), where a cut's seek reads forward to: at once but for an
    /// `rtsp://` pull, which may not have got there yet (the seek would block
    /// its task's thread until it did; docs/design/sources.md, "RTSP").
    pub async fn holds(&self, url: &str, from_ms: u64) {
        let pulling = lock(&self.pulls).get(url).cloned();
        if let Some(p) = pulling {
            p.holds(from_ms, &self.cancel).await;
        }
    }

    /// The task's pull of `url`, started on first use (an open or a prefetch).
    fn rtsp_pull(&self, url: &str) -> Result<Arc<rtsp::Pulling>, WorkerError> {
        let mut pulls = lock(&self.pulls);
        if let Some(p) = pulls.get(url) {
            return Ok(p.clone());
        }
        let ctx = rtsp::Ctx {
            cfg: self.cfg.clone(),
            task_id: self.task_id.clone(),
            cancel: self.rtsp_cancel.clone(),
            limits: self.rtsp.clone(),
        };
        let p = Arc::new(rtsp::start(
            ctx,
            url,
            &self.rtsp_key(url),
            &self.cache,
            &self.rt,
        )?);
        pulls.insert(url.to_owned(), p.clone());
        Ok(p)
    }

    /// The cache key of this task's pull of `url`: the task's directory is
    /// unique to this run of the task, so no other task (or run) shares it.
    fn rtsp_key(&self, url: &str) -> String {
        format!("rtsp-pull:{}:{url}", self.dir.display())
    }

    /// Pins `url`'s cache entry, which starts its download, after the URL
    /// policy's checks (`s3://`: of the presigned URL's host).
    async fn pin(&self, url: &str) -> Result<cache::Pin, WorkerError> {
        let pinned = if hls::is_playlist(url) {
            let plan = lock(&self.plans).entry(url.to_owned()).or_default().clone();
            let segments = plan.get_or_init(|| self.hls_segments(url)).await.clone()?;
            self.cache.pin_segments(url, segments, &self.task_id)
        } else {
            let fetch_url = if url.starts_with("s3://") {
                self.presign(url)?
            } else {
                url.to_owned()
            };
            self.check_fetch(url, &fetch_url).await?;
            self.cache.pin(url, &fetch_url, &self.task_id)
        };
        pinned.map_err(|e| WorkerError::Source {
            task: self.task_id.clone(),
            url: redact::source(url),
            attempt: 0,
            attempts: self.cfg.source_attempts,
            cause: format!("cache file: {e}"),
            kind: ErrorKind::Fail,
            fault: Fault::Local,
        })
    }

    async fn check_watermarks_once(&self) -> Result<(), Arc<WorkerError>> {
        self.watermarks_checked
            .get_or_init(|| async { self.check_watermarks().await.map_err(Arc::new) })
            .await
            .clone()
    }

    /// The local file for `url`, downloading it whole first if needed
    /// (watermark images; items that are not streamed). Nothing is
    /// fetched for a task with a watermark image the URL policy refuses.
    pub async fn local(&self, url: &str) -> Result<PathBuf, Arc<WorkerError>> {
        self.check_watermarks_once().await?;
        let slot = self
            .slots
            .lock()
            .expect("sources lock")
            .entry(url.to_owned())
            .or_default()
            .clone();
        slot.get_or_init(|| async { self.resolve(url).await.map_err(Arc::new) })
            .await
            .clone()
    }

    /// Starts fetching `url` in the background so it is ready when its turn
    /// comes; a streamed source stays pinned in the cache until it opens.
    pub fn prefetch(self: &Arc<Self>, url: &str) {
        let (me, url) = (self.clone(), url.to_owned());
        self.rt.spawn(async move {
            if is_rtsp(&url) {
                // A refusal or failure is reported when the item opens.
                let _ = me.rtsp_pull(&url);
                return;
            }
            if !streamed(&url) {
                let _ = me.local(&url).await;
                return;
            }
            if me.check_watermarks_once().await.is_err()
                || lock(&me.failed).contains_key(&url)
                || lock(&me.prefetched).contains_key(&url)
            {
                return;
            }
            // A refusal is reported when the item opens.
            if let Ok(pin) = me.pin(&url).await {
                lock(&me.prefetched).entry(url).or_insert(pin);
            }
        });
    }

    /// A presigned GET for `s3://BUCKET/KEY`, valid for a whole download with its retries.
    fn presign(&self, url: &str) -> Result<String, WorkerError> {
        let expires = self.cfg.source_timeout * 4 * self.cfg.source_attempts
            + std::time::Duration::from_secs(3600);
        self.cfg
            .s3
            .presign(url, crate::event::unix_ms(), expires)
            .map_err(|r| self.refuse(url, r))
    }

    async fn resolve(&self, url: &str) -> Result<PathBuf, WorkerError> {
        let parsed = url::Url::parse(url).map_err(|e| self.refuse(url, e.to_string()))?;
        match parsed.scheme() {
            "vod" => vod_path(&self.cfg.media_root, &url["vod://".len()..])
                .map_err(|r| self.refuse(url, r)),
            "s3" => {
                let signed = self.presign(url)?;
                self.fetch(url, &signed).await
            }
            "http" | "https" => self.fetch(url, url).await,
            other => Err(WorkerError::Unsupported {
                task: self.task_id.clone(),
                cause: format!(
                    "{other}:// sources are not supported by this worker yet ({})",
                    redact::source(url)
                ),
            }),
        }
    }

    /// Downloads `fetch_url` (the source's URL, or the presigned URL of an
    /// `s3://` one) under the URL policy into the file named after `url`.
    async fn fetch(&self, url: &str, fetch_url: &str) -> Result<PathBuf, WorkerError> {
        let dest = self.dir.join(hex_digest(url));
        self.fetch_to(url, fetch_url, &dest).await?;
        Ok(dest)
    }

    /// The segments of the HLS source `url` ([`hls`]): its playlist (and one
    /// level of master) fetched and parsed, its program date kept for
    /// `absofftime`, and every segment URL checked by the URL policy before
    /// anything plays (each is checked again when it is fetched).
    async fn hls_segments(&self, url: &str) -> Result<Vec<String>, WorkerError> {
        let unsupported = |cause: String| WorkerError::Unsupported {
            task: self.task_id.clone(),
            cause: format!("HLS source {}: {cause}", redact::source(url)),
        };
        let (mut at, mut nested) = (url.to_owned(), false);
        let plan = loop {
            // A name of its own: two items' plans may fetch the same playlist at once.
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = self.dir.join(format!("{}-{n}.m3u8", hex_digest(&at)));
            self.fetch_to(&at, &at, &path).await?;
            let body = read_bounded(&path, hls::MAX_PLAYLIST_BYTES).map_err(&unsupported)?;
            let _ = std::fs::remove_file(&path);
            match hls::parse(&at, &body, nested, self.cfg.hls_max_bandwidth)
                .map_err(&unsupported)?
            {
                hls::Parsed::Media(plan) => break plan,
                hls::Parsed::Variant(next) => (at, nested) = (next, true),
            }
        };
        let mut hosts = std::collections::HashSet::new();
        for segment in &plan.urls {
            let host = url::Url::parse(segment)
                .ok()
                .map(|u| (u.host_str().map(str::to_owned), u.port_or_known_default()));
            if hosts.insert(host) {
                self.check_fetch(segment, segment).await?;
            }
        }
        if let Some(ms) = plan.start_ms {
            self.starts
                .lock()
                .expect("starts lock")
                .insert(url.to_owned(), ms);
        }
        tracing::info!(task.id = %self.task_id, url = %redact::source(url), segments = plan.urls.len(), "HLS source planned");
        Ok(plan.urls)
    }

    /// When the recording at `url` started, if its playlist said so
    /// (`EXT-X-PROGRAM-DATE-TIME`); `None` for other sources (their container
    /// may say: `media::recording_start_ms`).
    pub fn recording_start(&self, url: &str) -> Option<u64> {
        self.starts.lock().expect("starts lock").get(url).copied()
    }

    async fn fetch_to(&self, url: &str, fetch_url: &str, dest: &Path) -> Result<(), WorkerError> {
        self.check_fetch(url, fetch_url).await?;
        http::Fetch {
            client: &self.client,
            cfg: &self.cfg,
            task_id: &self.task_id,
            url: fetch_url,
            shown: url,
            cancel: &self.cancel,
        }
        .run(&mut http::FileSink::new(dest))
        .await
    }

    /// The URL policy's checks before `fetch_url` (for `url`) is contacted.
    async fn check_fetch(&self, url: &str, fetch_url: &str) -> Result<(), WorkerError> {
        check_fetch(&self.cfg, &self.task_id, url, fetch_url).await
    }

    /// Watermark images the URL policy would never fetch, refused before the
    /// first item: a scheme other than `http`, `https` or `vod`, a host that is a
    /// refused IP literal (any spelling) or `localhost`, a name that resolves only
    /// to refused addresses (one that does not resolve is the fetch's to report).
    async fn check_watermarks(&self) -> Result<(), WorkerError> {
        for url in &self.watermarks {
            let refuse = |why: String| self.refuse(url, format!("watermark image: {why}"));
            let u = url::Url::parse(url).map_err(|e| refuse(e.to_string()))?;
            if u.scheme() == "vod" {
                continue;
            }
            policy::check_url(&u, self.cfg.allow_private_networks).map_err(refuse)?;
            if let Some(url::Host::Domain(host)) = u.host() {
                if let Err(policy::NameError::Refused(why)) =
                    policy::resolve_allowed(host, self.cfg.allow_private_networks).await
                {
                    return Err(refuse(why));
                }
            }
        }
        Ok(())
    }

    fn refuse(&self, url: &str, reason: String) -> WorkerError {
        WorkerError::Policy {
            task: self.task_id.clone(),
            url: redact::source(url),
            reason,
        }
    }
}

impl Drop for Sources {
    fn drop(&mut self) {
        // Downloads belong to the task: nothing is left behind when it ends.
        let _ = std::fs::remove_dir_all(&self.dir);
        // So do its pulls and their cache entries.
        self.rtsp_cancel.cancel();
        for url in lock(&self.pulls).keys() {
            self.cache.remove(&self.rtsp_key(url));
        }
    }
}

/// The URL policy's checks before `fetch_url` (for the source `url`, which
/// messages name) is contacted for `task`.
pub(crate) async fn check_fetch(
    cfg: &Config,
    task: &str,
    url: &str,
    fetch_url: &str,
) -> Result<(), WorkerError> {
    let refuse = |reason: String| WorkerError::Policy {
        task: task.to_owned(),
        url: redact::source(url),
        reason,
    };
    let parsed = url::Url::parse(fetch_url).map_err(|e| refuse(e.to_string()))?;
    policy::check_url_host(&parsed, cfg.allow_private_networks).map_err(refuse)?;
    // A name that resolves only to refused addresses is refused once, here,
    // not retried as an unreachable server (the client's resolver checks
    // every connection and redirect again).
    if let Some(url::Host::Domain(host)) = parsed.host() {
        if let Err(policy::NameError::Refused(why)) =
            policy::resolve_allowed(host, cfg.allow_private_networks).await
        {
            return Err(refuse(why));
        }
    }
    Ok(())
}

/// Whether `url` streams through the shared cache: `http(s)` (HLS playlists
/// too) and `s3`.
fn streamed(url: &str) -> bool {
    matches!(
        url.split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .as_deref(),
        Some("http" | "https" | "s3")
    )
}

fn is_rtsp(url: &str) -> bool {
    url.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("rtsp://"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `vod://NAME` → a regular file inside `root`, after symlinks are resolved.
pub fn vod_path(root: &Path, name: &str) -> Result<PathBuf, String> {
    let root = root
        .canonicalize()
        .map_err(|e| format!("media root {} is not usable: {e}", root.display()))?;
    if name
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
        || name.contains('\\')
    {
        return Err("vod:// name must stay inside the media root".into());
    }
    let path = root
        .join(name)
        .canonicalize()
        .map_err(|e| format!("vod://{name}: {e}"))?;
    if !path.starts_with(&root) {
        return Err(format!("vod://{name} leads outside the media root"));
    }
    if !path.is_file() {
        return Err(format!("vod://{name} is not a regular file"));
    }
    Ok(path)
}

/// The file at `path`, if at most `max` bytes.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > max {
        return Err(format!("the playlist is {len} bytes; the limit is {max}"));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

fn hex_digest(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vod_paths_stay_inside_the_root() {
        let root = std::env::temp_dir().join(format!("vodfleet-vod-test-{}", std::process::id()));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.mp4"), b"x").unwrap();
        assert!(vod_path(&root, "sub/a.mp4").is_ok());
        assert!(vod_path(&root, "../etc/passwd").is_err());
        assert!(vod_path(&root, "sub/../../etc/passwd").is_err());
        assert!(vod_path(&root, "missing.mp4").is_err());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/passwd", root.join("escape")).unwrap();
            assert!(
                vod_path(&root, "escape").is_err(),
                "a symlink out of the root is refused"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
