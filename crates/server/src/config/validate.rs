//! Settings that parse but cannot work are refused at start-up, with the setting's name,
//! rather than found out later as a panic in a timer or a connection that never works.

use std::time::Duration;

use super::{Config, ConfigError};

/// Paths the server serves itself (and, for the API's, everything under them).
const RESERVED_PATHS: &[&str] = &[
    "/ws",
    "/healthz",
    "/metrics",
    "/api/openapi.json",
    "/api/publish",
    "/api/notify",
    "/api/broadcast",
    "/api/stats",
    "/api/status",
    "/api/users",
    "/api/channels",
];

/// Reading `{name}`s out of a route's templates.
struct RouteConfigCheck;

impl RouteConfigCheck {
    /// Every `{name}` in `template`.
    fn placeholders(template: &str) -> Vec<&str> {
        template
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
            .collect()
    }
}

/// The longest timer setting (heartbeats, intervals, shutdown and webhook timings): one
/// year (365.25 days, humantime's `1year`). Timers are added to the clock, which overflows (and panics) for durations near
/// `Duration::MAX`; nothing useful needs more. Retention ages are not timers and are not
/// capped.
pub const MAX_TIMER: Duration = Duration::from_secs(31_557_600);

impl Config {
    /// Refuses settings that cannot work: a zero heartbeat or interval, a timer longer than
    /// [`MAX_TIMER`], a zero frame or queue limit, a queue smaller than a frame, stored
    /// channels that keep nothing, an unparsable `bind`, two JWT key kinds at once, a
    /// webhook that is not http(s). `TidingsBuilder::build` and the binary call it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_timers()?;
        self.check_limits()?;
        self.check_retention()?;
        self.check_keys()?;
        self.check_webhooks()?;
        self.check_broker()?;
        self.check_routes()?;
        self.check_proxy()
    }

    /// Proxy URLs are http(s).
    fn check_proxy(&self) -> Result<(), ConfigError> {
        let proxy = &self.proxy;
        for (setting, url) in [
            ("proxy.connect", &proxy.connect),
            ("proxy.subscribe", &proxy.subscribe),
            ("proxy.publish", &proxy.publish),
            ("proxy.rpc", &proxy.rpc),
        ] {
            if let Some(url) = url
                && !is_http_url(url)
            {
                return Err(ConfigError::ProxyUrl {
                    setting,
                    url: url.clone(),
                });
            }
        }
        Ok(())
    }

    /// Route paths axum can mount (it panics on a bad or duplicate one), away from the
    /// built-in paths, whose templates name only the path's own segments.
    fn check_routes(&self) -> Result<(), ConfigError> {
        let mut shapes = std::collections::HashSet::new();
        for route in &self.routes {
            let refuse = |reason: String| {
                Err(ConfigError::Route {
                    path: route.path.clone(),
                    reason,
                })
            };
            if !route.path.starts_with('/') {
                return refuse("it must start with /".to_owned());
            }
            let Some(names) = route.parameters() else {
                return refuse(
                    "each segment is a literal, or one {name} of letters, digits and _".to_owned(),
                );
            };
            let taken = RESERVED_PATHS.iter().any(|path| {
                route.path == *path
                    || path.starts_with("/api/")
                        && route
                            .path
                            .strip_prefix(path)
                            .is_some_and(|rest| rest.starts_with('/'))
            });
            if taken {
                return refuse("the server uses this path itself".to_owned());
            }
            let mut unique = std::collections::HashSet::new();
            if !names.iter().all(|name| unique.insert(*name)) {
                return refuse("a {name} appears twice".to_owned());
            }
            // `/a/{x}` and `/a/{y}` are one path to the router.
            let shape: Vec<&str> = route
                .path
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        "{}"
                    } else {
                        segment
                    }
                })
                .collect();
            if !shapes.insert(shape) {
                return refuse("another route has the same shape".to_owned());
            }
            for template in [&route.channel, &route.user].into_iter().flatten() {
                let filled = RouteConfigCheck::placeholders(template);
                if let Some(unknown) = filled.iter().find(|name| !names.contains(name)) {
                    return refuse(format!("{{{unknown}}} is not a segment of the path"));
                }
                if template.is_empty() {
                    return refuse("a channel or user template is empty".to_owned());
                }
            }
        }
        Ok(())
    }

    /// Several nodes share offsets through one PostgreSQL database.
    fn check_broker(&self) -> Result<(), ConfigError> {
        let shared =
            self.storage.database_url.as_deref().is_some_and(|url| {
                url.starts_with("postgres://") || url.starts_with("postgresql://")
            });
        if self.broker.is_some() && (self.storage.ephemeral || !shared) {
            return Err(ConfigError::BrokerWithoutSharedStore);
        }
        let Some(prefix) = &self.broker_prefix else {
            return Ok(());
        };
        let refuse = |reason| {
            Err(ConfigError::BrokerPrefix {
                prefix: prefix.clone(),
                reason,
            })
        };
        if prefix.is_empty() {
            return refuse("it is empty");
        }
        let nats = self
            .broker
            .as_deref()
            .is_some_and(|url| url.starts_with("nats://") || url.starts_with("tls://"));
        if nats {
            let subject_safe = prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !subject_safe
                || !prefix.ends_with('.')
                || prefix.starts_with('.')
                || prefix.contains("..")
            {
                return refuse(
                    "a NATS subject prefix is tokens of letters, digits, `-` and `_`, each followed by a dot (e.g. `tidings.eu.`)",
                );
            }
        }
        Ok(())
    }

    fn check_timers(&self) -> Result<(), ConfigError> {
        let delivery = &self.webhook_delivery;
        // Periods: a zero one spins or panics (tokio intervals refuse a zero period).
        for (setting, value) in [
            ("heartbeat", self.heartbeat),
            ("heartbeat_timeout", self.heartbeat_timeout),
            ("retention_interval", self.retention_interval),
            ("presence_ttl", self.presence_ttl),
            ("proxy.timeout", self.proxy.timeout),
            ("limits.header_timeout", self.limits.header_timeout),
            ("webhook_delivery.timeout", delivery.timeout),
            ("webhook_delivery.retry_min", delivery.retry_min),
            ("webhook_delivery.poll_interval", delivery.poll_interval),
        ] {
            positive(setting, value)?;
        }
        for (setting, value) in [
            ("heartbeat", self.heartbeat),
            ("heartbeat_timeout", self.heartbeat_timeout),
            ("retention_interval", self.retention_interval),
            ("shutdown_deadline", self.shutdown_deadline),
            ("presence_ttl", self.presence_ttl),
            ("proxy.timeout", self.proxy.timeout),
            ("limits.header_timeout", self.limits.header_timeout),
            ("shutdown_reconnect_spread", self.shutdown_reconnect_spread),
            ("webhook_delivery.timeout", delivery.timeout),
            ("webhook_delivery.retry_min", delivery.retry_min),
            ("webhook_delivery.retry_max", delivery.retry_max),
            ("webhook_delivery.poll_interval", delivery.poll_interval),
        ] {
            bounded(setting, value)?;
        }
        if delivery.retry_min > delivery.retry_max {
            return Err(ConfigError::RetryOrder {
                min: delivery.retry_min,
                max: delivery.retry_max,
            });
        }
        Ok(())
    }

    fn check_limits(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        for (setting, value) in [
            ("limits.max_frame_bytes", limits.max_frame_bytes),
            ("limits.rate_per_second", usize_of(limits.rate_per_second)),
            ("limits.max_subscriptions", limits.max_subscriptions),
            ("limits.outbound_queue_bytes", limits.outbound_queue_bytes),
            ("limits.outbound_queue_frames", limits.outbound_queue_frames),
            ("limits.read_buffer_bytes", limits.read_buffer_bytes),
            (
                "webhook_delivery.max_attempts",
                usize_of(self.webhook_delivery.max_attempts),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero {
                    setting: setting.to_owned(),
                });
            }
        }
        if limits.outbound_queue_bytes < limits.max_frame_bytes {
            return Err(ConfigError::QueueSmallerThanFrame {
                queue: limits.outbound_queue_bytes,
                frame: limits.max_frame_bytes,
            });
        }
        Ok(())
    }

    /// Stored channels must keep something; `ephemeral` classes ignore their retention.
    fn check_retention(&self) -> Result<(), ConfigError> {
        no_retention("history_size", self.history_size == 0)?;
        no_retention("history_ttl", self.history_ttl.is_zero())?;
        for (n, class) in self.channels.iter().enumerate() {
            if class.pattern.is_empty() {
                return Err(ConfigError::Empty {
                    setting: format!("channels[{n}].pattern"),
                });
            }
            if !class.ephemeral {
                let size = format!("channels[{n}].history_size");
                no_retention(&size, class.history_size == Some(0))?;
                let ttl = format!("channels[{n}].history_ttl");
                no_retention(&ttl, class.history_ttl.is_some_and(|t| t.is_zero()))?;
            }
        }
        Ok(())
    }

    fn check_keys(&self) -> Result<(), ConfigError> {
        self.bind
            .parse::<std::net::SocketAddr>()
            .map_err(|source| ConfigError::Bind {
                value: self.bind.clone(),
                source,
            })?;
        if self.jwt.secret.is_some() && self.jwt.public_key_pem_file.is_some() {
            return Err(ConfigError::JwtKeyConflict);
        }
        for (setting, value) in [
            ("jwt.secret", &self.jwt.secret),
            ("jwt.public_key_pem_file", &self.jwt.public_key_pem_file),
            ("api_key", &self.api_key),
            ("proxy.secret", &self.proxy.secret),
        ] {
            // An empty key would let an empty bearer or signature through.
            if value.as_deref() == Some("") {
                return Err(ConfigError::Empty {
                    setting: setting.to_owned(),
                });
            }
        }
        Ok(())
    }

    fn check_webhooks(&self) -> Result<(), ConfigError> {
        let known = &crate::webhooks::EVENT_KINDS;
        for (index, endpoint) in self.webhooks.iter().enumerate() {
            if !is_http_url(&endpoint.url) {
                return Err(ConfigError::WebhookUrl {
                    index,
                    url: endpoint.url.clone(),
                });
            }
            if endpoint.secret.is_empty() {
                return Err(ConfigError::Empty {
                    setting: format!("webhooks[{index}].secret"),
                });
            }
            if let Some(kind) = endpoint
                .events
                .iter()
                .find(|k| !known.contains(&k.as_str()))
            {
                return Err(ConfigError::WebhookEvent {
                    index,
                    kind: kind.clone(),
                    known,
                });
            }
        }
        Ok(())
    }
}

