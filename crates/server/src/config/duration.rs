//! Durations in settings: a string with its unit (`"25s"`, `"500ms"`, `"7d"`, `"1h 30m"`,
//! parsed by humantime), or — deprecated, kept so that older files still load — a bare
//! integer in the unit the field used to have.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{Error, Visitor};

/// The unit a bare integer is read in.
#[derive(Clone, Copy)]
enum Legacy {
    Millis,
    Secs,
}

struct DurationVisitor(Legacy);

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration with its unit, such as \"25s\", \"500ms\" or \"7d\"")
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<Duration, E> {
        humantime::parse_duration(text.trim())
            .map_err(|e| E::custom(format_args!("invalid duration {text:?}: {e}")))
    }

    fn visit_u64<E: Error>(self, n: u64) -> Result<Duration, E> {
        Ok(match self.0 {
            Legacy::Millis => Duration::from_millis(n),
            Legacy::Secs => Duration::from_secs(n),
        })
    }

    fn visit_i64<E: Error>(self, n: i64) -> Result<Duration, E> {
        let n = u64::try_from(n)
            .map_err(|_| E::custom(format_args!("a duration cannot be negative ({n})")))?;
        self.visit_u64(n)
    }
}

/// Optional form of [`DurationVisitor`]: TOML has no null, so `Some` is all it ever sees, but
/// other sources (figment values) may call `visit_none`.
struct OptionVisitor(Legacy);

impl<'de> Visitor<'de> for OptionVisitor {
    type Value = Option<Duration>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        DurationVisitor(self.0).expecting(f)
    }

    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(DurationVisitor(self.0)).map(Some)
    }
}

/// A duration whose bare-integer form is milliseconds.
pub(super) fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor(Legacy::Millis))
}

/// A duration whose bare-integer form is seconds.
pub(super) fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor(Legacy::Secs))
}

/// An optional duration whose bare-integer form is seconds.
pub(super) fn opt_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_option(OptionVisitor(Legacy::Secs))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use crate::Config;

    #[test]
    fn units_are_written_out() {
        let config = Config::from_toml_str(
            "heartbeat = \"25s\"\nheartbeat_timeout = \"1500ms\"\nhistory_ttl = \"7d\"\n\
             shutdown_deadline = \"1m 30s\"\n\
             [[channels]]\npattern = \"a:*\"\nhistory_ttl = \"30days\"\n\
             [webhook_delivery]\nretry_max = \"5min\"\n",
        )
        .unwrap();
        assert_eq!(config.heartbeat, Duration::from_secs(25));
        assert_eq!(config.heartbeat_timeout, Duration::from_millis(1500));
        assert_eq!(config.history_ttl, Duration::from_secs(7 * 86_400));
        assert_eq!(config.shutdown_deadline, Duration::from_secs(90));
        let class_ttl = config.channels.first().and_then(|c| c.history_ttl);
        assert_eq!(class_ttl, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(config.webhook_delivery.retry_max, Duration::from_secs(300));
    }

    #[test]
    fn bare_integers_keep_their_old_unit() {
        // Files written for earlier versions: ms for timers, s for retention.
        let config = Config::from_toml_str(
            "heartbeat = 25000\nshutdown_deadline = 1000\nhistory_ttl = 604800\n\
             retention_interval = 60\n\
             [[channels]]\npattern = \"a:*\"\nhistory_ttl = 2592000\n\
             [webhook_delivery]\npoll_interval = 500\n",
        )
        .unwrap();
        assert_eq!(config.heartbeat, Duration::from_secs(25));
        assert_eq!(config.shutdown_deadline, Duration::from_secs(1));
        assert_eq!(config.history_ttl, Duration::from_secs(604_800));
        assert_eq!(config.retention_interval, Duration::from_secs(60));
        let class_ttl = config.channels.first().and_then(|c| c.history_ttl);
        assert_eq!(class_ttl, Some(Duration::from_secs(2_592_000)));
        assert_eq!(
            config.webhook_delivery.poll_interval,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        let message = |toml: &str| Config::from_toml_str(toml).unwrap_err().to_string();
        let no_unit = message("heartbeat = \"25\"");
        assert!(no_unit.contains("invalid duration \"25\""), "{no_unit}");
        assert!(no_unit.contains("heartbeat"), "{no_unit}");
        let negative = message("heartbeat = -5");
        assert!(negative.contains("cannot be negative"), "{negative}");
        let float = message("heartbeat = 2.5");
        assert!(float.contains("such as \"25s\""), "{float}");
        let class = message("[[channels]]\npattern = \"a\"\nhistory_ttl = \"soon\"");
        assert!(class.contains("invalid duration \"soon\""), "{class}");
    }
}
