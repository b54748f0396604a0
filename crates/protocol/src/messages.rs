//! The `data` of every frame: one struct per request and per server message.

use serde::{Deserialize, Serialize};

use crate::{Code, Delivery, RawEvent};

/// Where a resubscribing client left off: the channel's epoch and the last offset it saw.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recover {
    /// The epoch the client saw; a different epoch means history was lost.
    pub epoch: String,
    /// The last offset the client processed (0 when it saw none).
    pub offset: u64,
}

/// `subscribe`: join a channel, optionally recovering missed publications.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    /// The channel name, e.g. `ticket:42`.
    pub channel: String,
    /// Resume after this position; missed publications follow the reply as `message` frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover: Option<Recover>,
    /// Only these event types are delivered on this subscription; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
}

/// `unsubscribe`: leave a channel.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribe {
    /// The channel to leave.
    pub channel: String,
}

/// `publish`: send an event to every subscriber of a channel.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    /// The target channel.
    pub channel: String,
    /// The event.
    pub event: RawEvent,
    /// Override the event type's default delivery class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
}

/// `history`: read stored publications of a channel, a page at a time.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The channel.
    pub channel: String,
    /// Only publications after this offset, oldest first (paging forward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// Only publications before this offset; without `since`, the newest ones before it
    /// (paging back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// At most this many (the server caps it at 1000; 100 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `ack`: the client processed every publication of `channel` up to `offset`. For the
/// personal `user:{id}` channel the server remembers it per device, and the next connection
/// of that device starts its inbox right after it.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The channel (`user:{id}`).
    pub channel: String,
    /// The channel's epoch the offset belongs to.
    pub epoch: String,
    /// The last processed offset.
    pub offset: u64,
}

/// `rpc`: a call to the application's back end (its RPC proxy, or the embedding app's
/// `on_rpc` hook), answered by `reply {kind: "rpc", data}` or an `error`: 4004 for a method
/// nobody answers, 4003 when the back end refuses, 4503 when it is down or too slow
/// (retryable).
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rpc {
    /// The method, e.g. `motivation_requested`: 1 to 128 bytes, no control characters.
    pub method: String,
    /// Its arguments, any JSON.
    #[serde(default)]
    #[cfg_attr(feature = "ts", tsify(type = "unknown"))]
    pub data: serde_json::Value,
}

/// The answer to `history`.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The channel.
    pub channel: String,
    /// The channel's epoch.
    pub epoch: String,
    /// The channel's latest offset.
    pub offset: u64,
    /// The publications, oldest first.
    pub publications: Vec<MessageBody>,
}

/// A request that names only a channel: `typing` and `presence`.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRef {
    /// The channel.
    pub channel: String,
}

/// A channel the server subscribed the connection to by itself (the personal `user:{id}`
/// channel, or the channel bound by the route), with its position.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelPosition {
    /// The channel.
    pub channel: String,
    /// Its current epoch.
    pub epoch: String,
    /// Its latest offset (0 when nothing was published yet); for the personal channel, the
    /// offset its offline inbox starts after (what follows `connected` is what came since).
    pub offset: u64,
    /// Personal channel only: whether the inbox that follows `connected` holds everything
    /// this device missed (`false`: retention or the server's recovery limit cut it short,
    /// or the epoch changed; reload older state through `history` from `history_start`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// When not recovered: the oldest offset still stored, where history starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_start: Option<u64>,
}

/// `connected`: the first frame of every accepted connection.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connected {
    /// Unique id of this connection.
    pub session_id: String,
    /// The authenticated user (the token's `sub`).
    pub user_id: String,
    /// The protocol major version spoken on this connection.
    pub protocol: u32,
    /// The server sends a WebSocket ping this often; a client that hears nothing for
    /// `heartbeat_ms + heartbeat_timeout_ms` should reconnect.
    pub heartbeat_ms: u64,
    /// Grace period after a missed heartbeat.
    pub heartbeat_timeout_ms: u64,
    /// The largest frame the server accepts, in bytes.
    pub max_frame_bytes: usize,
    /// Channels joined automatically, with their positions.
    pub subscriptions: Vec<ChannelPosition>,
}

