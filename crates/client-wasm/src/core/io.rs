//! What goes into the core ([`Input`], [`Operation`]) and what comes out ([`Output`]), with
//! the events and results the application sees.
//!
//! The types an application sees also serialize (serde) to the plain data that applications
//! in other languages get: the browser driver hands exactly this JSON to JavaScript, and its
//! TypeScript declarations are generated from these definitions (`tsify`, on wasm32).

use std::time::Duration;

use serde::Serialize;
use tidings_protocol::messages::{
    Connected, HistoryPage, Member, MessageBody, PresenceChange, TypingNotice,
};
use tidings_protocol::{Code, Delivery, RawEvent};

use super::config::duration_ms;
use crate::ClientError;

/// A publication delivered to the application: channel, offset, epoch, sender and event.
pub type Publication = MessageBody;

/// Identifies one application operation (subscribe, unsubscribe, publish, presence) from the
/// call that started it to its [`Output::Completed`].
///
/// It is not the request id on the wire: a subscribe may be sent several times (once per
/// connection) and a queued publish has no wire id until it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// Identifies one transport (one connect attempt). Every transport input carries the id
/// from the [`Output::OpenTransport`] that created it, so reports from a transport the core
/// has already given up on (a late close, a late frame) are recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// The named timers the core sets. Setting a timer replaces its previous deadline; a driver
/// needs one slot per name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Next reconnect attempt.
    Reconnect,
    /// End of the current connect attempt ([`Config::connect_timeout`](crate::core::Config)).
    Connect,
    /// Liveness: time to send a `ping`, or to give up on a silent connection.
    Heartbeat,
    /// The earliest request deadline.
    Requests,
    /// The earliest retry of a subscription the server refused with a retryable code.
    Resubscribe,
    /// Time to acknowledge what the application processed of the personal channel.
    Ack,
}

/// The connection state. Changes are reported as [`ConnectionEvent`]s.
///
/// ```text
/// Idle ──connect──▶ Connecting ──`connected`──▶ Connected
///                     ▲   │                        │
///        timer/online │   │ retryable close        │ retryable close
///                     │   ▼                        ▼
///                   Reconnecting ◀─────────────────┘
/// any ──close() / terminal close / attempts exhausted──▶ Closed ──connect──▶ Connecting
/// ```
///
/// Serializes as its name in snake case (`"connecting"`); `ConnectionState` in TypeScript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(
    target_arch = "wasm32",
    derive(tsify::Tsify),
    tsify(rename = "ConnectionState")
)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Created, [`connect`](crate::core::Core::connect) not called yet.
    Idle,
    /// An attempt is under way: waiting for a token, the transport or `connected`.
    Connecting,
    /// The server sent `connected`; requests flow.
    Connected,
    /// Waiting for the next attempt (a backoff delay, or the network to come back).
    Reconnecting,
    /// Stopped for good, until `connect` is called again.
    Closed,
}

impl State {
    /// The name, as it serializes (`"reconnecting"`).
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Reconnecting => "reconnecting",
            State::Closed => "closed",
        }
    }
}

/// A change of the connection, for the application (status badges, logs).
///
/// Serializes tagged by `type` in snake case, the delay in milliseconds (`delay_ms`) and the
/// error as an [`ErrorInfo`](crate::ErrorInfo); `ConnectionChange` in TypeScript.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(
    target_arch = "wasm32",
    derive(tsify::Tsify),
    tsify(rename = "ConnectionChange")
)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// An attempt starts.
    Connecting {
        /// 0 for the first attempt after [`connect`](crate::core::Core::connect), `n` for
        /// the `n`-th reconnect attempt in a row (the counter resets after a stable
        /// connection, see [`Backoff::reset_after`](crate::core::Backoff)).
        attempt: u32,
    },
    /// The server accepted the connection.
    Connected(Box<Connected>),
    /// A connection or attempt ended.
    Disconnected {
        /// The close code (received, or decided locally: 4002 heartbeat timeout, 1006 for
        /// a transport that failed or a connect attempt that timed out).
        code: Code,
        /// Why.
        reason: String,
    },
    /// A reconnect is scheduled.
    Reconnecting {
        /// The number of the coming attempt (1 for the first reconnect).
        attempt: u32,
        /// The wait before it; `None` while the network is offline: the attempt starts as
        /// soon as it is back.
        #[serde(
            rename = "delay_ms",
            with = "duration_ms::option",
            skip_serializing_if = "Option::is_none"
        )]
        #[cfg_attr(target_arch = "wasm32", tsify(type = "number"))]
        delay: Option<Duration>,
    },
    /// The client stopped reconnecting.
    Closed {
        /// 1000 when the application closed it, else the terminal close code.
        code: Code,
        /// Why.
        reason: String,
    },
    /// Something went wrong without ending the connection (an undecodable frame, an `error`
    /// frame that answers no request, a failing token provider).
    Error(#[cfg_attr(target_arch = "wasm32", tsify(type = "ErrorInfo"))] ClientError),
}

