//! A RabbitMQ cluster on this machine for the tests of issue 10
//! (docs/RELIABILITY.md, "RabbitMQ cluster"): [`RabbitCluster`] starts `n`
//! private [`RabbitNode`]s that share one Erlang cookie and joins them to the
//! first (`stop_app`, `join_cluster`, `start_app`), so quorum queues declared
//! afterwards get a member on every node. [`FailoverProducer`] is a producer
//! that, like a real one, moves to another node when its node goes away and
//! re-publishes what was not confirmed under the same message ids.
//!
//! Each node is a [`RabbitNode`] (own node name, ports, data and log
//! directories; the broker's own scripts, not the `/usr/sbin` wrappers), so
//! everything is killed when the cluster is dropped, on panic too.

use super::{port_answers, Producer, RabbitNode};
use crate::{poll, unique};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long the joined nodes get to show up as running members.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// A queue as the cluster reports it (`rabbitmqctl list_queues name type
/// members leader`).
#[derive(Clone, Debug, PartialEq)]
pub struct QueueInfo {
    /// `quorum`, `classic`, …
    pub kind: String,
    /// Nodes holding a replica (quorum queues).
    pub members: Vec<String>,
    /// The node of the current leader, if any.
    pub leader: Option<String>,
}

/// A client connection as the cluster reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionInfo {
    /// The client-provided connection name (`vodfleet-coordinator`, …).
    pub name: String,
    /// The AMQP port of the node it is connected to.
    pub port: u16,
}

/// `n` RabbitMQ nodes on this machine, clustered. Dropping it kills them all.
pub struct RabbitCluster {
    nodes: Vec<RabbitNode>,
}

