//! Bad source input (issue 8): a malformed m3u8, an HLS playlist whose segment
//! is corrupt, and random bytes named `.mp4`, all served over HTTP, each fail
//! their own item with an error naming the item, its source and what is wrong,
//! while the task goes on to its good item on the same publish session.

use serde_json::json;
use std::time::Duration;
use vodfleet_tests::{unique, HttpServer, Media, Pattern, Recording, RtmpServer, Worker};

/// Bytes no demuxer takes for media (a fixed pseudo-random sequence, so a
/// failure reproduces).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn malformed_playlists_corrupt_segments_and_random_mp4s_fail_only_their_item() {
    let good = Media::mp4(2.0, "640x360", 25, 25, Pattern::TestSrc2);
    let dir = tempfile::tempdir().unwrap();
    let put = |name: &str, body: &[u8]| std::fs::write(dir.path().join(name), body).unwrap();
    // Not a playlist at all: no #EXTM3U, a tag with a broken attribute list.
    put(
        "broken.m3u8",
        b"#EXT-X-VERSION:three\n#EXTINF:abc,\n\x00\x01garbage\n",
    );
    // A well-formed media playlist whose only segment is not MPEG-TS.
    put(
        "corrupt.m3u8",
        b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg0.ts\n#EXT-X-ENDLIST\n",
    );
    put("seg0.ts", &noise(200_000));
    put("random.mp4", &noise(300_000));
    put("good.mp4", &good.bytes());
    let http = HttpServer::directory(dir.path(), None);

    let rtmp = RtmpServer::start();
    let key = unique("bad-input");
    let task = json!({
        "id": unique("bad-input"),
        "src": [
            {"url": http.url("/broken.m3u8")},
            {"url": http.url("/corrupt.m3u8")},
            {"url": http.url("/random.mp4")},
            {"url": http.url("/good.mp4")}
        ],
        "forward": [{"url": rtmp.url(&key)}],
        "extendParam": {"loop": "1"}
    });
    let mut w = Worker::play(task, &[]);
    let status = w.wait_exit(Duration::from_secs(90));
    assert_eq!(
        status.code(),
        Some(0),
        "the good item plays and the task finishes\n{}",
        w.report()
    );
    let failed = w.events_named("item_failed");
    let errors: Vec<(u64, String)> = failed
        .iter()
        .map(|e| {
            (
                e["item"].as_u64().unwrap_or(99),
                e["error"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errors.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 1, 2],
        "the three bad items fail, in order: {errors:?}\n{}",
        w.report()
    );
    for (item, file) in [
        (0usize, "broken.m3u8"),
        (1, "corrupt.m3u8"),
        (2, "random.mp4"),
    ] {
        let e = &errors[item].1;
        assert!(
            e.contains(&format!("item {item}")) && e.contains(file),
            "item {item}'s error names the item and its source: {e}"
        );
    }
    assert!(
        errors[0].1.to_lowercase().contains("playlist"),
        "the malformed m3u8 says its playlist is what is wrong: {}",
        errors[0].1
    );
    assert_eq!(
        w.events_named("item_started").len(),
        1,
        "only the good item went on air\n{}",
        w.report()
    );
    rtmp.assert_one_session(&key);
    let rec = Recording::read(&rtmp.record_path(&key));
    assert!(
        (rec.video_secs() - 2.0).abs() < 0.2,
        "the good item whole: {}",
        rec.summary()
    );
    rec.assert_decodes_cleanly();
}
