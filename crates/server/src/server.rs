//! The [`Tidings`] handle: build it once, mount its routes, call it from anywhere.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde::Serialize;
use tidings_protocol::messages::{HistoryPage, Member};
use tidings_protocol::{
    Code, Delivery, Event, Notification, PROTOCOL_VERSION, RawEvent, SUBPROTOCOL, ServerFrame,
    ServerMessage, TOKEN_SUBPROTOCOL_PREFIX,
};

use crate::auth::{
    AccessRequest, Action, AuthError, Authenticator, AuthorizeFn, Claims, KeyError, default_policy,
};
use crate::broker::Broker;
use crate::config::Config;
use crate::hub::{Hub, Published};
use crate::socket::{self, Admission};
use crate::store::{MemoryStore, Publication, PublicationStore, StoreError};
use crate::webhooks::Webhooks;

/// State shared by every connection and handler.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) auth: Authenticator,
    pub(crate) authorizer: Option<AuthorizeFn>,
    pub(crate) hub: Hub,
    /// Set by [`Tidings::shutdown`]: new connections get 503.
    pub(crate) shutting_down: AtomicBool,
    /// One clock for every connection's rate limiter: making one calibrates it (a
    /// measurable share of a connect's CPU when each connection made its own).
    pub(crate) rate_clock: governor::clock::DefaultClock,
}

impl Shared {
    /// A page of a channel's stored history (limit capped at 1000).
    pub(crate) async fn history_page(
        &self,
        channel: &str,
        since: Option<u64>,
        before: Option<u64>,
        limit: u32,
    ) -> Result<HistoryPage, StoreError> {
        let store = self.hub.store();
        let position = store.position(channel).await?;
        let limit = usize::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
        let publications = store.history(channel, since, before, limit).await?;
        Ok(HistoryPage {
            channel: channel.to_owned(),
            epoch: position.epoch.to_string(),
            offset: position.offset,
            publications: publications.iter().map(|p| p.to_message()).collect(),
        })
    }

    /// The delivery class a publication to `channel` gets: channels of an ephemeral class are
    /// never stored, whatever the event type says.
    pub(crate) fn delivery(&self, channel: &str, requested: Delivery) -> Delivery {
        if self.config.retention(channel).ephemeral {
            Delivery::Ephemeral
        } else {
            requested
        }
    }

    /// The built-in policy, then the application's hook.
    pub(crate) async fn authorize(
        &self,
        user_id: &Arc<str>,
        claims: &Arc<Claims>,
        channel: &str,
        action: Action,
    ) -> bool {
        let request = AccessRequest {
            user_id: user_id.clone(),
            claims: claims.clone(),
            channel: channel.to_owned(),
            action,
        };
        if !default_policy(&self.config.policy, &request) {
            return false;
        }
        match &self.authorizer {
            Some(hook) => hook(request).await,
            None => true,
        }
    }
}

/// A running Tidings node: cheap to clone, usable from any task.
///
/// It serves WebSocket connections through the routes it gives you ([`Tidings::router`],
/// [`Tidings::ws_handler`], [`Tidings::accept`]) and lets your back end reach users:
/// [`notify_user`](Tidings::notify_user), [`publish`](Tidings::publish),
/// [`broadcast`](Tidings::broadcast), presence queries and [`shutdown`](Tidings::shutdown).
#[derive(Clone)]
pub struct Tidings {
    pub(crate) shared: Arc<Shared>,
}

/// Configures a [`Tidings`] node.
#[must_use]
pub struct TidingsBuilder {
    config: Config,
    authorizer: Option<AuthorizeFn>,
    store: Option<Arc<dyn PublicationStore>>,
    broker: Option<Arc<dyn Broker>>,
}

/// Why a node could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The JWT key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Why a back-end publish failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The event could not be encoded as JSON.
    #[error("cannot encode event: {0}")]
    Encode(#[from] serde_json::Error),
    /// The channel name is not valid.
    #[error("invalid channel: {0}")]
    InvalidChannel(String),
    /// A standard event's payload does not match its type.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// The publication store failed; nothing was published.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A snapshot of this node's activity.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Open WebSocket connections.
    pub connections: usize,
    /// Distinct connected users.
    pub users: usize,
    /// Channels with at least one subscriber.
    pub channels: usize,
    /// Publications since start.
    pub publications: u64,
    /// Frames queued for subscribers since start.
    pub deliveries: u64,
    /// Ephemeral frames dropped for slow clients.
    pub dropped: u64,
    /// Connections closed with 4009.
    pub slow_consumers: u64,
    /// Frames waiting in outbound queues now.
    pub queued_frames: usize,
    /// Bytes waiting in outbound queues now.
    pub queued_bytes: usize,
    /// The most bytes any open connection ever had queued (bounded by
    /// `limits.outbound_queue_bytes`).
    pub peak_queue_bytes: usize,
}

