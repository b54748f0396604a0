//! Configuration of the core: where to connect, how to authenticate, how to back off.
//!
//! [`Config`] and [`Backoff`] also deserialize (serde) from the settings object of
//! applications in other languages, durations in milliseconds (`{"requestTimeoutMs": 5000,
//! "backoff": {"minMs": 100}}`): absent fields keep the defaults written here, once.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Everything the core needs to know before it connects.
///
/// Build one with [`Config::new`] and adjust the public fields:
///
/// ```
/// use std::time::Duration;
/// use tidings_client::core::{Auth, Config};
///
/// let mut config = Config::new("wss://example.com/ws");
/// config.auth = Auth::Token("eyJhbGciOi...".into());
/// config.backoff.max_attempts = Some(10);
/// config.request_timeout = Duration::from_secs(5);
/// ```
///
/// As settings (`ClientSettings` in TypeScript): `token`, `backoff`, `requestTimeoutMs`,
/// `connectTimeoutMs`, `publishQueue`, `ackDelayMs`, `fallbackUrls`; the URL is not one of
/// them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(
    target_arch = "wasm32",
    derive(tsify::Tsify),
    tsify(rename = "ClientSettings")
)]
#[serde(rename_all = "camelCase", default = "Config::unnamed")]
#[non_exhaustive]
pub struct Config {
    /// The WebSocket URL (`ws://` or `wss://`), without the token: the core appends
    /// `token=` itself on every attempt, so a refreshed token replaces the old one.
    #[serde(skip)]
    pub url: String,
    /// Other URLs of the same cluster (several nodes behind no shared address). Every
    /// reconnect after a lost connection or a failed attempt goes to the next one, round the
    /// list with `url` first; recovery works on any node.
    #[serde(rename = "fallbackUrls")]
    #[cfg_attr(target_arch = "wasm32", tsify(type = "string[]"))]
    pub fallback_urls: Vec<String>,
    /// How the connection authenticates. As a setting: `token`, the same token on every
    /// attempt (put in the URL as `?token=`).
    #[serde(rename = "token", deserialize_with = "token_auth")]
    #[cfg_attr(target_arch = "wasm32", tsify(type = "string"))]
    pub auth: Auth,
    /// Delays between reconnect attempts.
    #[cfg_attr(target_arch = "wasm32", tsify(type = "BackoffSettings"))]
    pub backoff: Backoff,
    /// How long a request (subscribe, publish, presence, unsubscribe) waits for its answer
    /// once it was sent on a live connection. Time spent offline does not count: a queued
    /// publish or a subscription waiting for the connection has no deadline.
    #[serde(rename = "requestTimeoutMs", with = "duration_ms")]
    #[cfg_attr(target_arch = "wasm32", tsify(type = "number"))]
    pub request_timeout: Duration,
    /// How long one connect attempt may take, from asking for a token to the server's
    /// `connected` frame; an attempt that takes longer is abandoned and retried.
    #[serde(rename = "connectTimeoutMs", with = "duration_ms")]
    #[cfg_attr(target_arch = "wasm32", tsify(type = "number"))]
    pub connect_timeout: Duration,
    /// How many publishes made while not connected are kept for sending after the
    /// connection is (re)established; one more fails at once with
    /// [`ClientError::QueueFull`](crate::ClientError::QueueFull).
    pub publish_queue: usize,
    /// How long after a publication of the personal channel `user:{id}` was handed to the
    /// application the client acknowledges it (acks are batched: one per delay at most).
    /// The server then starts this device's next connection after it (the offline inbox);
    /// name the device with a `device=` query parameter in the URL.
    #[serde(rename = "ackDelayMs", with = "duration_ms")]
    #[cfg_attr(target_arch = "wasm32", tsify(type = "number"))]
    pub ack_delay: Duration,
}

impl Config {
    /// Defaults for `url`: no token, [`Backoff::default`], 10 s request and connect
    /// timeouts, an offline queue of 1000 publications.
    pub fn new(url: impl Into<String>) -> Config {
        Config {
            url: url.into(),
            fallback_urls: Vec::new(),
            auth: Auth::None,
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            publish_queue: 1000,
            ack_delay: Duration::from_millis(200),
        }
    }

