//! Task state in Redis (docs/design/fleet.md "Redis").
//!
//! Each transition of one task is one Lua script over that task's hash (and its
//! resume record, which shares the hash tag): atomic, so any number of
//! coordinator replicas may run the scheduler and the reaper at once. The
//! `due` sorted set and the `tasks` set only say where to look; the scripts
//! re-check every condition, so a stale or repeated index entry is harmless.
//!
//! Submodules: `scripts` (the Lua scripts), `transition` (the calls that run
//! them: start, issue, renew, release, finish, stop, set_spec, reclaim),
//! `record` (a task's live and resume records), `due` (the deadline index),
//! `applied` (which command last changed a task), `view` (what the API shows).

mod applied;
mod due;
mod record;
mod scripts;
mod transition;
mod view;

use redis::aio::ConnectionManager;
use serde::Serialize;
use vodfleet_proto::Position;

pub use record::{Deadlines, TaskRecord};
pub use transition::{Issued, Release, Renewal, Started};
pub use view::{DestinationView, TaskView};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("task {task}: stored record is unreadable: {cause}")]
    Corrupt { task: String, cause: String },
    /// The task moved on (a new epoch) while a command was changing it; applying
    /// the command again, against the new state, is the answer.
    #[error("task {task} changed while being updated")]
    Conflict { task: String },
}

impl StoreError {
    /// Whether waiting and trying again may help (Redis restarting, connection lost).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
            }
            StoreError::Conflict { .. } => true,
            StoreError::Corrupt { .. } => false,
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("fleet types serialise")
}

impl Store {
    pub async fn connect(url: &str) -> Result<Store> {
        let client = redis::Client::open(url)?;
        // ConnectionManager reconnects by itself after Redis restarts.
        let conn = ConnectionManager::new(client).await?;
        Ok(Store { conn })
    }

    /// A handle for one-off commands (shares the managed connection).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub async fn ping(&self) -> bool {
        let mut c = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok()
    }

    fn parse<T: for<'de> serde::Deserialize<'de>>(task: &str, s: &str) -> Result<T> {
        serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
            task: task.to_owned(),
            cause: e.to_string(),
        })
    }

    fn position(task: &str, s: &str) -> Result<Option<Position>> {
        if s.is_empty() {
            Ok(None)
        } else {
            Self::parse(task, s).map(Some)
        }
    }
}
