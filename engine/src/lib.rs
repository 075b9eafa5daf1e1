//! vodfleet's media engine: one task = a playlist streamed live, as one
//! continuous timeline, to every destination of the task.
//!
//! Both `vodfleet-worker play` and `vodfleet-worker run` drive it through one
//! handle, [`Engine`], and one start-up path, [`Engine::start`]. The engine
//! knows nothing of RabbitMQ, leases or HTTP servers; its host reads
//! [`TaskHandle`]'s status, events and outcome and decides what they mean.
//! The map of its modules is docs/ARCHITECTURE.md.

pub mod config;
pub mod cut;
pub mod destination;
pub mod error;
pub mod event;
pub mod frame;
pub mod media;
pub mod metrics;
pub mod output;
pub mod pacer;
pub mod plan;
pub mod shard;
pub mod source;
pub mod task;
pub mod timeline;

use config::Config;
use error::WorkerError;
use event::{Event, TaskStatus};
use std::sync::Arc;
use task::{Control, End, Outcome, Parts, Placement, Ran, Task};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use vodfleet_proto::{Position, TaskSpec};
use vodfleet_rtmp::publish::PublishOptions;

/// The engine of one process: its configuration, its event-loop shards and
/// the runtime that does its downloads. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    cfg: Config,
    rt: tokio::runtime::Handle,
    shards: Arc<shard::Shards>,
    publish: PublishOptions,
    /// The worker-wide source cache every task streams its downloads through.
    cache: Arc<source::cache::Cache>,
}

/// What to start.
pub struct Start {
    pub spec: TaskSpec,
    /// Where to begin instead of `spec.first_item` (a resume or a failover).
    pub resume: Option<Position>,
    /// `resume` is an estimate (a failover from a heartbeat): start at the
    /// keyframe nearest to it rather than the one before.
    pub resume_estimated: bool,
    /// Cancels the task's downloads; the host cancels it when the task ends or the process stops.
    pub cancel: CancellationToken,
}

/// A running task, as its host sees it.
pub struct TaskHandle {
    /// Orders for the task (stop, stop some destinations, replace the playlist).
    pub control: Controller,
    /// Position, lag and destinations, updated as the task streams.
    pub status: Arc<TaskStatus>,
    /// Progress and state events; the channel closes once the task and its
    /// destinations are gone.
    pub events: mpsc::UnboundedReceiver<Event>,
    /// How the task ended, and exactly where.
    pub done: oneshot::Receiver<Outcome>,
}

/// Sends [`Control`] orders to one task. Sending never blocks; orders to a
/// task that has ended are dropped.
#[derive(Clone)]
pub struct Controller(mpsc::UnboundedSender<Control>);

impl Controller {
    pub fn send(&self, c: Control) {
        let _ = self.0.send(c);
    }
}

impl Engine {
    /// `rt` runs the tasks' downloads; the media runs on the engine's own
    /// shards (`VODFLEET_ENGINE_THREADS` of them). libav* is initialised here
    /// once per process. Fails on an unusable configuration (the message names
    /// the variable).
    pub fn new(cfg: Config, rt: tokio::runtime::Handle) -> Result<Engine, String> {
        media::init();
        let tls = vodfleet_rtmp::TlsRoots::new(cfg.destination_ca_file.as_deref())
            .map_err(|e| format!("VODFLEET_DESTINATION_CA_FILE: {e}"))?;
        let publish = PublishOptions {
            timeout: cfg.destination_timeout,
            tls: Some(Arc::new(tls)),
            ..PublishOptions::default()
        };
        let shards = shard::Shards::new(cfg.engine_threads)
            .map_err(|e| format!("cannot start the engine's threads: {e}"))?;
        let cache = source::cache::Cache::new(&cfg, rt.clone())
            .map_err(|e| format!("VODFLEET_CACHE_DIR {}: {e}", cfg.cache_dir.display()))?;
        Ok(Engine {
            cfg,
            cache,
            rt,
            shards: Arc::new(shards),
            publish,
        })
    }

    /// The worst lateness of an event-loop wake-up since the last call: how
    /// long a stream may wait for its turn on a busy shard.
    pub fn take_loop_delay(&self) -> std::time::Duration {
        self.shards.take_delay()
    }

    /// Starts a task. Fails only when the task cannot be set up at all (its
    /// cache directory); everything after that is reported through the handle.
    pub fn start(&self, s: Start) -> Result<TaskHandle, WorkerError> {
        let task_id = s.spec.id.clone();
        let sources = source::Sources::new(
            &self.cfg,
            &s.spec,
            s.cancel,
            self.rt.clone(),
            self.cache.clone(),
        )
        .map_err(|e| WorkerError::Unsupported {
            task: task_id.clone(),
            cause: format!("cache directory {}: {e}", self.cfg.cache_dir.display()),
        })?;
        let (events, events_rx) = mpsc::unbounded_channel::<Event>();
        let (control, control_rx) = mpsc::unbounded_channel();
        let status = Arc::new(TaskStatus::default());
        let parts = Parts {
            cfg: self.cfg.clone(),
            sources,
            events,
            status: status.clone(),
            control: control_rx,
            publish: self.publish.clone(),
        };
        let task = Task::new(s.spec, parts)
            .resume_from(s.resume)
            .resume_estimated(s.resume_estimated);
        let (done, done_rx) = oneshot::channel::<Outcome>();
        self.launch(task, done)
            .map_err(|e| WorkerError::Unsupported {
                task: task_id.clone(),
                cause: format!("cannot start a media thread: {e}"),
            })?;
        Ok(TaskHandle {
            control: Controller(control),
            status,
            events: events_rx,
            done: done_rx,
        })
    }

    /// Runs a task where its placement says, and reports its outcome on `done`.
    fn launch(&self, task: Task, done: oneshot::Sender<Outcome>) -> std::io::Result<()> {
        match task.placement() {
            Placement::Shard => {
                let engine = self.clone();
                let span = tracing::info_span!("task", task.id = %task.id());
                self.shards.spawn(Box::new(move || {
                    Box::pin(tracing::Instrument::instrument(async move {
                        match task.run().await {
                            Ran::Over(outcome) => {
                                let _ = done.send(outcome);
                            }
                            Ran::Migrate(mut task) => {
                                task.dedicate();
                                let id = task.id().to_owned();
                                if let Err(e) = engine.launch(*task, done) {
                                    tracing::error!(task.id = %id, error = %e, "cannot start a media thread");
                                }
                            }
                        }
                    }, span))
                }));
                Ok(())
            }
            Placement::Dedicated => {
                let name = format!("task-{}", task.id());
                let span = tracing::info_span!("task", task.id = %task.id());
                shard::dedicated(name, move || {
                    tracing::Instrument::instrument(
                        async move {
                            let status = task.status().clone();
                            let id = task.id().to_owned();
                            let outcome = match task.run().await {
                                Ran::Over(o) => o,
                                Ran::Migrate(_) => Outcome {
                                    end: End::Failed(WorkerError::Unsupported {
                                        task: id,
                                        cause: "a dedicated task asked to move".into(),
                                    }),
                                    position: status.position(),
                                },
                            };
                            let _ = done.send(outcome);
                        },
                        span,
                    )
                })
            }
        }
    }
}
