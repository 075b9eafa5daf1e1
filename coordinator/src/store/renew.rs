//! Renewing the leases of one heartbeat together (docs/design/fleet.md
//! "Heartbeat"): the renew scripts go out as one pipeline per Redis master
//! (all of them on one Redis), and the deadline index is moved with one
//! `ZADD` per index group, instead of a request per task.
//!
//! Why: on a Redis Cluster the client sends each command on its own through
//! its routing task, and each master reads it with its own syscall; one
//! pipeline per master costs the coordinator and the masters about what one
//! Redis costs (docs/CAPACITY.md). A pipeline may hold keys of several slots
//! as long as one master holds them all; which master does is read from
//! `CLUSTER SLOTS` ([`super::slots`]). A group whose pipeline is refused (a
//! slot moved: MOVED, ASK) is renewed task by task through [`Store::renew`],
//! which follows redirects; a script the master has not loaded is loaded and
//! the pipeline sent again; a master that does not answer (failing over)
//! fails the heartbeat, which the caller retries (`lease::with_retry`) as it
//! did before pipelines. Renewing twice is harmless: the script writes the
//! same values.

use super::scripts::RENEW;
use super::slots::{slot, SlotMap};
use super::transition::Renewal;
use super::{json, Conn, Result, Store};
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{ErrorKind, Value};
use std::collections::HashMap;
use std::time::Duration;
use vodfleet_proto::fleet::{keys, DestinationState, TaskBeat};
use vodfleet_proto::Position;

/// How old the slot map may get before a failed pipeline has it read again.
const SLOT_MAP_REFRESH: Duration = Duration::from_secs(1);

/// What the renew script answered: the renewal, and the deadline to write
/// into the index (0: the entry is far enough ahead already).
fn parse_reply(r: &str, now: u64, ttl: u64) -> (Renewal, u64) {
    match r.split_once(':') {
        Some(("renewed", next)) => (Renewal::Renewed, next.parse().unwrap_or(now + ttl)),
        _ if r == "unknown" => (Renewal::Unknown, 0),
        _ => (Renewal::Revoked, 0),
    }
}

/// Whether `e` says the master did not answer (rather than refused).
fn unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// The renew script's call for one task, by its hash (`EVALSHA`): the same
/// for one task alone and in a pipeline.
fn renew_cmd(
    id: &str,
    epoch: u64,
    worker: &str,
    now: u64,
    ttl: u64,
    position: &Position,
    dests: &[DestinationState],
) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(RENEW.get_hash())
        .arg(1)
        .arg(keys::task(id))
        .arg(epoch)
        .arg(worker)
        .arg(now)
        .arg(ttl)
        .arg(json(position))
        .arg(json(&dests));
    cmd
}

impl Store {
    /// Renews one task's lease (from `worker`'s heartbeat) and writes its next
    /// deadline when the script says so.
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
        let cmd = renew_cmd(id, epoch, worker, now, ttl, position, dests);
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

