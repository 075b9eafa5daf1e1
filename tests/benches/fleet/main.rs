//! Fleet benchmark (issue 3; results in docs/BENCHMARKS.md#fleet-issue-3): the
//! real `vodfleet-coordinator` and `vodfleet-worker run` against real RabbitMQ
//! (own vhost), Redis (own server) and nginx-rtmp, through the end-to-end harness
//! (`tests/src/fleet.rs`).
//!
//! ```sh
//! cargo build --release --bins          # the harness runs target/release/* for a bench
//! cargo bench -p vodfleet-tests --bench fleet                        # everything
//! cargo bench -p vodfleet-tests --bench fleet -- --quick             # fewer runs
//! cargo bench -p vodfleet-tests --bench fleet -- latency intake      # some sections
//! cargo bench -p vodfleet-tests --bench fleet -- --out /tmp/fleet.md # also write the tables
//! cargo bench -p vodfleet-tests --bench fleet -- intake --intake-n 40000 --intake-coordinators 1
//! ```
//!
//! Sections (names select them; none = all):
//!
//! - `latency`: command published (plain AMQP producer, confirmed) → the
//!   stream publishing in nginx's `/stat` (polled every 5 ms), N distinct
//!   tasks one at a time, each stopped (cmd 2) and gone before the next.
//! - `failover`: SIGKILL of the worker running a task → a new publisher at
//!   nginx (polled every 20 ms); position error from the frame numbers drawn
//!   into the media; publishers at once from `/stat` and nginx's refusals.
//!   Lease TTL 4000 ms (as in `fleet_failover.rs`) and the default 10000 ms.
//! - `handoff`: SIGTERM of that worker instead: publish gap (last sample with
//!   the old publisher → first with the new, polled every 20 ms), exit code.
//! - `intake`: cmd 1 with a start time 1 h ahead (tasks stay `scheduled`, no
//!   streaming), distinct ids, published as fast as one producer can
//!   (publisher confirms, pipelined), to a fleet of 1 then 2 coordinators and
//!   no worker: commands applied per second (tasks indexed over the 16 groups) and each
//!   coordinator's RSS/PSS (`/proc/PID/smaps_rollup`) as the tasks grow.
//!
//! Output: markdown tables on stdout (and in `--out FILE`). Failed checks are
//! reported in the tables, never panicked on, so one bad run does not hide the
//! others' figures.

use std::fmt::Write as _;

use vodfleet_tests::{Coordinator, Worker};

mod args;
mod failover;
mod handoff;
mod intake;
mod latency;
mod machine;
mod signal;
mod table;

use args::args;
use failover::failover;
use handoff::handoff;
use intake::intake;
use latency::latency;
use machine::{loadavg, machine, sh};

fn main() {
    let a = args();
    let bins = [Coordinator::bin(), Worker::bin()];
    let mut out = String::from("## Fleet (issue 3)\n\n");
    let _ = writeln!(
        out,
        "Run {} on {}.\n\nSource: HEAD {}. Binaries: {} (built {}).\n",
        sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        machine(),
        sh("git log -1 --format='%h (%ci)'"),
        bins.iter()
            .map(|b| format!("`{}`", b.display()))
            .collect::<Vec<_>>()
            .join(", "),
        bins.iter()
            .map(|b| sh(&format!("date -u -r '{}' '+%H:%M UTC'", b.display())))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for sec in &a.sections {
        eprintln!("== {sec} (load {})", loadavg());
        let t = match sec.as_str() {
            "latency" => latency(&a),
            "failover" => failover(&a),
            "handoff" => handoff(&a),
            "intake" => intake(&a),
            _ => unreachable!(),
        };
        print!("{t}");
        out.push_str(&t);
        if let Some(p) = &a.out {
            let _ = std::fs::write(p, &out);
        }
    }
    println!("\n---\n{out}");
}
