//! What the coordinators ask of this worker: lease acks (renew, revoke,
//! reclaim), stops of a task or of some destinations, and source updates
//! (docs/design/fleet.md). They come over the control queue or, for lease
//! acks while RabbitMQ is away, as the answer to a heartbeat over HTTP.

use super::{Fleet, Key, Running, StopReason};
use std::collections::HashMap;
use vodfleet_engine::task::Control;
use vodfleet_proto::fleet::{ToWorker, WorkerMessage};

impl Fleet {
    /// One message from the control queue.
    pub(super) fn on_control(&self, msg: ToWorker) {
        match msg {
            ToWorker::LeaseAck {
                seq,
                renewed,
                revoked,
                unknown,
            } => {
                let verdict = self.leases().ack(seq, &renewed, &revoked, &unknown);
                let mut tasks = self.tasks();
                for key in &verdict.revoked {
                    self.stop_locked(&mut tasks, key, StopReason::Revoked);
                }
                for key in verdict.reclaim {
                    let Some(r) = tasks.get(&key) else { continue };
                    tracing::warn!(task.id = %key.0, epoch = key.1, "the coordinator does not know this task: reclaiming it");
                    self.outbox.send(WorkerMessage::Reclaim {
                        worker_id: self.cfg.worker_id.clone(),
                        task_id: key.0,
                        epoch: key.1,
                        spec: r.spec.clone(),
                        position: r.status.position(),
                        callback_url: r.callback_url.clone(),
                    });
                }
            }
            ToWorker::Stop {
                task_id,
                epoch,
                forwards: None,
            } => self.with_live(&task_id, epoch, "stop", |tasks, key| {
                self.stop_locked(tasks, &key, StopReason::Control)
            }),
            ToWorker::Stop {
                task_id,
                epoch,
                forwards: Some(urls),
            } => self.with_live(&task_id, epoch, "stop", |tasks, key| {
                let r = tasks.get_mut(&key).expect("live key");
                // The coordinator's spec loses these destinations: so do our reports.
                (r.dests, r.spec.forwards) = r
                    .dests
                    .iter()
                    .copied()
                    .zip(r.spec.forwards.drain(..))
                    .filter(|(_, f)| !urls.contains(&f.url))
                    .unzip();
                r.control.send(Control::StopForwards(urls));
                if r.spec.forwards.is_empty() {
                    // The task stops itself once it has closed them all.
                    r.stopping = Some(StopReason::Control);
                    self.leases().release(&key.0, key.1);
                }
            }),
            ToWorker::Update {
                task_id,
                epoch,
                sources,
                wait_current,
            } => self.with_live(&task_id, epoch, "update", |tasks, key| {
                let r = tasks.get_mut(&key).expect("live key");
                r.spec.sources = sources.clone();
                r.control.send(Control::Update {
                    sources,
                    wait_current,
                });
            }),
        }
    }

    /// Applies `f` to the live run of `task_id` that a control message for `epoch` concerns.
    fn with_live(
        &self,
        task_id: &str,
        epoch: u64,
        what: &str,
        f: impl FnOnce(&mut HashMap<Key, Running>, Key),
    ) {
        let mut tasks = self.tasks();
        match self.live_key(&tasks, task_id, epoch) {
            Some(key) => f(&mut tasks, key),
            None => {
                tracing::info!(task.id = %task_id, epoch, "{what} for a task this worker does not run")
            }
        }
    }

    /// The live (not stopping) run of `task_id` whose epoch is at most `epoch`:
    /// a control message for a newer epoch still concerns the run it supersedes.
    fn live_key(&self, tasks: &HashMap<Key, Running>, task_id: &str, epoch: u64) -> Option<Key> {
        tasks
            .iter()
            .filter(|((t, e), r)| t == task_id && *e <= epoch && r.stopping.is_none())
            .map(|(k, _)| k.clone())
            .max_by_key(|(_, e)| *e)
    }
}
