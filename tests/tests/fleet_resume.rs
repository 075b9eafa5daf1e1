//! Issue 3 (a): a start published with a plain AMQP client puts media on the
//! RTMP server; terminate removes the publisher and leaves the 48 h resume
//! record; resume continues where it stopped, judged from the frame numbers
//! drawn into the media.

use std::time::Duration;
use vodfleet_proto::fleet::keys;
use vodfleet_tests::fleet::{FleetOptions, GOP};
use vodfleet_tests::{poll, Fleet};

#[test]
fn terminate_records_the_position_and_resume_continues_from_it() {
    let fleet = Fleet::start(FleetOptions::default());
    let producer = fleet.producer();
    let live = fleet.start_live(&producer, Duration::from_millis(100));
    let (id, key) = (live.task.id.clone(), live.task.key().to_owned());
    std::thread::sleep(Duration::from_secs(5));

    producer.send(&live.task.stop());
    fleet.rtmp.wait_unpublished(&key, Duration::from_secs(10));
    let record = keys::resume(&id);
    let ttl = poll(Duration::from_secs(5), || {
        let t = fleet.redis.ttl(&record);
        (t > 0).then_some(t)
    })
    .unwrap_or_else(|| panic!("no {record} in Redis after terminate\n{}", fleet.reports()));
    assert!(
        ttl > 172_700 && ttl <= 172_800,
        "{record} has TTL {ttl} s; the contract says 48 h (172800 s)"
    );
    // Stopped means stopped: nobody publishes until the resume.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !fleet.rtmp.is_publishing(&key),
        "the stream came back without a resume"
    );

    producer.send(&live.task.resume());
    fleet.rtmp.wait_publishing(&key, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    let (last, first) = fleet.stop_and_judge(&producer, &live, 2);
    eprintln!("stopped at frame {last}, resumed at frame {first} (GOP {GOP})");
    assert!(
        fleet.redis.ttl(&record) > 172_700,
        "the second terminate writes the resume record again"
    );
}
