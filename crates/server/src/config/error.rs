//! Why a configuration cannot be used: it does not parse, or it parses but cannot work.

use std::fmt::Write as _;
use std::time::Duration;

/// Why a configuration could not be loaded or would not work. Each message names the
/// setting, as written in the TOML file (`limits.max_frame_bytes`), and, when it came from
/// a file, a variable or a flag, which one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file, an environment variable or a flag could not be read as a setting: unknown
    /// key, wrong type, a duration without its unit, a missing file, a TOML syntax error.
    #[error("{}", describe(.0))]
    Load(Box<figment::Error>),
    /// A period that must be longer than zero is zero.
    #[error("`{setting}` must be longer than zero")]
    ZeroDuration {
        /// The setting.
        setting: String,
    },
    /// A timer so long that adding it to the clock could overflow.
    #[error("`{setting}` = {} is too long (at most {})", human(*.value), human(*.max))]
    DurationTooLong {
        /// The setting.
        setting: String,
        /// Its value.
        value: Duration,
        /// The longest accepted.
        max: Duration,
    },
    /// A count that must be at least one is zero.
    #[error("`{setting}` must be at least 1")]
    Zero {
        /// The setting.
        setting: String,
    },
    /// A retention of nothing (size or age zero) on stored channels: recovery and history
    /// could never work. Channels that keep nothing are declared as such.
    #[error(
        "`{setting}` keeps nothing: for channels that are never stored, add a channel class \
         with `ephemeral = true`"
    )]
    NoRetention {
        /// The setting.
        setting: String,
    },
    /// A broker was named without a store the nodes share: each node would assign its own
    /// offsets.
    #[error(
        "`broker` needs a store every node shares: set `storage.database_url` \
         (`--database-url postgres://...`); SQLite and `--ephemeral` are one node's own"
    )]
    BrokerWithoutSharedStore,
    /// A `[proxy]` URL that is not http(s).
    #[error("`{setting}` = {url:?} is not an http:// or https:// URL")]
    ProxyUrl {
        /// The setting.
        setting: &'static str,
        /// Its value.
        url: String,
    },
    /// A `[[routes]]` entry the router could not serve.
    #[error("route {path:?}: {reason}")]
    Route {
        /// The route's path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `broker_prefix` cannot name NATS subjects (or is empty).
    #[error("`broker_prefix` = {prefix:?}: {reason}")]
    BrokerPrefix {
        /// The prefix given.
        prefix: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A text that must not be empty is.
    #[error("`{setting}` is empty")]
    Empty {
        /// The setting.
        setting: String,
    },
    /// The outbound queue could never hold the largest frame, so any subscriber receiving
    /// one would be closed as a slow consumer.
    #[error(
        "`limits.outbound_queue_bytes` ({queue}) is smaller than `limits.max_frame_bytes` \
         ({frame}): the largest frame could never be queued"
    )]
    QueueSmallerThanFrame {
        /// `limits.outbound_queue_bytes`.
        queue: usize,
        /// `limits.max_frame_bytes`.
        frame: usize,
    },
    /// `bind` is not an IP address with a port.
    #[error("`bind` = {value:?} is not an address with a port, such as 127.0.0.1:8000: {source}")]
    Bind {
        /// The value.
        value: String,
        /// Why it does not parse.
        source: std::net::AddrParseError,
    },
    /// Both JWT key kinds are set; only one can verify tokens.
    #[error(
        "`jwt.secret` and `jwt.public_key_pem_file` are both set: tokens are verified with \
         one key kind, choose one"
    )]
    JwtKeyConflict,
    /// A webhook URL that is not `http://` or `https://` with a host.
    #[error("`webhooks[{index}].url` = {url:?} is not an http:// or https:// URL")]
    WebhookUrl {
        /// Position of the endpoint in `webhooks`.
        index: usize,
        /// The value.
        url: String,
    },
    /// A webhook event kind that does not exist (it would silently match nothing).
    #[error("`webhooks[{index}].events` names {kind:?}, which is not one of {known:?}")]
    WebhookEvent {
        /// Position of the endpoint in `webhooks`.
        index: usize,
        /// The unknown kind.
        kind: String,
        /// The kinds there are.
        known: &'static [&'static str],
    },
    /// The first retry delay is longer than the longest.
    #[error(
        "`webhook_delivery.retry_min` ({}) is longer than `webhook_delivery.retry_max` ({})",
        human(*.min), human(*.max)
    )]
    RetryOrder {
        /// `webhook_delivery.retry_min`.
        min: Duration,
        /// `webhook_delivery.retry_max`.
        max: Duration,
    },
}

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        ConfigError::Load(Box::new(error))
    }
}

fn human(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

/// figment's own text names keys with their profile (`default.heartbeat`) and environment
/// variables without their prefix; this one says `heartbeat` and `TIDINGS_HEARTBEAT`.
fn describe(error: &figment::Error) -> String {
    let mut text = String::new();
    for (n, one) in error.clone().into_iter().enumerate() {
        if n > 0 {
            text.push_str("; ");
        }
        let key = one.path.join(".");
        let from = match (&one.metadata, &one.profile) {
            // A file: its kind and path (the key is as written in it).
            (Some(md), _) if md.source.is_some() => {
                md.source.as_ref().map(|s| format!("{} {s}", md.name))
            }
            // A variable or a flag: its own name for the key (figment's default names
            // it `profile.key`, which says nothing more than the key).
            (Some(md), Some(profile)) if !one.path.is_empty() => {
                let own = md.interpolate(profile, &one.path);
                Some(if own == format!("{profile}.{key}") {
                    md.name.to_string()
                } else {
                    own
                })
            }
            (Some(md), _) => Some(md.name.to_string()),
            (None, _) => None,
        };
        let _ = match (key.is_empty(), from) {
            (false, Some(from)) => write!(text, "`{key}` (from {from}): {}", one.kind),
            (false, None) => write!(text, "`{key}`: {}", one.kind),
            (true, Some(from)) => write!(text, "{from}: {}", one.kind),
            (true, None) => write!(text, "{}", one.kind),
        };
    }
    // figment passes some I/O errors on with a line break at the end.
    text.trim_end().to_owned()
}
