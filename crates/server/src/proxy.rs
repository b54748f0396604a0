//! `[proxy]`: the [hooks](crate::hooks) as HTTP calls to the application's back end, so a
//! FastAPI or Express app decides subscriptions, checks publications and answers RPC.
//!
//! Each call is a `POST` of JSON with
//! - `Content-Type: application/json`,
//! - `X-Tidings-Proxy: connect | subscribe | publish | rpc`,
//! - with `proxy.secret`: `X-Tidings-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//!   "<t>.<body>")>`, exactly as on webhooks.
//!
//! | call | body | answer (`200`, JSON) |
//! |---|---|---|
//! | connect | `{user_id, claims, path, headers}` (`user_id` and `claims` are `null` without a token; `headers`: cookie, origin, user-agent, x-forwarded-for, x-real-ip) | `{}` admits as is; `{"user_id": "..."}` names the user; `{"channels": [...]}` limits its channels; `{"allow": false, "message": "..."}` closes it with 4003 |
//! | subscribe | `{user_id, channel, claims}` | `{}` or `{"allow": true}`; `{"allow": false, "message": "..."}` refuses (4003) |
//! | publish | `{user_id, channel, event: {type, data}, claims}` | `{}` publishes as sent; `{"event": {...}}` publishes that instead; `{"allow": false, "message": "..."}` refuses (4003) |
//! | rpc | `{user_id, method, data, claims}` | `{"data": ...}` is the reply; `{"error": {"code": "not_found", "message": "..."}}` (4004); code `bad_request` is 4400, `unavailable` 4503, any other refuses (4003) |
//!
//! Every call may also answer `{"error": {"code", "message"}}` as rpc does: `bad_request`
//! gives the client 4400 (an empty chat message), `not_found` 4004, `unavailable` 4503, any
//! other code 4003.
//!
//! An empty or `null` `200` body counts as `{}`; a field not listed here is an error (so a
//! misspelt `allowed` never passes as an allow). A `403` refuses, with its message (ours,
//! FastAPI's `detail`, or the body as text). A `500` is the app's failure (4500, not
//! repeated). Another `5xx`, a refused connection or no answer within `proxy.timeout` is
//! 4503 `unavailable`
//! (connect and subscribe calls are tried `proxy.retries` more times first; publish and rpc never, as
//! they may not be idempotent). Any other status, or an answer that is not one of the
//! above, is 4500.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use tidings_protocol::RawEvent;

use crate::config::ProxyConfig;
use crate::hooks::{
    ConnectDecision, ConnectFn, HookError, PublishDecision, PublishFn, RpcFn, SubscribeFn,
};
use crate::time::now_ms;

/// Largest proxy answer read: bigger is a failure, not an allocation.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The HTTP client every proxy call of a node shares.
pub(crate) struct ProxyClient {
    client: reqwest::Client,
    config: ProxyConfig,
}

/// What the application answers; every field optional (see the module table). Unknown
/// fields are an error: `{"allowed": false}` must not pass as an allow.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    #[serde(default)]
    allow: Option<bool>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    event: Option<RawEvent>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    error: Option<AnswerError>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct AnswerError {
    code: String,
    #[serde(default)]
    message: String,
}

impl Answer {
    /// The refusal or error the answer carries, if any.
    fn refusal(&self) -> Option<HookError> {
        if let Some(error) = &self.error {
            let message = if error.message.is_empty() {
                error.code.clone()
            } else {
                error.message.clone()
            };
            return Some(match error.code.as_str() {
                "not_found" => HookError::NotFound(message),
                "bad_request" | "invalid" => HookError::Invalid(message),
                "unavailable" => HookError::Unavailable(message),
                _ => HookError::Refused(message),
            });
        }
        (self.allow == Some(false)).then(|| {
            HookError::Refused(
                self.message
                    .clone()
                    .unwrap_or_else(|| "refused by the back end".to_owned()),
            )
        })
    }
}

