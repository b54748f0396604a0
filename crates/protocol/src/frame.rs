//! Frame envelopes: `{"type": "...", "id": N?, "data": {...}?}` in both directions.
//!
//! Decoding happens in two steps so that a frame with a valid envelope but bad `data` still
//! yields its request `id`: the server answers with an `error` that carries the id and the
//! connection stays open.

use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::Code;
use crate::messages::{
    Ack, ChannelRef, Connected, ErrorBody, History, HistoryPage, MessageBody, PresenceChange,
    Publish, Reply, Rpc, Shutdown, Subscribe, TypingNotice, Unsubscribe,
};

/// A request from client to server.
///
/// Deliberately exhaustive: the server matches every request type without a catch-all arm,
/// so a new request type is a compile error at every place that must handle it.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `ping`: answered by `pong`.
    Ping,
    /// `subscribe`.
    Subscribe(Subscribe),
    /// `unsubscribe`.
    Unsubscribe(Unsubscribe),
    /// `publish`.
    Publish(Publish),
    /// `typing`: tell the other members of a channel.
    Typing(ChannelRef),
    /// `presence`: list a channel's members.
    Presence(ChannelRef),
    /// `history`: read stored publications.
    History(History),
    /// `ack`: processed up to an offset (the personal channel's inbox).
    Ack(Ack),
    /// `rpc`: a call answered by the application's back end.
    Rpc(Rpc),
}

/// A frame from client to server: a request and its optional id.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    /// Chosen by the client; every reply or error to this request carries it back.
    pub id: Option<u64>,
    /// The request.
    pub message: ClientMessage,
}

/// A message from server to client.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerMessage {
    /// `connected`: first frame of a connection.
    Connected(Connected),
    /// `pong`: answer to `ping`.
    Pong,
    /// `reply`: success of the request `id`.
    Reply(Reply),
    /// `error`: failure of the request `id`, or a warning.
    Error(ErrorBody),
    /// `message`: a publication.
    Message(MessageBody),
    /// `user_joined`.
    UserJoined(PresenceChange),
    /// `user_left`.
    UserLeft(PresenceChange),
    /// `typing`.
    Typing(TypingNotice),
    /// `shutdown`.
    Shutdown(Shutdown),
}

/// A frame from server to client.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerFrame {
    /// The id of the request this frame answers, if any.
    pub id: Option<u64>,
    /// The message.
    pub message: ServerMessage,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// Not JSON, or not a JSON object.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// No `type` field, or it is not a string.
    #[error("the frame has no string \"type\" field")]
    MissingType,
    /// `id` is present but not an unsigned integer.
    #[error("\"id\" must be an unsigned integer")]
    InvalidId,
    /// `type` names no frame of this protocol version.
    #[error("unknown frame type \"{0}\"")]
    UnknownType(String),
    /// `data` does not match the frame type.
    #[error("invalid data for \"{kind}\": {reason}")]
    InvalidData {
        /// The frame type.
        kind: String,
        /// What serde said.
        reason: String,
    },
}

/// A decode failure, with the request id when the envelope was readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct DecodeError {
    /// The request id, so the error reply can be matched to its request.
    pub id: Option<u64>,
    /// What was wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// Every decode failure is a 4400 `bad_frame`.
    pub fn code(&self) -> Code {
        Code::BadFrame
    }

    /// The `error` frame that answers this failure.
    pub fn to_error_frame(&self) -> ServerFrame {
        ServerFrame::error(self.id, Code::BadFrame, self.kind.to_string())
    }
}

/// The envelope with every field still raw, so each can be checked on its own.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Reads the envelope: (id, type, data).
fn open(text: &str) -> Result<(Option<u64>, String, Option<&RawValue>), DecodeError> {
    // serde would also read a struct from a JSON array; frames are objects only.
    if !text.trim_start().starts_with('{') {
        return Err(DecodeError {
            id: None,
            kind: DecodeErrorKind::Json("a frame must be a JSON object".to_owned()),
        });
    }
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|e| DecodeError {
        id: None,
        kind: DecodeErrorKind::Json(e.to_string()),
    })?;
    let id = match envelope.id {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => Some(
            serde_json::from_str::<u64>(raw.get()).map_err(|_| DecodeError {
                id: None,
                kind: DecodeErrorKind::InvalidId,
            })?,
        ),
    };
    let kind = envelope
        .kind
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        .ok_or(DecodeError {
            id,
            kind: DecodeErrorKind::MissingType,
        })?;
    Ok((id, kind, envelope.data))
}

/// Decodes `data` as `T`; a missing `data` is treated as `null` (so a type whose fields are
/// all optional needs none).
fn data<T: DeserializeOwned>(
    id: Option<u64>,
    kind: &str,
    data: Option<&RawValue>,
) -> Result<T, DecodeError> {
    let text = data.map_or("null", RawValue::get);
    let parsed = if text == "null" {
        // Let structs with only optional fields accept a missing `data`.
        serde_json::from_str::<T>("{}")
    } else {
        serde_json::from_str::<T>(text)
    };
    parsed.map_err(|e| DecodeError {
        id,
        kind: DecodeErrorKind::InvalidData {
            kind: kind.to_owned(),
            reason: if text == "null" {
                format!("missing \"data\" ({e})")
            } else {
                e.to_string()
            },
        },
    })
}

