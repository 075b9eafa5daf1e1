//! Issue 7: each worker keeps its pod's
//! `controller.kubernetes.io/pod-deletion-cost` equal to its active streams.
//! A real worker streams to nginx-rtmp; a local HTTP server stands in for the
//! Kubernetes API and records the PATCHes: the right pod, the service-account
//! token, a JSON merge-patch, and the values 0 → 1 → 2 → 1 → 0 as streams
//! start and stop, each sent once (only changes are sent), after a refused
//! first attempt is retried.

use serde_json::Value;
use std::time::Duration;
use vodfleet_tests::fleet::{long_counter, FleetOptions};
use vodfleet_tests::ops::{KubeApiStandIn, KubeRequest};
use vodfleet_tests::{poll, Fleet};

const ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
const POD: &str = "vodfleet-worker-5d8c7-x2x9q";
const NAMESPACE: &str = "media";
const TOKEN: &str = "test-sa-token-0123456789";

/// The annotation values of the PATCHes accepted so far, in order.
fn costs(api: &KubeApiStandIn) -> Vec<String> {
    api.requests()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| {
            let v: Value = serde_json::from_str(&r.body)
                .unwrap_or_else(|e| panic!("PATCH body is not JSON ({e}): {:?}", r.body));
            v["metadata"]["annotations"][ANNOTATION]
                .as_str()
                .unwrap_or_else(|| panic!("no {ANNOTATION} (as a string) in {}", r.body))
                .to_owned()
        })
        .collect()
}

/// Waits until the last value received is `want`, and returns every value.
fn wait_cost(api: &KubeApiStandIn, fleet: &Fleet, want: &str) -> Vec<String> {
    poll(Duration::from_secs(20), || {
        let c = costs(api);
        (c.last().map(String::as_str) == Some(want)).then_some(c)
    })
    .unwrap_or_else(|| {
        panic!(
            "no PATCH with {ANNOTATION}={want} within 20 s; got {:?}\n{}",
            costs(api),
            fleet.reports()
        )
    })
}

fn check_request(r: &KubeRequest) {
    assert_eq!(r.method, "PATCH", "{r:?}");
    assert_eq!(
        r.path,
        format!("/api/v1/namespaces/{NAMESPACE}/pods/{POD}"),
        "{r:?}"
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/merge-patch+json"),
        "{r:?}"
    );
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str()),
        "{r:?}"
    );
}

#[test]
fn the_worker_patches_its_pod_deletion_cost_as_streams_start_and_stop() {
    // The first PATCH is refused (as an API server without the Role would):
    // the worker must try again.
    let api = KubeApiStandIn::start(vec![503]);
    let sa = tempfile::tempdir().unwrap();
    std::fs::write(sa.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let opts = FleetOptions {
        coordinators: 1,
        workers: 1,
        ..FleetOptions::default()
    }
    .env("VODFLEET_KUBE_API_URL", &api.url())
    .env("VODFLEET_POD_NAME", POD)
    .env("VODFLEET_POD_NAMESPACE", NAMESPACE)
    .env(
        "VODFLEET_KUBE_SERVICEACCOUNT_DIR",
        sa.path().to_str().unwrap(),
    )
    .env("VODFLEET_POD_DELETION_COST_DEBOUNCE_MS", "200");
    let fleet = Fleet::start(opts);
    let worker = &fleet.workers[0];

    // Idle: cost 0, sent again after the refusal.
    let c = wait_cost(&api, &fleet, "0");
    assert_eq!(c, ["0"]);
    let refused: Vec<KubeRequest> = api
        .requests()
        .into_iter()
        .filter(|r| r.status != 200)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0]
        .body
        .contains(r#""controller.kubernetes.io/pod-deletion-cost":"0""#));

    let producer = fleet.producer();
    let media = long_counter();
    let a = fleet.new_task(&[&media], 1);
    let b = fleet.new_task(&[&media], 1);
    producer.send(&a.start(0));
    fleet.rtmp.wait_publishing(a.key(), Duration::from_secs(20));
    wait_cost(&api, &fleet, "1");
    assert_eq!(worker.streams_active(), Some(1.0));

    producer.send(&b.start(0));
    fleet.rtmp.wait_publishing(b.key(), Duration::from_secs(20));
    wait_cost(&api, &fleet, "2");
    assert_eq!(worker.streams_active(), Some(2.0));

    producer.send(&a.stop());
    fleet
        .rtmp
        .wait_unpublished(a.key(), Duration::from_secs(20));
    wait_cost(&api, &fleet, "1");

    producer.send(&b.stop());
    fleet
        .rtmp
        .wait_unpublished(b.key(), Duration::from_secs(20));
    let all = wait_cost(&api, &fleet, "0");

    // One PATCH per change, in order; nothing sent twice.
    assert_eq!(
        all,
        ["0", "1", "2", "1", "0"],
        "every value received: {all:?}"
    );
    for r in api.requests() {
        check_request(&r);
    }
    assert!(
        worker.log().contains("cannot update the pod deletion cost"),
        "the refused PATCH was not logged\n{}",
        worker.report()
    );
}
