//! HTTP APIs served by the gateway: health, Prometheus metrics, the agent
//! API (`agent`, with sign-in in `auth` and errors in `problem`), the admin
//! API and recording playback.

pub mod admin;
pub mod agent;
pub mod auth;
pub mod page;
pub mod problem;
pub mod recordings;

use std::sync::OnceLock;

use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process-wide Prometheus recorder; installed on first use so that the
/// gateway and the connector share it when they run in one process.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; metrics then
            // go there and this handle renders an empty page.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// `/healthz` and `/metrics`, shared by every role's HTTP listener.
pub fn ops_routes() -> Router {
    let handle = metrics_handle();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(move || std::future::ready(handle.render())))
}