impl RabbitCluster {
    /// Boots `n` nodes side by side (16–24 s each here), joins nodes 2..n to
    /// node 1 one after the other (8–12 s each), and returns once every node
    /// is a running member. Panics (killing what started) on any failure.
    pub fn start(n: usize) -> RabbitCluster {
        assert!(n >= 1, "a cluster has at least one node");
        let cookie = unique("VFCOOKIE").replace(['-', 'x'], "Q");
        let t0 = Instant::now();
        let booting: Vec<_> = (0..n)
            .map(|_| {
                let cookie = cookie.clone();
                std::thread::spawn(move || RabbitNode::start_with_cookie(&cookie))
            })
            .collect();
        let mut nodes = Vec::with_capacity(n);
        let mut failed = None;
        for b in booting {
            match b.join() {
                Ok(node) => nodes.push(node),
                Err(panic) => failed = Some(panic),
            }
        }
        let mut cluster = RabbitCluster { nodes };
        if let Some(panic) = failed {
            drop(cluster);
            std::panic::resume_unwind(panic);
        }
        let booted = t0.elapsed();
        let seed = cluster.nodes[0].node().to_owned();
        for node in &cluster.nodes[1..] {
            for args in [
                &["stop_app"][..],
                &["join_cluster", &seed][..],
                &["start_app"][..],
            ] {
                if let Err(e) = node.ctl(args) {
                    panic!("{} {args:?}: {e}\n{}", node.node(), node.logs());
                }
            }
        }
        let formed = poll(FORM_TIMEOUT, || {
            let running = cluster.running_nodes().ok()?;
            (running.len() == n).then_some(())
        });
        if formed.is_none() {
            panic!(
                "the cluster did not show {n} running nodes within {FORM_TIMEOUT:?}: {:?}",
                cluster.running_nodes()
            );
        }
        eprintln!(
            "RabbitMQ cluster of {n}: booted in {booted:?}, formed in {:?} ({})",
            t0.elapsed(),
            cluster
                .nodes
                .iter()
                .map(|n| format!("{} :{}", n.node(), n.port()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        cluster
    }

    /// Every node's URL, comma-separated: the value of `VODFLEET_AMQP_URL`.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RabbitNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes, in the order of [`RabbitCluster::urls`].
    pub fn nodes(&self) -> &[RabbitNode] {
        &self.nodes
    }

    /// Node `i`, to kill or restart it.
    pub fn node_mut(&mut self, i: usize) -> &mut RabbitNode {
        &mut self.nodes[i]
    }

    /// The indexes of the nodes whose process runs.
    pub fn alive(&mut self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// `rabbitmqctl ARGS…` against the first node that runs.
    pub fn ctl(&mut self, args: &[&str]) -> Result<String, String> {
        let i = *self.alive().first().ok_or("no node of the cluster runs")?;
        self.nodes[i].ctl(args)
    }

    /// The cluster's running nodes, as one of them reports them.
    pub fn running_nodes(&mut self) -> Result<Vec<String>, String> {
        let out = self.ctl(&["cluster_status", "--formatter", "json"])?;
        let v = json_of(&out)?;
        Ok(strings(&v["running_nodes"]))
    }

    /// Every client connection of the cluster, with the port of its node.
    pub fn connections(&mut self) -> Result<Vec<ConnectionInfo>, String> {
        let out = self.ctl(&[
            "list_connections",
            "client_properties",
            "port",
            "--formatter",
            "json",
        ])?;
        parse_connections(&out)
    }

    /// The index of the node serving the connection named `name` (a
    /// process's `connection_name`), if there is exactly one such connection.
    pub fn node_serving(&mut self, name: &str) -> Result<Option<usize>, String> {
        let conns: Vec<ConnectionInfo> = self
            .connections()?
            .into_iter()
            .filter(|c| c.name == name)
            .collect();
        Ok(match conns.as_slice() {
            [one] => self.nodes.iter().position(|n| n.port() == one.port),
            _ => None,
        })
    }

    /// Every queue of the default vhost with its type, replicas and leader.
    pub fn queues(&mut self) -> Result<BTreeMap<String, QueueInfo>, String> {
        let out = self.ctl(&[
            "list_queues",
            "name",
            "type",
            "members",
            "leader",
            "--formatter",
            "json",
        ])?;
        parse_queues(&out)
    }

    /// Queue → (messages ready, messages unacknowledged), from a running node.
    pub fn queue_counts(&mut self) -> BTreeMap<String, (u64, u64)> {
        let i = *self.alive().first().expect("no node of the cluster runs");
        self.nodes[i].queue_counts()
    }
}

impl Drop for RabbitCluster {
    /// `kill -9` of every node (the data is thrown away; a clean stop of a
    /// clustered node takes seconds), then each node's own drop (logs, dirs).
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(pid) = node.pid() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
        }
    }
}

/// The JSON part of a `rabbitmqctl … --formatter json` output (it may print
/// progress lines first).
fn json_of(text: &str) -> Result<Value, String> {
    let start = text
        .find(['[', '{'])
        .ok_or_else(|| format!("no JSON in {text:?}"))?;
    serde_json::from_str(text[start..].trim())
        .map_err(|e| format!("rabbitmqctl output is not JSON ({e}): {text}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A field of a table that RabbitMQ prints either as an object or (3.x) as
/// `[[name, type, value], …]`.
fn table_field<'a>(table: &'a Value, key: &str) -> Option<&'a Value> {
    match table {
        Value::Object(m) => m.get(key),
        Value::Array(items) => items
            .iter()
            .find(|t| t[0].as_str() == Some(key))
            .map(|t| &t[2]),
        _ => None,
    }
}

/// `list_connections client_properties port` (JSON) → connections.
fn parse_connections(text: &str) -> Result<Vec<ConnectionInfo>, String> {
    let v = json_of(text)?;
    Ok(v.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|c| {
            let name = table_field(&c["client_properties"], "connection_name")?
                .as_str()?
                .to_owned();
            let port = c["port"].as_u64()? as u16;
            Some(ConnectionInfo { name, port })
        })
        .collect())
}

/// `list_queues name type members leader` (JSON) → queue name → info.
fn parse_queues(text: &str) -> Result<BTreeMap<String, QueueInfo>, String> {
    let v = json_of(text)?;
    Ok(v.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|q| {
            let name = q["name"].as_str()?.to_owned();
            let info = QueueInfo {
                kind: q["type"].as_str().unwrap_or_default().to_owned(),
                members: strings(&q["members"]),
                leader: q["leader"]
                    .as_str()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            };
            Some((name, info))
        })
        .collect())
}

/// A producer of a cluster: connected to one node; when that node goes away
/// it connects to the next node whose port answers and re-publishes, under
/// the same message ids, every command it got no confirm for.
pub struct FailoverProducer {
    urls: Vec<String>,
    ports: Vec<u16>,
    at: usize,
    producer: Producer,
    /// How many times it moved to another node.
    pub failovers: usize,
}

impl FailoverProducer {
    /// Connected to node `at` of `cluster`.
    pub fn connect(cluster: &RabbitCluster, at: usize) -> FailoverProducer {
        let urls: Vec<String> = cluster.nodes().iter().map(RabbitNode::url).collect();
        let ports = cluster.nodes().iter().map(RabbitNode::port).collect();
        let producer = Producer::connect(&urls[at]);
        FailoverProducer {
            urls,
            ports,
            at,
            producer,
            failovers: 0,
        }
    }

