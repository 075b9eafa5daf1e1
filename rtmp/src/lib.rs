//! vodfleet's own FLV tag writer and RTMP(S) publisher.
//!
//! - [`url`]: `rtmp://`/`rtmps://` targets, with the only printable (redacted) form.
//! - [`flv`]: FLV tag bodies (AVC, AAC, MP3, `onMetaData`), one shared `Bytes` each.
//! - [`publish`]: [`Publisher`]: connect, queue tags, flush with vectored writes.
//! - Protocol layers: [`handshake`], [`chunk`] (chunk stream writer/reader),
//!   [`message`] (control and command messages), [`amf0`].
//! - [`error`]: [`RtmpError`] and the [`ErrorKind`] that decides retry or report.
//!
//! Stream keys (the path and query of a destination URL) never appear in an
//! error, a `Debug`/`Display` output or a log line of this crate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod amf0;
pub mod chunk;
pub mod error;
pub mod flv;
pub mod handshake;
pub mod message;
pub mod publish;
pub mod url;

pub use error::{ErrorKind, RtmpError};
pub use flv::FlvError;
pub use publish::{PublishOptions, Publisher, Tag, TagKind, TlsRoots};
pub use url::Target;
