//! Task transitions: each runs its Lua script, then keeps the `due` index and
//! the `tasks` set in step.

use super::scripts::{FINISH, ISSUE, RECLAIM, RELEASE, SET_SPEC, START, STOP};
use super::{json, Result, Store};
use vodfleet_proto::fleet::keys;
use vodfleet_proto::{Position, TaskSpec};

/// What a start (cmd 1 / cmd 5) replaced.
#[derive(Debug)]
pub struct Started {
    /// The worker that held the previous run, if it was live: it must be told to stop.
    pub old_worker: Option<String>,
    pub old_epoch: u64,
    pub epoch: u64,
}

/// A lease just issued: publish a work order with these.
#[derive(Debug)]
pub struct Issued {
    pub epoch: u64,
    pub spec: TaskSpec,
    pub position: Option<Position>,
    pub callback: Option<String>,
    /// The state the task was in (`scheduled`, `leased`, `running`), or
    /// `unclaimed`: its order was not taken by any worker within the lease, and
    /// it is offered again under the same epoch; `reoffered`: see [`Store::reoffer`].
    pub was: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    Revoked,
    Unknown,
}

#[derive(Debug)]
pub enum Release {
    /// Re-issued at once (SIGTERM hand-off).
    Reissued(Box<Issued>),
    /// The task had been stopped; its exact final position was recorded.
    Exact,
    /// Not the current epoch: nothing to do.
    Stale,
}

