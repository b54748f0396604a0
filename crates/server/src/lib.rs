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
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! ## Modules, in the order a frame travels
//! - [`server`]: the [`Tidings`] handle and builder, the WebSocket upgrade (version, origin,
//!   token) and the back-end API (`notify_user`, `publish`, `broadcast`, presence, shutdown).
//! - `socket`: one connection: reader loop (size, rate limit, decode, requests) and writer
//!   task (outbox → socket, one flush per batch, heartbeats).
//! - `hub`: channels, subscribers, presence; stores then fans out each publication, encoded
//!   once and shared by every recipient.
//! - `outbox`: a connection's bounded queue with delivery classes (coalesce, drop, 4009).
//! - [`store`]: the [`PublicationStore`](store::PublicationStore) trait and the in-memory store.
//! - [`sql_store`]: durable stores on SQLite (one file) and PostgreSQL (several nodes).
//! - [`broker`]: the seam for several nodes (cross-node fan-out and presence).
//! - `api`: the HTTP API, `/healthz`, `/metrics`, `/api/openapi.json`.
//! - [`auth`]: JWT verification, token minting, channel authorization.
//! - [`config`]: every setting, with defaults and TOML loading.

pub mod auth;
pub mod broker;
pub mod config;
pub mod server;
pub mod sql_store;
pub mod store;
pub mod webhook_queue;
pub mod webhooks;

mod api;
mod hub;
mod metrics;
mod outbox;
mod socket;

pub use auth::{AccessRequest, Action, Claims, mint_token};
pub use config::Config;
pub use hub::Published;
pub use server::{
    Accept, BuildError, ConnectRequest, PublishError, Stats, Tidings, TidingsBuilder,
};
pub use tidings_protocol as protocol;
