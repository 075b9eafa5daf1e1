//! The URL policy through the real HTTP client with the policy ON (issue 9 row 8):
//! redirects checked on every hop, and DNS names that resolve to refused
//! addresses. A canary listener on the loopback (IPv4 and IPv6) counts every
//! connection it gets; it must get none.
//!
//! Why here and not only in the fleet test: with the policy on, a redirector on
//! the loopback is itself refused, so no first hop can be served from this
//! machine. Here the client is told (reqwest's `resolve` override, which only
//! tests use) that the public-looking names `cdn.example` and `cdn2.example` are
//! the local redirector, so the first hop is allowed and every later hop meets
//! the policy exactly as in production. What this does not cover: a real public
//! redirector, and DNS rebinding by a real resolver (the resolver hands the
//! client only addresses it allowed, so there is nothing to rebind between check
//! and connect). Names that resolve to refused addresses: the ones this machine
//! can resolve, i.e. those in /etc/hosts (read at run time).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Counts connections on 127.0.0.1 and [::1] (same port when it can) and answers 200.
struct Canary {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Canary {
    async fn start() -> Canary {
        let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = v4.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let mut listeners = vec![v4];
        if let Ok(v6) = TcpListener::bind(("::1", port)).await {
            listeners.push(v6);
        }
        for l in listeners {
            let hits = hits.clone();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    hits.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 4096];
                        let _ = s.read(&mut buf).await;
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                            .await;
                    });
                }
            });
        }
        Canary { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Answers every request with `302 Location: <target of its path>`: the path
/// `/N` redirects to `targets[N]`.
async fn redirector(targets: Vec<String>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let targets = targets.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("/0");
                let i: usize = path.trim_start_matches('/').parse().unwrap_or(0);
                let to = targets.get(i).cloned().unwrap_or_default();
                let resp = format!(
                    "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

fn client(redirector: SocketAddr) -> reqwest::Client {
    vodfleet_net::http_client_builder(false, Duration::from_secs(2))
        .resolve("cdn.example", redirector)
        .resolve("cdn2.example", redirector)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The whole cause chain of a reqwest error.
fn chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[tokio::test]
async fn a_redirect_to_any_refused_address_or_scheme_is_refused_on_every_hop() {
    let canary = Canary::start().await;
    let p = canary.port;
    let corpus: Vec<String> = [
        "127.0.0.1",
        "127.1",
        "0x7f000001",
        "2130706433",
        "0177.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::127.0.0.1]",
        "localhost",
        "localhost.",
        "canary.localhost",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.169.254",
        "0xa9fea9fe",
        "[fe80::1]",
        "0.0.0.0",
    ]
    .iter()
    .map(|h| format!("http://{h}:{p}/canary"))
    .chain([
        "file:///etc/passwd".to_owned(),
        format!("ftp://127.0.0.1:{p}/x"),
        format!("gopher://127.0.0.1:{p}/_GET"),
        format!("https://127.0.0.1:{p}/x"),
    ])
    .collect();
    // Path /0 on the redirector leads to /1 (a public-looking second name), which
    // leads to the target under test: the refusal must happen on the 2nd hop too.
    for target in &corpus {
        let to_second = "http://cdn2.example/1".to_owned();
        let addr = redirector(vec![to_second, target.clone()]).await;
        let url = format!("http://cdn.example:{}/0", addr.port());
        match client(addr).get(&url).send().await {
            Err(err) => {
                let why = chain(&err);
                assert!(err.is_redirect(), "{target}: not a redirect refusal: {why}");
                assert!(
                    why.contains("redirect refused by the URL policy"),
                    "{target}: the reason must name the policy: {why}"
                );
            }
            // reqwest does not follow (nor ask the policy about) a Location whose
            // scheme it cannot fetch: the 3xx itself comes back, unfollowed, and
            // the source fetcher refuses it by the same policy.
            Ok(r) => {
                let scheme = target.split(':').next().unwrap_or("");
                assert!(
                    !matches!(scheme, "http" | "https") && r.status().is_redirection(),
                    "a redirect to {target} must fail, got {} from {}",
                    r.status(),
                    r.url()
                );
                let location = r.headers()["location"].to_str().unwrap();
                let e =
                    vodfleet_net::check_url(&url::Url::parse(location).unwrap(), true).unwrap_err();
                assert!(e.contains("http and https only"), "{target}: {e}");
            }
        }
    }
    // More than 5 hops, all to allowed places.
    let addr = redirector(
        (0..10)
            .map(|i| format!("http://cdn.example/{}", i + 1))
            .collect(),
    )
    .await;
    let err = client(addr)
        .get(format!("http://cdn.example:{}/0", addr.port()))
        .send()
        .await
        .unwrap_err();
    assert!(
        chain(&err).contains("more than 5 redirects"),
        "{}",
        chain(&err)
    );
    assert_eq!(canary.hits(), 0, "the canary on the loopback was reached");
}

/// Names in /etc/hosts (other than `localhost`, which the URL check refuses
/// before any lookup) whose address the policy refuses.
fn refused_host_names() -> Vec<(String, IpAddr)> {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let mut out = Vec::new();
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        if vodfleet_net::check_ip(ip, false).is_ok() {
            continue;
        }
        for name in words {
            if !name.to_ascii_lowercase().contains("localhost") {
                out.push((name.to_owned(), ip));
            }
        }
    }
    out
}

#[tokio::test]
async fn dns_names_that_resolve_to_refused_addresses_are_refused_by_the_resolver() {
    let canary = Canary::start().await;
    let names = refused_host_names();
    assert!(
        !names.is_empty(),
        "this test needs a name in /etc/hosts (besides localhost) for a loopback or private address; none found"
    );
    let addr = redirector(vec![]).await;
    for (name, ip) in &names {
        let url = format!("http://{name}:{}/canary", canary.port);
        let direct = client(addr).get(&url).send().await;
        let why = chain(&direct.expect_err(&url));
        assert!(
            why.contains("refused by the URL policy") && why.contains(&ip.to_string()),
            "{url} ({ip}): the reason must name the policy and the address: {why}"
        );
        // And as a redirect target: the hop's name passes the URL check (it is a
        // name), its resolution does not.
        let addr = redirector(vec![url.clone()]).await;
        let err = client(addr)
            .get(format!("http://cdn.example:{}/0", addr.port()))
            .send()
            .await
            .expect_err(&url);
        assert!(
            chain(&err).contains("refused by the URL policy"),
            "redirect to {url}: {}",
            chain(&err)
        );
    }
    assert_eq!(canary.hits(), 0, "the canary on the loopback was reached");
}

#[tokio::test]
async fn the_client_reaches_an_allowed_target_through_redirects() {
    // The control: with the setting on, the same chain reaches the canary, so the
    // refusals above are the policy's doing and not a broken test server.
    let canary = Canary::start().await;
    let target = format!("http://127.0.0.1:{}/canary", canary.port);
    let addr = redirector(vec!["http://cdn2.example/1".into(), target]).await;
    let c = vodfleet_net::http_client_builder(true, Duration::from_secs(2))
        .resolve("cdn.example", addr)
        .resolve("cdn2.example", addr)
        .build()
        .unwrap();
    let r = c
        .get(format!("http://cdn.example:{}/0", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(canary.hits(), 1);
}
