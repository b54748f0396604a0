//! Plain-data views of what the client hands to applications that are not Rust (the
//! browser driver's JavaScript handlers and promises), for the events whose shape there is
//! not one of the core's own types. They serialize (serde) to that shape; on wasm32 their
//! TypeScript declarations are generated from these definitions (`tsify`).
//!
//! Event payloads are handed on as JSON: the standard event types are decoded into their
//! Rust types and encoded again ([`event_data`]), so defaults (a notification's `level`) are
//! filled in and a malformed payload is reported instead of handed on.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;
use tidings_protocol::messages::{HistoryPage, PresenceChange};
use tidings_protocol::{
    AnalysisStatus, ChatMessage, Event, Notification, RawEvent, UploadProgress,
};

use super::Publication;
use crate::ClientError;

/// Where a publication came from: what accompanies its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct PublicationMeta<'a> {
    /// The event type.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The channel it was published to.
    pub channel: &'a str,
    /// Its position in the channel (absent for ephemeral publications).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The channel's epoch.
    pub epoch: &'a str,
    /// Server time of publication, milliseconds since the Unix epoch.
    pub ts: u64,
    /// The publishing user (absent for back-end publications).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<&'a str>,
}

impl<'a> PublicationMeta<'a> {
    /// The meta of `publication`.
    pub fn of(publication: &'a Publication) -> PublicationMeta<'a> {
        PublicationMeta {
            kind: publication.event.kind(),
            channel: &publication.channel,
            offset: publication.offset,
            epoch: &publication.epoch,
            ts: publication.ts,
            sender: publication.sender.as_deref(),
        }
    }
}

/// A presence change, tagged with what happened (`user_joined`, `user_left`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PresenceEvent<'a> {
    /// A user's first connection joined the channel.
    UserJoined(&'a PresenceChange),
    /// A user's last connection left the channel.
    UserLeft(&'a PresenceChange),
}

/// A subscription the server refused to restore
/// ([`ClientEvent::Unsubscribed`](super::ClientEvent::Unsubscribed)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct Unsubscribed<'a> {
    /// The channel (the client forgot it).
    pub channel: &'a str,
    /// The server's refusal.
    #[cfg_attr(target_arch = "wasm32", tsify(type = "ErrorInfo"))]
    pub error: &'a ClientError,
}

/// A page of a channel's stored history, oldest first, each publication as an event and
/// its meta.
#[derive(Debug, Serialize)]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct HistoryResult<'a> {
    /// The channel.
    pub channel: &'a str,
    /// The channel's epoch.
    pub epoch: &'a str,
    /// The channel's latest offset.
    pub offset: u64,
    /// The publications.
    pub publications: Vec<HistoryItem<'a>>,
}

/// One publication of a [`HistoryResult`].
#[derive(Debug, Serialize)]
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
pub struct HistoryItem<'a> {
    /// `{type, data}`, the payload as [`event_data`] gives it.
    #[cfg_attr(target_arch = "wasm32", tsify(type = "RawEvent"))]
    pub event: EventObject<'a>,
    /// Where it came from.
    pub meta: PublicationMeta<'a>,
}

/// An event as `{type, data}`, the payload as [`event_data`] gives it.
#[derive(Debug, Serialize)]
pub struct EventObject<'a> {
    /// The event type.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The payload.
    pub data: Box<RawValue>,
}

