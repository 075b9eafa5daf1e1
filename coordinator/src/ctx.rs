//! What every part of the coordinator shares.

use crate::callback::Callbacks;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::RwLock;
use vodfleet_bus::{Bus, BusError};
use vodfleet_proto::fleet::{ToWorker, WorkOrder, CONTROL_EXCHANGE, WORK_QUEUE};

/// The current RabbitMQ connection, replaced by the supervisor after a reconnect,
/// and when it came up.
#[derive(Default)]
pub struct BusSlot(RwLock<Option<(Arc<Bus>, Instant)>>);

impl BusSlot {
    pub async fn get(&self) -> Option<Arc<Bus>> {
        self.0.read().await.as_ref().map(|(b, _)| b.clone())
    }
    pub async fn set(&self, bus: Option<Arc<Bus>>) {
        *self.0.write().await = bus.map(|b| (b, Instant::now()));
    }
    /// How long the current connection has been up; `None` while there is none.
    pub async fn up_for(&self) -> Option<Duration> {
        self.0
            .read()
            .await
            .as_ref()
            .filter(|(b, _)| b.is_connected())
            .map(|(_, since)| since.elapsed())
    }
    /// Takes the connection out (at shutdown, to close it and join its I/O thread).
    pub async fn take(&self) -> Option<Arc<Bus>> {
        self.0.write().await.take().map(|(b, _)| b)
    }
}

