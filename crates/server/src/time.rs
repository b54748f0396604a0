//! Wall-clock helpers, in the units the wire and the stores use.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (publication timestamps, webhook schedules).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

/// Seconds since the Unix epoch (JWT `exp`).
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch, `age` ago: the cutoff of an age-based retention.
pub(crate) fn ms_ago(age: Duration) -> u64 {
    let then = SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH);
    millis(then.duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// A duration in whole milliseconds, saturating (the wire's `*_ms` fields).
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_agree() {
        assert_eq!(millis(Duration::from_secs(2)), 2000);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        let (ms, secs) = (now_ms(), now_secs());
        assert!(ms / 1000 >= secs.saturating_sub(1) && ms / 1000 <= secs + 1);
        assert!(ms_ago(Duration::from_secs(60)) + 59_000 < ms);
        assert_eq!(ms_ago(Duration::MAX), 0);
    }
}
