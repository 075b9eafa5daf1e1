//! Issue 3 (c): SIGTERM the worker running a task (scale-down): it hands the
//! task over with a gap of at most 2 s at the server, and exits 0.

use std::time::Duration;
use vodfleet_tests::fleet::FleetOptions;
use vodfleet_tests::Fleet;

const MAX_GAP: Duration = Duration::from_secs(2);

#[test]
fn sigterm_hands_the_task_over_within_two_seconds_and_exits_0() {
    let mut fleet = Fleet::start(FleetOptions::default());
    let producer = fleet.producer();
    let live = fleet.start_live(&producer, Duration::from_millis(50));
    std::thread::sleep(Duration::from_secs(4));
    let owner = fleet.owner_of(&live.task.id, Duration::from_secs(10));

    fleet.worker(&owner).sigterm();
    let sessions = live
        .watch
        .wait_sessions(2, Duration::from_secs(15))
        .unwrap_or_else(|| {
            panic!(
                "no new publisher after SIGTERM: {}\n{}",
                live.watch.summary(),
                fleet.reports()
            )
        });
    // Upper bound of the gap: last sample with the old publisher → first with the new.
    let gap = sessions[1]
        .first_seen
        .saturating_duration_since(sessions[0].last_seen);
    eprintln!("hand-off gap at the server: ≤ {gap:?}");
    assert!(
        gap <= MAX_GAP,
        "the stream was gone for up to {gap:?} during the hand-off (limit {MAX_GAP:?}): {}",
        live.watch.summary()
    );
    let status = fleet.worker(&owner).wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "the drained worker's exit status: {status}"
    );
    assert_ne!(
        fleet.owner_of(&live.task.id, Duration::from_secs(10)),
        owner
    );

    std::thread::sleep(Duration::from_secs(2));
    let (last, first) = fleet.stop_and_judge(&producer, &live, 2);
    eprintln!("released at frame {last}, went on at frame {first}");
}
