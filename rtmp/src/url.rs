//! `rtmp://` and `rtmps://` destination URLs.
//!
//! `rtmp://host[:port]/app[/inst…]/name[?query]`: the port defaults to 1935 for
//! `rtmp` and 443 for `rtmps`; the application is every path segment but the last
//! (`live`, or `app/inst`), the stream name is the last segment plus the query,
//! sent verbatim (no `.flv`/`mp4:` rewriting). ffmpeg takes at most the first two
//! segments as the application; for one- and two-level applications (every
//! service we know) the two rules agree. `tcUrl` is `scheme://host:port/app`.
//!
//! The path and query are secrets (they hold the stream key): [`Target`]'s
//! `Display` and `Debug` print only [`Target::redacted`], and parse errors
//! describe the problem without quoting the URL.

use std::fmt;

use crate::error::RtmpError;

/// Plain or TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `rtmp://`, TCP, default port 1935.
    Rtmp,
    /// `rtmps://`, TLS over TCP, default port 443.
    Rtmps,
}

impl Scheme {
    /// `rtmp` or `rtmps`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Rtmp => "rtmp",
            Scheme::Rtmps => "rtmps",
        }
    }

    /// The port used when the URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Rtmp => 1935,
            Scheme::Rtmps => 443,
        }
    }
}

/// A parsed destination. Printing it shows only the redacted form.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    scheme: Scheme,
    host: String,
    port: u16,
    app: String,
    stream_name: String,
    tc_url: String,
}

fn bad(reason: &str) -> RtmpError {
    RtmpError::BadUrl {
        reason: reason.to_owned(),
    }
}

impl Target {
    /// Parses an `rtmp://` or `rtmps://` URL (rules in the module doc).
    pub fn parse(url: &str) -> Result<Target, RtmpError> {
        let url = url.trim();
        if url.chars().any(|c| c.is_control() || c == ' ') {
            return Err(bad("contains spaces or control characters"));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("no scheme (expected rtmp:// or rtmps://)"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "rtmp" => Scheme::Rtmp,
            "rtmps" => Scheme::Rtmps,
            _ => return Err(bad("scheme must be rtmp or rtmps")),
        };
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_query) = rest.split_at(auth_end);
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            None => scheme.default_port(),
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("port must be a number from 1 to 65535"))?,
        };
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_query, None),
        };
        let path = path.strip_prefix('/').unwrap_or(path);
        let segments: Vec<&str> = path.split('/').collect();
        if segments.len() < 2 {
            return Err(bad("the path must be /app/stream"));
        }
        if segments.iter().any(|s| s.is_empty()) {
            return Err(bad("empty path segment (the path must be /app/stream)"));
        }
        let (name, app) = segments.split_last().expect("two or more segments");
        let app = app.join("/");
        let stream_name = match query {
            Some(q) => format!("{name}?{q}"),
            None => (*name).to_owned(),
        };
        let host_in_url = host_for_url(host);
        Ok(Target {
            scheme,
            tc_url: format!("{}://{host_in_url}:{port}/{app}", scheme.as_str()),
            host: host.to_owned(),
            port,
            app,
            stream_name,
        })
    }

    /// `rtmp` or `rtmps`.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether this is an `rtmps://` target.
    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::Rtmps
    }

    /// Host name or IP address (IPv6 without brackets); also the TLS server name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port (the scheme's default when the URL names none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The application (`connect`'s `app`): every path segment but the last.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The stream name for `publish` (last segment plus `?query`). A secret.
    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }

    /// `scheme://host:port/app`, sent as `connect`'s `tcUrl`.
    pub fn tc_url(&self) -> &str {
        &self.tc_url
    }

    /// `rtmp://host:port/…`: the only form of a destination that may be printed.
    pub fn redacted(&self) -> String {
        format!(
            "{}://{}:{}/…",
            self.scheme.as_str(),
            host_for_url(&self.host),
            self.port
        )
    }

    /// The stream name and the key part of it (without the query): texts from the
    /// server have these removed before they are kept in an error.
    pub(crate) fn secrets(&self) -> [&str; 2] {
        let key = self
            .stream_name
            .split_once('?')
            .map(|(k, _)| k)
            .unwrap_or(&self.stream_name);
        [&self.stream_name, key]
    }
}