    /// The index of the node it is connected to.
    pub fn node(&self) -> usize {
        self.at
    }

    /// The producer of the current connection (dead letters, requests…).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Moves to the next node after the current one whose AMQP port answers.
    fn fail_over(&mut self) {
        let n = self.urls.len();
        let next = (1..=n)
            .map(|k| (self.at + k) % n)
            .find(|&i| port_answers(self.ports[i]))
            .expect("no node of the cluster answers");
        self.producer = Producer::connect(&self.urls[next]);
        if next != self.at {
            self.failovers += 1;
        }
        self.at = next;
    }

    /// Publishes every `(body, message_id)` with confirms; returns the result
    /// of each (see [`Producer::publish_batch`]). No failover.
    pub fn publish_batch(
        &self,
        batch: &[(Vec<u8>, String)],
        timeout: Duration,
    ) -> Vec<Result<(), String>> {
        self.producer.publish_batch(batch, timeout)
    }

    /// Publishes `msgs` until each is confirmed, failing over to another node
    /// whenever the connection is gone or a whole round got no confirm
    /// (bounded by `within`). Returns how many publishes it took beyond one each.
    pub fn publish_until_confirmed(
        &mut self,
        msgs: Vec<(Vec<u8>, String)>,
        within: Duration,
    ) -> usize {
        let deadline = Instant::now() + within;
        let mut todo = msgs;
        let mut extra = 0;
        let mut last_error: Option<String> = None;
        while !todo.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} commands never confirmed within {within:?} (node {}; last error: {last_error:?})",
                todo.len(),
                self.at
            );
            if let Some(e) = &last_error {
                extra += todo.len();
                std::thread::sleep(Duration::from_millis(250));
                if !self.producer.is_connected() || e.starts_with("round:") {
                    eprintln!("producer: leaving node {} ({e})", self.at);
                    self.fail_over();
                }
            }
            let results = self.producer.publish_batch(&todo, Duration::from_secs(10));
            let sent = todo.len();
            let mut failed = Vec::new();
            let mut error = None;
            for (m, r) in todo.into_iter().zip(results) {
                if let Err(e) = r {
                    error.get_or_insert(e);
                    failed.push(m);
                }
            }
            // Nothing confirmed at all: this node cannot take publishes now.
            last_error = error.map(|e| {
                if failed.len() == sent {
                    format!("round: {e}")
                } else {
                    e
                }
            });
            todo = failed;
        }
        extra
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_connections_of_either_table_format() {
        let v3 = "Listing connections ...\n[{\"client_properties\":[[\"product\",\"longstr\",\"lapin\"],\
            [\"connection_name\",\"longstr\",\"vodfleet-coordinator\"]],\"port\":5673}]";
        assert_eq!(
            parse_connections(v3).unwrap(),
            vec![ConnectionInfo {
                name: "vodfleet-coordinator".into(),
                port: 5673
            }]
        );
        let obj = "[{\"client_properties\":{\"connection_name\":\"p\"},\"port\":1},\
            {\"client_properties\":{},\"port\":2}]";
        assert_eq!(parse_connections(obj).unwrap().len(), 1);
    }

    #[test]
    fn parses_quorum_queue_members() {
        let out = "Timeout: 60.0 seconds ...\n[{\"name\":\"q\",\"type\":\"quorum\",\
            \"members\":[\"a@localhost\",\"b@localhost\",\"c@localhost\"],\"leader\":\"b@localhost\"},\
            {\"name\":\"c\",\"type\":\"classic\",\"members\":\"\",\"leader\":\"\"}]";
        let q = parse_queues(out).unwrap();
        assert_eq!(q["q"].kind, "quorum");
        assert_eq!(q["q"].members.len(), 3);
        assert_eq!(q["q"].leader.as_deref(), Some("b@localhost"));
        assert!(q["c"].members.is_empty() && q["c"].leader.is_none());
    }
}
