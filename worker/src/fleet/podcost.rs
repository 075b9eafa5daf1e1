//! Pod deletion cost: on Kubernetes, this worker keeps its own pod's
//! `controller.kubernetes.io/pod-deletion-cost` annotation equal to the number
//! of tasks it streams, so a Deployment that scales down removes idle workers
//! first (the ReplicaSet controller deletes the pods of lowest cost first). A
//! worker removed anyway still hands its streams off through the SIGTERM drain.
//! docs/operations.md explains the scaling model.
//!
//! How: a JSON merge-patch of the pod's `metadata.annotations`, sent to the API
//! server with the pod's service-account token, only when the value changed
//! (debounced, so a burst of starts is one request), and again after a failure
//! (backoff up to 30 s). Off when not in a cluster.
//!
//! Variables (all optional; the Helm chart sets the pod's name and namespace):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `VODFLEET_POD_DELETION_COST` | `auto` | `auto`: on when in a cluster (`KUBERNETES_SERVICE_HOST` set, or `VODFLEET_KUBE_API_URL`); `true`; `false` |
//! | `VODFLEET_POD_NAME` | `$HOSTNAME` | this pod's name (downward API `metadata.name`) |
//! | `VODFLEET_POD_NAMESPACE` | the service account's `namespace` file | this pod's namespace (downward API `metadata.namespace`) |
//! | `VODFLEET_KUBE_API_URL` | `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` | the API server (tests point it at a local stand-in) |
//! | `VODFLEET_KUBE_SERVICEACCOUNT_DIR` | `/var/run/secrets/kubernetes.io/serviceaccount` | `token` (read anew for each request: kubelet rotates it), `ca.crt`, `namespace` |
//! | `VODFLEET_POD_DELETION_COST_DEBOUNCE_MS` | `1000` | how long the value must settle before it is sent |

use super::Fleet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The annotation the ReplicaSet controller reads (Kubernetes ≥ 1.22, beta, on by default).
pub const ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

const DEFAULT_SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to patch this worker's pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCost {
    /// API server base URL, no trailing slash.
    pub api: String,
    pub namespace: String,
    pub pod: String,
    /// Holds `token` and `ca.crt`.
    pub sa_dir: PathBuf,
    pub debounce: Duration,
}

impl PodCost {
    /// `Ok(None)` when off (not in a cluster, or turned off).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<PodCost>, String> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mode = get("VODFLEET_POD_DELETION_COST").unwrap_or_else(|| "auto".into());
        let forced = match mode.as_str() {
            "auto" => false,
            "true" | "1" => true,
            "false" | "0" => return Ok(None),
            other => {
                return Err(format!(
                    "VODFLEET_POD_DELETION_COST={other:?} is not auto, true or false"
                ))
            }
        };
        let api = match get("VODFLEET_KUBE_API_URL") {
            Some(u) => u,
            None => match get("KUBERNETES_SERVICE_HOST") {
                Some(host) => {
                    let port = get("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
                    if host.contains(':') {
                        format!("https://[{host}]:{port}")
                    } else {
                        format!("https://{host}:{port}")
                    }
                }
                None if forced => {
                    return Err("VODFLEET_POD_DELETION_COST=true but neither VODFLEET_KUBE_API_URL nor KUBERNETES_SERVICE_HOST is set".into())
                }
                None => return Ok(None),
            },
        };
        if !(api.starts_with("https://") || api.starts_with("http://")) {
            return Err(format!(
                "VODFLEET_KUBE_API_URL={api:?} is not an http(s) URL"
            ));
        }
        let sa_dir = PathBuf::from(
            get("VODFLEET_KUBE_SERVICEACCOUNT_DIR").unwrap_or_else(|| DEFAULT_SA_DIR.into()),
        );
        let namespace = get("VODFLEET_POD_NAMESPACE").or_else(|| {
            std::fs::read_to_string(sa_dir.join("namespace"))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        });
        let pod = get("VODFLEET_POD_NAME").or_else(|| get("HOSTNAME"));
        let (Some(namespace), Some(pod)) = (namespace, pod) else {
            return Err("pod deletion cost: the pod's name and namespace are unknown (set VODFLEET_POD_NAME and VODFLEET_POD_NAMESPACE from the downward API, or VODFLEET_POD_DELETION_COST=false)".into());
        };
        let debounce = match get("VODFLEET_POD_DELETION_COST_DEBOUNCE_MS") {
            None => Duration::from_millis(1000),
            Some(v) => v.parse().map(Duration::from_millis).map_err(|_| {
                format!("VODFLEET_POD_DELETION_COST_DEBOUNCE_MS={v:?} is not a whole number of milliseconds")
            })?,
        };
        Ok(Some(PodCost {
            api: api.trim_end_matches('/').to_owned(),
            namespace,
            pod,
            sa_dir,
            debounce,
        }))
    }

