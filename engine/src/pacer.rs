//! Real-time pacing by DTS against a monotonic clock (docs/design/timeline.md#pacing).
//!
//! A packet is due when the wall clock has advanced as far past the origin as
//! its DTS has, less an initial burst: the first `burst` of media goes out at
//! once so players fill their buffer and start fast, then the stream runs at
//! real time, `burst` ahead. The pacer only computes deadlines; the caller waits
//! for them on its control inbox, so a stop command interrupts any wait and
//! nothing spins.

use std::time::{Duration, Instant};

/// The time source, behind a trait so pacing is tested without sleeping.
pub trait Clock: Send {
    fn now(&self) -> Instant;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

pub struct Pacer<C: Clock> {
    clock: C,
    burst: Duration,
    /// Wall-clock instant and output DTS (µs) that correspond.
    origin: Option<(Instant, i64)>,
    /// Falling further behind than this re-anchors instead of bursting to catch up.
    max_lag: Duration,
}

impl<C: Clock> Pacer<C> {
    pub fn new(clock: C, burst: Duration) -> Self {
        Pacer {
            clock,
            burst,
            origin: None,
            max_lag: Duration::from_secs(2),
        }
    }

    /// When the packet with output DTS `dts_us` should be sent.
    pub fn deadline(&mut self, dts_us: i64) -> Instant {
        let now = self.clock.now();
        let (t0, d0) = *self.origin.get_or_insert((now, dts_us));
        let ahead = Duration::from_micros((dts_us - d0).max(0) as u64).saturating_sub(self.burst);
        let due = t0 + ahead;
        if now > due + self.max_lag {
            // A stall (a slow download, a stopped disk) left us far behind. Sending
            // the backlog at once would flood the destinations; start afresh here.
            self.origin = Some((now - self.burst.min(now - t0), dts_us));
            return now;
        }
        due
    }

    /// When the packet with output DTS `dts_us` is due, without moving the
    /// origin; `None` before the first packet. A task waiting for its source
    /// covers the wait with the slate once this has passed by a grace
    /// (docs/design/sources.md, "Never dark").
    pub fn due(&self, dts_us: i64) -> Option<Instant> {
        let (t0, d0) = self.origin?;
        Some(t0 + Duration::from_micros((dts_us - d0).max(0) as u64).saturating_sub(self.burst))
    }

    /// How far behind real time the packet with `dts_us` is, if at all.
    pub fn lag(&self, dts_us: i64) -> Duration {
        match self.origin {
            None => Duration::ZERO,
            Some((t0, d0)) => {
                let due = t0
                    + Duration::from_micros((dts_us - d0).max(0) as u64).saturating_sub(self.burst);
                self.clock.now().saturating_duration_since(due)
            }
        }
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A clock the test moves by hand.
    #[derive(Clone)]
    struct FakeClock(Arc<Mutex<Instant>>);
    impl FakeClock {
        fn advance(&self, d: Duration) {
            *self.0.lock().unwrap() += d;
        }
    }
    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    fn pacer(burst_ms: u64) -> (Pacer<FakeClock>, FakeClock, Instant) {
        let start = Instant::now();
        let clock = FakeClock(Arc::new(Mutex::new(start)));
        (
            Pacer::new(clock.clone(), Duration::from_millis(burst_ms)),
            clock,
            start,
        )
    }

    #[test]
    fn the_burst_goes_out_at_once_then_real_time() {
        let (mut p, _clock, t0) = pacer(1000);
        assert_eq!(p.deadline(0), t0);
        assert_eq!(p.deadline(999_000), t0, "inside the burst: due now");
        assert_eq!(
            p.deadline(3_000_000),
            t0 + Duration::from_secs(2),
            "after it: real time, 1 s ahead"
        );
    }

    #[test]
    fn deadlines_follow_dts_not_arrival() {
        let (mut p, clock, t0) = pacer(0);
        p.deadline(10_000_000);
        clock.advance(Duration::from_millis(500));
        assert_eq!(p.deadline(11_000_000), t0 + Duration::from_secs(1));
        assert_eq!(p.lag(11_000_000), Duration::ZERO);
        clock.advance(Duration::from_millis(700));
        assert_eq!(p.lag(11_000_000), Duration::from_millis(200));
    }

    #[test]
    fn due_is_the_deadline_without_anchoring() {
        let (mut p, clock, t0) = pacer(1000);
        assert_eq!(p.due(0), None, "nothing sent: nothing is due");
        p.deadline(0);
        clock.advance(Duration::from_secs(30));
        assert_eq!(p.due(3_000_000), Some(t0 + Duration::from_secs(2)));
        assert_eq!(
            p.due(3_000_000),
            Some(t0 + Duration::from_secs(2)),
            "no re-anchoring"
        );
    }

    #[test]
    fn a_long_stall_re_anchors_instead_of_flooding() {
        let (mut p, clock, _t0) = pacer(0);
        p.deadline(0);
        clock.advance(Duration::from_secs(10));
        let now = p.now();
        assert_eq!(
            p.deadline(1_000_000),
            now,
            "9 s behind: send now and re-anchor"
        );
        assert_eq!(
            p.deadline(2_000_000),
            now + Duration::from_secs(1),
            "then real time again"
        );
    }
}
