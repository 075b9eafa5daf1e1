//! The coordinator's side of the lease protocol (docs/design/fleet.md):
//! worker messages from `vodfleet.events`, and the reaper that issues leases
//! whose time has come (start time reached, lease expired, end time passed).

use crate::callback::{payload, Callback};
use crate::ctx::{now_ms, Ctx};
use crate::store::{IndexMove, Release, Renewal, StoreError, TaskRecord};
use futures_util::StreamExt;
use std::time::Duration;
use vodfleet_proto::fleet::{EventKind, TaskBeat, ToWorker, WorkOrder, WorkerMessage};
use vodfleet_proto::{Cmd, Position};

/// Renewals one replica sends to Redis at once, over every heartbeat it is
/// handling ([`Ctx::renewals`]). Before this bound each of the 64 heartbeats
/// handled at once kept 256 in flight: up to 16,384 requests held in memory
/// during a ramp, and the coordinator's RSS grew with the fleet (20 -> 43 MB
/// single, 21 -> 75 MB on a Redis Cluster, 1,000 -> 20,000 tasks).
pub const RENEWALS_IN_FLIGHT: usize = 512;

/// Renewals sent as one pipeline (per master) at most.
const RENEWALS_PER_PIPELINE: usize = 128;

/// Pipelines of one heartbeat in flight at once (within [`RENEWALS_IN_FLIGHT`]).
const PIPELINES_PER_BEAT: usize = 4;

/// Handles one worker message. Errors are Redis errors: the caller retries.
pub async fn handle(ctx: &Ctx, msg: WorkerMessage) -> Result<(), StoreError> {
    let now = now_ms();
    let ttl = ctx.ttl_ms();
    match msg {
        WorkerMessage::Heartbeat {
            worker_id,
            seq,
            sent_ms,
            tasks,
            ..
        } => {
            ctx.amqp_beat_ms
                .store(now, std::sync::atomic::Ordering::Relaxed);
            let ack = renew(ctx, &worker_id, seq, sent_ms, tasks).await?;
            ctx.tell(&worker_id, &ack).await;
        }
        WorkerMessage::Released {
            worker_id,
            task_id,
            epoch,
            position,
        } => match ctx
            .store
            .release(&task_id, epoch, &position, now, ttl)
            .await?
        {
            Release::Reissued(i) => {
                tracing::info!(task.id = %task_id, worker.id = %worker_id, epoch = i.epoch, "task released; issued again at once");
                ctx.metrics.leases_reissued.inc();
                ctx.publish_order(&WorkOrder {
                    task_id,
                    epoch: i.epoch,
                    spec: i.spec,
                    resume: Some(position),
                    resume_estimated: false,
                    issued_ms: now,
                    callback_url: i.callback,
                })
                .await;
            }
            Release::Exact => {
                tracing::info!(task.id = %task_id, ?position, "stopped task's exact position recorded")
            }
            Release::Stale => {}
        },
        WorkerMessage::Finished {
            task_id,
            epoch,
            position,
            error,
            ..
        } => {
            if ctx
                .store
                .finish(&task_id, epoch, &position, now, error.as_deref())
                .await?
            {
                tracing::info!(task.id = %task_id, error = ?error, "task ended on its worker");
                // The worker's own `finished`/`failed` event carries the callback.
            }
        }
        WorkerMessage::Reclaim {
            worker_id,
            task_id,
            epoch,
            spec,
            position,
            callback_url,
        } => {
            if ctx
                .store
                .reclaim(
                    &task_id,
                    epoch,
                    &worker_id,
                    &spec,
                    &position,
                    callback_url.as_deref(),
                    now,
                    ttl,
                )
                .await?
            {
                tracing::warn!(task.id = %task_id, worker.id = %worker_id, epoch, "task record rebuilt from its worker (Redis had lost it)");
            }
        }
        WorkerMessage::Event {
            task_id,
            epoch,
            event,
            ..
        } => {
            let Some(TaskRecord {
                spec,
                epoch: current,
                callback: Some(url),
                ..
            }) = ctx.store.record(&task_id).await?
            else {
                return Ok(());
            };
            if event.kind == EventKind::FileStarted && !spec.callback_file_info {
                return Ok(());
            }
            if epoch > current {
                return Ok(());
            }
            let (name, code) = match event.kind {
                EventKind::Started => ("started", 0),
                EventKind::FileStarted => ("file_started", 0),
                EventKind::FileFailed => ("file_failed", 2),
                EventKind::ForwardFailed => ("forward_failed", 2),
                EventKind::Finished => ("finished", 0),
                EventKind::Stopped => ("stopped", 0),
                EventKind::Resumed => ("resumed", 0),
                EventKind::Failed => ("failed", 1),
            };
            let forward = if event.kind == EventKind::ForwardFailed {
                event.index
            } else {
                None
            };
            // An event that can happen once per run (started, stopped, finished, failed)
            // gets the same id whoever reports it (worker or coordinator), so the
            // receiver's de-duplication by event_id merges the two reports.
            let id = match event.kind {
                EventKind::FileStarted | EventKind::FileFailed | EventKind::ForwardFailed => {
                    format!("{task_id}:{epoch}:{}", event.seq)
                }
                _ => format!("{task_id}:{epoch}:{name}"),
            };
            let mut p = payload(
                name,
                code,
                &event.message,
                Cmd::Start,
                &spec,
                forward,
                &id,
                event.at_ms,
            );
            if matches!(event.kind, EventKind::FileStarted | EventKind::FileFailed) {
                p["file_index"] = event.index.into();
            }
            ctx.callbacks.send(Callback { url, payload: p });
        }
    }
    Ok(())
}

