//! The lease protocol's transitions against a real Redis (a private
//! `redis-server` on a free port per test): fencing by epoch, expiry and
//! re-issue, release, stop with its 48 h resume record, recovery of a lost record.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vodfleet_coordinator::store::{Release, Renewal, Store};
use vodfleet_proto::fleet::{keys, DestinationState};
use vodfleet_proto::{parse_task_entry, Position, TaskSpec};

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spec(id: &str) -> TaskSpec {
    let body = format!(
        r#"{{"id":"{id}","src":[{{"url":"vod://a.mp4"}}],"forward":[{{"url":"rtmp://127.0.0.1/live/SECRETKEY"}}]}}"#
    );
    parse_task_entry(body.as_bytes()).unwrap().0
}

fn pos(offset_ms: u64) -> Position {
    Position {
        item: 0,
        loop_index: 0,
        offset_ms,
        timeline_ms: offset_ms,
    }
}

const TTL: u64 = 4_000;

#[tokio::test]
async fn only_the_current_epoch_is_renewed_and_an_expired_lease_is_issued_once() {
    let r = Redis::start();
    let s = Store::connect(&r.url()).await.unwrap();
    let t = spec("t1");
    let started = s
        .start(&t, None, 1_000, TTL, false, None, "m1")
        .await
        .unwrap();
    assert_eq!((started.epoch, started.old_worker), (1, None));
    let live = [DestinationState::Live];

    assert_eq!(
        s.renew("t1", 1, "w1", 2_000, TTL, &pos(1_000), &live)
            .await
            .unwrap(),
        Renewal::Renewed
    );
    assert_eq!(
        s.renew("t1", 0, "w0", 2_000, TTL, &pos(1_000), &live)
            .await
            .unwrap(),
        Renewal::Revoked,
        "an older epoch is fenced"
    );
    assert_eq!(
        s.renew("nope", 1, "w1", 2_000, TTL, &pos(0), &live)
            .await
            .unwrap(),
        Renewal::Unknown
    );

    // Not expired yet: nothing to issue.
    assert!(s
        .issue("t1", 5_000, TTL, "expired")
        .await
        .unwrap()
        .is_none());
    // Expired (last renewal at 2 000 + TTL): two replicas race; exactly one wins.
    let (a, b) = tokio::join!(
        s.issue("t1", 6_001, TTL, "expired"),
        s.issue("t1", 6_001, TTL, "expired")
    );
    let winners: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "one lease, however many reapers");
    let issued = &winners[0];
    assert_eq!((issued.epoch, issued.was.as_str()), (2, "running"));
    assert_eq!(
        issued.position,
        Some(pos(1_000)),
        "re-issued from the last reported position"
    );
    assert_eq!(
        s.renew("t1", 1, "w1", 6_100, TTL, &pos(1_100), &live)
            .await
            .unwrap(),
        Renewal::Revoked,
        "the old worker is fenced out"
    );
    assert_eq!(
        s.renew("t1", 2, "w2", 6_200, TTL, &pos(1_000), &live)
            .await
            .unwrap(),
        Renewal::Renewed
    );
}

