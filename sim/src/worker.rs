//! One simulated worker: the real worker's protocol (docs/design/fleet.md,
//! "Lease protocol") without media.
//!
//! Like `vodfleet-worker` it has its own AMQP connection (real workers have one
//! each, so the broker sees as many connections, channels and consumers as
//! the fleet it stands for), with an AMQP heartbeat of a quarter of the lease;
//! its own exclusive control queue declared with
//! [`Bus::declare_control_queue`]; and it takes work orders from
//! `vodfleet.work` with the worker's slot rule (worker/src/fleet/link.rs):
//! prefetch 1, the consumer cancelled *before* the ack of the order that takes
//! the last free slot, created again when a slot frees up, starts paced at
//! `VODFLEET_WORKER_START_RATE`. Its heartbeat lists every task it holds, every
//! interval and at once when the task set changes (worker/src/fleet/beat.rs).
//! Its fences are the worker's own [`Leases`], fed the same calls.
//!
//! What it does not do: reconnect (a lost link is counted and ends that
//! worker), measure its load, play media. Positions advance with the wall
//! clock, every destination reports `live`.

use crate::lease::Leases;
use crate::pace::Pace;
use crate::stats::{Stats, LATE_BEAT, SLOW_ACK};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vodfleet_bus::lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
};
use vodfleet_bus::lapin::types::FieldTable;
use vodfleet_bus::lapin::Channel;
use vodfleet_bus::{Bus, BusError};
use vodfleet_proto::fleet::{
    DestinationState, TaskBeat, ToWorker, WorkOrder, WorkerMessage, EVENTS_QUEUE, WORK_QUEUE,
};
use vodfleet_proto::{Position, TaskSpec};

/// The worker's fence margin (worker/src/config.rs `FENCE_MARGIN`).
pub const FENCE_MARGIN: Duration = Duration::from_millis(500);

/// How one simulated worker behaves (the real worker's settings of the same names).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `VODFLEET_AMQP_URL`.
    pub amqp_url: String,
    /// `VODFLEET_WORKER_SLOTS`: tasks held at most.
    pub slots: usize,
    /// `VODFLEET_HEARTBEAT_MS`.
    pub heartbeat: Duration,
    /// `VODFLEET_LEASE_TTL_MS`.
    pub lease_ttl: Duration,
    /// `VODFLEET_WORKER_START_RATE`: starts a second at most (bursts of as many).
    pub start_rate: u32,
}

/// Why a simulated worker's link ended.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The bus crate's error (connect, declare, publish).
    #[error(transparent)]
    Bus(#[from] BusError),
    /// lapin's own.
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] vodfleet_bus::lapin::Error),
    /// A consumer or the connection ended.
    #[error("the {0} ended")]
    Closed(&'static str),
}

/// A task the worker holds.
struct Held {
    epoch: u64,
    taken: Instant,
    resume: Position,
    spec: TaskSpec,
    callback_url: Option<String>,
}

impl Held {
    /// Where the simulated stream is: its resume point plus the time held.
    fn position(&self) -> Position {
        let ms = self.taken.elapsed().as_millis() as u64;
        Position {
            offset_ms: self.resume.offset_ms + ms,
            timeline_ms: self.resume.timeline_ms + ms,
            ..self.resume
        }
    }
}

/// One simulated worker.
pub struct SimWorker {
    id: String,
    cfg: Settings,
    stats: Arc<Stats>,
    leases: Mutex<Leases>,
    tasks: Mutex<HashMap<String, Held>>,
    /// Heartbeat seq → when it was sent (the last few, for latencies).
    sent: Mutex<HashMap<u64, Instant>>,
    /// When the worker's own heartbeats were last late or lost.
    last_miss: Mutex<Option<Instant>>,
    became_full: std::sync::atomic::AtomicBool,
    /// A slot freed up.
    changed: Notify,
    /// The task set changed: heartbeat at once.
    beat_now: Notify,
    /// Take no more orders, release everything.
    pub draining: CancellationToken,
}