/// `error`: a request failed, or the server warns before closing.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code; see [`Code`].
    pub code: Code,
    /// Human-readable explanation.
    pub message: String,
}

/// `message`: one publication delivered to a subscriber.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageBody {
    /// The channel it was published to (`broadcast` for [`broadcast`](crate) events).
    pub channel: String,
    /// Position in the channel, gap-free and increasing. Absent for ephemeral publications,
    /// which are neither stored nor recoverable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The channel's epoch; offsets are comparable only within one epoch.
    pub epoch: String,
    /// Server time of publication, milliseconds since the Unix epoch.
    pub ts: u64,
    /// The publishing user, when a user published it (absent for back-end publications).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The event.
    pub event: RawEvent,
}

/// `user_joined` / `user_left`: presence changes in a channel.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceChange {
    /// The channel.
    pub channel: String,
    /// The user who joined (first connection) or left (last connection).
    pub user_id: String,
}

/// `typing` from the server: another member is typing.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingNotice {
    /// The channel.
    pub channel: String,
    /// Who is typing.
    pub user_id: String,
}

/// `shutdown`: the server is going away; reconnect after the given delay.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shutdown {
    /// Why (e.g. `restart`).
    pub reason: String,
    /// Jittered per connection so clients do not reconnect all at once.
    pub reconnect_after_ms: u64,
}

/// One member of a channel in a presence reply.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The user.
    pub user_id: String,
    /// How many of the user's connections are in the channel.
    pub connections: u32,
}

/// `reply`: the successful result of the request with the same `id`.
///
/// `kind` names the request it answers, so a reply decodes without knowing the request.
///
/// (`history` replies carry publications whose events are raw JSON, which serde cannot read
/// through an internally tagged enum; [`ServerFrame::decode`](crate::ServerFrame::decode)
/// reads that kind on its own.)
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reply {
    /// Answer to `subscribe`.
    Subscribe {
        /// The channel joined.
        channel: String,
        /// The channel's epoch.
        epoch: String,
        /// The channel's latest offset when the subscription started.
        offset: u64,
        /// With `recover`: whether every missed publication follows this reply
        /// (`false`: history did not reach back far enough or the epoch changed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// With `recover`: how many missed publications follow this reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        missed: Option<u64>,
        /// When not recovered: the oldest offset still stored, where history starts
        /// (absent when nothing is stored).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        history_start: Option<u64>,
    },
    /// Answer to `unsubscribe`.
    Unsubscribe {
        /// The channel left.
        channel: String,
    },
    /// Answer to `publish`.
    Publish {
        /// The channel.
        channel: String,
        /// The publication's offset (absent for ephemeral publications).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// The channel's epoch.
        epoch: String,
        /// How many connections on this node it was queued for.
        delivered: u64,
    },
    /// Answer to `presence`.
    Presence {
        /// The channel.
        channel: String,
        /// Its members, one entry per user.
        members: Vec<Member>,
    },
    /// Answer to `typing` (only when the request carried an `id`).
    Typing {
        /// The channel.
        channel: String,
    },
    /// Answer to `history`.
    #[serde(skip_deserializing)]
    History(HistoryPage),
    /// Answer to `ack` (only when the request carried an `id`).
    Ack {
        /// The channel.
        channel: String,
        /// The acknowledged offset.
        offset: u64,
    },
    /// Answer to `rpc`: what the back end returned.
    Rpc {
        /// Any JSON.
        #[serde(default)]
        #[cfg_attr(feature = "ts", tsify(type = "unknown"))]
        data: serde_json::Value,
    },
}

/// Anchors this module's TypeScript declarations in a WebAssembly link; see [`crate::ts::link`].
#[cfg(feature = "ts")]
#[inline(never)]
pub(crate) fn ts_link() -> usize {
    <Member as tsify::Tsify>::DECL.len()
}
