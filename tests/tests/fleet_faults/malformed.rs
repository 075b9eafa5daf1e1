//! Row 12: malformed media on a worker that also streams a good task. Each
//! malformed file is the only item of a task of its own (all on the one worker):
//! random bytes, an mp4 cut short without its `moov` (ffmpeg writes it last),
//! an mp4 cut short after its `moov` (the samples it indexes are missing), a
//! 0-byte file, and two crafted mp4s: a chunk table claiming a billion entries
//! (libavformat cannot allocate it) and sample durations of 2^31 ticks (46
//! hours between two pictures: the pacer would wait for ever). Each must fail
//! its item and its task with a clear reason (`file_failed` naming the kind,
//! the file and what is wrong, then `failed`). A VP9/Opus mp4 (codecs FLV
//! cannot carry) is transcoded to H.264/AAC and plays. Meanwhile the good
//! stream goes on untouched: one session at nginx, no frame missing, the
//! worker still up.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use vodfleet_tests::fleet::{read_counters, seed, Answer, CallbackReceiver, FleetOptions, GOP};
use vodfleet_tests::media::{ffmpeg, media_dir};
use vodfleet_tests::{poll, probe, unique, Fleet, Media, Pattern};

/// The byte offset of the first box `name` (4 letters) in an mp4 whose boxes
/// nest as `moov/trak/mdia/minf/stbl/…`; its payload starts 8 bytes later.
fn find_box(data: &[u8], name: &[u8; 4]) -> usize {
    const CONTAINERS: [&[u8; 4]; 5] = [b"moov", b"trak", b"mdia", b"minf", b"stbl"];
    fn walk(d: &[u8], from: usize, to: usize, name: &[u8; 4]) -> Option<usize> {
        let mut i = from;
        while i + 8 <= to {
            let size = u32::from_be_bytes(d[i..i + 4].try_into().ok()?) as usize;
            let kind: &[u8] = &d[i + 4..i + 8];
            if kind == name {
                return Some(i);
            }
            if CONTAINERS.iter().any(|c| &c[..] == kind) {
                if let Some(x) = walk(d, i + 8, i + size, name) {
                    return Some(x);
                }
            }
            if size < 8 {
                return None;
            }
            i += size;
        }
        None
    }
    walk(data, 0, data.len(), name).unwrap_or_else(|| panic!("no {name:?} box"))
}

/// `data` with the big-endian u32 at `at` replaced.
fn patched(data: &[u8], at: usize, v: u32) -> Vec<u8> {
    let mut d = data.to_vec();
    d[at..at + 4].copy_from_slice(&v.to_be_bytes());
    d
}

fn ffmpeg_to(args: &[&str], out: &Path) {
    let st = Command::new(ffmpeg())
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .arg(out)
        .status()
        .expect("run ffmpeg");
    assert!(st.success(), "ffmpeg {args:?}");
}

/// What a malformed file must lead to.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// `file_failed` and `failed`, naming the fault kind and saying what is wrong.
    Fails(&'static str, &'static str),
    /// Played after transcoding to codecs FLV carries (H.264, AAC).
    Transcoded,
}

/// (what, file name in the media root, what must happen).
fn malformed_files() -> Vec<(&'static str, String, Expect)> {
    let dir = media_dir();
    let name = |what: &str| unique(&format!("malformed-{what}")) + ".mp4";
    let mut out = Vec::new();
    let mut put = |what: &'static str, expect: Expect, bytes: Vec<u8>| {
        let n = name(what);
        fs::write(dir.join(&n), bytes).expect("write");
        out.push((what, n, expect));
    };
    let unreadable = Expect::Fails("bad_media", "cannot open");
    let fast = Media::mp4(4.0, "320x240", 25, 50, Pattern::TestSrc2);
    let fast_bytes = fast.bytes();
    put(
        "random",
        unreadable,
        (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    );
    put("empty", unreadable, Vec::new());
    // ffmpeg's default mp4 puts `moov` last: cut in half, there is none.
    let tail_moov = dir.join(name("tmp-tail"));
    ffmpeg_to(
        &["-i", fast.path.to_str().unwrap(), "-c", "copy"],
        &tail_moov,
    );
    let t = fs::read(&tail_moov).expect("read");
    let _ = fs::remove_file(&tail_moov);
    put("truncated", unreadable, t[..t.len() / 2].to_vec());
    put(
        "truncated-moov-first",
        Expect::Fails("bad_media", "cut short"),
        fast_bytes[..fast_bytes.len() / 2].to_vec(),
    );
    let vp9 = dir.join(name("tmp-vp9"));
    ffmpeg_to(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=320x240:r=25:d=3",
            "-f",
            "lavfi",
            "-i",
            "sine=d=3",
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-c:a",
            "libopus",
        ],
        &vp9,
    );
    let v = fs::read(&vp9).expect("read");
    let _ = fs::remove_file(&vp9);
    put("vp9-opus", Expect::Transcoded, v);
    // stco: version/flags, then the entry count.
    let stco = find_box(&fast_bytes, b"stco");
    put(
        "huge-stco",
        Expect::Fails("bad_media", "Cannot allocate memory"),
        patched(&fast_bytes, stco + 12, 0x3fff_ffff),
    );
    // stts: version/flags, entry count, then (sample count, sample delta).
    let stts = find_box(&fast_bytes, b"stts");
    put(
        "huge-delta",
        Expect::Fails("bad_media", "leap"),
        patched(&fast_bytes, stts + 20, 0x7fff_ffff),
    );
    out
}