    /// Renews every lease in `beats` (one heartbeat of `worker`), in order.
    pub async fn renew_all(
        &self,
        beats: &[TaskBeat],
        worker: &str,
        now: u64,
        ttl: u64,
    ) -> Result<Vec<Renewal>> {
        let groups = self.by_master(
            beats
                .iter()
                .enumerate()
                .map(|(i, b)| (slot(keys::task(&b.task_id).as_bytes()), i)),
        );
        let replies = self
            .each(groups.iter(), |group| {
                self.renew_group(beats, group, worker, now, ttl)
            })
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
        let groups = self.by_master(zadds);
        self.each(groups, |group| self.send_group(group)).await?;
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or(Renewal::Revoked))
            .collect())
    }

    /// Splits `items` by the master that holds each one's slot: one group on
    /// a single Redis; on a cluster, slots the map does not cover (not read
    /// yet) make a group of their own, which the masters will refuse in part
    /// and which then goes one by one.
    fn by_master<T>(&self, items: impl IntoIterator<Item = (u16, T)>) -> Vec<Vec<(u16, T)>> {
        let map = self.slots.read().unwrap_or_else(|p| p.into_inner());
        let mut groups: HashMap<&str, Vec<(u16, T)>> = HashMap::new();
        for (s, item) in items {
            let master = match &self.conn {
                Conn::Single(_) => "",
                Conn::Cluster(_) => map.master(s).unwrap_or(""),
            };
            groups.entry(master).or_default().push((s, item));
        }
        groups.into_values().collect()
    }

    /// Sends commands of one master as one pipeline; one by one if the
    /// master refuses it (a slot moved).
    async fn send_group(&self, group: Vec<(u16, redis::Cmd)>) -> Result<()> {
        let Some(&(first, _)) = group.first() else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        for (_, cmd) in &group {
            pipe.add_command(cmd.clone());
        }
        match self.send(&pipe, group.len(), first).await {
            Ok(_) => Ok(()),
            Err(e) if unreachable(&e) => Err(e.into()),
            Err(_) => {
                self.refresh_slots().await;
                self.each(group, |(_, cmd)| {
                    let mut c = self.conn.clone();
                    async move {
                        let _: () = cmd.query_async(&mut c).await?;
                        Ok(())
                    }
                })
                .await
                .map(drop)
            }
        }
    }

    /// Renews the tasks `group` (`(slot, index into beats)`, all on one
    /// master) as one pipeline; task by task if that fails. Returns each
    /// task's renewal and the deadline still to write (0: none).
    async fn renew_group(
        &self,
        beats: &[TaskBeat],
        group: &[(u16, usize)],
        worker: &str,
        now: u64,
        ttl: u64,
    ) -> Result<Vec<(Renewal, u64)>> {
        let mut pipe = redis::pipe();
        for &(_, i) in group {
            let b = &beats[i];
            pipe.add_command(renew_cmd(
                &b.task_id,
                b.epoch,
                worker,
                now,
                ttl,
                &b.position,
                &b.destinations,
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
            return Ok(replies.iter().map(|r| parse_reply(r, now, ttl)).collect());
        }
        // One by one, each its own request, up to 64 at once: redirects
        // (MOVED, ASK) followed, scripts loaded.
        self.one_by_one.inc_by(group.len() as u64);
        self.refresh_slots().await;
        self.each(group.iter(), |&(_, i)| {
            let b = &beats[i];
            async move {
                let renewal = self
                    .renew(
                        &b.task_id,
                        b.epoch,
                        worker,
                        now,
                        ttl,
                        &b.position,
                        &b.destinations,
                    )
                    .await?;
                Ok((renewal, 0))
            }
        })
        .await
    }

    /// Sends `pipe` (`count` commands) to the master holding `slot`.
    async fn send(
        &self,
        pipe: &redis::Pipeline,
        count: usize,
        slot: u16,
    ) -> redis::RedisResult<Vec<Value>> {
        match &self.conn {
            Conn::Single(c) => pipe.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                c.clone().route_pipeline(pipe, 0, count, route).await
            }
        }
    }

    /// Forgets the cluster's slot map, as before its first read: the next
    /// heartbeat's renewals go one by one, then the map is read again. For
    /// tests of that path; a stale map after a failover takes it by itself.
    #[doc(hidden)]
    pub fn forget_slot_map(&self) {
        *self.slots.write().unwrap_or_else(|p| p.into_inner()) = SlotMap::default();
    }

    /// Renewals that went one by one because their pipeline failed, since
    /// start: a counter for the coordinator's registry (shares its value).
    pub fn unpipelined(&self) -> prometheus::IntCounter {
        self.one_by_one.clone()
    }

    /// Reads the cluster's slot map again, unless it was read in the last second.
    pub(super) async fn refresh_slots(&self) {
        let Conn::Cluster(c) = &self.conn else { return };
        if !self
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .older_than(SLOT_MAP_REFRESH)
        {
            return;
        }
        let reply = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Value>(&mut c.clone())
            .await;
        match reply.ok().as_ref().and_then(SlotMap::parse) {
            Some(map) => *self.slots.write().unwrap_or_else(|p| p.into_inner()) = map,
            None => tracing::warn!("CLUSTER SLOTS unreadable; renewals go one by one until it is"),
        }
    }
}
