//! Issue 7: the Helm chart `helm/vodfleet`, its alert rules and dashboards,
//! checked offline with the real tools (scripts/k8s-tools.sh fetches them):
//! `helm lint --strict`; `helm template` with default values, KEDA on, HPA on
//! and autoscaling off, each render's core objects through
//! `kubernetes-validate --strict` and its custom resources against the CRDs in
//! tests/k8s/crds/; wrong values refused by name; `promtool check rules` and
//! `promtool test rules`; dashboards portable (datasource variable, units,
//! `$__rate_interval`). The live side (real /metrics, a real Prometheus) is in
//! tests/tests/observability.rs.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};
use vodfleet_tests::ops::{dashboard_exprs, dashboards, repo_root, rules_path, tool};

const CHART: &str = "helm/vodfleet";
const T: Duration = Duration::from_secs(120);
/// The Kubernetes version the core objects are validated against (kubectl's).
const KUBE_VERSION: &str = "1.31.0";

fn helm(args: &[&str]) -> vodfleet_tests::ops::ToolOutput {
    tool("helm", args, T)
}

/// `helm template` of the chart with `sets` (`--set` each); panics on failure.
fn render(sets: &[&str]) -> String {
    let mut args = vec!["template", "rel", CHART, "--namespace", "media"];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let out = helm(&args);
    assert!(out.success, "helm {args:?} failed:\n{}", out.text());
    out.stdout
}

/// `kind: X` lines at the top level of each document.
fn kinds(manifests: &str) -> Vec<String> {
    manifests
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(|k| k.trim().to_owned())
        .collect()
}

/// Custom resources against the CRDs, core objects through kubernetes-validate.
fn validate(name: &str, manifests: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = dir.path().join(format!("{name}.yaml"));
    let core = dir.path().join(format!("{name}-core.yaml"));
    fs::write(&all, manifests).expect("write render");
    let crs = tool(
        "k8s-python3",
        &[
            "tests/k8s/validate_crs.py",
            "tests/k8s/crds",
            all.to_str().unwrap(),
            core.to_str().unwrap(),
        ],
        T,
    );
    assert!(
        crs.success,
        "{name}: custom resources refused by their CRD schemas:\n{}",
        crs.text()
    );
    let kv = tool(
        "kubernetes-validate",
        &[
            "--strict",
            "--kubernetes-version",
            KUBE_VERSION,
            core.to_str().unwrap(),
        ],
        T,
    );
    assert!(
        kv.success,
        "{name}: kubernetes-validate --strict refused core objects:\n{}",
        kv.text()
    );
    let passed = kv.text().matches(" passed for resource ").count();
    let core_docs = fs::read_to_string(&core)
        .unwrap()
        .matches("\nkind: ")
        .count()
        + usize::from(fs::read_to_string(&core).unwrap().starts_with("kind: "));
    assert!(
        passed >= core_docs && passed > 0,
        "{name}: kubernetes-validate passed {passed} of {core_docs} core objects:\n{}",
        kv.text()
    );
    eprintln!("{name}: {}", crs.stdout.lines().last().unwrap_or_default());
    crs.stdout
}