/// Decodes a `reply`'s data: `history` pages directly (their raw events cannot pass through
/// serde's buffering of internally tagged enums), every other kind through [`Reply`].
fn reply(id: Option<u64>, raw: Option<&RawValue>) -> Result<Reply, DecodeError> {
    #[derive(Deserialize)]
    struct Kind {
        kind: String,
    }
    let is_history = raw
        .and_then(|r| serde_json::from_str::<Kind>(r.get()).ok())
        .is_some_and(|k| k.kind == "history");
    if is_history {
        data::<HistoryPage>(id, "reply", raw).map(Reply::History)
    } else {
        data(id, "reply", raw)
    }
}

impl ClientFrame {
    /// A frame with a request id.
    pub fn request(id: u64, message: ClientMessage) -> ClientFrame {
        ClientFrame {
            id: Some(id),
            message,
        }
    }

    /// Decodes a text frame.
    pub fn decode(text: &str) -> Result<ClientFrame, DecodeError> {
        let (id, kind, raw) = open(text)?;
        let message = match kind.as_str() {
            "ping" => ClientMessage::Ping,
            "subscribe" => ClientMessage::Subscribe(data(id, &kind, raw)?),
            "unsubscribe" => ClientMessage::Unsubscribe(data(id, &kind, raw)?),
            "publish" => ClientMessage::Publish(data(id, &kind, raw)?),
            "typing" => ClientMessage::Typing(data(id, &kind, raw)?),
            "presence" => ClientMessage::Presence(data(id, &kind, raw)?),
            "history" => ClientMessage::History(data(id, &kind, raw)?),
            "ack" => ClientMessage::Ack(data(id, &kind, raw)?),
            "rpc" => ClientMessage::Rpc(data(id, &kind, raw)?),
            _ => {
                return Err(DecodeError {
                    id,
                    kind: DecodeErrorKind::UnknownType(kind),
                });
            }
        };
        Ok(ClientFrame { id, message })
    }

    /// Encodes as JSON text.
    pub fn encode(&self) -> String {
        encode_infallible(self)
    }

    /// The frame's `type` name.
    pub fn kind(&self) -> &'static str {
        match &self.message {
            ClientMessage::Ping => "ping",
            ClientMessage::Subscribe(_) => "subscribe",
            ClientMessage::Unsubscribe(_) => "unsubscribe",
            ClientMessage::Publish(_) => "publish",
            ClientMessage::Typing(_) => "typing",
            ClientMessage::Presence(_) => "presence",
            ClientMessage::History(_) => "history",
            ClientMessage::Ack(_) => "ack",
            ClientMessage::Rpc(_) => "rpc",
        }
    }
}

impl ServerFrame {
    /// A frame that answers nothing in particular.
    pub fn push(message: ServerMessage) -> ServerFrame {
        ServerFrame { id: None, message }
    }

    /// An `error` frame.
    pub fn error(id: Option<u64>, code: Code, message: impl Into<String>) -> ServerFrame {
        ServerFrame {
            id,
            message: ServerMessage::Error(ErrorBody {
                code,
                message: message.into(),
            }),
        }
    }

    /// Decodes a text frame.
    pub fn decode(text: &str) -> Result<ServerFrame, DecodeError> {
        let (id, kind, raw) = open(text)?;
        let message = match kind.as_str() {
            "connected" => ServerMessage::Connected(data(id, &kind, raw)?),
            "pong" => ServerMessage::Pong,
            "reply" => ServerMessage::Reply(reply(id, raw)?),
            "error" => ServerMessage::Error(data(id, &kind, raw)?),
            "message" => ServerMessage::Message(data(id, &kind, raw)?),
            "user_joined" => ServerMessage::UserJoined(data(id, &kind, raw)?),
            "user_left" => ServerMessage::UserLeft(data(id, &kind, raw)?),
            "typing" => ServerMessage::Typing(data(id, &kind, raw)?),
            "shutdown" => ServerMessage::Shutdown(data(id, &kind, raw)?),
            _ => {
                return Err(DecodeError {
                    id,
                    kind: DecodeErrorKind::UnknownType(kind),
                });
            }
        };
        Ok(ServerFrame { id, message })
    }

    /// Encodes as JSON text.
    pub fn encode(&self) -> String {
        encode_infallible(self)
    }

    /// The frame's `type` name.
    pub fn kind(&self) -> &'static str {
        match &self.message {
            ServerMessage::Connected(_) => "connected",
            ServerMessage::Pong => "pong",
            ServerMessage::Reply(_) => "reply",
            ServerMessage::Error(_) => "error",
            ServerMessage::Message(_) => "message",
            ServerMessage::UserJoined(_) => "user_joined",
            ServerMessage::UserLeft(_) => "user_left",
            ServerMessage::Typing(_) => "typing",
            ServerMessage::Shutdown(_) => "shutdown",
        }
    }
}

