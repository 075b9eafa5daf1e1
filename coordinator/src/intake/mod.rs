//! Commands from `vodfleet.commands` (docs/contract.md#queue, docs/contract.md#commands,
//! docs/contract.md#idempotency).
//!
//! Validate, apply once to each task (idempotent by message id or body digest,
//! recorded in the task by the same script that changes it), answer the
//! producer if it asked (`reply_to`), then ack. A refused command is answered
//! with 400/403 and a message naming the field, gets a failure callback when a
//! URL was given, and is republished to `vodfleet.commands.dead` with the reason;
//! it changes nothing in Redis. A command whose handler keeps failing (e.g. a
//! task record that cannot be read) goes back to the queue until its last
//! delivery under the queue's limit, then is dead-lettered by us with the error
//! as its reason; one that keeps crashing the process is dead-lettered by
//! RabbitMQ itself after the delivery limit.

use crate::callback::{payload, Callback};
use crate::ctx::{now_ms, Ctx};
use crate::store::{StoreError, TaskRecord};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use vodfleet_bus::lapin::message::Delivery;
use vodfleet_proto::fleet::{ToWorker, WorkOrder};
use vodfleet_proto::{parse_command, Cmd, Command, FieldError, TaskSpec};

/// Starts of one command applied at once (scripts and work-order confirms in flight).
const STARTS_IN_FLIGHT: usize = 16;

mod answer;
pub use answer::requeue;
use answer::{ack, give_back, refuse, reply};

pub enum ApplyError {
    Reject(FieldError),
    Store(StoreError),
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        ApplyError::Store(e)
    }
}

/// Commands are applied by this many concurrent lanes; all commands naming the
/// same (first) task go through the same lane, so one task's commands apply in
/// the order they were queued.
pub const LANES: usize = 16;

/// The lane of a command body: by its first task id (lane 0 if unreadable,
/// where it will be refused anyway).
pub fn lane(body: &[u8]) -> usize {
    let id = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        // "123" and 123 name the same task: hash the text either way.
        .and_then(|v| {
            v.get("list")?
                .get(0)?
                .get("id")
                .map(|id| id.as_str().map_or_else(|| id.to_string(), str::to_owned))
        })
        .unwrap_or_default();
    let h = Sha256::digest(id.as_bytes());
    (u16::from_le_bytes([h[0], h[1]]) as usize) % LANES
}

/// The seed's response body.
pub fn response(code: u16, msg: &str) -> serde_json::Value {
    serde_json::json!({"http_code": code.to_string(), "msg": msg, "call_time": now_ms()})
}

pub async fn handle(ctx: &Ctx, d: Delivery) {
    let delivered = Instant::now();
    let message_id = d.properties.message_id().as_ref().map(|m| m.to_string());
    let digest = match &message_id {
        Some(m) => format!("m:{}", hex::encode(Sha256::digest(m.as_bytes()))),
        None => format!("b:{}", hex::encode(Sha256::digest(&d.data))),
    };
    let now = now_ms();
    let cmd = match parse_command(&d.data).and_then(|c| timing(ctx, c, now)) {
        Ok(c) => c,
        Err(e) => return refuse(ctx, &d, e, None, delivered).await,
    };
    let mut delay = Duration::from_millis(200);
    loop {
        match apply(ctx, &cmd, &digest, now_ms()).await {
            Ok(applied) => {
                let outcome = if applied { "accepted" } else { "duplicate" };
                ctx.metrics
                    .commands
                    .with_label_values(&[cmd.cmd.code(), outcome])
                    .inc();
                tracing::info!(
                    cmd = cmd.cmd.code(),
                    tasks = cmd.tasks.len(),
                    "{}",
                    if applied {
                        "command applied"
                    } else {
                        "command applied before (a redelivery or a re-publish); nothing changed"
                    }
                );
                reply(ctx, &d, 200, "receive task success!").await;
                ack(&d).await;
                ctx.metrics.intake_done(cmd.cmd.code(), outcome, delivered);
                return;
            }
            Err(ApplyError::Reject(e)) => return refuse(ctx, &d, e, Some(&cmd), delivered).await,
            Err(ApplyError::Store(e)) if e.is_transient() && delay < Duration::from_secs(30) => {
                // Redis is restarting: hold the delivery and try again rather than bounce it
                // towards the delivery limit.
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Redis unavailable while applying a command");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(ApplyError::Store(e)) => {
                return give_back(ctx, &d, cmd.cmd.code(), &e, delivered).await
            }
        }
    }
}

fn timing(ctx: &Ctx, c: Command, now: u64) -> Result<Command, FieldError> {
    if c.cmd == Cmd::Start {
        c.check_timing(now, ctx.cfg.min_window.as_millis() as u64)?;
    }
    Ok(c)
}

