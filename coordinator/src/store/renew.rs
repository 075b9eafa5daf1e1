//! Renewing the leases of one heartbeat together (docs/design/fleet.md
//! "Heartbeat"): the renew scripts go out as one pipeline per Redis master
//! (all of them on one Redis), and the deadline index is moved with one
//! `ZADD` per index group, instead of a request per task, and only on a
//! worker's aligned heartbeats ([`IndexMove`]), one in three by default.
//!
//! Why: on a Redis Cluster the client sends each command on its own through
//! its routing task, and each master reads it with its own syscall; one
//! pipeline per master ([`super::pipeline`]) costs far less (docs/CAPACITY.md).
//! A renewal pipeline refused (a slot moved) is renewed task by task through
//! [`Store::renew`], which follows redirects; a script the master has not
//! loaded is loaded and the pipeline sent again; a master that does not
//! answer (failing over) fails the heartbeat, which the caller retries
//! (`lease::with_retry`) as it did before pipelines. Renewing twice is
//! harmless: the script writes the same values.

use super::pipeline::unreachable;
use super::scripts::RENEW;
use super::slots::slot;
use super::transition::Renewal;
use super::{json, Result, Store};
use redis::ErrorKind;
use std::collections::HashMap;
use vodfleet_proto::fleet::{keys, DestinationState, TaskBeat};
use vodfleet_proto::Position;

/// What the renew script answered: the renewal, and the deadline to write
/// into the index (0: the entry is far enough ahead already).
fn parse_reply(r: &str, now: u64, ttl: u64) -> (Renewal, u64) {
    match r.split_once(':') {
        Some(("renewed", next)) => (Renewal::Renewed, next.parse().unwrap_or(now + ttl)),
        _ if r == "unknown" => (Renewal::Unknown, 0),
        _ => (Renewal::Revoked, 0),
    }
}

/// Whether a heartbeat moves its tasks' entries in the deadline index
/// (docs/design/fleet.md "Heartbeat"). Aligning the moves on whole heartbeats
/// makes two heartbeats in three need no `ZADD` at all, instead of every
/// heartbeat a few (one request per master on a cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexMove {
    /// One of a worker's aligned heartbeats: every entry less than 3/4 of the
    /// lease TTL ahead moves.
    Aligned,
    /// Any other heartbeat: only entries less than 1/4 of the TTL ahead move
    /// (an aligned heartbeat was lost or late), and new ones.
    Urgent,
}

/// What one heartbeat's renewals share.
struct Beat<'a> {
    /// The worker that sent it.
    worker: &'a str,
    /// When it is handled (ms since the epoch).
    now: u64,
    /// The lease TTL granted (ms).
    ttl: u64,
    /// Whether it moves the deadline index.
    index: IndexMove,
}

/// The renew script's call for one task, by its hash (`EVALSHA`): the same
/// for one task alone and in a pipeline.
fn renew_cmd(
    id: &str,
    epoch: u64,
    position: &Position,
    dests: &[DestinationState],
    beat: &Beat,
) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(RENEW.get_hash())
        .arg(1)
        .arg(keys::task(id))
        .arg(epoch)
        .arg(beat.worker)
        .arg(beat.now)
        .arg(beat.ttl)
        .arg(json(position))
        .arg(json(&dests))
        .arg(if beat.index == IndexMove::Aligned {
            "1"
        } else {
            "0"
        });
    cmd
}

