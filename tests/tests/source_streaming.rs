//! Streaming HTTP sources through the worker's shared cache (issue 8 item 1,
//! docs/design/sources.md): playback starts while the download goes on, an
//! mp4 whose `moov` follows `mdat` plays without being downloaded whole
//! first, tasks on one URL share one download, and a dropped connection is
//! resumed with `Range` without a gap on air. Judged by what a real
//! (throttled, byte-counting) HTTP server served and what nginx received.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vodfleet_tests::media::{ffmpeg, media_dir};
use vodfleet_tests::probe::max_dts_gap;
use vodfleet_tests::{
    poll, unique, Behavior, Container, HttpServer, Media, MediaSpec, Pattern, Recording,
    RtmpServer, Running, Worker,
};

const FPS: f64 = 25.0;

fn task(id: &str, url: &str, rtmp_url: &str) -> Value {
    json!({
        "id": unique(id),
        "src": [{"url": url}],
        "forward": [{"url": rtmp_url}],
        "extendParam": {"loop": "1"}
    })
}

/// Body bytes per second that serve `media` at `times` its own bitrate.
fn rate(media: &Media, times: f64) -> u64 {
    (media.len() as f64 / media.video_secs() * times) as u64
}

/// When nginx wrote the first media packet of `key` into its recording (the
/// file grows past its FLV header and metadata), polled every 25 ms.
fn first_packet_at(rtmp: &RtmpServer, key: &str, timeout: Duration) -> Option<Instant> {
    let path = rtmp.record_path(key);
    poll(timeout, || {
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        (len > 2048).then(Instant::now)
    })
}

/// Exit 0, no failed item, one publish session whose recording lasts as long
/// as `media` (within 2 frames), never goes back and decodes cleanly.
fn assert_played_whole(
    w: &mut Running,
    rtmp: &RtmpServer,
    key: &str,
    media_secs: f64,
) -> Recording {
    let status = w.wait_exit(Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    assert!(
        w.events_named("item_failed").is_empty(),
        "no item may fail\n{}",
        w.report()
    );
    rtmp.assert_one_session(key);
    let rec = Recording::read(&rtmp.record_path(key));
    let got = rec.video_secs();
    assert!(
        (got - media_secs).abs() <= 2.0 / FPS,
        "recorded video lasts {got:.3} s, the item lasts {media_secs:.3} s ({})",
        rec.summary()
    );
    rec.assert_monotonic();
    rec.assert_decodes_cleanly();
    w.assert_not_printed(key);
    rec
}

/// `media` remuxed with its `moov` after `mdat` (the ffmpeg CLI's default).
fn moov_at_end(media: &Media) -> PathBuf {
    let out = media_dir().join(format!("late-moov-{}", media.name));
    if !out.exists() {
        let tmp = media_dir().join(format!(
            ".late-moov-{}.{}.tmp.mp4",
            media.name,
            std::process::id()
        ));
        let ok = Command::new(ffmpeg())
            .args(["-v", "error", "-y", "-i"])
            .arg(&media.path)
            .args(["-c", "copy", "-f", "mp4"])
            .arg(&tmp)
            .status()
            .expect("run ffmpeg")
            .success();
        assert!(ok, "ffmpeg could not remux {}", media.path.display());
        std::fs::rename(&tmp, &out).expect("rename the remuxed file");
    }
    out
}

/// Byte offsets of the top-level `moov` and `mdat` boxes of an mp4.
fn box_offsets(path: &Path) -> (u64, u64) {
    let data = std::fs::read(path).unwrap();
    let (mut at, mut moov, mut mdat) = (0usize, None, None);
    while at + 8 <= data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let size = if size == 1 {
            u64::from_be_bytes(data[at + 8..at + 16].try_into().unwrap()) as usize
        } else {
            size
        };
        match &data[at + 4..at + 8] {
            b"moov" => moov = Some(at as u64),
            b"mdat" => mdat = Some(at as u64),
            _ => {}
        }
        if size < 8 {
            break;
        }
        at += size;
    }
    (moov.expect("a moov box"), mdat.expect("an mdat box"))
}

