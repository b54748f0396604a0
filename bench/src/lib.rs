//! Shared helpers of the Tidings benchmarks. Each measurement is a binary in `src/bin/`.

/// Percentile of sorted samples (0.0–1.0).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted
        .get(rank.min(sorted.len() - 1))
        .copied()
        .unwrap_or(f64::NAN)
}