/// Applies `cmd` (whose mark is `mark`) to each of its tasks that does not carry
/// the mark yet. False when every task did: nothing was applied.
async fn apply(ctx: &Ctx, cmd: &Command, mark: &str, now: u64) -> Result<bool, ApplyError> {
    let ids: Vec<&str> = cmd.tasks.iter().map(|t| t.id.as_str()).collect();
    let done: Vec<bool> = ctx
        .store
        .last_commands(&ids)
        .await?
        .iter()
        .map(|m| m.as_deref() == Some(mark))
        .collect();
    if matches!(cmd.cmd, Cmd::Start | Cmd::Resume) {
        for id in ids.iter().zip(&done).filter(|(_, d)| **d).map(|(id, _)| id) {
            ctx.store.ensure_indexed(id, now).await?;
        }
    }
    let todo = || cmd.tasks.iter().enumerate().filter(|(i, _)| !done[*i]);
    if todo().next().is_none() {
        return Ok(false);
    }
    match cmd.cmd {
        Cmd::Start => {
            // Each task's start is its own script and work order, so a body's
            // tasks start together: answered in a few confirm round trips, not
            // one per task. One at a time if an id repeats (the later entry wins).
            let unique = ids.iter().collect::<HashSet<_>>().len() == ids.len();
            let cb = cmd.callback_url.as_deref();
            let specs: Vec<&TaskSpec> = todo().map(|(_, spec)| spec).collect();
            for batch in specs.chunks(if unique { STARTS_IN_FLIGHT } else { 1 }) {
                let starts = batch.iter().map(|s| start(ctx, s, cb, now, None, mark));
                // Every start of the batch runs to its end (none is cut between
                // its script and its order) before an error is returned.
                for r in futures_util::future::join_all(starts).await {
                    r?;
                }
            }
        }
        Cmd::Terminate => {
            for (i, spec) in todo() {
                terminate(ctx, i, spec, now, mark).await?;
            }
        }
        Cmd::Update => {
            for (i, spec) in todo() {
                update(ctx, i, spec, now, mark).await?;
            }
        }
        Cmd::Resume => {
            // Every task must have its record before anything changes.
            let mut records = Vec::new();
            for (i, spec) in todo() {
                match ctx.store.resume_record(&spec.id).await? {
                    Some(r) => records.push((i, spec, r)),
                    None => {
                        return Err(ApplyError::Reject(FieldError::new(
                            format!("list[{i}].id"),
                            format!("no resume record for task {:?}: it was not stopped with cmd \"2\", or the record is older than 48 h", spec.id),
                        )))
                    }
                }
            }
            for (i, spec, (record, callback)) in records {
                let mut resumed = record.spec.clone();
                for (j, f) in spec.forwards.iter().enumerate() {
                    let Some(reset) = &f.reset_url else { continue };
                    match resumed.forwards.iter_mut().find(|o| o.url == f.url) {
                        Some(o) => o.url = reset.clone(),
                        None => {
                            return Err(ApplyError::Reject(FieldError::new(
                                format!("list[{i}].forward[{j}].url"),
                                "is not a destination of the stopped task, so it cannot be reset",
                            )))
                        }
                    }
                }
                let cb = cmd.callback_url.clone().or(callback);
                let epoch = start(
                    ctx,
                    &resumed,
                    cb.as_deref(),
                    now,
                    Some(record.position),
                    mark,
                )
                .await?;
                ctx.store.delete_resume(&spec.id).await?;
                if let Some(url) = cb {
                    let id = format!("{}:{epoch}:resumed", spec.id);
                    ctx.callbacks.send(Callback {
                        url,
                        payload: payload(
                            "resumed",
                            0,
                            "Resumed",
                            Cmd::Resume,
                            &resumed,
                            None,
                            &id,
                            now,
                        ),
                    });
                }
            }
        }
    }
    Ok(true)
}

/// Records a run and issues its lease (or schedules it), fencing a previous run.
/// Returns the new run's epoch.
async fn start(
    ctx: &Ctx,
    spec: &TaskSpec,
    callback: Option<&str>,
    now: u64,
    resume: Option<vodfleet_proto::Position>,
    mark: &str,
) -> Result<u64, ApplyError> {
    let scheduled = spec.start_ms.is_some_and(|s| s > now);
    let started = ctx
        .store
        .start(
            spec,
            callback,
            now,
            ctx.ttl_ms(),
            scheduled,
            resume.as_ref(),
            mark,
        )
        .await?;
    if let Some(w) = &started.old_worker {
        ctx.tell(
            w,
            &ToWorker::Stop {
                task_id: spec.id.clone(),
                epoch: started.old_epoch,
                forwards: None,
            },
        )
        .await;
    }
    if !scheduled {
        ctx.metrics.leases_issued.inc();
        ctx.publish_order(&WorkOrder {
            task_id: spec.id.clone(),
            epoch: started.epoch,
            spec: spec.clone(),
            resume,
            resume_estimated: false,
            issued_ms: now,
            callback_url: callback.map(str::to_owned),
        })
        .await;
    }
    Ok(started.epoch)
}