impl ProxyClient {
    pub(crate) fn new(config: &ProxyConfig) -> Result<ProxyClient, String> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("tidings/", env!("CARGO_PKG_VERSION")))
            // The signed body goes where it was configured, nowhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(ProxyClient {
            client,
            config: config.clone(),
        })
    }

    /// POSTs `body` to `url`, `retries` more times while the back end is unavailable.
    async fn call(
        &self,
        kind: &'static str,
        url: &str,
        body: String,
        retries: u32,
    ) -> Result<Answer, HookError> {
        let mut attempt = 0;
        loop {
            match self.call_once(kind, url, &body).await {
                Err(HookError::Unavailable(reason)) if attempt < retries => {
                    attempt += 1;
                    tracing::debug!(kind, %reason, attempt, "proxy unavailable, trying again");
                }
                answer => return answer,
            }
        }
    }

    async fn call_once(
        &self,
        kind: &'static str,
        url: &str,
        body: &str,
    ) -> Result<Answer, HookError> {
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("x-tidings-proxy", kind);
        if let Some(secret) = &self.config.secret {
            let signature = crate::webhooks::signature(secret, now_ms() / 1000, body);
            request = request.header("x-tidings-signature", signature);
        }
        let response = request
            .body(body.to_owned())
            .send()
            .await
            // Without the URL: the reason reaches clients, the app's address is internal.
            .map_err(|e| HookError::Unavailable(format!("{kind} proxy: {}", e.without_url())))?;
        let status = response.status();
        // Read chunk by chunk so that an oversized answer is refused before it is held.
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            // Without the URL: the reason reaches clients, the app's address is internal.
            .map_err(|e| HookError::Unavailable(format!("{kind} proxy: {}", e.without_url())))?
        {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(HookError::Failed(format!(
                    "{kind} proxy answered more than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        // 500 is the app's own failure (a handler that raised): not worth repeating. The
        // other 5xx are a gateway or an app that is down or overloaded.
        if status == reqwest::StatusCode::INTERNAL_SERVER_ERROR {
            return Err(HookError::Failed(format!("{kind} proxy: HTTP {status}")));
        }
        if status.is_server_error() {
            return Err(HookError::Unavailable(format!(
                "{kind} proxy: HTTP {status}"
            )));
        }
        if status == reqwest::StatusCode::FORBIDDEN {
            let text = String::from_utf8_lossy(&bytes).trim().to_owned();
            // A JSON answer with a message says it best (ours, or FastAPI's
            // `{"detail": "..."}`); else the body as text.
            let detail = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|value| {
                    value
                        .get("detail")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
            let message = serde_json::from_slice::<Answer>(&bytes)
                .ok()
                .and_then(|answer| answer.refusal().map(|refusal| refusal.to_string()))
                .or(detail)
                .unwrap_or(if text.is_empty() {
                    "refused by the back end".to_owned()
                } else {
                    text
                });
            return Err(HookError::Refused(message));
        }
        if !status.is_success() {
            return Err(HookError::Failed(format!("{kind} proxy: HTTP {status}")));
        }
        // An empty body or `null` (a handler returning nothing) is `{}`.
        if matches!(String::from_utf8_lossy(&bytes).trim(), "" | "null") {
            return Ok(Answer::default());
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| HookError::Failed(format!("{kind} proxy: unreadable answer: {e}")))
    }

    fn encode(request: &impl serde::Serialize) -> Result<String, HookError> {
        serde_json::to_string(request).map_err(|e| HookError::Failed(e.to_string()))
    }

    pub(crate) fn connect_hook(self: &Arc<Self>) -> ConnectFn {
        let proxy = Arc::clone(self);
        Arc::new(move |attempt| {
            let proxy = Arc::clone(&proxy);
            Box::pin(async move {
                let url = proxy.config.connect.as_deref().unwrap_or_default();
                let body = Self::encode(&attempt)?;
                let answer = proxy
                    .call("connect", url, body, proxy.config.retries)
                    .await?;
                if let Some(refusal) = answer.refusal() {
                    return Err(refusal);
                }
                Ok(ConnectDecision {
                    user_id: answer.user_id,
                    channels: answer.channels,
                })
            })
        })
    }

    pub(crate) fn subscribe_hook(self: &Arc<Self>) -> SubscribeFn {
        let proxy = Arc::clone(self);
        Arc::new(move |request| {
            let proxy = Arc::clone(&proxy);
            Box::pin(async move {
                let url = proxy.config.subscribe.as_deref().unwrap_or_default();
                let body = Self::encode(&request)?;
                let answer = proxy
                    .call("subscribe", url, body, proxy.config.retries)
                    .await?;
                answer.refusal().map_or(Ok(()), Err)
            })
        })
    }

    pub(crate) fn publish_hook(self: &Arc<Self>) -> PublishFn {
        let proxy = Arc::clone(self);
        Arc::new(move |request| {
            let proxy = Arc::clone(&proxy);
            Box::pin(async move {
                let url = proxy.config.publish.as_deref().unwrap_or_default();
                let body = Self::encode(&request)?;
                let answer = proxy.call("publish", url, body, 0).await?;
                if let Some(refusal) = answer.refusal() {
                    return Err(refusal);
                }
                Ok(match answer.event {
                    Some(event) => PublishDecision::Replace(event),
                    None => PublishDecision::Allow,
                })
            })
        })
    }

    pub(crate) fn rpc_hook(self: &Arc<Self>) -> RpcFn {
        let proxy = Arc::clone(self);
        Arc::new(move |request| {
            let proxy = Arc::clone(&proxy);
            Box::pin(async move {
                let url = proxy.config.rpc.as_deref().unwrap_or_default();
                let body = Self::encode(&request)?;
                let answer = proxy.call("rpc", url, body, 0).await?;
                if let Some(refusal) = answer.refusal() {
                    return Err(refusal);
                }
                Ok(answer.data.unwrap_or(Value::Null))
            })
        })
    }
}
