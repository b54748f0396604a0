//! One error enum per operation a caller can ask for, each variant mapped to the protocol's
//! [`Code`], so the socket (an `error` frame), the HTTP API (a status and a JSON error) and
//! the Rust API refuse the same request the same way.

use tidings_protocol::Code;

use crate::hooks::HookError;
use crate::store::StoreError;

/// Why a publish was refused or failed. Nothing was stored or delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The event could not be encoded as JSON.
    #[error("cannot encode event: {0}")]
    Encode(#[from] serde_json::Error),
    /// The channel name is not valid.
    #[error("invalid channel: {0}")]
    InvalidChannel(String),
    /// The caller may not publish to this channel (or it is reserved).
    #[error("{0}")]
    Forbidden(String),
    /// The event is larger than any client could receive.
    #[error("event of {size} bytes is larger than the {limit}-byte frame limit")]
    TooLarge {
        /// The encoded event's size in bytes.
        size: usize,
        /// `limits.max_frame_bytes`.
        limit: usize,
    },
    /// A standard event's payload does not match its type.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// The sender a back end named is not a user id.
    #[error("invalid sender: {0}")]
    InvalidSender(String),
    /// The publication store failed; nothing was published.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The application's publish hook (or proxy) refused it or could not be asked.
    #[error(transparent)]
    Backend(HookError),
}

impl PublishError {
    /// The protocol code this refusal is reported with.
    pub fn code(&self) -> Code {
        match self {
            PublishError::Encode(_)
            | PublishError::InvalidChannel(_)
            | PublishError::InvalidEvent(_)
            | PublishError::InvalidSender(_) => Code::BadFrame,
            PublishError::Forbidden(_) => Code::Forbidden,
            PublishError::TooLarge { .. } => Code::FrameTooLarge,
            PublishError::Store(_) => Code::Unavailable,
            PublishError::Backend(error) => error.code(),
        }
    }
}

/// Why reading a channel (history, presence) or joining it was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The channel name is not valid.
    #[error("invalid channel: {0}")]
    InvalidChannel(String),
    /// The caller may not read this channel (or it is reserved).
    #[error("{0}")]
    Forbidden(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The application's subscribe hook (or proxy) refused it or could not be asked.
    #[error(transparent)]
    Backend(HookError),
}

impl ChannelError {
    /// The protocol code this refusal is reported with.
    pub fn code(&self) -> Code {
        match self {
            ChannelError::InvalidChannel(_) => Code::BadFrame,
            ChannelError::Forbidden(_) => Code::Forbidden,
            ChannelError::Store(_) => Code::Unavailable,
            ChannelError::Backend(error) => error.code(),
        }
    }
}

/// A refused client request: the code and message of its `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestError {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl RequestError {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> RequestError {
        RequestError {
            code,
            message: message.into(),
        }
    }
}

impl From<PublishError> for RequestError {
    fn from(error: PublishError) -> Self {
        RequestError::new(error.code(), error.to_string())
    }
}

impl From<ChannelError> for RequestError {
    fn from(error: ChannelError) -> Self {
        RequestError::new(error.code(), error.to_string())
    }
}

impl From<HookError> for RequestError {
    fn from(error: HookError) -> Self {
        RequestError::new(error.code(), error.to_string())
    }
}

impl From<StoreError> for RequestError {
    fn from(error: StoreError) -> Self {
        RequestError::new(Code::Unavailable, error.to_string())
    }
}
