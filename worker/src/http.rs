//! The operator endpoints on `VODFLEET_HTTP_ADDR`: `/healthz` (the process is
//! up), `/readyz` (what `ready` says) and `/metrics` (Prometheus text).

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What the endpoints ask of the rest of the process.
#[derive(Clone)]
pub struct Probes {
    /// Whether the process does its job right now (for `/readyz`).
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Brings gauges up to date before `/metrics` renders them.
    pub refresh: Arc<dyn Fn() + Send + Sync>,
}

/// Serves until `stop` fires.
pub async fn serve(listener: tokio::net::TcpListener, probes: Probes, stop: CancellationToken) {
    let ready = probes.ready.clone();
    let refresh = probes.refresh.clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                if ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                refresh();
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    vodfleet_engine::metrics::get().render(),
                )
                    .into_response()
            }),
        );
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "HTTP endpoint failed");
    }
}
