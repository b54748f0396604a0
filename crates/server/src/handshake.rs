//! The WebSocket upgrade: which protocol version, which origin, which user. A connection
//! that passes is handed to [`connection::serve`]; one that does not is refused with a typed
//! close code (or an HTTP status before the upgrade).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tidings_protocol::{Code, PROTOCOL_VERSION, SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX};

use crate::Tidings;
use crate::auth::Claims;
use crate::connection::{self, Admission};
use crate::hooks::ConnectAttempt;
use crate::node::Shared;

/// The device of connections that do not name one.
pub const DEFAULT_DEVICE: &str = "default";

/// The parts of a WebSocket request Tidings needs; an axum extractor for your own handlers.
pub struct ConnectRequest {
    upgrade: WebSocketUpgrade,
    token: Option<String>,
    origin: Option<String>,
    /// Versions offered through `tidings.vN` subprotocols or `?protocol=N`: (subprotocol
    /// name, or empty for the query; the version, if it parses).
    offered_versions: Vec<(String, Option<u32>)>,
    /// `?device=`: names the device whose inbox position this connection uses.
    device: String,
    /// The path, for the connect hook.
    path: String,
    /// The headers the connect hook sees (cookie, origin, user agent, forwarding).
    hook_headers: BTreeMap<String, String>,
}

/// Headers passed to the connect hook: enough to recognise a session without a token.
const HOOK_HEADERS: [header::HeaderName; 3] = [header::COOKIE, header::ORIGIN, header::USER_AGENT];

impl<S: Send + Sync> FromRequestParts<S> for ConnectRequest {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let upgrade = WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
            .map(|Query(q)| q)
            .unwrap_or_default();
        let headers = &parts.headers;
        let protocols = offered_protocols(headers);
        let token = query
            .get("token")
            .cloned()
            .or_else(|| crate::auth::bearer_token(headers).map(str::to_owned))
            .or_else(|| {
                protocols
                    .iter()
                    .find_map(|p| p.strip_prefix(TOKEN_SUBPROTOCOL_PREFIX).map(str::to_owned))
            });
        let mut offered_versions: Vec<(String, Option<u32>)> = protocols
            .iter()
            .filter(|p| !p.starts_with(TOKEN_SUBPROTOCOL_PREFIX))
            .filter_map(|p| {
                p.strip_prefix("tidings.v")
                    .map(|v| (p.clone(), v.parse().ok()))
            })
            .collect();
        if let Some(v) = query.get("protocol") {
            offered_versions.push((String::new(), v.parse().ok()));
        }
        let device = query
            .get("device")
            .filter(|d| valid_device(d))
            .cloned()
            .unwrap_or_else(|| DEFAULT_DEVICE.to_owned());
        let mut hook_headers = BTreeMap::new();
        let forwarding = ["x-forwarded-for", "x-real-ip"];
        let names = HOOK_HEADERS.iter().map(header::HeaderName::as_str);
        for name in names.chain(forwarding) {
            if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
                hook_headers.insert(name.to_owned(), value.to_owned());
            }
        }
        Ok(ConnectRequest {
            upgrade,
            device,
            path: parts.uri.path().to_owned(),
            hook_headers,
            token,
            origin: headers
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            offered_versions,
        })
    }
}