/// The stored record of `list[i]`'s task, or the refusal that names it.
async fn known(ctx: &Ctx, i: usize, id: &str) -> Result<TaskRecord, ApplyError> {
    ctx.store.record(id).await?.ok_or_else(|| {
        ApplyError::Reject(FieldError::new(
            format!("list[{i}].id"),
            format!("no task {id:?} is known"),
        ))
    })
}

/// Stores `spec` if its task is still at `epoch`; a task that moved on meanwhile is
/// a transient conflict, so the command is applied again against the new state.
async fn replace_spec(
    ctx: &Ctx,
    spec: &TaskSpec,
    epoch: u64,
    now: u64,
    mark: &str,
) -> Result<(), ApplyError> {
    if ctx.store.set_spec(&spec.id, epoch, spec, now, mark).await? {
        Ok(())
    } else {
        Err(ApplyError::Store(StoreError::Conflict {
            task: spec.id.clone(),
        }))
    }
}

fn is_over(state: &str) -> bool {
    matches!(state, "stopped" | "finished" | "failed")
}

async fn terminate(
    ctx: &Ctx,
    i: usize,
    spec: &TaskSpec,
    now: u64,
    mark: &str,
) -> Result<(), ApplyError> {
    let TaskRecord {
        spec: mut stored,
        state,
        epoch,
        worker,
        callback,
    } = known(ctx, i, &spec.id).await?;
    if is_over(&state) {
        return Ok(()); // already over: stopping it again changes nothing
    }
    let mut stopping = Vec::new();
    for (j, f) in spec.forwards.iter().enumerate() {
        if !stored.forwards.iter().any(|o| o.url == f.url) {
            return Err(ApplyError::Reject(FieldError::new(
                format!("list[{i}].forward[{j}].url"),
                format!("is not a destination of task {:?}", spec.id),
            )));
        }
        stopping.push(f.url.clone());
    }
    stored.forwards.retain(|o| !stopping.contains(&o.url));
    if stored.forwards.is_empty() {
        // The last destinations: the task stops and its resume record is written.
        if let Some((holder, held_epoch)) =
            ctx.store.stop(&spec.id, now, "stopped", true, mark).await?
        {
            if let Some(w) = holder {
                ctx.tell(
                    &w,
                    &ToWorker::Stop {
                        task_id: spec.id.clone(),
                        epoch: held_epoch,
                        forwards: None,
                    },
                )
                .await;
            }
            if let Some(url) = callback {
                let id = format!("{}:{held_epoch}:stopped", spec.id);
                ctx.callbacks.send(Callback {
                    url,
                    payload: payload(
                        "stopped",
                        0,
                        "Stop pushing!",
                        Cmd::Terminate,
                        &stored_with(spec, &stopping),
                        None,
                        &id,
                        now,
                    ),
                });
            }
        }
        return Ok(());
    }
    replace_spec(ctx, &stored, epoch, now, mark).await?;
    if let Some(w) = worker {
        ctx.tell(
            &w,
            &ToWorker::Stop {
                task_id: spec.id.clone(),
                epoch,
                forwards: Some(stopping),
            },
        )
        .await;
    }
    Ok(())
}

/// The spec as a callback about the stopped destinations should show it.
fn stored_with(spec: &TaskSpec, urls: &[String]) -> TaskSpec {
    let mut s = spec.clone();
    s.forwards.retain(|f| urls.contains(&f.url));
    s
}

async fn update(
    ctx: &Ctx,
    i: usize,
    spec: &TaskSpec,
    now: u64,
    mark: &str,
) -> Result<(), ApplyError> {
    let TaskRecord {
        spec: mut stored,
        state,
        epoch,
        worker,
        ..
    } = known(ctx, i, &spec.id).await?;
    if is_over(&state) {
        return Err(ApplyError::Reject(FieldError::new(
            format!("list[{i}].id"),
            format!(
                "task {:?} is {state}; start it again with cmd \"1\"",
                spec.id
            ),
        )));
    }
    stored.sources = spec.sources.clone();
    stored.loop_count = spec.loop_count;
    stored.first_item = spec.first_item.min(stored.sources.len().saturating_sub(1));
    stored.callback_file_info = spec.callback_file_info;
    replace_spec(ctx, &stored, epoch, now, mark).await?;
    if let Some(w) = worker {
        ctx.tell(
            &w,
            &ToWorker::Update {
                task_id: spec.id.clone(),
                epoch,
                sources: stored.sources.clone(),
                wait_current: spec.wait_current,
            },
        )
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_task_always_takes_one_lane() {
        let a = super::lane(br#"{"cmd":"1","list":[{"id":"123"}]}"#);
        assert_eq!(
            a,
            super::lane(br#"{"cmd":"2","list":[{"id":123}]}"#),
            "string and number ids are one task"
        );
        assert!(a < super::LANES);
        assert_eq!(super::lane(b"not json"), super::lane(b"{}"));
    }
}
