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
pub mod media;
pub mod metrics;
pub mod pacer;
pub mod plan;
pub mod source;
pub mod task;
pub mod timeline;

use config::Config;
use error::WorkerError;
use event::{Event, TaskStatus};
use std::sync::Arc;
use task::{Control, End, Outcome, Task};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use vodfleet_proto::{Position, TaskSpec};

/// The engine of one process: its configuration and the runtime that does its
/// downloads. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    cfg: Config,
    rt: tokio::runtime::Handle,
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
pub struct Controller(std::sync::mpsc::Sender<Control>);

impl Controller {
    pub fn send(&self, c: Control) {
        let _ = self.0.send(c);
    }
}

impl Engine {
    /// `rt` runs downloads and other async work of the tasks; libav* is
    /// initialised here once per process.
    pub fn new(cfg: Config, rt: tokio::runtime::Handle) -> Engine {
        media::init();
        Engine { cfg, rt }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Starts a task. Fails only when the task cannot be set up at all (its
    /// cache directory); everything after that is reported through the handle.
    pub fn start(&self, s: Start) -> Result<TaskHandle, WorkerError> {
        let task_id = s.spec.id.clone();
        let sources = source::Sources::new(&self.cfg, &task_id, s.cancel, self.rt.clone())
            .map_err(|e| WorkerError::Unsupported {
                task: task_id.clone(),
                cause: format!(
                    "cache directory {}: {e}",
                    self.cfg.cache_dir.display()
                ),
            })?;
        let (events, events_rx) = mpsc::unbounded_channel::<Event>();
        let (control, control_rx) = std::sync::mpsc::channel();
        let status = Arc::new(TaskStatus::default());
        let task = Task::new(
            s.spec,
            self.cfg.clone(),
            sources,
            self.rt.clone(),
            events,
            status.clone(),
            control_rx,
        )
        .resume_from(s.resume)
        .resume_estimated(s.resume_estimated);
        let (done, done_rx) = oneshot::channel::<Outcome>();
        let panicked = status.clone();
        std::thread::Builder::new()
            .name(format!("task-{task_id}"))
            .spawn(move || {
                let id = task.id().to_owned();
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.run()))
                    .unwrap_or_else(|_| Outcome {
                        end: End::Failed(WorkerError::Unsupported {
                            task: id,
                            cause: "media pipeline panicked".into(),
                        }),
                        position: panicked.position(),
                    });
                let _ = done.send(outcome);
            })
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
}