    /// The defaults without a URL: what settings start from (the URL comes separately).
    fn unnamed() -> Config {
        Config::new(String::new())
    }
}

/// `token` of the settings: a string is [`Auth::Token`]; `null` means no token.
fn token_auth<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Auth, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.map_or(Auth::None, Auth::Token))
}

/// How the client obtains the token it puts in the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// No token (a server that authenticates by cookie or not at all).
    None,
    /// The same token on every attempt. A 4001 close is terminal: retrying cannot help.
    Token(String),
    /// Ask the driver for a fresh token before every attempt
    /// ([`Output::NeedToken`](crate::core::Output::NeedToken)); the driver runs the
    /// application's async provider and answers with
    /// [`Input::Token`](crate::core::Input::Token). After a 4001 close the client retries
    /// at once with a fresh token; a second 4001 in a row is terminal.
    Provider,
}

/// Exponential backoff with full jitter between reconnect attempts.
///
/// The delay before retry number `n` (0 for the first retry after a drop) is drawn
/// uniformly from `[0, min(max, min * factor^n)]` ("full jitter"): clients that dropped
/// together spread out instead of reconnecting in waves. [`Backoff::delay`] is a pure
/// function of `n` and a random number, so the sequence is easy to test.
///
/// The retry counter resets when a connection has stayed up for [`Backoff::reset_after`]:
/// a server that accepts connections and drops them at once still sees growing delays,
/// while a client whose hour-long connection dropped reconnects within `min`.
///
/// As settings (`BackoffSettings` in TypeScript): `minMs`, `maxMs`, `factor`, `maxAttempts`,
/// `resetAfterMs`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(
    target_arch = "wasm32",
    derive(tsify::Tsify),
    tsify(rename = "BackoffSettings")
)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct Backoff {
    /// The cap of the first retry's delay (default 500 ms).
    #[serde(rename = "minMs", with = "duration_ms")]
    #[cfg_attr(target_arch = "wasm32", tsify(type = "number"))]
    pub min: Duration,
    /// The largest delay (default 20 s).
    #[serde(rename = "maxMs", with = "duration_ms")]
    #[cfg_attr(target_arch = "wasm32", tsify(type = "number"))]
    pub max: Duration,
    /// Growth of the cap per retry (default 2).
    pub factor: f64,
    /// Give up (close with the last close code) when this many reconnect attempts in a
    /// row have failed; `None` (the default) retries forever.
    #[cfg_attr(target_arch = "wasm32", tsify(optional))]
    pub max_attempts: Option<u32>,
    /// A connection that lasted at least this long resets the retry counter (default 5 s).
    #[serde(rename = "resetAfterMs", with = "duration_ms")]
    #[cfg_attr(target_arch = "wasm32", tsify(type = "number"))]
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(500),
            max: Duration::from_secs(20),
            factor: 2.0,
            max_attempts: None,
            reset_after: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// Full jitter between `min` and `max`, with the other defaults (factor 2, forever,
    /// reset after 5 s).
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            ..Backoff::default()
        }
    }

    /// With another growth factor per retry (values below 1 count as 1).
    pub fn with_factor(mut self, factor: f64) -> Backoff {
        self.factor = factor;
        self
    }

    /// Giving up after `attempts` failed reconnect attempts in a row.
    pub fn with_max_attempts(mut self, attempts: u32) -> Backoff {
        self.max_attempts = Some(attempts);
        self
    }

    /// Resetting the retry counter after a connection lasted `duration`.
    pub fn with_reset_after(mut self, duration: Duration) -> Backoff {
        self.reset_after = duration;
        self
    }

    /// The upper bound of retry `retry`'s delay: `min(max, min * factor^retry)`.
    pub fn cap(&self, retry: u32) -> Duration {
        let min_ms = millis(self.min) as f64;
        let max_ms = millis(self.max);
        let exponent = i32::try_from(retry).unwrap_or(i32::MAX);
        let grown = min_ms * self.factor.max(1.0).powi(exponent);
        // `as` saturates for floats (infinity becomes u64::MAX), so this cannot overflow.
        let cap_ms = if grown.is_finite() {
            grown as u64
        } else {
            u64::MAX
        };
        Duration::from_millis(cap_ms.min(max_ms))
    }

    /// The delay before retry `retry` (0-based), given a uniformly random `random`:
    /// `random mod (cap + 1)` milliseconds, so always within `[0, cap(retry)]`.
    pub fn delay(&self, retry: u32, random: u64) -> Duration {
        let cap_ms = millis(self.cap(retry));
        Duration::from_millis(random % cap_ms.saturating_add(1))
    }
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Durations as whole milliseconds in settings and events (serde `with`).
pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::millis(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }

    /// The same for an optional duration.
    pub(crate) mod option {
        use std::time::Duration;

        use serde::Serializer;

        pub(crate) fn serialize<S: Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
}

