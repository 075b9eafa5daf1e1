//! Task state in Redis (docs/design/fleet.md "Redis").
//!
//! Each transition of one task is one Lua script over that task's hash (and its
//! resume record, which shares the hash tag): atomic, so any number of
//! coordinator replicas may run the scheduler and the reaper at once. The
//! `due` sorted set and the `tasks` set only say where to look; the scripts
//! re-check every condition, so a stale or repeated index entry is harmless.

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::Serialize;
use std::sync::LazyLock;
use vodfleet_proto::fleet::{keys, DestinationState, ResumeRecord};
use vodfleet_proto::{redact, Position, TaskSpec};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("task {task}: stored record is unreadable: {cause}")]
    Corrupt { task: String, cause: String },
    /// The task moved on (a new epoch) while a command was changing it; applying
    /// the command again, against the new state, is the answer.
    #[error("task {task} changed while being updated")]
    Conflict { task: String },
}

impl StoreError {
    /// Whether waiting and trying again may help (Redis restarting, connection lost).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
            }
            StoreError::Conflict { .. } => true,
            StoreError::Corrupt { .. } => false,
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
}

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
    /// it is offered again under the same epoch.
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

/// A task's live record.
#[derive(Debug)]
pub struct TaskRecord {
    pub spec: TaskSpec,
    pub state: String,
    pub epoch: u64,
    pub worker: Option<String>,
    pub callback: Option<String>,
}

/// The fields the scheduler and reaper decide on.
#[derive(Debug)]
pub struct Deadlines {
    pub state: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub lease_until: u64,
}

/// A task as the API shows it: stream keys redacted.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: String,
    pub state: String,
    pub epoch: u64,
    pub worker: Option<String>,
    pub position: Option<Position>,
    /// How many times the list plays (0: until stopped or `end`).
    pub loop_count: u32,
    pub sources: Vec<String>,
    pub destinations: Vec<DestinationView>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub updated_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DestinationView {
    pub url: String,
    /// Tells apart destinations whose redacted URLs look the same (first 8 hex
    /// digits of the URL's SHA-256: says nothing about the key).
    pub fingerprint: String,
    pub state: Option<DestinationState>,
}

/// Whether a command was seen before (idempotency marker).
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    New,
    /// Applied already: answer as before, change nothing.
    Done,
}

macro_rules! script {
    ($name:ident, $src:expr) => {
        static $name: LazyLock<Script> = LazyLock::new(|| Script::new($src));
    };
}

script!(
    START,
    r#"
-- KEYS[1] task. ARGV: spec, callback, now, ttl, start_ms, end_ms, scheduled, position
local old_state = redis.call('HGET', KEYS[1], 'state') or ''
local old_worker = redis.call('HGET', KEYS[1], 'worker') or ''
local old_epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
local e = old_epoch + 1
local state, lease = 'leased', tonumber(ARGV[3]) + tonumber(ARGV[4])
if ARGV[7] == '1' then state, lease = 'scheduled', 0 end
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'callback', ARGV[2], 'state', state, 'epoch', e,
  'worker', '', 'lease_until', lease, 'position', ARGV[8], 'destinations', '[]', 'start_ms', ARGV[5],
  'end_ms', ARGV[6], 'updated_ms', ARGV[3], 'beat_ms', 0, 'error', '')
redis.call('PERSIST', KEYS[1])
if old_state ~= 'leased' and old_state ~= 'running' then old_worker = '' end
return {old_worker, old_epoch, e}
"#
);

