//! Issue 7: the dashboards and alert rules against the real thing. A
//! coordinator and two workers stream two tasks to nginx-rtmp; then:
//! - `promtool check metrics` on the live `/metrics` of the coordinator and a worker;
//! - every metric name a dashboard query or an alert rule uses is in those scrapes;
//! - a real Prometheus (Debian's) scrapes all three every second and evaluates
//!   the rules: every dashboard query returns data, the fleet's numbers are
//!   the real ones (2 streams on air), no alert fires while all is well, and
//!   VodfleetWorkerDown fires for the worker that is SIGKILLed (its `for:` is
//!   shortened to 5 s in the test's copy of the rules; nothing else changes).

use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};
use vodfleet_tests::fleet::{long_counter, FleetOptions};
use vodfleet_tests::ops::{
    dashboard_exprs, dashboards, exposition_names, promql_metric_names, rule_exprs, rules_path,
    run_tool, tools, Prometheus,
};
use vodfleet_tests::{poll, Fleet};

/// What Grafana would put in place of the dashboards' variables, for a 1 s
/// scrape interval (Grafana's $__rate_interval is at least 4 scrape intervals).
fn grafana_substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("\"$instance\"", "\".*\"")
}

/// Names Prometheus makes itself: no target exports them.
const SYNTHETIC: &[&str] = &["up"];

