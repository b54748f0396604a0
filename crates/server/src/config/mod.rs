//! Server settings: limits, heartbeats, auth keys, origins, retention, webhooks.
//!
//! Every default is written once, in the `Default` impls below; every other source only
//! overrides what it names. The `tidings` binary layers, from weakest to strongest:
//! defaults, the TOML file (`--config`), `TIDINGS_*` environment variables, flags
//! ([`Config::figment`] builds the first three; embedders can do the same, or build a
//! [`Config`] in code and set its fields).
//!
//! In TOML, every field keeps its name; durations carry their unit (`"25s"`, `"500ms"`,
//! `"7d"`, `"1h 30m"`). The old bare integers still parse, with the unit the field used to
//! have (milliseconds for heartbeats, shutdown and webhook timings, seconds for retention),
//! but are deprecated:
//!
//! ```toml
//! bind = "0.0.0.0:8000"
//! heartbeat = "25s"
//! history_ttl = "7d"
//!
//! [limits]
//! max_frame_bytes = 65536
//! ```
//!
//! In the environment, `TIDINGS_` plus the key in capitals, with `__` between nested keys:
//! `TIDINGS_HEARTBEAT=25s`, `TIDINGS_LIMITS__MAX_FRAME_BYTES=131072`. A few short names
//! are kept from earlier versions (`ENV_ALIASES`; the environment is read with the `env`
//! feature, which the binary's `cli` feature turns on).
//!
//! [`Config::validate`] refuses settings that cannot work (a zero heartbeat, a queue smaller
//! than a frame, a duration that would overflow a timer) with a message naming the setting.

use std::time::Duration;

use serde::Deserialize;

mod duration;
#[cfg(feature = "env")]
mod env;
mod error;
mod load;
mod validate;

#[cfg(feature = "env")]
pub use env::{ENV_ALIASES, ENV_PREFIX, EnvAlias, ignored_env_vars};
pub use error::ConfigError;
pub use load::Override;
pub use validate::MAX_TIMER;