script!(
    ISSUE,
    r#"
-- KEYS[1] task. ARGV: now, ttl, mode ('due' | 'expired')
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return false end
local now = tonumber(ARGV[1])
if ARGV[3] == 'due' then
  if st ~= 'scheduled' or tonumber(redis.call('HGET', KEYS[1], 'start_ms') or '0') > now then return false end
elseif ARGV[3] == 'expired' then
  if (st ~= 'leased' and st ~= 'running') or tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0') > now then return false end
else
  return false
end
-- An order no worker took (leased, no holder) is offered again under the same
-- epoch: the old message has expired from the queue, and if a worker took it
-- after all, the first to report the epoch holds it (RENEW). Epochs only grow
-- when a run may have existed, so a fleet that is full does not climb them.
local e
if ARGV[3] == 'expired' and st == 'leased' and (redis.call('HGET', KEYS[1], 'worker') or '') == '' then
  e = tonumber(redis.call('HGET', KEYS[1], 'epoch'))
  st = 'unclaimed'
else
  e = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
end
redis.call('HSET', KEYS[1], 'state', 'leased', 'worker', '', 'lease_until', now + tonumber(ARGV[2]), 'updated_ms', now)
return {e, redis.call('HGET', KEYS[1], 'spec'), redis.call('HGET', KEYS[1], 'position') or '',
  redis.call('HGET', KEYS[1], 'callback') or '', st}
"#
);

script!(
    RENEW,
    r#"
-- KEYS[1] task. ARGV: epoch, worker, now, ttl, position, destinations
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown' end
local st = redis.call('HGET', KEYS[1], 'state')
if tonumber(redis.call('HGET', KEYS[1], 'epoch')) ~= tonumber(ARGV[1]) or (st ~= 'leased' and st ~= 'running') then
  return 'revoked'
end
-- One holder per epoch: the first worker to report it takes the lease; another
-- worker claiming the same epoch (a redelivered order) is turned away.
local holder = redis.call('HGET', KEYS[1], 'worker') or ''
if holder ~= '' and holder ~= ARGV[2] then return 'revoked' end
local now = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[2], 'lease_until', now + tonumber(ARGV[4]),
  'position', ARGV[5], 'destinations', ARGV[6], 'beat_ms', now, 'updated_ms', now)
return 'renewed:' .. (redis.call('HGET', KEYS[1], 'end_ms') or '0')
"#
);

script!(
    RELEASE,
    r#"
-- KEYS[1] task, KEYS[2] resume. ARGV: epoch, position, now, ttl
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'stale'} end
local e = tonumber(redis.call('HGET', KEYS[1], 'epoch'))
local given = tonumber(ARGV[1])
if (st == 'stopped' or st == 'finished') and e == given + 1 then
  redis.call('HSET', KEYS[1], 'position', ARGV[2])
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'position', ARGV[2]) end
  return {'exact'}
end
if e ~= given or (st ~= 'leased' and st ~= 'running') then return {'stale'} end
local now = tonumber(ARGV[3])
e = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'state', 'leased', 'worker', '', 'lease_until', now + tonumber(ARGV[4]),
  'position', ARGV[2], 'updated_ms', now)
return {'reissued', e, redis.call('HGET', KEYS[1], 'spec'), redis.call('HGET', KEYS[1], 'callback') or '', st}
"#
);

script!(
    FINISH,
    r#"
-- KEYS[1] task. ARGV: epoch, state, position, now, error
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'epoch')) ~= tonumber(ARGV[1]) or (st ~= 'leased' and st ~= 'running') then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'worker', '', 'lease_until', 0, 'position', ARGV[3],
  'updated_ms', ARGV[4], 'error', ARGV[5])
redis.call('EXPIRE', KEYS[1], 172800)
return 1
"#
);

script!(
    STOP,
    r#"
-- KEYS[1] task, KEYS[2] resume. ARGV: now, final_state, write_resume, resume_ttl
local st = redis.call('HGET', KEYS[1], 'state')
if not st or st == 'stopped' or st == 'finished' or st == 'failed' then return false end
local worker = redis.call('HGET', KEYS[1], 'worker') or ''
local e = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'worker', '', 'lease_until', 0, 'updated_ms', ARGV[1])
-- Over: the record stays readable for 48 h (like a resume record), then goes.
redis.call('EXPIRE', KEYS[1], 172800)
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'spec', redis.call('HGET', KEYS[1], 'spec'),
    'position', redis.call('HGET', KEYS[1], 'position') or '',
    'callback', redis.call('HGET', KEYS[1], 'callback') or '', 'stopped_ms', ARGV[1])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
end
return {worker, e - 1}
"#
);

script!(
    SET_SPEC,
    r#"
-- KEYS[1] task. ARGV: expected epoch, spec, now
if tonumber(redis.call('HGET', KEYS[1], 'epoch') or '-1') ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'updated_ms', ARGV[3])
return 1
"#
);

