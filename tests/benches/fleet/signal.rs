//! 2 and 3. One SIGKILL or SIGTERM run: the signal, the new publisher, the judging.

use std::time::{Duration, Instant};
use vodfleet_tests::fleet::{now_ms, publish_conflicts, read_counters, Fleet, Live};
use vodfleet_tests::poll;

pub struct Judged {
    /// Last frame number before / first after (display order).
    pub last: Option<u32>,
    pub first: Option<u32>,
    pub max_publishers: usize,
    pub refused: usize,
    pub sessions: usize,
}

impl Judged {
    /// first − last: > 0 frames skipped, < 0 frames shown again.
    pub fn error(&self) -> Option<i64> {
        Some(self.first? as i64 - self.last? as i64)
    }
}

/// Stops `live` and judges what the server saw (like `Fleet::stop_and_judge`,
/// without panicking).
pub fn stop_and_judge(fleet: &Fleet, producer: &vodfleet_tests::Producer, live: &Live) -> Judged {
    let key = live.task.key();
    producer.send(&live.task.stop());
    let _ = poll(Duration::from_secs(15), || {
        (!fleet.rtmp.has_stream(key)).then_some(())
    });
    let sessions = poll(Duration::from_secs(5), || {
        let n = fleet.rtmp.publish_sessions(key);
        (n >= 2).then_some(n)
    })
    .unwrap_or_else(|| fleet.rtmp.publish_sessions(key));
    let before = read_counters(&live.before);
    let after_path = fleet.rtmp.record_path(key);
    let after = if after_path.exists() {
        read_counters(&after_path)
    } else {
        Vec::new()
    };
    Judged {
        last: before.last().copied(),
        first: after.first().copied(),
        max_publishers: live.watch.max_publishers(),
        refused: publish_conflicts(&fleet.rtmp, key).len(),
        sessions,
    }
}

pub struct Run {
    /// Lease time left (per Redis) and time since the last heartbeat the
    /// coordinator recorded, at the signal (ms).
    pub lease_left: Option<i64>,
    pub since_beat: Option<i64>,
    /// Signal → first sample with the new publisher.
    pub back: Option<Duration>,
    /// Last sample with the old publisher → first with the new.
    pub gap: Option<Duration>,
    /// Signal → last sample with the old publisher.
    pub old_gone: Option<Duration>,
    pub exit: Option<String>,
    pub exit_after: Option<Duration>,
    pub judged: Option<Judged>,
    pub note: String,
}

/// One SIGKILL (`kill` true) or SIGTERM run on `fleet`; leaves it with as many
/// live workers as before.
pub fn signal_run(fleet: &mut Fleet, kill: bool, settle: Duration, watch_every: Duration) -> Run {
    let producer = fleet.producer();
    let live = fleet.start_live(&producer, watch_every);
    std::thread::sleep(settle);
    let owner = fleet.owner_of(&live.task.id, Duration::from_secs(10));
    let hash = fleet
        .redis
        .hgetall(&vodfleet_proto::fleet::keys::task(&live.task.id));
    let field = |k: &str| hash.get(k).and_then(|v| v.parse::<u64>().ok());
    let t = Instant::now();
    let wall = now_ms();
    let lease_left = field("lease_until").map(|u| u as i64 - wall as i64);
    let since_beat = field("beat_ms").map(|b| wall as i64 - b as i64);
    if kill {
        fleet.worker(&owner).sigkill();
    } else {
        fleet.worker(&owner).sigterm();
    }
    let limit = Duration::from_millis(fleet.opts.lease_ttl_ms) + Duration::from_secs(15);
    let sessions = live.watch.wait_sessions(2, limit);
    let mut run = Run {
        lease_left,
        since_beat,
        back: None,
        gap: None,
        old_gone: None,
        exit: None,
        exit_after: None,
        judged: None,
        note: String::new(),
    };
    match &sessions {
        Some(s) => {
            run.back = Some(s[1].first_seen.saturating_duration_since(t));
            run.gap = Some(s[1].first_seen.saturating_duration_since(s[0].last_seen));
            run.old_gone = Some(s[0].last_seen.saturating_duration_since(t));
        }
        None => {
            run.note = format!(
                "no new publisher within {limit:?}: {}",
                live.watch.summary()
            )
        }
    }
    if !kill {
        let w = fleet.worker(&owner);
        let st = poll(Duration::from_secs(30), || {
            w.has_exited().then(|| w.wait_exit(Duration::from_secs(1)))
        });
        run.exit_after = st.map(|_| t.elapsed());
        run.exit = Some(match st {
            Some(st) => match st.code() {
                Some(c) => c.to_string(),
                None => format!("{st}"),
            },
            None => "still running after 30 s".into(),
        });
    }
    if sessions.is_some() {
        let new_owner = fleet.owner_of(&live.task.id, Duration::from_secs(10));
        if new_owner == owner {
            run.note.push_str("new owner is the signalled worker! ");
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    run.judged = Some(stop_and_judge(fleet, &producer, &live));
    drop(live);
    // Replace the signalled worker so the next run has two again.
    if let Some(i) = fleet.workers.iter().position(|w| w.id() == owner) {
        let mut w = fleet.workers.remove(i);
        if !w.has_exited() {
            w.sigkill();
        }
    }
    fleet.add_worker();
    run
}

/// How long run `r` streams before the signal: `base` ms plus 450 ms per run
/// (mod 2 s), so the signals land at different points of the 2 s GOP and of
/// the 2 s heartbeat period.
pub fn settle(base: u64, r: usize) -> Duration {
    Duration::from_millis(base + (r as u64 * 450) % 2000)
}
