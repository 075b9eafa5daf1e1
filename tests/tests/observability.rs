//! Issue 7: the dashboards and alert rules against the real thing. A
//! coordinator and two workers stream two tasks to nginx-rtmp; then:
//! - `promtool check metrics` on the live `/metrics` of the coordinator and a worker;
//! - every metric name a dashboard query or an alert rule uses is in those scrapes;
//! - a real Prometheus (Debian's) scrapes all three every second and evaluates
//!   the rules: every dashboard query returns data, the fleet's numbers are
//!   the real ones (2 streams on air), no alert fires while all is well, and
//!   VodfleetWorkerDown fires for the worker that is SIGKILLed (its `for:` is
//!   shortened to 5 s in the test's copy of the rules; nothing else changes);
//! - the intake histogram counts the commands sent (a duplicate sent while
//!   Prometheus watches gives the latency panel a real p50/p99), and every
//!   process reports its dependencies up.
//!
//! And on a private RabbitMQ node: `vodfleet_dependency_up` and
//! `vodfleet_dependency_errors_total` follow Redis pausing and RabbitMQ stopping,
//! and VodfleetDependencyDown fires for each process cut off.

use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};
use vodfleet_tests::fleet::{long_counter, metric_sum, FleetOptions, Proc};
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
    // Under message ids of ours, so the same start can be sent again as a duplicate.
    for (i, t) in tasks.iter().enumerate() {
        producer.send_as(&t.start(0), &format!("observability-start-{i}"));
    }
    for t in &tasks {
        fleet.rtmp.wait_publishing(t.key(), Duration::from_secs(20));
    }
    // One refused command, so the dead-letter series exists as in production.
    producer.send_raw(b"{\"cmd\": \"1\"}");

    // The intake histogram counted them once acked (two starts, one refusal).
    let intake = |cmd: &str, result: &str| {
        let series =
            format!("vodfleet_command_intake_seconds_count{{cmd=\"{cmd}\",result=\"{result}\"}}");
        metric_sum(&fleet.coordinator().metrics(), &series)
    };
    let counted = poll(Duration::from_secs(20), || {
        (intake("1", "accepted") == Some(2.0) && intake("invalid", "rejected") == Some(1.0))
            .then_some(())
    });
    assert!(
        counted.is_some(),
        "intake histogram: 1/accepted {:?}, invalid/rejected {:?}\n{}",
        intake("1", "accepted"),
        intake("invalid", "rejected"),
        fleet.coordinator().metrics()
    );

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
    // Every process reaches what it needs: the coordinator Redis and RabbitMQ,
    // each worker RabbitMQ.
    let up = poll(Duration::from_secs(20), || {
        let r = prom.query("count(vodfleet_dependency_up == 1)");
        (r.first()?["value"][1].as_str()? == "4").then_some(())
    });
    assert!(
        up.is_some(),
        "dependencies up: {:#?}",
        prom.query("vodfleet_dependency_up")
    );
    // A command while Prometheus watches (the first start again: a duplicate,
    // nothing changes): the latency panel shows a real p50 and p99.
    producer.send_as(&tasks[0].start(0), "observability-start-0");
    let latency: Vec<String> = dash
        .iter()
        .filter(|(w, _)| w.contains("Intake latency"))
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(latency.len(), 2, "the p50 and p99 queries");
    let finite = |e: &String| {
        prom.query(e)
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let seen = poll(Duration::from_secs(20), || {
        latency.iter().map(finite).collect::<Option<Vec<f64>>>()
    });
    let seen = seen.unwrap_or_else(|| {
        panic!(
            "the intake latency panel has no value within 20 s of a command: {:?}; duplicates counted: {:?}",
            latency.iter().map(|e| prom.query(e)).collect::<Vec<_>>(),
            intake("1", "duplicate")
        )
    });
    assert_eq!(intake("1", "duplicate"), Some(1.0));
    eprintln!("intake latency p50, p99 of a duplicate start: {seen:?} s");
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

/// `vodfleet_dependency_{up,errors_total}{dependency}` of `p`'s live scrape.
fn dependency(p: &Proc, which: &str, dep: &str) -> Option<f64> {
    p.metric(&format!(
        "vodfleet_dependency_{which}{{dependency=\"{dep}\"}}"
    ))
}

/// Waits until `alert` fires for `instance` and `dep`; panics after `timeout`.
fn wait_firing(prom: &Prometheus, instance: &str, dep: &str, timeout: Duration) -> Value {
    poll(timeout, || {
        prom.alerts().into_iter().find(|a| {
            a["labels"]["alertname"] == "VodfleetDependencyDown"
                && a["state"] == "firing"
                && a["labels"]["instance"] == instance
                && a["labels"]["dependency"] == dep
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "VodfleetDependencyDown did not fire for {instance} {dep} within {timeout:?}; alerts: {:#?}\n{}",
            prom.alerts(),
            prom.log()
        )
    })
}

#[test]
fn dependency_metrics_follow_redis_and_rabbitmq_and_the_alert_fires() {
    let t0 = Instant::now();
    let mut fleet = Fleet::start_private(FleetOptions {
        coordinators: 1,
        workers: 1,
        ..FleetOptions::default()
    });
    let c_inst = format!("127.0.0.1:{}", fleet.coordinator().http_port());
    let w_inst = format!("127.0.0.1:{}", fleet.workers[0].http_port());
    // Healthy: everything up, no error counted.
    let healthy = |f: &Fleet| {
        let c = f.coordinator();
        let w = &f.workers[0];
        [
            dependency(c, "up", "redis"),
            dependency(c, "up", "rabbitmq"),
            dependency(w, "up", "rabbitmq"),
        ]
        .iter()
        .all(|v| *v == Some(1.0))
    };
    assert!(
        poll(Duration::from_secs(20), || healthy(&fleet).then_some(())).is_some(),
        "not every dependency up at start:\n{}\n{}",
        fleet.coordinator().metrics(),
        fleet.workers[0].metrics()
    );
    let (c, w): (&Proc, &Proc) = (fleet.coordinator(), &fleet.workers[0]);
    for (p, dep) in [(c, "redis"), (c, "rabbitmq"), (w, "rabbitmq")] {
        assert_eq!(dependency(p, "errors_total", dep), Some(0.0), "{dep}");
    }

    let rules = fs::read_to_string(rules_path()).expect("rules file");
    let short_rules = shorten_for(&rules, "VodfleetDependencyDown", "2s");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  scrape_timeout: 900ms\n\
         rule_files: [alerts.rules.yaml]\n\
         scrape_configs:\n\
         \x20 - job_name: vodfleet-coordinator\n    static_configs: [{{targets: ['{c_inst}']}}]\n\
         \x20 - job_name: vodfleet-worker\n    static_configs: [{{targets: ['{w_inst}']}}]\n"
    );
    let prom = Prometheus::start(&config, &[("alerts.rules.yaml", short_rules)]);

    // Redis stops answering (every client paused for 20 s): the coordinator's
    // pings time out, it reports Redis down and counts the failures, and the
    // alert fires for it; once Redis answers again, it is up again.
    let paused = Instant::now();
    let ok: String = fleet.redis.query(&["CLIENT", "PAUSE", "20000", "ALL"]);
    assert_eq!(ok, "OK");
    let down = poll(Duration::from_secs(8), || {
        (dependency(fleet.coordinator(), "up", "redis") == Some(0.0)).then_some(paused.elapsed())
    })
    .unwrap_or_else(|| panic!("redis still up:\n{}", fleet.coordinator().metrics()));
    assert!(dependency(fleet.coordinator(), "errors_total", "redis") >= Some(1.0));
    let fired = wait_firing(&prom, &c_inst, "redis", Duration::from_secs(16));
    assert_eq!(fired["labels"]["severity"], "critical", "{fired}");
    assert_eq!(
        fired["annotations"]["runbook_url"], "docs/runbooks/dependency-down.md",
        "{fired}"
    );
    eprintln!(
        "Redis paused: reported down after {down:?}, alert firing after {:?}",
        paused.elapsed()
    );
    assert!(
        poll(Duration::from_secs(25), || {
            (dependency(fleet.coordinator(), "up", "redis") == Some(1.0)).then_some(())
        })
        .is_some(),
        "redis not up again after the pause:\n{}",
        fleet.coordinator().metrics()
    );
    assert_eq!(dependency(fleet.coordinator(), "up", "rabbitmq"), Some(1.0));

    // RabbitMQ stops: both processes report it down, count the lost link, and
    // the alert fires for each; when it is back, both are up again.
    let stopped = Instant::now();
    fleet.rabbit().stop();
    let both_down = |f: &Fleet| {
        dependency(f.coordinator(), "up", "rabbitmq") == Some(0.0)
            && dependency(&f.workers[0], "up", "rabbitmq") == Some(0.0)
    };
    assert!(
        poll(Duration::from_secs(10), || both_down(&fleet).then_some(())).is_some(),
        "rabbitmq still up after the node stopped:\n{}\n{}",
        fleet.coordinator().metrics(),
        fleet.workers[0].metrics()
    );
    assert!(dependency(fleet.coordinator(), "errors_total", "rabbitmq") >= Some(1.0));
    assert!(dependency(&fleet.workers[0], "errors_total", "rabbitmq") >= Some(1.0));
    for inst in [&c_inst, &w_inst] {
        wait_firing(&prom, inst, "rabbitmq", Duration::from_secs(15));
    }
    eprintln!(
        "RabbitMQ stopped: both report it down, alerts firing after {:?}",
        stopped.elapsed()
    );
    fleet.rabbit().start_again();
    assert!(
        poll(Duration::from_secs(60), || healthy(&fleet).then_some(())).is_some(),
        "not every dependency up after RabbitMQ came back:\n{}\n{}",
        fleet.coordinator().metrics(),
        fleet.workers[0].metrics()
    );
    eprintln!("dependency test: {:?}", t0.elapsed());
}