/// Every `VODFLEET_*` variable the render sets is one a binary reads (a typo
/// in the chart would be silently ignored by the process).
fn assert_env_names_are_read(manifests: &str) {
    let mut sources = String::new();
    fn walk(dir: &Path, out: &mut String) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().and_then(|x| x.to_str()) == Some("rs") {
                out.push_str(&fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    for crate_dir in ["coordinator/src", "worker/src", "engine/src"] {
        walk(&repo_root().join(crate_dir), &mut sources);
    }
    let set: BTreeSet<&str> = manifests
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- name: "))
        .filter(|n| n.starts_with("VODFLEET_"))
        .collect();
    assert!(set.len() > 20, "too few VODFLEET_ variables: {set:?}");
    for name in set {
        assert!(
            sources.contains(&format!("\"{name}\"")),
            "the chart sets {name}, which no binary reads"
        );
    }
}

/// The worker Deployment's document.
fn worker_deployment(manifests: &str) -> &str {
    manifests
        .split("\n---")
        .find(|d| d.contains("kind: Deployment") && d.contains("name: rel-vodfleet-worker\n"))
        .expect("worker Deployment rendered")
}

#[test]
fn the_chart_lints_renders_and_validates_in_every_autoscaling_mode() {
    let t0 = Instant::now();
    let lint = helm(&["lint", "--strict", CHART]);
    assert!(lint.success, "helm lint --strict:\n{}", lint.text());
    assert!(lint.text().contains("0 chart(s) failed"), "{}", lint.text());

    let monitors = [
        "metrics.serviceMonitor.enabled=true",
        "metrics.podMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
    ];

    // Defaults: fixed worker replicas, no autoscaler, dashboards as ConfigMaps.
    let default = render(&[]);
    validate("default", &default);
    let k = kinds(&default);
    for want in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Secret",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
    ] {
        assert!(
            k.iter().any(|x| x == want),
            "default render lacks {want}: {k:?}"
        );
    }
    assert!(!k
        .iter()
        .any(|x| x == "ScaledObject" || x == "HorizontalPodAutoscaler"));
    assert_eq!(k.iter().filter(|x| *x == "ConfigMap").count(), 3, "{k:?}");
    assert!(default.contains("grafana_dashboard: \"1\""));
    let w = worker_deployment(&default);
    assert!(w.contains("\n  replicas: 2\n"), "{w}");
    // Grace above the drain (20 s by default), readiness on /readyz, security.
    assert!(w.contains("terminationGracePeriodSeconds: 30"), "{w}");
    assert!(w.contains("value: \"20000\"") && w.contains("name: VODFLEET_DRAIN_TIMEOUT_MS"));
    // Heartbeats over the coordinator Service while RabbitMQ is away, signed
    // with the Secret's worker key (the first API key).
    assert!(
        w.contains("name: VODFLEET_COORDINATOR_URL\n              value: \"http://rel-vodfleet-coordinator:8080\""),
        "{w}"
    );
    assert!(
        w.contains("name: VODFLEET_API_KEY\n") && w.contains("key: worker-api-key"),
        "{w}"
    );
    for must in [
        "path: /readyz",
        "path: /healthz",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "- ALL",
        "mountPath: /var/cache/vodfleet",
        "fieldPath: metadata.name",
        "secretKeyRef:",
        "args:",
    ] {
        assert!(w.contains(must), "worker Deployment lacks {must:?}:\n{w}");
    }
    assert_env_names_are_read(&default);
    // RBAC: patch on pods, nothing more, in a Role (not cluster-wide).
    let role = default
        .split("\n---")
        .find(|d| d.contains("\nkind: Role\n"))
        .expect("a Role");
    assert!(
        role.contains("resources: [\"pods\"]\n    verbs: [\"patch\"]"),
        "{role}"
    );
    assert_eq!(role.matches("verbs:").count(), 1, "{role}");
    assert!(!k
        .iter()
        .any(|x| x == "ClusterRole" || x == "ClusterRoleBinding"));

    // A drain of 45.5 s: the grace period follows (46 + 10).
    let longer = render(&["worker.drainTimeoutMs=45500"]);
    assert!(worker_deployment(&longer).contains("terminationGracePeriodSeconds: 56"));

    // KEDA on: a ScaledObject on tasks streaming + waiting, no HPA of ours, no
    // replicas in the Deployment (the scaler owns them).
    let mut keda_sets = vec![
        "autoscaling.keda.enabled=true",
        "autoscaling.keda.fallback.replicas=4",
        "autoscaling.keda.triggerAuthentication.secretTargetRef[0].parameter=bearerToken",
        "autoscaling.keda.triggerAuthentication.secretTargetRef[0].name=prom-token",
        "autoscaling.keda.triggerAuthentication.secretTargetRef[0].key=token",
    ];
    keda_sets.extend(monitors);
    let keda = render(&keda_sets);
    let report = validate("keda", &keda);
    for cr in [
        "ScaledObject",
        "TriggerAuthentication",
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
    ] {
        assert!(
            report.contains(&format!("custom resource {cr}/")),
            "keda render: {cr} not validated:\n{report}"
        );
    }
    let k = kinds(&keda);
    assert!(!k.iter().any(|x| x == "HorizontalPodAutoscaler"), "{k:?}");
    assert!(!worker_deployment(&keda).contains("\n  replicas:"));
    assert!(
        keda.contains(r#"query: "ceil(max(sum without (state) (vodfleet_tasks{state=~\"running|leased\",namespace=\"media\"})) * 120 / 100)""#),
        "{keda}"
    );
    assert!(keda.contains("threshold: \"100\""));
    // The PrometheusRule carries every alert of the rules file.
    let rules = fs::read_to_string(rules_path()).unwrap();
    for (alert, _) in vodfleet_tests::ops::rule_exprs(&rules) {
        assert!(
            keda.contains(&format!("alert: {alert}")),
            "PrometheusRule lacks {alert}"
        );
    }

    // HPA on: an autoscaling/v2 HPA on the external metric, target per pod =
    // slots / (1 + headroom) = 100 / 1.2.
    let mut hpa_sets = vec![
        "autoscaling.hpa.enabled=true",
        "autoscaling.hpa.metricSelector.namespace=media",
    ];
    hpa_sets.extend(monitors);
    let hpa = render(&hpa_sets);
    validate("hpa", &hpa);
    let k = kinds(&hpa);
    assert!(k.iter().any(|x| x == "HorizontalPodAutoscaler"), "{k:?}");
    assert!(!k.iter().any(|x| x == "ScaledObject"), "{k:?}");
    assert!(hpa.contains("averageValue: \"83333m\""), "{hpa}");
    assert!(!worker_deployment(&hpa).contains("\n  replicas:"));

    // Autoscaling off (and the optional objects off): fixed replicas only.
    let off = render(&[
        "autoscaling.keda.enabled=false",
        "autoscaling.hpa.enabled=false",
        "dashboards.enabled=false",
        "worker.replicas=5",
        "worker.podDeletionCost.enabled=false",
        // The optional volumes and variables render valid objects too.
        "worker.media.volume.persistentVolumeClaim.claimName=media",
        "worker.destinationCaConfigMap=private-ca",
        "worker.engineThreads=4",
        "worker.cache.medium=Memory",
        "coordinator.podDisruptionBudget.enabled=false",
        "worker.podDisruptionBudget.enabled=true",
    ]);
    validate("off", &off);
    let k = kinds(&off);
    for absent in [
        "ScaledObject",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "Role",
    ] {
        assert!(
            !k.iter().any(|x| x == absent),
            "off render has {absent}: {k:?}"
        );
    }
    assert!(worker_deployment(&off).contains("\n  replicas: 5\n"));
    let w = worker_deployment(&off);
    assert!(w.contains("automountServiceAccountToken: false"));
    for must in [
        "claimName: media",
        "name: private-ca",
        "name: VODFLEET_DESTINATION_CA_FILE",
        "name: VODFLEET_ENGINE_THREADS",
        "medium: Memory",
    ] {
        assert!(w.contains(must), "{must:?} missing:\n{w}");
    }

    // existingSecret: no Secret rendered, the env reads the named one.
    let existing = render(&["secrets.existingSecret=vodfleet-prod"]);
    assert!(!kinds(&existing).iter().any(|x| x == "Secret"));
    assert!(existing.contains("name: vodfleet-prod"));
    eprintln!("chart checks: {:?}", t0.elapsed());
}

#[test]
fn the_prometheus_rule_the_chart_renders_is_the_rules_file_and_passes_promtool() {
    let base = "https://docs.example.com/vodfleet/runbooks/";
    let out = render(&[
        "metrics.prometheusRule.enabled=true",
        &format!("metrics.prometheusRule.runbookBaseUrl={base}"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("render.yaml");
    let rules = dir.path().join("rules.yaml");
    fs::write(&all, &out).unwrap();
    // The PrometheusRule's spec is a rule file as Prometheus reads it.
    let extract = tool(
        "k8s-python3",
        &[
            "-c",
            "import sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get('kind') == 'PrometheusRule']\n\
             assert len(docs) == 1, docs\n\
             yaml.safe_dump(docs[0]['spec'], open(sys.argv[2], 'w'))",
            all.to_str().unwrap(),
            rules.to_str().unwrap(),
        ],
        T,
    );
    assert!(extract.success, "{}", extract.text());
    let check = tool("promtool", &["check", "rules", rules.to_str().unwrap()], T);
    assert!(
        check.success && check.text().contains("SUCCESS: 15 rules found"),
        "the chart's PrometheusRule as a rules file:\n{}",
        check.text()
    );
    let text = fs::read_to_string(&rules).unwrap();
    assert_eq!(
        text.matches(&format!("runbook_url: {base}")).count(),
        15,
        "runbook base not applied:\n{text}"
    );
    assert!(text.contains(&format!("runbook_url: {base}worker-down.md")));
}

#[test]
fn both_autoscalers_at_once_are_refused_by_name() {
    let out = helm(&[
        "template",
        "rel",
        CHART,
        "--set",
        "autoscaling.keda.enabled=true",
        "--set",
        "autoscaling.hpa.enabled=true",
    ]);
    assert!(!out.success, "KEDA and HPA together were accepted");
    let t = out.text();
    assert!(
        t.contains("autoscaling.keda.enabled and autoscaling.hpa.enabled are both true"),
        "{t}"
    );
}

#[test]
fn a_value_of_the_wrong_type_is_refused_with_its_key_named() {
    let out = helm(&[
        "template",
        "rel",
        CHART,
        "-f",
        "tests/k8s/values-wrong-type.yaml",
    ]);
    assert!(!out.success, "a wrong type was accepted:\n{}", out.text());
    let t = out.text();
    assert!(t.contains("worker.slots"), "{t}");
    assert!(
        t.contains("Invalid type. Expected: integer, given: string"),
        "{t}"
    );
    // Lint applies the schema too.
    let lint = helm(&[
        "lint",
        "--strict",
        CHART,
        "-f",
        "tests/k8s/values-wrong-type.yaml",
    ]);
    assert!(
        !lint.success && lint.text().contains("worker.slots"),
        "{}",
        lint.text()
    );
    // A misspelt key is refused as well.
    let typo = helm(&["template", "rel", CHART, "--set", "worker.slot=3"]);
    assert!(
        !typo.success && typo.text().contains("slot"),
        "{}",
        typo.text()
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let rules = rules_path();
    let check = tool("promtool", &["check", "rules", rules.to_str().unwrap()], T);
    assert!(check.success, "promtool check rules:\n{}", check.text());
    assert!(
        check.text().contains("SUCCESS: 15 rules found"),
        "{}",
        check.text()
    );
    let test = tool(
        "promtool",
        &["test", "rules", "tests/k8s/alerts.test.yaml"],
        T,
    );
    assert!(test.success, "promtool test rules:\n{}", test.text());
    assert!(test.text().contains("SUCCESS"), "{}", test.text());
    // Each alert: a severity and a runbook page that exists.
    let text = fs::read_to_string(&rules).unwrap();
    let alerts = vodfleet_tests::ops::rule_exprs(&text);
    assert_eq!(alerts.len(), 15);
    for page in text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: "))
    {
        assert!(
            repo_root().join(page).is_file(),
            "runbook {page} does not exist"
        );
    }
    assert_eq!(text.matches("runbook_url: docs/runbooks/").count(), 15);
    assert_eq!(text.matches("severity: ").count(), 15);
    // The promtool tests exercise every alert.
    let tests = fs::read_to_string(repo_root().join("tests/k8s/alerts.test.yaml")).unwrap();
    for (alert, _) in &alerts {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - exp_labels"
            )),
            "no promtool test expects {alert} to fire"
        );
    }
}

#[test]
fn dashboards_are_portable_and_give_every_panel_a_unit() {
    let ds = dashboards();
    let names: Vec<&str> = ds.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["coordinator.json", "fleet-overview.json", "worker.json"]
    );
    // The top-level dashboards/ is the same folder.
    let top = repo_root().join("dashboards");
    assert_eq!(
        fs::canonicalize(&top).unwrap(),
        fs::canonicalize(repo_root().join("helm/vodfleet/dashboards")).unwrap()
    );
    for (name, d) in &ds {
        let text = serde_json::to_string(d).unwrap();
        assert!(!text.contains("${DS_"), "{name}: an import placeholder");
        assert!(!text.contains("__inputs"), "{name}: import inputs");
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        let dsv = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{name}: no datasource variable"));
        assert_eq!(dsv["type"], "datasource", "{name}");
        assert_eq!(dsv["query"], "prometheus", "{name}");
        let panels = d["panels"].as_array().expect("panels");
        assert!(panels.len() >= 6, "{name}: {} panels", panels.len());
        for p in panels {
            let title = p["title"].as_str().unwrap_or("?");
            let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
            assert!(!unit.is_empty(), "{name}: panel {title:?} has no unit");
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}: {title}");
            for t in p["targets"].as_array().expect("targets") {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{name}: {title}");
            }
        }
        for (title, expr) in dashboard_exprs(d) {
            for (i, _) in expr.match_indices('[') {
                assert!(
                    expr[i..].starts_with("[$__rate_interval]"),
                    "{name}: {title}: a range other than $__rate_interval in {expr}"
                );
            }
        }
    }
}