/// Everything a Tidings node can be tuned with. `Config::default()` is a safe production
/// baseline; every field can be set from the TOML file (same names, snake_case).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the `tidings` binary listens on.
    pub bind: String,
    /// Keys that verify client JWTs.
    pub jwt: JwtConfig,
    /// Bearer key for the HTTP API (`/api/*`); the API answers 401 to everyone when unset.
    pub api_key: Option<String>,
    /// Protection limits.
    pub limits: Limits,
    /// Server → client WebSocket ping period. A bare integer is milliseconds
    /// (deprecated).
    #[serde(deserialize_with = "duration::millis")]
    pub heartbeat: Duration,
    /// Grace after a missed heartbeat before a silent connection is closed with 4002. A
    /// bare integer is milliseconds (deprecated).
    #[serde(deserialize_with = "duration::millis")]
    pub heartbeat_timeout: Duration,
    /// Browser origins allowed to connect (`Origin` header); empty allows every origin.
    /// Entries are exact (`https://app.example.com`) or `*` for any.
    pub allowed_origins: Vec<String>,
    /// `user_joined` / `user_left` go to the other members only while a channel has at most
    /// this many members (the `presence` request still lists everyone): beyond it, a crowd
    /// joining would cost members² frames. Default 100, the size Pusher allows presence
    /// channels; a chat room of a few hundred can raise it, a broadcast channel should not.
    pub presence_events_max_members: usize,
    /// Publications kept per channel for recovery and history, unless a channel class says
    /// otherwise.
    pub history_size: usize,
    /// The most publications one recovery replays (a `subscribe` with `recover`, or a
    /// device's offline inbox); 0 = as many as retention keeps. A client that missed more
    /// gets `recovered: false` with `history_start` (its inbox: the newest this many) and
    /// reloads older state itself. Replays are paged at any size, so this bounds the time
    /// and store reads one reconnect costs, not memory.
    pub recovery_limit: u64,
    /// How long publications are kept, unless a channel class says otherwise. A bare
    /// integer is seconds (deprecated).
    #[serde(deserialize_with = "duration::secs")]
    pub history_ttl: Duration,
    /// Channel classes by name pattern; the first matching class applies.
    pub channels: Vec<ChannelClass>,
    /// Where publications are stored.
    pub storage: Storage,
    /// Webhook endpoints: each gets a signed POST for the events it names.
    pub webhooks: Vec<WebhookEndpoint>,
    /// Timing of webhook deliveries.
    pub webhook_delivery: WebhookDelivery,
    /// How often retention is enforced (the background task prunes every class). A bare
    /// integer is seconds (deprecated).
    #[serde(deserialize_with = "duration::secs")]
    pub retention_interval: Duration,
    /// How long shutdown waits for connections to close before giving up. A bare integer
    /// is milliseconds (deprecated).
    #[serde(deserialize_with = "duration::millis")]
    pub shutdown_deadline: Duration,
    /// Upper bound of the jittered `reconnect_after_ms` sent in `shutdown` frames, so that
    /// clients do not all come back at once. A bare integer is milliseconds (deprecated).
    #[serde(deserialize_with = "duration::millis")]
    pub shutdown_reconnect_spread: Duration,
    /// Default channel policy of the standalone binary.
    pub policy: Policy,
    /// Other nodes, for several nodes behind a load balancer: `redis://host:6379` (Redis
    /// pub/sub) or `nats://host:4222` (core NATS). Needs a shared store (`storage.database_url = "postgres://..."`); the
    /// `tidings` binary refuses anything else at start-up. Unset: a single node.
    pub broker: Option<String>,
    /// The start of this cluster's broker channel names (default `tidings:` on Redis,
    /// `tidings.` on NATS, where it must end with a dot and hold only letters, digits, `-`,
    /// `_` and dots). Clusters that share one Redis or NATS need one each.
    pub broker_prefix: Option<String>,
    /// With a broker: how long a node may go unheard before the others forget its users
    /// (they get `user_left`). Nodes report every third of it. Default 30 s.
    #[serde(deserialize_with = "duration::secs")]
    pub presence_ttl: Duration,
    /// Serve `GET /api/status` without the API key: the connection and user counts and the
    /// health, for a status page or a load balancer. Off by default (the counts say how
    /// busy the service is).
    pub status_route: bool,
    /// Accept connections without a token (demos, public read-only pages): each gets a
    /// user id of its own (`anon-…`), or the one a route's `{user_id}` names. A token
    /// that is present is still verified. Logged as a warning at start-up. Off by default.
    pub allow_anonymous: bool,
    /// WebSocket paths besides `/ws` whose segments name a channel to join or the user the
    /// token must belong to (`[[routes]]` in TOML).
    pub routes: Vec<RouteConfig>,
    /// The application's back end, asked over HTTP (`[proxy]`).
    pub proxy: ProxyConfig,
}

/// Back-end proxies: each set URL gets a signed JSON POST (see `tidings_server::proxy`)
/// and decides. An embedding application sets the same as hooks on the builder instead.
///
/// ```toml
/// [proxy]
/// connect = "http://127.0.0.1:9000/tidings/connect"     # name the user (a session cookie), grant channels
/// subscribe = "http://127.0.0.1:9000/tidings/subscribe" # allow or deny reads of a channel
/// publish = "http://127.0.0.1:9000/tidings/publish"     # allow, refuse or rewrite publications
/// rpc = "http://127.0.0.1:9000/tidings/rpc"             # answer clients' rpc calls
/// secret = "shared-with-the-app"  # X-Tidings-Signature, as on webhooks
/// timeout = "5s"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Asked about every connection (after its token is checked, or instead of a token):
    /// may name the user and the channels it may use.
    pub connect: Option<String>,
    /// Asked before a user reads a channel (subscribe, a route's channel, history,
    /// presence).
    pub subscribe: Option<String>,
    /// Asked for every publication a user sends from a connection.
    pub publish: Option<String>,
    /// Answers clients' `rpc` calls.
    pub rpc: Option<String>,
    /// HMAC-SHA256 key of the `X-Tidings-Signature` header (as on webhooks). Without it
    /// requests are unsigned: keep the app's proxy routes off the public network then.
    pub secret: Option<String>,
    /// Longest wait for an answer (also bounds the builder's hooks); then 4503.
    #[serde(deserialize_with = "duration::millis")]
    pub timeout: Duration,
    /// Extra attempts of a subscribe call that failed to connect or got a 5xx (publish and
    /// rpc are never repeated: they may not be idempotent).
    pub retries: u32,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect: None,
            subscribe: None,
            publish: None,
            rpc: None,
            secret: None,
            timeout: Duration::from_secs(5),
            retries: 1,
        }
    }
}

