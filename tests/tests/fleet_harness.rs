//! Self-test of the fleet harness (tests/src/fleet.rs): each piece the fleet
//! tests rely on behaves as claimed, checked against real services and plain
//! clients, without the fleet binaries.

use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use vodfleet_proto::fleet::{
    COMMANDS_DEAD_QUEUE, COMMANDS_QUEUE, COMMAND_DELIVERY_LIMIT, REASON_HEADER,
};
use vodfleet_tests::fleet::{
    counter_media, frame_of, publish_conflicts, signed_headers, tag_of, take_recording,
    verify_signed, Answer, FRAME_BITS,
};
use vodfleet_tests::media::ffmpeg;
use vodfleet_tests::{
    counter_mp4, read_counters, unique, wait_until, CallbackReceiver, Producer, PublisherWatch,
    RabbitNode, RedisServer, RtmpServer, Vhost,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(url: &str) -> Connection {
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(url, props).await.expect("AMQP connect")
}

fn quorum(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    for (k, v) in extra {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// The command queues as docs/design/fleet.md declares them.
async fn declare_commands(ch: &Channel) {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(COMMANDS_DEAD_QUEUE, durable, quorum(&[]))
        .await
        .unwrap();
    ch.queue_declare(
        COMMANDS_QUEUE,
        durable,
        quorum(&[
            (
                "x-delivery-limit",
                AMQPValue::LongInt(COMMAND_DELIVERY_LIMIT as i32),
            ),
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            (
                "x-dead-letter-routing-key",
                AMQPValue::LongString(COMMANDS_DEAD_QUEUE.into()),
            ),
        ]),
    )
    .await
    .unwrap();
}

#[test]
fn vhost_is_created_and_deleted() {
    let v = Vhost::new();
    let name = v.name().to_owned();
    assert!(Vhost::exists(&name), "vhost {name} not listed");
    assert!(v.url().ends_with(&format!("/{name}")));
    // It is usable: the producer connects into it.
    let p = Producer::connect(&v.url());
    assert!(p.is_connected());
    drop(p);
    drop(v);
    assert!(!Vhost::exists(&name), "vhost {name} still there after drop");
}

#[test]
fn redis_starts_reads_and_restarts_empty() {
    let mut r = RedisServer::start();
    let port = r.port();
    let _: () = r.query(&["SET", "vodfleet:resume:{t1}", "x", "EX", "172800"]);
    let _: () = r.query(&[
        "HSET",
        "vodfleet:task:{t1}",
        "state",
        "running",
        "worker",
        "w1",
    ]);
    let _: () = r.query(&["ZADD", "vodfleet:due", "5", "t1"]);
    let ttl = r.ttl("vodfleet:resume:{t1}");
    assert!(ttl > 172_700 && ttl <= 172_800, "ttl {ttl}");
    assert_eq!(r.hgetall("vodfleet:task:{t1}")["worker"], "w1");
    assert!(r.exists("vodfleet:task:{t1}"));
    let dump = r.dump_all();
    assert_eq!(dump.len(), 3, "{dump:?}");
    assert!(dump["vodfleet:due"].starts_with("zset: "), "{dump:?}");
    assert_eq!(r.dump_all(), dump, "a dump is stable");

    r.restart();
    assert_eq!(r.port(), port, "same port after restart");
    assert!(r.dump_all().is_empty(), "redis came back with data");
    assert_eq!(r.ttl("vodfleet:resume:{t1}"), -2);
    assert!(!r.exists("vodfleet:task:{t1}"));
}

#[test]
fn private_rabbit_node_restarts_with_its_data() {
    let mut node = RabbitNode::start();
    assert!(node.node().starts_with("vf-"), "{}", node.node());
    let rt = runtime();
    let url = node.url();
    rt.block_on(async {
        let c = connect(&url).await;
        let ch = c.create_channel().await.unwrap();
        declare_commands(&ch).await;
        ch.basic_publish(
            "",
            COMMANDS_QUEUE,
            BasicPublishOptions::default(),
            b"{\"kept\":1}",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let _ = c.close(200, "bye").await;
    });
    let args = node.queue_arguments();
    assert_eq!(
        args[COMMANDS_QUEUE]["x-delivery-limit"], COMMAND_DELIVERY_LIMIT,
        "{args:?}"
    );

    let away = node.restart();
    eprintln!("private node restarted in {away:?}");
    assert!(node.is_running());
    // The machine's own broker was not touched.
    let machine = Vhost::new();
    drop(machine);
    rt.block_on(async {
        let c = connect(&url).await;
        let ch = c.create_channel().await.unwrap();
        let got = ch
            .basic_get(COMMANDS_QUEUE, BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("the persistent message survived the restart");
        assert_eq!(got.delivery.data, b"{\"kept\":1}");
        let _ = c.close(200, "bye").await;
    });
    node.stop();
    assert!(!node.is_running());
}

/// A stand-in for the coordinator's intake: answers every command with the
/// seed's response shape, refuses non-JSON with 400 and dead-letters it.
async fn responder(url: String, seen: std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use futures_util::StreamExt;
    let c = connect(&url).await;
    let ch = c.create_channel().await.unwrap();
    let mut consumer = ch
        .basic_consume(
            COMMANDS_QUEUE,
            "responder",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    while let Some(Ok(d)) = consumer.next().await {
        let parsed: Result<Value, _> = serde_json::from_slice(&d.data);
        let (code, msg) = match &parsed {
            Ok(v) => {
                seen.lock().unwrap().push(v.clone());
                ("200", "receive task success!".to_owned())
            }
            Err(e) => ("400", format!("body is not JSON: {e}")),
        };
        if parsed.is_err() {
            let mut h = FieldTable::default();
            h.insert(
                REASON_HEADER.into(),
                AMQPValue::LongString(msg.clone().into()),
            );
            ch.basic_publish(
                "",
                COMMANDS_DEAD_QUEUE,
                BasicPublishOptions::default(),
                &d.data,
                BasicProperties::default().with_headers(h),
            )
            .await
            .unwrap();
        }
        if let Some(to) = d.properties.reply_to() {
            let body = json!({"http_code": code, "msg": msg, "call_time": 1});
            let mut props = BasicProperties::default();
            if let Some(c) = d.properties.correlation_id() {
                props = props.with_correlation_id(c.clone());
            }
            ch.basic_publish(
                "",
                to.as_str(),
                BasicPublishOptions::default(),
                &serde_json::to_vec(&body).unwrap(),
                props,
            )
            .await
            .unwrap();
        }
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
}

#[test]
fn producer_request_reply_and_dead_letters() {
    let v = Vhost::new();
    let rt = runtime();
    let url = v.url();
    rt.block_on(async {
        let c = connect(&url).await;
        declare_commands(&c.create_channel().await.unwrap()).await;
    });
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    rt.spawn(responder(url.clone(), seen.clone()));

    let mut p = Producer::connect(&url);
    let r = p.request(&json!({"cmd": "1", "hello": 1}));
    assert_eq!(r["http_code"], "200", "{r}");
    assert_eq!(r["msg"], "receive task success!");
    let r = p.request_raw(b"{not json");
    assert_eq!(r["http_code"], "400", "{r}");
    p.send(&json!({"cmd": "2"}));
    wait_until("the plain send arrives", Duration::from_secs(10), || {
        seen.lock().unwrap().iter().any(|v| v["cmd"] == "2")
    });
    let dead = p.wait_dead_letters(1, Duration::from_secs(10));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].body, b"{not json");
    assert!(
        dead[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("not JSON")),
        "{dead:?}"
    );
    // Every publish carries a message id of its own.
    assert!(p.dead_letters().is_empty(), "dead letters are taken once");

    let args = v.queue_arguments();
    assert_eq!(args[COMMANDS_QUEUE]["x-queue-type"], "quorum", "{args:?}");
    assert_eq!(
        args[COMMANDS_QUEUE]["x-dead-letter-routing-key"], COMMANDS_DEAD_QUEUE,
        "{args:?}"
    );
    drop(p);
    rt.shutdown_background();
}

#[test]
fn producer_says_when_no_coordinator_declared_the_queue() {
    let v = Vhost::new();
    let p = Producer::connect(&v.url());
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.send(&json!({"cmd": "1"}))
    }))
    .expect_err("publishing into a vhost without the queue must fail loudly");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("does not exist"), "{msg}");
}

#[test]
fn callback_receiver_follows_its_script_and_checks_signatures() {
    let rx = CallbackReceiver::start(
        vec![Answer::new(500, "boom"), Answer::new(200, "")],
        Answer::new(200, "ok"),
    );
    let (id, secret) = ("cb", "callback-secret-0123456789");
    let post = |event_id: &str| {
        let body = serde_json::to_vec(&json!({"event": "started", "event_id": event_id})).unwrap();
        let h = signed_headers(id, secret, "POST", "/callback", &body);
        vodfleet_tests::fleet::http_request(rx.port(), "POST", "/callback", &h, &body).unwrap()
    };
    let codes: Vec<(u16, String)> = (0..4)
        .map(|_| post("t:1:1"))
        .map(|r| (r.status, r.text()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (500, "boom".into()),
            (200, "".into()),
            (200, "ok".into()),
            (200, "ok".into())
        ]
    );
    assert_eq!(
        post("t:1:2").status,
        500,
        "a new event starts its own script"
    );
    let by = rx.by_event();
    assert_eq!(by["t:1:1"].len(), 4);
    assert_eq!(by["t:1:2"].len(), 1);
    assert!(
        !by["t:1:1"][1].delivered(),
        "200 with an empty body is not delivered"
    );
    assert!(by["t:1:1"][2].delivered());
    assert_eq!(rx.events().len(), 2, "one body per event id");
    for p in rx.posts() {
        verify_signed(&p.headers, "POST", &p.path, &p.body, &[(id, secret)]).unwrap();
        assert_eq!(p.path, "/callback");
        let mut tampered = p.body.clone();
        tampered.push(b' ');
        assert!(verify_signed(&p.headers, "POST", &p.path, &tampered, &[(id, secret)]).is_err());
        assert!(
            verify_signed(&p.headers, "POST", "/elsewhere", &p.body, &[(id, secret)]).is_err(),
            "the path is signed"
        );
        assert!(verify_signed(
            &p.headers,
            "POST",
            &p.path,
            &p.body,
            &[("cb", "another-secret-0123456")]
        )
        .is_err());
        let no_headers = BTreeMap::new();
        assert!(verify_signed(&no_headers, "POST", &p.path, &p.body, &[(id, secret)]).is_err());
    }
}

#[test]
fn counter_media_reads_back_its_frame_numbers() {
    let m = counter_mp4(4.0, 25, 25);
    let c = read_counters(&m.path);
    assert_eq!(c, (0..100).collect::<Vec<u32>>());
    let tagged = counter_media(2.0, "480x270", 25, 25, 3);
    let c = read_counters(&tagged.path);
    assert_eq!(c.len(), 50);
    assert!(c.iter().all(|&v| tag_of(v) == 3), "{c:?}");
    assert_eq!(
        c.iter().map(|&v| frame_of(v)).collect::<Vec<_>>(),
        (0..50).collect::<Vec<u32>>()
    );
    assert_eq!(c[0], 3 << FRAME_BITS);
}

fn publish(file: &std::path::Path, url: &str, realtime: bool) -> std::process::Child {
    let mut cmd = Command::new(ffmpeg());
    cmd.args(["-hide_banner", "-nostdin", "-v", "error"]);
    if realtime {
        cmd.arg("-re");
    }
    cmd.arg("-i")
        .arg(file)
        .args(["-c", "copy", "-f", "flv", url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn ffmpeg")
}

/// Through nginx-rtmp: recordings keep the counters, a recording taken aside
/// keeps its session while the next publish gets a file of its own, the watch
/// sees each publisher, and a refused second publisher is reported.
#[test]
fn nginx_recordings_watch_and_conflicts() {
    let rtmp = RtmpServer::start();
    let key = unique("key");
    let m = counter_mp4(4.0, 25, 25);
    let watch = PublisherWatch::start(&rtmp, &key, Duration::from_millis(50));
    let t0 = Instant::now();
    let mut first = publish(&m.path, &rtmp.url(&key), true);
    rtmp.wait_publishing(&key, Duration::from_secs(10));
    let part1 = take_recording(&rtmp, &key, "part1");
    // A second publisher while the first runs is refused by nginx.
    let mut second = publish(&m.path, &rtmp.url(&key), false);
    let _ = second.wait();
    assert!(
        first.wait().unwrap().success(),
        "the first publisher kept going"
    );
    rtmp.wait_unpublished(&key, Duration::from_secs(10));
    let conflicts = publish_conflicts(&rtmp, &key);
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert!(publish_conflicts(&rtmp, "other").is_empty());

    // Publish again: a new file, the moved one untouched.
    let mut third = publish(&m.path, &rtmp.url(&key), false);
    assert!(third.wait().unwrap().success());
    rtmp.wait_unpublished(&key, Duration::from_secs(10));
    let expected: Vec<u32> = (0..100).collect();
    assert_eq!(read_counters(&part1), expected, "the moved recording");
    assert_eq!(
        read_counters(&rtmp.record_path(&key)),
        expected,
        "the new recording"
    );

    let sessions = watch.sessions();
    assert_eq!(watch.max_publishers(), 1, "{}", watch.summary());
    assert!(!sessions.is_empty(), "{}", watch.summary());
    assert!(
        sessions[0].last_seen - sessions[0].first_seen >= Duration::from_secs(2),
        "the real-time publisher was seen for its duration: {}",
        watch.summary()
    );
    assert!(watch.absent_since(sessions[0].last_seen));
    eprintln!("{} (after {:?})", watch.summary(), t0.elapsed());
}