impl TidingsBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the HS256 secret that verifies client tokens.
    pub fn jwt_secret(mut self, secret: impl Into<String>) -> Self {
        self.config.jwt.secret = Some(secret.into());
        self
    }

    /// Sets the bearer key of the HTTP API.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.config.api_key = Some(key.into());
        self
    }

    /// Decides channel access, e.g. "may user 7 open ticket 42". Called for every
    /// subscribe, client publish and route-bound channel, after the built-in policy.
    pub fn authorize<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(AccessRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.authorizer = Some(Arc::new(move |request| Box::pin(hook(request))));
        self
    }

    /// Uses this publication store. Without one the node keeps `history_size` publications
    /// per channel in memory only; [`store::open`](crate::store::open) opens the store the
    /// configuration names (SQLite in the data directory by default).
    pub fn store(mut self, store: Arc<dyn PublicationStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Connects this node to others through a broker (see [`crate::broker`]).
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Builds the node.
    pub fn build(self) -> Result<Tidings, BuildError> {
        crate::metrics::install();
        let auth = Authenticator::new(&self.config.jwt)?;
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::for_config(&self.config)));
        let webhooks = Webhooks::new(&self.config.webhooks, &self.config.webhook_delivery);
        if let Some(hooks) = &webhooks
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(crate::webhooks::run_worker(
                hooks.clone(),
                Arc::downgrade(&store),
            ));
        }
        let tidings = Tidings {
            shared: Arc::new(Shared {
                hub: Hub::new(
                    store.clone(),
                    self.broker,
                    webhooks.clone(),
                    self.config.presence_events_max_members,
                ),
                auth,
                authorizer: self.authorizer,
                config: self.config,
                shutting_down: AtomicBool::new(false),
                rate_clock: governor::clock::DefaultClock::default(),
            }),
        };
        tidings.spawn_retention();
        Ok(tidings)
    }
}

impl Tidings {
    /// Starts configuring a node.
    pub fn builder() -> TidingsBuilder {
        TidingsBuilder {
            config: Config::default(),
            authorizer: None,
            store: None,
            broker: None,
        }
    }

