//! The `due` sorted set: each task's next deadline (start, lease expiry, end).

use super::{Result, Store};
use redis::AsyncCommands;
use vodfleet_proto::fleet::keys;

impl Store {
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
}
