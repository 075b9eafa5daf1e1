//! The one error type of this crate and the kind that decides what a caller does.
//!
//! Messages never contain a stream key: URL errors describe what is wrong without
//! quoting the URL, and texts that come from a server (onStatus descriptions) have
//! the stream name cut out before they are stored (see [`RtmpError::refused`]).

use std::time::Duration;

/// What an error means for the caller.
///
/// `Refused`, `BadUrl` and `Config` are final (report, don't retry);
/// `Unreachable`, `TimedOut`, `Closed` and `Protocol` are worth a retry with
/// backoff, bounded by the caller's attempt limit ([`ErrorKind::is_retryable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The server said no: `_error` to connect or createStream, an onStatus with
    /// level `error` (`NetStream.Publish.BadName`, `.Denied`, …), or it closed the
    /// connection in answer to `publish` (nginx-rtmp's `on_publish` refusing).
    Refused,
    /// No connection: DNS failure, TCP refused/unreachable, or a TLS handshake
    /// failure (an untrusted certificate is [`RtmpError::Tls`] with this kind: the
    /// server side may still fix it, so the attempt limit decides).
    Unreachable,
    /// A deadline passed: connect + handshake + commands, or one flush.
    TimedOut,
    /// An established connection was lost (EOF, reset, broken pipe).
    Closed,
    /// The server sent something that is not valid RTMP/AMF0.
    Protocol,
    /// The destination URL cannot be used (scheme, host, port, app, stream name).
    BadUrl,
    /// Local configuration is unusable (the extra CA file for rtmps).
    Config,
}

impl ErrorKind {
    /// Whether reconnecting (with backoff, a bounded number of times) may help.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Unreachable | ErrorKind::TimedOut | ErrorKind::Closed | ErrorKind::Protocol
        )
    }
}

/// Everything that can go wrong in this crate. Cheap to clone (the publisher's
/// reader task and its writer both hand the same error out).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RtmpError {
    /// The URL is unusable; `reason` says why without quoting it.
    #[error("bad RTMP URL: {reason}")]
    BadUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// Local configuration (e.g. the extra CA file) is unusable.
    #[error("RTMP configuration: {reason}")]
    Config {
        /// What is wrong, naming the file.
        reason: String,
    },
    /// DNS or TCP failed.
    #[error("cannot connect: {reason}")]
    Unreachable {
        /// The resolver's or the socket's error, with host:port.
        reason: String,
    },
    /// The TLS handshake failed (e.g. the server's certificate is not trusted).
    /// Its kind is [`ErrorKind::Unreachable`].
    #[error("TLS handshake failed: {reason}")]
    Tls {
        /// rustls' reason (e.g. `invalid peer certificate: UnknownIssuer`).
        reason: String,
    },
    /// A deadline passed.
    #[error("timed out after {after:?} ({stage})")]
    TimedOut {
        /// What was going on: `connecting`, `TLS handshake`, `RTMP handshake`,
        /// `connect`, `createStream`, `publish`, `flush`.
        stage: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// An established connection is gone.
    #[error("connection closed: {reason}")]
    Closed {
        /// EOF or the socket error.
        reason: String,
    },
    /// The server refused; `code` is its status code (e.g.
    /// `NetStream.Publish.BadName`) and `description` its text, stream name removed.
    #[error("refused by the server: {code}{}", if description.is_empty() { String::new() } else { format!(" ({description})") })]
    Refused {
        /// The status code, or a short phrase when the server only hung up.
        code: String,
        /// The server's description, without the stream name, at most 200 characters.
        description: String,
    },
    /// The server sent invalid data.
    #[error("RTMP protocol error: {reason}")]
    Protocol {
        /// What could not be parsed.
        reason: String,
    },
}

impl RtmpError {
    /// What this error means for the caller.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RtmpError::BadUrl { .. } => ErrorKind::BadUrl,
            RtmpError::Config { .. } => ErrorKind::Config,
            RtmpError::Unreachable { .. } | RtmpError::Tls { .. } => ErrorKind::Unreachable,
            RtmpError::TimedOut { .. } => ErrorKind::TimedOut,
            RtmpError::Closed { .. } => ErrorKind::Closed,
            RtmpError::Refused { .. } => ErrorKind::Refused,
            RtmpError::Protocol { .. } => ErrorKind::Protocol,
        }
    }

    /// Shorthand for [`RtmpError::Protocol`].
    pub fn protocol(reason: impl Into<String>) -> RtmpError {
        RtmpError::Protocol {
            reason: reason.into(),
        }
    }

    /// A refusal whose server-supplied texts have every occurrence of `secret`
    /// (the stream name, possibly with its query) replaced by `…`.
    pub fn refused(code: &str, description: &str, secrets: &[&str]) -> RtmpError {
        RtmpError::Refused {
            code: scrub(code, secrets),
            description: scrub(description, secrets),
        }
    }
}

/// `text` with each non-empty secret replaced by `…`, cut to 200 characters.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut s = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        s = s.replace(secret, "…");
    }
    if s.chars().count() > 200 {
        s = s.chars().take(200).collect::<String>() + "…";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_decide_retry() {
        assert!(!RtmpError::refused("NetStream.Publish.BadName", "", &[])
            .kind()
            .is_retryable());
        assert!(RtmpError::Closed {
            reason: "eof".into()
        }
        .kind()
        .is_retryable());
        assert_eq!(
            RtmpError::Tls { reason: "x".into() }.kind(),
            ErrorKind::Unreachable
        );
        assert!(!ErrorKind::BadUrl.is_retryable());
        assert!(!ErrorKind::Config.is_retryable());
    }

    #[test]
    fn refusal_texts_lose_the_stream_name() {
        let e = RtmpError::refused(
            "NetStream.Publish.BadName",
            "stream SECRETKEY?tok=1 is already publishing (SECRETKEY)",
            &["SECRETKEY?tok=1", "SECRETKEY"],
        );
        let shown = e.to_string();
        assert!(!shown.contains("SECRETKEY"), "{shown}");
        assert!(shown.contains("NetStream.Publish.BadName"), "{shown}");
        let long = RtmpError::refused("c", &"x".repeat(500), &[]);
        let RtmpError::Refused { description, .. } = long else {
            unreachable!()
        };
        assert_eq!(description.chars().count(), 201);
    }
}
