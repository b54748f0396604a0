//! Clocks, histograms and the small statistics of the report.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since this process's clock origin (one clock for publisher and receivers).
pub(crate) fn now_ns() -> u64 {
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The `Instant` of a time on that clock.
pub(crate) fn instant_of(ns: u64) -> tokio::time::Instant {
    let origin = *ORIGIN.get_or_init(Instant::now);
    tokio::time::Instant::from_std(origin + Duration::from_nanos(ns))
}

/// A latency histogram in microseconds, 1 µs to 10 minutes.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()))
}

fn unreachable_histogram() -> Histogram<u64> {
    // new(3) only fails for sigfig > 5; keep clippy's expect lint happy without panicking.
    Histogram::new(2).unwrap_or_else(|_| std::process::abort())
}

/// Records a latency (ns) as µs, saturating at the histogram's top.
pub(crate) fn record(h: &mut Histogram<u64>, latency_ns: u64) {
    let us = (latency_ns / 1000).max(1);
    let _ = h.record(us.min(h.high()));
}

/// p50, p99 and p99.9 of a histogram, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Latency {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) samples: u64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
            p999_ms: h.value_at_quantile(0.999) as f64 / 1000.0,
            max_ms: h.max() as f64 / 1000.0,
            samples: h.len(),
        }
    }
}

/// Least-squares slope of y over x.
pub(crate) fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return f64::NAN;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if sxx == 0.0 { f64::NAN } else { sxy / sxx }
}

/// Median of the finite values (mean of the middle two for an even count); NaN when none.
pub(crate) fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    let upper = v.get(n / 2).copied().unwrap_or(f64::NAN);
    if n % 2 == 1 {
        upper
    } else {
        (v.get(n / 2 - 1).copied().unwrap_or(f64::NAN) + upper) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line() {
        let points = [(1000.0, 10_000.0), (5000.0, 42_000.0), (10_000.0, 82_000.0)];
        assert!((slope(&points) - 8.0).abs() < 1e-9);
    }

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0]), 2.5);
        assert!(median([f64::NAN]).is_nan());
    }

    #[test]
    fn latency_quantiles() {
        let mut h = histogram();
        for ms in 1..=100u64 {
            record(&mut h, ms * 1_000_000);
        }
        let l = Latency::of(&h);
        assert!((l.p50_ms - 50.0).abs() < 0.5);
        assert!((l.p99_ms - 99.0).abs() < 0.5);
    }
}
