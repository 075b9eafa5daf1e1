//! A nacked publish, against the real RabbitMQ at VODFLEET_AMQP_URL
//! (scripts/test.sh starts one): `Bus::publish` retries it once on a fresh
//! channel, reports the nack, and the bus publishes on afterwards.

use vodfleet_bus::lapin::options::{BasicGetOptions, QueueDeclareOptions};
use vodfleet_bus::lapin::types::{AMQPValue, FieldTable};
use vodfleet_bus::{Bus, BusError};

fn url() -> String {
    std::env::var("VODFLEET_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_publish_is_reported_and_the_bus_publishes_on() {
    let bus = Bus::connect(&url(), "bus-test-nack")
        .await
        .expect("connect and declare");
    let ch = bus.channel().await.unwrap();
    // A queue that refuses every message: the broker nacks each publish.
    let full = format!("bus-test-full-{}", std::process::id());
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    ch.queue_declare(&full, exclusive(), args).await.unwrap();
    let e = bus
        .publish_json("", &full, &serde_json::json!({"n": 1}))
        .await
        .unwrap_err();
    assert!(matches!(e, BusError::Nacked), "{e}");

    let open = format!("bus-test-open-{}", std::process::id());
    ch.queue_declare(&open, exclusive(), FieldTable::default())
        .await
        .unwrap();
    for n in 0..3 {
        bus.publish_json("", &open, &serde_json::json!({ "n": n }))
            .await
            .expect("confirmed after the nack");
    }
    let mut got = 0;
    while let Some(m) = ch
        .basic_get(&open, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let v: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
        assert_eq!(v["n"], got);
        got += 1;
    }
    assert_eq!(got, 3, "every confirmed message is in the queue");
    bus.close().await;
}
