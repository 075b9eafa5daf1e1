//! Which network addresses an outbound fetch (a source, a watermark, a callback) may reach.
//!
//! The check runs where addresses become concrete: in the DNS resolver handed to
//! the HTTP client (so every connection, including each redirect hop, is checked
//! against the address actually dialled) and on IP-literal hosts, which bypass DNS.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Refuses addresses a fetched URL must never reach. `allow_private` opens
/// loopback and private ranges (tests, closed networks); link-local (which holds
/// the cloud metadata endpoints), unspecified, multicast and broadcast stay closed.
pub fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), String> {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let (always, private) = match ip {
        IpAddr::V4(a) => (v4_always_refused(a), v4_private(a)),
        IpAddr::V6(a) => (v6_always_refused(a), v6_private(a)),
    };
    if let Some(what) = always {
        return Err(format!("{ip} is a {what} address"));
    }
    if let Some(what) = private {
        if !allow_private {
            return Err(format!(
                "{ip} is a {what} address (set VODFLEET_ALLOW_PRIVATE_NETWORKS=true to allow it)"
            ));
        }
    }
    Ok(())
}

/// The IPv4 address an IPv6 one carries and may lead to: mapped (`::ffff:a.b.c.d`),
/// translated (`::ffff:0:a.b.c.d`), compatible (`::a.b.c.d`, deprecated), NAT64's
/// well-known prefix (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::`). Judged
/// as that IPv4 address, so `[::ffff:127.0.0.1]` is loopback and
/// `[64:ff9b::a9fe:a9fe]` is the metadata address.
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        // `::` and `::1` are IPv6's own unspecified and loopback addresses.
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 || lo > 1 => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

fn v4_always_refused(a: Ipv4Addr) -> Option<&'static str> {
    if a.is_link_local() {
        Some("link-local (metadata)")
    } else if a.is_unspecified() || a.octets()[0] == 0 {
        Some("unspecified")
    } else if a.is_multicast() || a.is_broadcast() {
        Some("multicast or broadcast")
    } else if a.octets()[0] >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn v4_private(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    if a.is_loopback() {
        Some("loopback")
    } else if a.is_private() {
        Some("private")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared (CGNAT)")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("benchmarking (private)")
    } else if o[..3] == [192, 0, 0] {
        Some("IETF protocol assignment (private)")
    } else {
        None
    }
}

fn v6_always_refused(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    if (s[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if a.is_unspecified() {
        Some("unspecified")
    } else if a.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

fn v6_private(a: Ipv6Addr) -> Option<&'static str> {
    if a.is_loopback() {
        Some("loopback")
    } else if (a.segments()[0] & 0xfe00) == 0xfc00 {
        Some("unique-local (private)")
    } else if (a.segments()[0] & 0xffc0) == 0xfec0 {
        Some("site-local (private)")
    } else {
        None
    }
}

/// Checks a URL's host when it is an IP literal (in any spelling the URL parser
/// accepts: `127.1`, `0x7f000001`, `2130706433`, `0177.0.0.1`, `[::ffff:127.0.0.1]`)
/// or a name that is loopback by definition (`localhost` and `*.localhost`, RFC
/// 6761). Other names are checked by [`PolicyResolver`] on the addresses they
/// resolve to.
pub fn check_url_host(url: &url::Url, allow_private: bool) -> Result<(), String> {
    match url.host() {
        Some(url::Host::Ipv4(a)) => check_ip(IpAddr::V4(a), allow_private),
        Some(url::Host::Ipv6(a)) => check_ip(IpAddr::V6(a), allow_private),
        Some(url::Host::Domain(d)) if is_localhost(d) && !allow_private => Err(format!(
            "{d} is a loopback address (set VODFLEET_ALLOW_PRIVATE_NETWORKS=true to allow it)"
        )),
        Some(_) => Ok(()),
        None => Err("URL has no host".into()),
    }
}

fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Whether a fetch may go to `url` at all: `http`/`https` only (never `file:`,
/// `ftp:`, `gopher:`, …), and its host per [`check_url_host`].
pub fn check_url(url: &url::Url, allow_private: bool) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{}: URLs are not fetched (http and https only)",
            url.scheme()
        ));
    }
    check_url_host(url, allow_private)
}

