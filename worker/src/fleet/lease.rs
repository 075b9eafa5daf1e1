//! The worker's side of the lease protocol (docs/design/fleet.md): which tasks
//! it may publish, and until when.
//!
//! Every task has a *fence*: the instant at which the worker must have stopped it
//! unless a renewal came. A renewal in the [`LeaseAck`] of heartbeat `seq` moves
//! the fence to *when that heartbeat was sent* + TTL − margin. The coordinator
//! counts its TTL from when it *received* the heartbeat, which is later, so the
//! worker always stops before the coordinator may issue the lease again: two
//! workers never publish one task at once.
//!
//! Pure bookkeeping on [`tokio::time::Instant`]: tested with paused time.
//!
//! [`LeaseAck`]: vodfleet_proto::fleet::ToWorker::LeaseAck

use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

/// How many recent heartbeats an ack may still refer to.
const REMEMBERED_BEATS: usize = 64;

pub struct Leases {
    /// TTL − margin: how long after a heartbeat was sent its renewal lasts.
    valid_for: Duration,
    /// The least of a lease that must be left to start an order: one heartbeat
    /// interval, so that a renewal can come back before the fence.
    start_within: Duration,
    /// Recent heartbeats: `seq` and when it was sent.
    sent: VecDeque<(u64, Instant)>,
    /// When the newest heartbeat that got an answer was sent (at first: when
    /// this bookkeeping began).
    answered: Instant,
    tasks: HashMap<String, Lease>,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    epoch: u64,
    fence_at: Instant,
}

/// What an ack asks of the worker besides renewals.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    /// Stop these at once: the coordinator no longer confirms their epoch.
    pub revoked: Vec<(String, u64)>,
    /// The coordinator does not know these (Redis came back empty): send a Reclaim.
    pub reclaim: Vec<(String, u64)>,
}

impl Leases {
    pub fn new(ttl: Duration, margin: Duration, heartbeat: Duration) -> Leases {
        Leases {
            valid_for: ttl.saturating_sub(margin),
            start_within: heartbeat,
            sent: VecDeque::new(),
            answered: Instant::now(),
            tasks: HashMap::new(),
        }
    }

    /// Takes the lease of a work order that was issued `age` ago (by the
    /// coordinator's clock, as far as ours can tell). It lasts as long as the
    /// coordinator's own count: TTL − margin from the issue. Returns `false`, and
    /// takes nothing, when that time has already passed (the coordinator may
    /// have issued the task again, so starting it could make two publishers), or
    /// when less than a heartbeat of it is left (the task would only fence
    /// itself; the coordinator offers the order again when the lease runs out).
    pub fn take(&mut self, task: &str, epoch: u64, age: Duration, now: Instant) -> bool {
        let Some(left) = self.left(age) else {
            return false;
        };
        self.tasks.insert(
            task.to_owned(),
            Lease {
                epoch,
                fence_at: now + left,
            },
        );
        true
    }

    /// Whether an order issued `age` ago may still start ([`Leases::take`]'s rule).
    pub fn startable(&self, age: Duration) -> bool {
        self.left(age).is_some()
    }

    /// What is left of a lease issued `age` ago, if more than a heartbeat.
    fn left(&self, age: Duration) -> Option<Duration> {
        self.valid_for
            .checked_sub(age)
            .filter(|d| *d > self.start_within)
    }

    /// Heartbeat `seq` was sent at `at`.
    pub fn beat_sent(&mut self, seq: u64, at: Instant) {
        if self.sent.len() == REMEMBERED_BEATS {
            self.sent.pop_front();
        }
        self.sent.push_back((seq, at));
    }

    /// Applies the coordinator's answer to heartbeat `seq`. Entries whose epoch is
    /// not the one this worker holds are ignored (they are about an older lease).
    /// Revoked tasks are forgotten here; the caller stops them.
    pub fn ack(
        &mut self,
        seq: u64,
        renewed: &[(String, u64)],
        revoked: &[(String, u64)],
        unknown: &[(String, u64)],
    ) -> Verdict {
        let mut verdict = Verdict::default();
        for (task, epoch) in revoked {
            if self.holds(task, *epoch) {
                self.tasks.remove(task);
                verdict.revoked.push((task.clone(), *epoch));
            }
        }
        // An ack for a heartbeat we no longer remember renews nothing: its renewal
        // would have run out long ago anyway.
        let Some(&(_, sent_at)) = self.sent.iter().find(|(s, _)| *s == seq) else {
            return verdict;
        };
        self.answered = self.answered.max(sent_at);
        let until = sent_at + self.valid_for;
        for (task, epoch) in renewed.iter().chain(unknown) {
            if let Some(l) = self.tasks.get_mut(task).filter(|l| l.epoch == *epoch) {
                l.fence_at = l.fence_at.max(until);
            }
        }
        for (task, epoch) in unknown {
            if self.holds(task, *epoch) {
                verdict.reclaim.push((task.clone(), *epoch));
            }
        }
        verdict
    }

