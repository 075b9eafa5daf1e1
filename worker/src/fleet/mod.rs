//! Fleet mode: `vodfleet-worker run` takes work orders from RabbitMQ and streams
//! them under leases (docs/design/fleet.md).
//!
//! - `link`: the RabbitMQ side: (re)connection, the work consumer with its slot
//!   limit, the control queue, and the outbox of messages that must arrive.
//! - `lease`: which tasks this worker may publish, and until when (fencing).
//! - `lifeline`: heartbeats over the coordinators' HTTP API while RabbitMQ is away.
//! - `control`: what the coordinators ask of this worker (lease acks, stops, updates).
//! - here: the tasks themselves (started through the engine, as in `play`), the
//!   heartbeat, the fence watch, and the SIGTERM drain.
//!
//! Streams never depend on the broker: when RabbitMQ goes away they go on, the
//! link reconnects with backoff, and only the fence (no renewal for the lease
//! TTL) stops them.

mod beat;
mod capacity;
mod control;
mod lease;
mod lifeline;
mod link;
mod podcost;

use crate::config::{FleetConfig, FENCE_MARGIN};
use crate::metrics;
use lease::Leases;
use link::Outbox;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vodfleet_bus::Bus;
use vodfleet_engine::config::Config;
use vodfleet_engine::event::{unix_ms, Callbacks, Event, TaskStatus};
use vodfleet_engine::task::{Control, End, Outcome};
use vodfleet_engine::{Controller, Engine, Start};
use vodfleet_proto::fleet::{EventKind, WorkOrder, WorkerMessage};
use vodfleet_proto::{Position, TaskSpec};

/// Runs the worker until SIGTERM/SIGINT, then drains. Exit codes: 0 drained,
/// 1 the drain timed out, 2 bad configuration.
pub fn run() -> ExitCode {
    let (cfg, fleet_cfg) = match (Config::from_env(), FleetConfig::from_env()) {
        (Ok(c), Ok(f)) => (c, f),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    metrics::get();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let engine = match Engine::new(cfg, rt.handle().clone()) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(fleet_cfg.http_addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("VODFLEET_HTTP_ADDR {}: {e}", fleet_cfg.http_addr);
                return ExitCode::from(2);
            }
        };
        let fleet = Fleet::new(engine, fleet_cfg);
        tracing::info!(
            worker.id = %fleet.cfg.worker_id,
            slots = fleet.cfg.slots,
            http = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            "worker starting"
        );
        let link = tokio::spawn(link::run(fleet.clone()));
        fleet.start_loops(listener);
        crate::wait_for_signal().await;
        tracing::info!("draining: releasing every task; a second signal exits at once");
        tokio::spawn(async {
            crate::wait_for_signal().await;
            std::process::exit(130);
        });
        let drained = tokio::time::timeout(fleet.cfg.drain_timeout, fleet.drain())
            .await
            .is_ok();
        // The loops first, then the connection they publish on.
        fleet.shutdown.cancel();
        fleet.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), fleet.tracker.wait()).await;
        fleet.disconnect.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), link).await;
        if drained {
            tracing::info!("drained; bye");
            ExitCode::SUCCESS
        } else {
            tracing::error!(
                tasks = fleet.tasks().len(),
                unconfirmed = fleet.outbox.pending(),
                "drain timed out; exiting anyway"
            );
            ExitCode::from(1)
        }
    })
}

/// Why the worker stopped a task (decides what it reports afterwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// `ToWorker::Stop` (cmd 2, end time): release with the exact position.
    Control,
    /// SIGTERM: release with the position, so the coordinator re-issues at once.
    Drain,
    /// The coordinator revoked the lease: it is no longer ours to report on.
    Revoked,
    /// No renewal within the lease TTL: stopped before anyone else may start it.
    Fenced,
    /// A newer epoch of the same task came to this worker.
    Superseded,
    /// The worker is overloaded: released with its position, for a worker with room.
    Shed,
}

/// One task on this worker.
struct Running {
    spec: TaskSpec,
    callback_url: Option<String>,
    /// The engine's destination indexes still in the coordinator's spec (a
    /// partial stop removes some), in spec order.
    dests: Vec<usize>,
    control: Controller,
    status: Arc<TaskStatus>,
    /// Cancels the task's downloads.
    cancel: CancellationToken,
    stopping: Option<StopReason>,
    /// When it started here (an overloaded worker sheds its newest task first).
    started: Instant,
}

