//! Start pacing: at most `VODFLEET_WORKER_START_RATE` orders started a second,
//! in bursts of as many (the worker's `StartPace`, worker/src/fleet/capacity.rs).

use std::time::Duration;
use tokio::time::Instant;

/// At most `per_sec` starts a second, bursts of as many (the worker's StartPace).
pub struct Pace {
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl Pace {
    /// Full bucket: `per_sec` starts at once, then `per_sec` a second.
    pub fn new(per_sec: u32) -> Pace {
        let per_sec = f64::from(per_sec.max(1));
        Pace {
            per_sec,
            tokens: per_sec,
            last: Instant::now(),
        }
    }

    /// Waits until one more start is allowed, and takes it.
    pub async fn take(&mut self) {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + refill).min(self.per_sec);
        self.last = now;
        if self.tokens < 1.0 {
            let wait = (1.0 - self.tokens) / self.per_sec;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            self.tokens = 1.0;
            self.last = Instant::now();
        }
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::Pace;
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn pace_allows_a_burst_then_the_rate() {
        let mut p = Pace::new(10);
        let t0 = Instant::now();
        for _ in 0..10 {
            p.take().await;
        }
        assert_eq!(t0.elapsed(), Duration::ZERO, "a burst of 10");
        p.take().await;
        assert_eq!(t0.elapsed(), Duration::from_millis(100), "then 10 a second");
    }
}
