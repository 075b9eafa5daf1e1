//! Wire types shared by every vodfleet process.
//!
//! - [`command`]: the seed-001 command contract, validated (docs/contract.md).
//! - [`position`], [`fleet`]: what coordinators and workers exchange (docs/design/fleet.md).
//! - [`sign`]: HMAC-SHA256 signatures for the HTTP API and callbacks.
//! - [`redact`]: the one place that decides how a URL may be printed.
//! - [`civil`]: calendar times (absofftime, a recording's start time).

pub mod civil;
pub mod command;
pub mod error;
pub mod fleet;
pub mod position;
pub mod redact;
pub mod sign;
pub mod wire;

pub use command::{parse_command, parse_task_entry, Cmd, Command, TaskSpec};
pub use error::{FieldError, RejectKind};
pub use position::Position;