/// Where the core gets the randomness for its jitter.
///
/// Any `FnMut() -> u64 + Send` closure is one (tests pass `|| 0`); [`SplitMix64`] is the
/// default, seeded by the driver from the platform's randomness.
pub trait RandomSource: Send {
    /// The next uniformly distributed number.
    fn next_u64(&mut self) -> u64;
}

impl<F: FnMut() -> u64 + Send> RandomSource for F {
    fn next_u64(&mut self) -> u64 {
        self()
    }
}

/// SplitMix64: a tiny, fast, non-cryptographic generator, plenty for jitter.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`; different seeds give unrelated sequences.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }
}

impl RandomSource for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `url` with `token=<token>` appended to its query (percent-encoded), before any
/// `#fragment`: `?token=` when the URL has no query yet, `&token=` when it has one.
pub fn url_with_token(url: &str, token: Option<&str>) -> String {
    match token {
        Some(token) => url_with_param(url, "token", token),
        None => url.to_owned(),
    }
}

/// `url` with `name=<value>` appended to its query (the value percent-encoded), before any
/// `#fragment`.
pub fn url_with_param(url: &str, name: &str, value: &str) -> String {
    let (base, fragment) = match url.find('#') {
        Some(at) => url.split_at(at),
        None => (url, ""),
    };
    let separator = match base.find('?') {
        None => "?",
        Some(_) if base.ends_with('?') || base.ends_with('&') => "",
        Some(_) => "&",
    };
    let mut out = String::with_capacity(url.len() + name.len() + value.len() + 2);
    out.push_str(base);
    out.push_str(separator);
    out.push_str(name);
    out.push('=');
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            for digit in [byte >> 4, byte & 0xF] {
                out.push(char::from(
                    HEX.get(usize::from(digit)).copied().unwrap_or(b'0'),
                ));
            }
        }
    }
    out.push_str(fragment);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_appended_to_any_url() {
        let t = Some("a.b-c_d");
        assert_eq!(url_with_token("ws://h/ws", t), "ws://h/ws?token=a.b-c_d");
        assert_eq!(
            url_with_token("ws://h/ws?room=1", t),
            "ws://h/ws?room=1&token=a.b-c_d"
        );
        assert_eq!(url_with_token("ws://h/ws?", t), "ws://h/ws?token=a.b-c_d");
        assert_eq!(
            url_with_token("ws://h/ws#x", t),
            "ws://h/ws?token=a.b-c_d#x"
        );
        assert_eq!(
            url_with_token("ws://h/ws", Some("a+b/c=")),
            "ws://h/ws?token=a%2Bb%2Fc%3D"
        );
        assert_eq!(url_with_token("ws://h/ws", None), "ws://h/ws");
    }

    #[test]
    fn cap_grows_and_saturates() {
        let b = Backoff::default();
        assert_eq!(b.cap(0), Duration::from_millis(500));
        assert_eq!(b.cap(1), Duration::from_millis(1000));
        assert_eq!(b.cap(5), Duration::from_millis(16_000));
        assert_eq!(b.cap(6), Duration::from_secs(20));
        assert_eq!(b.cap(u32::MAX), Duration::from_secs(20));
    }

    #[test]
    fn splitmix_is_deterministic_per_seed() {
        let (mut a, mut b, mut c) = (SplitMix64::new(1), SplitMix64::new(1), SplitMix64::new(2));
        let (x, y, z) = (a.next_u64(), b.next_u64(), c.next_u64());
        assert_eq!(x, y);
        assert_ne!(x, z);
    }
}