/// The decision on one redirect hop: at most [`MAX_REDIRECTS`] of them, each to a
/// URL [`check_url`] allows. Its name is then resolved through [`PolicyResolver`]
/// like the first hop's.
pub fn check_redirect(
    to: &url::Url,
    hops_before: usize,
    allow_private: bool,
) -> Result<(), String> {
    if hops_before >= MAX_REDIRECTS {
        return Err(format!("more than {MAX_REDIRECTS} redirects"));
    }
    check_url(to, allow_private).map_err(|e| format!("redirect refused by the URL policy: {e}"))
}

/// How many redirects one fetch follows.
pub const MAX_REDIRECTS: usize = 5;

/// DNS resolution that drops every address the policy refuses, so the client
/// can only ever dial an allowed address (no rebinding between check and connect).
#[derive(Clone)]
pub struct PolicyResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            match resolve_allowed(&host, allow).await {
                Ok(allowed) => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
                Err(NameError::Lookup(e)) => Err(e.into()),
                Err(NameError::Refused(why)) => Err(why.into()),
            }
        })
    }
}

/// Why a name gave no address to dial.
#[derive(Debug)]
pub enum NameError {
    /// DNS (or /etc/hosts) had no answer.
    Lookup(std::io::Error),
    /// Every address it resolves to is refused; the reason names one.
    Refused(String),
}

/// The addresses `host` resolves to that the policy allows (none: refused).
pub async fn resolve_allowed(
    host: &str,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, NameError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(NameError::Lookup)?
        .collect();
    let mut last_refusal = None;
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match check_ip(a.ip(), allow_private) {
            Ok(()) => true,
            Err(e) => {
                last_refusal = Some(e);
                false
            }
        })
        .collect();
    if allowed.is_empty() {
        let why = last_refusal.unwrap_or_else(|| "no addresses".into());
        return Err(NameError::Refused(format!(
            "{host} refused by the URL policy: {why}"
        )));
    }
    Ok(allowed)
}

/// An HTTP client that obeys the policy on every connection and redirect.
pub fn http_client(allow_private: bool, connect_timeout: std::time::Duration) -> reqwest::Client {
    http_client_builder(allow_private, connect_timeout)
        .build()
        .expect("static HTTP client configuration is valid")
}