impl<'a> HistoryResult<'a> {
    /// The view of `page`; fails when a standard event's payload does not decode.
    pub fn of(page: &'a HistoryPage) -> Result<HistoryResult<'a>, ClientError> {
        let publications = page
            .publications
            .iter()
            .map(|publication| {
                let data = event_data(&publication.event)?.into_owned();
                let data =
                    RawValue::from_string(data).map_err(|e| ClientError::Decode(e.to_string()))?;
                Ok(HistoryItem {
                    event: EventObject {
                        kind: publication.event.kind(),
                        data,
                    },
                    meta: PublicationMeta::of(publication),
                })
            })
            .collect::<Result<_, ClientError>>()?;
        Ok(HistoryResult {
            channel: &page.channel,
            epoch: &page.epoch,
            offset: page.offset,
            publications,
        })
    }
}

/// An event's payload as JSON: for the standard event types decoded into their Rust type
/// and encoded again (defaults filled in; an error when it does not decode), for other
/// types as it came.
pub fn event_data(event: &RawEvent) -> Result<Cow<'_, str>, ClientError> {
    fn typed<E: Event>(event: &RawEvent) -> Option<Result<Cow<'_, str>, ClientError>> {
        event.decode::<E>().map(|decoded| {
            let value =
                decoded.map_err(|e| ClientError::Decode(format!("{} payload: {e}", E::TYPE)))?;
            serde_json::to_string(&value)
                .map(Cow::Owned)
                .map_err(|e| ClientError::Encode(e.to_string()))
        })
    }
    typed::<Notification>(event)
        .or_else(|| typed::<UploadProgress>(event))
        .or_else(|| typed::<AnalysisStatus>(event))
        .or_else(|| typed::<ChatMessage>(event))
        .unwrap_or_else(|| Ok(Cow::Borrowed(event.data_json())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tidings_protocol::Code;
    use tidings_protocol::messages::MessageBody;

    use super::*;
    use crate::core::{ConnectionEvent, PublishReply, State, Subscribed};

    fn json(value: &impl Serialize) -> String {
        serde_json::to_string(value).unwrap()
    }

    fn publication(kind: &str, data: &str, offset: Option<u64>) -> MessageBody {
        let event = format!(r#"{{"type":"{kind}","data":{data}}}"#);
        MessageBody {
            channel: "room".into(),
            offset,
            epoch: "e1".into(),
            ts: 5,
            sender: None,
            event: serde_json::from_str(&event).unwrap(),
        }
    }

    #[test]
    fn standard_payloads_get_their_defaults_and_others_pass_as_they_came() {
        let note = publication("notification", r#"{"message":"hi"}"#, Some(1));
        let data = event_data(&note.event).unwrap();
        assert!(data.contains(r#""level":"info""#), "{data}");
        let own = publication("invoice_paid", r#"{ "cents" : 5 }"#, Some(2));
        assert_eq!(event_data(&own.event).unwrap(), r#"{ "cents" : 5 }"#);
        let bad = publication("notification", r#"{"message":5}"#, Some(3));
        let error = event_data(&bad.event).unwrap_err();
        assert_eq!(error.kind().name(), "decode");
    }

    #[test]
    fn views_have_the_shapes_the_browser_api_documents() {
        let p = publication("chat_message", r#"{"id":"m","content":"c"}"#, None);
        assert_eq!(
            json(&PublicationMeta::of(&p)),
            r#"{"type":"chat_message","channel":"room","epoch":"e1","ts":5}"#
        );
        let change = PresenceChange {
            channel: "room".into(),
            user_id: "u".into(),
        };
        assert_eq!(
            json(&PresenceEvent::UserLeft(&change)),
            r#"{"type":"user_left","channel":"room","user_id":"u"}"#
        );
        let error = ClientError::Server {
            code: Code::Forbidden,
            message: "no".into(),
        };
        assert_eq!(
            json(&Unsubscribed {
                channel: "room",
                error: &error
            }),
            format!(
                r#"{{"channel":"room","error":{{"kind":"server","message":"{error}","code":4003}}}}"#
            )
        );
        let page = HistoryPage {
            channel: "room".into(),
            epoch: "e1".into(),
            offset: 9,
            publications: vec![publication("notification", r#"{"message":"m"}"#, Some(9))],
        };
        let text = json(&HistoryResult::of(&page).unwrap());
        assert!(
            text.starts_with(r#"{"channel":"room","epoch":"e1","offset":9,"publications":[{"event":{"type":"notification","data":{"#),
            "{text}"
        );
        assert!(text.ends_with(r#""meta":{"type":"notification","channel":"room","offset":9,"epoch":"e1","ts":5}}]}"#), "{text}");
    }

    #[test]
    fn core_types_serialize_as_the_browser_api_documents() {
        assert_eq!(json(&State::Reconnecting), r#""reconnecting""#);
        let delay = Some(std::time::Duration::from_millis(1500));
        let change = ConnectionEvent::Reconnecting { attempt: 2, delay };
        assert_eq!(
            json(&change),
            r#"{"type":"reconnecting","attempt":2,"delay_ms":1500}"#
        );
        let offline = ConnectionEvent::Reconnecting {
            attempt: 2,
            delay: None,
        };
        assert_eq!(json(&offline), r#"{"type":"reconnecting","attempt":2}"#);
        let closed = ConnectionEvent::Closed {
            code: Code::Normal,
            reason: "bye".into(),
        };
        assert_eq!(
            json(&closed),
            r#"{"type":"closed","code":1000,"reason":"bye"}"#
        );
        let error = ConnectionEvent::Error(ClientError::NotConnected);
        assert_eq!(
            json(&error),
            r#"{"type":"error","kind":"not_connected","message":"not connected"}"#
        );
        let info = Subscribed {
            channel: "c".into(),
            epoch: "e".into(),
            offset: 3,
            recovered: Some(true),
            missed: None,
        };
        assert_eq!(
            json(&info),
            r#"{"channel":"c","epoch":"e","offset":3,"recovered":true}"#
        );
        let reply = PublishReply {
            channel: "c".into(),
            offset: None,
            epoch: "e".into(),
            delivered: 2,
        };
        assert_eq!(json(&reply), r#"{"channel":"c","epoch":"e","delivered":2}"#);
    }

    #[test]
    fn settings_keep_the_defaults_they_do_not_name() {
        use crate::core::{Auth, Backoff, Config};
        use std::time::Duration;

        let config: Config = serde_json::from_str(
            r#"{"token":"t","backoff":{"minMs":100},"requestTimeoutMs":5000,"unknown":1}"#,
        )
        .unwrap();
        let defaults = Config::new("");
        assert_eq!(config.auth, Auth::Token("t".into()));
        assert_eq!(config.request_timeout, Duration::from_secs(5));
        assert_eq!(config.connect_timeout, defaults.connect_timeout);
        assert_eq!(config.publish_queue, defaults.publish_queue);
        assert_eq!(config.backoff.min, Duration::from_millis(100));
        assert_eq!(config.backoff.max, Backoff::default().max);
        assert_eq!(config.backoff.factor, Backoff::default().factor);
        let empty: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, defaults);
        let wrong = serde_json::from_str::<Config>(r#"{"requestTimeoutMs":"soon"}"#);
        assert!(wrong.is_err());
    }
}
