//! The command parser: any bytes as a seed-001 body (the HTTP API and the command
//! queue both call `parse_command`), as a `play` task entry, and as the fleet's own
//! messages (work orders, worker messages, control). Must never panic; an accepted
//! command must pass through JSON (how it is stored in Redis) unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vodfleet_proto::fleet::{ResumeRecord, ToWorker, WorkOrder, WorkerMessage};
use vodfleet_proto::{parse_command, parse_task_entry, Command, TaskSpec};

fn roundtrip<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_vec(v).expect("an accepted value serialises");
    let back: T = serde_json::from_slice(&json).expect("what we wrote reads back");
    assert_eq!(&back, v, "JSON round trip changed the value");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(cmd) = parse_command(data) {
        for now in [0, 1_700_000_000_000, u64::MAX] {
            let _ = cmd.check_timing(now, 300_000);
        }
        roundtrip::<Command>(&cmd);
    }
    if let Ok((spec, _)) = parse_task_entry(data) {
        roundtrip::<TaskSpec>(&spec);
    }
    let _ = serde_json::from_slice::<WorkOrder>(data);
    let _ = serde_json::from_slice::<WorkerMessage>(data);
    let _ = serde_json::from_slice::<ToWorker>(data);
    let _ = serde_json::from_slice::<ResumeRecord>(data);
});
