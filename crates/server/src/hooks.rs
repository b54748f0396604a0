//! The application's back end in the loop: hooks that decide a subscription, check or
//! rewrite a client's publication, and answer a client's `rpc` call.
//!
//! An embedding Rust application sets them on the builder
//! ([`TidingsBuilder::on_subscribe`](crate::TidingsBuilder::on_subscribe),
//! [`on_publish`](crate::TidingsBuilder::on_publish),
//! [`on_rpc`](crate::TidingsBuilder::on_rpc)); the `tidings` binary sets them from
//! `[proxy]`, each an HTTP POST to the application (see [`crate::proxy`]). Either way a hook
//! that fails to answer gives the client a typed, retryable 4503, never a hang: every call
//! is bounded by `proxy.timeout`.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;
use tidings_protocol::{Code, RawEvent};

use crate::auth::Claims;

/// Why a hook did not let a request through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// Nobody answers this (an RPC method the back end does not know): 4004.
    #[error("{0}")]
    NotFound(String),
    /// The back end said no, with its reason: 4003.
    #[error("{0}")]
    Refused(String),
    /// The back end found the request's arguments invalid: 4400.
    #[error("{0}")]
    Invalid(String),
    /// The back end is down, or did not answer in time: 4503, retry later.
    #[error("the back end is unavailable: {0}")]
    Unavailable(String),
    /// The back end answered with something that is not an answer: 4500.
    #[error("the back end failed: {0}")]
    Failed(String),
}

impl HookError {
    /// The protocol code a client gets for it.
    pub fn code(&self) -> Code {
        match self {
            HookError::NotFound(_) => Code::NotFound,
            HookError::Refused(_) => Code::Forbidden,
            HookError::Invalid(_) => Code::BadFrame,
            HookError::Unavailable(_) => Code::Unavailable,
            HookError::Failed(_) => Code::InternalError,
        }
    }
}

/// A connection being admitted, as the connect hook sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectAttempt {
    /// The token's user; `None` without a token (the hook may then decide who it is, e.g.
    /// from a session cookie).
    pub user_id: Option<Arc<str>>,
    /// The token's claims, when there is a token.
    pub claims: Option<Arc<Claims>>,
    /// The request path (`/ws`, or a route's).
    pub path: String,
    /// The request's `cookie`, `origin`, `user-agent`, `x-forwarded-for` and `x-real-ip`
    /// headers, when present.
    pub headers: std::collections::BTreeMap<String, String>,
}

/// What the connect hook decided: `Default` admits the connection as it is.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[non_exhaustive]
pub struct ConnectDecision {
    /// The user this connection is (required when there was no token).
    #[serde(default)]
    pub user_id: Option<String>,
    /// The channels this connection may use (exact names or `prefix*`), like a token's
    /// `channels` claim; `None` keeps the token's.
    #[serde(default)]
    pub channels: Option<Vec<String>>,
}

impl ConnectDecision {
    /// Admits the connection as this user.
    pub fn user(user_id: impl Into<String>) -> ConnectDecision {
        ConnectDecision {
            user_id: Some(user_id.into()),
            channels: None,
        }
    }

    /// Limits the connection to these channels.
    pub fn channels(mut self, channels: Vec<String>) -> ConnectDecision {
        self.channels = Some(channels);
        self
    }
}

/// A user asks to read a channel (subscribe, a route's channel, history, presence).
#[derive(Debug, Clone, Serialize)]
pub struct SubscribeRequest {
    /// The user.
    pub user_id: Arc<str>,
    /// The channel.
    pub channel: String,
    /// The user's token claims.
    pub claims: Arc<Claims>,
}

/// A user publishes from a connection.
#[derive(Debug, Clone, Serialize)]
pub struct PublishRequest {
    /// The user.
    pub user_id: Arc<str>,
    /// The channel.
    pub channel: String,
    /// The event as the client sent it.
    pub event: RawEvent,
    /// The user's token claims.
    pub claims: Arc<Claims>,
}

/// What the publish hook decided.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PublishDecision {
    /// Publish the event as sent.
    Allow,
    /// Publish this event instead (validated, enriched: e.g. a `sender_role` added). It
    /// passes the same size and event checks as the original.
    Replace(RawEvent),
}

/// A user's `rpc` call.
#[derive(Debug, Clone, Serialize)]
pub struct RpcRequest {
    /// The user.
    pub user_id: Arc<str>,
    /// The method.
    pub method: String,
    /// Its arguments.
    pub data: serde_json::Value,
    /// The user's token claims.
    pub claims: Arc<Claims>,
}

pub(crate) type ConnectFn = Arc<
    dyn Fn(ConnectAttempt) -> BoxFuture<'static, Result<ConnectDecision, HookError>> + Send + Sync,
>;
pub(crate) type SubscribeFn =
    Arc<dyn Fn(SubscribeRequest) -> BoxFuture<'static, Result<(), HookError>> + Send + Sync>;
pub(crate) type PublishFn = Arc<
    dyn Fn(PublishRequest) -> BoxFuture<'static, Result<PublishDecision, HookError>> + Send + Sync,
>;
pub(crate) type RpcFn = Arc<
    dyn Fn(RpcRequest) -> BoxFuture<'static, Result<serde_json::Value, HookError>> + Send + Sync,
>;

/// The hooks a node calls; each is optional.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) connect: Option<ConnectFn>,
    pub(crate) subscribe: Option<SubscribeFn>,
    pub(crate) publish: Option<PublishFn>,
    pub(crate) rpc: Option<RpcFn>,
    /// Bound on every call (`proxy.timeout`).
    pub(crate) timeout: std::time::Duration,
}

impl Hooks {
    /// Runs a hook's future within the timeout: late is unavailable.
    pub(crate) async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, HookError>>,
    ) -> Result<T, HookError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(answer) => answer,
            Err(_) => Err(HookError::Unavailable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}

/// Boxes an application's async closure as a hook.
pub(crate) fn boxed<Req, T, F, Fut>(
    hook: F,
) -> Arc<dyn Fn(Req) -> BoxFuture<'static, Result<T, HookError>> + Send + Sync>
where
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, HookError>> + Send + 'static,
{
    Arc::new(move |request| Box::pin(hook(request)))
}
