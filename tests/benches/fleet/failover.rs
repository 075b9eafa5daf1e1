//! 2. SIGKILL failover.

use super::args::{bench_cmd, Args};
use super::machine::loadavg;
use super::signal::{settle, signal_run};
use super::table::{ms, opt_i, opt_ms, verdict};
use std::fmt::Write as _;
use std::time::Duration;
use vodfleet_tests::fleet::{Fleet, FleetOptions, GOP};

pub fn failover(a: &Args) -> String {
    let plan: Vec<(u64, usize)> = if a.quick {
        vec![(4000, 2), (10000, 1)]
    } else {
        vec![(4000, 5), (10000, 2)]
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Worker SIGKILL → stream live again on the other worker\n\n\
         Fleet: 2 coordinators, 2 workers, heartbeats every 2000 ms (default). Each run: a loop-0 \
         task of a 90 s counter video (frame numbers drawn into the picture; 25 fps, GOP 50 \
         frames = 2 s) started through the queue, left streaming 5 s + (450 ms × run mod 2 s) so the kill \
         lands at different points of the GOP and of the heartbeat period, then its worker gets \
         SIGKILL; `/stat` polled every 20 ms. *Back* = SIGKILL → first sample with the new \
         publisher; *position error* = first frame number after − last frame before, read \
         from nginx's recordings of the two sessions (+ = frames skipped, − = frames shown \
         twice); *last heartbeat* and *lease left* from the task's Redis hash (`beat_ms`, \
         `lease_until`) read just before the kill, so *back − lease left* is what the failover \
         costs after the lease ran out (reaper period 250 ms + work order + worker start); *max publishers* = most publishers in one `/stat` sample; *refused* = \
         publish attempts nginx refused as \"already publishing\". The killed worker is \
         replaced after each run.\n\nCommand: {}\n",
        bench_cmd("failover", a)
    );
    let _ = writeln!(
        s,
        "| lease TTL | run | back (ms) | target (ms) | last heartbeat before the kill (ms) | lease left at the kill (ms) | back − lease left (ms) | position error (frames) | max publishers | refused | sessions | load avg after | note |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut summary = Vec::new();
    for (ttl, runs) in plan {
        let mut fleet = Fleet::start(FleetOptions::default().lease_ttl_ms(ttl));
        let limit = Duration::from_millis(ttl + 2000);
        let mut backs = Vec::new();
        let mut errs = Vec::new();
        let mut ok = true;
        for r in 1..=runs {
            let run = signal_run(&mut fleet, true, settle(5000, r), Duration::from_millis(20));
            let j = run.judged.as_ref().expect("judged");
            let err = j.error();
            eprintln!(
                "failover ttl {ttl} run {r}: back {:?}, error {err:?}, publishers {}",
                run.back, j.max_publishers
            );
            ok &= run.back.is_some_and(|b| b <= limit)
                && err.is_some_and(|e| e.unsigned_abs() <= GOP as u64)
                && j.max_publishers <= 1
                && j.refused == 0;
            if let Some(b) = run.back {
                backs.push(b);
            }
            if let Some(e) = err {
                errs.push(e);
            }
            let _ = writeln!(
                s,
                "| {ttl} ms | {r} | {} | ≤ {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                opt_ms(run.back),
                limit.as_millis(),
                opt_i(run.since_beat),
                opt_i(run.lease_left),
                match (run.back, run.lease_left) {
                    (Some(b), Some(l)) => format!("{}", b.as_millis() as i64 - l),
                    _ => "—".into(),
                },
                err.map(|e| format!("{e:+}")).unwrap_or_else(|| "—".into()),
                j.max_publishers,
                j.refused,
                j.sessions,
                loadavg(),
                run.note
            );
        }
        let mean = backs.iter().sum::<Duration>() / backs.len().max(1) as u32;
        let max = backs.iter().max().copied().unwrap_or_default();
        let mean_err = errs.iter().map(|e| e.abs()).sum::<i64>() as f64 / errs.len().max(1) as f64;
        let max_err = errs.iter().map(|e| e.abs()).max().unwrap_or(0);
        summary.push(format!(
            "| {ttl} ms | {} | {} / {} | ≤ {} | {:.1} / {} | ≤ {GOP} (1 GOP) | {} |",
            backs.len(),
            ms(mean),
            ms(max),
            limit.as_millis(),
            mean_err,
            max_err,
            verdict(ok && backs.len() == runs)
        ));
    }
    let _ = writeln!(
        s,
        "\n| lease TTL | runs | back, mean / max (ms) | target (ms) | |position error|, mean / max (frames) | target | verdict (all runs, incl. never two publishers) |\n|---|---|---|---|---|---|---|"
    );
    for l in summary {
        let _ = writeln!(s, "{l}");
    }
    s.push('\n');
    s
}