/// A channel the client is now subscribed to, on this connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct Subscribed {
    /// The channel.
    pub channel: String,
    /// The channel's epoch.
    pub epoch: String,
    /// The channel's latest offset when the subscription started.
    pub offset: u64,
    /// `None` for a first subscription; after a reconnect or a gap, `Some(true)` when every
    /// missed publication follows (and will be delivered in order), `Some(false)` when
    /// history did not reach back far enough or the epoch changed: publications were lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// With recovery, how many missed publications the server said follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
}

/// The answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct PublishReply {
    /// The channel.
    pub channel: String,
    /// The publication's offset; `None` for ephemeral publications.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The channel's epoch.
    pub epoch: String,
    /// How many connections it was queued for on the server's node.
    pub delivered: u64,
}

/// Everything the application hears from the client, in order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The connection changed.
    Connection(ConnectionEvent),
    /// A subscription started or was restored (after every reconnect, and after a gap).
    Subscribed(Subscribed),
    /// A subscription ended without the application asking: the server refused to restore
    /// it. The client forgets the channel.
    Unsubscribed {
        /// The channel.
        channel: String,
        /// The server's refusal.
        error: ClientError,
    },
    /// A publication, in offset order and at most once per (channel, epoch, offset);
    /// ephemeral publications (no offset) as they come.
    Publication(Publication),
    /// A user joined a channel.
    UserJoined(PresenceChange),
    /// A user left a channel.
    UserLeft(PresenceChange),
    /// A member of a channel is typing.
    Typing(TypingNotice),
}

/// An operation of the application: what every driver forwards to
/// [`Core::perform`](crate::core::Core::perform), and the one list of them. Each completes
/// with an [`Output::Completed`] whose [`Completion`] has the operation's name.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Operation {
    /// Subscribe to `channel`, optionally to some event types only (the filter of the first
    /// subscribe to a channel wins); completes once subscribed, however many reconnects
    /// that takes.
    Subscribe {
        /// The channel.
        channel: String,
        /// Only these event types.
        events: Option<Vec<String>>,
    },
    /// Leave `channel`.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// Publish `event` to `channel` (queued while not connected).
    Publish {
        /// The channel.
        channel: String,
        /// The event.
        event: RawEvent,
        /// Overrides the event type's delivery class.
        delivery: Option<Delivery>,
    },
    /// Ask for the members of `channel` (needs a live connection).
    Presence {
        /// The channel.
        channel: String,
    },
    /// Read a page of `channel`'s stored history (needs a live connection): with `since`,
    /// the oldest publications after it; without, the newest before `before` (or the end).
    History {
        /// The channel.
        channel: String,
        /// Page forward from this offset.
        since: Option<u64>,
        /// Page back from this offset.
        before: Option<u64>,
        /// At most this many (the server's default without).
        limit: Option<u32>,
    },
    /// Call `method` of the application's back end with `data` (needs a live connection).
    /// Sent once: never resent after a reconnect, since the call may not be idempotent.
    Rpc {
        /// The method, 1 to 128 bytes without control characters (the server checks).
        method: String,
        /// Its arguments, any JSON.
        data: serde_json::Value,
    },
}

