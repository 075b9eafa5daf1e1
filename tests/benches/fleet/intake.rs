//! 4. Coordinator intake.

use super::args::{bench_cmd, Args};
use super::machine::{
    broker_pid, cpu_secs, loadavg, machine_jiffies, mem_kb, others_running, redis_pid,
};
use super::table::{mb, ms, verdict};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::ShortString;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use vodfleet_proto::fleet::COMMANDS_QUEUE;
use vodfleet_tests::fleet::{long_counter, now_ms, Fleet, FleetOptions};
use vodfleet_tests::{unique, Coordinator};

/// Publishes `bodies` to `vodfleet.commands` on one channel with publisher
/// confirms, keeping up to `window` unconfirmed: as fast as one producer goes.
/// Returns (first publish, last confirm, confirms that were not plain acks).
pub fn publish_fast(url: &str, bodies: Vec<Vec<u8>>, window: usize) -> (Instant, Instant, usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let props = ConnectionProperties::default()
            .with_connection_name("vodfleet-bench-producer".into())
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let conn = Connection::connect(url, props).await.expect("AMQP connect");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        let mut pending = VecDeque::new();
        let mut bad = 0usize;
        let check = |c: lapin::Result<Confirmation>, bad: &mut usize| match c {
            Ok(Confirmation::Ack(None)) => {}
            _ => *bad += 1,
        };
        let t0 = Instant::now();
        for b in bodies {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(unique("msg")));
            let opts = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            let c = ch
                .basic_publish("", COMMANDS_QUEUE, opts, &b, props)
                .await
                .expect("basic.publish");
            pending.push_back(c);
            if pending.len() >= window {
                let c = pending.pop_front().expect("pending").await;
                check(c, &mut bad);
            }
        }
        while let Some(c) = pending.pop_front() {
            check(c.await, &mut bad);
        }
        let t1 = Instant::now();
        let _ = conn.close(200, "bye").await;
        (t0, t1, bad)
    })
}

/// How long the intake section watches an idle coordinator after the intake.
pub const IDLE_WINDOW: Duration = Duration::from_secs(20);

pub struct MemPoint {
    label: String,
    tasks: u64,
    at: Duration,
    /// (RSS kB, PSS kB) per coordinator.
    mem: Vec<(u64, u64)>,
    redis_rss_kb: u64,
}

