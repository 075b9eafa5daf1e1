//! 3. SIGTERM hand-off.

use super::args::{bench_cmd, Args};
use super::machine::loadavg;
use super::signal::{settle, signal_run};
use super::table::{ms, opt_ms, verdict};
use std::fmt::Write as _;
use std::time::Duration;
use vodfleet_tests::fleet::{Fleet, FleetOptions, GOP};

pub fn handoff(a: &Args) -> String {
    let runs = if a.quick { 2 } else { 5 };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Worker SIGTERM (scale-down) → stream live again\n\n\
         Fleet: 2 coordinators, 2 workers, lease TTL 10000 ms (the default; a hand-off does not \
         wait for it), drain timeout 20000 ms (default). Same task and media as above, streaming 4 s + (450 ms × run \
         mod 2 s), then SIGTERM to its worker; `/stat` polled every 20 ms. *Gap* = last sample showing the old \
         publisher → first sample showing the new one (an upper bound of the time the stream \
         had no publisher, ±20 ms); *back* = SIGTERM → first sample with the new publisher; \
         *exit* = the worker's exit status and when it came.\n\nCommand: {}\n",
        bench_cmd("handoff", a)
    );
    let _ = writeln!(
        s,
        "| run | gap (ms) | target | back (ms) | old publisher last seen (ms after SIGTERM) | exit code | exit after (ms) | position error (frames) | max publishers | refused | load avg after | note |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut fleet = Fleet::start(FleetOptions::default().lease_ttl_ms(10000));
    let mut gaps = Vec::new();
    let mut ok = true;
    for r in 1..=runs {
        let run = signal_run(
            &mut fleet,
            false,
            settle(4000, r),
            Duration::from_millis(20),
        );
        let j = run.judged.as_ref().expect("judged");
        let err = j.error();
        eprintln!(
            "handoff run {r}: gap {:?}, exit {:?}, error {err:?}",
            run.gap, run.exit
        );
        ok &= run.gap.is_some_and(|g| g <= Duration::from_secs(2))
            && run.exit.as_deref() == Some("0")
            && j.max_publishers <= 1
            && j.refused == 0
            && err.is_some_and(|e| e.unsigned_abs() <= GOP as u64);
        if let Some(g) = run.gap {
            gaps.push(g);
        }
        let _ = writeln!(
            s,
            "| {r} | {} | ≤ 2000 | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            opt_ms(run.gap),
            opt_ms(run.back),
            opt_ms(run.old_gone),
            run.exit.clone().unwrap_or_default(),
            opt_ms(run.exit_after),
            err.map(|e| format!("{e:+}")).unwrap_or_else(|| "—".into()),
            j.max_publishers,
            j.refused,
            loadavg(),
            run.note
        );
    }
    let mean = gaps.iter().sum::<Duration>() / gaps.len().max(1) as u32;
    let max = gaps.iter().max().copied().unwrap_or_default();
    let _ = writeln!(
        s,
        "\nGap mean / max: {} / {} ms, target ≤ 2000 ms, every worker exiting 0, never two publishers: {}\n",
        ms(mean),
        ms(max),
        verdict(ok && gaps.len() == runs)
    );
    s
}
