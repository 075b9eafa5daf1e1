//! The worker's RabbitMQ link: one connection at a time, rebuilt with backoff
//! whenever it is lost ([`Bus::connect_with_retry`] redeclares the topology),
//! carrying the work consumer, the control consumer and every publish.
//!
//! **Slot limit.** The work consumer has prefetch 1, so at most one order is
//! in flight. When an order takes the last free slot, the consumer is cancelled
//! *before* that delivery is acked: while it is unacked RabbitMQ cannot push
//! another, and after the cancel it pushes none. A consumer is created again
//! when a slot frees up. So the worker never holds more orders than slots and
//! never has to reject one, and each delivery is acked at once (a delivery is
//! never held for a stream's lifetime). Orders that arrive while draining are
//! rejected with requeue so another worker takes them.

use super::Fleet;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use vodfleet_bus::lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
};
use vodfleet_bus::lapin::types::FieldTable;
use vodfleet_bus::lapin::Channel;
use vodfleet_bus::{Bus, BusError};
use vodfleet_proto::fleet::{ToWorker, WorkOrder, WorkerMessage, EVENTS_QUEUE, WORK_QUEUE};

/// Worker messages go to the events queue through the default exchange.
pub const EVENTS: &str = EVENTS_QUEUE;

/// Keeps a link up until the fleet shuts down.
pub async fn run(fleet: Arc<Fleet>) {
    let name = format!("vodfleet-worker {}", fleet.cfg.worker_id);
    // An AMQP heartbeat well inside the lease: if this process freezes, RabbitMQ
    // drops its connection and hands any order pushed to it to another worker
    // before the coordinator re-issues our tasks (docs/design/fleet.md, "Failover").
    let beat = (fleet.cfg.lease_ttl.as_secs() / 4).clamp(1, 15) as u16;
    let url = vodfleet_bus::with_heartbeat(&fleet.cfg.amqp_url, beat);
    loop {
        let bus = match Bus::connect_with_retry(&url, &name, &fleet.disconnect).await {
            Ok(b) => Arc::new(b),
            Err(_) => return, // shutting down
        };
        tracing::info!("connected to RabbitMQ");
        crate::metrics::get().rabbitmq(true);
        let lost = session(&fleet, bus.clone()).await;
        fleet.bus.send_replace(None);
        fleet.consuming.store(false, Ordering::Relaxed);
        if lost.is_err() {
            crate::metrics::get().rabbitmq(false);
        }
        // Joins lapin's I/O thread, so nothing of it outlives the runtime.
        bus.shutdown(Duration::from_secs(2)).await;
        match lost {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "RabbitMQ link lost; streams go on, reconnecting"),
        }
    }
}

/// One connection's life: until it breaks (`Err`) or the fleet shuts down (`Ok`).
async fn session(fleet: &Arc<Fleet>, bus: Arc<Bus>) -> Result<(), Lost> {
    let queue = bus.declare_control_queue(&fleet.cfg.worker_id).await?;
    let control_tag = format!("{}-control", fleet.cfg.worker_id);
    let (control_channel, mut control) = bus.consume(&queue, &control_tag, 64).await?;
    fleet.bus.send_replace(Some(bus.clone()));
    // Tell the coordinators at once what runs here (renewals after an outage).
    fleet.beat_now.notify_one();
    let controls = async {
        while let Some(delivery) = control.next().await {
            let delivery = delivery?;
            match serde_json::from_slice::<ToWorker>(&delivery.data) {
                Ok(msg) => fleet.on_control(msg),
                Err(e) => tracing::warn!(error = %e, "dropping a malformed control message"),
            }
            delivery.acker.ack(BasicAckOptions::default()).await?;
        }
        Err::<(), Lost>(closed("control consumer"))
    };
    let watch = async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if !bus.is_connected() {
                return Err::<(), Lost>(closed("connection"));
            }
        }
    };
    let work_channel = bus.channel().await?;
    let r = tokio::select! {
        r = controls => r,
        r = intake(fleet, &work_channel) => r,
        r = watch => r,
        _ = fleet.disconnect.cancelled() => Ok(()),
    };
    if r.is_ok() {
        // Leaving for good: end the control consumer (after its cancel-ok nothing
        // more is delivered) and close the channels before the connection, so no
        // delivery arrives on a channel that is already closing.
        let bye = Duration::from_secs(1);
        let cancel = control_channel.basic_cancel(&control_tag, BasicCancelOptions::default());
        let _ = tokio::time::timeout(bye, cancel).await;
        for ch in [&work_channel, &control_channel] {
            let _ = tokio::time::timeout(bye, ch.close(200, "bye")).await;
        }
    }
    r
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] vodfleet_bus::lapin::Error),
    #[error("the {0} ended")]
    Closed(&'static str),
}

fn closed(what: &'static str) -> Lost {
    Lost::Closed(what)
}