    /// `…/api/v1/namespaces/NS/pods/NAME`.
    pub fn url(&self) -> String {
        format!(
            "{}/api/v1/namespaces/{}/pods/{}",
            self.api, self.namespace, self.pod
        )
    }
}

/// The merge-patch body that sets the annotation to `cost`.
pub fn patch_body(cost: usize) -> String {
    serde_json::json!({"metadata": {"annotations": {ANNOTATION: cost.to_string()}}}).to_string()
}

fn client(sa_dir: &Path, https: bool) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT);
    if https {
        let ca = sa_dir.join("ca.crt");
        if let Ok(pem) = std::fs::read(&ca) {
            // The cluster's CA only: the API server is never a public-web host.
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            b = b.tls_built_in_root_certs(false).add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| e.to_string())
}

async fn send(http: &reqwest::Client, pc: &PodCost, cost: usize) -> Result<(), String> {
    let mut req = http
        .patch(pc.url())
        .header("content-type", "application/merge-patch+json")
        .header("accept", "application/json")
        .body(patch_body(cost));
    // Read for every request: the kubelet rotates projected tokens.
    if let Ok(token) = std::fs::read_to_string(pc.sa_dir.join("token")) {
        let token = token.trim();
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    Err(format!("{status}: {body}"))
}

/// Reads the configuration from the environment; logs and stays off when it is
/// not usable (the worker streams just the same without it).
pub async fn run(fleet: Arc<Fleet>) {
    let pc = match PodCost::from_lookup(|k| std::env::var(k).ok()) {
        Ok(Some(pc)) => pc,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "pod deletion cost is off");
            return;
        }
    };
    let http = match client(&pc.sa_dir, pc.api.starts_with("https://")) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "pod deletion cost is off: no HTTP client");
            return;
        }
    };
    tracing::info!(pod = %pc.pod, namespace = %pc.namespace, api = %pc.api, "keeping the pod's deletion cost equal to its active streams");
    let stop = fleet.shutdown.clone();
    let mut sent: Option<usize> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        let changed = fleet.changed.notified();
        tokio::pin!(changed);
        // Registered before the count is read: no change slips between the two.
        changed.as_mut().enable();
        let cost = fleet.tasks().len();
        if sent != Some(cost) {
            match send(&http, &pc, cost).await {
                Ok(()) => {
                    tracing::debug!(cost, "pod deletion cost updated");
                    sent = Some(cost);
                    backoff = Duration::from_secs(1);
                }
                Err(e) => {
                    tracing::warn!(cost, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot update the pod deletion cost");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = changed => {}
        }
        // Let a burst of starts or ends settle into one request.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pc.debounce) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn off_outside_a_cluster() {
        assert_eq!(PodCost::from_lookup(lookup(&[])).unwrap(), None);
        assert_eq!(
            PodCost::from_lookup(lookup(&[("HOSTNAME", "w-1")])).unwrap(),
            None
        );
    }

    #[test]
    fn on_in_a_cluster_from_the_service_env() {
        let pc = PodCost::from_lookup(lookup(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("VODFLEET_POD_NAME", "vodfleet-worker-7d9-abcde"),
            ("VODFLEET_POD_NAMESPACE", "media"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            pc.url(),
            "https://10.96.0.1:443/api/v1/namespaces/media/pods/vodfleet-worker-7d9-abcde"
        );
        assert_eq!(pc.debounce, Duration::from_secs(1));
        let v6 = PodCost::from_lookup(lookup(&[
            ("KUBERNETES_SERVICE_HOST", "fd00::1"),
            ("VODFLEET_POD_NAME", "p"),
            ("VODFLEET_POD_NAMESPACE", "n"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(v6.api, "https://[fd00::1]:443");
    }

    #[test]
    fn turned_off_even_in_a_cluster() {
        let got = PodCost::from_lookup(lookup(&[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("VODFLEET_POD_DELETION_COST", "false"),
        ]))
        .unwrap();
        assert_eq!(got, None);
    }

    #[test]
    fn bad_values_are_named() {
        let e =
            PodCost::from_lookup(lookup(&[("VODFLEET_POD_DELETION_COST", "maybe")])).unwrap_err();
        assert!(e.contains("VODFLEET_POD_DELETION_COST"), "{e}");
        let e =
            PodCost::from_lookup(lookup(&[("VODFLEET_POD_DELETION_COST", "true")])).unwrap_err();
        assert!(e.contains("KUBERNETES_SERVICE_HOST"), "{e}");
        let e = PodCost::from_lookup(lookup(&[
            ("VODFLEET_KUBE_API_URL", "http://127.0.0.1:1"),
            ("VODFLEET_POD_NAMESPACE", "n"),
        ]))
        .unwrap_err();
        assert!(e.contains("VODFLEET_POD_NAME"), "{e}");
    }

    #[test]
    fn the_patch_sets_the_annotation_as_a_string() {
        let v: serde_json::Value = serde_json::from_str(&patch_body(7)).unwrap();
        assert_eq!(v["metadata"]["annotations"][ANNOTATION], "7");
    }
}