/// (task id, epoch)
type Key = (String, u64);

pub(crate) struct Fleet {
    cfg: FleetConfig,
    engine: Engine,
    tasks: Mutex<HashMap<Key, Running>>,
    leases: Mutex<Leases>,
    outbox: Outbox,
    /// Heartbeats over HTTP while the link is down (`VODFLEET_COORDINATOR_URL`).
    lifeline: Option<lifeline::Lifeline>,
    /// The current connection, while there is one.
    bus: watch::Sender<Option<Arc<Bus>>>,
    /// A task started or ended (the intake waits for a free slot on it).
    changed: Notify,
    /// Send a heartbeat now (a task started or ended, or the link came back).
    beat_now: Notify,
    beat_seq: AtomicU64,
    /// Whether the work consumer is active (for `/readyz`).
    consuming: AtomicBool,
    /// The load says: take no more work ([`capacity`]). The intake hands back
    /// the next order it receives and stops consuming.
    full: AtomicBool,
    /// The stream count the load judge has learnt this worker can carry
    /// (`usize::MAX` until it was first overloaded; [`capacity`]).
    ceiling: AtomicUsize,
    draining: CancellationToken,
    /// Ends the loops (heartbeat, fence, outbox, HTTP) and the tasks' downloads.
    shutdown: CancellationToken,
    /// Ends the RabbitMQ link, once nothing publishes any more.
    disconnect: CancellationToken,
    tracker: TaskTracker,
}

