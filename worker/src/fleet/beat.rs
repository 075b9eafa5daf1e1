//! The worker's own loops, on the control runtime: the heartbeat (one per
//! interval, or at once when the task set changes or the link comes back), the
//! fence watch (a task whose lease ran out is stopped before anyone else may
//! start it), and the load watch ([`capacity`](super::capacity)).

use super::capacity::{self, Capacity, CpuSampler, Limits, Load, Verdict};
use super::{link, Fleet, StopReason};
use crate::metrics;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use vodfleet_engine::event::unix_ms;
use vodfleet_proto::fleet::{DestinationState, TaskBeat, WorkerMessage};

impl Fleet {
    /// One heartbeat per interval (and one at once when the task set changes or
    /// the link comes back): over RabbitMQ, or over HTTP ([`lifeline`](super::lifeline)) while
    /// the link is down or its heartbeats go unanswered.
    pub(super) async fn heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The last HTTP outcome, so that a change is logged once, not every beat.
        let mut last_http: Option<&'static str> = None;
        let mut last_beat: Option<Instant> = None;
        loop {
            let early = tokio::select! {
                _ = tick.tick() => false,
                _ = self.beat_now.notified() => true,
                _ = self.shutdown.cancelled() => return,
            };
            // A burst of starts asks for a beat each: at most one early beat per
            // quarter interval, so 50 starts a second make a few heartbeats, not
            // 50 that each list every task (a fleet-wide ramp once made the
            // coordinators' renewals lag past the lease: docs/CAPACITY.md).
            if let Some(at) = last_beat
                .map(|t| t + self.cfg.heartbeat / 4)
                .filter(|at| early && *at > Instant::now())
            {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = self.shutdown.cancelled() => return,
                }
            }
            last_beat = Some(Instant::now());
            let bus = self.connected();
            if bus.is_none() && self.lifeline.is_none() {
                continue;
            }
            let seq = self.beat_seq.fetch_add(1, Ordering::Relaxed) + 1;
            let beat = self.beat(seq);
            let sent_at = Instant::now();
            self.leases().beat_sent(seq, sent_at);
            let mut published = false;
            if let Some(bus) = bus {
                let sent = tokio::time::timeout(
                    self.cfg.heartbeat,
                    bus.publish_json("", link::EVENTS, &beat),
                )
                .await;
                match sent {
                    Ok(Ok(())) => {
                        metrics::get().heartbeats.inc();
                        published = true;
                    }
                    Ok(Err(e)) => tracing::warn!(seq, error = %e, "heartbeat not published"),
                    Err(_) => tracing::warn!(seq, "heartbeat not confirmed in time"),
                }
            }
            // Published, but answers stopped coming for more than two beats:
            // the coordinators may have lost the broker while we still have it.
            let unanswered = self.leases().unanswered_for(sent_at) > self.cfg.heartbeat * 2;
            let Some(lifeline) = self.lifeline.as_ref().filter(|_| !published || unanswered) else {
                last_http = None;
                continue;
            };
            let outcome = match lifeline.beat(&beat).await {
                Ok(ack) => {
                    self.on_control(ack);
                    if last_http != Some("renewed") {
                        tracing::warn!(
                            seq,
                            "RabbitMQ unreachable: leases renewed over the coordinators' HTTP API"
                        );
                    }
                    "renewed"
                }
                Err(e) => {
                    if last_http != Some(e.outcome()) {
                        tracing::warn!(seq, error = %e, "heartbeat over HTTP renewed nothing: tasks stop at their fence unless RabbitMQ comes back");
                    }
                    e.outcome()
                }
            };
            metrics::get()
                .http_heartbeats
                .with_label_values(&[outcome])
                .inc();
            last_http = Some(outcome);
        }
    }

    fn beat(&self, seq: u64) -> WorkerMessage {
        let tasks = self.tasks();
        let mut beats: Vec<TaskBeat> = tasks
            .iter()
            .filter(|(_, r)| r.stopping.is_none())
            .map(|((task_id, epoch), r)| {
                let states = r.status.destinations.lock().expect("status lock");
                TaskBeat {
                    task_id: task_id.clone(),
                    epoch: *epoch,
                    position: r.status.position(),
                    destinations: r
                        .dests
                        .iter()
                        .map(|i| {
                            states
                                .get(*i)
                                .map_or(DestinationState::Connecting, |d| d.state())
                        })
                        .collect(),
                }
            })
            .collect();
        beats.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        WorkerMessage::Heartbeat {
            worker_id: self.cfg.worker_id.clone(),
            seq,
            sent_ms: unix_ms(),
            free_slots: if self.full.load(Ordering::Relaxed) {
                0
            } else {
                self.cfg.slots.saturating_sub(tasks.len()) as u32
            },
            tasks: beats,
        }
    }

    /// Stops every task whose lease ran out (checked every 100 ms: well inside the
    /// 500 ms margin the fence keeps before the coordinator's own expiry).
    pub(super) async fn fence_watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            let expired = self.leases().expired(Instant::now());
            for key in expired {
                self.stop(&key, StopReason::Fenced);
            }
        }
    }

    /// Samples the load once a second and acts on the verdict ([`capacity`]):
    /// stop or resume taking work, or release the newest task.
    pub(super) async fn watch_load(self: Arc<Self>) {
        let mut judge = Capacity::new(Limits::default());
        let mut cpu = CpuSampler::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            let (cpu_share, idle) = cpu.sample();
            let (tasks, max_lag_ms) = {
                let tasks = self.tasks();
                let live = tasks.values().filter(|r| r.stopping.is_none());
                let lag = live
                    .clone()
                    .map(|r| r.status.lag_ms.load(Ordering::Relaxed))
                    .max();
                (live.count(), lag.unwrap_or(0))
            };
            let load = Load {
                cpu: cpu_share,
                idle,
                loop_delay_ms: self.engine.take_loop_delay().as_millis() as u64,
                max_lag_ms,
                tasks,
            };
            let verdict = judge.judge(&load);
            self.ceiling
                .store(judge.ceiling().unwrap_or(usize::MAX), Ordering::Relaxed);
            let full = verdict != Verdict::Take;
            let m = metrics::get();
            m.accepting.set(i64::from(!full));
            m.loop_delay.set(load.loop_delay_ms as f64 / 1000.0);
            if self.full.swap(full, Ordering::Relaxed) != full {
                tracing::info!(
                    ?load,
                    ?verdict,
                    ceiling = ?judge.ceiling(),
                    "{}",
                    if full {
                        "at capacity: taking no more work"
                    } else {
                        "room again: taking work"
                    }
                );
                if !full {
                    self.changed.notify_waiters();
                }
            }
            if let Verdict::Shed(n) = verdict {
                let mut tasks = self.tasks();
                for _ in 0..n {
                    let newest = capacity::shed_choice(
                        tasks
                            .iter()
                            .filter(|(_, r)| r.stopping.is_none())
                            .map(|(k, r)| (k.clone(), k.1, r.started)),
                    );
                    let Some(key) = newest else { break };
                    tracing::warn!(task.id = %key.0, epoch = key.1, ?load, ceiling = ?judge.ceiling(), "overloaded: releasing the newest task moved the fewest times, with its position, for a worker with room");
                    m.shed.inc();
                    self.stop_locked(&mut tasks, &key, StopReason::Shed);
                }
            }
        }
    }
}
