//! What every part of the coordinator shares.

use crate::callback::Callbacks;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::RwLock;
use vodfleet_bus::{Bus, BusError};
use vodfleet_proto::fleet::{ToWorker, WorkOrder, CONTROL_EXCHANGE, WORK_QUEUE};

/// The current RabbitMQ connection, replaced by the supervisor after a reconnect.
#[derive(Default)]
pub struct BusSlot(RwLock<Option<Arc<Bus>>>);

impl BusSlot {
    pub async fn get(&self) -> Option<Arc<Bus>> {
        self.0.read().await.clone()
    }
    pub async fn set(&self, bus: Option<Arc<Bus>>) {
        *self.0.write().await = bus;
    }
    /// Takes the connection out (at shutdown, to close it and join its I/O thread).
    pub async fn take(&self) -> Option<Arc<Bus>> {
        self.0.write().await.take()
    }
}

pub struct Ctx {
    pub cfg: Config,
    pub store: Store,
    pub bus: BusSlot,
    pub metrics: Arc<Metrics>,
    pub callbacks: Callbacks,
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

    async fn bus(&self) -> Result<Arc<Bus>, BusError> {
        self.bus.get().await.ok_or(BusError::Cancelled)
    }

    /// Publishes a work order. If this fails the lease simply expires and is issued again.
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
                tracing::warn!(task.id = %order.task_id, epoch = order.epoch, error = %e, "work order not published; the lease will expire and be issued again")
            }
        }
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
