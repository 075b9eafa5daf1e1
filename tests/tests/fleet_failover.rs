//! Issue 3 (b): SIGKILL the worker running a task: the stream is live again from
//! the other worker within lease TTL + 2 s, from within one GOP of where it was
//! (frame numbers in the media), and the server never sees two publishers.

use std::time::{Duration, Instant};
use vodfleet_tests::fleet::FleetOptions;
use vodfleet_tests::Fleet;

const LEASE_TTL_MS: u64 = 4000;

#[test]
fn sigkill_of_the_owner_fails_over_within_the_lease_and_one_gop() {
    let mut fleet = Fleet::start(FleetOptions::default().lease_ttl_ms(LEASE_TTL_MS));
    let producer = fleet.producer();
    let live = fleet.start_live(&producer, Duration::from_millis(100));
    // A few heartbeats, so the coordinator has a position to resume from.
    std::thread::sleep(Duration::from_secs(5));
    let owner = fleet.owner_of(&live.task.id, Duration::from_secs(10));

    let killed = Instant::now();
    fleet.worker(&owner).sigkill();
    let limit = Duration::from_millis(LEASE_TTL_MS) + Duration::from_secs(2);
    let sessions = live
        .watch
        .wait_sessions(2, limit + Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "no new publisher after the owner was killed: {}\n{}",
                live.watch.summary(),
                fleet.reports()
            )
        });
    let back = sessions[1].first_seen.saturating_duration_since(killed);
    eprintln!("SIGKILL → live again: {back:?} (limit {limit:?})");
    assert!(
        back <= limit,
        "live again {back:?} after the SIGKILL; the contract says within the lease TTL + 2 s ({limit:?})"
    );
    let new_owner = fleet.owner_of(&live.task.id, Duration::from_secs(10));
    assert_ne!(
        new_owner, owner,
        "the killed worker cannot be the new owner"
    );

    std::thread::sleep(Duration::from_secs(3));
    let (last, first) = fleet.stop_and_judge(&producer, &live, 2);
    eprintln!("killed at frame {last}, went on at frame {first}");
}
