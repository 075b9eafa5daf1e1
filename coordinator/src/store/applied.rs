//! Idempotency markers: which commands were applied, and to what.

use super::{Result, Store};
use redis::AsyncCommands;
use vodfleet_proto::fleet::keys;

/// Whether a command was seen before (idempotency marker).
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    New,
    /// Applied already: answer as before, change nothing.
    Done,
}

impl Store {
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
}
