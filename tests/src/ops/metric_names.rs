//! Metric names: which a scrape has and a query uses; the rules and dashboards
//! that hold the queries.

use super::repo_root;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

/// The names a query can select in a Prometheus text exposition: each family
/// it declares (`# TYPE name type`), and for a histogram or a summary the
/// series it is made of (`name_bucket`, `name_sum`, `name_count`).
pub fn exposition_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut words = l.split_whitespace();
        let (Some(name), kind) = (words.next(), words.next()) else {
            continue;
        };
        let parts: &[&str] = match kind {
            Some("histogram") => &["_bucket", "_sum", "_count"],
            Some("summary") => &["_sum", "_count"],
            _ => &[],
        };
        names.extend(parts.iter().map(|p| format!("{name}{p}")));
        names.insert(name.to_owned());
    }
    names
}

/// PromQL words that are not metric names (aggregations may be followed by
/// `by (…)` rather than their argument).
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
];

/// The metric names a PromQL expression selects: every identifier left once
/// strings, label matchers (`{…}`), ranges (`[…]`), grouping lists (`by (…)`
/// and the like), function calls and keywords are taken out. Grafana's
/// `$variables` must be substituted first.
pub fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let mut s = String::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    // Strings, {…} and […] out.
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                let q = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != q {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                s.push(' ');
            }
            '{' | '[' => {
                let close = if chars[i] == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    i += 1;
                }
                i += 1;
                s.push(' ');
            }
            c => {
                s.push(c);
                i += 1;
            }
        }
    }
    // Identifiers, with what follows them.
    let mut names = BTreeSet::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut skip_list = false;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == ':') {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            let mut j = i;
            while j < b.len() && b[j].is_whitespace() {
                j += 1;
            }
            let called = j < b.len() && b[j] == '(';
            let lower = word.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                // Its (label, …) list follows.
                skip_list = called;
                continue;
            }
            if skip_list || called || PROMQL_WORDS.contains(&lower.as_str()) {
                continue;
            }
            // A number like 1e3 starts with a digit and never gets here;
            // duration units follow digits (5m) and are skipped below.
            names.insert(word);
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
        } else {
            if c == ')' {
                skip_list = false;
            }
            i += 1;
        }
    }
    names
}

/// The `expr:` of every rule in a Prometheus rule file (one-line, or a `|`
/// block of deeper-indented lines).
pub fn rule_exprs(rules_yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = rules_yaml.lines().collect();
    let mut out = Vec::new();
    let mut alert = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        if let Some(a) = t
            .strip_prefix("- alert:")
            .or_else(|| t.strip_prefix("alert:"))
        {
            alert = a.trim().to_owned();
        }
        if let Some(rest) = t.strip_prefix("expr:") {
            let rest = rest.trim();
            if rest == "|" || rest == "|-" || rest == ">" {
                let indent = line.len() - t.len();
                let mut expr = String::new();
                i += 1;
                while i < lines.len() {
                    let l = lines[i];
                    let li = l.len() - l.trim_start().len();
                    if !l.trim().is_empty() && li <= indent {
                        break;
                    }
                    expr.push_str(l.trim());
                    expr.push(' ');
                    i += 1;
                }
                out.push((alert.clone(), expr.trim().to_owned()));
                continue;
            }
            out.push((alert.clone(), rest.to_owned()));
        }
        i += 1;
    }
    out
}

/// Every panel target's `expr` of a Grafana dashboard: (panel title, expr).
pub fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        let title = p["title"].as_str().unwrap_or("?").to_owned();
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((title.clone(), e.to_owned()));
            }
        }
    }
    out
}

/// The dashboards of `dashboards/` (the chart's copy): (file name, JSON).
pub fn dashboards() -> Vec<(String, Value)> {
    let dir = repo_root().join("helm/vodfleet/dashboards");
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("dir entry").path();
        if p.extension().and_then(|x| x.to_str()) == Some("json") {
            let text = fs::read_to_string(&p).expect("read dashboard");
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The alert rules file (the one copy; the chart ships it as a PrometheusRule).
pub fn rules_path() -> PathBuf {
    repo_root().join("helm/vodfleet/files/alerts.rules.yaml")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_histogram_s_series_are_names_too() {
        let names = super::exposition_names(
            "# HELP a_seconds A.\n# TYPE a_seconds histogram\na_seconds_bucket{le=\"1\"} 0\n\
             # TYPE b_total counter\nb_total 1\n# TYPE c summary\n",
        );
        let want = [
            "a_seconds",
            "a_seconds_bucket",
            "a_seconds_count",
            "a_seconds_sum",
            "b_total",
            "c",
            "c_count",
            "c_sum",
        ];
        assert_eq!(names.iter().map(String::as_str).collect::<Vec<_>>(), want);
    }
}
