//! The browser client (wasm32 only): a driver of the [core](crate::core) on the
//! JavaScript event loop, and its JavaScript API.
//!
//! ```js
//! import init, { connect } from "tidings-client";
//! await init();
//! const client = await connect("wss://example.com/ws", {
//!   getToken: async () => (await fetch("/api/tidings-token")).text(),
//!   backoff: { minMs: 500, maxMs: 20000 },
//! });
//! client.on("state", (change, state) => console.log(state, change));
//! client.on("notification", (note, meta) => toast(note.level, note.message, meta.channel));
//! const room = await client.subscribe("ticket:42");
//! room.on("chat_message", (chat, meta) => show(meta.sender, chat.content));
//! await room.publish({ type: "chat_message", data: { id: "m1", content: "Hello" } });
//! const members = await room.presence();
//! client.close();
//! ```
//!
//! - The WebSocket offers the `tidings.v1` subprotocol; the token goes in the URL
//!   (`?token=`, browsers cannot set headers), from `token` or from `getToken` before every
//!   attempt.
//! - Time is `performance.now()`, timers are `setTimeout`; the global object's `online` and
//!   `offline` events tell the core the network changed (reconnect at once when it is back,
//!   no attempts while it is gone). Browsers hide WebSocket pings, so the core's own `ping`
//!   frames keep a silent connection checked.
//! - Handlers get the event's `data` (standard event types decoded into their Rust types, so
//!   defaults are filled in) and a `PublicationMeta` (type, channel, offset, epoch, ts,
//!   sender). Data objects use the wire's snake_case field names; options are camelCase.
//! - TypeScript declarations are generated: the wire types by `tsify` from
//!   `tidings-protocol` (its `ts` feature), the JavaScript-facing types by `tsify` from the
//!   core's own types (`crate::core`, `crate::core::view`: what crosses is their serde
//!   form, as JSON), and the overloaded methods by hand in `ts.rs`.
//! - Which operations exist, who waits for each, and which handlers hear an event is the
//!   core's [`Session`](crate::core::Session); this driver does the I/O (`driver.rs`,
//!   `socket.rs`), the JavaScript API (`api.rs`) and the handler arguments (`handlers.rs`).

mod api;
mod convert;
mod driver;
mod handlers;
mod socket;
mod ts;

pub use api::{Subscription, TidingsClient, connect};
