//! # tidings-server
//!
//! Real-time channels for any axum app: WebSocket connections authenticated with JWTs,
//! channels with offsets and recovery, presence, typing, per-user notifications, an HTTP API
//! for back ends, and protection (rate limits, frame limits, bounded queues) built in.
//!
//! ```no_run
//! use axum::{extract::Path, routing::get, Router};
//! use tidings_server::{ConnectRequest, Tidings};
//! use tidings_protocol::{Level, Notification};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let tidings = Tidings::builder()
//!     .jwt_secret("change-me")
//!     .api_key("back-end-key")
//!     // "May this user open this ticket?" — ask your database here.
//!     .authorize(|request| async move { !request.channel.starts_with("admin:") })
//!     .build()?;
//!
//! let chat = tidings.clone();
//! let app = Router::new()
//!     // Any path: here the path binds the connection to a ticket's channel.
//!     .route("/ws/chat/{ticket_id}", get(move |Path(ticket): Path<u64>, request: ConnectRequest| async move {
//!         chat.accept(request).bind_channel(format!("ticket:{ticket}"))
//!     }))
//!     .merge(tidings.router()); // /ws, /api/*, /healthz, /metrics
//!
//! // From any request handler or background job:
//! let reached = tidings
//!     .notify_user("42", &Notification { message: "Report ready".into(), level: Level::Success, ..Default::default() })
//!     .await?;
//! println!("reached {reached} connections");
//!
//! let listener = tidings_server::listen("127.0.0.1:8000".parse()?)?;
//! // Serves until ctrl-c or SIGTERM, then tells clients to reconnect elsewhere (1012).
//! tidings_server::serve(listener, tidings).with_router(app).await?;
//! # Ok(()) }
//! ```
//!
//! ## Modules, in the order a frame travels
//! - `handshake`: the WebSocket upgrade: protocol version, origin, token, route-bound
//!   channel or user ([`ConnectRequest`], [`Accept`]).
//! - `connection`: one connection's transport: reader loop (size, rate limit, decode) and
//!   writer task (outbox → socket, one flush per batch, heartbeats); its `Session` and start.
//! - `requests`: one handler per client request (`subscribe.rs`, `publish.rs`, ...), and the
//!   exhaustive dispatch.
//! - `node`: the node's shared state and the one path for publish, history and presence
//!   that the socket, the Rust API and the HTTP API all take (checks and authorization).
//! - `hub`: channels, subscribers, presence; stores then fans out each publication, encoded
//!   once and shared by every recipient.
//! - `outbox`: a connection's bounded queue with delivery classes (coalesce, drop, 4009).
//! - [`store`]: the store traits ([`PublicationStore`](store::PublicationStore),
//!   [`InboxStore`](store::InboxStore), [`WebhookOutbox`](store::WebhookOutbox)) and the
//!   in-memory store; [`sql_store`]: SQLite (one file) and PostgreSQL (several nodes).
//! - [`webhooks`] and [`webhook_queue`]: signed webhook deliveries from a durable queue.
//! - [`broker`]: several nodes: live publications between nodes over Redis or NATS, with
//!   gaps filled from the shared store.
//! - `serve`: [`serve`], [`listen`] and [`shutdown_signal`]: start-up with graceful shutdown.
//! - [`server`]: the [`Tidings`] handle (back-end API: `notify_user`, `publish`,
//!   `broadcast`, presence, shutdown); [`TidingsBuilder`] builds it.
//! - `api`: the HTTP API, `/healthz`, `/metrics`, `/api/openapi.json`.
//! - [`auth`]: JWT verification, token minting, channel policy.
//! - [`config`]: every setting, its defaults, layered loading (file, environment) and
//!   validation.
//! - [`errors`]: one error enum per operation, each mapped to a protocol code.
//! - [`hooks`]: the application's subscribe, publish and RPC hooks; [`proxy`] makes them
//!   HTTP calls to a back end in any language (`[proxy]`).

pub mod auth;
pub mod broker;
pub mod config;
pub mod errors;
pub mod hooks;
#[cfg(feature = "webhooks")]
pub mod proxy;
pub mod server;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql_store;
pub mod store;
pub mod webhook_queue;
pub mod webhooks;

mod api;
mod builder;
mod connection;
mod handshake;
mod hub;
mod metrics;
mod node;
mod outbox;
mod requests;
mod serve;
mod time;

pub use auth::{AccessRequest, Action, Claims, mint_token};
pub use builder::{BuildError, TidingsBuilder};
pub use config::Config;
pub use errors::{ChannelError, PublishError};
pub use handshake::{Accept, ConnectRequest, DEFAULT_DEVICE};
pub use hub::Published;
pub use serve::{Serve, listen, serve, shutdown_signal};
pub use server::{ClusterStats, NodeStats, Stats, Tidings};
pub use tidings_protocol as protocol;