/// Device names: 1–64 characters of `A-Z a-z 0-9 _ - . :`; anything else counts as absent.
fn valid_device(device: &str) -> bool {
    (1..=64).contains(&device.len())
        && device
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// A connection being accepted; respond with it from a handler.
#[must_use]
pub struct Accept {
    pub(crate) tidings: Tidings,
    pub(crate) request: ConnectRequest,
    pub(crate) bound_channel: Option<String>,
    pub(crate) expected_user: Option<String>,
}

impl Accept {
    /// Joins the connection to this channel on connect (e.g. `ticket:{id}` from the path).
    /// A user the authorizer refuses is closed with 4003.
    pub fn bind_channel(mut self, channel: impl Into<String>) -> Self {
        self.bound_channel = Some(channel.into());
        self
    }

    /// Requires the token's `sub` to equal this id (e.g. `/api/v1/ws/{user_id}`); otherwise
    /// the connection is closed with 4003.
    pub fn expect_user(mut self, user_id: impl Into<String>) -> Self {
        self.expected_user = Some(user_id.into());
        self
    }
}

impl IntoResponse for Accept {
    fn into_response(self) -> Response {
        let shared = self.tidings.shared;
        if shared.shutting_down.load(Ordering::SeqCst) {
            return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
        }
        let request = self.request;
        if !origin_allowed(&shared.config.allowed_origins, request.origin.as_deref()) {
            return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
        }
        let upgrade = configure(request.upgrade, &shared, &request.offered_versions);
        if let Err(reason) = speaks_v1(&request.offered_versions) {
            return upgrade
                .on_upgrade(move |socket| {
                    connection::refuse(socket, Code::UnsupportedProtocol, reason)
                })
                .into_response();
        }
        let pending = Pending {
            shared,
            path: request.path,
            hook_headers: request.hook_headers,
            token: request.token,
            device: request.device,
            bound_channel: self.bound_channel,
            expected_user: self.expected_user,
        };
        upgrade
            .on_upgrade(move |socket| pending.admit(socket))
            .into_response()
    }
}

/// Buffer and size limits, and the subprotocol to answer with: `tidings.v1` when offered;
/// otherwise whatever the client offered, echoed so that a browser sees our close reason.
fn configure(
    upgrade: WebSocketUpgrade,
    shared: &Shared,
    offered: &[(String, Option<u32>)],
) -> WebSocketUpgrade {
    let limits = &shared.config.limits;
    // tungstenite's own cap sits above ours so that most oversized frames reach our
    // check and get a clean 4413; bigger ones are cut off by tungstenite (also 4413).
    let cap = limits.max_frame_bytes.saturating_mul(4).max(4096);
    let upgrade = upgrade
        .read_buffer_size(limits.read_buffer_bytes)
        .write_buffer_size(limits.write_buffer_bytes)
        .max_message_size(cap)
        .max_frame_size(cap);
    if offered.iter().any(|(name, _)| name == SUBPROTOCOL) {
        upgrade.protocols([SUBPROTOCOL])
    } else if let Some((name, _)) = offered.iter().find(|(name, _)| !name.is_empty()) {
        upgrade.protocols([name.clone()])
    } else {
        upgrade
    }
}

/// Ok when the client offers no version or offers v1; else the close reason for 4426.
fn speaks_v1(offered: &[(String, Option<u32>)]) -> Result<(), String> {
    if offered.is_empty() || offered.iter().any(|(_, v)| *v == Some(PROTOCOL_VERSION)) {
        return Ok(());
    }
    let names: Vec<String> = offered
        .iter()
        .map(|(name, v)| v.map_or_else(|| name.clone(), |v| format!("v{v}")))
        .collect();
    Err(format!(
        "unsupported protocol version {}; this server speaks v{PROTOCOL_VERSION}",
        names.join(",")
    ))
}

/// An upgraded socket waiting for its token to be checked.
struct Pending {
    shared: Arc<Shared>,
    path: String,
    hook_headers: BTreeMap<String, String>,
    token: Option<String>,
    device: String,
    bound_channel: Option<String>,
    expected_user: Option<String>,
}

impl Pending {
    async fn admit(self, socket: WebSocket) {
        // A user id from the path is held to the rules of user ids (it may become one).
        if let Some(user) = &self.expected_user
            && crate::node::check_user_id(user).is_err()
        {
            let reason = "the path's user id must be 1 to 255 bytes without control characters";
            return connection::refuse(socket, Code::BadFrame, reason.to_owned()).await;
        }
        let token = self.token.as_deref().filter(|token| !token.is_empty());
        let has_hook = self.shared.hooks.connect.is_some();
        let verified = match token {
            // The connect hook may know the user without a token (a session cookie).
            None if has_hook => Ok(None),
            None if self.shared.config.allow_anonymous => {
                Ok(Some(anonymous(self.expected_user.as_deref())))
            }
            _ => self.shared.auth.verify(token).map(Some),
        };
        let claims = match verified {
            Ok(claims) => claims,
            Err(e) => {
                tracing::debug!(error = %e, "refused connection");
                return connection::refuse(socket, Code::Unauthenticated, e.to_string()).await;
            }
        };
        let claims = if has_hook {
            match self.ask_connect_hook(claims).await {
                Ok(claims) => claims,
                Err((code, reason)) => return connection::refuse(socket, code, reason).await,
            }
        } else {
            // Without a hook a token (or anonymity) was required above.
            match claims {
                Some(claims) => claims,
                None => {
                    let reason = crate::auth::AuthError::Missing.to_string();
                    return connection::refuse(socket, Code::Unauthenticated, reason).await;
                }
            }
        };
        if let Some(expected) = self.expected_user
            && expected != claims.sub
        {
            let reason = "the token's user does not match the path".to_owned();
            return connection::refuse(socket, Code::Forbidden, reason).await;
        }
        let admission = Admission {
            claims,
            bound_channel: self.bound_channel,
            device: self.device,
        };
        connection::serve(self.shared, socket, admission).await;
    }
}

impl Pending {
    /// The connect hook's decision applied to the token's claims (if any): the user it
    /// names, the channels it grants; or the close code and reason.
    async fn ask_connect_hook(&self, claims: Option<Claims>) -> Result<Claims, (Code, String)> {
        let Some(hook) = &self.shared.hooks.connect else {
            return claims.ok_or((Code::Unauthenticated, "missing token".to_owned()));
        };
        let claims = claims.map(Arc::new);
        let attempt = ConnectAttempt {
            user_id: claims.as_ref().map(|c| Arc::from(c.sub.as_str())),
            claims: claims.clone(),
            path: self.path.clone(),
            headers: self.hook_headers.clone(),
        };
        let decision = self
            .shared
            .hooks
            .bounded(hook(attempt))
            .await
            .map_err(|e| (e.code(), e.to_string()))?;
        let mut claims = match (claims, decision.user_id) {
            (Some(claims), None) => Arc::unwrap_or_clone(claims),
            (Some(claims), Some(user_id)) => {
                let mut claims = Arc::unwrap_or_clone(claims);
                claims.sub = user_id;
                claims
            }
            (None, Some(user_id)) => Claims {
                sub: user_id,
                exp: u64::MAX,
                channels: None,
                extra: serde_json::Map::new(),
            },
            (None, None) if self.shared.config.allow_anonymous => {
                anonymous(self.expected_user.as_deref())
            }
            (None, None) => {
                let reason = "no token, and the connect hook named no user".to_owned();
                return Err((Code::Unauthenticated, reason));
            }
        };
        if crate::node::check_user_id(&claims.sub).is_err() {
            let reason = "the connect hook named an invalid user id".to_owned();
            return Err((Code::InternalError, reason));
        }
        if let Some(channels) = decision.channels {
            claims.channels = Some(channels);
        }
        Ok(claims)
    }
}

/// The claims of a connection without a token (`allow_anonymous`): the route's user, else
/// an id of its own; never expiring.
fn anonymous(route_user: Option<&str>) -> Claims {
    let sub = route_user.map_or_else(
        || format!("anon-{:016x}", rand::random::<u64>()),
        str::to_owned,
    );
    Claims {
        sub,
        exp: u64::MAX,
        channels: None,
        extra: serde_json::Map::new(),
    }
}

/// Browsers send `Origin`; other clients usually do not and are not restricted by it.
fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    match origin {
        None => true,
        Some(_) if allowed.is_empty() => true,
        Some(origin) => allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let list = vec!["https://app.example.com".to_owned()];
        assert!(origin_allowed(&list, None));
        assert!(origin_allowed(&list, Some("https://app.example.com")));
        assert!(!origin_allowed(&list, Some("https://evil.example.com")));
        assert!(origin_allowed(&[], Some("https://evil.example.com")));
    }

    #[test]
    fn versions() {
        assert!(speaks_v1(&[]).is_ok());
        assert!(speaks_v1(&[("tidings.v1".into(), Some(1))]).is_ok());
        let refused = speaks_v1(&[("tidings.v2".into(), Some(2))]);
        assert!(refused.is_err_and(|reason| reason.contains("v2") && reason.contains("v1")));
        assert!(valid_device("phone-1") && !valid_device("") && !valid_device("a b"));
    }
}