pub struct Ctx {
    pub cfg: Config,
    pub store: Store,
    pub bus: BusSlot,
    pub metrics: Arc<Metrics>,
    pub callbacks: Callbacks,
    /// Work orders whose publish failed, by task id, offered again as soon as
    /// RabbitMQ is back ([`Ctx::reoffer_unsent`]) rather than a lease later.
    pub unsent: Mutex<HashMap<String, WorkOrder>>,
    /// When this coordinator last handled a heartbeat that came over RabbitMQ
    /// (Unix ms, 0: never): whether the broker carries heartbeats at all.
    pub amqp_beat_ms: std::sync::atomic::AtomicU64,
    /// Renewals this replica has in flight to Redis, over every heartbeat
    /// being handled ([`crate::lease::RENEWALS_IN_FLIGHT`] permits): what a
    /// burst of heartbeats holds in memory stays the same at 1,000 or 20,000
    /// tasks (docs/CAPACITY.md).
    pub renewals: tokio::sync::Semaphore,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Ctx {
    pub fn ttl_ms(&self) -> u64 {
        self.cfg.lease_ttl.as_millis() as u64
    }

    /// Whether a worker's heartbeat over HTTP must be refused: RabbitMQ
    /// works for this coordinator (connected for more than a lease, and other
    /// heartbeats arrive through it), so the worker alone is cut off and must
    /// let its tasks go (docs/design/fleet.md, "Broker outage").
    pub async fn broker_carries_heartbeats(&self) -> bool {
        let connected = self.bus.up_for().await;
        let last = self.amqp_beat_ms.load(std::sync::atomic::Ordering::Relaxed);
        carries_heartbeats(
            connected,
            last,
            now_ms(),
            self.cfg.lease_ttl,
            self.cfg.heartbeat,
        )
    }

    async fn bus(&self) -> Result<Arc<Bus>, BusError> {
        self.bus.get().await.ok_or(BusError::Cancelled)
    }

    /// Publishes a work order. If this fails the order is remembered and offered
    /// again when RabbitMQ is back; failing that (this replica dies) the lease
    /// expires and any replica issues it again.
    pub async fn publish_order(&self, order: &WorkOrder) {
        // An order not taken within the lease TTL is stale (the lease was issued again
        // meanwhile): RabbitMQ drops it, so no worker can start an outdated epoch.
        let props = vodfleet_bus::json_props().with_expiration(self.ttl_ms().to_string().into());
        let body = serde_json::to_vec(order).expect("work orders serialise");
        let r = match self.bus().await {
            Ok(b) => b.publish("", WORK_QUEUE, &body, props).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => {
                tracing::info!(task.id = %order.task_id, epoch = order.epoch, resume = order.resume.is_some(), "work order published")
            }
            Err(e) => {
                self.metrics.dependency_error(crate::metrics::RABBITMQ);
                self.unsent_orders()
                    .insert(order.task_id.clone(), order.clone());
                tracing::warn!(task.id = %order.task_id, epoch = order.epoch, error = %e, "work order not published; offered again when RabbitMQ is back")
            }
        }
    }

    fn unsent_orders(&self) -> std::sync::MutexGuard<'_, HashMap<String, WorkOrder>> {
        self.unsent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offers again, with a fresh lease, every order whose publish failed while
    /// no worker has taken its epoch since (docs/design/fleet.md, "Broker outage").
    pub async fn reoffer_unsent(&self) -> Result<usize, StoreError> {
        let orders: Vec<WorkOrder> = self.unsent_orders().drain().map(|(_, o)| o).collect();
        let mut sent = 0;
        for (n, order) in orders.iter().enumerate() {
            let now = now_ms();
            let ttl = self.ttl_ms();
            match self
                .store
                .reoffer(&order.task_id, order.epoch, now, ttl)
                .await
            {
                Ok(Some(i)) => {
                    sent += 1;
                    self.metrics.orders_reoffered.inc();
                    // Where it resumes stays as first ordered; the spec is the current one.
                    self.publish_order(&WorkOrder {
                        spec: i.spec,
                        callback_url: i.callback,
                        issued_ms: now,
                        ..order.clone()
                    })
                    .await;
                }
                Ok(None) => {} // taken meanwhile, or the task moved on
                Err(e) => {
                    // Keep the rest for the next reconnect (or the lease's expiry).
                    let mut unsent = self.unsent_orders();
                    for o in &orders[n..] {
                        // A newer order failed meanwhile: it wins.
                        unsent.entry(o.task_id.clone()).or_insert_with(|| o.clone());
                    }
                    return Err(e);
                }
            }
        }
        Ok(sent)
    }

    /// Sends a control message to one worker (best effort: fencing covers a lost one).
    pub async fn tell(&self, worker: &str, msg: &ToWorker) {
        let r = match self.bus().await {
            Ok(b) => b.publish_json(CONTROL_EXCHANGE, worker, msg).await,
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            self.metrics.dependency_error(crate::metrics::RABBITMQ);
            tracing::warn!(worker.id = worker, error = %e, "control message not delivered");
        }
    }
}

/// [`Ctx::broker_carries_heartbeats`] on plain values: connected for longer
/// than `ttl`, and a heartbeat came over RabbitMQ within three intervals. A
/// broker that is up but takes no heartbeats (a quorum queue left without a
/// leader) does not count: workers then keep their leases over HTTP.
pub fn carries_heartbeats(
    connected_for: Option<Duration>,
    last_amqp_beat_ms: u64,
    now_ms: u64,
    ttl: Duration,
    heartbeat: Duration,
) -> bool {
    let fresh = last_amqp_beat_ms > 0
        && now_ms.saturating_sub(last_amqp_beat_ms) <= 3 * heartbeat.as_millis() as u64;
    connected_for.is_some_and(|up| up > ttl) && fresh
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_heartbeats_are_refused_only_while_the_broker_carries_others() {
        let (ttl, beat) = (Duration::from_secs(10), Duration::from_secs(2));
        let up = |s| Some(Duration::from_secs(s));
        let now = 1_000_000;
        // Connected for long, heartbeats arriving: this worker alone is cut off.
        assert!(carries_heartbeats(up(60), now - 1_500, now, ttl, beat));
        // Broker down, or back for less than a lease: renew over HTTP.
        assert!(!carries_heartbeats(None, now - 1_500, now, ttl, beat));
        assert!(!carries_heartbeats(up(5), now - 1_500, now, ttl, beat));
        // Up, but no heartbeat came through it lately (or ever): renew.
        assert!(!carries_heartbeats(up(60), now - 7_000, now, ttl, beat));
        assert!(!carries_heartbeats(up(60), 0, now, ttl, beat));
    }
}
