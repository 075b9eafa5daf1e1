//! Against the real RabbitMQ at VODFLEET_AMQP_URL (scripts/test.sh starts one).

use futures_util::StreamExt;
use std::time::Duration;
use vodfleet_bus::lapin::options::{BasicAckOptions, QueueDeclareOptions};
use vodfleet_bus::lapin::types::FieldTable;
use vodfleet_bus::Bus;

fn url() -> String {
    std::env::var("VODFLEET_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_declares_twice_and_a_confirmed_message_round_trips() {
    let bus = Bus::connect(&url(), "bus-test")
        .await
        .expect("connect and declare");
    // Declaring again (another process, a reconnect) must be harmless.
    let again = Bus::connect(&url(), "bus-test-2")
        .await
        .expect("declare again");
    again.close().await;

    let ch = bus.channel().await.unwrap();
    let q = format!("bus-test-{}", std::process::id());
    ch.queue_declare(
        &q,
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    bus.publish_json("", &q, &serde_json::json!({"hello": 1}))
        .await
        .expect("confirmed");
    let (_c2, mut consumer) = bus.consume(&q, "reader", 1).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("delivered in time")
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
    assert_eq!(v["hello"], 1);
    assert_eq!(d.properties.delivery_mode(), &Some(2), "persistent");
    d.ack(BasicAckOptions::default()).await.unwrap();
    bus.close().await;
}
