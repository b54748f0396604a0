//! Error and close codes: one numbered enum for `error` frames and WebSocket close frames.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Every error and close code Tidings uses, with its number on the wire.
///
/// The same enum serves both `error` frames (the connection stays open) and WebSocket
/// close codes (the connection ends). [`Code::is_retryable`] tells a client whether
/// reconnecting can help. Codes the server does not know are kept as [`Code::Other`]
/// so a newer server never breaks an older client.
///
/// | code | name | retry? | meaning |
/// |---|---|---|---|
/// | 1000 | `normal` | terminal | the client or server closed on purpose |
/// | 1001 | `going_away` | retryable | the peer went away (browser tab closed, proxy restart) |
/// | 1006 | `abnormal` | retryable | the connection dropped without a close frame |
/// | 1011 | `internal` | retryable | unexpected server failure |
/// | 1012 | `server_restart` | retryable | the server is restarting; reconnect after `reconnect_after_ms` |
/// | 4001 | `unauthenticated` | terminal* | token missing, invalid or expired (*retry with a fresh token) |
/// | 4002 | `heartbeat_timeout` | retryable | the peer was silent for longer than the heartbeat timeout |
/// | 4003 | `forbidden` | terminal | the user may not access this channel or route |
/// | 4004 | `not_found` | terminal | the request names something that does not exist (e.g. not subscribed) |
/// | 4006 | `disconnected` | terminal | an operator disconnected this user |
/// | 4008 | `rate_limited` | retryable | too many frames; as an error first, then as a close |
/// | 4009 | `slow_consumer` | retryable | the client read too slowly and its queue overflowed |
/// | 4010 | `too_many_connections` | retryable | the user has too many open connections |
/// | 4011 | `too_many_subscriptions` | terminal | the connection holds the maximum number of channels |
/// | 4400 | `bad_frame` | terminal | invalid JSON, unknown type or missing/invalid fields |
/// | 4413 | `frame_too_large` | retryable | a frame exceeded the maximum size |
/// | 4426 | `unsupported_protocol` | terminal | the client offered a protocol version this server does not speak |
/// | 4500 | `internal_error` | retryable | the request failed inside the server |
/// | 4503 | `unavailable` | retryable | the server is shutting down or overloaded |
///
/// "Terminal" for an `error` frame means "do not resend this request unchanged"; for a close
/// code it means "do not reconnect automatically".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// 1000: closed on purpose.
    Normal,
    /// 1001: the peer is going away.
    GoingAway,
    /// 1006: dropped without a close frame (never sent, only observed).
    Abnormal,
    /// 1011: unexpected server failure.
    Internal,
    /// 1012: the server is restarting.
    ServerRestart,
    /// 4001: token missing, invalid or expired.
    Unauthenticated,
    /// 4002: no frame from the peer within the heartbeat timeout.
    HeartbeatTimeout,
    /// 4003: access to a channel or route refused.
    Forbidden,
    /// 4004: the request refers to something that does not exist.
    NotFound,
    /// 4006: an operator disconnected the user.
    Disconnected,
    /// 4008: rate limit exceeded.
    RateLimited,
    /// 4009: the outbound queue overflowed with must-deliver frames.
    SlowConsumer,
    /// 4010: the per-user connection limit is reached.
    TooManyConnections,
    /// 4011: the per-connection channel limit is reached.
    TooManySubscriptions,
    /// 4400: the frame could not be understood.
    BadFrame,
    /// 4413: the frame exceeded the maximum size.
    FrameTooLarge,
    /// 4426: unsupported protocol version.
    UnsupportedProtocol,
    /// 4500: the request failed inside the server.
    InternalError,
    /// 4503: the server cannot serve this now (shutting down, overloaded).
    Unavailable,
    /// A code this version does not know.
    Other(u16),
}

/// (code, number, snake_case name, retryable) for every known code, in one table so the
/// conversions cannot disagree.
/// The longest close reason a WebSocket close frame may carry (RFC 6455: 125 bytes of
/// payload, 2 of them the code).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// `reason` cut to [`MAX_CLOSE_REASON_BYTES`] at a character boundary.
pub fn truncate_close_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.get(..end).unwrap_or_default()
}

