//! Stream keys and signed query strings are secrets. Everything that prints a
//! URL (logs, errors, metrics, callbacks to third parties, listings) goes through here.

use url::Url;

/// A destination URL with its path and query (the stream key) hidden:
/// `rtmp://host:1935/live/secret?token=x` becomes `rtmp://host:1935/…`.
pub fn destination(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(u) => format!("{}://{}/…", u.scheme(), host_port(&u)),
        Err(_) => "<unparseable url>".to_owned(),
    }
}

/// A source URL without credentials or query (signed URLs carry tokens there):
/// `https://user:pw@cdn/a/b.mp4?sig=x` becomes `https://cdn/a/b.mp4?…`.
pub fn source(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(u) => {
            let q = if u.query().is_some() { "?…" } else { "" };
            format!("{}://{}{}{q}", u.scheme(), host_port(&u), u.path())
        }
        Err(_) => "<unparseable url>".to_owned(),
    }
}

fn host_port(u: &Url) -> String {
    let host = u.host_str().unwrap_or("");
    match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn destination_hides_path_and_query() {
        let r = super::destination("rtmp://push.example:1935/live/SECRET?tok=abc");
        assert_eq!(r, "rtmp://push.example:1935/…");
        assert!(!r.contains("SECRET") && !r.contains("abc"));
    }

    #[test]
    fn source_hides_userinfo_and_query() {
        let r = super::source("https://u:pw@cdn.example/a/b.mp4?sig=zzz");
        assert_eq!(r, "https://cdn.example/a/b.mp4?…");
    }
}