/// [`http_client`]'s builder (tests add `resolve` overrides to reach a local
/// server under a public-looking name with the policy on).
pub fn http_client_builder(
    allow_private: bool,
    connect_timeout: std::time::Duration,
) -> reqwest::ClientBuilder {
    let redirect = reqwest::redirect::Policy::custom(move |attempt| {
        match check_redirect(attempt.url(), attempt.previous().len(), allow_private) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    });
    reqwest::Client::builder()
        .dns_resolver(Arc::new(PolicyResolver { allow_private }))
        .redirect(redirect)
        .connect_timeout(connect_timeout)
        // No proxy from the environment: a proxy would dial on our behalf, past the policy.
        .no_proxy()
        .user_agent(concat!("vodfleet/", env!("CARGO_PKG_VERSION")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_need_the_setting() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(
                check_ip(ip, false).is_err(),
                "{ip} must be refused by default"
            );
            assert!(
                check_ip(ip, true).is_ok(),
                "{ip} must be allowed with the setting"
            );
        }
    }

    #[test]
    fn metadata_and_link_local_are_always_refused() {
        for ip in ["169.254.169.254", "fe80::1", "0.0.0.0", "224.0.0.1", "::"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(check_ip(ip, true).is_err(), "{ip} must always be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        assert!(check_ip("93.184.216.34".parse().unwrap(), false).is_ok());
        assert!(check_ip("2606:2800:220:1::1".parse().unwrap(), false).is_ok());
    }

    /// The SSRF corpus of issue 9 row 8 as URLs, in every spelling the URL parser
    /// turns into an address: each refused with a reason that names the kind of address.
    #[test]
    fn every_spelling_of_a_refused_address_is_refused() {
        let loopback = [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://127.0.1/",
            "http://0x7f000001/",
            "http://0x7f.0.0.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://017700000001/",
            "http://127.000.000.001/",
            "http://127.255.255.254/",
            "http://[::1]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::ffff:0:127.0.0.1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::127.0.0.1]/",
            "http://[2002:7f00:1::]/",
            "http://localhost/",
            "http://LOCALHOST:8080/",
            "http://localhost./",
            "http://a.b.localhost/",
            "http://%6c%6f%63%61%6c%68%6f%73%74/",
            "http://①②⑦.0.0.1/",
        ];
        let private = [
            "http://10.0.0.1/",
            "http://10.255.255.255/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.0.1/",
            "http://0xc0a80001/",
            "http://3232235521/",
            "http://100.64.0.1/",
            "http://198.18.0.1/",
            "http://192.0.0.8/",
            "http://[fc00::1]/",
            "http://[fd12:3456::1]/",
            "http://[fec0::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[::ffff:192.168.1.1]/",
        ];
        let always = [
            "http://169.254.169.254/latest/meta-data",
            "http://169.254.170.2/",
            "http://0xa9fea9fe/",
            "http://2852039166/",
            "http://0251.0376.0251.0376/",
            "http://[::ffff:169.254.169.254]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[fe80::1]/",
            "http://0.0.0.0/",
            "http://0/",
            "http://[::]/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://240.0.0.1/",
        ];
        let parse = |raw: &str| url::Url::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        for raw in loopback.iter().chain(&private) {
            let u = parse(raw);
            let e = check_url(&u, false).expect_err(raw);
            let kind_named = ["loopback", "private", "CGNAT"]
                .iter()
                .any(|k| e.contains(k));
            assert!(
                kind_named && e.contains("VODFLEET_ALLOW_PRIVATE_NETWORKS"),
                "{raw}: {e}"
            );
            assert!(check_url(&u, true).is_ok(), "{raw} with the setting");
        }
        for raw in always {
            let u = parse(raw);
            for allow in [false, true] {
                let e = check_url(&u, allow).expect_err(raw);
                assert!(e.contains(" address"), "{raw}: {e}");
            }
        }
        for raw in [
            "file:///etc/passwd",
            "ftp://10.0.0.1/a.mp4",
            "gopher://127.0.0.1:70/_x",
            "dict://127.0.0.1:11211/",
            "ldap://x/",
            "data:text/plain,x",
        ] {
            let e = check_url(&parse(raw), true).expect_err(raw);
            assert!(e.contains("http and https only"), "{raw}: {e}");
        }
        // Names and addresses that are none of these pass (a DNS name is checked on
        // what it resolves to, by PolicyResolver).
        for raw in [
            "http://93.184.216.34/",
            "http://[2606:2800:220:1::1]/",
            "https://cdn.example/a.mp4",
            "http://localhost.example/",
        ] {
            assert!(check_url(&parse(raw), false).is_ok(), "{raw}");
        }
    }

    #[test]
    fn each_redirect_hop_is_checked_and_their_number_bounded() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert!(check_redirect(&u("https://cdn.example/b.mp4"), 0, false).is_ok());
        for to in [
            "http://127.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/",
            "http://10.1.2.3/",
            "file:///etc/passwd",
            "gopher://cdn.example/",
        ] {
            let e = check_redirect(&u(to), 1, false).expect_err(to);
            assert!(
                e.starts_with("redirect refused by the URL policy: "),
                "{to}: {e}"
            );
        }
        let e = check_redirect(&u("https://cdn.example/b.mp4"), MAX_REDIRECTS, true).unwrap_err();
        assert!(e.contains("more than 5 redirects"), "{e}");
    }

    #[test]
    fn ip_literal_urls_are_checked() {
        let u = url::Url::parse("http://169.254.169.254/latest/meta-data").unwrap();
        assert!(check_url_host(&u, true).is_err());
        let u = url::Url::parse("http://localhost:8080/a.mp4").unwrap();
        assert!(check_url_host(&u, false).is_err());
    }
}
