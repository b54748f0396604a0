//! Metrics: every counter Tidings keeps, counted once for both [`Stats`](crate::Stats) and
//! Prometheus (`/metrics`, one process-wide recorder).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tidings_protocol::Code;

/// Open WebSocket connections (gauge).
pub(crate) const CONNECTIONS: &str = "tidings_connections";
/// Frames read from clients.
pub(crate) const FRAMES_IN: &str = "tidings_frames_in_total";
/// Frames written to clients.
pub(crate) const FRAMES_OUT: &str = "tidings_frames_out_total";
/// Publications stored or fanned out.
pub(crate) const PUBLICATIONS: &str = "tidings_publications_total";
/// Frames queued for subscribers.
pub(crate) const DELIVERIES: &str = "tidings_deliveries_total";
/// Frames not delivered, by `reason` (`ephemeral_overflow`, `slow_consumer`).
pub(crate) const DROPPED: &str = "tidings_dropped_total";
/// Publications another node stored that this node read from the store because the broker
/// did not bring them (a lost message, a reconnection).
pub(crate) const GAP_FILLED: &str = "tidings_broker_gap_filled_total";
/// Errors sent and connections refused or closed, by `code`.
pub(crate) const ERRORS: &str = "tidings_errors_total";
/// Webhook delivery attempts.
#[cfg_attr(not(feature = "webhooks"), allow(dead_code))]
pub(crate) const WEBHOOK_ATTEMPTS: &str = "tidings_webhook_attempts_total";
/// Failed webhook delivery attempts.
#[cfg_attr(not(feature = "webhooks"), allow(dead_code))]
pub(crate) const WEBHOOK_FAILURES: &str = "tidings_webhook_failures_total";
/// Webhook events given up after their last attempt.
#[cfg_attr(not(feature = "webhooks"), allow(dead_code))]
pub(crate) const WEBHOOK_ABANDONED: &str = "tidings_webhook_abandoned_total";
/// Webhook records waiting (gauge).
#[cfg_attr(not(feature = "webhooks"), allow(dead_code))]
pub(crate) const WEBHOOK_BACKLOG: &str = "tidings_webhook_backlog";

/// Sockets refused at accept for the connection caps (`limits.max_connections`,
/// `limits.max_connections_per_ip`).
pub(crate) const REFUSED_CONNECTIONS: &str = "tidings_refused_connections_total";

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

/// Counts an error frame, refusal or close with `code`.
pub(crate) fn error(code: Code) {
    metrics::counter!(ERRORS, "code" => code.name()).increment(1);
}

/// Counts a socket refused for the connection caps.
pub(crate) fn refused_connection() {
    metrics::counter!(REFUSED_CONNECTIONS).increment(1);
}

/// The node's activity counters. Each method counts once, here and in Prometheus, so
/// [`Stats`](crate::Stats) and `/metrics` cannot disagree.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    publications: AtomicU64,
    deliveries: AtomicU64,
    dropped: AtomicU64,
    slow_consumers: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counted {
    pub(crate) publications: u64,
    pub(crate) deliveries: u64,
    pub(crate) dropped: u64,
    pub(crate) slow_consumers: u64,
}

impl Counters {
    /// One publication stored or fanned out (including broadcasts).
    pub(crate) fn publication(&self) {
        self.publications.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(PUBLICATIONS).increment(1);
    }

    /// `count` frames queued for subscribers.
    pub(crate) fn deliveries(&self, count: u64) {
        self.deliveries.fetch_add(count, Ordering::Relaxed);
        metrics::counter!(DELIVERIES).increment(count);
    }

    /// `count` publications read from the store to fill a gap between nodes.
    pub(crate) fn gap_filled(&self, count: u64) {
        metrics::counter!(GAP_FILLED).increment(count);
    }

    /// An ephemeral frame dropped for a slow client.
    pub(crate) fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(DROPPED, "reason" => "ephemeral_overflow").increment(1);
    }

    /// A connection closed with 4009.
    pub(crate) fn slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(DROPPED, "reason" => "slow_consumer").increment(1);
    }

    pub(crate) fn snapshot(&self) -> Counted {
        Counted {
            publications: self.publications.load(Ordering::Relaxed),
            deliveries: self.deliveries.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            slow_consumers: self.slow_consumers.load(Ordering::Relaxed),
        }
    }
}