/// A WebSocket path of the application's own shape: `path = "/ws/chat/{ticket_id}"` with
/// `channel = "ticket:{ticket_id}"` joins that channel on connect (closed with 4003 when the
/// user may not), and `path = "/api/v1/ws/{user_id}"` with `user = "{user_id}"` requires the
/// token's user to be that one (else 4003). `?token=` works as on `/ws`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The path: literal segments and `{name}` segments.
    pub path: String,
    /// The channel to join, with `{name}`s from the path.
    #[serde(default)]
    pub channel: Option<String>,
    /// The user the token must name, with `{name}`s from the path.
    #[serde(default)]
    pub user: Option<String>,
}

impl RouteConfig {
    /// The `{name}` segments of the path, in order; `None` when a segment is neither a
    /// literal nor exactly one `{name}` of letters, digits and `_`.
    pub(crate) fn parameters(&self) -> Option<Vec<&str>> {
        let mut names = Vec::new();
        for segment in self.path.split('/').skip(1) {
            if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let valid = !inner.is_empty()
                    && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return None;
                }
                names.push(inner);
            } else if segment.is_empty() || segment.contains(['{', '}', '*', ':']) {
                return None;
            }
        }
        Some(names)
    }

    /// `template` with every `{name}` replaced by the path's value for it, in one pass: a
    /// value that itself reads `{other}` stays as it is.
    pub(crate) fn fill(
        template: &str,
        values: &std::collections::HashMap<String, String>,
    ) -> String {
        let mut filled = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let (before, from_brace) = rest.split_at(open);
            filled.push_str(before);
            let name = from_brace
                .strip_prefix('{')
                .and_then(|after| after.split_once('}'));
            match name.and_then(|(name, after)| values.get(name).map(|value| (value, after))) {
                Some((value, after)) => {
                    filled.push_str(value);
                    rest = after;
                }
                None => {
                    filled.push('{');
                    rest = from_brace.get(1..).unwrap_or_default();
                }
            }
        }
        filled.push_str(rest);
        filled
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:8000".to_owned(),
            jwt: JwtConfig::default(),
            api_key: None,
            limits: Limits::default(),
            heartbeat: Duration::from_secs(25),
            heartbeat_timeout: Duration::from_secs(10),
            allowed_origins: Vec::new(),
            presence_events_max_members: 100,
            history_size: 1000,
            recovery_limit: 0,
            history_ttl: Duration::from_secs(7 * 24 * 3600),
            channels: Vec::new(),
            storage: Storage::default(),
            retention_interval: Duration::from_secs(60),
            webhooks: Vec::new(),
            webhook_delivery: WebhookDelivery::default(),
            shutdown_deadline: Duration::from_secs(10),
            shutdown_reconnect_spread: Duration::from_secs(5),
            policy: Policy::default(),
            broker: None,
            broker_prefix: None,
            presence_ttl: Duration::from_secs(30),
            status_route: false,
            allow_anonymous: false,
            routes: Vec::new(),
            proxy: ProxyConfig::default(),
        }
    }
}

/// A class of channels chosen by name: `ticket:*` (prefix) or an exact name.
///
/// ```toml
/// [[channels]]
/// pattern = "ticket:*"
/// history_size = 1000
/// history_ttl = "30d"
///
/// [[channels]]
/// pattern = "progress:*"
/// ephemeral = true        # never stored, no offsets, coalesced under pressure
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChannelClass {
    /// `prefix*` or an exact channel name.
    pub pattern: String,
    /// Publications are not stored and carry no offset.
    #[serde(default)]
    pub ephemeral: bool,
    /// Publications kept per channel; the node default when absent.
    #[serde(default)]
    pub history_size: Option<usize>,
    /// How long publications are kept; the node default when absent. A bare integer is
    /// seconds (deprecated).
    #[serde(default, deserialize_with = "duration::opt_secs")]
    pub history_ttl: Option<Duration>,
}