impl Store {
    /// cmd 1 (and cmd 5 with `resume`): records a new run, fencing any previous one.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        &self,
        spec: &TaskSpec,
        callback: Option<&str>,
        now: u64,
        ttl: u64,
        scheduled: bool,
        resume: Option<&Position>,
        mark: &str,
    ) -> Result<Started> {
        let mut c = self.conn.clone();
        let (old_worker, old_epoch, epoch): (String, u64, u64) = START
            .key(keys::task(&spec.id))
            .arg(json(spec))
            .arg(callback.unwrap_or(""))
            .arg(now)
            .arg(ttl)
            .arg(spec.start_ms.unwrap_or(0))
            .arg(spec.end_ms.unwrap_or(0))
            .arg(if scheduled { "1" } else { "0" })
            .arg(resume.map(json).unwrap_or_default())
            .arg(mark)
            .invoke_async(&mut c)
            .await?;
        self.index(&spec.id).await?;
        let next = if scheduled {
            spec.start_ms.unwrap_or(now)
        } else {
            now + ttl
        };
        self.schedule(
            &spec.id,
            next.min(spec.end_ms.filter(|e| *e > 0).unwrap_or(u64::MAX)),
        )
        .await?;
        Ok(Started {
            old_worker: (!old_worker.is_empty()).then_some(old_worker),
            old_epoch,
            epoch,
        })
    }

    /// Issues a lease if the task is due (`mode` "due") or its lease expired ("expired").
    pub async fn issue(&self, id: &str, now: u64, ttl: u64, mode: &str) -> Result<Option<Issued>> {
        self.issue_as(id, now, ttl, mode, 0).await
    }

    /// Offers the order of `epoch` again with a fresh lease (its publish failed),
    /// unless a worker holds that epoch or the task moved on. `was` is `reoffered`.
    pub async fn reoffer(
        &self,
        id: &str,
        epoch: u64,
        now: u64,
        ttl: u64,
    ) -> Result<Option<Issued>> {
        self.issue_as(id, now, ttl, "reoffer", epoch).await
    }

    async fn issue_as(
        &self,
        id: &str,
        now: u64,
        ttl: u64,
        mode: &str,
        epoch: u64,
    ) -> Result<Option<Issued>> {
        let mut c = self.conn.clone();
        let r: Option<(u64, String, String, String, String)> = ISSUE
            .key(keys::task(id))
            .arg(now)
            .arg(ttl)
            .arg(mode)
            .arg(epoch)
            .invoke_async(&mut c)
            .await?;
        let Some((epoch, spec, position, callback, was)) = r else {
            return Ok(None);
        };
        let spec: TaskSpec = Self::parse(id, &spec)?;
        self.schedule(
            id,
            (now + ttl).min(spec.end_ms.filter(|e| *e > 0).unwrap_or(u64::MAX)),
        )
        .await?;
        Ok(Some(Issued {
            epoch,
            position: Self::position(id, &position)?,
            spec,
            callback: (!callback.is_empty()).then_some(callback),
            was,
        }))
    }

    pub async fn release(
        &self,
        id: &str,
        epoch: u64,
        position: &Position,
        now: u64,
        ttl: u64,
    ) -> Result<Release> {
        let mut c = self.conn.clone();
        let r: Vec<redis::Value> = RELEASE
            .key(keys::task(id))
            .key(keys::resume(id))
            .arg(epoch)
            .arg(json(position))
            .arg(now)
            .arg(ttl)
            .invoke_async(&mut c)
            .await?;
        let text = |v: &redis::Value| -> String { redis::from_redis_value(v).unwrap_or_default() };
        match r.first().map(text).as_deref() {
            Some("exact") => Ok(Release::Exact),
            Some("reissued") if r.len() >= 5 => {
                let epoch: u64 = redis::from_redis_value(&r[1])?;
                let spec: TaskSpec = Self::parse(id, &text(&r[2]))?;
                let callback = text(&r[3]);
                self.schedule(id, now + ttl).await?;
                Ok(Release::Reissued(Box::new(Issued {
                    epoch,
                    spec,
                    position: Some(*position),
                    callback: (!callback.is_empty()).then_some(callback),
                    was: text(&r[4]),
                })))
            }
            _ => Ok(Release::Stale),
        }
    }

    pub async fn finish(
        &self,
        id: &str,
        epoch: u64,
        position: &Position,
        now: u64,
        error: Option<&str>,
    ) -> Result<bool> {
        let mut c = self.conn.clone();
        let state = if error.is_some() {
            "failed"
        } else {
            "finished"
        };
        let n: i64 = FINISH
            .key(keys::task(id))
            .arg(epoch)
            .arg(state)
            .arg(json(position))
            .arg(now)
            .arg(error.unwrap_or(""))
            .invoke_async(&mut c)
            .await?;
        if n == 1 {
            self.unschedule(id).await?;
        }
        Ok(n == 1)
    }

    /// Stops a live or scheduled task (cmd 2 with its `mark`, or its end time
    /// with none). Returns the worker that held it (to be told) and the epoch it held.
    pub async fn stop(
        &self,
        id: &str,
        now: u64,
        final_state: &str,
        write_resume: bool,
        mark: &str,
    ) -> Result<Option<(Option<String>, u64)>> {
        let mut c = self.conn.clone();
        let r: Option<(String, u64)> = STOP
            .key(keys::task(id))
            .key(keys::resume(id))
            .arg(now)
            .arg(final_state)
            .arg(if write_resume { "1" } else { "0" })
            .arg(keys::RESUME_TTL_SECS)
            .arg(mark)
            .invoke_async(&mut c)
            .await?;
        self.unschedule(id).await?;
        Ok(r.map(|(w, e)| ((!w.is_empty()).then_some(w), e)))
    }

    /// Replaces the spec if the task is still at `epoch` (optimistic: a concurrent
    /// transition makes this return false, and the caller re-reads). `mark` is the command's.
    pub async fn set_spec(
        &self,
        id: &str,
        epoch: u64,
        spec: &TaskSpec,
        now: u64,
        mark: &str,
    ) -> Result<bool> {
        let mut c = self.conn.clone();
        let n: i64 = SET_SPEC
            .key(keys::task(id))
            .arg(epoch)
            .arg(json(spec))
            .arg(now)
            .arg(mark)
            .invoke_async(&mut c)
            .await?;
        Ok(n == 1)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn reclaim(
        &self,
        id: &str,
        epoch: u64,
        worker: &str,
        spec: &TaskSpec,
        position: &Position,
        callback: Option<&str>,
        now: u64,
        ttl: u64,
    ) -> Result<bool> {
        let mut c = self.conn.clone();
        let n: i64 = RECLAIM
            .key(keys::task(id))
            .arg(epoch)
            .arg(worker)
            .arg(json(spec))
            .arg(json(position))
            .arg(callback.unwrap_or(""))
            .arg(now)
            .arg(ttl)
            .arg(spec.end_ms.unwrap_or(0))
            .invoke_async(&mut c)
            .await?;
        if n == 1 {
            self.index(id).await?;
            self.schedule(id, now + ttl).await?;
        }
        Ok(n == 1)
    }
}