/// Every frame type is made of strings, numbers and already-valid raw JSON, so
/// serialization cannot fail; should serde ever disagree, an `error` frame says so rather
/// than a panic.
fn encode_infallible<T: Serialize>(frame: &T) -> String {
    serde_json::to_string(frame).unwrap_or_else(|e| {
        format!(
            r#"{{"type":"error","data":{{"code":4500,"message":{}}}}}"#,
            serde_json::Value::String(format!("encode failed: {e}"))
        )
    })
}

/// Writes `{"type": kind, "id": id?, "data": data?}` in one pass (no intermediate value:
/// the server encodes every publication through here once).
fn write_envelope<S: Serializer, T: Serialize + ?Sized>(
    serializer: S,
    kind: &str,
    id: Option<u64>,
    data: Option<&T>,
) -> Result<S::Ok, S::Error> {
    let len = 1 + usize::from(id.is_some()) + usize::from(data.is_some());
    let mut map = serializer.serialize_map(Some(len))?;
    map.serialize_entry("type", kind)?;
    if let Some(id) = id {
        map.serialize_entry("id", &id)?;
    }
    if let Some(data) = data {
        map.serialize_entry("data", data)?;
    }
    map.end()
}

impl Serialize for ClientFrame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (kind, id) = (self.kind(), self.id);
        match &self.message {
            ClientMessage::Ping => write_envelope::<S, ()>(s, kind, id, None),
            ClientMessage::Subscribe(d) => write_envelope(s, kind, id, Some(d)),
            ClientMessage::Unsubscribe(d) => write_envelope(s, kind, id, Some(d)),
            ClientMessage::Publish(d) => write_envelope(s, kind, id, Some(d)),
            ClientMessage::Typing(d) | ClientMessage::Presence(d) => {
                write_envelope(s, kind, id, Some(d))
            }
            ClientMessage::History(d) => write_envelope(s, kind, id, Some(d)),
            ClientMessage::Ack(d) => write_envelope(s, kind, id, Some(d)),
            ClientMessage::Rpc(d) => write_envelope(s, kind, id, Some(d)),
        }
    }
}

impl Serialize for ServerFrame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (kind, id) = (self.kind(), self.id);
        match &self.message {
            ServerMessage::Connected(d) => write_envelope(s, kind, id, Some(d)),
            ServerMessage::Pong => write_envelope::<S, ()>(s, kind, id, None),
            ServerMessage::Reply(d) => write_envelope(s, kind, id, Some(d)),
            ServerMessage::Error(d) => write_envelope(s, kind, id, Some(d)),
            ServerMessage::Message(d) => write_envelope(s, kind, id, Some(d)),
            ServerMessage::UserJoined(d) | ServerMessage::UserLeft(d) => {
                write_envelope(s, kind, id, Some(d))
            }
            ServerMessage::Typing(d) => write_envelope(s, kind, id, Some(d)),
            ServerMessage::Shutdown(d) => write_envelope(s, kind, id, Some(d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_data_keeps_the_request_id() {
        let err = ClientFrame::decode(r#"{"type":"subscribe","id":7,"data":{}}"#).err();
        let err = err.map(|e| (e.id, matches!(e.kind, DecodeErrorKind::InvalidData { .. })));
        assert_eq!(err, Some((Some(7), true)));
    }

    #[test]
    fn unknown_type_keeps_the_request_id() {
        let err = ClientFrame::decode(r#"{"type":"dance","id":3}"#).err();
        assert_eq!(
            err,
            Some(DecodeError {
                id: Some(3),
                kind: DecodeErrorKind::UnknownType("dance".into())
            })
        );
    }

    #[test]
    fn garbage_and_bad_ids_are_errors_without_id() {
        assert!(matches!(
            ClientFrame::decode("not json").map_err(|e| e.kind),
            Err(DecodeErrorKind::Json(_))
        ));
        assert!(matches!(
            ClientFrame::decode("[1,2]").map_err(|e| e.kind),
            Err(DecodeErrorKind::Json(_))
        ));
        assert!(matches!(
            ClientFrame::decode(r#"{"type":"ping","id":-1}"#).map_err(|e| e.kind),
            Err(DecodeErrorKind::InvalidId)
        ));
        assert!(matches!(
            ClientFrame::decode(r#"{"id":1}"#).map_err(|e| (e.id, e.kind)),
            Err((Some(1), DecodeErrorKind::MissingType))
        ));
    }

    #[test]
    fn ping_without_data_encodes_minimally() -> Result<(), DecodeError> {
        let frame = ClientFrame::decode(r#"{"type":"ping","id":1}"#)?;
        assert_eq!(frame.encode(), r#"{"type":"ping","id":1}"#);
        Ok(())
    }
}