#[test]
fn dashboards_and_alerts_work_against_a_real_prometheus_and_live_processes() {
    let t0 = Instant::now();
    let promtool = tools().join("promtool");
    let mut fleet = Fleet::start(FleetOptions {
        coordinators: 1,
        workers: 2,
        ..FleetOptions::default()
    });
    // Two tasks, so both workers are likely busy; judged by nginx.
    let producer = fleet.producer();
    let media = long_counter();
    let tasks: Vec<_> = (0..2).map(|_| fleet.new_task(&[&media], 1)).collect();
    for t in &tasks {
        producer.send(&t.start(0));
    }
    for t in &tasks {
        fleet.rtmp.wait_publishing(t.key(), Duration::from_secs(20));
    }
    // One refused command, so the dead-letter series exists as in production.
    producer.send_raw(b"{\"cmd\": \"1\"}");

    // promtool check metrics on the live expositions.
    let coordinator_text = fleet.coordinator().metrics();
    let worker_texts: Vec<String> = fleet.workers.iter().map(|w| w.metrics()).collect();
    for (what, text) in [
        ("coordinator", &coordinator_text),
        ("worker", &worker_texts[0]),
    ] {
        let out = run_tool(
            &promtool,
            &["check", "metrics"],
            Some(text.as_bytes()),
            Duration::from_secs(60),
        );
        assert!(
            out.success,
            "promtool check metrics on the live {what} /metrics:\n{}\n--- exposition ---\n{text}",
            out.text()
        );
    }
    let mut live: BTreeSet<String> = exposition_names(&coordinator_text);
    for t in &worker_texts {
        live.extend(exposition_names(t));
    }
    assert!(live.contains("vodfleet_tasks") && live.contains("vodfleet_worker_streams_active"));

    // Every metric a dashboard or a rule uses is in those scrapes.
    let rules_text = fs::read_to_string(rules_path()).expect("rules file");
    let mut used: Vec<(String, String)> = Vec::new();
    for (alert, expr) in rule_exprs(&rules_text) {
        used.push((format!("rule {alert}"), expr));
    }
    let boards = dashboards();
    for (name, d) in &boards {
        for (title, expr) in dashboard_exprs(d) {
            used.push((format!("{name}: {title}"), grafana_substitute(&expr)));
        }
    }
    assert!(used.len() > 40, "{} expressions", used.len());
    let mut missing = Vec::new();
    for (where_, expr) in &used {
        let names = promql_metric_names(expr);
        assert!(!names.is_empty(), "{where_}: no metric found in {expr}");
        for n in names {
            if !live.contains(&n) && !SYNTHETIC.contains(&n.as_str()) {
                missing.push(format!("{where_}: {n}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics used but not in the live scrapes:\n{}",
        missing.join("\n")
    );

    // A real Prometheus: 1 s scrapes and evaluations, the rules file with the
    // worker-down `for:` shortened for the test.
    let short_rules = shorten_for(&rules_text, "VodfleetWorkerDown", "5s");
    let target = |port: u16| format!("'127.0.0.1:{port}'");
    let worker_targets: Vec<String> = fleet
        .workers
        .iter()
        .map(|w| target(w.http_port()))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  scrape_timeout: 900ms\n\
         rule_files: [alerts.rules.yaml]\n\
         scrape_configs:\n\
         \x20 - job_name: vodfleet-coordinator\n    static_configs: [{{targets: [{}]}}]\n\
         \x20 - job_name: vodfleet-worker\n    static_configs: [{{targets: [{}]}}]\n",
        target(fleet.coordinator().http_port()),
        worker_targets.join(", ")
    );
    let check = run_tool(
        &promtool,
        &["check", "rules", "/dev/stdin"],
        Some(short_rules.as_bytes()),
        Duration::from_secs(60),
    );
    assert!(check.success, "the test's rules copy:\n{}", check.text());
    let prom = Prometheus::start(&config, &[("alerts.rules.yaml", short_rules)]);

    // Every dashboard query returns data, and the numbers are the fleet's.
    let dash: Vec<&(String, String)> = used
        .iter()
        .filter(|(w, _)| !w.starts_with("rule "))
        .collect();
    let pending = poll(Duration::from_secs(60), || {
        let empty: Vec<String> = dash
            .iter()
            .filter(|(_, e)| prom.query(e).is_empty())
            .map(|(w, e)| format!("{w}: {e}"))
            .collect();
        let on_air = prom.query("sum(vodfleet_worker_streams_active)");
        let two = on_air
            .first()
            .and_then(|s| s["value"][1].as_str())
            .is_some_and(|v| v == "2");
        (empty.is_empty() && two).then_some(())
    });
    if pending.is_none() {
        let empty: Vec<String> = dash
            .iter()
            .filter(|(_, e)| prom.query(e).is_empty())
            .map(|(w, e)| format!("{w}: {e}"))
            .collect();
        panic!(
            "within 60 s, dashboard queries without data:\n{}\nstreams on air: {:?}\ntargets: {:?}\n{}",
            empty.join("\n"),
            prom.query("sum(vodfleet_worker_streams_active)"),
            prom.targets(),
            prom.log()
        );
    }
    eprintln!(
        "{} dashboard queries return data ({:?} since start)",
        dash.len(),
        t0.elapsed()
    );
    // The autoscaling query of the chart's ScaledObject, on live data: 2 tasks
    // running × 1.2 headroom → 3 slots wanted (the coordinators refresh their
    // task counts every 15 s).
    let query = keda_query();
    let wanted = poll(Duration::from_secs(40), || {
        let r = prom.query(&query);
        let v = r.first()?["value"][1].as_str()?.to_owned();
        (v == "3").then_some(v)
    });
    assert_eq!(
        wanted.as_deref(),
        Some("3"),
        "the ScaledObject's query {query} gave {:?}",
        prom.query(&query)
    );
    eprintln!(
        "ScaledObject query = 3 slots wanted ({:?} since start)",
        t0.elapsed()
    );

    // All is well: nothing fires.
    let firing: Vec<Value> = prom
        .alerts()
        .into_iter()
        .filter(|a| a["state"] == "firing")
        .collect();
    assert!(
        firing.is_empty(),
        "alerts firing on a healthy fleet: {firing:#?}"
    );

    // SIGKILL one worker: VodfleetWorkerDown fires for it (and only it).
    let victim = fleet.workers[1].http_port();
    let killed = Instant::now();
    fleet.workers[1].sigkill();
    let instance = format!("127.0.0.1:{victim}");
    let fired = poll(Duration::from_secs(60), || {
        prom.alerts()
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "VodfleetWorkerDown" && a["state"] == "firing")
    })
    .unwrap_or_else(|| {
        panic!(
            "VodfleetWorkerDown did not fire within 60 s of the SIGKILL; alerts: {:#?}\n{}",
            prom.alerts(),
            prom.log()
        )
    });
    eprintln!(
        "SIGKILL → VodfleetWorkerDown firing: {:?}",
        killed.elapsed()
    );
    assert_eq!(fired["labels"]["instance"], instance.as_str(), "{fired}");
    assert_eq!(fired["labels"]["severity"], "critical", "{fired}");
    assert_eq!(
        fired["annotations"]["runbook_url"], "docs/runbooks/worker-down.md",
        "{fired}"
    );
    let down_for_others = prom.alerts().into_iter().any(|a| {
        a["labels"]["alertname"] == "VodfleetWorkerDown"
            && a["labels"]["instance"] != instance.as_str()
    });
    assert!(!down_for_others, "{:#?}", prom.alerts());
    eprintln!("observability test: {:?}", t0.elapsed());
}

/// The ScaledObject's Prometheus query as the chart renders it, selecting this
/// test's coordinator by its job instead of a namespace.
fn keda_query() -> String {
    let out = vodfleet_tests::ops::tool(
        "helm",
        &[
            "template",
            "rel",
            "helm/vodfleet",
            "--set",
            "autoscaling.keda.enabled=true",
            "--set-string",
            "autoscaling.keda.labelSelector=job=\"vodfleet-coordinator\"",
        ],
        Duration::from_secs(60),
    );
    assert!(out.success, "helm template:\n{}", out.text());
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("query: "))
        .expect("a query in the ScaledObject")
        .to_owned();
    let q: String = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
    assert!(q.contains("job=\"vodfleet-coordinator\""), "{q}");
    q
}

/// The rules text with `for:` of `alert` replaced by `value` (the rule's own
/// `for:` line, the first after its `- alert:` line).
fn shorten_for(rules: &str, alert: &str, value: &str) -> String {
    let mut out = Vec::new();
    let mut armed = false;
    let mut done = false;
    for line in rules.lines() {
        let t = line.trim_start();
        if t == format!("- alert: {alert}") {
            armed = true;
        }
        if armed && !done && t.starts_with("for: ") {
            let indent = &line[..line.len() - t.len()];
            out.push(format!("{indent}for: {value}"));
            done = true;
            continue;
        }
        out.push(line.to_owned());
    }
    assert!(done, "no for: for {alert} in the rules");
    out.join("\n") + "\n"
}
