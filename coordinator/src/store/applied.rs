//! Idempotency: which command last changed each task.
//!
//! Every transition a command makes writes the command's mark into the task's
//! own hash in the same script ([`super::scripts`]), so "applied" and "recorded
//! as applied" cannot come apart when a coordinator dies between them. A
//! redelivery (or a producer's re-publish) finds its mark on a task and skips
//! it; the same body sent again after another command changed the task (stop,
//! resume, stop) is a new command.

use super::{Result, Store};
use redis::AsyncCommands;
use vodfleet_proto::fleet::keys;

impl Store {
    /// The mark of the last command applied to each task (`None`: none, or no such task).
    /// (One read per task, concurrently: the tasks' keys lie in different
    /// cluster slots, so one pipeline over them would fail on a Redis Cluster.)
    pub async fn last_commands(&self, ids: &[&str]) -> Result<Vec<Option<String>>> {
        self.each(ids.iter(), |id| {
            let mut c = self.conn.clone();
            async move { Ok(c.hget(keys::task(id), "cmd").await?) }
        })
        .await
    }

    /// Makes sure a task a command already started is indexed and looked at by
    /// the reaper now: the coordinator that applied the command may have died
    /// before indexing it or publishing its order. The reaper then re-offers an
    /// order no worker took, under the same epoch, and reschedules the rest.
    /// (Both index keys of a group share a hash tag: one slot, one pipeline.)
    pub async fn ensure_indexed(&self, id: &str, now: u64) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .sadd(keys::tasks_of(id), id)
            .ignore()
            .cmd("ZADD")
            .arg(keys::due_of(id))
            .arg("NX")
            .arg(now)
            .arg(id)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }
}
