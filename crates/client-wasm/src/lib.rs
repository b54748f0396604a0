//! # tidings-client
//!
//! The Tidings client: connect to a Tidings server over WebSocket, subscribe to channels,
//! receive typed events in order and exactly once per offset, publish, ask for presence and
//! history, call the application's back end (`rpc`); reconnects with jittered backoff,
//! restores subscriptions with recovery of missed publications, and queues publishes while
//! offline.
//!
//! ```no_run
//! use tidings_client::{Client, ClientError};
//! use tidings_protocol::{ChatMessage, Notification};
//!
//! # async fn demo() -> Result<(), ClientError> {
//! let client = Client::builder("wss://example.com/ws")
//!     // Called before every attempt, so an expired token is replaced on reconnect.
//!     .token_provider(|| async { Ok::<_, std::io::Error>("eyJhbGciOi...".to_owned()) })
//!     .connect()
//!     .await?;
//!
//! // Connection changes, for a status badge.
//! client.on_state(|change| println!("connection: {change:?}"));
//! // Notifications pushed to this user (`user:{id}`, joined automatically).
//! client.on::<Notification>(|note| println!("{:?}: {}", note.level, note.message));
//!
//! // Register a channel's handlers first, then subscribe: nothing can slip past them.
//! let room = client.subscription("ticket:42");
//! room.on::<ChatMessage>(|chat| println!("{}", chat.content));
//! room.subscribe().await?;
//!
//! let reply = room
//!     .publish(&ChatMessage { id: "m1".into(), content: "Hello".into(), metadata: None })
//!     .await?;
//! println!("stored at offset {:?} of epoch {}", reply.offset, reply.epoch);
//!
//! let members = room.presence().await?;
//! println!("{} members", members.len());
//!
//! // A call answered by the application's back end (`on_rpc`, or `[proxy] rpc`).
//! let answer = client
//!     .rpc("motivation_requested", serde_json::json!({"mood": "tired"}))
//!     .await?;
//! println!("{}", answer["message"]);
//! client.close().await;
//! # Ok(()) }
//! ```
//!
//! ## Modules
//! - [`core`]: the sans-I/O state machine every driver shares — connection states, backoff,
//!   heartbeat, close-code policy, subscriptions with recovery and gap detection, request
//!   ids and timeouts, the offline publish queue — and around it the [`core::Session`]: the
//!   one list of operations ([`core::Operation`]), who waits for each result, readiness for
//!   `connect`, and which handlers hear an event ([`core::Handlers`]). No sockets, clocks or
//!   runtime: it builds for `wasm32-unknown-unknown`, and its tests run it with a fake
//!   transport and clock. The shapes non-Rust applications see are the serde forms of its
//!   types ([`core::view`] for the few that are not one of them). Public so other drivers
//!   can be written against it.
//! - [`native`] (not on wasm32; its items are re-exported here): [`Client`],
//!   [`ClientBuilder`] and [`Subscription`], a tokio + tokio-tungstenite driver of the core:
//!   one task per client owns the socket, the timers and the handlers.
//! - `wasm` (wasm32 only; its items are re-exported here): the browser driver of the core
//!   and its JavaScript API, `TidingsClient`, `Subscription` and `connect`, with generated
//!   TypeScript declarations. Build it with `wasm-pack build crates/client-wasm`.
//! - [`ClientError`]: every way an operation fails, one enum.
//!
//! ## Delivery, in short
//! Publications with an offset reach handlers in offset order, never twice; after a
//! reconnect or a gap the client asks the server for exactly what it missed and reports
//! `recovered: false` when history no longer reaches back. Publishes are at-least-once
//! across connection drops; rpc calls are at-most-once (a call in flight when the
//! connection drops fails with [`ClientError::Disconnected`] and is never resent). Details
//! in [`core`].

pub mod core;
mod error;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use error::{ClientError, ErrorInfo, ErrorKind};
#[cfg(not(target_arch = "wasm32"))]
pub use native::{Client, ClientBuilder, HandlerId, Subscription};
#[cfg(target_arch = "wasm32")]
pub use wasm::{Subscription, TidingsClient, connect};

pub use crate::core::{
    Backoff, ClientEvent, ConnectionEvent, Publication, PublishReply, State, Subscribed,
};
