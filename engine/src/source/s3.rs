//! `s3://BUCKET/KEY` sources: the object is fetched with a presigned GET
//! (AWS Signature Version 4, query-string form) by the same HTTP client as any
//! `https` source, so the URL policy, the timeouts, the retries and the Range
//! resume all apply unchanged (docs/contract.md#src).
//!
//! The presigning is our own, about sixty lines over `hmac`/`sha2`, checked
//! against AWS's published example: a whole S3 client (or `rusty-s3` with its
//! date crate) for one signed GET would weigh more than what it saves.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Where S3 objects are fetched from, and with which credentials.
#[derive(Clone)]
pub struct S3Settings {
    /// `VODFLEET_S3_ENDPOINT`: `https://s3.REGION.amazonaws.com` by default;
    /// any S3 API (MinIO, Ceph, …) otherwise.
    pub endpoint: url::Url,
    /// `VODFLEET_S3_REGION`, else `AWS_REGION`, `AWS_DEFAULT_REGION`, `us-east-1`.
    pub region: String,
    /// `VODFLEET_S3_PATH_STYLE`: `ENDPOINT/BUCKET/KEY` rather than
    /// `BUCKET.ENDPOINT/KEY`; on by default for an endpoint that is an IP
    /// address or `localhost`.
    pub path_style: bool,
    /// `VODFLEET_S3_BUCKETS`: the buckets producers may name (comma-separated);
    /// empty: any bucket the credentials can read.
    pub buckets: Vec<String>,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    pub credentials: Option<Credentials>,
}

/// AWS credentials; the secret and the token are never printed.
#[derive(Clone)]
pub struct Credentials {
    pub key_id: String,
    pub secret: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint.as_str())
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("buckets", &self.buckets)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|c| c.key_id.as_str()),
            )
            .finish()
    }
}

