//! Event-loop shards: a few threads (one per core by default), each a
//! single-threaded tokio runtime with a `LocalSet`, that own every copy-mode
//! task and its destinations: their sockets, their pacing timers (tokio's
//! timer wheel), their queues. The thread count does not grow with the number
//! of streams. A task stays on the shard it started on; new tasks go to the
//! shard with the fewest.
//!
//! Alternatives considered (docs/design/engine.md): one multi-threaded runtime
//! (needs every future `Send`, which libav's demuxer state is not, and moves
//! tasks between cores), and one thread per task and per destination (what
//! the engine did before: 2N+3 threads and a context switch per packet).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Work for a shard: builds its future on the shard's thread, so the future
/// itself need not be `Send`.
pub type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

struct Shard {
    tx: mpsc::UnboundedSender<Job>,
    /// Tasks running on it now.
    load: Arc<AtomicUsize>,
}

pub struct Shards {
    shards: Vec<Shard>,
    /// The latest a shard's probe timer woke up since [`Shards::take_delay`] (µs):
    /// how long a stream's pacing timer may wait behind the shard's other work.
    delay_us: Arc<AtomicU64>,
}

/// How often each shard's probe timer fires.
const PROBE: Duration = Duration::from_millis(50);

impl Shards {
    /// Starts `n` shard threads (at least one).
    pub fn new(n: usize) -> std::io::Result<Shards> {
        let mut shards = Vec::new();
        let delay_us = Arc::new(AtomicU64::new(0));
        for i in 0..n.max(1) {
            let delay = delay_us.clone();
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                // File opens and demux reads (media::demux). A read of a
                // streamed source waits while its download catches up
                // (source::cache), holding its thread: enough threads that a
                // few slow sources do not queue every other stream's reads
                // behind them. Threads start on demand and exit when idle.
                .max_blocking_threads(32)
                .thread_name(format!("engine-{i}-io"))
                .build()?;
            std::thread::Builder::new()
                .name(format!("engine-{i}"))
                .spawn(move || {
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, async move {
                        tokio::task::spawn_local(probe(delay));
                        while let Some(job) = rx.recv().await {
                            tokio::task::spawn_local(job());
                        }
                    });
                })?;
            shards.push(Shard {
                tx,
                load: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Shards { shards, delay_us })
    }

    /// The worst lateness of a shard's timer since the last call.
    pub fn take_delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.swap(0, Ordering::Relaxed))
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Runs `job` on the least loaded shard.
    pub fn spawn(&self, job: Job) {
        let shard = self
            .shards
            .iter()
            .min_by_key(|s| s.load.load(Ordering::Relaxed))
            .expect("at least one shard");
        let load = shard.load.clone();
        load.fetch_add(1, Ordering::Relaxed);
        let wrapped: Job = Box::new(move || {
            let fut = job();
            Box::pin(async move {
                fut.await;
                load.fetch_sub(1, Ordering::Relaxed);
            })
        });
        if shard.tx.send(wrapped).is_err() {
            tracing::error!("an engine shard has stopped; the task cannot run");
        }
    }
}

/// Measures how late the shard's timers fire: a busy shard wakes its streams late.
async fn probe(worst: Arc<AtomicU64>) {
    let mut next = tokio::time::Instant::now() + PROBE;
    loop {
        tokio::time::sleep_until(next).await;
        let now = tokio::time::Instant::now();
        let late = now.saturating_duration_since(next).as_micros() as u64;
        worst.fetch_max(late, Ordering::Relaxed);
        next = now + PROBE;
    }
}

/// Runs `fut` on a thread of its own (a task that transcodes).
pub fn dedicated<F>(name: String, make: impl FnOnce() -> F + Send + 'static) -> std::io::Result<()>
where
    F: Future<Output = ()> + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .build()?;
    std::thread::Builder::new().name(name).spawn(move || {
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, make());
    })?;
    Ok(())
}
