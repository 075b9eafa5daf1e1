//! Worker messages from `vodfleet.events`, handled per worker
//! (docs/design/fleet.md, "Heartbeat"): each worker's messages in the order
//! they arrived, many workers at once, and a heartbeat still waiting when a
//! newer one of the same worker arrives is superseded by it.
//!
//! Why: one loop that took the messages of every worker one after another
//! could not keep up when a fleet grew by thousands of tasks at once (every
//! start asks its worker for an early heartbeat listing all its tasks): the
//! acks fell 5–13 s behind and about 20,000 leases expired while 10,000 tasks
//! were added to 10,000 (docs/CAPACITY.md, docs/BENCHMARKS.md "Fleet scale").

use crate::ctx::Ctx;
use crate::{intake, lease};
use futures_util::future::BoxFuture;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Semaphore;
use vodfleet_bus::lapin::message::Delivery;
use vodfleet_bus::lapin::options::BasicAckOptions;
use vodfleet_proto::fleet::WorkerMessage;

/// Workers whose messages are handled at the same time (not a thread count).
/// Their heartbeats' renewals share [`crate::lease::RENEWALS_IN_FLIGHT`]:
/// that, not this, bounds what one replica asks of Redis at once.
pub const AT_ONCE: usize = 64;

/// The events consumer's prefetch: how many deliveries a replica holds at
/// once, as before the inbox. It bounds what waits in an [`Inbox`] (only what
/// waits here can be superseded) and so the memory of a burst: about 14 KB a
/// heartbeat of 100 tasks, raw or parsed.
pub const PREFETCH: u16 = 256;

/// Whether an item makes an older one of the same key pointless to handle.
pub trait Supersede {
    fn supersedes(&self, older: &Self) -> bool;
}

type Handler<T> = Arc<dyn Fn(T) -> BoxFuture<'static, ()> + Send + Sync>;

/// Items queued by key (a worker id): one key's items are handled one at a
/// time in arrival order, up to `at_once` keys at the same time.
pub struct Inbox<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    /// Items not yet handled, by key. A key is present while a runner owns it
    /// (waiting for a permit or handling its items), and removed by that runner,
    /// under this lock, once nothing is left: an item is never stranded.
    waiting: Mutex<HashMap<String, VecDeque<T>>>,
    permits: Semaphore,
    handle: Handler<T>,
}

impl<T> Shared<T> {
    fn waiting(&self) -> MutexGuard<'_, HashMap<String, VecDeque<T>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Supersede + Send + 'static> Inbox<T> {
    /// An inbox whose items go to `handle`, `at_once` keys at a time.
    pub fn new<F>(at_once: usize, handle: F) -> Inbox<T>
    where
        F: Fn(T) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    {
        Inbox {
            shared: Arc::new(Shared {
                waiting: Mutex::new(HashMap::new()),
                permits: Semaphore::new(at_once.max(1)),
                handle: Arc::new(handle),
            }),
        }
    }

    /// Queues `item` behind the other items of `key`, and returns the waiting
    /// items it supersedes (taken out: the caller disposes of them). The one
    /// being handled is never superseded.
    pub fn push(&self, key: &str, item: T) -> Vec<T> {
        let mut waiting = self.shared.waiting();
        if let Some(queue) = waiting.get_mut(key) {
            let (gone, kept): (VecDeque<T>, VecDeque<T>) =
                queue.drain(..).partition(|old| item.supersedes(old));
            *queue = kept;
            // At the end, not in the old one's place: a message that came between
            // the two (a release, a reclaim) is still handled before it.
            queue.push_back(item);
            return gone.into();
        }
        waiting.insert(key.to_owned(), VecDeque::from([item]));
        drop(waiting);
        tokio::spawn(run(self.shared.clone(), key.to_owned()));
        Vec::new()
    }

    /// Items waiting (not yet handled), over every key.
    pub fn waiting(&self) -> usize {
        self.shared.waiting().values().map(VecDeque::len).sum()
    }
}

/// Handles the items of `key` until none is left.
async fn run<T: Send + 'static>(shared: Arc<Shared<T>>, key: String) {
    // If a handler panicked, the key would stay owned by a runner that is gone
    // and nothing of it would be handled again: give it up, dropping its items
    // (their deliveries are redelivered when the connection closes).
    struct OnPanic<'a, T>(&'a Shared<T>, &'a str);
    impl<T> Drop for OnPanic<'_, T> {
        fn drop(&mut self) {
            self.0.waiting().remove(self.1);
        }
    }
    let Ok(_permit) = shared.permits.acquire().await else {
        return;
    };
    let on_panic = OnPanic(&shared, &key);
    loop {
        let next = {
            let mut waiting = shared.waiting();
            match waiting.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(item) => item,
                None => {
                    // Given up under the same lock a push takes: the next push
                    // for this key starts a new runner, none is left behind.
                    waiting.remove(&key);
                    std::mem::forget(on_panic);
                    return;
                }
            }
        };
        (shared.handle)(next).await;
    }
}

/// A worker message and the delivery that brought it.
pub struct Event {
    pub msg: WorkerMessage,
    pub delivery: Delivery,
}

impl Supersede for Event {
    /// A heartbeat lists every task its worker holds (docs/design/fleet.md,
    /// "Heartbeat"), so a newer one renews all that an older one would, with
    /// later positions, and its ack moves the worker's fences further (they
    /// count from the newer `sent_ms`). Nothing else is ever superseded.
    fn supersedes(&self, older: &Event) -> bool {
        match (&self.msg, &older.msg) {
            (
                WorkerMessage::Heartbeat { sent_ms: new, .. },
                WorkerMessage::Heartbeat { sent_ms: old, .. },
            ) => new >= old,
            _ => false,
        }
    }
}

