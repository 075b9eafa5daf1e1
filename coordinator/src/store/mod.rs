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
//! `renew` (a heartbeat's renewals), `pipeline` (commands over many tasks,
//! one pipeline per master), `slots` (which cluster master holds a key),
//! `applied` (which command last changed a task), `view` (what the API
//! shows), `page` (the paged listing), `migrate` (the unsharded indexes of
//! before).
//!
//! The store runs on one Redis or on a Redis Cluster ([`Conn`]) through the same
//! code: no command or script touches keys of two slots. The indexes are
//! sharded into `keys::GROUPS` groups (docs/design/fleet.md "Redis"), and
//! reads over several tasks are issued per key, concurrently, except where
//! they run often (a heartbeat's renewals and index moves, the reaper's reads
//! of the index, the state count): those go one pipeline per master.

mod applied;
mod due;
mod migrate;
mod page;
mod pipeline;
mod record;
mod renew;
mod scripts;
mod slots;
mod transition;
mod view;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, Value};
use serde::Serialize;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use vodfleet_proto::Position;

pub use page::{Cursor, Page};
pub use record::{Deadlines, TaskRecord};
pub use renew::IndexMove;
pub use transition::{Issued, Release, Renewal, Started};
pub use view::{DestinationView, TaskView};

/// How many reads over several tasks are in flight at once (each its own
/// command: a pipeline may not span cluster slots).
const READS_IN_FLIGHT: usize = 64;

/// What went wrong with the task store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis answered with an error or could not be reached.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A record that does not parse (written by something else, or damaged).
    #[error("task {task}: stored record is unreadable: {cause}")]
    Corrupt {
        /// The task's id.
        task: String,
        /// Why it does not parse.
        cause: String,
    },
    /// The task moved on (a new epoch) while a command was changing it; applying
    /// the command again, against the new state, is the answer.
    #[error("task {task} changed while being updated")]
    Conflict {
        /// The task's id.
        task: String,
    },
}

impl StoreError {
    /// Whether waiting and trying again may help: Redis restarting, a lost
    /// connection, or a Redis Cluster failing over. The cluster client already
    /// follows MOVED/ASK and waits out TRYAGAIN, CLUSTERDOWN, MASTERDOWN and
    /// LOADING a few times itself; what still reaches us after its retries
    /// (a failover takes 3-5 s with `cluster-node-timeout 2000`) is retried here.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.is_cluster_error()
                    || matches!(
                        e.kind(),
                        ErrorKind::BusyLoadingError
                            | ErrorKind::TryAgain
                            | ErrorKind::ClusterDown
                            | ErrorKind::MasterDown
                            | ErrorKind::Moved
                            | ErrorKind::Ask
                            // A write that reached a master just demoted to replica.
                            | ErrorKind::ReadOnly
                            | ErrorKind::ClusterConnectionNotFound
                    )
            }
            StoreError::Conflict { .. } => true,
            StoreError::Corrupt { .. } => false,
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// A connection to one Redis or to a Redis Cluster. An enum rather than a
/// generic Store so that every caller keeps one concrete, cloneable type, and
/// both variants run the very same commands and scripts.
#[derive(Clone)]
pub enum Conn {
    /// One Redis: reconnects by itself after Redis restarts.
    Single(ConnectionManager),
    /// A Redis Cluster: routes each command by its key's slot, follows
    /// redirects and refreshes the slot map after a failover.
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The coordinator's task store (cheap to clone: one shared connection).
#[derive(Clone)]
pub struct Store {
    conn: Conn,
    /// The index group the reaper's next pass starts at (round-robin).
    next_group: Arc<AtomicU32>,
    /// Which master holds which slots (a Redis Cluster; empty on one Redis).
    slots: Arc<std::sync::RwLock<slots::SlotMap>>,
    /// Renewals sent one by one after their pipeline failed
    /// (`vodfleet_renewals_unpipelined_total`, [`Store::unpipelined`]).
    one_by_one: prometheus::IntCounter,
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("fleet types serialise")
}

impl Store {
    /// Connects to one Redis at `url`.
    pub async fn connect(url: &str) -> Result<Store> {
        let client = redis::Client::open(url)?;
        // ConnectionManager reconnects by itself after Redis restarts.
        let conn = ConnectionManager::new(client).await?;
        Ok(Store::with(Conn::Single(conn)))
    }

    /// Connects to a Redis Cluster through `seeds` (comma-separated
    /// `redis://host:port` URLs; any one that answers will do).
    pub async fn connect_cluster(seeds: &str) -> Result<Store> {
        let nodes: Vec<&str> = seeds
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let client = redis::cluster::ClusterClient::builder(nodes)
            // A failover takes 3-5 s (cluster-node-timeout 2000): the client's own
            // retries cover part of it, StoreError::is_transient the rest.
            .retries(6)
            .connection_timeout(std::time::Duration::from_secs(2))
            .response_timeout(std::time::Duration::from_secs(5))
            .build()?;
        let conn = client.get_async_connection().await?;
        let store = Store::with(Conn::Cluster(conn));
        store.refresh_slots().await;
        Ok(store)
    }

    /// Connects as the configuration says: a cluster when `cluster` is set.
    pub async fn open(url: &str, cluster: bool) -> Result<Store> {
        if cluster {
            Store::connect_cluster(url).await
        } else {
            Store::connect(url).await
        }
    }

    fn with(conn: Conn) -> Store {
        Store {
            conn,
            next_group: Arc::new(AtomicU32::new(0)),
            slots: Default::default(),
            one_by_one: prometheus::IntCounter::new(
                "vodfleet_renewals_unpipelined_total",
                "Lease renewals sent one by one because their pipeline failed (a slot moved, a Redis Cluster failover)",
            )
            .expect("valid metric"),
        }
    }

    /// A handle for one-off commands (shares the store's connection); for
    /// keys of one slot per command only.
    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Whether the store runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// Whether Redis answers (every master, on a cluster).
    pub async fn ping(&self) -> bool {
        let mut c = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok()
    }

    /// Runs `f` over `items` with up to [`READS_IN_FLIGHT`] at once, results in
    /// the order of `items`.
    async fn each<I, T, F, Fut>(&self, items: I, f: F) -> Result<Vec<T>>
    where
        I: IntoIterator,
        F: FnMut(I::Item) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        use futures_util::{StreamExt, TryStreamExt};
        // The futures are made first: a closure inside the stream's type trips
        // the compiler's Send check (higher-ranked lifetimes) in axum handlers.
        let futures: Vec<Fut> = items.into_iter().map(f).collect();
        futures_util::stream::iter(futures)
            .buffered(READS_IN_FLIGHT)
            .try_collect()
            .await
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
