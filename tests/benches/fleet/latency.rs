//! 1. Command published → first media at the RTMP server.

use super::args::{bench_cmd, Args};
use super::machine::{loadavg, others_running};
use super::table::{ms, pct, verdict};
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use vodfleet_tests::fleet::{long_counter, Fleet, FleetOptions};
use vodfleet_tests::poll;

pub fn latency(a: &Args) -> String {
    let n = a.latency_n.unwrap_or(if a.quick { 10 } else { 40 });
    let warm = 2;
    let load0 = loadavg();
    let fleet = Fleet::start(FleetOptions::default());
    let producer = fleet.producer();
    let media = long_counter();
    let poll_every = Duration::from_millis(5);
    let mut lat = Vec::new();
    let mut confirm = Vec::new();
    let mut failures = Vec::new();
    for i in 0..warm + n {
        let task = fleet.new_task(&[&media], 1);
        let key = task.key().to_owned();
        let body = task.start(0);
        let t0 = Instant::now();
        producer.send(&body);
        let confirmed = t0.elapsed();
        let seen = poll_fast(Duration::from_secs(15), poll_every, || {
            fleet.rtmp.is_publishing(&key)
        });
        match seen {
            Some(()) => {
                let d = t0.elapsed();
                eprintln!("latency {i}: {d:?} (publish confirmed after {confirmed:?})");
                if i >= warm {
                    lat.push(d);
                    confirm.push(confirmed);
                }
            }
            None => failures.push(format!("task {i}: not publishing within 15 s")),
        }
        producer.send(&task.stop());
        if poll(Duration::from_secs(15), || {
            (!fleet.rtmp.has_stream(&key)).then_some(())
        })
        .is_none()
        {
            failures.push(format!("task {i}: still at nginx 15 s after cmd 2"));
        }
    }
    let load1 = loadavg();
    lat.sort();
    confirm.sort();
    let (p50, p90, p99, max) = (
        pct(&lat, 50.0),
        pct(&lat, 90.0),
        pct(&lat, 99.0),
        *lat.last().unwrap_or(&Duration::ZERO),
    );
    let min = *lat.first().unwrap_or(&Duration::ZERO);
    let mean = lat.iter().sum::<Duration>() / lat.len().max(1) as u32;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Command published → first media at the RTMP server\n\n\
         {n} starts of distinct tasks (after {warm} warm-up starts not counted), one at a time, \
         each a loop-0 task of a local `vod://` file (320x240 25 fps H.264/AAC, 2 s GOP) into one \
         destination on the fleet's nginx-rtmp; published with the harness's plain AMQP producer \
         (persistent, publisher confirm awaited); timed from just before `basic.publish` to the \
         first `/stat` poll (every 5 ms) that shows the stream publishing; each task stopped \
         with cmd 2 and gone from `/stat` before the next. Fleet: 2 coordinators, 2 workers \
         (4 slots each), lease TTL 6000 ms. Load average before/after: {load0} / {load1}; \
         other jobs at the end: {}.\n\nCommand: {}\n",
        others_running(),
        bench_cmd("latency", a),
    );
    let _ = writeln!(
        s,
        "| figure | measured | target | verdict |\n|---|---|---|---|\n\
         | p50 | {} ms | ≤ 300 ms | {} |\n\
         | p90 | {} ms | | |\n\
         | p99 (nearest rank: with N = {n} this is the {}th value) | {} ms | ≤ 1000 ms | {} |\n\
         | max | {} ms | | |\n\
         | min / mean | {} / {} ms | | |\n\
         | of which the producer's publish confirm (p50 / max) | {} / {} ms | | |\n\
         | failed starts | {} | 0 | {} |\n",
        ms(p50),
        verdict(p50 <= Duration::from_millis(300)),
        ms(p90),
        ((0.99 * lat.len() as f64).ceil() as usize).max(1),
        ms(p99),
        verdict(p99 <= Duration::from_secs(1)),
        ms(max),
        ms(min),
        ms(mean),
        ms(pct(&confirm, 50.0)),
        ms(*confirm.last().unwrap_or(&Duration::ZERO)),
        failures.len(),
        verdict(failures.is_empty()),
    );
    let all: Vec<String> = lat.iter().map(|d| ms(*d)).collect();
    let _ = writeln!(s, "All values, sorted (ms): {}\n", all.join(", "));
    for f in failures {
        let _ = writeln!(s, "- failure: {f}");
    }
    s
}

/// Like `poll`, with our own period.
pub fn poll_fast(timeout: Duration, step: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return Some(());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(step);
    }
}