/// The worker a message is from: its key in the [`Inbox`].
pub fn worker_of(msg: &WorkerMessage) -> &str {
    match msg {
        WorkerMessage::Heartbeat { worker_id, .. }
        | WorkerMessage::Released { worker_id, .. }
        | WorkerMessage::Finished { worker_id, .. }
        | WorkerMessage::Reclaim { worker_id, .. }
        | WorkerMessage::Event { worker_id, .. } => worker_id,
    }
}

/// The coordinator's inbox: each event handled by [`lease::handle`] (Redis
/// retried while it is briefly away), then acked; returned to the queue if
/// Redis stays away.
pub fn for_ctx(ctx: Arc<Ctx>) -> Inbox<Event> {
    Inbox::new(AT_ONCE, move |e: Event| {
        let ctx = ctx.clone();
        Box::pin(async move {
            let Event { msg, delivery } = e;
            match lease::with_retry("worker message", || lease::handle(&ctx, msg.clone())).await {
                Ok(()) => {
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "worker message not handled; returning it to the queue");
                    intake::requeue(&delivery).await;
                }
            }
        })
    })
}

/// Takes `delivery` off the events queue into `inbox`; acks what it
/// supersedes and what cannot be read.
pub async fn accept(ctx: &Ctx, inbox: &Inbox<Event>, mut delivery: Delivery) {
    let msg = match serde_json::from_slice::<WorkerMessage>(&delivery.data) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable worker message dropped");
            let _ = delivery.ack(BasicAckOptions::default()).await;
            return;
        }
    };
    // Parsed: the body's bytes are not needed while the message waits.
    delivery.data = Vec::new();
    let key = worker_of(&msg).to_owned();
    for old in inbox.push(&key, Event { msg, delivery }) {
        ctx.metrics.heartbeats_superseded.inc();
        let _ = old.delivery.ack(BasicAckOptions::default()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    /// A test item: `(worker, seq, how long handling it takes)`; a newer
    /// seq supersedes an older one when both are marked `beat`.
    #[derive(Debug, Clone)]
    struct Item {
        key: &'static str,
        seq: u64,
        beat: bool,
        takes: Duration,
    }

    impl Supersede for Item {
        fn supersedes(&self, older: &Item) -> bool {
            self.beat && older.beat && self.seq >= older.seq
        }
    }

    fn item(key: &'static str, seq: u64, beat: bool, ms: u64) -> Item {
        Item {
            key,
            seq,
            beat,
            takes: Duration::from_millis(ms),
        }
    }

    /// An inbox whose handler sleeps `takes` and then reports the item and when it finished.
    fn inbox(at_once: usize) -> (Inbox<Item>, mpsc::UnboundedReceiver<(Item, Instant)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inbox = Inbox::new(at_once, move |i: Item| {
            let tx = tx.clone();
            Box::pin(async move {
                tokio::time::sleep(i.takes).await;
                let _ = tx.send((i, Instant::now()));
            }) as BoxFuture<'static, ()>
        });
        (inbox, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_worker_does_not_hold_back_the_others() {
        let (inbox, mut rx) = inbox(8);
        let t0 = Instant::now();
        inbox.push("slow", item("slow", 1, true, 5_000));
        for (n, key) in ["a", "b", "c", "d", "e", "f", "g"].into_iter().enumerate() {
            inbox.push(key, item(key, n as u64, true, 10));
        }
        let mut done = Vec::new();
        for _ in 0..8 {
            done.push(rx.recv().await.expect("handled"));
        }
        for (i, at) in &done[..7] {
            assert_ne!(i.key, "slow");
            assert!(*at - t0 <= Duration::from_millis(10), "{i:?} waited");
        }
        assert_eq!(done[7].0.key, "slow");
        assert_eq!(inbox.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn one_workers_messages_keep_their_order_and_old_heartbeats_are_superseded() {
        let (inbox, mut rx) = inbox(8);
        assert!(inbox.push("w", item("w", 1, true, 1_000)).is_empty());
        // Beat 1 is taken in hand.
        tokio::time::sleep(Duration::from_millis(1)).await;
        // While beat 1 is handled: beat 2, a release (not a beat), beats 3 and 4.
        assert!(inbox.push("w", item("w", 2, true, 10)).is_empty());
        assert!(inbox.push("w", item("w", 20, false, 10)).is_empty());
        let gone = inbox.push("w", item("w", 3, true, 10));
        assert_eq!(gone.iter().map(|i| i.seq).collect::<Vec<_>>(), [2]);
        let gone = inbox.push("w", item("w", 4, true, 10));
        assert_eq!(gone.iter().map(|i| i.seq).collect::<Vec<_>>(), [3]);
        let mut order = Vec::new();
        for _ in 0..3 {
            order.push(rx.recv().await.expect("handled").0.seq);
        }
        assert_eq!(order, [1, 20, 4], "the one in hand is never superseded");
        assert_eq!(inbox.waiting(), 0);
        // The key was given up when empty: the next push starts a new runner.
        inbox.push("w", item("w", 5, true, 10));
        assert_eq!(rx.recv().await.expect("handled").0.seq, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_at_once_workers_are_handled_together() {
        let (inbox, mut rx) = inbox(2);
        let t0 = Instant::now();
        for key in ["a", "b", "c", "d"] {
            inbox.push(key, item(key, 1, true, 100));
        }
        let mut at = Vec::new();
        for _ in 0..4 {
            at.push(rx.recv().await.expect("handled").1 - t0);
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(at, [ms(100), ms(100), ms(200), ms(200)]);
    }
}
