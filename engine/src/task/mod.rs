//! One task's media pipeline, an async task on an event-loop shard (or on a
//! thread of its own when it transcodes):
//!
//! source file → demux → (copy | decode → scale/fps → encode) → timeline →
//! pacer → fan-out to every destination.
//!
//! The playlist is walked by the [`Plan`] (from `first_item`, or from a resume
//! [`Position`], `loop_count` times or forever, until `end_ms`), each item cut
//! into its `relofftime` ranges ([`play`]). The first item that opens decides
//! the output: its H.264/AAC/MP3 streams are copied when the task has no
//! `fops`, otherwise they are encoded once with the task's settings.
//!
//! Control messages are read between packets and during every pacing wait:
//! [`Control::Stop`], [`Control::StopForwards`] (some destinations) and
//! [`Control::Update`] (a new playlist, now or after the current item).

mod cover;
mod fanout;
mod play;

use crate::config::Config;
use crate::error::WorkerError;
use crate::event::{Event, Events, TaskStatus};
use crate::output::Output;
use crate::plan::{Next, Plan, Played};
use crate::source::Sources;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{error::TryRecvError, UnboundedReceiver};
use vodfleet_proto::command::SourceSpec;
use vodfleet_proto::{redact, Position, TaskSpec};
use vodfleet_rtmp::publish::PublishOptions;

/// Orders for a running task.
#[derive(Debug)]
pub enum Control {
    /// Stop now: destinations close at once.
    Stop,
    /// Close the destinations with these URLs (as written in the spec); the others
    /// go on. Closing every remaining destination stops the task.
    StopForwards(Vec<String>),
    /// Replace the playlist: at the next packet, or once the current item ends
    /// (`wait_current`). The new list plays from its first item; the loop count
    /// and the output timeline go on.
    Update {
        sources: Vec<SourceSpec>,
        wait_current: bool,
    },
}

/// How a task run ended, and exactly where.
#[derive(Debug)]
pub struct Outcome {
    pub end: End,
    /// The last packet handed to the destinations (the resume position).
    pub position: Position,
}

#[derive(Debug)]
pub enum End {
    /// The loop count was reached or `end_ms` passed.
    Finished,
    /// Stopped by [`Control::Stop`] or by stopping every destination.
    Stopped,
    Failed(WorkerError),
}

/// Where a task runs. Copy-mode tasks share the event-loop shards; a task that
/// decodes and encodes would hold a shard's other streams back, so it gets a
/// thread of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Shard,
    Dedicated,
}

/// What [`Task::run`] gives back.
pub enum Ran {
    Over(Outcome),
    /// The task found out on opening its first item that it must transcode
    /// while it sits on a shard: nothing was sent yet; run it again, dedicated.
    Migrate(Box<Task>),
}

pub struct Task {
    spec: TaskSpec,
    cfg: Config,
    sources: Arc<Sources>,
    events: Events,
    status: Arc<TaskStatus>,
    control: UnboundedReceiver<Control>,
    placement: Placement,
    /// How destinations connect (timeouts, TLS roots).
    publish: PublishOptions,
    /// Where to begin: `None` starts at `spec.first_item`.
    resume: Option<Position>,
    /// The resume offset, until the first item played has used it.
    resume_offset_ms: Option<u64>,
    /// Seek the resume offset to the nearest keyframe (an estimated position).
    resume_nearest: bool,
    /// This run takes the stream over after a failover: its predecessor may
    /// still hold the destinations' names for a while.
    takeover: bool,
    /// Destinations asked to stop (by index into `spec.forwards`).
    stop_requested: Vec<bool>,
    /// A playlist waiting for its turn ([`Control::Update`]).
    update: Option<Vec<SourceSpec>>,
    /// `spec.end_ms` on the monotonic clock.
    end_at: Option<Instant>,
    /// When the task last woke up to send (pacing batches its wake-ups).
    last_wake: Instant,
    /// Watermark images decoded so far, by URL (loops reuse them).
    watermarks: std::collections::HashMap<String, Arc<crate::media::watermark::Image>>,
}

/// Why a segment or item stopped early.
enum Halt {
    Stop,
    /// `end_ms` passed: the task is finished.
    End,
    /// A new playlist replaces the current one now.
    Switch,
    /// See [`Ran::Migrate`].
    Migrate,
    Fail(WorkerError),
}

/// What every task needs besides its spec.
pub struct Parts {
    pub cfg: Config,
    pub sources: Arc<Sources>,
    pub events: Events,
    pub status: Arc<TaskStatus>,
    pub control: UnboundedReceiver<Control>,
    pub publish: PublishOptions,
}

impl Task {
    pub fn new(spec: TaskSpec, parts: Parts) -> Task {
        let end_at = spec.end_ms.map(|end| {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            Instant::now() + Duration::from_millis(end.saturating_sub(now_ms))
        });
        let placement =
            if spec.transcode.is_some() || spec.sources.iter().any(|s| s.watermark.is_some()) {
                Placement::Dedicated
            } else {
                Placement::Shard
            };
        Task {
            stop_requested: vec![false; spec.forwards.len()],
            spec,
            cfg: parts.cfg,
            sources: parts.sources,
            events: parts.events,
            status: parts.status,
            control: parts.control,
            placement,
            publish: parts.publish,
            resume: None,
            resume_offset_ms: None,
            resume_nearest: false,
            takeover: false,
            update: None,
            end_at,
            last_wake: Instant::now(),
            watermarks: Default::default(),
        }
    }

    /// The resume position is an estimate (a failover): start at the keyframe
    /// nearest to it rather than the one before, which halves the worst error.
    pub fn resume_estimated(mut self, estimated: bool) -> Task {
        self.resume_nearest = estimated;
        self.takeover = estimated;
        self
    }