/// One webhook receiver.
///
/// ```toml
/// [[webhooks]]
/// url = "https://api.example.com/tidings-events"
/// secret = "whsec_..."                      # signs X-Tidings-Signature
/// events = ["message.published"]           # default: all five kinds
/// channels = ["ticket:*"]                  # default: every channel
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// Where to POST (`http://` or `https://`).
    pub url: String,
    /// HMAC-SHA256 key of the signature header.
    pub secret: String,
    /// Event kinds: `message.published`, `user.connected`, `user.disconnected`,
    /// `channel.joined`, `channel.left`. Empty means all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Channel patterns for message and channel events. Empty means all.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// Retry and timeout policy of webhook deliveries. A bare integer in any of its durations
/// is milliseconds (deprecated).
///
/// ```toml
/// [webhook_delivery]
/// timeout = "10s"
/// retry_min = "1s"       # doubles per attempt, with jitter...
/// retry_max = "5m"       # ...up to this
/// max_attempts = 25
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookDelivery {
    /// Per request.
    #[serde(deserialize_with = "duration::millis")]
    pub timeout: Duration,
    /// First retry delay; doubles per attempt (with jitter) up to `retry_max`.
    #[serde(deserialize_with = "duration::millis")]
    pub retry_min: Duration,
    /// Longest retry delay.
    #[serde(deserialize_with = "duration::millis")]
    pub retry_max: Duration,
    /// Attempts before an event is given up (logged and counted).
    pub max_attempts: u32,
    /// How often the worker looks for due deliveries when idle.
    #[serde(deserialize_with = "duration::millis")]
    pub poll_interval: Duration,
}

impl Default for WebhookDelivery {
    fn default() -> Self {
        WebhookDelivery {
            timeout: Duration::from_secs(10),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_attempts: 25,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// Where publications live.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Storage {
    /// Directory of the embedded SQLite database (`tidings.db`).
    pub data_dir: std::path::PathBuf,
    /// Keep publications in memory only (lost on restart; `recovered: false` afterwards).
    pub ephemeral: bool,
    /// `postgres://...` (several nodes) or `sqlite://...`; overrides `data_dir`.
    pub database_url: Option<String>,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            data_dir: "./tidings-data".into(),
            ephemeral: false,
            database_url: None,
        }
    }
}

/// JWT verification keys. Exactly one kind is used: an HMAC secret (HS256) or a PEM public
/// key (RS256 / ES256).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// Path to an RSA or EC public key in PEM (RS256 / ES256).
    pub public_key_pem_file: Option<String>,
    /// Required `aud` claim, if any.
    pub audience: Option<String>,
    /// Required `iss` claim, if any.
    pub issuer: Option<String>,
    /// The claim that holds the user id (a string or a number), when it is not `sub`:
    /// `user_id_claim = "user_id"` for tokens an existing back end already issues. The
    /// id lands in [`Claims::sub`](crate::auth::Claims::sub); the token's own `sub`, if
    /// any, is then kept among the other claims as `token_sub`.
    pub user_id_claim: Option<String>,
}

/// Limits that keep one client from hurting the others.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted frame in bytes; larger closes with 4413.
    pub max_frame_bytes: usize,
    /// Sustained frames per second per connection.
    pub rate_per_second: u32,
    /// Burst above the sustained rate (0: the same as `rate_per_second`).
    pub rate_burst: u32,
    /// Rate-limit violations within one second of each other before the connection is closed
    /// with 4008 (each earlier one gets an `error` 4008).
    pub rate_violations_before_close: u32,
    /// Channels one connection may hold (not counting its personal channel).
    pub max_subscriptions: usize,
    /// Simultaneous connections per user on this node; 0 = unlimited.
    pub max_connections_per_user: usize,
    /// Bytes of frames queued for one connection; past it ephemeral frames are dropped and a
    /// must-deliver frame closes the connection with 4009. At least `max_frame_bytes`, so
    /// that the largest frame fits.
    pub outbound_queue_bytes: usize,
    /// Frames queued for one connection (same rules as the byte bound).
    pub outbound_queue_frames: usize,
    /// WebSocket read buffer per connection, and the most one socket read takes in. Every
    /// connection holds it for life, so it is small (1 KiB: 3 KB less per idle connection
    /// than 4 KiB); clients send small frames, and a bigger one is read in several reads.
    pub read_buffer_bytes: usize,
    /// Bytes collected before a socket write; frames beyond are still flushed at once.
    pub write_buffer_bytes: usize,
    /// Open sockets (HTTP and WebSocket) this node accepts at once; past it new ones get a
    /// 503 and are closed. 0 = no cap but the process's open-file limit. Applies to
    /// [`serve`](crate::serve) (the binary); an app serving with its own loop caps its own.
    pub max_connections: usize,
    /// Open sockets from one IP address; 0 = unlimited (the default: behind a proxy or load
    /// balancer every client has its address). Set it when clients connect directly.
    pub max_connections_per_ip: usize,
    /// How long a client may take to send a request's headers (a WebSocket upgrade is one)
    /// before its socket is closed: half-sent requests do not hold sockets. With
    /// [`serve`](crate::serve).
    #[serde(deserialize_with = "duration::millis")]
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            rate_per_second: 50,
            rate_burst: 100,
            rate_violations_before_close: 20,
            max_subscriptions: 128,
            max_connections_per_user: 64,
            outbound_queue_bytes: 1024 * 1024,
            outbound_queue_frames: 4096,
            read_buffer_bytes: 1024,
            write_buffer_bytes: 32 * 1024,
            max_connections: 0,
            max_connections_per_ip: 0,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// The standalone binary's channel policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Whether users may publish from their connections (the back end always may).
    pub client_publish: bool,
    /// Whether a user may subscribe to another user's `user:{id}` channel.
    pub foreign_user_channels: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            client_publish: true,
            foreign_user_channels: false,
        }
    }
}

