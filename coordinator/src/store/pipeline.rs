//! Commands over many tasks, one pipeline per Redis master
//! (docs/design/fleet.md "Heartbeat").
//!
//! A pipeline may hold keys of several slots as long as one master holds
//! them all. Which master does is read from `CLUSTER SLOTS`
//! ([`super::slots`]) at start and again after a pipeline is refused; each
//! pipeline is routed by one of its slots, so the cluster client keeps its
//! own connections and map. On one Redis everything is one pipeline. A
//! pipeline refused (MOVED, ASK: a slot moved) goes one by one, each command
//! routed and redirected by the client; a master that does not answer fails
//! the call, which its caller retries.

use super::slots::SlotMap;
use super::{Conn, Result, Store};
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Value};
use std::collections::HashMap;
use std::time::Duration;

/// How old the slot map may get before a refused pipeline has it read again.
const SLOT_MAP_REFRESH: Duration = Duration::from_secs(1);

/// Whether `e` says the master did not answer (rather than refused).
pub(super) fn unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

impl Store {
    /// Splits `items` by the master that holds each one's slot: one group on
    /// a single Redis; on a cluster, slots the map does not cover (not read
    /// yet) make a group of their own, which the masters will refuse in part
    /// and which then goes one by one.
    pub(super) fn by_master<T>(
        &self,
        items: impl IntoIterator<Item = (u16, T)>,
    ) -> Vec<Vec<(u16, T)>> {
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

    /// Runs `cmds` (each with its key's slot), one pipeline per master, and
    /// returns their replies in the order given.
    pub(super) async fn query_by_master(&self, cmds: Vec<(u16, Cmd)>) -> Result<Vec<Value>> {
        let n = cmds.len();
        let groups = self.by_master(cmds.into_iter().enumerate().map(|(i, (s, c))| (s, (i, c))));
        let replies = self.each(groups, |group| self.query_group(group)).await?;
        let mut out = vec![Value::Nil; n];
        for (i, v) in replies.into_iter().flatten() {
            out[i] = v;
        }
        Ok(out)
    }

    /// One master's commands as one pipeline; one by one if it is refused.
    async fn query_group(&self, group: Vec<(u16, (usize, Cmd))>) -> Result<Vec<(usize, Value)>> {
        let Some(&(first, _)) = group.first() else {
            return Ok(Vec::new());
        };
        let mut pipe = redis::pipe();
        for (_, (_, cmd)) in &group {
            pipe.add_command(cmd.clone());
        }
        match self.send(&pipe, group.len(), first).await {
            Ok(values) if values.len() == group.len() => {
                Ok(group.iter().map(|(_, (i, _))| *i).zip(values).collect())
            }
            Err(e) if unreachable(&e) => Err(e.into()),
            _ => {
                self.refresh_slots().await;
                self.each(group, |(_, (i, cmd))| {
                    let mut c = self.conn.clone();
                    async move { Ok((i, cmd.query_async(&mut c).await?)) }
                })
                .await
            }
        }
    }

    /// Sends `pipe` (`count` commands) to the master holding `slot`.
    pub(super) async fn send(
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
            None => tracing::warn!("CLUSTER SLOTS unreadable; pipelines go one by one until it is"),
        }
    }
}