/// Renews the leases one heartbeat lists and says how in a
/// [`ToWorker::LeaseAck`]; the heartbeat came over RabbitMQ or, while a
/// worker's link is down, over HTTP ([`crate::api`]).
pub async fn renew(
    ctx: &Ctx,
    worker_id: &str,
    seq: u64,
    sent_ms: u64,
    tasks: Vec<TaskBeat>,
) -> Result<ToWorker, StoreError> {
    let now = now_ms();
    let ttl = ctx.ttl_ms();
    ctx.metrics.heartbeats.inc();
    ctx.metrics
        .heartbeat_age
        .set(now.saturating_sub(sent_ms) as f64 / 1000.0);
    let (mut renewed, mut revoked, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    // In chunks, each one pipeline per Redis master (store::renew): a worker
    // with a thousand streams is answered in a few round trips, not a
    // thousand, and its leases are renewed in time even when this machine is
    // busy. The chunks take their share of the replica's renewals in flight.
    // The futures are made first: a closure inside the stream's type trips
    // the compiler's Send check (higher-ranked lifetimes) in axum handlers.
    let index = index_move(seq, ctx.cfg.heartbeat.as_millis() as u64, ttl);
    let pipelines: Vec<_> = tasks
        .chunks(RENEWALS_PER_PIPELINE)
        .map(|chunk| async move {
            // Never closed: the semaphore lives as long as the context.
            let _permits = ctx.renewals.acquire_many(chunk.len() as u32).await;
            let r = ctx.store.renew_all(chunk, worker_id, now, ttl, index).await;
            (chunk, r)
        })
        .collect();
    let mut results = futures_util::stream::iter(pipelines).buffer_unordered(PIPELINES_PER_BEAT);
    while let Some((chunk, r)) = results.next().await {
        for (t, r) in chunk.iter().zip(r?) {
            let entry = (t.task_id.clone(), t.epoch);
            match r {
                Renewal::Renewed => renewed.push(entry),
                Renewal::Revoked => revoked.push(entry),
                Renewal::Unknown => unknown.push(entry),
            }
        }
    }
    if !revoked.is_empty() {
        tracing::info!(worker.id = %worker_id, ?revoked, "leases revoked");
    }
    Ok(ToWorker::LeaseAck {
        seq,
        renewed,
        revoked,
        unknown,
    })
}

/// Whether heartbeat `seq` of a worker is one that moves the deadline index
/// ([`IndexMove`]): every k-th, k the most heartbeats (`beat_ms` apart) that
/// fit in 3/4 of the lease TTL, so an entry moved on one aligned heartbeat is
/// still ahead at the next (3 at the defaults: 2 s, 10 s).
fn index_move(seq: u64, beat_ms: u64, ttl: u64) -> IndexMove {
    let k = (ttl * 3 / 4).checked_div(beat_ms).unwrap_or(1).max(1);
    if seq % k == 0 {
        IndexMove::Aligned
    } else {
        IndexMove::Urgent
    }
}

/// Every `period`: issue what is due. Runs on every replica; the per-task
/// scripts make sure each lease is issued once.
pub async fn reap(ctx: &Ctx) -> Result<(), StoreError> {
    let now = now_ms();
    let ttl = ctx.ttl_ms();
    for id in ctx.store.due(now, 200).await? {
        let Some(d) = ctx.store.deadlines(&id).await? else {
            ctx.store.unschedule(&id).await?;
            continue;
        };
        let live = matches!(d.state.as_str(), "leased" | "running" | "scheduled");
        if !live {
            ctx.store.unschedule(&id).await?;
            continue;
        }
        if d.end_ms > 0 && d.end_ms <= now {
            // End beats loop: the task is over, as if stopped, but nothing is kept to resume.
            if let Some((holder, epoch)) = ctx.store.stop(&id, now, "finished", false, "").await? {
                tracing::info!(task.id = %id, "end time reached; task stopped");
                if let Some(w) = holder {
                    ctx.tell(
                        &w,
                        &ToWorker::Stop {
                            task_id: id.clone(),
                            epoch,
                            forwards: None,
                        },
                    )
                    .await;
                }
                if let Some(TaskRecord {
                    spec,
                    callback: Some(url),
                    ..
                }) = ctx.store.record(&id).await?
                {
                    let eid = format!("{id}:{epoch}:finished");
                    ctx.callbacks.send(Callback {
                        url,
                        payload: payload(
                            "finished",
                            0,
                            "End time reached",
                            Cmd::Start,
                            &spec,
                            None,
                            &eid,
                            now,
                        ),
                    });
                }
            }
            continue;
        }
        let mode = if d.state == "scheduled" {
            "due"
        } else {
            "expired"
        };
        match ctx.store.issue(&id, now, ttl, mode).await? {
            Some(i) => {
                let mut resume = i.position;
                if i.was == "unclaimed" {
                    // No worker had room (or none runs): offered again, same epoch.
                    ctx.metrics.orders_unclaimed.inc();
                    tracing::info!(task.id = %id, epoch = i.epoch, "no worker took the order within the lease; offered again");
                } else if mode == "expired" {
                    ctx.metrics.leases_expired.inc();
                    ctx.metrics.leases_reissued.inc();
                    if i.was == "running" {
                        ctx.metrics.failovers.inc();
                    }
                    // The worker streamed for some time after its last report; half a
                    // heartbeat interval is the expected value of that time.
                    let half = ctx.cfg.heartbeat.as_millis() as u64 / 2;
                    resume = resume.map(|p| Position {
                        offset_ms: p.offset_ms + half,
                        timeline_ms: p.timeline_ms + half,
                        ..p
                    });
                    tracing::warn!(task.id = %id, epoch = i.epoch, was = %i.was, "lease expired; issued again");
                } else {
                    ctx.metrics.leases_issued.inc();
                    tracing::info!(task.id = %id, epoch = i.epoch, "start time reached; issued");
                }
                ctx.publish_order(&WorkOrder {
                    task_id: id.clone(),
                    epoch: i.epoch,
                    spec: i.spec,
                    resume,
                    resume_estimated: mode == "expired" && resume.is_some(),
                    issued_ms: now,
                    callback_url: i.callback,
                })
                .await;
            }
            None => {
                // Nothing due after all (renewed meanwhile): look again at the next deadline.
                let next = match d.state.as_str() {
                    "scheduled" => d.start_ms,
                    _ => d.lease_until,
                };
                let next = if d.end_ms > 0 {
                    next.min(d.end_ms)
                } else {
                    next
                };
                ctx.store.schedule(&id, next.max(now + 1)).await?;
            }
        }
    }
    Ok(())
}

/// Refreshes the tasks-by-state gauge.
pub async fn count_states(ctx: &Ctx) -> Result<(), StoreError> {
    let counts = ctx.store.count_states().await?;
    for s in [
        "scheduled",
        "leased",
        "running",
        "stopped",
        "finished",
        "failed",
    ] {
        ctx.metrics
            .tasks
            .with_label_values(&[s])
            .set(counts.get(s).copied().unwrap_or(0));
    }
    Ok(())
}

/// Retries `f` while Redis is briefly unavailable (restart), up to ~30 s.
pub async fn with_retry<F, Fut>(what: &str, mut f: F) -> Result<(), StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match f().await {
            Err(e) if e.is_transient() && delay < Duration::from_secs(16) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what}: Redis unavailable");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_heartbeat_in_k_moves_the_index() {
        let aligned = |beat_ms, ttl| {
            (0..12u64)
                .filter(|&s| index_move(s, beat_ms, ttl) == IndexMove::Aligned)
                .collect::<Vec<_>>()
        };
        // The defaults: 3 beats of 2 s fit in 7.5 s.
        assert_eq!(aligned(2_000, 10_000), [0, 3, 6, 9]);
        // Beats as long as the TTL (or a zero interval): every one.
        assert_eq!(aligned(10_000, 10_000).len(), 12);
        assert_eq!(aligned(0, 10_000).len(), 12);
        assert_eq!(aligned(1_000, 10_000), [0, 7]);
    }
}
