//! One continuous timeline across items and loops (docs/design/timeline.md): three items
//! (two different mp4 files and an flv) played twice into two destinations on the
//! same nginx. Each destination must see one RTMP session whose recording lasts
//! exactly as long as everything that was played, with timestamps that only grow,
//! audio ending with video, and nothing a decoder complains about.

use serde_json::json;
use std::time::Duration;

use vodfleet_tests::worker::is_destination;
use vodfleet_tests::{unique, Container, Media, MediaSpec, Pattern, Recording, RtmpServer, Worker};

const FPS: f64 = 25.0;

#[test]
fn three_items_looped_twice_reach_two_destinations_as_one_session() {
    let a = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    let b = MediaSpec::new(Container::Mp4, 2.0, "640x360", 25, 25)
        .pattern(Pattern::SmpteBars)
        .tone(880)
        .generate();
    let c = MediaSpec::new(Container::Flv, 2.0, "640x360", 25, 25)
        .pattern(Pattern::TestSrc)
        .tone(660)
        .generate();
    let loops = 2.0;
    let want = loops * (a.video_secs() + b.video_secs() + c.video_secs());

    let rtmp = RtmpServer::start();
    let keys = [unique("playlist-k1"), unique("playlist-k2")];
    let task = json!({
        "id": unique("playlist"),
        "src": [{"url": a.vod_url()}, {"url": b.vod_url()}, {"url": c.vod_url()}],
        "forward": [{"url": rtmp.url(&keys[0])}, {"url": rtmp.url(&keys[1])}],
        "extendParam": {"loop": "2", "index": "1", "callBackFileInfo": "0"}
    });
    let mut w = Worker::play(task, &[]);
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    assert!(
        w.non_json_lines().is_empty(),
        "stdout lines that are not JSON events: {:?}",
        w.non_json_lines()
    );
    assert_eq!(w.events_named("task_finished").len(), 1, "{}", w.report());
    let items: Vec<(u64, u64)> = w
        .events_named("item_started")
        .iter()
        .map(|e| {
            (
                e["item"].as_u64().unwrap_or(99),
                e["loop"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(
        items,
        vec![(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)],
        "item_started (item, loop) sequence"
    );

    for index in [0u64, 1] {
        assert!(
            w.events().iter().any(|e| is_destination(e, index, "live")),
            "no destination event with state live for index {index}\n{}",
            w.report()
        );
    }
    assert!(
        w.events_named("progress").iter().any(|e| {
            e["destinations"]
                .as_array()
                .is_some_and(|d| d.len() == 2 && d.iter().all(|x| x["state"] == "live"))
        }),
        "no progress event showing both destinations live\n{}",
        w.report()
    );

    for key in &keys {
        let sessions = rtmp.finished_publish_sessions(key, Duration::from_secs(5));
        assert_eq!(
            sessions,
            1,
            "{key}: one RTMP session for the whole task, no reconnect between files\n{}",
            rtmp.access_log()
        );
        let rec = Recording::read(&rtmp.record_path(key));
        let got = rec.video_secs();
        assert!(
            (got - want).abs() <= 2.0 / FPS,
            "{key}: recorded video lasts {got:.3} s, the items add up to {want:.3} s ({})",
            rec.summary()
        );
        rec.assert_monotonic();
        rec.assert_decodes_cleanly();
        assert!(!rec.audio.is_empty(), "{key}: no audio recorded");
        let (v_end, a_end) = (
            vodfleet_tests::probe::end(&rec.video),
            vodfleet_tests::probe::end(&rec.audio),
        );
        assert!(
            (a_end - v_end).abs() <= 0.050,
            "{key}: audio ends at {a_end:.3} s, video at {v_end:.3} s ({})",
            rec.summary()
        );
    }
    for key in &keys {
        w.assert_not_printed(key);
    }
}
