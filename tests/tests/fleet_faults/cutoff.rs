//! Row 5: a worker cut off from RabbitMQ (a proxy that stops forwarding but
//! keeps its sockets open: silence, not a refusal) while its RTMP output still
//! flows. It must stop its own stream before the coordinator's lease in Redis
//! expires, and the stream must come back from another worker, never two
//! publishers at once. Its heartbeats over the coordinators' HTTP API are
//! refused meanwhile (the coordinators reach RabbitMQ: docs/design/fleet.md,
//! "Broker outage").

use std::net::SocketAddr;
use std::time::Duration;
use vodfleet_proto::fleet::keys;
use vodfleet_tests::fleet::{now_ms, publish_conflicts, publishers, CutProxy, FleetOptions};
use vodfleet_tests::{poll, Fleet};

const LEASE_TTL_MS: u64 = 6000;

/// `url` with its `host:port` replaced by `127.0.0.1:port`, and the address it named.
fn through(url: &str, port: u16) -> (String, SocketAddr) {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let (auth, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (cred, hostport) = auth.rsplit_once('@').map_or(("", auth), |(c, h)| (c, h));
    let target = hostport
        .replace("localhost", "127.0.0.1")
        .parse()
        .unwrap_or_else(|e| panic!("{hostport}: {e}"));
    let at = if cred.is_empty() { "" } else { "@" };
    (
        format!("{scheme}://{cred}{at}127.0.0.1:{port}/{path}"),
        target,
    )
}

#[test]
fn a_worker_cut_off_from_the_broker_stops_its_stream_before_the_lease_expires() {
    let opts = FleetOptions {
        workers: 0,
        ..FleetOptions::default().lease_ttl_ms(LEASE_TTL_MS)
    };
    let mut fleet = Fleet::start(opts);
    let (_, target) = through(&fleet.amqp_url(), 0);
    let proxy = CutProxy::start(target);
    let (url, _) = through(&fleet.amqp_url(), proxy.port());
    let cut_off = fleet
        .add_worker_with(&[("VODFLEET_AMQP_URL", &url)])
        .id()
        .to_owned();
    let producer = fleet.producer();
    // The only worker yet: the task is surely the cut-off one's.
    let live = fleet.start_live(&producer, Duration::from_millis(100));
    let id = live.task.id.clone();
    let key = live.task.key().to_owned();
    let other = fleet.add_worker().id().to_owned();
    // A few renewals, so the coordinator holds a running lease for it.
    let running = poll(Duration::from_secs(10), || {
        let h = fleet.redis.hgetall(&keys::task(&id));
        (h.get("state").map(String::as_str) == Some("running")).then_some(h)
    })
    .unwrap_or_else(|| panic!("task never running in Redis\n{}", fleet.reports()));
    assert_eq!(running["worker"], cut_off);
    let epoch = running["epoch"].clone();
    std::thread::sleep(Duration::from_secs(3));
    let first = live.watch.sessions()[0].client;

    let cut_ms = now_ms();
    proxy.cut();
    // The moment nginx no longer has the cut-off worker's publisher, and what
    // Redis says about its lease at that moment.
    let (gone_ms, lease) = poll(Duration::from_millis(LEASE_TTL_MS + 5000), || {
        if publishers(&fleet.rtmp, &key).contains(&first) {
            return None;
        }
        let t = now_ms();
        Some((t, fleet.redis.hgetall(&keys::task(&id))))
    })
    .unwrap_or_else(|| {
        panic!(
            "the cut-off worker still publishes {} ms after the cut\n{}",
            now_ms() - cut_ms,
            fleet.reports()
        )
    });
    let lease_until: u64 = lease["lease_until"].parse().expect("lease_until");
    eprintln!(
        "cut → stopped at nginx: {} ms; lease in Redis expires {} ms after that (epoch {}, worker {})",
        gone_ms - cut_ms,
        lease_until as i64 - gone_ms as i64,
        lease["epoch"],
        lease["worker"]
    );
    assert!(
        lease["epoch"] == epoch && lease["worker"] == cut_off && lease_until > gone_ms,
        "the cut-off worker stopped at {gone_ms}, not before its lease expired ({lease:?})\n{}",
        fleet.reports()
    );
    // It stopped by fencing itself, not because something closed its socket.
    let fenced = fleet.worker(&cut_off).log();
    assert!(
        fenced.contains("self-fence"),
        "no self-fence in the cut-off worker's log\n{}",
        fleet.reports()
    );
    assert!(proxy.dropped() > 0, "nothing reached the cut proxy");
    // Its heartbeats went to the coordinators' HTTP API too, and were refused
    // there: the coordinators reach RabbitMQ, so this worker alone is cut off.
    let refused = fleet
        .worker(&cut_off)
        .metric("vodfleet_worker_http_heartbeats_total{outcome=\"refused\"}");
    assert!(
        refused.is_some_and(|n| n >= 1.0),
        "the cut-off worker's heartbeats were not refused over HTTP ({refused:?})\n{}",
        fleet.reports()
    );

    // The stream comes back from the other worker.
    let sessions = live
        .watch
        .wait_sessions(2, Duration::from_millis(LEASE_TTL_MS + 10_000))
        .unwrap_or_else(|| {
            panic!(
                "the stream did not resume elsewhere: {}\n{}",
                live.watch.summary(),
                fleet.reports()
            )
        });
    eprintln!(
        "stopped → live again from the other worker: {:?}",
        sessions[1]
            .first_seen
            .saturating_duration_since(sessions[0].last_seen)
    );
    assert_eq!(fleet.owner_of(&id, Duration::from_secs(10)), other);
    assert_eq!(
        fleet.worker(&cut_off).streams_active(),
        Some(0.0),
        "the cut-off worker runs a stream again"
    );
    producer.send(&live.task.stop());
    fleet.rtmp.wait_unpublished(&key, Duration::from_secs(15));
    assert_eq!(
        live.watch.max_publishers(),
        1,
        "two publishers at once: {}",
        live.watch.summary()
    );
    assert!(publish_conflicts(&fleet.rtmp, &key).is_empty());
    assert_eq!(
        fleet.rtmp.publish_sessions(&key),
        2,
        "{}",
        fleet.rtmp.access_log()
    );
}

#[test]
fn urls_are_rewritten_through_the_proxy() {
    let (u, t) = through("amqp://guest:guest@127.0.0.1:5672/vf-1", 9);
    assert_eq!(u, "amqp://guest:guest@127.0.0.1:9/vf-1");
    assert_eq!(t, "127.0.0.1:5672".parse().unwrap());
}