const TABLE: &[(Code, u16, &str, bool)] = &[
    (Code::Normal, 1000, "normal", false),
    (Code::GoingAway, 1001, "going_away", true),
    (Code::Abnormal, 1006, "abnormal", true),
    (Code::Internal, 1011, "internal", true),
    (Code::ServerRestart, 1012, "server_restart", true),
    (Code::Unauthenticated, 4001, "unauthenticated", false),
    (Code::HeartbeatTimeout, 4002, "heartbeat_timeout", true),
    (Code::Forbidden, 4003, "forbidden", false),
    (Code::NotFound, 4004, "not_found", false),
    (Code::Disconnected, 4006, "disconnected", false),
    (Code::RateLimited, 4008, "rate_limited", true),
    (Code::SlowConsumer, 4009, "slow_consumer", true),
    (Code::TooManyConnections, 4010, "too_many_connections", true),
    (
        Code::TooManySubscriptions,
        4011,
        "too_many_subscriptions",
        false,
    ),
    (Code::BadFrame, 4400, "bad_frame", false),
    (Code::FrameTooLarge, 4413, "frame_too_large", true),
    (
        Code::UnsupportedProtocol,
        4426,
        "unsupported_protocol",
        false,
    ),
    (Code::InternalError, 4500, "internal_error", true),
    (Code::Unavailable, 4503, "unavailable", true),
];

impl Code {
    /// Every known code, in numeric order.
    pub fn all() -> impl Iterator<Item = Code> {
        TABLE.iter().map(|row| row.0)
    }

    /// The number sent on the wire (in `error.code` and as the WebSocket close code).
    pub fn as_u16(self) -> u16 {
        match self {
            Code::Other(n) => n,
            known => TABLE
                .iter()
                .find(|row| row.0 == known)
                .map_or(1011, |row| row.1),
        }
    }

    /// The code for a number; unknown numbers become [`Code::Other`].
    pub fn from_u16(number: u16) -> Code {
        TABLE
            .iter()
            .find(|row| row.1 == number)
            .map_or(Code::Other(number), |row| row.0)
    }

    /// A stable snake_case name, used in logs and metrics labels.
    pub fn name(self) -> &'static str {
        TABLE
            .iter()
            .find(|row| row.0 == self)
            .map_or("other", |row| row.2)
    }

    /// Whether a client should reconnect (close code) or may retry (error) after this code.
    ///
    /// Unknown codes follow the Centrifugo convention: 3000–3499 and 4000–4499 ranges that
    /// Tidings does not define are treated as retryable, as are the standard WebSocket codes
    /// 1001–1014 it does not name; everything else as terminal.
    pub fn is_retryable(self) -> bool {
        match self {
            Code::Other(n) => matches!(n, 1001..=1014 | 3000..=3499 | 4000..=4499),
            known => TABLE
                .iter()
                .find(|row| row.0 == known)
                .is_some_and(|row| row.3),
        }
    }

    /// The opposite of [`Code::is_retryable`].
    pub fn is_terminal(self) -> bool {
        !self.is_retryable()
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.as_u16(), self.name())
    }
}

impl From<u16> for Code {
    fn from(number: u16) -> Self {
        Code::from_u16(number)
    }
}

impl From<Code> for u16 {
    fn from(code: Code) -> Self {
        code.as_u16()
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.as_u16())
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u16::deserialize(deserializer).map(Code::from_u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::all() {
            assert!(seen.insert(code.as_u16()), "duplicate number {code}");
            assert_eq!(Code::from_u16(code.as_u16()), code);
            assert_ne!(code.name(), "other");
        }
        assert_eq!(Code::from_u16(4321), Code::Other(4321));
        assert_eq!(Code::Other(4321).as_u16(), 4321);
    }

    #[test]
    fn retry_semantics_match_the_table() {
        assert!(Code::Unauthenticated.is_terminal());
        assert!(Code::Forbidden.is_terminal());
        assert!(Code::UnsupportedProtocol.is_terminal());
        assert!(Code::ServerRestart.is_retryable());
        assert!(Code::Abnormal.is_retryable());
        assert!(Code::RateLimited.is_retryable());
        assert!(Code::SlowConsumer.is_retryable());
        assert!(Code::Other(3001).is_retryable());
        assert!(Code::Other(3600).is_terminal());
    }

    #[test]
    fn serializes_as_a_number() {
        assert_eq!(
            serde_json::to_string(&Code::SlowConsumer).ok().as_deref(),
            Some("4009")
        );
        let parsed: Result<Code, _> = serde_json::from_str("4413");
        assert_eq!(parsed.ok(), Some(Code::FrameTooLarge));
    }

    #[test]
    fn close_reasons_are_cut_at_a_character_boundary() {
        assert_eq!(truncate_close_reason("short"), "short");
        let long = "é".repeat(100);
        let cut = truncate_close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON_BYTES && cut.len() >= MAX_CLOSE_REASON_BYTES - 1);
        assert!(long.starts_with(cut));
    }
}
