//! `VODFLEET_AMQP_URL` as a list of RabbitMQ cluster nodes
//! (docs/design/fleet.md#configuration): one URL, or several separated by commas
//! (`amqp://u:p@rabbit-0:5672/%2f,amqp://u:p@rabbit-1:5672/%2f`). A comma inside
//! one URL (a password, say) must be percent-encoded as `%2C`.
//!
//! [`Bus::connect`](crate::Bus::connect) tries the nodes in turn. Each process
//! starts at a node of its own (derived from its pid and the clock), so that
//! connections, and with them the quorum queues' client-local work, spread over
//! the cluster; after a connection is made, the next round starts at the node
//! after it, so a process that lost its node tries the others first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The nodes of a configured AMQP string: split at commas, trimmed, empty
/// entries dropped. A string without a comma is one node, unchanged.
pub fn split(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// `url` as it may be printed: scheme, host, port and vhost, never the
/// credentials or query (vodfleet_proto::redact).
pub fn display(url: &str) -> String {
    vodfleet_proto::redact::source(url)
}

/// Where the next round of connection attempts starts, for every list of
/// nodes in this process (an offset taken modulo the list's length).
/// `usize::MAX`: not chosen yet.
static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// A start offset that differs between processes started together.
fn initial_offset() -> usize {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize)
        .unwrap_or(0);
    // Odd multiplier: pids that differ by one land on different offsets.
    (std::process::id() as usize).wrapping_mul(2_654_435_761) ^ (nanos >> 10)
}

/// The order in which to try `n` nodes this round, starting at `start`.
pub fn order(n: usize, start: usize) -> impl Iterator<Item = usize> {
    let first = if n == 0 { 0 } else { start % n };
    (0..n).map(move |i| (first + i) % n)
}

/// The start offset of this round (chosen once per process, then rotating).
pub fn round_start() -> usize {
    let cur = NEXT.load(Ordering::Relaxed);
    if cur != usize::MAX {
        return cur;
    }
    let init = initial_offset() % (usize::MAX / 2);
    match NEXT.compare_exchange(usize::MAX, init, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => init,
        Err(other) => other,
    }
}

/// Records that node `index` of a list of `n` took the connection: the next
/// round (after this connection is lost) starts at the node after it.
pub fn connected(index: usize, n: usize) {
    if n > 1 {
        NEXT.store((index + 1) % n, Ordering::Relaxed);
    }
}

/// Applies `f` to every node of `urls` and joins the results with commas.
pub fn map_each(urls: &str, f: impl Fn(&str) -> String) -> String {
    let nodes = split(urls);
    if nodes.len() <= 1 {
        return f(urls.trim());
    }
    nodes.into_iter().map(f).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_one_node() {
        assert_eq!(
            split("amqp://g:g@h:5672/%2f"),
            vec!["amqp://g:g@h:5672/%2f"]
        );
        assert!(split("").is_empty());
        assert!(split(" , ").is_empty());
    }

    #[test]
    fn a_list_is_split_and_trimmed() {
        assert_eq!(
            split("amqp://a:1/v, amqp://b:2/v ,,amqp://c:3/v,"),
            vec!["amqp://a:1/v", "amqp://b:2/v", "amqp://c:3/v"]
        );
    }

    #[test]
    fn every_node_is_tried_once_from_the_start() {
        assert_eq!(order(3, 0).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(order(3, 1).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(order(3, 5).collect::<Vec<_>>(), vec![2, 0, 1]);
        assert_eq!(order(1, 7).collect::<Vec<_>>(), vec![0]);
        assert_eq!(order(0, 7).count(), 0);
    }

    #[test]
    fn after_a_connection_the_next_round_starts_at_the_next_node() {
        // One test touches the process-wide offset, so the steps stay in order.
        connected(1, 3);
        assert_eq!(round_start(), 2);
        assert_eq!(order(3, round_start()).next(), Some(2));
        connected(2, 3);
        assert_eq!(order(3, round_start()).next(), Some(0));
        // A single URL does not move the offset.
        connected(0, 1);
        assert_eq!(round_start(), 0);
    }

    #[test]
    fn printed_nodes_carry_no_credentials() {
        let shown = display("amqp://user:s3cret@rabbit-1:5672/vh?heartbeat=5");
        assert_eq!(shown, "amqp://rabbit-1:5672/vh?…");
        assert!(!shown.contains("s3cret") && !shown.contains("user"));
    }

    #[test]
    fn map_each_applies_to_every_node() {
        assert_eq!(map_each("a, b", |u| format!("<{u}>")), "<a>,<b>");
        assert_eq!(map_each(" a ", |u| format!("<{u}>")), "<a>");
    }
}