/// Removes this run's files from the shared media directory (their names are unique).
struct Cleanup(Vec<std::path::PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = fs::remove_file(f);
        }
    }
}

#[test]
fn malformed_media_fails_its_own_task_and_the_worker_streams_on() {
    let files = malformed_files();
    let _cleanup = Cleanup(files.iter().map(|(_, f, _)| media_dir().join(f)).collect());
    let opts = FleetOptions {
        workers: 1,
        slots: 16,
        ..FleetOptions::default()
    };
    let fleet = Fleet::start(opts);
    let producer = fleet.producer();
    let live = fleet.start_live(&producer, Duration::from_millis(100));
    let t0 = Instant::now();
    let rx = CallbackReceiver::start(vec![], Answer::new(200, "ok"));
    let tasks: Vec<_> = files
        .iter()
        .map(|(what, file, kind)| {
            let mut t = fleet.new_task(&[], 1);
            t.src = vec![format!("vod://{file}")];
            producer.send(&seed::with_callback(t.start(1), &rx.url()));
            (what, file, kind, t)
        })
        .collect();
    let of = |id: &str, event: &str| -> Vec<serde_json::Value> {
        rx.events()
            .into_iter()
            .filter(|e| e["id"] == id && e["event"] == event)
            .collect()
    };
    let ended = poll(Duration::from_secs(60), || {
        tasks
            .iter()
            .all(|(.., t)| !of(&t.id, "failed").is_empty() || !of(&t.id, "finished").is_empty())
            .then_some(())
    });
    let ended_after = t0.elapsed();
    let mut report = String::new();
    for (what, _, _, t) in &tasks {
        let ff = of(&t.id, "file_failed");
        let failed = of(&t.id, "failed");
        report.push_str(&format!(
            "{what}: file_failed {:?}; failed {:?}; finished {}\n",
            ff.iter().map(|e| e["msg"].clone()).collect::<Vec<_>>(),
            failed.iter().map(|e| e["msg"].clone()).collect::<Vec<_>>(),
            of(&t.id, "finished").len()
        ));
    }
    eprintln!("{report}");
    assert!(
        ended.is_some(),
        "not every malformed task ended within 60 s:\n{report}\n{}",
        fleet.reports()
    );
    for (what, file, expect, t) in &tasks {
        assert!(!fleet.rtmp.is_publishing(t.key()), "{what} still publishes");
        let (kind, says) = match *expect {
            Expect::Transcoded => {
                assert_eq!(of(&t.id, "finished").len(), 1, "{what}: finished\n{report}");
                let rec = fleet.rtmp.record_path(t.key());
                assert_eq!(probe::video_info(&rec).codec, "h264", "{what}");
                assert_eq!(probe::audio_info(&rec).codec, "aac", "{what}");
                continue;
            }
            Expect::Fails(kind, says) => (kind, says),
        };
        let ff = of(&t.id, "file_failed");
        assert_eq!(ff.len(), 1, "{what}: one file_failed\n{report}");
        let msg = ff[0]["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(kind) && msg.contains(says) && msg.contains(file.as_str()),
            "{what}: the reason names the kind ({kind}), the file and says {says:?}: {msg:?}"
        );
        assert_eq!(
            of(&t.id, "failed").len(),
            1,
            "{what}: the task failed\n{report}"
        );
    }
    // The good stream never noticed.
    let mut w = fleet.workers.iter();
    let worker = w.next().expect("one worker");
    assert_eq!(worker.streams_active(), Some(1.0), "{}", fleet.reports());
    let sessions = live.watch.sessions();
    assert!(
        sessions.len() == 1 && !live.watch.absent_since(sessions[0].first_seen),
        "the good stream was interrupted: {}",
        live.watch.summary()
    );
    eprintln!(
        "good stream on air throughout {:?} of malformed tasks",
        t0.elapsed()
    );
    // A steady stretch after them, then stop. The last GOP before a stop may
    // lose the B-frames sent after their reference (decode order): not judged.
    let steady = poll(Duration::from_secs(10), || {
        (live.watch.samples().last()?.at > t0 + ended_after + Duration::from_secs(3)).then_some(())
    });
    assert!(steady.is_some());
    producer.send(&live.task.stop());
    fleet
        .rtmp
        .wait_unpublished(live.task.key(), Duration::from_secs(15));
    let frames = read_counters(&live.before);
    let judged = &frames[..frames.len().saturating_sub(GOP as usize)];
    let skips: Vec<(u32, u32)> = judged
        .windows(2)
        .filter(|p| p[1] != p[0] + 1)
        .map(|p| (p[0], p[1]))
        .collect();
    assert!(
        judged.len() > 100 && skips.is_empty(),
        "the good stream's frames: {} read, {} judged, jumps {skips:?}",
        frames.len(),
        judged.len()
    );
}