#[test]
fn a_faststart_mp4_at_2_5x_its_bitrate_is_on_air_within_a_second_of_its_first_byte() {
    let media = Media::mp4(40.0, "640x360", 25, 50, Pattern::TestSrc2);
    let server = HttpServer::throttled(&media.path, vec![], rate(&media, 2.5));
    let rtmp = RtmpServer::start();
    let key = unique("stream-fast");
    let mut w = Worker::play(
        task("stream-fast", &server.url("/media/a.mp4"), &rtmp.url(&key)),
        &[],
    );
    let on_air = first_packet_at(&rtmp, &key, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("nothing reached nginx\n{}", w.report()));
    let served_then = server.served_bytes();
    let first_byte = server.first_byte_at().expect("the server sent a byte");
    let delay = on_air.saturating_duration_since(first_byte);
    eprintln!(
        "first byte served -> first packet at nginx: {} ms; {served_then} of {} bytes served by then",
        delay.as_millis(),
        server.body_len()
    );
    assert!(
        delay <= Duration::from_secs(1),
        "on air {} ms after the first byte was served (at most 1000)\n{}",
        delay.as_millis(),
        w.report()
    );
    assert!(
        served_then < server.body_len() as u64 / 4,
        "playback must not wait for the download: {served_then} of {} bytes were served when it went on air",
        server.body_len()
    );
    assert_played_whole(&mut w, &rtmp, &key, media.video_secs());
    assert_eq!(server.request_count(), 1, "{:#?}", server.requests());
}

#[test]
fn an_mp4_with_its_moov_at_the_end_plays_while_it_downloads() {
    // Noise makes the encoder spend its bitrate: the mdat is megabytes long, so
    // reading the moov first takes a Range request.
    let media = MediaSpec::new(Container::Mp4, 12.0, "640x360", 25, 50)
        .noise()
        .generate();
    let late = moov_at_end(&media);
    let (moov, mdat) = box_offsets(&late);
    assert!(mdat < moov, "the remuxed file has its moov last");
    let len = std::fs::metadata(&late).unwrap().len();
    let server = HttpServer::throttled(&late, vec![], rate(&media, 2.5));
    let rtmp = RtmpServer::start();
    let key = unique("stream-late-moov");
    let mut w = Worker::play(
        task(
            "stream-late-moov",
            &server.url("/media/late.mp4"),
            &rtmp.url(&key),
        ),
        &[],
    );
    let on_air = first_packet_at(&rtmp, &key, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("nothing reached nginx\n{}", w.report()));
    let served_then = server.served_bytes();
    eprintln!(
        "on air {} ms after the first byte; {served_then} of {len} bytes served by then",
        on_air
            .saturating_duration_since(server.first_byte_at().unwrap())
            .as_millis()
    );
    assert!(
        served_then < len / 2,
        "on air after {served_then} of {len} bytes: the file was not downloaded whole first"
    );
    assert_played_whole(&mut w, &rtmp, &key, media.video_secs());
    let reqs = server.requests();
    let ranged: Vec<u64> = reqs
        .iter()
        .filter_map(|r| {
            r.range
                .as_deref()?
                .strip_prefix("bytes=")?
                .trim_end_matches('-')
                .parse()
                .ok()
        })
        .collect();
    assert!(
        ranged.iter().any(|&from| from >= mdat && from <= moov),
        "the moov (at byte {moov}) is asked for with a Range: {reqs:#?}"
    );
    let served = server.served_bytes();
    assert!(
        served as f64 <= len as f64 * 1.05,
        "{served} bytes served for a {len}-byte file"
    );
}

#[test]
fn three_tasks_on_one_url_make_one_download() {
    let media = Media::mp4(10.0, "640x360", 25, 50, Pattern::SmpteBars);
    let server = HttpServer::throttled(&media.path, vec![], rate(&media, 4.0));
    let url = server.url("/media/shared.mp4");
    let rtmp = RtmpServer::start();
    let keys: Vec<String> = (0..3).map(|i| unique(&format!("shared{i}"))).collect();
    let tasks: Vec<Value> = keys
        .iter()
        .map(|k| task("shared", &url, &rtmp.url(k)))
        .collect();
    let mut w = Worker::play_many(&tasks, &[]);
    let status = w.wait_exit(Duration::from_secs(120));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    assert_eq!(w.events_named("task_finished").len(), 3, "{}", w.report());
    for k in &keys {
        rtmp.assert_one_session(k);
        let rec = Recording::read(&rtmp.record_path(k));
        assert!(
            (rec.video_secs() - media.video_secs()).abs() <= 2.0 / FPS,
            "{}",
            rec.summary()
        );
        w.assert_not_printed(k);
    }
    let (served, len) = (server.served_bytes(), server.body_len() as u64);
    eprintln!(
        "{served} bytes served for three tasks on one {len}-byte file; requests: {:#?}",
        server.requests()
    );
    assert!(
        served as f64 <= len as f64 * 1.05,
        "three tasks on one URL make one download: {served} bytes served for a {len}-byte file"
    );
}