/// The retention and class that apply to one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Not stored at all.
    pub ephemeral: bool,
    /// Publications kept.
    pub history_size: usize,
    /// Age limit.
    pub history_ttl: Duration,
}

impl Config {
    /// The class that applies to `channel`: the first matching pattern, else the defaults.
    pub fn retention(&self, channel: &str) -> Retention {
        let default = Retention {
            ephemeral: false,
            history_size: self.history_size,
            history_ttl: self.history_ttl,
        };
        self.channels
            .iter()
            .find(|class| crate::auth::channel_matches(&class.pattern, channel))
            .map_or(default, |class| Retention {
                ephemeral: class.ephemeral,
                history_size: class.history_size.unwrap_or(default.history_size),
                history_ttl: class.history_ttl.unwrap_or(default.history_ttl),
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn route_templates_fill_in_one_pass() {
        let values: std::collections::HashMap<String, String> = [
            ("a".to_owned(), "{b}".to_owned()),
            ("b".to_owned(), "7".to_owned()),
        ]
        .into_iter()
        .collect();
        // A value reading `{b}` is not filled again; unknown names and lone braces stay.
        assert_eq!(RouteConfig::fill("x:{a}:{b}", &values), "x:{b}:7");
        assert_eq!(RouteConfig::fill("{c}-{b}-{", &values), "{c}-7-{");
        assert_eq!(RouteConfig::fill("plain", &values), "plain");
    }

    #[test]
    fn toml_overrides_only_what_it_names() {
        let config = Config::from_toml_str(
            "api_key = \"k\"\nheartbeat = \"1s\"\n[limits]\nmax_frame_bytes = 10\n[jwt]\nsecret = \"s\"\n",
        )
        .unwrap();
        assert_eq!(config.api_key.as_deref(), Some("k"));
        assert_eq!(config.heartbeat, Duration::from_secs(1));
        assert_eq!(config.limits.max_frame_bytes, 10);
        assert_eq!(config.limits.rate_burst, Limits::default().rate_burst);
        assert_eq!(config.jwt.secret.as_deref(), Some("s"));
        assert!(Config::from_toml_str("nonsense = 1").is_err());
    }

    #[test]
    fn channel_classes_match_in_order_and_fill_defaults() {
        let config = Config::from_toml_str(
            "history_ttl = \"1m\"\n[storage]\nephemeral = true\n\
             [[channels]]\npattern = \"ticket:*\"\nhistory_size = 5\n\
             [[channels]]\npattern = \"progress:*\"\nephemeral = true\n",
        )
        .unwrap();
        assert!(config.storage.ephemeral);
        let ticket = config.retention("ticket:9");
        assert_eq!((ticket.ephemeral, ticket.history_size), (false, 5));
        assert_eq!(ticket.history_ttl, Duration::from_secs(60));
        assert!(config.retention("progress:upload-1").ephemeral);
        let other = config.retention("lobby");
        assert_eq!((other.ephemeral, other.history_size), (false, 1000));
    }

    #[test]
    fn the_defaults_are_valid() {
        Config::default().validate().unwrap();
    }
}