    /// Starts from `at` instead of `first_item`: that item and loop, the keyframe at
    /// or before `offset_ms` (copy) or exactly there (transcode), and the output
    /// timeline at `timeline_ms`, so a player that survives the reconnect sees time
    /// go on. An offset past the item's end starts the next item.
    pub fn resume_from(mut self, at: Option<Position>) -> Task {
        self.resume = at;
        self.resume_offset_ms = at.map(|p| p.offset_ms).filter(|&ms| ms > 0);
        if let Some(p) = at {
            *self.status.position.lock().expect("position lock") = p;
        }
        self
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// Runs on a thread of its own from now on (see [`Ran::Migrate`]).
    pub fn dedicate(&mut self) {
        self.placement = Placement::Dedicated;
    }

    pub fn status(&self) -> &Arc<TaskStatus> {
        &self.status
    }

    pub async fn run(mut self) -> Ran {
        let end = match self.play_list().await {
            Err(Halt::Migrate) => return Ran::Migrate(Box::new(self)),
            Ok(end) => end,
            Err(_) => unreachable!("play_list ends every other halt"),
        };
        let position = self.status.position();
        Ran::Over(Outcome { end, position })
    }

    async fn play_list(&mut self) -> Result<End, Halt> {
        let mut plan = Plan::new(
            self.spec.sources.len(),
            self.spec.first_item,
            self.spec.loop_count,
            self.resume,
        );
        let mut out: Option<Output> = None;
        let mut last_error: Option<WorkerError> = None;
        let mut next = plan.next();
        let outcome = loop {
            let (item, pass) = match next {
                Next::Finished => break End::Finished,
                Next::Unplayable => {
                    break End::Failed(last_error.take().expect("a failed pass has an error"))
                }
                Next::Play { item, pass } => (item, pass),
            };
            if self.ended() {
                break End::Finished;
            }
            let spec = self.spec.sources[item].clone();
            self.sources
                .prefetch(&self.spec.sources[plan.following()].url);
            let played = match self.play_item(&mut out, item, pass, &spec).await {
                Ok(p) => p,
                Err(Halt::Stop) => break End::Stopped,
                Err(Halt::End) => break End::Finished,
                Err(Halt::Migrate) => return Err(Halt::Migrate),
                Err(Halt::Switch) => {
                    self.take_update(&mut plan, "now");
                    next = plan.next();
                    continue;
                }
                Err(Halt::Fail(e)) => {
                    if matches!(e, WorkerError::AllDestinationsFailed { .. }) {
                        break End::Failed(e);
                    }
                    tracing::warn!(task.id = %self.spec.id, item, error = %e, "item failed; going on with the next");
                    // Media errors name their item; a source's errors name only its URL
                    // (one download may serve several items), so the event adds the item.
                    let error = match &e {
                        WorkerError::Media { .. } => e.to_string(),
                        other => format!("item {item}: {other}"),
                    };
                    let _ = self.events.send(Event::ItemFailed {
                        item,
                        loop_index: pass,
                        source: redact::source(&spec.url),
                        error,
                        error_kind: e.fault().as_str(),
                    });
                    last_error = Some(e);
                    Played::Failed
                }
            };
            // An update that waited for the current item to end (waitCrtUrlFinish 1).
            next = if self.take_update(&mut plan, "after the current item") {
                plan.next()
            } else {
                plan.done(played)
            };
        };
        if let Some(mut o) = out {
            if let End::Finished = outcome {
                // Encoders hold a few frames; send them before closing.
                let _ = self.flush_encoder(&mut o).await;
            }
            o.close(matches!(outcome, End::Finished)).await;
        }
        Ok(outcome)
    }

    /// Puts a waiting playlist in place (it plays from its first item); false if none waits.
    fn take_update(&mut self, plan: &mut Plan, when: &str) -> bool {
        let Some(list) = self.update.take() else {
            return false;
        };
        tracing::info!(task.id = %self.spec.id, items = list.len(), "playlist replaced {when}");
        self.spec.sources = list;
        plan.replace(self.spec.sources.len());
        true
    }

    /// Whether `end_ms` has passed.
    fn ended(&self) -> bool {
        self.end_at.is_some_and(|e| Instant::now() >= e)
    }

    /// Handles waiting control messages, and `end_ms`, without waiting.
    fn control_pending(&mut self) -> Result<(), Halt> {
        loop {
            match self.control.try_recv() {
                Ok(c) => self.obey(c)?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(Halt::Stop),
            }
        }
        if self.ended() {
            return Err(Halt::End);
        }
        Ok(())
    }

    /// Applies one control message; an `Err` ends the current item.
    fn obey(&mut self, c: Control) -> Result<(), Halt> {
        match c {
            Control::Stop => Err(Halt::Stop),
            Control::StopForwards(urls) => {
                for url in &urls {
                    let mut found = false;
                    for (i, f) in self.spec.forwards.iter().enumerate() {
                        if &f.url == url {
                            self.stop_requested[i] = true;
                            found = true;
                        }
                    }
                    if !found {
                        tracing::warn!(task.id = %self.spec.id, destination = %redact::destination(url), "asked to stop a destination this task does not have");
                    }
                }
                if self.stop_requested.iter().all(|s| *s) {
                    tracing::info!(task.id = %self.spec.id, "every destination stopped: stopping the task");
                    return Err(Halt::Stop);
                }
                Ok(())
            }
            Control::Update {
                sources,
                wait_current,
            } => {
                if sources.is_empty() {
                    tracing::warn!(task.id = %self.spec.id, "ignoring an update with an empty playlist");
                    return Ok(());
                }
                self.update = Some(sources);
                if wait_current {
                    Ok(())
                } else {
                    Err(Halt::Switch)
                }
            }
        }
    }
}