pub fn intake_one(a: &Args, coordinators: usize) -> (String, bool) {
    let n = a.intake_n.unwrap_or(if a.quick { 4000 } else { 20000 });
    let marks = [n / 4, n / 2, n];
    let load0 = loadavg();
    let fleet = Fleet::start(FleetOptions {
        coordinators,
        workers: 0,
        ..FleetOptions::default()
    });
    let pids: Vec<u32> = fleet.coordinators.iter().map(|c| c.pid()).collect();
    let rpid = redis_pid(fleet.redis.port());
    let redis_rss = || rpid.map(|p| mem_kb(p).0).unwrap_or(0);
    // Tasks indexed, over every index group.
    let scard = || -> u64 { fleet.redis.task_count() as u64 };
    // Let the coordinators settle (a state count every 5 s has run at least once).
    std::thread::sleep(Duration::from_secs(6));
    let mut points = vec![MemPoint {
        label: "0 (idle, before)".into(),
        tasks: scard(),
        at: Duration::ZERO,
        mem: pids.iter().map(|&p| mem_kb(p)).collect(),
        redis_rss_kb: redis_rss(),
    }];
    let media = long_counter();
    let start_at = now_ms() + 3_600_000;
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let id = unique("task");
            let key = unique("key");
            let mut b = vodfleet_tests::fleet::seed::start(
                &id,
                &[media.vod_url()],
                &[fleet.rtmp_url(&key)],
                0,
            );
            b["list"][0]["start"] = json!(start_at.to_string());
            serde_json::to_vec(&b).expect("json")
        })
        .collect();
    let body_bytes = bodies.first().map(|b| b.len()).unwrap_or(0);
    let cpu0: Vec<f64> = pids.iter().map(|&p| cpu_secs(p)).collect();
    let rcpu0 = rpid.map(cpu_secs).unwrap_or(0.0);
    let bpid = broker_pid();
    let bcpu0 = bpid.map(cpu_secs).unwrap_or(0.0);
    let mj0 = machine_jiffies();
    let url = fleet.amqp_url();
    let t_start = Instant::now();
    let publisher = std::thread::spawn(move || publish_fast(&url, bodies, 1000));
    let mut next = 0;
    let timeout = Duration::from_secs(600);
    let mut done_at = None;
    while t_start.elapsed() < timeout {
        let k = scard();
        while next < marks.len() && k >= marks[next] as u64 {
            let label = format!("{} (during intake)", marks[next]);
            points.push(MemPoint {
                label,
                tasks: k,
                at: t_start.elapsed(),
                mem: pids.iter().map(|&p| mem_kb(p)).collect(),
                redis_rss_kb: redis_rss(),
            });
            next += 1;
        }
        if k >= n as u64 {
            done_at = Some(t_start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu1: Vec<f64> = pids.iter().map(|&p| cpu_secs(p)).collect();
    let rcpu1 = rpid.map(cpu_secs).unwrap_or(0.0);
    let bcpu1 = bpid.map(cpu_secs).unwrap_or(0.0);
    let mj1 = machine_jiffies();
    let busy = (mj1.0 - mj0.0) as f64 / (mj1.1 - mj0.1).max(1) as f64;
    let (p0, p1, bad) = publisher.join().expect("publisher thread");
    let load1 = loadavg();
    let published_in = p1.saturating_duration_since(p0);
    // Idle again for IDLE_WINDOW: the coordinator's periodic state count over
    // all the tasks (every 15 s) runs at least once; sample the peak memory and
    // the CPU it costs.
    let icpu0: Vec<f64> = pids.iter().map(|&p| cpu_secs(p)).collect();
    let idle_t0 = Instant::now();
    let mut peak: Vec<(u64, u64)> = vec![(0, 0); pids.len()];
    while idle_t0.elapsed() < IDLE_WINDOW {
        for (i, &p) in pids.iter().enumerate() {
            let (r, ps) = mem_kb(p);
            peak[i] = (peak[i].0.max(r), peak[i].1.max(ps));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let idle_cpu: Vec<f64> = pids
        .iter()
        .zip(&icpu0)
        .map(|(&p, a)| cpu_secs(p) - a)
        .collect();
    let idle_secs = idle_t0.elapsed().as_secs_f64();
    points.push(MemPoint {
        label: format!(
            "{} (peak while idle, {} s after)",
            scard(),
            IDLE_WINDOW.as_secs()
        ),
        tasks: scard(),
        at: t_start.elapsed(),
        mem: peak.clone(),
        redis_rss_kb: redis_rss(),
    });
    points.push(MemPoint {
        label: format!("{} (idle, {} s after)", scard(), IDLE_WINDOW.as_secs()),
        tasks: scard(),
        at: t_start.elapsed(),
        mem: pids.iter().map(|&p| mem_kb(p)).collect(),
        redis_rss_kb: redis_rss(),
    });
    let accepted: f64 = fleet
        .coordinators
        .iter()
        .map(|c: &Coordinator| {
            c.metrics()
                .lines()
                .filter(|l| l.starts_with("vodfleet_commands_total") && l.contains("accepted"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum();
    // Not part of the target: what listing every task costs (`GET /v1/tasks`
    // reads each task's record and answers them all at once).
    let list = {
        let c = fleet.coordinator();
        let before = mem_kb(c.pid());
        let t = Instant::now();
        let r = c.get_signed("/v1/tasks");
        let took = t.elapsed();
        let after = mem_kb(c.pid());
        format!(
            "`GET /v1/tasks` on coordinator 1 with {} tasks (not part of the target): HTTP {}, \
             {:.1} MB body in {} ms; its RSS / PSS {} / {} MB before, {} / {} MB after.",
            scard(),
            r.status,
            r.body.len() as f64 / 1048576.0,
            ms(took),
            mb(before.0),
            mb(before.1),
            mb(after.0),
            mb(after.1)
        )
    };
    let dead: u64 = {
        let p = fleet.producer();
        p.dead_letters().len() as u64
    };

    let mut s = String::new();
    let rate = done_at.map(|d| n as f64 / d.as_secs_f64());
    let steady = {
        // From the first mark to the last: the rate once the queue is full.
        let a = points.get(1);
        let b = points.iter().rfind(|p| p.label.contains("during"));
        match (a, b) {
            (Some(a), Some(b)) if b.at > a.at => {
                Some((b.tasks - a.tasks) as f64 / (b.at - a.at).as_secs_f64())
            }
            _ => None,
        }
    };
    let ok = rate.is_some_and(|r| r >= 1000.0);
    let _ = writeln!(
        s,
        "#### {coordinators} coordinator(s), 0 workers\n\n\
         {n} cmd 1 commands ({body_bytes} bytes each), published in {} ms by one producer \
         ({:.0} msg/s; {bad} not acked by the broker); all {n} applied (indexed tasks = {n}) \
         {} after the first publish. CPU time during intake (first publish → all applied): coordinator {}; \
         redis-server {:.1} s; RabbitMQ (beam.smp) {:.1} s; the whole machine {:.0} % busy \
         ({} cores). \
         Commands counted `accepted` on `/metrics`: {accepted:.0}; dead-lettered: {dead}. \
         Load average before/after: {load0} / {load1}; other jobs at the end: {}.\n",
        ms(published_in),
        n as f64 / published_in.as_secs_f64().max(1e-9),
        done_at
            .map(|d| format!("{} ms", ms(d)))
            .unwrap_or_else(|| format!("NOT within {timeout:?}")),
        pids.iter()
            .zip(cpu0.iter().zip(&cpu1))
            .map(|(p, (a, b))| format!("pid {p}: {:.1} s", b - a))
            .collect::<Vec<_>>()
            .join(", "),
        rcpu1 - rcpu0,
        bcpu1 - bcpu0,
        busy * 100.0,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        others_running(),
    );
    let _ = writeln!(
        s,
        "| figure | measured | target | verdict |\n|---|---|---|---|\n\
         | commands applied per second, whole run | {} | ≥ 1000 | {} |\n\
         | same, from {} to {} tasks | {} | | |\n",
        rate.map(|r| format!("{r:.0}"))
            .unwrap_or_else(|| "—".into()),
        verdict(ok),
        marks[0],
        n,
        steady
            .map(|r| format!("{r:.0}"))
            .unwrap_or_else(|| "—".into()),
    );
    let mut head = String::from("| tasks in Redis | at (ms) |");
    let mut sep = String::from("|---|---|");
    for (i, p) in pids.iter().enumerate() {
        let _ = write!(head, " coordinator {} (pid {p}) RSS / PSS (MB) |", i + 1);
        sep.push_str("---|");
    }
    head.push_str(" redis-server RSS (MB) |");
    sep.push_str("---|");
    let _ = writeln!(s, "{head}\n{sep}");
    for p in &points {
        let mut row = format!("| {} | {} |", p.label, ms(p.at));
        for (r, ps) in &p.mem {
            let _ = write!(row, " {} / {} |", mb(*r), mb(*ps));
        }
        let _ = write!(row, " {} |", mb(p.redis_rss_kb));
        let _ = writeln!(s, "{row}");
    }
    let first = points.first().map(|p| p.mem.clone()).unwrap_or_default();
    let last_during = points
        .iter()
        .rfind(|p| p.label.contains("during"))
        .map(|p| p.mem.clone())
        .unwrap_or_default();
    let growth: Vec<String> = first
        .iter()
        .zip(&last_during)
        .map(|((_, a), (_, b))| format!("{:+.1} MB PSS", (*b as f64 - *a as f64) / 1024.0))
        .collect();
    let _ = writeln!(
        s,
        "\nCoordinator CPU while idle with {n} scheduled tasks: {} over {idle_secs:.1} s \
         (the periodic count of tasks by state reads every task's state).\n\n\
         PSS growth from 0 to {n} tasks during intake: {} (per 1,000 tasks: {}).\n\n{list}\n",
        idle_cpu
            .iter()
            .map(|c| format!("{c:.2} s"))
            .collect::<Vec<_>>()
            .join(", "),
        growth.join(", "),
        first
            .iter()
            .zip(&last_during)
            .map(|((_, a), (_, b))| format!(
                "{:+.2} MB",
                (*b as f64 - *a as f64) / 1024.0 / (n as f64 / 1000.0)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    (s, ok)
}

pub fn intake(a: &Args) -> String {
    let n = a.intake_n.unwrap_or(if a.quick { 4000 } else { 20000 });
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### Coordinator intake\n\n\
         cmd \"1\" with `start` 1 h ahead (tasks stay `scheduled`: no work order, no worker, no \
         streaming), distinct task ids and message ids, published by one producer on one channel \
         with publisher confirms pipelined (≤ 1000 unconfirmed) to a fleet with no worker; the \
         applied count is the tasks indexed over every group (`SCARD vodfleet:tasks:{{gN}}`), polled every 20 ms; memory from \
         `/proc/PID/smaps_rollup` when the count passes {}, {} and {} tasks, then sampled every \
         100 ms for {} s of idleness after the last (the coordinator's count of tasks by state, \
         every 15 s, runs over all tasks at least once in that time).\n\nCommand: {}\n",
        n / 4,
        n / 2,
        n,
        IDLE_WINDOW.as_secs(),
        bench_cmd("intake", a)
    );
    for &c in &a.intake_coordinators {
        let (t, _) = intake_one(a, c);
        s.push_str(&t);
    }
    s
}
