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
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
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

fn v4_always_refused(a: Ipv4Addr) -> Option<&'static str> {
    if a.is_link_local() {
        Some("link-local (metadata)")
    } else if a.is_unspecified() || a.octets()[0] == 0 {
        Some("unspecified")
    } else if a.is_multicast() || a.is_broadcast() {
        Some("multicast or broadcast")
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
    } else {
        None
    }
}

/// Checks a URL's host when it is an IP literal (DNS names are checked by [`PolicyResolver`]).
pub fn check_url_host(url: &url::Url, allow_private: bool) -> Result<(), String> {
    match url.host() {
        Some(url::Host::Ipv4(a)) => check_ip(IpAddr::V4(a), allow_private),
        Some(url::Host::Ipv6(a)) => check_ip(IpAddr::V6(a), allow_private),
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") && !allow_private => {
            Err("localhost is a loopback address (set VODFLEET_ALLOW_PRIVATE_NETWORKS=true to allow it)".into())
        }
        Some(_) => Ok(()),
        None => Err("URL has no host".into()),
    }
}

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
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut last_refusal = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match check_ip(a.ip(), allow) {
                    Ok(()) => true,
                    Err(e) => {
                        last_refusal = Some(e);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = last_refusal.unwrap_or_else(|| "no addresses".into());
                return Err(format!("{host} refused by the URL policy: {why}").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An HTTP client that obeys the policy on every connection and redirect.
pub fn http_client(allow_private: bool, connect_timeout: std::time::Duration) -> reqwest::Client {
    let redirect = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("more than 5 redirects");
        }
        let u = attempt.url();
        if !matches!(u.scheme(), "http" | "https") {
            let msg = format!("redirect to a {} URL refused", u.scheme());
            return attempt.error(msg);
        }
        match check_url_host(u, allow_private) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(format!("redirect refused by the URL policy: {e}")),
        }
    });
    reqwest::Client::builder()
        .dns_resolver(Arc::new(PolicyResolver { allow_private }))
        .redirect(redirect)
        .connect_timeout(connect_timeout)
        // No proxy from the environment: a proxy would dial on our behalf, past the policy.
        .no_proxy()
        .user_agent(concat!("vodfleet/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("static HTTP client configuration is valid")
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

    #[test]
    fn ip_literal_urls_are_checked() {
        let u = url::Url::parse("http://169.254.169.254/latest/meta-data").unwrap();
        assert!(check_url_host(&u, true).is_err());
        let u = url::Url::parse("http://localhost:8080/a.mp4").unwrap();
        assert!(check_url_host(&u, false).is_err());
    }
}
