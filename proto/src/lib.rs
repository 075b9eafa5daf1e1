//! Wire types shared by every vodfleet process.
//!
//! - [`command`]: the seed-001 command contract, validated (DESIGN §3).
//! - [`position`], [`work`]: what coordinators and workers exchange (DESIGN §4).
//! - [`redact`]: the one place that decides how a URL may be printed.

pub mod command;
pub mod error;
pub mod position;
pub mod redact;
pub mod wire;
pub mod work;

pub use command::{parse_command, parse_task_entry, Cmd, Command, TaskSpec};
pub use error::{FieldError, RejectKind};
pub use position::Position;
