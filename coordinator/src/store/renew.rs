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
//! `CLUSTER SLOTS` ([`super::slots`]). A group whose pipeline fails (a slot
//! moved, a master failing over, a script the node has not loaded) is renewed
//! task by task through [`Store::renew`], which follows redirects and loads
//! scripts. Renewing twice is harmless: the script writes the same values.

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
        // Tasks by master: indexes into `beats`.
        let mut by_master: HashMap<String, Vec<usize>> = HashMap::new();
        {
            let map = self.slots.read().unwrap_or_else(|p| p.into_inner());
            for (i, b) in beats.iter().enumerate() {
                let master = match &self.conn {
                    Conn::Single(_) => "",
                    // Not in the map (not read yet): a group of its own, sent by the client's routing.
                    Conn::Cluster(_) => map
                        .master(slot(keys::task(&b.task_id).as_bytes()))
                        .unwrap_or(""),
                };
                by_master.entry(master.to_owned()).or_default().push(i);
            }
        }
        let groups: Vec<Vec<usize>> = by_master.into_values().collect();
        let replies = self
            .each(groups.iter(), |group| {
                self.renew_group(beats, group, worker, now, ttl)
            })
            .await?;
        let mut out: Vec<Option<Renewal>> = (0..beats.len()).map(|_| None).collect();
        let mut deadlines: HashMap<u32, Vec<(u64, &str)>> = HashMap::new();
        for (group, replies) in groups.iter().zip(replies) {
            for (&i, (renewal, next)) in group.iter().zip(replies) {
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
        // One ZADD per index group: its members share the group's slot.
        self.each(deadlines, |(g, entries)| {
            let mut c = self.conn.clone();
            async move {
                let mut cmd = redis::cmd("ZADD");
                cmd.arg(keys::due_in(g));
                for (at, id) in entries {
                    cmd.arg(at).arg(id);
                }
                let _: () = cmd.query_async(&mut c).await?;
                Ok(())
            }
        })
        .await?;
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or(Renewal::Revoked))
            .collect())
    }

    /// Renews the tasks `group` (indexes into `beats`, all on one master) as
    /// one pipeline; task by task if that fails. Returns each task's renewal
    /// and the deadline still to write (0: none).
    async fn renew_group(
        &self,
        beats: &[TaskBeat],
        group: &[usize],
        worker: &str,
        now: u64,
        ttl: u64,
    ) -> Result<Vec<(Renewal, u64)>> {
        let mut pipe = redis::pipe();
        for &i in group {
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
        let first = slot(keys::task(&beats[group[0]].task_id).as_bytes());
        let mut sent = self.send(&pipe, group.len(), first).await;
        if matches!(&sent, Err(e) if e.kind() == ErrorKind::NoScriptError) {
            // The script is not on this master yet (first use, a replica just
            // promoted, Redis restarted empty): load it everywhere, once more.
            let mut c = self.conn.clone();
            if RENEW.prepare_invoke().load_async(&mut c).await.is_ok() {
                sent = self.send(&pipe, group.len(), first).await;
            }
        }
        let replies: Option<Vec<String>> = sent.ok().and_then(|values| {
            values
                .iter()
                .map(|v| redis::from_redis_value::<String>(v).ok())
                .collect::<Option<Vec<String>>>()
                .filter(|r| r.len() == group.len())
        });
        if let Some(replies) = replies {
            return Ok(replies.iter().map(|r| parse_reply(r, now, ttl)).collect());
        }
        // One by one: redirects followed, scripts loaded, failovers waited out.
        self.one_by_one.inc_by(group.len() as u64);
        self.refresh_slots().await;
        let mut out = Vec::with_capacity(group.len());
        for &i in group {
            let b = &beats[i];
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
            out.push((renewal, 0));
        }
        Ok(out)
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