    /// Enforces retention every `retention_interval` while the node exists (needs a tokio
    /// runtime; without one, call [`Tidings::prune`] yourself).
    fn spawn_retention(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = Arc::downgrade(&self.shared);
        let every = self
            .shared
            .config
            .retention_interval
            .max(Duration::from_secs(1));
        runtime.spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let tidings = Tidings { shared };
                if let Err(e) = tidings.prune().await {
                    tracing::warn!(error = %e, "retention failed");
                }
            }
        });
    }

    /// Applies every channel class's retention now; returns how many publications were
    /// deleted.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        let deleted =
            crate::store::prune_all(&**self.shared.hub.store(), &self.shared.config).await?;
        if deleted > 0 {
            tracing::debug!(deleted, "retention pruned publications");
        }
        Ok(deleted)
    }

    /// The node's publication store (for reading history in your own handlers).
    pub fn store(&self) -> &Arc<dyn PublicationStore> {
        self.shared.hub.store()
    }

    /// A page of a channel's stored history, as the `history` request and
    /// `GET /api/channels/{name}/history` return it (limit capped at 1000).
    pub async fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        before: Option<u64>,
        limit: u32,
    ) -> Result<HistoryPage, StoreError> {
        self.shared
            .history_page(channel, since, before, limit)
            .await
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Everything the `tidings` binary serves: `/ws`, the HTTP API under `/api`, `/healthz`
    /// and `/metrics`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/ws", self.ws_handler())
            .merge(crate::api::routes(self.clone()))
    }

    /// A `GET` handler that accepts WebSocket connections, for mounting at any path.
    pub fn ws_handler<S: Clone + Send + Sync + 'static>(&self) -> MethodRouter<S> {
        let tidings = self.clone();
        get(move |request: ConnectRequest| async move { tidings.accept(request) })
    }

    /// Accepts one connection; chain [`Accept::bind_channel`] or [`Accept::expect_user`] for
    /// routes whose path names a channel or a user.
    pub fn accept(&self, request: ConnectRequest) -> Accept {
        Accept {
            tidings: self.clone(),
            request,
            bound_channel: None,
            expected_user: None,
        }
    }

    /// Publishes a typed event to a channel; it is stored for recovery (unless the event
    /// type is ephemeral) and queued for every subscriber on this node.
    pub async fn publish<E: Event>(
        &self,
        channel: &str,
        event: &E,
    ) -> Result<Published, PublishError> {
        self.publish_raw(channel, RawEvent::new(event)?, E::DELIVERY)
            .await
    }

    /// Publishes an event without a Rust type.
    pub async fn publish_raw(
        &self,
        channel: &str,
        event: RawEvent,
        delivery: Delivery,
    ) -> Result<Published, PublishError> {
        socket::check_channel_name(channel).map_err(PublishError::InvalidChannel)?;
        if channel == tidings_protocol::BROADCAST_CHANNEL {
            return Err(PublishError::InvalidChannel(
                "use broadcast() for the broadcast channel".to_owned(),
            ));
        }
        event
            .validate_standard()
            .map_err(|e| PublishError::InvalidEvent(e.to_string()))?;
        let delivery = self.shared.delivery(channel, delivery);
        Ok(self
            .shared
            .hub
            .publish(channel, event, None, delivery)
            .await?)
    }

    /// Sends a notification to every connection of a user (through `user:{id}`); returns
    /// how many connections it reached on this node.
    pub async fn notify_user(
        &self,
        user_id: &str,
        notification: &Notification,
    ) -> Result<usize, PublishError> {
        let channel = tidings_protocol::user_channel(user_id);
        Ok(self.publish(&channel, notification).await?.delivered)
    }

    /// Sends a notification to every subscriber of a channel (seed 003's `notify_room`).
    pub async fn notify_channel(
        &self,
        channel: &str,
        notification: &Notification,
    ) -> Result<usize, PublishError> {
        Ok(self.publish(channel, notification).await?.delivered)
    }

    /// Sends a typed event to every connection on this node (channel `broadcast`, not
    /// stored); returns how many it reached.
    pub fn broadcast<E: Event>(&self, event: &E) -> Result<usize, PublishError> {
        Ok(self.broadcast_raw(RawEvent::new(event)?))
    }

    /// Broadcasts an event without a Rust type.
    pub fn broadcast_raw(&self, event: RawEvent) -> usize {
        self.shared.hub.broadcast(event)
    }

    /// Delivers a publication received from another node's [`Broker`] to this node's
    /// subscribers; returns how many connections it reached.
    pub async fn deliver_remote(&self, publication: &Publication) -> usize {
        self.shared.hub.deliver_remote(publication).await
    }

    /// Whether the user has a connection on this node.
    pub fn is_user_connected(&self, user_id: &str) -> bool {
        self.shared.hub.user_connections(user_id) > 0
    }

    /// How many connections the user has on this node.
    pub fn user_connections(&self, user_id: &str) -> usize {
        self.shared.hub.user_connections(user_id)
    }

    /// Users connected to this node.
    pub fn connected_users(&self) -> Vec<String> {
        self.shared.hub.connected_users()
    }

    /// Members of a channel, one entry per user.
    pub async fn channel_members(&self, channel: &str) -> Vec<Member> {
        self.shared.hub.members(channel).await
    }

    /// Closes every connection of a user with 4006 (clients do not reconnect); returns how
    /// many were closed.
    pub fn disconnect_user(&self, user_id: &str) -> usize {
        self.shared
            .hub
            .disconnect_user(user_id, Code::Disconnected, "disconnected by the server")
    }

    /// Counts of connections, users, channels and deliveries.
    pub fn stats(&self) -> Stats {
        let hub = &self.shared.hub;
        let (connections, users, channels) = hub.sizes();
        let c = &hub.counters;
        let (queued_frames, queued_bytes, peak_queue_bytes) = hub.queues();
        Stats {
            queued_frames,
            queued_bytes,
            peak_queue_bytes,
            connections,
            users,
            channels,
            publications: c.publications.load(Ordering::Relaxed),
            deliveries: c.deliveries.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            slow_consumers: c.slow_consumers.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting connections, tells every client `shutdown` with a jittered
    /// `reconnect_after_ms`, closes them with 1012 and waits (up to the configured deadline)
    /// until they are gone.
    pub async fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let spread = u64::try_from(self.shared.config.shutdown_reconnect_spread.as_millis())
            .unwrap_or(u64::MAX);
        let conns = self.shared.hub.all_connections();
        tracing::info!(connections = conns.len(), "shutting down");
        for conn in &conns {
            conn.send(&ServerFrame::push(ServerMessage::Shutdown(
                tidings_protocol::messages::Shutdown {
                    reason: "restart".to_owned(),
                    reconnect_after_ms: rand::random_range(0..=spread),
                },
            )));
            conn.outbox.close(Code::ServerRestart, "server restart");
        }
        let deadline = tokio::time::Instant::now() + self.shared.config.shutdown_deadline;
        while self.shared.hub.sizes().0 > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The parts of a WebSocket request Tidings needs; an axum extractor for your own handlers.
pub struct ConnectRequest {
    upgrade: WebSocketUpgrade,
    token: Option<String>,
    origin: Option<String>,
    /// Versions offered through `tidings.vN` subprotocols or `?protocol=N`.
    offered_versions: Vec<(String, Option<u32>)>,
    /// `?device=`: names the device whose inbox position this connection uses.
    device: String,
}

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
            .or_else(|| bearer(headers))
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
        Ok(ConnectRequest {
            upgrade,
            device,
            token,
            origin: headers
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            offered_versions,
        })
    }
}

