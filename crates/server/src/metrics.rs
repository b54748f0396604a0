//! Prometheus metrics: one process-wide recorder, rendered at `/metrics`.
//!
//! Names: `tidings_connections` (gauge), `tidings_frames_in_total`, `tidings_frames_out_total`,
//! `tidings_deliveries_total`, `tidings_dropped_total{reason}`, `tidings_errors_total{code}`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder once per process. If the application installed its own recorder
/// first, Tidings reports into that one and `/metrics` says so.
pub(crate) fn install() {
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().ok());
}

/// The metrics in Prometheus text format, or `None` when another recorder is in charge.
pub(crate) fn render() -> Option<String> {
    let handle = HANDLE.get()?.as_ref()?;
    handle.run_upkeep();
    Some(handle.render())
}