impl Fleet {
    fn new(engine: Engine, cfg: FleetConfig) -> Arc<Fleet> {
        let (outbox, outbox_rx) = Outbox::new();
        let lifeline = cfg.api_key.clone().and_then(|key| {
            lifeline::Lifeline::new(cfg.coordinator_urls.clone(), key, cfg.heartbeat)
        });
        let fleet = Arc::new(Fleet {
            leases: Mutex::new(Leases::new(cfg.lease_ttl, FENCE_MARGIN, cfg.heartbeat)),
            lifeline,
            cfg,
            engine,
            tasks: Mutex::new(HashMap::new()),
            outbox,
            bus: watch::channel(None).0,
            changed: Notify::new(),
            beat_now: Notify::new(),
            beat_seq: AtomicU64::new(0),
            consuming: AtomicBool::new(false),
            full: AtomicBool::new(false),
            ceiling: AtomicUsize::new(usize::MAX),
            draining: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            disconnect: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        fleet
            .tracker
            .spawn(link::publish_outbox(fleet.clone(), outbox_rx));
        fleet
    }

    fn start_loops(self: &Arc<Self>, listener: tokio::net::TcpListener) {
        self.tracker.spawn(self.clone().heartbeat());
        self.tracker.spawn(self.clone().fence_watch());
        self.tracker.spawn(self.clone().watch_load());
        self.tracker.spawn(podcost::run(self.clone()));
        let (ready, refresh) = (self.clone(), self.clone());
        let probes = crate::http::Probes {
            ready: Arc::new(move || ready.is_ready()),
            refresh: Arc::new(move || refresh.refresh_gauges()),
        };
        self.tracker
            .spawn(crate::http::serve(listener, probes, self.shutdown.clone()));
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<Key, Running>> {
        self.tasks.lock().expect("tasks lock")
    }

    fn leases(&self) -> MutexGuard<'_, Leases> {
        self.leases.lock().expect("leases lock")
    }

    /// Slots for new work: none while the load says the worker is full.
    fn free_slots(&self) -> usize {
        self.free_of(self.tasks().len())
    }

    /// Slots for new work with `running` tasks here: up to the slot count and
    /// the learnt ceiling, none while the load says the worker is full.
    fn free_of(&self, running: usize) -> usize {
        if self.full.load(Ordering::Relaxed) {
            return 0;
        }
        let limit = self.cfg.slots.min(self.ceiling.load(Ordering::Relaxed));
        limit.saturating_sub(running)
    }

    fn connected(&self) -> Option<Arc<Bus>> {
        self.bus.borrow().clone()
    }

    /// Ready: connected, and taking work unless every slot is busy (by design).
    fn is_ready(&self) -> bool {
        !self.draining.is_cancelled()
            && self.connected().is_some_and(|b| b.is_connected())
            && (self.consuming.load(Ordering::Relaxed) || self.free_slots() == 0)
    }

    fn refresh_gauges(&self) {
        let m = metrics::get();
        let tasks = self.tasks();
        vodfleet_engine::metrics::get()
            .streams_active
            .set(tasks.len() as i64);
        m.free_slots.set(self.free_of(tasks.len()) as i64);
        let lag = tasks
            .values()
            .map(|r| r.status.lag_ms.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        vodfleet_engine::metrics::get()
            .lag_seconds
            .set(lag as f64 / 1000.0);
    }

    /// Whether `order` is still young enough to start ([`Leases::startable`]).
    fn startable(&self, order: &WorkOrder) -> bool {
        let age = Duration::from_millis(unix_ms().saturating_sub(order.issued_ms));
        self.leases().startable(age)
    }

    /// Starts the task of a work order (its delivery is already acked).
    fn take(self: &Arc<Self>, order: WorkOrder) {
        let WorkOrder {
            task_id,
            epoch,
            spec,
            resume,
            resume_estimated,
            issued_ms,
            callback_url,
        } = order;
        let mut tasks = self.tasks();
        let older: Vec<Key> = tasks
            .keys()
            .filter(|(t, _)| *t == task_id)
            .cloned()
            .collect();
        if let Some(newest) = older.iter().map(|(_, e)| *e).max() {
            if newest >= epoch {
                tracing::info!(task.id = %task_id, epoch, running_epoch = newest, "ignoring a work order for an epoch this worker already had");
                return;
            }
        }
        for key in &older {
            self.stop_locked(&mut tasks, key, StopReason::Superseded);
        }
        let age = Duration::from_millis(unix_ms().saturating_sub(issued_ms));
        if !self.leases().take(&task_id, epoch, age, Instant::now()) {
            let age_ms = age.as_millis() as u64;
            if age >= self.cfg.lease_ttl {
                // Usual when every worker was full (the order waited in the queue;
                // the coordinator offers it again); with every order, a clock off.
                tracing::info!(task.id = %task_id, epoch, age_ms, "work order older than its lease (it waited in the queue, or this host's clock is off); not starting it, it is offered again");
            } else {
                tracing::info!(task.id = %task_id, epoch, age_ms, "work order too close to its lease's end; leaving it to be offered again");
            }
            return;
        }
        let cancel = self.shutdown.child_token();
        let handle = match self.engine.start(Start {
            spec: spec.clone(),
            resume,
            resume_estimated,
            cancel: cancel.clone(),
        }) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(task.id = %task_id, epoch, error = %e, "cannot start the task");
                self.leases().release(&task_id, epoch);
                let key = (task_id, epoch);
                // The producer hears of it as of any failure: a `failed` event
                // (its callback), then the result that ends the task.
                let failed = Callbacks::new().next(EventKind::Failed, None, e.to_string());
                self.outbox.send(self.event(&key, failed));
                self.outbox.send(self.finished(
                    &key,
                    resume.unwrap_or_default(),
                    Some(e.to_string()),
                ));
                return;
            }
        };
        let key: Key = (task_id.clone(), epoch);
        tracing::info!(task.id = %task_id, epoch, resume = ?resume, "task started");
        tasks.insert(
            key.clone(),
            Running {
                dests: (0..spec.forwards.len()).collect(),
                spec,
                callback_url,
                control: handle.control,
                status: handle.status,
                cancel,
                stopping: None,
                started: Instant::now(),
            },
        );
        drop(tasks);
        self.tracker
            .spawn(self.clone().supervise(key, handle.events, handle.done));
        self.changed.notify_waiters();
        self.beat_now.notify_one();
    }

    /// Stops a task (once; the first reason counts).
    fn stop_locked(&self, tasks: &mut HashMap<Key, Running>, key: &Key, reason: StopReason) {
        let Some(r) = tasks.get_mut(key) else { return };
        if r.stopping.is_some() {
            return;
        }
        r.stopping = Some(reason);
        r.cancel.cancel();
        r.control.send(Control::Stop);
        self.leases().release(&key.0, key.1);
        match reason {
            StopReason::Fenced => {
                metrics::get().fenced.with_label_values(&["expired"]).inc();
                tracing::warn!(task.id = %key.0, epoch = key.1, "lease not renewed in time: stopping the task (self-fence)");
            }
            StopReason::Revoked => {
                metrics::get().fenced.with_label_values(&["revoked"]).inc();
                tracing::warn!(task.id = %key.0, epoch = key.1, "lease revoked: stopping the task");
            }
            other => {
                tracing::info!(task.id = %key.0, epoch = key.1, reason = ?other, "stopping the task")
            }
        }
    }

    fn stop(&self, key: &Key, reason: StopReason) {
        let mut tasks = self.tasks();
        self.stop_locked(&mut tasks, key, reason);
    }

    /// Relays task events, then reports how the task ended.
    async fn supervise(
        self: Arc<Self>,
        key: Key,
        mut events: mpsc::UnboundedReceiver<Event>,
        done: oneshot::Receiver<Outcome>,
    ) {
        let (task_id, epoch) = key.clone();
        let mut callbacks = Callbacks::new();
        // Ends when the task and its destinations are gone.
        while let Some(e) = events.recv().await {
            tracing::info!(task.id = %task_id, epoch, event = %serde_json::to_string(&e).unwrap_or_default(), "task event");
            if let Some(mut te) = callbacks.translate(&e) {
                if te.kind == EventKind::ForwardFailed {
                    // Index into the coordinator's spec, which lost stopped destinations.
                    te.index = te.index.and_then(|i| {
                        self.tasks()
                            .get(&key)
                            .and_then(|r| r.dests.iter().position(|d| *d == i))
                    });
                }
                self.outbox.send(self.event(&key, te));
            }
        }
        let outcome = done.await.unwrap_or_else(|_| Outcome {
            end: End::Failed(vodfleet_engine::error::WorkerError::Unsupported {
                task: task_id.clone(),
                cause: "media pipeline vanished".into(),
            }),
            position: Default::default(),
        });
        let running = self.tasks().remove(&key);
        self.leases().release(&task_id, epoch);
        let reason = running.as_ref().and_then(|r| r.stopping);
        let position = outcome.position;
        tracing::info!(task.id = %task_id, epoch, end = ?outcome.end, reason = ?reason, ?position, "task ended");
        let mut report = |kind: EventKind, message: String, result: WorkerMessage| {
            let e = callbacks.next(kind, None, message);
            self.outbox.send(self.event(&key, e));
            self.outbox.send(result);
        };
        match (reason, outcome.end) {
            // The lease is someone else's now: nothing to report.
            (Some(StopReason::Revoked | StopReason::Fenced | StopReason::Superseded), _) => {}
            (_, End::Finished) => report(
                EventKind::Finished,
                "finished".into(),
                self.finished(&key, position, None),
            ),
            (_, End::Failed(err)) => report(
                EventKind::Failed,
                err.to_string(),
                self.finished(&key, position, Some(err.to_string())),
            ),
            // Stopped by the coordinator (cmd 2, end time, a restart) or by a drain:
            // the release carries the exact position. The `stopped` callback is the
            // coordinator's, which knows why it stopped the task; a drain has none.
            (_, End::Stopped) => self.outbox.send(self.released(&key, position)),
        }
        self.changed.notify_waiters();
        self.beat_now.notify_one();
    }

    fn released(&self, (task_id, epoch): &Key, position: Position) -> WorkerMessage {
        WorkerMessage::Released {
            worker_id: self.cfg.worker_id.clone(),
            task_id: task_id.clone(),
            epoch: *epoch,
            position,
        }
    }

    fn finished(
        &self,
        (task_id, epoch): &Key,
        position: Position,
        error: Option<String>,
    ) -> WorkerMessage {
        WorkerMessage::Finished {
            worker_id: self.cfg.worker_id.clone(),
            task_id: task_id.clone(),
            epoch: *epoch,
            position,
            error,
        }
    }

    fn event(&self, key: &Key, event: vodfleet_proto::fleet::TaskEvent) -> WorkerMessage {
        WorkerMessage::Event {
            worker_id: self.cfg.worker_id.clone(),
            task_id: key.0.clone(),
            epoch: key.1,
            event,
        }
    }

    /// SIGTERM: take no more work, stop every task and wait until each release
    /// is confirmed by RabbitMQ.
    async fn drain(&self) {
        self.draining.cancel();
        {
            let mut tasks = self.tasks();
            let keys: Vec<Key> = tasks.keys().cloned().collect();
            for key in keys {
                self.stop_locked(&mut tasks, &key, StopReason::Drain);
            }
        }
        loop {
            let changed = self.changed.notified();
            if self.tasks().is_empty() {
                break;
            }
            changed.await;
        }
        self.outbox.flushed().await;
    }
}
