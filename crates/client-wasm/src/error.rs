//! [`ClientError`]: every way a client operation can fail, in one enum, with its plain-data
//! form ([`ErrorInfo`]) for applications that are not Rust (the browser's `TidingsError`).

use std::time::Duration;

use serde::Serialize;
use tidings_protocol::Code;

/// Why a client operation (subscribe, publish, presence, ...) or the connection failed.
///
/// The enum is `Clone` and `PartialEq` so the same error can be handed to several waiters
/// and compared in tests; causes from other crates are kept as their message text. It
/// serializes as an [`ErrorInfo`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(into = "ErrorInfo")]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered the request with an `error` frame.
    #[error("server refused the request: {code}: {message}")]
    Server {
        /// The server's code; [`Code::is_retryable`] tells whether resending may help.
        code: Code,
        /// The server's explanation.
        message: String,
    },
    /// No answer within the request timeout. For a publish the outcome is unknown: the
    /// server may have stored the publication.
    #[error("no answer from the server within {} ms", crate::core::millis(*after))]
    Timeout {
        /// The timeout that expired.
        after: Duration,
    },
    /// The client is closed (by [`close`](crate::core::Core::close), a terminal close code or
    /// exhausted reconnect attempts), so the operation can never complete.
    #[error("the client is closed: {code}: {reason}")]
    Closed {
        /// The close code that ended the client (1000 when the application closed it).
        code: Code,
        /// Why it closed.
        reason: String,
    },
    /// The connection dropped while the request was in flight, and the request is one that
    /// is not resent after reconnecting (presence, history, rpc). Trying again once
    /// reconnected may succeed; for an rpc the back end may already have run the call.
    #[error("the connection dropped before the server answered: {code}: {reason}")]
    Disconnected {
        /// The close code of the dropped connection.
        code: Code,
        /// Why it dropped.
        reason: String,
    },
    /// The request needs a live connection (presence, history, rpc) and there is none right
    /// now.
    #[error("not connected")]
    NotConnected,
    /// A publish made while offline found the offline queue full.
    #[error("the offline publish queue is full ({capacity} publications are waiting)")]
    QueueFull {
        /// The configured bound, [`Config::publish_queue`](crate::core::Config::publish_queue).
        capacity: usize,
    },
    /// The encoded frame is larger than the server accepts (`connected.max_frame_bytes`);
    /// it was not sent, so the connection is not closed with 4413.
    #[error("the frame is {size} bytes, the server accepts at most {max}")]
    FrameTooLarge {
        /// Size of the encoded frame in bytes.
        size: usize,
        /// The server's limit.
        max: usize,
    },
    /// The application unsubscribed from the channel before its subscription completed.
    #[error("unsubscribed from {channel} before the subscription completed")]
    Unsubscribed {
        /// The channel.
        channel: String,
    },
    /// A frame or an event payload could not be decoded.
    #[error("could not decode: {0}")]
    Decode(String),
    /// An event payload could not be encoded.
    #[error("could not encode: {0}")]
    Encode(String),
    /// The transport (WebSocket) failed.
    #[error("transport error: {0}")]
    Transport(String),
    /// An application handler panicked; the client caught it and carries on.
    #[error("an event handler panicked: {0}")]
    Handler(String),
    /// The token provider failed.
    #[error("the token provider failed: {0}")]
    Token(String),
}

impl ClientError {
    /// Which kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Server { .. } => ErrorKind::Server,
            ClientError::Timeout { .. } => ErrorKind::Timeout,
            ClientError::Closed { .. } => ErrorKind::Closed,
            ClientError::Disconnected { .. } => ErrorKind::Disconnected,
            ClientError::NotConnected => ErrorKind::NotConnected,
            ClientError::QueueFull { .. } => ErrorKind::QueueFull,
            ClientError::FrameTooLarge { .. } => ErrorKind::FrameTooLarge,
            ClientError::Unsubscribed { .. } => ErrorKind::Unsubscribed,
            ClientError::Decode(_) => ErrorKind::Decode,
            ClientError::Encode(_) => ErrorKind::Encode,
            ClientError::Transport(_) => ErrorKind::Transport,
            ClientError::Handler(_) => ErrorKind::Handler,
            ClientError::Token(_) => ErrorKind::Token,
        }
    }

    /// The protocol code behind this error, when there is one.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Server { code, .. }
            | ClientError::Closed { code, .. }
            | ClientError::Disconnected { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Every kind of [`ClientError`], by name (`TidingsError.kind` in JavaScript).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The server refused the request (`code` says why).
    Server,
    /// No answer within the request timeout; a publish's outcome is unknown.
    Timeout,
    /// The client is closed (`code`: 1000 after `close()`, else the terminal close code).
    Closed,
    /// The connection dropped before the request was answered.
    Disconnected,
    /// The request needs a live connection.
    NotConnected,
    /// The offline publish queue is full.
    QueueFull,
    /// The frame is larger than the server accepts.
    FrameTooLarge,
    /// The channel was unsubscribed before its subscription completed.
    Unsubscribed,
    /// A frame or payload could not be decoded.
    Decode,
    /// An event could not be encoded.
    Encode,
    /// The WebSocket failed.
    Transport,
    /// A handler failed (threw, or panicked).
    Handler,
    /// The token provider failed.
    Token,
}

impl ErrorKind {
    /// The name, as it serializes (`"not_connected"`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Server => "server",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Closed => "closed",
            ErrorKind::Disconnected => "disconnected",
            ErrorKind::NotConnected => "not_connected",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::FrameTooLarge => "frame_too_large",
            ErrorKind::Unsubscribed => "unsubscribed",
            ErrorKind::Decode => "decode",
            ErrorKind::Encode => "encode",
            ErrorKind::Transport => "transport",
            ErrorKind::Handler => "handler",
            ErrorKind::Token => "token",
        }
    }
}

/// A [`ClientError`] as plain data, which is how it serializes: what went wrong, for
/// applications that see errors as objects (a rejected promise in JavaScript gets an `Error`
/// with the same `kind` and `code`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct ErrorInfo {
    /// Which kind of failure.
    pub kind: ErrorKind,
    /// A human-readable explanation.
    pub message: String,
    /// The protocol code, for `server`, `closed` and `disconnected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<Code>,
}

impl From<ClientError> for ErrorInfo {
    fn from(error: ClientError) -> ErrorInfo {
        ErrorInfo {
            kind: error.kind(),
            message: error.to_string(),
            code: error.code(),
        }
    }
}
