//! Tasks and the common flows of the fleet tests: a [`Task`]'s bodies, a
//! [`Live`] task at nginx, and judging where a stream continued.

use super::{
    counter_media, counter_mp4, counter_runs, publish_conflicts, read_counters, seed,
    take_recording, Fleet, Producer, PublisherWatch,
};
use crate::media::Media;
use crate::{poll, unique};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Frame rate of the counter media the fleet tests use.
pub const FPS: u32 = 25;
/// Their keyframe interval: 2 s, a usual live GOP. "Within one GOP" is judged
/// against this.
pub const GOP: u32 = 50;

/// 90 s of counter media: a loop-0 task never wraps within a test.
pub fn long_counter() -> Media {
    counter_mp4(90.0, FPS, GOP)
}

/// Counter media of `secs` seconds whose frames carry `tag` (which file a
/// frame came from).
pub fn tagged_counter(secs: f64, tag: u32) -> Media {
    counter_media(secs, "320x240", FPS, GOP, tag)
}

/// One task of a test: its id, sources, and destinations on the fleet's nginx
/// (one stream key each).
#[derive(Clone, Debug)]
pub struct Task {
    pub id: String,
    pub keys: Vec<String>,
    pub src: Vec<String>,
    pub fwd: Vec<String>,
}

impl Task {
    /// The first destination's stream key.
    pub fn key(&self) -> &str {
        &self.keys[0]
    }

    /// cmd 1 with `extendParam.loop` = `loop_count`.
    pub fn start(&self, loop_count: u32) -> Value {
        seed::start(&self.id, &self.src, &self.fwd, loop_count)
    }

    /// cmd 2 for every destination.
    pub fn stop(&self) -> Value {
        seed::stop(&self.id, &self.fwd)
    }

    /// cmd 2 for the destinations at `indexes`.
    pub fn stop_some(&self, indexes: &[usize]) -> Value {
        let some: Vec<String> = indexes.iter().map(|&i| self.fwd[i].clone()).collect();
        seed::stop(&self.id, &some)
    }

    /// cmd 5 with the same sources and destinations.
    pub fn resume(&self) -> Value {
        seed::resume(&self.id, &self.src, &self.fwd)
    }

    /// cmd 3 with new sources.
    pub fn update(&self, src: &[&Media], wait_current: bool) -> Value {
        let src: Vec<String> = src.iter().map(|m| m.vod_url()).collect();
        seed::update(&self.id, &src, &self.fwd, wait_current)
    }
}

/// A task streaming at nginx: its first session's recording moved aside
/// (`before`) and its publishers watched.
pub struct Live {
    pub task: Task,
    pub before: PathBuf,
    pub watch: PublisherWatch,
    /// When the start command was sent.
    pub sent: Instant,
}

impl Fleet {
    /// A task of `media` into `destinations` new stream keys (unique ids).
    pub fn new_task(&self, media: &[&Media], destinations: usize) -> Task {
        let keys: Vec<String> = (0..destinations).map(|_| unique("key")).collect();
        Task {
            id: unique("task"),
            fwd: keys.iter().map(|k| self.rtmp_url(k)).collect(),
            keys,
            src: media.iter().map(|m| m.vod_url()).collect(),
        }
    }

    /// Starts a loop-0 task on [`long_counter`] through `producer`, waits until
    /// nginx has its publisher, moves that session's recording aside and starts
    /// watching `/stat` every `period`.
    pub fn start_live(&self, producer: &Producer, period: Duration) -> Live {
        let media = long_counter();
        let task = self.new_task(&[&media], 1);
        let sent = Instant::now();
        producer.send(&task.start(0));
        self.rtmp
            .wait_publishing(task.key(), Duration::from_secs(15));
        eprintln!("start command → publishing at nginx: {:?}", sent.elapsed());
        let before = take_recording(&self.rtmp, task.key(), "before");
        let watch = PublisherWatch::start(&self.rtmp, task.key(), period);
        Live {
            task,
            before,
            watch,
            sent,
        }
    }

    /// Stops `live` (cmd 2, all destinations), waits until nginx closed the
    /// stream, and judges what the server saw: never two publishers at once
    /// (`/stat` samples and nginx's refusals), `sessions` publish sessions in
    /// its access log, and the second session continuing within one [`GOP`] of
    /// where the first ended. Returns (last frame before, first frame after).
    pub fn stop_and_judge(&self, producer: &Producer, live: &Live, sessions: usize) -> (u32, u32) {
        let key = live.task.key();
        producer.send(&live.task.stop());
        self.rtmp.wait_unpublished(key, Duration::from_secs(15));
        assert_eq!(
            live.watch.max_publishers(),
            1,
            "two publishers at once: {}",
            live.watch.summary()
        );
        let refused = publish_conflicts(&self.rtmp, key);
        assert!(
            refused.is_empty(),
            "nginx refused a second publisher of the stream:\n{}",
            refused.join("\n")
        );
        let logged = poll(Duration::from_secs(5), || {
            let n = self.rtmp.publish_sessions(key);
            (n >= sessions).then_some(n)
        });
        assert_eq!(
            logged,
            Some(sessions),
            "publish sessions in nginx's access log\n{}",
            self.rtmp.access_log()
        );
        assert_continues(&live.before, &self.rtmp.record_path(key), GOP)
    }

    /// Waits until every coordinator and worker answers `/readyz` again.
    pub fn wait_all_ready(&mut self, timeout: Duration) {
        for c in &mut self.coordinators {
            c.wait_ready(timeout);
        }
        for w in &mut self.workers {
            w.wait_ready(timeout);
        }
    }
}

/// The last frame number of recording `before` and the first of `after`
/// (display order); panics unless they are within `gop` frames of each other.
pub fn assert_continues(before: &Path, after: &Path, gop: u32) -> (u32, u32) {
    let b = read_counters(before);
    let a = read_counters(after);
    let (Some(&last), Some(&first)) = (b.last(), a.first()) else {
        panic!(
            "no frames to compare: before {} frames, after {} frames",
            b.len(),
            a.len()
        );
    };
    eprintln!("before: {}\nafter: {}", counter_runs(&b), counter_runs(&a));
    assert!(
        first.abs_diff(last) <= gop,
        "the stream went on from frame {first} after ending at frame {last}: {} frames apart, more than one GOP ({gop})",
        first.abs_diff(last)
    );
    (last, first)
}