fn host_for_url(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), RtmpError> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed '[' in the host"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("unexpected text after ']' in the host"))?,
            ),
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("invalid IPv6 address in brackets"));
        }
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if !authority.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(bad("invalid character in the host name"));
    }
    Ok((host, port))
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Target").field(&self.redacted()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn parses_the_usual_forms() {
        // (url, host, port, app, stream name, tcUrl)
        let table = [
            (
                "rtmp://push.example/live/KEY",
                "push.example",
                1935,
                "live",
                "KEY",
                "rtmp://push.example:1935/live",
            ),
            (
                "rtmp://push.example:1936/live/KEY",
                "push.example",
                1936,
                "live",
                "KEY",
                "rtmp://push.example:1936/live",
            ),
            (
                "rtmps://live-api.example/rtmp/KEY",
                "live-api.example",
                443,
                "rtmp",
                "KEY",
                "rtmps://live-api.example:443/rtmp",
            ),
            (
                "RTMP://h/app/inst/KEY",
                "h",
                1935,
                "app/inst",
                "KEY",
                "rtmp://h:1935/app/inst",
            ),
            (
                "rtmp://h/live/KEY?token=a/b&x=1",
                "h",
                1935,
                "live",
                "KEY?token=a/b&x=1",
                "rtmp://h:1935/live",
            ),
            (
                "rtmp://127.0.0.1:19350/live/k",
                "127.0.0.1",
                19350,
                "live",
                "k",
                "rtmp://127.0.0.1:19350/live",
            ),
            (
                "rtmp://[::1]:1940/live/k",
                "::1",
                1940,
                "live",
                "k",
                "rtmp://[::1]:1940/live",
            ),
            (
                "rtmp://[::1]/live/k",
                "::1",
                1935,
                "live",
                "k",
                "rtmp://[::1]:1935/live",
            ),
            (
                "  rtmp://h/a/b/c/d  ",
                "h",
                1935,
                "a/b/c",
                "d",
                "rtmp://h:1935/a/b/c",
            ),
        ];
        for (url, host, port, app, name, tc) in table {
            let t = Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                (t.host(), t.port(), t.app(), t.stream_name(), t.tc_url()),
                (host, port, app, name, tc),
                "{url}"
            );
        }
        assert!(Target::parse("rtmps://h/a/k").unwrap().is_tls());
        assert!(!Target::parse("rtmp://h/a/k").unwrap().is_tls());
    }

    #[test]
    fn refuses_bad_urls_without_quoting_them() {
        let table = [
            "http://h/live/SECRET",
            "rtmp:/h/live/SECRET",
            "rtmp://h/SECRET",
            "rtmp://h/live/",
            "rtmp://h//SECRET",
            "rtmp://h",
            "rtmp://:1935/live/SECRET",
            "rtmp://h:0/live/SECRET",
            "rtmp://h:99999/live/SECRET",
            "rtmp://h:x/live/SECRET",
            "rtmp://user:pw@h/live/SECRET",
            "rtmp://h/live/SEC RET",
            "rtmp://[::1/live/SECRET",
            "rtmp://[nope]/live/SECRET",
            "rtmp://h%41/live/SECRET",
        ];
        for url in table {
            let e = Target::parse(url).expect_err(url);
            assert_eq!(e.kind(), ErrorKind::BadUrl, "{url}");
            let shown = format!("{e} {e:?}");
            assert!(
                !shown.contains("SECRET") && !shown.contains("pw"),
                "{url}: {shown}"
            );
        }
    }

    #[test]
    fn redacts_path_and_query() {
        let t = Target::parse("rtmp://push.example/live/SECRET?tok=abc").unwrap();
        assert_eq!(t.redacted(), "rtmp://push.example:1935/…");
        assert_eq!(t.to_string(), "rtmp://push.example:1935/…");
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("SECRET") && !dbg.contains("abc"), "{dbg}");
        assert_eq!(t.secrets(), ["SECRET?tok=abc", "SECRET"]);
        let v6 = Target::parse("rtmps://[::1]/a/SECRET").unwrap();
        assert_eq!(v6.redacted(), "rtmps://[::1]:443/…");
    }
}
