//! Row 6: RabbitMQ down for 60 s with a 30 s lease (`scripts/soak/faults.sh broker-down`).
//! Must hold: every process is ready again within 30 s of the broker's return
//! (each worker's exclusive control queue declared again), and the stream
//! never stopped: workers renew their leases over the coordinators' HTTP API
//! while the broker is away (docs/design/fleet.md, "Broker outage"). The
//! shorter run in the test command is `broker_outage`.

use std::time::{Duration, Instant};
use vodfleet_tests::fleet::FleetOptions;
use vodfleet_tests::{poll, Fleet};

const LEASE_TTL_MS: u64 = 30_000;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[test]
#[ignore = "soak: scripts/soak/faults.sh broker-down"]
fn soak_broker_down_for_60_s() {
    let down_for = Duration::from_secs(
        std::env::var("VODFLEET_SOAK_DOWN_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    );
    let mut fleet = Fleet::start_private(FleetOptions::default().lease_ttl_ms(LEASE_TTL_MS));
    let producer = fleet.producer();
    let live = fleet.start_live(&producer, Duration::from_millis(100));
    drop(producer);
    std::thread::sleep(Duration::from_secs(5));

    let down = Instant::now();
    fleet.rabbit().stop();
    // The outage itself: a fixed length is the fault, not an assertion.
    std::thread::sleep(down_for.saturating_sub(down.elapsed()));
    fleet.rabbit().start_again();
    let back = Instant::now();
    eprintln!("broker away {:.1} s", secs(back - down));

    // Every process ready again, each worker's control queue declared again.
    fleet.wait_all_ready(Duration::from_secs(60));
    let ready = back.elapsed();
    let ids: Vec<String> = fleet.workers.iter().map(|w| w.id().to_owned()).collect();
    let redeclared = poll(Duration::from_secs(30), || {
        let q = fleet.queue_arguments();
        ids.iter()
            .all(|id| q.contains_key(&format!("vodfleet.control.{id}")))
            .then_some(())
    });
    // The stream: when it stopped, and when it was back.
    let on_air = if live.watch.absent_since(down) {
        live.watch.wait_sessions(2, Duration::from_secs(90))
    } else {
        Some(live.watch.sessions())
    };
    let samples = live.watch.samples();
    let gap_from = samples
        .iter()
        .find(|s| s.at >= down && !s.stat_failed && s.publishers.is_empty())
        .map(|s| s.at);
    let gap_to = gap_from.and_then(|g| {
        samples
            .iter()
            .find(|s| s.at > g && !s.publishers.is_empty())
            .map(|s| s.at)
    });
    eprintln!(
        "RESULT row 6: ready again {:.1} s after the broker returned; control queues {}; \
         stream {}; {}",
        secs(ready),
        if redeclared.is_some() { "redeclared" } else { "missing" },
        match (gap_from, gap_to) {
            (None, _) => "never stopped".to_string(),
            (Some(f), Some(t)) => format!(
                "stopped {:.1} s into the outage, back {:.1} s after the broker returned ({:.1} s off air)",
                secs(f - down),
                secs(t.saturating_duration_since(back)),
                secs(t - f)
            ),
            (Some(f), None) => format!("stopped {:.1} s into the outage, not back", secs(f - down)),
        },
        live.watch.summary()
    );
    assert!(
        ready <= Duration::from_secs(30),
        "ready again after {ready:?}\n{}",
        fleet.reports()
    );
    assert!(redeclared.is_some(), "control queues not declared again");
    assert!(
        on_air.is_some(),
        "the stream is not back\n{}",
        fleet.reports()
    );
    assert_eq!(live.watch.max_publishers(), 1, "{}", live.watch.summary());
    assert!(
        gap_from.is_none(),
        "the stream stopped during the outage: {}",
        live.watch.summary()
    );
}
