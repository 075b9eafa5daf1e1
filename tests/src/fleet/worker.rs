//! A running `vodfleet-worker run` ([`FleetWorker`]).

use super::{env_value, temp_dir, Proc};
use crate::media::media_dir;
use crate::unique;
use std::fs;
use std::ops::{Deref, DerefMut};

/// A running `vodfleet-worker run`.
pub struct FleetWorker {
    proc: Proc,
    id: String,
}

impl Deref for FleetWorker {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl DerefMut for FleetWorker {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

impl FleetWorker {
    /// Spawns `vodfleet-worker run` with a unique `VODFLEET_WORKER_ID`, 4 slots,
    /// the test media as `VODFLEET_MEDIA_ROOT`, private networks allowed and a
    /// fresh cache directory; `env` comes last and wins (it must carry
    /// `VODFLEET_AMQP_URL`).
    pub fn start(env: &[(String, String)]) -> FleetWorker {
        let id = env_value(env, "VODFLEET_WORKER_ID").unwrap_or_else(|| unique("w"));
        let dir = temp_dir("vodfleet-fleetworker-");
        let cache = dir.path().join("cache");
        fs::create_dir_all(&cache).expect("mkdir cache");
        let mut all: Vec<(String, String)> = vec![
            ("VODFLEET_WORKER_ID".into(), id.clone()),
            ("VODFLEET_WORKER_SLOTS".into(), "4".into()),
            (
                "VODFLEET_MEDIA_ROOT".into(),
                media_dir().display().to_string(),
            ),
            ("VODFLEET_ALLOW_PRIVATE_NETWORKS".into(), "true".into()),
            ("VODFLEET_CACHE_DIR".into(), cache.display().to_string()),
        ];
        all.extend(env.iter().cloned());
        let proc = Proc::spawn(
            format!("vodfleet-worker run ({id})"),
            dir,
            &crate::Worker::bin(),
            &["run"],
            &all,
        );
        FleetWorker { proc, id }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `vodfleet_worker_streams_active` from `/metrics`.
    pub fn streams_active(&self) -> Option<f64> {
        self.metric("vodfleet_worker_streams_active")
    }
}
