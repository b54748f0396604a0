//! # tidings-protocol
//!
//! Every frame that crosses a Tidings WebSocket, as Rust types: the server, the native client
//! and the WebAssembly client all use these, so there is exactly one definition of the wire.
//! No I/O and no async runtime: it builds for `wasm32-unknown-unknown` as well as native.
//!
//! ```
//! use tidings_protocol::{
//!     ClientFrame, ClientMessage, Code, Notification, RawEvent, ServerFrame, ServerMessage,
//!     messages::Subscribe,
//! };
//!
//! // A client asks to join a channel; request id 1 comes back on the answer.
//! let request = ClientFrame::request(1, ClientMessage::Subscribe(Subscribe {
//!     channel: "ticket:42".into(),
//!     recover: None,
//!     events: None,
//! }));
//! assert_eq!(
//!     request.encode(),
//!     r#"{"type":"subscribe","id":1,"data":{"channel":"ticket:42"}}"#
//! );
//!
//! // A bad frame still yields its id, so the error can answer it.
//! let err = ClientFrame::decode(r#"{"type":"subscribe","id":9,"data":{}}"#).unwrap_err();
//! assert_eq!((err.id, err.code()), (Some(9), Code::BadFrame));
//!
//! // Events are typed at both ends.
//! let frame = ServerFrame::decode(
//!     r#"{"type":"message","data":{"channel":"user:7","offset":3,"epoch":"e1","ts":0,
//!        "event":{"type":"notification","data":{"message":"Hi","level":"success"}}}}"#,
//! ).unwrap();
//! let ServerMessage::Message(message) = frame.message else { unreachable!() };
//! let note: Notification = message.event.decode().unwrap().unwrap();
//! assert_eq!(note.message, "Hi");
//! ```
//!
//! ## Modules
//! - [`frame`]: the envelopes [`ClientFrame`] and [`ServerFrame`], decoding with request ids
//!   kept on errors, and encoding in one pass.
//! - [`messages`]: the `data` of each frame type.
//! - [`event`]: [`RawEvent`] on the wire, the [`Event`] trait for typed application events,
//!   the standard events and [`Delivery`] classes.
//! - [`code`]: the numbered [`Code`] enum shared by `error` frames and close frames.
//!
//! With the `ts` feature every wire type also gets a TypeScript declaration (through
//! `tsify` and wasm-bindgen custom sections), which lands in the `.d.ts` of a WebAssembly
//! crate built on this one: discriminated unions for frames, replies and events, and a
//! `StandardEvents` map from event type name to payload type.
//!
//! The full specification with an example of every frame is `docs/protocol.md`.

pub mod code;
pub mod event;
pub mod frame;
pub mod messages;
#[cfg(feature = "ts")]
pub mod ts;

pub use code::{Code, MAX_CLOSE_REASON_BYTES, truncate_close_reason};
pub use event::{
    AnalysisStatus, ChatMessage, Delivery, Event, Level, Notification, RawEvent, UploadProgress,
};
pub use frame::{
    ClientFrame, ClientMessage, DecodeError, DecodeErrorKind, ServerFrame, ServerMessage,
};

/// The protocol major version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket subprotocol a v1 client offers (`Sec-WebSocket-Protocol: tidings.v1`).
pub const SUBPROTOCOL: &str = "tidings.v1";

/// Prefix of the subprotocol entry that carries a token from browsers, which cannot set an
/// `Authorization` header on a WebSocket: `tidings.token.<jwt>`.
pub const TOKEN_SUBPROTOCOL_PREFIX: &str = "tidings.token.";

/// The channel every connection of user `id` joins automatically: `user:{id}`.
pub fn user_channel(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// The pseudo-channel named in `message` frames sent by a broadcast to every connection.
pub const BROADCAST_CHANNEL: &str = "broadcast";
