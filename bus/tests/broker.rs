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

    // Request/reply: a responder answers on `reply_to` with the same correlation id.
    let service = format!("{q}-service");
    ch.queue_declare(
        &service,
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let (_rc, mut inbox) = bus.consume(&service, "responder", 1).await.unwrap();
    let responder = {
        let ch = bus.channel().await.unwrap();
        tokio::spawn(async move {
            let d = inbox.next().await.unwrap().unwrap();
            let to = d.properties.reply_to().clone().unwrap();
            let props = vodfleet_bus::lapin::BasicProperties::default()
                .with_correlation_id(d.properties.correlation_id().clone().unwrap());
            ch.basic_publish("", to.as_str(), Default::default(), b"pong", props)
                .await
                .unwrap()
                .await
                .unwrap();
            d.ack(BasicAckOptions::default()).await.unwrap();
        })
    };
    let answer = bus
        .request(&service, b"ping", "req-1", Duration::from_secs(5))
        .await
        .expect("a reply");
    assert_eq!(answer, b"pong");
    responder.await.unwrap();
    let silent = format!("{q}-silent");
    ch.queue_declare(
        &silent,
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let e = bus
        .request(&silent, b"ping", "req-2", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(e, vodfleet_bus::BusError::NoReply(_)), "{e}");
    bus.close().await;
}