/// The device of connections that do not name one.
pub const DEFAULT_DEVICE: &str = "default";

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

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_owned())
}

/// A connection being accepted; respond with it from a handler.
#[must_use]
pub struct Accept {
    tidings: Tidings,
    request: ConnectRequest,
    bound_channel: Option<String>,
    expected_user: Option<String>,
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
        let Accept {
            tidings,
            request,
            bound_channel,
            expected_user,
        } = self;
        let shared = tidings.shared;
        let config = &shared.config;
        if shared.shutting_down.load(Ordering::SeqCst) {
            return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
        }
        if !origin_allowed(&config.allowed_origins, request.origin.as_deref()) {
            return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
        }
        let limits = &config.limits;
        // tungstenite's own cap sits above ours so that most oversized frames reach our
        // check and get a clean 4413; bigger ones are cut off by tungstenite (also 4413).
        let cap = limits.max_frame_bytes.saturating_mul(4).max(4096);
        let mut upgrade = request
            .upgrade
            .read_buffer_size(limits.read_buffer_bytes)
            .write_buffer_size(limits.write_buffer_bytes)
            .max_message_size(cap)
            .max_frame_size(cap);
        // Version negotiation: accept v1; otherwise complete the handshake (echoing what the
        // client offered, so browsers see our close reason) and close with 4426.
        let wanted = request.offered_versions;
        let speaks_v1 =
            wanted.is_empty() || wanted.iter().any(|(_, v)| *v == Some(PROTOCOL_VERSION));
        if wanted.iter().any(|(name, _)| name == SUBPROTOCOL) {
            upgrade = upgrade.protocols([SUBPROTOCOL]);
        } else if let Some((name, _)) = wanted.iter().find(|(name, _)| !name.is_empty()) {
            upgrade = upgrade.protocols([name.clone()]);
        }
        if !speaks_v1 {
            let offered: Vec<String> = wanted
                .iter()
                .map(|(name, v)| v.map_or_else(|| name.clone(), |v| format!("v{v}")))
                .collect();
            let reason = format!(
                "unsupported protocol version {}; this server speaks v{PROTOCOL_VERSION}",
                offered.join(",")
            );
            return upgrade
                .on_upgrade(move |socket| socket::refuse(socket, Code::UnsupportedProtocol, reason))
                .into_response();
        }
        let token = request.token;
        let device = request.device;
        upgrade
            .on_upgrade(move |socket| async move {
                let claims = match shared.auth.verify(token.as_deref()) {
                    Ok(claims) => claims,
                    Err(e) => {
                        tracing::debug!(error = %e, "refused connection");
                        let reason = auth_reason(&e);
                        return socket::refuse(socket, Code::Unauthenticated, reason).await;
                    }
                };
                if let Some(expected) = expected_user
                    && expected != claims.sub
                {
                    let reason = "the token's user does not match the path".to_owned();
                    return socket::refuse(socket, Code::Forbidden, reason).await;
                }
                let admission = Admission {
                    claims,
                    bound_channel,
                    device,
                };
                socket::serve(shared, socket, admission).await;
            })
            .into_response()
    }
}

fn auth_reason(error: &AuthError) -> String {
    // Close reasons are capped at 123 bytes; keep the useful start.
    let mut reason = error.to_string();
    if reason.len() > 120 {
        let mut end = 120;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
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
}