/// The successful result of an operation.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Completion {
    /// A subscribe succeeded (on its first successful reply).
    Subscribed(Subscribed),
    /// An unsubscribe succeeded.
    Unsubscribed {
        /// The channel left.
        channel: String,
    },
    /// A publish was accepted.
    Published(PublishReply),
    /// The members of a channel.
    Presence {
        /// The channel.
        channel: String,
        /// One entry per user.
        members: Vec<Member>,
    },
    /// A page of a channel's stored history.
    History(HistoryPage),
    /// What the back end answered an `rpc` call: any JSON.
    Rpc(serde_json::Value),
}

/// An input to the core, with the time it happened passed to
/// [`Core::handle`](crate::core::Core::handle). Application commands are methods on
/// [`Core`](crate::core::Core) instead, since they return an [`OpId`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Input {
    /// The token the driver obtained for attempt `conn` after [`Output::NeedToken`], or
    /// why the provider failed (the attempt then counts as failed and is retried).
    Token {
        /// The attempt.
        conn: ConnId,
        /// The token, or the provider's error message.
        result: Result<String, String>,
    },
    /// The WebSocket handshake of `conn` succeeded.
    TransportOpened {
        /// The transport.
        conn: ConnId,
    },
    /// A text frame arrived.
    Frame {
        /// The transport.
        conn: ConnId,
        /// The frame.
        text: String,
    },
    /// Something other than a text frame arrived (a WebSocket ping or pong): proof of life
    /// for the heartbeat.
    Activity {
        /// The transport.
        conn: ConnId,
    },
    /// The transport closed, with the close frame's code (`None` without one: treated as
    /// 1006) and reason.
    TransportClosed {
        /// The transport.
        conn: ConnId,
        /// The close code.
        code: Option<u16>,
        /// The close reason.
        reason: String,
    },
    /// The transport failed (could not connect, read or write) and is gone; no close
    /// needs to follow.
    TransportError {
        /// The transport.
        conn: ConnId,
        /// What failed.
        message: String,
    },
    /// A timer set by [`Output::SetTimer`] reached its deadline. Late or stale firings are
    /// harmless: the core checks its own deadlines.
    TimerFired(Timer),
    /// The network is back (a browser's `online` event): reconnect now instead of waiting.
    Online,
    /// The network is gone (a browser's `offline` event): drop the connection and wait for
    /// [`Input::Online`] before trying again.
    Offline,
}

/// An action for the driver, or a result for the application, drained with
/// [`Core::poll_output`](crate::core::Core::poll_output) in order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// Obtain a token (run the application's provider) and answer with [`Input::Token`].
    NeedToken {
        /// The attempt the token is for.
        conn: ConnId,
    },
    /// Open a WebSocket to `url`, offering the subprotocol
    /// [`SUBPROTOCOL`](tidings_protocol::SUBPROTOCOL) (`tidings.v1`); any previous transport
    /// has already been closed by an earlier [`Output::CloseTransport`].
    OpenTransport {
        /// The id to tag this transport's inputs with.
        conn: ConnId,
        /// The URL, token included.
        url: String,
    },
    /// Send a text frame on `conn` (drop it if `conn` is no longer the open transport).
    Send {
        /// The transport.
        conn: ConnId,
        /// The frame.
        text: String,
    },
    /// Close `conn` with this code and reason (or abort it if it is still opening) and
    /// report nothing more about it.
    CloseTransport {
        /// The transport.
        conn: ConnId,
        /// The close code to send.
        code: u16,
        /// The close reason to send.
        reason: String,
    },
    /// Arm `timer` for `deadline` (milliseconds on the caller's clock), replacing any
    /// earlier deadline of the same timer.
    SetTimer {
        /// The timer.
        timer: Timer,
        /// When it should fire.
        deadline: u64,
    },
    /// Disarm `timer`.
    CancelTimer {
        /// The timer.
        timer: Timer,
    },
    /// Something for the application.
    Event(ClientEvent),
    /// An operation finished.
    Completed {
        /// The operation.
        op: OpId,
        /// Its result.
        result: Result<Completion, ClientError>,
    },
}
