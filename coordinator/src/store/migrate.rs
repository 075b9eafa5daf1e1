//! Moves the unsharded indexes of before issue 10 (`vodfleet:due`,
//! `vodfleet:tasks`) into the index groups, so a single-Redis deployment that
//! upgrades keeps every task indexed (docs/design/fleet.md "Redis").
//!
//! Idempotent and safe to run on every replica at once: each id is added to
//! its group (a deadline with `NX`: a newer one the group already holds wins),
//! and only then removed from the old key, which Redis deletes once empty.
//! Run at start and with every state count, so entries an old replica still
//! writes during a rolling upgrade are moved too.

use super::{Result, Store};
use redis::AsyncCommands;
use vodfleet_proto::fleet::keys;

/// Ids moved per round trip.
const BATCH: usize = 500;

impl Store {
    /// Moves whatever the old unsharded indexes hold into the groups; returns
    /// how many entries (set members plus deadlines) were moved.
    pub async fn migrate_legacy_indexes(&self) -> Result<usize> {
        let mut c = self.conn.clone();
        let mut moved = 0;
        loop {
            let ids: Vec<String> = c.srandmember_multiple(keys::LEGACY_TASKS, BATCH).await?;
            if ids.is_empty() {
                break;
            }
            self.each(ids.iter(), |id| {
                let mut c = self.conn.clone();
                async move {
                    let _: () = c.sadd(keys::tasks_of(id), id).await?;
                    Ok(())
                }
            })
            .await?;
            let _: () = c.srem(keys::LEGACY_TASKS, &ids).await?;
            moved += ids.len();
        }
        loop {
            let due: Vec<(String, u64)> = c
                .zrange_withscores(keys::LEGACY_DUE, 0, BATCH as isize - 1)
                .await?;
            if due.is_empty() {
                break;
            }
            self.each(due.iter(), |(id, at)| {
                let mut c = self.conn.clone();
                async move {
                    let _: () = redis::cmd("ZADD")
                        .arg(keys::due_of(id))
                        .arg("NX")
                        .arg(*at)
                        .arg(id)
                        .query_async(&mut c)
                        .await?;
                    Ok(())
                }
            })
            .await?;
            let ids: Vec<&String> = due.iter().map(|(id, _)| id).collect();
            let _: () = c.zrem(keys::LEGACY_DUE, ids).await?;
            moved += due.len();
        }
        if moved > 0 {
            tracing::info!(
                moved,
                "moved the unsharded task indexes (vodfleet:due, vodfleet:tasks) into their groups"
            );
        }
        Ok(moved)
    }
}
