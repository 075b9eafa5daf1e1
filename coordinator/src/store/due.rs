//! The deadline index: each task's next deadline (start, lease expiry, end) in
//! its group's sorted set `vodfleet:due:{gN}` (docs/design/fleet.md "Redis").

use super::{Result, Store};
use redis::AsyncCommands;
use std::sync::atomic::Ordering;
use vodfleet_proto::fleet::keys;

impl Store {
    /// Up to `limit` task ids whose next deadline is at or before `now`, from
    /// every group. The groups are read at once and taken from in turn,
    /// starting one group further on each call, so a group with a backlog
    /// larger than `limit` cannot starve the others.
    pub async fn due(&self, now: u64, limit: isize) -> Result<Vec<String>> {
        let start = self.next_group.fetch_add(1, Ordering::Relaxed) % keys::GROUPS;
        let order: Vec<u32> = (0..keys::GROUPS)
            .map(|i| (start + i) % keys::GROUPS)
            .collect();
        let mut per_group: Vec<std::collections::VecDeque<String>> = self
            .each(order, |g| {
                let mut c = self.conn.clone();
                async move {
                    let ids: Vec<String> = c
                        .zrangebyscore_limit(keys::due_in(g), 0, now, 0, limit)
                        .await?;
                    Ok(ids.into())
                }
            })
            .await?;
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