script!(
    RECLAIM,
    r#"
-- KEYS[1] task. ARGV: epoch, worker, spec, position, callback, now, ttl, end_ms
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], 'spec', ARGV[3], 'callback', ARGV[5], 'state', 'running', 'epoch', ARGV[1],
  'worker', ARGV[2], 'lease_until', now + tonumber(ARGV[7]), 'position', ARGV[4], 'destinations', '[]',
  'start_ms', 0, 'end_ms', ARGV[8], 'updated_ms', now, 'beat_ms', now, 'error', '')
return 1
"#
);

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("fleet types serialise")
}

impl Store {
    pub async fn connect(url: &str) -> Result<Store> {
        let client = redis::Client::open(url)?;
        // ConnectionManager reconnects by itself after Redis restarts.
        let conn = ConnectionManager::new(client).await?;
        Ok(Store { conn })
    }

    /// A handle for one-off commands (shares the managed connection).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub async fn ping(&self) -> bool {
        let mut c = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok()
    }

    fn parse<T: for<'de> serde::Deserialize<'de>>(task: &str, s: &str) -> Result<T> {
        serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
            task: task.to_owned(),
            cause: e.to_string(),
        })
    }

    fn position(task: &str, s: &str) -> Result<Option<Position>> {
        if s.is_empty() {
            Ok(None)
        } else {
            Self::parse(task, s).map(Some)
        }
    }

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
            .invoke_async(&mut c)
            .await?;
        let _: () = c.sadd(keys::TASKS, &spec.id).await?;
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
        let mut c = self.conn.clone();
        let r: Option<(u64, String, String, String, String)> = ISSUE
            .key(keys::task(id))
            .arg(now)
            .arg(ttl)
            .arg(mode)
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

    #[allow(clippy::too_many_arguments)]
    pub async fn renew(
        &self,
        id: &str,
        epoch: u64,
        worker: &str,
        now: u64,
        ttl: u64,
        position: &Position,
        dests: &[DestinationState],
    ) -> Result<Renewal> {
        let mut c = self.conn.clone();
        let r: String = RENEW
            .key(keys::task(id))
            .arg(epoch)
            .arg(worker)
            .arg(now)
            .arg(ttl)
            .arg(json(position))
            .arg(json(&dests))
            .invoke_async(&mut c)
            .await?;
        Ok(match r.split_once(':') {
            Some(("renewed", end)) => {
                // The next deadline: lease expiry, or the end time if sooner.
                let end: u64 = end.parse().unwrap_or(0);
                self.schedule(id, (now + ttl).min(if end > 0 { end } else { u64::MAX }))
                    .await?;
                Renewal::Renewed
            }
            _ if r == "unknown" => Renewal::Unknown,
            _ => Renewal::Revoked,
        })
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

    /// Stops a live or scheduled task (cmd 2, or its end time). Returns the worker
    /// that held it (to be told) and the epoch it held.
    pub async fn stop(
        &self,
        id: &str,
        now: u64,
        final_state: &str,
        write_resume: bool,
    ) -> Result<Option<(Option<String>, u64)>> {
        let mut c = self.conn.clone();
        let r: Option<(String, u64)> = STOP
            .key(keys::task(id))
            .key(keys::resume(id))
            .arg(now)
            .arg(final_state)
            .arg(if write_resume { "1" } else { "0" })
            .arg(keys::RESUME_TTL_SECS)
            .invoke_async(&mut c)
            .await?;
        self.unschedule(id).await?;
        Ok(r.map(|(w, e)| ((!w.is_empty()).then_some(w), e)))
    }

    /// Replaces the spec if the task is still at `epoch` (optimistic: a concurrent
    /// transition makes this return false, and the caller re-reads).
    pub async fn set_spec(&self, id: &str, epoch: u64, spec: &TaskSpec, now: u64) -> Result<bool> {
        let mut c = self.conn.clone();
        let n: i64 = SET_SPEC
            .key(keys::task(id))
            .arg(epoch)
            .arg(json(spec))
            .arg(now)
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
            let _: () = c.sadd(keys::TASKS, id).await?;
            self.schedule(id, now + ttl).await?;
        }
        Ok(n == 1)
    }

    /// The live record of a task.
    pub async fn record(&self, id: &str) -> Result<Option<TaskRecord>> {
        let mut c = self.conn.clone();
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(keys::task(id))
            .arg(&["spec", "state", "epoch", "worker", "callback"])
            .query_async(&mut c)
            .await?;
        let [Some(spec), Some(state), Some(epoch), worker, callback] =
            <[Option<String>; 5]>::try_from(fields).unwrap_or_default()
        else {
            return Ok(None);
        };
        Ok(Some(TaskRecord {
            spec: Self::parse(id, &spec)?,
            state,
            epoch: epoch.parse().unwrap_or(0),
            worker: worker.filter(|w| !w.is_empty()),
            callback: callback.filter(|c| !c.is_empty()),
        }))
    }

    pub async fn resume_record(&self, id: &str) -> Result<Option<(ResumeRecord, Option<String>)>> {
        let mut c = self.conn.clone();
        let (spec, position, stopped_ms, callback): (
            Option<String>,
            Option<String>,
            Option<u64>,
            Option<String>,
        ) = redis::cmd("HMGET")
            .arg(keys::resume(id))
            .arg(&["spec", "position", "stopped_ms", "callback"])
            .query_async(&mut c)
            .await?;
        let Some(spec) = spec else { return Ok(None) };
        let position = Self::position(id, position.as_deref().unwrap_or(""))?.unwrap_or_default();
        Ok(Some((
            ResumeRecord {
                spec: Self::parse(id, &spec)?,
                position,
                stopped_ms: stopped_ms.unwrap_or(0),
            },
            callback.filter(|c| !c.is_empty()),
        )))
    }

    pub async fn delete_resume(&self, id: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = c.del(keys::resume(id)).await?;
        Ok(())
    }

    pub async fn deadlines(&self, id: &str) -> Result<Option<Deadlines>> {
        let mut c = self.conn.clone();
        let (state, start_ms, end_ms, lease_until): (
            Option<String>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
        ) = redis::cmd("HMGET")
            .arg(keys::task(id))
            .arg(&["state", "start_ms", "end_ms", "lease_until"])
            .query_async(&mut c)
            .await?;
        Ok(state.map(|state| Deadlines {
            state,
            start_ms: start_ms.unwrap_or(0),
            end_ms: end_ms.unwrap_or(0),
            lease_until: lease_until.unwrap_or(0),
        }))
    }

    /// Task ids whose next deadline is at or before `now`.
    pub async fn due(&self, now: u64, limit: isize) -> Result<Vec<String>> {
        let mut c = self.conn.clone();
        Ok(c.zrangebyscore_limit(keys::DUE, 0, now, 0, limit).await?)
    }

    pub async fn schedule(&self, id: &str, at: u64) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = c.zadd(keys::DUE, id, at).await?;
        Ok(())
    }

    pub async fn unschedule(&self, id: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = c.zrem(keys::DUE, id).await?;
        Ok(())
    }

    /// What the named tasks look like now: epoch and a digest of the spec, per task.
    /// A command's marker stores this as it was right after the command applied.
    async fn fingerprint(&self, ids: &[&str]) -> Result<String> {
        let mut c = self.conn.clone();
        let mut out = String::new();
        for id in ids {
            let (epoch, spec): (Option<u64>, Option<String>) = redis::cmd("HMGET")
                .arg(keys::task(id))
                .arg(&["epoch", "spec"])
                .query_async(&mut c)
                .await?;
            let digest = hex::encode(
                &<sha2::Sha256 as sha2::Digest>::digest(spec.unwrap_or_default().as_bytes())[..8],
            );
            out.push_str(&format!("{id}={}:{digest};", epoch.unwrap_or(0)));
        }
        Ok(out)
    }

    /// Idempotency: was this command applied, with nothing changed since? A
    /// redelivery (or a producer's re-publish) finds the tasks as the command
    /// left them and is skipped; the same body sent again after the tasks moved
    /// on (stop, resume, stop) is a new command.
    pub async fn seen(&self, digest: &str, ids: &[&str]) -> Result<Seen> {
        let mut c = self.conn.clone();
        let v: Option<String> = c.get(keys::applied(digest)).await?;
        match v {
            Some(v) if v == self.fingerprint(ids).await? => Ok(Seen::Done),
            _ => Ok(Seen::New),
        }
    }

    pub async fn mark_applied(&self, digest: &str, ids: &[&str], ttl_secs: u64) -> Result<()> {
        let fp = self.fingerprint(ids).await?;
        let mut c = self.conn.clone();
        let _: () = c.set_ex(keys::applied(digest), fp, ttl_secs).await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<TaskView>> {
        let mut c = self.conn.clone();
        let m: std::collections::HashMap<String, String> = c.hgetall(keys::task(id)).await?;
        Self::view(id, &m)
    }

    /// A task's view from its hash (`None` for an empty hash: no such task).
    fn view(id: &str, m: &std::collections::HashMap<String, String>) -> Result<Option<TaskView>> {
        if m.is_empty() {
            return Ok(None);
        }
        let f = |k: &str| m.get(k).cloned().unwrap_or_default();
        let n = |k: &str| f(k).parse::<u64>().unwrap_or(0);
        let spec: TaskSpec = Self::parse(id, &f("spec"))?;
        let over = matches!(f("state").as_str(), "stopped" | "finished" | "failed");
        // The last heartbeat's states are stale once the task is over.
        let states: Vec<DestinationState> = if over {
            vec![DestinationState::Stopped; spec.forwards.len()]
        } else {
            serde_json::from_str(&f("destinations")).unwrap_or_default()
        };
        Ok(Some(TaskView {
            id: id.to_owned(),
            state: f("state"),
            epoch: n("epoch"),
            worker: Some(f("worker")).filter(|w| !w.is_empty()),
            position: Self::position(id, &f("position"))?,
            loop_count: spec.loop_count,
            sources: spec
                .sources
                .iter()
                .map(|s| redact::source(&s.url))
                .collect(),
            destinations: spec
                .forwards
                .iter()
                .enumerate()
                .map(|(i, fw)| DestinationView {
                    url: redact::destination(&fw.url),
                    fingerprint: hex::encode(
                        &<sha2::Sha256 as sha2::Digest>::digest(fw.url.as_bytes())[..4],
                    ),
                    state: states.get(i).copied(),
                })
                .collect(),
            start_ms: n("start_ms"),
            end_ms: n("end_ms"),
            updated_ms: n("updated_ms"),
            error: Some(f("error")).filter(|e| !e.is_empty()),
        }))
    }

    /// Every task, read in pipelined batches of 500 (one round trip per batch,
    /// not per task).
    pub async fn list(&self) -> Result<Vec<TaskView>> {
        let mut c = self.conn.clone();
        let mut ids: Vec<String> = c.smembers(keys::TASKS).await?;
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(500) {
            let mut pipe = redis::pipe();
            for id in batch {
                pipe.hgetall(keys::task(id));
            }
            let maps: Vec<std::collections::HashMap<String, String>> =
                pipe.query_async(&mut c).await?;
            for (id, m) in batch.iter().zip(&maps) {
                match Self::view(id, m)? {
                    Some(v) => out.push(v),
                    // Its record expired (over for 48 h): drop it from the index too.
                    None => {
                        let _: () = c.srem(keys::TASKS, id).await?;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Tasks by state, read in pipelined batches without loading the records
    /// (memory stays flat however many tasks there are).
    pub async fn count_states(&self) -> Result<std::collections::HashMap<String, i64>> {
        let mut c = self.conn.clone();
        let mut counts = std::collections::HashMap::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(keys::TASKS)
                .arg(cursor)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut c)
                .await?;
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.hget(keys::task(id), "state");
            }
            let states: Vec<Option<String>> = pipe.query_async(&mut c).await?;
            for (id, state) in ids.iter().zip(states) {
                match state {
                    Some(s) => *counts.entry(s).or_insert(0) += 1,
                    None => {
                        let _: () = c.srem(keys::TASKS, id).await?;
                    }
                }
            }
            if next == 0 {
                return Ok(counts);
            }
            cursor = next;
        }
    }
}