fn positive(setting: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::ZeroDuration {
            setting: setting.to_owned(),
        });
    }
    Ok(())
}

fn bounded(setting: &str, value: Duration) -> Result<(), ConfigError> {
    if value > MAX_TIMER {
        return Err(ConfigError::DurationTooLong {
            setting: setting.to_owned(),
            value,
            max: MAX_TIMER,
        });
    }
    Ok(())
}

fn no_retention(setting: &str, keeps_nothing: bool) -> Result<(), ConfigError> {
    if keeps_nothing {
        return Err(ConfigError::NoRetention {
            setting: setting.to_owned(),
        });
    }
    Ok(())
}

fn usize_of(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `http://` or `https://` followed by a host (the `http` crate parses it as axum would).
fn is_http_url(url: &str) -> bool {
    url.parse::<axum::http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|host| !host.is_empty())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::WebhookEndpoint;

    fn refused(toml: &str) -> String {
        let config = Config::from_toml_str(toml).unwrap();
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn a_broker_needs_a_shared_store() {
        let broker = "broker = \"redis://127.0.0.1:6379\"\n";
        for storage in [
            "",
            "[storage]\nephemeral = true\n",
            "[storage]\ndatabase_url = \"sqlite:///tmp/x.db\"\n",
        ] {
            assert!(
                refused(&format!("{broker}{storage}"))
                    .contains("`broker` needs a store every node shares"),
                "{storage}"
            );
        }
        let shared = format!("{broker}[storage]\ndatabase_url = \"postgres://db/tidings\"\n");
        assert!(Config::from_toml_str(&shared).unwrap().validate().is_ok());
    }

    #[test]
    fn a_nats_prefix_must_make_subjects() {
        let nats = "broker = \"nats://127.0.0.1:4222\"\n\
                    [storage]\ndatabase_url = \"postgres://db/t\"\n";
        for bad in ["", "tidings", "a b.", "x.*.", ".x.", "x..y."] {
            let message = refused(&format!("broker_prefix = {bad:?}\n{nats}"));
            assert!(message.starts_with("`broker_prefix`"), "{bad}: {message}");
        }
        let good = format!("broker_prefix = \"tidings.eu-1.\"\n{nats}");
        assert!(Config::from_toml_str(&good).unwrap().validate().is_ok());
        // Redis channel names are any bytes.
        let redis = "broker = \"redis://r\"\nbroker_prefix = \"eu 1:\"\n\
                     [storage]\ndatabase_url = \"postgres://db/t\"\n";
        assert!(Config::from_toml_str(redis).unwrap().validate().is_ok());
    }

    #[test]
    fn zero_periods_are_refused_by_name() {
        assert_eq!(
            refused("heartbeat = \"0s\""),
            "`heartbeat` must be longer than zero"
        );
        assert_eq!(
            refused("heartbeat_timeout = 0"),
            "`heartbeat_timeout` must be longer than zero"
        );
        let poll = refused("[webhook_delivery]\npoll_interval = \"0ms\"");
        assert_eq!(
            poll,
            "`webhook_delivery.poll_interval` must be longer than zero"
        );
    }

    #[test]
    fn timers_that_could_overflow_are_refused() {
        let message = refused("heartbeat = \"1000years\"");
        assert!(message.starts_with("`heartbeat` = 1000years"), "{message}");
        assert!(message.contains("too long (at most 1year"), "{message}");
        // The largest integer the old millisecond form allows, too.
        let message = refused(&format!("shutdown_deadline = {}", i64::MAX));
        assert!(message.starts_with("`shutdown_deadline`"), "{message}");
        // Retention ages are not timers: a long one is fine.
        let config = Config::from_toml_str("history_ttl = \"100years\"").unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn limits_must_leave_room() {
        assert_eq!(
            refused("[limits]\nmax_frame_bytes = 0"),
            "`limits.max_frame_bytes` must be at least 1"
        );
        assert_eq!(
            refused("[limits]\nrate_per_second = 0"),
            "`limits.rate_per_second` must be at least 1"
        );
        let queue = refused("[limits]\nmax_frame_bytes = 2048\noutbound_queue_bytes = 1024");
        assert!(
            queue.contains("(1024) is smaller than `limits.max_frame_bytes` (2048)"),
            "{queue}"
        );
    }

    #[test]
    fn stored_channels_must_keep_something() {
        let message = refused("history_size = 0");
        assert!(
            message.starts_with("`history_size` keeps nothing"),
            "{message}"
        );
        assert!(message.contains("ephemeral = true"), "{message}");
        let class = refused("[[channels]]\npattern = \"a:*\"\nhistory_ttl = \"0s\"");
        assert!(
            class.starts_with("`channels[0].history_ttl` keeps nothing"),
            "{class}"
        );
        // An ephemeral class keeps nothing by definition.
        let config = Config::from_toml_str(
            "[[channels]]\npattern = \"a:*\"\nephemeral = true\nhistory_size = 0",
        )
        .unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn keys_and_addresses() {
        let bind = refused("bind = \"localhost\"");
        assert!(
            bind.starts_with("`bind` = \"localhost\" is not an address"),
            "{bind}"
        );
        let both = refused("[jwt]\nsecret = \"s\"\npublic_key_pem_file = \"k.pem\"");
        assert!(both.contains("both set"), "{both}");
        assert_eq!(refused("api_key = \"\""), "`api_key` is empty");
    }

    #[test]
    fn webhooks_must_be_reachable_and_name_real_events() {
        let mut config = Config::default();
        let endpoint = |url: &str| WebhookEndpoint {
            url: url.to_owned(),
            secret: "s".to_owned(),
            events: Vec::new(),
            channels: Vec::new(),
        };
        config.webhooks = vec![endpoint("https://hooks.example.com/tidings")];
        config.validate().unwrap();
        for bad in ["ftp://x.example/", "hooks.example.com/x", "", "http://"] {
            config.webhooks = vec![endpoint(bad)];
            let message = config.validate().unwrap_err().to_string();
            assert!(
                message.contains("is not an http:// or https:// URL"),
                "{bad}: {message}"
            );
        }
        let mut typo = endpoint("http://127.0.0.1:9/");
        typo.events = vec!["message.publish".to_owned()];
        config.webhooks = vec![typo];
        let message = config.validate().unwrap_err().to_string();
        assert!(
            message.contains("\"message.publish\", which is not one of"),
            "{message}"
        );
        config.webhook_delivery.retry_min = Duration::from_secs(10);
        config.webhook_delivery.retry_max = Duration::from_secs(1);
        config.webhooks.clear();
        let message = config.validate().unwrap_err().to_string();
        assert!(
            message.contains("`webhook_delivery.retry_min` (10s) is longer"),
            "{message}"
        );
    }
}