impl S3Settings {
    /// Reads the variables above through `get`.
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<S3Settings, String> {
        let set = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let region = set("VODFLEET_S3_REGION")
            .or_else(|| set("AWS_REGION"))
            .or_else(|| set("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let raw = set("VODFLEET_S3_ENDPOINT")
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let endpoint = url::Url::parse(&raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                format!(
                    "VODFLEET_S3_ENDPOINT={:?} is not an http(s) URL",
                    vodfleet_proto::redact::source(&raw)
                )
            })?;
        let literal = matches!(
            endpoint.host(),
            Some(url::Host::Ipv4(_) | url::Host::Ipv6(_))
        ) || endpoint.host_str() == Some("localhost");
        let path_style = match set("VODFLEET_S3_PATH_STYLE") {
            None => literal,
            Some(_) => crate::config::flag(get, "VODFLEET_S3_PATH_STYLE")?,
        };
        let credentials = match (set("AWS_ACCESS_KEY_ID"), set("AWS_SECRET_ACCESS_KEY")) {
            (Some(key_id), Some(secret)) => Some(Credentials {
                key_id,
                secret,
                token: set("AWS_SESSION_TOKEN"),
            }),
            (None, None) => None,
            _ => return Err("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together".into()),
        };
        Ok(S3Settings {
            endpoint,
            region,
            path_style,
            buckets: set("VODFLEET_S3_BUCKETS")
                .map(|v| {
                    v.split(',')
                        .map(|b| b.trim().to_owned())
                        .filter(|b| !b.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            credentials,
        })
    }

    /// The presigned `https` URL of `s3://BUCKET/KEY`, valid for `expires`
    /// from `now_ms`, or why it cannot be fetched.
    pub fn presign(&self, s3_url: &str, now_ms: u64, expires: Duration) -> Result<String, String> {
        let u = url::Url::parse(s3_url).map_err(|e| e.to_string())?;
        let bucket = u.host_str().unwrap_or_default();
        let key = percent_decode(u.path().trim_start_matches('/'))
            .ok_or("the object key is not valid UTF-8 once decoded")?;
        if bucket.is_empty() || key.is_empty() {
            return Err("s3:// URLs name a bucket and an object: s3://BUCKET/KEY".into());
        }
        if !self.buckets.is_empty() && !self.buckets.iter().any(|b| b == bucket) {
            return Err(format!(
                "bucket {bucket:?} is not one this worker may read (VODFLEET_S3_BUCKETS)"
            ));
        }
        let c = self.credentials.as_ref().ok_or(
            "s3:// sources need AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the worker's environment",
        )?;
        let mut base = self.endpoint.clone();
        let path = if self.path_style {
            format!("/{}/{}", uri_encode(bucket, false), uri_encode(&key, false))
        } else {
            let host = format!("{bucket}.{}", self.endpoint.host_str().unwrap_or_default());
            base.set_host(Some(&host))
                .map_err(|e| format!("bucket {bucket:?}: {e}"))?;
            format!("/{}", uri_encode(&key, false))
        };
        let host = match base.port() {
            Some(p) => format!("{}:{p}", base.host_str().unwrap_or_default()),
            None => base.host_str().unwrap_or_default().to_owned(),
        };
        Ok(presigned(
            &base,
            &host,
            &path,
            &self.region,
            c,
            now_ms,
            expires,
        ))
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SigV4 query-string signing of `GET path` on `host` (docs: "Authenticating
/// Requests: Using Query Parameters").
fn presigned(
    base: &url::Url,
    host: &str,
    path: &str,
    region: &str,
    c: &Credentials,
    now_ms: u64,
    expires: Duration,
) -> String {
    // 2013-05-24T00:00:00Z → 20130524T000000Z
    let stamp: String = vodfleet_proto::civil::iso8601_utc(now_ms)
        .chars()
        .filter(|ch| *ch != '-' && *ch != ':')
        .collect();
    let date = &stamp[..8];
    let scope = format!("{date}/{region}/s3/aws4_request");
    let mut query = vec![
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".to_owned()),
        ("X-Amz-Credential", format!("{}/{scope}", c.key_id)),
        ("X-Amz-Date", stamp.clone()),
        (
            "X-Amz-Expires",
            expires.as_secs().clamp(1, 604_800).to_string(),
        ),
        ("X-Amz-SignedHeaders", "host".to_owned()),
    ];
    if let Some(t) = &c.token {
        query.push(("X-Amz-Security-Token", t.clone()));
    }
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, true), uri_encode(v, true)))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_request =
        format!("GET\n{path}\n{canonical_query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{}", c.secret).as_bytes(), date);
    for part in [region, "s3", "aws4_request"] {
        key = hmac(&key, part);
    }
    let signature = hex(&hmac(&key, &to_sign));
    format!(
        "{}://{host}{path}?{canonical_query}&X-Amz-Signature={signature}",
        base.scheme()
    )
}

/// AWS's URI encoding: every byte but `A-Za-z0-9-_.~` as `%XX`; `/` kept in
/// paths (`slash` false) and encoded in query values.
fn uri_encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `%XX` sequences decoded (the `url` crate leaves a path encoded).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hexval = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<S3Settings, String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        S3Settings::from_lookup(&|k: &str| {
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    /// AWS's published example of a presigned URL ("Authenticating Requests:
    /// Using Query Parameters", S3 API reference): bucket `examplebucket`,
    /// object `test.txt`, 24 h from 2013-05-24T00:00:00Z.
    #[test]
    fn presigning_matches_the_aws_example() {
        let s = settings(&[
            ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
            (
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            ),
            ("VODFLEET_S3_ENDPOINT", "https://s3.amazonaws.com"),
        ])
        .unwrap();
        assert!(!s.path_style);
        let url = s
            .presign(
                "s3://examplebucket/test.txt",
                1_369_353_600_000,
                Duration::from_secs(86_400),
            )
            .unwrap();
        assert_eq!(
            url,
            "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn path_style_ports_tokens_and_odd_keys() {
        let s = settings(&[
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            ("AWS_SESSION_TOKEN", "tok/en"),
            ("VODFLEET_S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("AWS_REGION", "eu-west-1"),
        ])
        .unwrap();
        assert!(s.path_style, "an IP endpoint is path-style");
        let url = s
            .presign("s3://media/a%20b/c+d.mp4", 0, Duration::from_secs(60))
            .unwrap();
        assert!(
            url.starts_with("http://127.0.0.1:9000/media/a%20b/c%2Bd.mp4?"),
            "{url}"
        );
        assert!(url.contains("X-Amz-Security-Token=tok%2Fen"), "{url}");
        assert!(url.contains("%2Feu-west-1%2Fs3%2F"), "{url}");
        assert!(!format!("{s:?}").contains("SK") && !format!("{s:?}").contains("tok"));
    }

    #[test]
    fn refusals_name_the_reason() {
        let none = settings(&[]).unwrap();
        assert_eq!(
            none.endpoint.as_str(),
            "https://s3.us-east-1.amazonaws.com/"
        );
        let e = none
            .presign("s3://b/k", 0, Duration::from_secs(60))
            .unwrap_err();
        assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
        let only = settings(&[
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            ("VODFLEET_S3_BUCKETS", "media, vod"),
        ])
        .unwrap();
        let e = only
            .presign("s3://other/k", 0, Duration::from_secs(60))
            .unwrap_err();
        assert!(
            e.contains("\"other\"") && e.contains("VODFLEET_S3_BUCKETS"),
            "{e}"
        );
        assert!(only
            .presign("s3://vod/k", 0, Duration::from_secs(60))
            .is_ok());
        let e = only
            .presign("s3://vod/", 0, Duration::from_secs(60))
            .unwrap_err();
        assert!(e.contains("s3://BUCKET/KEY"), "{e}");
        assert!(settings(&[("AWS_ACCESS_KEY_ID", "AK")]).is_err());
        assert!(settings(&[("VODFLEET_S3_ENDPOINT", "ftp://x")]).is_err());
        assert!(settings(&[("VODFLEET_S3_PATH_STYLE", "maybe")]).is_err());
    }
}