#[test]
fn a_connection_dropped_mid_file_resumes_with_range_and_plays_on_without_a_gap() {
    let media = Media::mp4(16.0, "640x360", 25, 50, Pattern::TestSrc);
    // Half the body, then the connection closes; the resumed request gets the rest.
    let server = HttpServer::throttled(
        &media.path,
        vec![Behavior::DropMidBody, Behavior::Ok],
        rate(&media, 2.5),
    );
    let rtmp = RtmpServer::start();
    let key = unique("stream-drop");
    let mut w = Worker::play(
        task("stream-drop", &server.url("/media/a.mp4"), &rtmp.url(&key)),
        &[("VODFLEET_RETRY_BACKOFF_MS", "200")],
    );
    let on_air = first_packet_at(&rtmp, &key, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("nothing reached nginx\n{}", w.report()));
    let rec = assert_played_whole(&mut w, &rtmp, &key, media.video_secs());
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "one cut transfer, one resumed: {reqs:#?}");
    assert!(
        on_air < reqs[1].at,
        "the connection dropped while the item was on air: on air {} ms, resumed request {} ms after the first request",
        on_air.saturating_duration_since(reqs[0].at).as_millis(),
        reqs[1].at.saturating_duration_since(reqs[0].at).as_millis()
    );
    let sent = reqs[0].body_sent;
    assert!(0 < sent && sent < server.body_len(), "{reqs:#?}");
    assert_eq!(
        reqs[1].range.as_deref(),
        Some(format!("bytes={sent}-").as_str()),
        "resumed at the first byte not received"
    );
    // Nothing missing on air: consecutive video frames stay one frame apart.
    let (gap, at) = max_dts_gap(&rec.video);
    assert!(
        gap <= 2.0 / FPS,
        "a {gap:.3} s hole in the video at {at:.3} s ({})",
        rec.summary()
    );
}

#[test]
fn a_download_failing_mid_item_fails_the_item_with_the_sources_own_error() {
    let media = Media::mp4(16.0, "640x360", 25, 50, Pattern::TestSrc2);
    // Half the body, the connection closes, and the resumed request gets a 404.
    let server = HttpServer::throttled(
        &media.path,
        vec![Behavior::DropMidBody, Behavior::Status(404)],
        rate(&media, 2.5),
    );
    let rtmp = RtmpServer::start();
    let key = unique("stream-fail");
    let mut w = Worker::play(
        task(
            "stream-fail",
            &server.url("/media/a.mp4?token=SECRET"),
            &rtmp.url(&key),
        ),
        &[("VODFLEET_RETRY_BACKOFF_MS", "200")],
    );
    let status = w.wait_exit(Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(1),
        "the only item failed\n{}",
        w.report()
    );
    let failed = w.events_named("item_failed");
    assert_eq!(failed.len(), 1, "{}", w.report());
    let error = failed[0]["error"].as_str().unwrap_or_default();
    eprintln!("the item's error: {error}");
    assert_eq!(
        failed[0]["error_kind"], "refused",
        "the source's fault: {error}"
    );
    for part in ["HTTP 404", "attempt 2 of 3", "reading byte", "/media/a.mp4"] {
        assert!(
            error.contains(part),
            "{part:?} missing from the item's error: {error}"
        );
    }
    w.assert_not_printed("SECRET");
    // Half the item went on air before the read failed.
    let rec = Recording::read(&rtmp.record_path(&key));
    assert!(
        rec.video_secs() > media.video_secs() / 4.0,
        "the item played until the bytes ran out: {}",
        rec.summary()
    );
}

#[test]
fn an_hls_playlist_plays_while_its_segments_download_once_for_three_tasks() {
    let media = Media::mp4(12.0, "640x360", 25, 25, Pattern::TestSrc2);
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new(ffmpeg())
        .args(["-v", "error", "-y", "-i"])
        .arg(&media.path)
        .args([
            "-c",
            "copy",
            "-f",
            "hls",
            "-hls_time",
            "1",
            "-hls_playlist_type",
            "vod",
        ])
        .arg("-hls_segment_filename")
        .arg(dir.path().join("seg%03d.ts"))
        .arg(dir.path().join("index.m3u8"))
        .status()
        .expect("run ffmpeg")
        .success();
    assert!(ok, "ffmpeg could not segment the file");
    let segments: Vec<String> = std::fs::read_to_string(dir.path().join("index.m3u8"))
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(".ts"))
        .map(|l| format!("/{l}"))
        .collect();
    assert!(segments.len() >= 10, "{segments:?}");
    // Each response paced at 2.5x the bitrate: about 5 s for every segment in turn.
    let server = HttpServer::directory(dir.path(), Some(rate(&media, 2.5)));
    let url = server.url("/index.m3u8");
    let rtmp = RtmpServer::start();
    let keys: Vec<String> = (0..3).map(|i| unique(&format!("hls{i}"))).collect();
    let tasks: Vec<Value> = keys
        .iter()
        .map(|k| task("hls", &url, &rtmp.url(k)))
        .collect();
    let mut w = Worker::play_many(&tasks, &[]);
    let on_air = first_packet_at(&rtmp, &keys[0], Duration::from_secs(30))
        .unwrap_or_else(|| panic!("nothing reached nginx\n{}", w.report()));
    let status = w.wait_exit(Duration::from_secs(90));
    assert_eq!(status.code(), Some(0), "worker failed\n{}", w.report());
    assert!(w.events_named("item_failed").is_empty(), "{}", w.report());
    let reqs = server.requests();
    let last = segments.last().unwrap();
    let last_at = reqs
        .iter()
        .find(|r| &r.target == last)
        .unwrap_or_else(|| panic!("{last} never asked for: {reqs:#?}"))
        .at;
    assert!(
        on_air < last_at,
        "on air before the last segment was asked for ({} ms before)",
        last_at.saturating_duration_since(on_air).as_millis()
    );
    for seg in &segments {
        let n = reqs.iter().filter(|r| &r.target == seg).count();
        assert_eq!(n, 1, "{seg} asked for {n} times by three tasks: {reqs:#?}");
    }
    for k in &keys {
        rtmp.assert_one_session(k);
        let rec = Recording::read(&rtmp.record_path(k));
        assert!(
            (rec.video_secs() - media.video_secs()).abs() <= 0.2,
            "{}",
            rec.summary()
        );
        rec.assert_decodes_cleanly();
    }
}

