//! Tasks as the API shows them (stream keys redacted), one at a time, and
//! counts by state; pages of them are in `page`.

use super::slots::slot;
use super::{Result, Store};
use redis::AsyncCommands;
use serde::Serialize;
use vodfleet_proto::fleet::{keys, DestinationState};
use vodfleet_proto::{redact, Position, TaskSpec};

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

impl Store {
    /// One task's view (`None`: no such task).
    pub async fn get(&self, id: &str) -> Result<Option<TaskView>> {
        let mut c = self.conn.clone();
        let m: std::collections::HashMap<String, String> = c.hgetall(keys::task(id)).await?;
        Self::view(id, &m)
    }

    /// A task's view from its hash (`None` for an empty hash: no such task).
    pub(super) fn view(
        id: &str,
        m: &std::collections::HashMap<String, String>,
    ) -> Result<Option<TaskView>> {
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

    /// Tasks by state, read group by group in SSCAN batches without loading
    /// the records (memory stays flat however many tasks there are).
    pub async fn count_states(&self) -> Result<std::collections::HashMap<String, i64>> {
        let mut c = self.conn.clone();
        let mut counts = std::collections::HashMap::new();
        for g in 0..keys::GROUPS {
            let mut cursor: u64 = 0;
            loop {
                let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
                    .arg(keys::tasks_in(g))
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut c)
                    .await?;
                // One pipeline per master: 20,000 tasks every 15 s were
                // 1,300 requests a second of their own on a Redis Cluster.
                let reads = ids
                    .iter()
                    .map(|id| {
                        let key = keys::task(id);
                        let mut cmd = redis::cmd("HGET");
                        cmd.arg(&key).arg("state");
                        (slot(key.as_bytes()), cmd)
                    })
                    .collect();
                let states = self.query_by_master(reads).await?;
                for (id, state) in ids.iter().zip(states) {
                    match redis::from_redis_value::<Option<String>>(&state)? {
                        Some(s) => *counts.entry(s).or_insert(0) += 1,
                        None => self.forget(id).await?,
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(counts)
    }
}