/// Unix milliseconds now.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl SimWorker {
    /// A worker named `id` (its routing key and control queue name).
    pub fn new(id: String, cfg: Settings, stats: Arc<Stats>) -> Arc<SimWorker> {
        let leases = Leases::new(cfg.lease_ttl, FENCE_MARGIN, cfg.heartbeat);
        Arc::new(SimWorker {
            id,
            cfg,
            stats,
            leases: Mutex::new(leases),
            tasks: Mutex::new(HashMap::new()),
            sent: Mutex::new(HashMap::new()),
            last_miss: Mutex::new(None),
            became_full: false.into(),
            changed: Notify::new(),
            beat_now: Notify::new(),
            draining: CancellationToken::new(),
        })
    }

    fn leases(&self) -> MutexGuard<'_, Leases> {
        self.leases.lock().expect("lease lock")
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<String, Held>> {
        self.tasks.lock().expect("task lock")
    }

    fn free_slots(&self) -> usize {
        self.cfg.slots.saturating_sub(self.tasks().len())
    }

    /// Connects (like the worker: an AMQP heartbeat of a quarter of the lease).
    pub async fn connect(&self) -> Result<Arc<Bus>, SimError> {
        let beat = (self.cfg.lease_ttl.as_secs() / 4).clamp(1, 15) as u16;
        let url = vodfleet_bus::with_heartbeat(&self.cfg.amqp_url, beat);
        let name = format!("vodfleet-sim {}", self.id);
        Ok(Arc::new(Bus::connect(&url, &name).await?))
    }

    /// Runs the worker on `bus` until it is drained (`Ok`) or its link breaks.
    /// Draining releases every held task (`Released`, confirmed).
    pub async fn run(self: Arc<Self>, bus: Arc<Bus>) -> Result<(), SimError> {
        let queue = bus.declare_control_queue(&self.id).await?;
        let control_tag = format!("{}-control", self.id);
        let (control_ch, control) = bus.consume(&queue, &control_tag, 64).await?;
        let work_ch = bus.channel().await?;
        self.stats
            .connected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stop_beats = CancellationToken::new();
        let beats = tokio::spawn(self.clone().heartbeat(bus.clone(), stop_beats.clone()));
        let watch = async {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                if !bus.is_connected() {
                    return Err::<(), SimError>(SimError::Closed("connection"));
                }
            }
        };
        let fences = async {
            // Every 100 ms, like the worker's fence watch.
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                self.fence();
            }
        };
        let r = tokio::select! {
            r = self.controls(&bus, control) => r,
            r = self.intake(&work_ch) => r,
            r = watch => r,
            _ = fences => Ok(()),
        };
        let r = match r {
            Ok(()) => {
                self.drain(&bus).await;
                Ok(())
            }
            Err(e) => Err(e),
        };
        stop_beats.cancel();
        let _ = beats.await;
        let bye = Duration::from_secs(1);
        let cancel = control_ch.basic_cancel(&control_tag, BasicCancelOptions::default());
        let _ = tokio::time::timeout(bye, cancel).await;
        for ch in [&work_ch, &control_ch] {
            let _ = tokio::time::timeout(bye, ch.close(200, "bye")).await;
        }
        bus.shutdown(Duration::from_secs(2)).await;
        r
    }

    /// Heartbeats every interval, and at once when the task set changes.
    async fn heartbeat(self: Arc<Self>, bus: Arc<Bus>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        let mut last: Option<Instant> = None;
        loop {
            let early = tokio::select! {
                _ = tick.tick() => false,
                _ = self.beat_now.notified() => true,
                _ = stop.cancelled() => return,
            };
            // As the worker does: at most one early beat per quarter interval.
            if let Some(at) = last
                .map(|t| t + self.cfg.heartbeat / 4)
                .filter(|at| early && *at > Instant::now())
            {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = stop.cancelled() => return,
                }
            }
            seq += 1;
            let now = Instant::now();
            if last.is_some_and(|l| now - l > self.cfg.heartbeat + LATE_BEAT) {
                Stats::inc(&self.stats.beats_late);
                *self.last_miss.lock().expect("lock") = Some(now);
            }
            last = Some(now);
            let (beat, lines) = self.beat(seq);
            self.leases().beat_sent(seq, now);
            {
                let mut sent = self.sent.lock().expect("lock");
                sent.insert(seq, now);
                sent.retain(|s, _| *s + 64 > seq);
            }
            let published = tokio::time::timeout(
                self.cfg.heartbeat,
                bus.publish_json("", EVENTS_QUEUE, &beat),
            )
            .await;
            if let Ok(Ok(())) = published {
                self.stats.confirm(now.elapsed());
                Stats::inc(&self.stats.beats);
                self.stats
                    .beat_tasks
                    .fetch_add(lines, std::sync::atomic::Ordering::Relaxed);
            } else {
                tracing::warn!(worker = %self.id, seq, "heartbeat not confirmed in time");
                Stats::inc(&self.stats.beats_failed);
                *self.last_miss.lock().expect("lock") = Some(Instant::now());
            }
        }
    }

    fn beat(&self, seq: u64) -> (WorkerMessage, u64) {
        let tasks = self.tasks();
        let mut beats: Vec<TaskBeat> = tasks
            .iter()
            .map(|(id, h)| TaskBeat {
                task_id: id.clone(),
                epoch: h.epoch,
                position: h.position(),
                destinations: vec![DestinationState::Live; h.spec.forwards.len()],
            })
            .collect();
        beats.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        let lines = beats.len() as u64;
        let msg = WorkerMessage::Heartbeat {
            worker_id: self.id.clone(),
            seq,
            sent_ms: unix_ms(),
            free_slots: self.cfg.slots.saturating_sub(tasks.len()) as u32,
            tasks: beats,
        };
        (msg, lines)
    }

    /// Stops (forgets) every task whose fence passed, and tells whose fault it was.
    fn fence(&self) {
        let now = Instant::now();
        let expired = self.leases().expired(now);
        if expired.is_empty() {
            return;
        }
        // On time for the whole lease: no heartbeat late or lost within one TTL.
        let on_time = self
            .last_miss
            .lock()
            .expect("lock")
            .is_none_or(|m| now - m > self.cfg.lease_ttl);
        let mut tasks = self.tasks();
        for (task, epoch) in expired {
            if tasks.get(&task).is_some_and(|h| h.epoch == epoch) {
                tasks.remove(&task);
                self.stats
                    .held
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            if on_time {
                tracing::warn!(worker = %self.id, task.id = %task, epoch, "lease fenced although every heartbeat left on time");
                Stats::inc(&self.stats.false_expiries);
            } else {
                Stats::inc(&self.stats.sim_expiries);
            }
        }
        drop(tasks);
        self.changed.notify_waiters();
        self.beat_now.notify_one();
    }

    /// Control messages, applied like the worker's `on_control`.
    async fn controls(
        &self,
        bus: &Arc<Bus>,
        mut control: vodfleet_bus::lapin::Consumer,
    ) -> Result<(), SimError> {
        loop {
            let delivery = tokio::select! {
                d = control.next() => d,
                _ = self.draining.cancelled() => return Ok(()),
            };
            let delivery = delivery.ok_or(SimError::Closed("control consumer"))??;
            let now = Instant::now();
            match serde_json::from_slice::<ToWorker>(&delivery.data) {
                Ok(msg) => self.on_control(bus, msg, now),
                Err(e) => tracing::warn!(error = %e, "dropping a malformed control message"),
            }
            delivery.acker.ack(BasicAckOptions::default()).await?;
        }
    }

    fn on_control(&self, bus: &Arc<Bus>, msg: ToWorker, now: Instant) {
        let s = &self.stats;
        match msg {
            ToWorker::LeaseAck {
                seq,
                renewed,
                revoked,
                unknown,
            } => {
                Stats::inc(&s.acks);
                let sent = self.sent.lock().expect("lock").get(&seq).copied();
                match sent {
                    Some(at) => {
                        let latency = now - at;
                        s.latency(latency);
                        if latency > SLOW_ACK {
                            Stats::inc(&s.acks_slow);
                            tracing::warn!(worker = %self.id, seq, ms = latency.as_millis() as u64, tasks = renewed.len(), "slow LeaseAck");
                        }
                    }
                    None => Stats::inc(&s.acks_unmatched),
                }
                let relaxed = std::sync::atomic::Ordering::Relaxed;
                s.renewed.fetch_add(renewed.len() as u64, relaxed);
                s.unknown.fetch_add(unknown.len() as u64, relaxed);
                let verdict = self.leases().ack(seq, &renewed, &revoked, &unknown);
                let mut tasks = self.tasks();
                for (task, epoch) in &verdict.revoked {
                    if tasks.get(task).is_some_and(|h| h.epoch == *epoch) {
                        tasks.remove(task);
                        s.held.fetch_sub(1, relaxed);
                    }
                    Stats::inc(&s.revoked);
                }
                for (task, epoch) in verdict.reclaim {
                    let Some(h) = tasks.get(&task) else { continue };
                    Stats::inc(&s.reclaims);
                    let msg = WorkerMessage::Reclaim {
                        worker_id: self.id.clone(),
                        task_id: task,
                        epoch,
                        spec: h.spec.clone(),
                        position: h.position(),
                        callback_url: h.callback_url.clone(),
                    };
                    self.send(bus, msg);
                }
                if !verdict.revoked.is_empty() {
                    drop(tasks);
                    self.changed.notify_waiters();
                    self.beat_now.notify_one();
                }
            }
            ToWorker::Stop {
                task_id,
                epoch,
                forwards,
            } => {
                let mut tasks = self.tasks();
                if tasks.get(&task_id).is_none_or(|h| h.epoch != epoch) {
                    return;
                }
                Stats::inc(&s.stops);
                if forwards.is_some_and(|f| {
                    let h = tasks.get_mut(&task_id).expect("held");
                    h.spec.forwards.retain(|d| !f.contains(&d.url));
                    !h.spec.forwards.is_empty()
                }) {
                    return;
                }
                let h = tasks.remove(&task_id).expect("held");
                s.held.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                self.leases().release(&task_id, epoch);
                // The worker answers a stop with its exact position.
                let msg = WorkerMessage::Released {
                    worker_id: self.id.clone(),
                    task_id,
                    epoch,
                    position: h.position(),
                };
                self.send(bus, msg);
                drop(tasks);
                self.changed.notify_waiters();
                self.beat_now.notify_one();
            }
            ToWorker::Update { .. } => Stats::inc(&s.updates),
        }
    }

    /// Publishes a message that must arrive (confirmed, retried a few times).
    fn send(&self, bus: &Arc<Bus>, msg: WorkerMessage) {
        let bus = bus.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            if publish_confirmed(&bus, &msg).await {
                Stats::inc(&stats.released);
            } else {
                Stats::inc(&stats.release_failed);
            }
        });
    }

    /// Takes work orders while there are free slots (worker/src/fleet/link.rs).
    async fn intake(&self, ch: &Channel) -> Result<(), SimError> {
        ch.basic_qos(1, BasicQosOptions::default()).await?;
        let tag = format!("{}-work", self.id);
        let mut pace = Pace::new(self.cfg.start_rate);
        loop {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if self.draining.is_cancelled() {
                    return Ok(());
                }
                if self.free_slots() > 0 {
                    break;
                }
                tokio::select! {
                    _ = changed => {}
                    _ = self.draining.cancelled() => {}
                }
            }
            let opts = BasicConsumeOptions::default();
            let mut orders = ch
                .basic_consume(WORK_QUEUE, &tag, opts, FieldTable::default())
                .await?;
            loop {
                let delivery = tokio::select! {
                    d = orders.next() => d,
                    _ = self.draining.cancelled() => {
                        ch.basic_cancel(&tag, BasicCancelOptions::default()).await?;
                        return Ok(());
                    }
                };
                let delivery = delivery.ok_or(SimError::Closed("work consumer"))??;
                if self.draining.is_cancelled() {
                    ch.basic_cancel(&tag, BasicCancelOptions::default()).await?;
                    let requeue = BasicRejectOptions { requeue: true };
                    delivery.acker.reject(requeue).await?;
                    return Ok(());
                }
                let order = serde_json::from_slice::<WorkOrder>(&delivery.data);
                if let Ok(o) = &order {
                    if self.leases().startable(age(o)) {
                        pace.take().await;
                    }
                }
                let full = order.is_ok() && self.free_slots() <= 1;
                if full {
                    // Cancel before the ack: nothing more can be pushed to us meanwhile.
                    ch.basic_cancel(&tag, BasicCancelOptions::default()).await?;
                }
                delivery.acker.ack(BasicAckOptions::default()).await?;
                match order {
                    Ok(o) => self.take(o),
                    Err(_) => Stats::inc(&self.stats.orders_malformed),
                }
                if full {
                    break;
                }
            }
        }
    }

    /// Takes an order's lease, as the worker's `take` does (no engine).
    fn take(&self, o: WorkOrder) {
        let mut tasks = self.tasks();
        if tasks.get(&o.task_id).is_some_and(|h| h.epoch >= o.epoch) {
            Stats::inc(&self.stats.orders_old_epoch);
            return;
        }
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        if let Some(older) = tasks.remove(&o.task_id) {
            // Superseded by the newer epoch.
            self.leases().release(&o.task_id, older.epoch);
            self.stats.held.fetch_sub(1, relaxed);
        }
        let now = Instant::now();
        if !self.leases().take(&o.task_id, o.epoch, age(&o), now) {
            Stats::inc(&self.stats.orders_stale);
            return;
        }
        tasks.insert(
            o.task_id,
            Held {
                epoch: o.epoch,
                taken: now,
                resume: o.resume.unwrap_or_default(),
                spec: o.spec,
                callback_url: o.callback_url,
            },
        );
        self.stats.order_taken();
        if tasks.len() >= self.cfg.slots && !self.became_full.swap(true, relaxed) {
            self.stats.worker_full();
        }
        drop(tasks);
        self.beat_now.notify_one();
    }

    /// Like a SIGTERM'd worker: take nothing more, release every task with its
    /// position, and wait for each release to be confirmed.
    async fn drain(&self, bus: &Arc<Bus>) {
        let held: Vec<(String, Held)> = self.tasks().drain().collect();
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        for (task_id, h) in held {
            self.leases().release(&task_id, h.epoch);
            self.stats.held.fetch_sub(1, relaxed);
            let msg = WorkerMessage::Released {
                worker_id: self.id.clone(),
                task_id,
                epoch: h.epoch,
                position: h.position(),
            };
            if publish_confirmed(bus, &msg).await {
                Stats::inc(&self.stats.released);
            } else {
                Stats::inc(&self.stats.release_failed);
            }
        }
    }
}

/// How long ago `o` was issued (by the coordinator's clock, as far as ours can tell).
fn age(o: &WorkOrder) -> Duration {
    Duration::from_millis(unix_ms().saturating_sub(o.issued_ms))
}

/// Publishes with a confirm, three tries of 5 s at most.
async fn publish_confirmed(bus: &Bus, msg: &WorkerMessage) -> bool {
    for _ in 0..3 {
        let sent = bus.publish_json("", EVENTS_QUEUE, msg);
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(5), sent).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}