    /// How long ago the newest answered heartbeat was sent: more than a
    /// heartbeat or two means answers stopped coming (the link, or the
    /// coordinators' side of it, is broken).
    pub fn unanswered_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.answered)
    }

    /// Leases whose fence has passed at `now`, forgotten here; the caller stops them.
    pub fn expired(&mut self, now: Instant) -> Vec<(String, u64)> {
        let gone: Vec<(String, u64)> = self
            .tasks
            .iter()
            .filter(|(_, l)| l.fence_at <= now)
            .map(|(t, l)| (t.clone(), l.epoch))
            .collect();
        for (t, _) in &gone {
            self.tasks.remove(t);
        }
        gone
    }

    /// The task ended or was stopped: its lease is no longer held.
    pub fn release(&mut self, task: &str, epoch: u64) {
        if self.holds(task, epoch) {
            self.tasks.remove(task);
        }
    }

    pub fn holds(&self, task: &str, epoch: u64) -> bool {
        self.tasks.get(task).is_some_and(|l| l.epoch == epoch)
    }

    /// When the lease of `task` runs out, if it is held.
    #[cfg(test)]
    pub fn fence_at(&self, task: &str) -> Option<Instant> {
        self.tasks.get(task).map(|l| l.fence_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const TTL: Duration = Duration::from_millis(3000);
    const MARGIN: Duration = Duration::from_millis(500);
    const BEAT: Duration = Duration::from_millis(1000);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn t(task: &str, epoch: u64) -> Vec<(String, u64)> {
        vec![(task.to_owned(), epoch)]
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_lease_runs_from_the_issue_and_stale_orders_are_refused() {
        let mut l = Leases::new(TTL, MARGIN, BEAT);
        let t0 = Instant::now();
        assert!(l.take("a", 1, ms(300), t0));
        assert_eq!(
            l.fence_at("a"),
            Some(t0 + ms(2200)),
            "3000 − 500 − 300 ms of queueing"
        );
        assert!(
            !l.take("b", 1, ms(2500), t0),
            "issued 2.5 s ago: the coordinator may re-issue it any moment"
        );
        assert!(!l.holds("b", 1));
        assert!(
            !l.take("c", 1, ms(1600), t0),
            "900 ms left, less than a heartbeat: it would only fence itself"
        );
        assert!(!l.holds("c", 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_counts_from_when_the_heartbeat_was_sent() {
        let mut l = Leases::new(TTL, MARGIN, BEAT);
        assert!(l.take("a", 7, Duration::ZERO, Instant::now()));
        advance(ms(1000)).await;
        let sent = Instant::now();
        l.beat_sent(1, sent);
        // The ack takes 800 ms to come back: that time is not added.
        advance(ms(800)).await;
        let v = l.ack(1, &t("a", 7), &[], &[]);
        assert_eq!(v, Verdict::default());
        assert_eq!(l.fence_at("a"), Some(sent + ms(2500)));
        // Nothing renews it again: it expires exactly there, not a moment earlier.
        advance(ms(1699)).await;
        assert!(l.expired(Instant::now()).is_empty());
        advance(ms(1)).await;
        assert_eq!(l.expired(Instant::now()), t("a", 7));
        assert!(!l.holds("a", 7), "an expired lease is forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn unanswered_time_counts_from_the_newest_answered_heartbeat() {
        let mut l = Leases::new(TTL, MARGIN, BEAT);
        advance(ms(700)).await;
        assert_eq!(
            l.unanswered_for(Instant::now()),
            ms(700),
            "nothing answered yet"
        );
        let first = Instant::now();
        l.beat_sent(1, first);
        advance(ms(1000)).await;
        l.beat_sent(2, Instant::now());
        advance(ms(300)).await;
        l.ack(1, &[], &[], &[]);
        assert_eq!(l.unanswered_for(Instant::now()), ms(1300));
        // A late answer to an older heartbeat does not move it back.
        l.ack(2, &[], &[], &[]);
        l.ack(1, &[], &[], &[]);
        assert_eq!(l.unanswered_for(Instant::now()), ms(300));
        advance(ms(5000)).await;
        assert_eq!(l.unanswered_for(Instant::now()), ms(5300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_ack_of_an_older_heartbeat_never_shortens_the_lease() {
        let mut l = Leases::new(TTL, MARGIN, BEAT);
        l.take("a", 1, Duration::ZERO, Instant::now());
        let first = Instant::now();
        l.beat_sent(1, first);
        advance(ms(2000)).await;
        let second = Instant::now();
        l.beat_sent(2, second);
        l.ack(2, &t("a", 1), &[], &[]);
        l.ack(1, &t("a", 1), &[], &[]);
        assert_eq!(l.fence_at("a"), Some(second + ms(2500)));
    }

    #[tokio::test(start_paused = true)]
    async fn acks_about_another_epoch_or_a_forgotten_heartbeat_change_nothing() {
        let mut l = Leases::new(TTL, MARGIN, BEAT);
        let t0 = Instant::now();
        l.take("a", 5, Duration::ZERO, t0);
        for seq in 1..=(REMEMBERED_BEATS as u64 + 1) {
            l.beat_sent(seq, Instant::now());
            advance(ms(10)).await;
        }
        l.ack(1, &t("a", 5), &[], &[]);
        assert_eq!(l.fence_at("a"), Some(t0 + ms(2500)), "seq 1 is forgotten");
        l.ack(2, &t("a", 4), &[], &[]);
        assert_eq!(l.fence_at("a"), Some(t0 + ms(2500)), "epoch 4 is not ours");
        let v = l.ack(2, &[], &t("a", 4), &[]);
        assert!(
            v.revoked.is_empty() && l.holds("a", 5),
            "revoking epoch 4 leaves epoch 5"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn revoked_tasks_are_returned_and_forgotten() {
        let mut l = Leases::new(TTL, MARGIN, BEAT);
        l.take("a", 2, Duration::ZERO, Instant::now());
        l.take("b", 3, Duration::ZERO, Instant::now());
        l.beat_sent(9, Instant::now());
        let v = l.ack(9, &t("b", 3), &t("a", 2), &[]);
        assert_eq!(v.revoked, t("a", 2));
        assert!(!l.holds("a", 2));
        assert!(l.holds("b", 3));
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_tasks_are_renewed_and_reclaimed() {
        let mut l = Leases::new(TTL, MARGIN, BEAT);
        l.take("a", 2, Duration::ZERO, Instant::now());
        advance(ms(2000)).await;
        let sent = Instant::now();
        l.beat_sent(4, sent);
        let v = l.ack(4, &[], &[], &t("a", 2));
        assert_eq!(v.reclaim, t("a", 2));
        assert_eq!(l.fence_at("a"), Some(sent + ms(2500)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_cut_off_from_its_coordinator_stops_before_the_lease_is_reissued() {
        // The coordinator renews on receipt: lease_until = received + TTL.
        let mut l = Leases::new(TTL, MARGIN, BEAT);
        l.take("a", 1, Duration::ZERO, Instant::now());
        let mut coordinator_lease_until = Instant::now() + TTL;
        let mut fenced_at = None;
        for seq in 1..=20u64 {
            advance(ms(1000)).await; // heartbeat interval
            let sent = Instant::now();
            l.beat_sent(seq, sent);
            if seq <= 5 {
                // Delivered after 300 ms, acked after 200 more.
                coordinator_lease_until = sent + ms(300) + TTL;
                advance(ms(500)).await;
                l.ack(seq, &t("a", 1), &[], &[]);
            }
            if let Some((task, _)) = l.expired(Instant::now()).pop() {
                assert_eq!(task, "a");
                fenced_at.get_or_insert(Instant::now());
            }
        }
        let fenced_at = fenced_at.expect("the worker fenced itself");
        assert!(
            fenced_at < coordinator_lease_until,
            "stopped {:?} before the coordinator could re-issue",
            coordinator_lease_until - fenced_at
        );
    }
}