#[tokio::test]
async fn stop_writes_a_48h_resume_record_and_the_release_makes_it_exact() {
    let r = Redis::start();
    let s = Store::connect(&r.url()).await.unwrap();
    s.start(
        &spec("t2"),
        Some("http://cb.example/x"),
        1_000,
        TTL,
        false,
        None,
        "m1",
    )
    .await
    .unwrap();
    s.renew(
        "t2",
        1,
        "w1",
        2_000,
        TTL,
        &pos(5_000),
        &[DestinationState::Live],
    )
    .await
    .unwrap();

    let (holder, held) = s
        .stop("t2", 3_000, "stopped", true, "m2")
        .await
        .unwrap()
        .expect("a live task stops");
    assert_eq!(
        (holder.as_deref(), held),
        (Some("w1"), 1),
        "the worker to tell, and the epoch it held"
    );
    assert!(
        s.stop("t2", 3_001, "stopped", true, "m3")
            .await
            .unwrap()
            .is_none(),
        "stopping twice changes nothing"
    );

    let mut c = s.conn();
    let ttl: i64 = redis::cmd("TTL")
        .arg(keys::resume("t2"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        (172_700..=172_800).contains(&ttl),
        "resume record TTL {ttl}"
    );
    let task_ttl: i64 = redis::cmd("TTL")
        .arg(keys::task("t2"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        (172_700..=172_800).contains(&task_ttl),
        "a task that is over expires like its resume record ({task_ttl})"
    );
    assert_eq!(s.count_states().await.unwrap().get("stopped"), Some(&1));
    let (rec, cb) = s.resume_record("t2").await.unwrap().expect("record");
    assert_eq!(
        (rec.position, cb.as_deref()),
        (pos(5_000), Some("http://cb.example/x"))
    );

    // The worker's exact final position arrives with its Released (old epoch).
    assert!(matches!(
        s.release("t2", 1, &pos(6_480), 3_100, TTL).await.unwrap(),
        Release::Exact
    ));
    let (rec, _) = s.resume_record("t2").await.unwrap().unwrap();
    assert_eq!(rec.position, pos(6_480));
    let ttl: i64 = redis::cmd("TTL")
        .arg(keys::resume("t2"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 172_700, "updating the position keeps the TTL ({ttl})");
}

#[tokio::test]
async fn a_release_is_issued_again_at_once_and_a_restart_fences_the_old_run() {
    let r = Redis::start();
    let s = Store::connect(&r.url()).await.unwrap();
    s.start(&spec("t3"), None, 1_000, TTL, false, None, "m1")
        .await
        .unwrap();
    s.renew("t3", 1, "w1", 1_500, TTL, &pos(500), &[])
        .await
        .unwrap();
    match s.release("t3", 1, &pos(777), 2_000, TTL).await.unwrap() {
        Release::Reissued(i) => assert_eq!((i.epoch, i.position), (2, Some(pos(777)))),
        other => panic!("expected a re-issue, got {other:?}"),
    }
    assert!(
        matches!(
            s.release("t3", 1, &pos(800), 2_100, TTL).await.unwrap(),
            Release::Stale
        ),
        "a second release of the same epoch is stale"
    );

    s.renew("t3", 2, "w2", 2_200, TTL, &pos(900), &[])
        .await
        .unwrap();
    let again = s
        .start(&spec("t3"), None, 3_000, TTL, false, None, "m2")
        .await
        .unwrap();
    assert_eq!(
        (again.old_worker.as_deref(), again.old_epoch, again.epoch),
        (Some("w2"), 2, 3),
        "cmd 1 on a live id fences the old run"
    );
    assert_eq!(
        s.renew("t3", 2, "w2", 3_100, TTL, &pos(950), &[])
            .await
            .unwrap(),
        Renewal::Revoked
    );
}

#[tokio::test]
async fn a_scheduled_task_is_issued_at_its_start_time_and_a_lost_record_is_reclaimed() {
    let r = Redis::start();
    let s = Store::connect(&r.url()).await.unwrap();
    let mut t = spec("t4");
    t.start_ms = Some(10_000);
    s.start(&t, None, 1_000, TTL, true, None, "m1")
        .await
        .unwrap();
    assert!(s.issue("t4", 9_999, TTL, "due").await.unwrap().is_none());
    assert_eq!(s.due(9_999, 10).await.unwrap(), Vec::<String>::new());
    assert_eq!(s.due(10_000, 10).await.unwrap(), vec!["t4".to_owned()]);
    assert_eq!(
        s.issue("t4", 10_000, TTL, "due")
            .await
            .unwrap()
            .map(|i| i.epoch),
        Some(2)
    );

    // Redis lost everything; the worker's Reclaim rebuilds the task at its own epoch.
    let mut c = s.conn();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    assert_eq!(
        s.renew("t4", 2, "w1", 11_000, TTL, &pos(1_000), &[])
            .await
            .unwrap(),
        Renewal::Unknown
    );
    assert!(s
        .reclaim("t4", 2, "w1", &t, &pos(1_000), None, 11_000, TTL)
        .await
        .unwrap());
    assert!(
        !s.reclaim("t4", 2, "w9", &t, &pos(0), None, 11_001, TTL)
            .await
            .unwrap(),
        "a second claim changes nothing"
    );
    assert_eq!(
        s.renew("t4", 2, "w1", 12_000, TTL, &pos(2_000), &[])
            .await
            .unwrap(),
        Renewal::Renewed
    );
    let view = s.get("t4").await.unwrap().unwrap();
    assert_eq!(
        (view.state.as_str(), view.worker.as_deref()),
        ("running", Some("w1"))
    );
    assert!(
        !serde_json::to_string(&view).unwrap().contains("SECRETKEY"),
        "listings never show a stream key"
    );
}

/// An order no worker took within the lease is offered again under the same
/// epoch (a full fleet does not climb epochs); once a worker has reported the
/// epoch, an expiry is a failover and the epoch grows.
#[tokio::test]
async fn an_unclaimed_order_is_offered_again_under_the_same_epoch() {
    let r = Redis::start();
    let s = Store::connect(&r.url()).await.unwrap();
    let t = spec("t1");
    let started = s
        .start(&t, None, 1_000, TTL, false, None, "m1")
        .await
        .unwrap();
    assert_eq!(started.epoch, 1);
    let again = s
        .issue("t1", 1_000 + TTL + 1, TTL, "expired")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.epoch, again.was.as_str()), (1, "unclaimed"));
    let later = 1_000 + 2 * TTL + 2;
    let third = s.issue("t1", later, TTL, "expired").await.unwrap().unwrap();
    assert_eq!(
        (third.epoch, third.was.as_str()),
        (1, "unclaimed"),
        "still nobody took it"
    );
    let live = [DestinationState::Live];
    assert_eq!(
        s.renew("t1", 1, "w1", later + 10, TTL, &pos(0), &live)
            .await
            .unwrap(),
        Renewal::Renewed,
        "the first worker to report the epoch holds it"
    );
    assert_eq!(
        s.renew("t1", 1, "w2", later + 20, TTL, &pos(0), &live)
            .await
            .unwrap(),
        Renewal::Revoked,
        "a second taker of the same order is turned away"
    );
    let failover = s
        .issue("t1", later + 10 + TTL + 1, TTL, "expired")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((failover.epoch, failover.was.as_str()), (2, "running"));
}

/// An order whose publish failed (the broker was down) is offered again as
/// soon as the broker is back: same epoch, a fresh lease, and only while no
/// worker holds that epoch and the task has not moved on.
#[tokio::test]
async fn an_order_not_published_is_reoffered_with_a_fresh_lease_while_nobody_holds_it() {
    let r = Redis::start();
    let s = Store::connect(&r.url()).await.unwrap();
    let t = spec("t1");
    s.start(&t, None, 1_000, TTL, false, None, "m1")
        .await
        .unwrap();
    let lease = |s: &Store| {
        let s = s.clone();
        async move { s.deadlines("t1").await.unwrap().unwrap().lease_until }
    };
    assert_eq!(lease(&s).await, 5_000);
    assert!(
        s.reoffer("t1", 2, 2_000, TTL).await.unwrap().is_none(),
        "an epoch the task does not have"
    );
    let again = s.reoffer("t1", 1, 2_000, TTL).await.unwrap().unwrap();
    assert_eq!((again.epoch, again.was.as_str()), (1, "reoffered"));
    assert_eq!(again.spec.id, "t1");
    assert_eq!(lease(&s).await, 6_000, "a fresh lease from now");
    let live = [DestinationState::Live];
    assert_eq!(
        s.renew("t1", 1, "w1", 2_100, TTL, &pos(0), &live)
            .await
            .unwrap(),
        Renewal::Renewed
    );
    assert!(
        s.reoffer("t1", 1, 2_200, TTL).await.unwrap().is_none(),
        "a worker holds the epoch now"
    );
    assert_eq!(lease(&s).await, 6_100, "its lease untouched");
}

/// A command's mark is written by the same script that applies it: once a
/// transition happened, the task says which command made it, so a redelivery
/// after a coordinator died before its ack is recognised.
#[tokio::test]
async fn each_transition_records_the_command_that_made_it() {
    let r = Redis::start();
    let s = Store::connect(&r.url()).await.unwrap();
    assert_eq!(s.last_commands(&["t5"]).await.unwrap(), vec![None]);
    s.start(&spec("t5"), None, 1_000, TTL, false, None, "start-1")
        .await
        .unwrap();
    assert_eq!(
        s.last_commands(&["t5", "nope"]).await.unwrap(),
        vec![Some("start-1".to_owned()), None]
    );
    // A renewal, a release or a re-issue is not a command: the mark stays.
    s.renew(
        "t5",
        1,
        "w1",
        2_000,
        TTL,
        &pos(1_000),
        &[DestinationState::Live],
    )
    .await
    .unwrap();
    s.issue("t5", 1_000_000, TTL, "expired").await.unwrap();
    assert_eq!(
        s.last_commands(&["t5"]).await.unwrap(),
        vec![Some("start-1".to_owned())],
        "a failover does not make the start command new again"
    );
    assert!(s
        .set_spec("t5", 2, &spec("t5"), 3_000, "update-1")
        .await
        .unwrap());
    assert_eq!(
        s.last_commands(&["t5"]).await.unwrap(),
        vec![Some("update-1".to_owned())]
    );
    s.stop("t5", 4_000, "stopped", true, "stop-1")
        .await
        .unwrap()
        .expect("stops");
    assert_eq!(
        s.last_commands(&["t5"]).await.unwrap(),
        vec![Some("stop-1".to_owned())]
    );
    // The end time stops a task with no command: the last command's mark stays.
    s.start(&spec("t6"), None, 1_000, TTL, false, None, "start-6")
        .await
        .unwrap();
    s.stop("t6", 2_000, "finished", false, "").await.unwrap();
    assert_eq!(
        s.last_commands(&["t6"]).await.unwrap(),
        vec![Some("start-6".to_owned())]
    );
}
