//! A broker that takes a publish and never answers, simulated by a TCP proxy
//! in front of the real RabbitMQ at VODFLEET_AMQP_URL that stops forwarding
//! (silence, sockets left open): `Bus::publish` gives up after
//! `CONFIRM_TIMEOUT` with `BusError::Unconfirmed` instead of waiting for good.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vodfleet_bus::{Bus, BusError, CONFIRM_TIMEOUT};

fn url() -> String {
    std::env::var("VODFLEET_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `(url through 127.0.0.1:port, the broker's host:port)`.
fn through(url: &str, port: u16) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let (auth, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (cred, hostport) = auth.rsplit_once('@').unwrap_or(("", auth));
    let at = if cred.is_empty() { "" } else { "@" };
    (
        format!("{scheme}://{cred}{at}127.0.0.1:{port}/{path}"),
        hostport.replace("localhost", "127.0.0.1"),
    )
}

/// Copies `from` to `to` until `frozen`; then reads and drops what comes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            return;
        }
        if !frozen.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_broker_never_confirms_gives_up_after_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (proxied, upstream) = through(&url(), port);
    let frozen = Arc::new(AtomicBool::new(false));
    let f = frozen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(&upstream).await.expect("the broker");
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, f.clone()));
            tokio::spawn(pump(sr, cw, f.clone()));
        }
    });
    let bus = Bus::connect(&proxied, "bus-test-unconfirmed")
        .await
        .expect("connect through the proxy");
    // Through the proxy, publishing works.
    bus.publish_json("", "bus-test-nowhere", &serde_json::json!({"n": 0}))
        .await
        .expect("a publish before the freeze is confirmed");
    frozen.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let r = tokio::time::timeout(
        CONFIRM_TIMEOUT + Duration::from_secs(10),
        bus.publish_json("", "bus-test-nowhere", &serde_json::json!({"n": 1})),
    )
    .await
    .expect("publish returned on its own");
    let waited = t0.elapsed();
    assert!(
        matches!(r, Err(BusError::Unconfirmed(_))),
        "{r:?} after {waited:?}"
    );
    assert!(
        waited >= CONFIRM_TIMEOUT && waited < CONFIRM_TIMEOUT + Duration::from_secs(3),
        "gave up after {waited:?}"
    );
}
