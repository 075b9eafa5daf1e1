//! A task's live record and its resume record, as the coordinator reads them.

use super::{Result, Store};
use redis::AsyncCommands;
use vodfleet_proto::fleet::{keys, ResumeRecord};
use vodfleet_proto::TaskSpec;

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

impl Store {
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
}