impl Store {
    /// Renews one task's lease (from `worker`'s heartbeat) and writes its next
    /// deadline when the script says so, as on an aligned heartbeat.
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
        let beat = Beat {
            worker,
            now,
            ttl,
            index: IndexMove::Aligned,
        };
        let cmd = renew_cmd(id, epoch, position, dests, &beat);
        let mut c = self.conn.clone();
        let r: String = match cmd.query_async(&mut c).await {
            Err(e) if e.kind() == ErrorKind::NoScriptError => {
                RENEW.prepare_invoke().load_async(&mut c).await?;
                cmd.query_async(&mut c).await?
            }
            r => r?,
        };
        let (renewal, next) = parse_reply(&r, now, ttl);
        if next > 0 {
            self.schedule(id, next).await?;
        }
        Ok(renewal)
    }

    /// Renews every lease in `beats` (one heartbeat of `worker`), in order;
    /// `index` says whether this heartbeat is one that moves the index.
    pub async fn renew_all(
        &self,
        beats: &[TaskBeat],
        worker: &str,
        now: u64,
        ttl: u64,
        index: IndexMove,
    ) -> Result<Vec<Renewal>> {
        let beat = Beat {
            worker,
            now,
            ttl,
            index,
        };
        let groups = self.by_master(
            beats
                .iter()
                .enumerate()
                .map(|(i, b)| (slot(keys::task(&b.task_id).as_bytes()), i)),
        );
        let replies = self
            .each(groups.iter(), |group| self.renew_group(beats, group, &beat))
            .await?;
        let mut out: Vec<Option<Renewal>> = (0..beats.len()).map(|_| None).collect();
        let mut deadlines: HashMap<u32, Vec<(u64, &str)>> = HashMap::new();
        for (group, replies) in groups.iter().zip(replies) {
            for (&(_, i), (renewal, next)) in group.iter().zip(replies) {
                if next > 0 {
                    let id = beats[i].task_id.as_str();
                    deadlines
                        .entry(keys::group(id))
                        .or_default()
                        .push((next, id));
                }
                out[i] = Some(renewal);
            }
        }
        // One ZADD per index group (its members share the group's slot), and
        // those of one master in one pipeline.
        let zadds = deadlines.into_iter().map(|(g, entries)| {
            let key = keys::due_in(g);
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&key);
            for (at, id) in entries {
                cmd.arg(at).arg(id);
            }
            (slot(key.as_bytes()), cmd)
        });
        self.query_by_master(zadds.collect()).await?;
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or(Renewal::Revoked))
            .collect())
    }

    /// Renews the tasks `group` (`(slot, index into beats)`, all on one
    /// master) as one pipeline; task by task if that fails. Returns each
    /// task's renewal and the deadline still to write (0: none).
    async fn renew_group(
        &self,
        beats: &[TaskBeat],
        group: &[(u16, usize)],
        beat: &Beat<'_>,
    ) -> Result<Vec<(Renewal, u64)>> {
        let mut pipe = redis::pipe();
        for &(_, i) in group {
            let b = &beats[i];
            pipe.add_command(renew_cmd(
                &b.task_id,
                b.epoch,
                &b.position,
                &b.destinations,
                beat,
            ));
        }
        let first = group[0].0;
        let mut sent = self.send(&pipe, group.len(), first).await;
        if matches!(&sent, Err(e) if e.kind() == ErrorKind::NoScriptError) {
            // The script is not on this master yet (first use, a replica just
            // promoted, Redis restarted empty): load it everywhere, once more.
            let mut c = self.conn.clone();
            if RENEW.prepare_invoke().load_async(&mut c).await.is_ok() {
                sent = self.send(&pipe, group.len(), first).await;
            }
        }
        let values = match sent {
            // The master is away (a failover under way): renewing one by one
            // would only wait for it again; the caller retries the heartbeat.
            Err(e) if unreachable(&e) => {
                self.refresh_slots().await;
                return Err(e.into());
            }
            other => other.ok(),
        };
        let replies: Option<Vec<String>> = values.and_then(|values| {
            values
                .iter()
                .map(|v| redis::from_redis_value::<String>(v).ok())
                .collect::<Option<Vec<String>>>()
                .filter(|r| r.len() == group.len())
        });
        if let Some(replies) = replies {
            return Ok(replies
                .iter()
                .map(|r| parse_reply(r, beat.now, beat.ttl))
                .collect());
        }
        // One by one, each its own request, up to 64 at once: redirects
        // (MOVED, ASK) followed, scripts loaded, the index moved as on an
        // aligned heartbeat (more often, never less).
        self.one_by_one.inc_by(group.len() as u64);
        self.refresh_slots().await;
        self.each(group.iter(), |&(_, i)| {
            let b = &beats[i];
            async move {
                let renewal = self
                    .renew(
                        &b.task_id,
                        b.epoch,
                        beat.worker,
                        beat.now,
                        beat.ttl,
                        &b.position,
                        &b.destinations,
                    )
                    .await?;
                Ok((renewal, 0))
            }
        })
        .await
    }

    /// Renewals that went one by one because their pipeline failed, since
    /// start: a counter for the coordinator's registry (shares its value).
    pub fn unpipelined(&self) -> prometheus::IntCounter {
        self.one_by_one.clone()
    }
}