/// The media timestamp (ms) nginx last saw from the publisher of `key`, per `/stat`.
fn publisher_ts_ms(stat: &str, key: &str) -> Option<u64> {
    let at = stat.find(&format!("<name>{key}</name>"))?;
    let rest = &stat[at..];
    let stream = &rest[..rest.find("</stream>").unwrap_or(rest.len())];
    let p = stream.find("<publishing/>")?;
    let client = &stream[stream[..p].rfind("<client>")?..];
    let client = &client[..client.find("</client>")?];
    let t = client.find("<timestamp>")? + "<timestamp>".len();
    client[t..].split('<').next()?.trim().parse().ok()
}

#[test]
fn stalled_sources_do_not_hold_back_the_other_streams_of_their_shard() {
    // One shard for every task. Two streamed sources stall halfway for the
    // source timeout (10 s) just before playback reaches the stall, so their
    // demuxers wait for bytes on the shard's blocking pool for seconds; a
    // local file on the same shard must still go out in real time.
    let slow = Media::mp4(40.0, "640x360", 25, 50, Pattern::TestSrc2);
    let server = HttpServer::throttled(
        &slow.path,
        vec![Behavior::StallMidBody, Behavior::StallMidBody],
        rate(&slow, 1.25),
    );
    let local = Media::mp4(40.0, "640x360", 25, 50, Pattern::SmpteBars);
    let rtmp = RtmpServer::start();
    let mut tasks: Vec<Value> = (0..2)
        .map(|i| {
            let key = unique(&format!("stalled{i}"));
            task(
                "stalled",
                &server.url(&format!("/stalled{i}.mp4")),
                &rtmp.url(&key),
            )
        })
        .collect();
    let key = unique("healthy");
    tasks.push(task("healthy", &local.vod_url(), &rtmp.url(&key)));
    let w = Worker::play_many(&tasks, &[("VODFLEET_ENGINE_THREADS", "1")]);
    let first = poll(Duration::from_secs(30), || {
        publisher_ts_ms(&rtmp.stat(), &key).filter(|&ts| ts > 0)
    })
    .unwrap_or_else(|| panic!("the local file never went on air\n{}", w.report()));
    let (t0, ts0) = (Instant::now(), first);
    let mut worst = 0.0f64;
    // Past the stalls (the sources are halfway at about 16 s, resumed at about 26 s).
    while t0.elapsed() < Duration::from_secs(32) {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(ts) = publisher_ts_ms(&rtmp.stat(), &key) {
            let lag = t0.elapsed().as_secs_f64() - (ts.saturating_sub(ts0)) as f64 / 1000.0;
            worst = worst.max(lag);
        }
    }
    let resumed = server
        .requests()
        .iter()
        .filter(|r| r.range.is_some())
        .count();
    eprintln!("the local file's stream fell at most {worst:.3} s behind real time; {resumed} resumed requests");
    assert_eq!(
        resumed,
        2,
        "both stalled downloads were resumed: {:#?}",
        server.requests()
    );
    // A late read of the local file would be covered by a slate (task::cover).
    let covered: Vec<Value> = w
        .events_named("slate_started")
        .into_iter()
        .filter(|e| {
            e["task_id"]
                .as_str()
                .is_some_and(|t| t.starts_with("healthy"))
        })
        .collect();
    assert!(
        covered.is_empty(),
        "the local file's reads waited behind the stalled sources' (a slate covered them): {covered:?}"
    );
    assert!(
        worst < 1.0,
        "the local file's stream fell {worst:.3} s behind real time behind two stalled sources on its shard\n{}",
        w.report()
    );
}
