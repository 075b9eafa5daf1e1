//! The deadline index: each task's next deadline (start, lease expiry, end) in
//! its group's sorted set `vodfleet:due:{gN}` (docs/design/fleet.md "Redis").

use super::slots::slot;
use super::{Result, Store};
use redis::AsyncCommands;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use vodfleet_proto::fleet::keys;

impl Store {
    /// Up to `limit` task ids whose next deadline is at or before `now`, from
    /// every group. The groups are read at once (one pipeline per Redis
    /// master: on a cluster sixteen routed reads per pass were a fifth of the
    /// masters' requests) and taken from in turn, starting one group further
    /// on each call, so a group with a backlog larger than `limit` cannot
    /// starve the others.
    pub async fn due(&self, now: u64, limit: isize) -> Result<Vec<String>> {
        let start = self.next_group.fetch_add(1, Ordering::Relaxed) % keys::GROUPS;
        let reads = (0..keys::GROUPS)
            .map(|i| {
                let key = keys::due_in((start + i) % keys::GROUPS);
                let mut cmd = redis::cmd("ZRANGEBYSCORE");
                cmd.arg(&key).arg(0).arg(now).arg("LIMIT").arg(0).arg(limit);
                (slot(key.as_bytes()), cmd)
            })
            .collect();
        let mut per_group = self
            .query_by_master(reads)
            .await?
            .iter()
            .map(|v| Ok(redis::from_redis_value::<Vec<String>>(v)?.into()))
            .collect::<Result<Vec<VecDeque<String>>>>()?;
        let limit = usize::try_from(limit).unwrap_or(0);
        let mut out = Vec::new();
        while out.len() < limit && per_group.iter().any(|q| !q.is_empty()) {
            for q in per_group.iter_mut() {
                if out.len() >= limit {
                    break;
                }
                if let Some(id) = q.pop_front() {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }

    /// Sets a task's next deadline.
    pub async fn schedule(&self, id: &str, at: u64) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = c.zadd(keys::due_of(id), id, at).await?;
        Ok(())
    }

    /// Takes a task out of the deadline index (it is over).
    pub async fn unschedule(&self, id: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = c.zrem(keys::due_of(id), id).await?;
        Ok(())
    }

    /// Adds a task to its group's task set (listings, counts).
    pub(super) async fn index(&self, id: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = c.sadd(keys::tasks_of(id), id).await?;
        Ok(())
    }
}