/// Takes work orders while there are free slots (see the module note).
async fn intake(fleet: &Arc<Fleet>, ch: &Channel) -> Result<(), Lost> {
    ch.basic_qos(1, BasicQosOptions::default()).await?;
    let tag = format!("{}-work", fleet.cfg.worker_id);
    // With prefetch 1, waiting here before the ack holds the next delivery back.
    let mut pace = super::capacity::StartPace::new(fleet.cfg.start_rate, fleet.cfg.start_rate);
    loop {
        // Wait for a free slot; a draining worker takes nothing more.
        loop {
            let changed = fleet.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if fleet.draining.is_cancelled() {
                std::future::pending::<()>().await;
            }
            if fleet.free_slots() > 0 {
                break;
            }
            tokio::select! {
                _ = changed => {}
                _ = fleet.draining.cancelled() => {}
            }
        }
        let mut orders = ch
            .basic_consume(
                WORK_QUEUE,
                &tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        fleet.consuming.store(true, Ordering::Relaxed);
        tracing::debug!(free_slots = fleet.free_slots(), "taking work");
        loop {
            let delivery = tokio::select! {
                d = orders.next() => d,
                _ = fleet.draining.cancelled() => {
                    ch.basic_cancel(&tag, BasicCancelOptions::default()).await?;
                    fleet.consuming.store(false, Ordering::Relaxed);
                    tracing::info!("draining: no more work orders");
                    break;
                }
            };
            let delivery = delivery.ok_or_else(|| closed("work consumer"))??;
            let order = serde_json::from_slice::<WorkOrder>(&delivery.data);
            // Draining, or full by its measured load: the order goes back for a
            // worker with room.
            if fleet.draining.is_cancelled()
                || (order.is_ok() && fleet.full.load(Ordering::Relaxed))
            {
                hand_back(fleet, ch, &tag, delivery).await?;
                break;
            }
            // Only orders that can still start wait for a start token: an order
            // too old to start is dropped at once (the coordinator offers it
            // again), or a backlog of them would use up the start rate.
            if order.as_ref().is_ok_and(|o| fleet.startable(o)) {
                pace.take().await;
            }
            let full = order.is_ok() && fleet.free_slots() <= 1;
            if full {
                // Cancel before the ack: nothing more can be pushed to us meanwhile.
                ch.basic_cancel(&tag, BasicCancelOptions::default()).await?;
                fleet.consuming.store(false, Ordering::Relaxed);
            }
            delivery.acker.ack(BasicAckOptions::default()).await?;
            match order {
                Ok(order) => fleet.take(order),
                // Acked, not requeued: a body that does not parse never will.
                Err(e) => {
                    tracing::error!(error = %e, bytes = delivery.data.len(), "dropping a malformed work order")
                }
            }
            if full {
                tracing::debug!("every slot busy: not taking work");
                break;
            }
        }
    }
}

/// Stops consuming, then rejects `delivery` with requeue: cancelled first, so it
/// is not pushed to us again, and nothing stays unacked on the channel (an
/// unacked delivery would hold the consumer's prefetch for good).
async fn hand_back(
    fleet: &Fleet,
    ch: &Channel,
    tag: &str,
    delivery: vodfleet_bus::lapin::message::Delivery,
) -> Result<(), Lost> {
    ch.basic_cancel(tag, BasicCancelOptions::default()).await?;
    fleet.consuming.store(false, Ordering::Relaxed);
    delivery
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await?;
    Ok(())
}

/// Messages that must reach the coordinators (events, releases, results): kept
/// in order and published with confirms, across reconnects.
pub struct Outbox {
    tx: mpsc::UnboundedSender<WorkerMessage>,
    pending: AtomicUsize,
    flushed: Notify,
}

impl Outbox {
    pub fn new() -> (Outbox, mpsc::UnboundedReceiver<WorkerMessage>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Outbox {
                tx,
                pending: AtomicUsize::new(0),
                flushed: Notify::new(),
            },
            rx,
        )
    }

    pub fn send(&self, msg: WorkerMessage) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(msg).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Messages not yet confirmed by RabbitMQ.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Waits until every message sent so far is confirmed.
    pub async fn flushed(&self) {
        loop {
            let flushed = self.flushed.notified();
            tokio::pin!(flushed);
            flushed.as_mut().enable();
            if self.pending() == 0 {
                return;
            }
            flushed.await;
        }
    }
}

/// Publishes the outbox in order; a message is retried until RabbitMQ confirms it.
pub async fn publish_outbox(fleet: Arc<Fleet>, mut rx: mpsc::UnboundedReceiver<WorkerMessage>) {
    let mut bus_rx = fleet.bus.subscribe();
    loop {
        let msg = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
            _ = fleet.shutdown.cancelled() => return,
        };
        loop {
            let bus = bus_rx.borrow_and_update().clone();
            let Some(bus) = bus else {
                tokio::select! {
                    r = bus_rx.changed() => if r.is_err() { return },
                    _ = fleet.shutdown.cancelled() => return,
                }
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(5), bus.publish_json("", EVENTS, &msg))
                .await
            {
                Ok(Ok(())) => break,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "publishing a worker message failed; retrying")
                }
                Err(_) => tracing::warn!("a worker message was not confirmed in time; retrying"),
            }
            crate::metrics::get().rabbitmq_error();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = fleet.shutdown.cancelled() => return,
            }
        }
        fleet.outbox.pending.fetch_sub(1, Ordering::SeqCst);
        fleet.outbox.flushed.notify_waiters();
    }
}
