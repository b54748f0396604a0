//! Events: the application payload carried by publications, typed in Rust and raw on the wire.
//!
//! On the wire an event is `{"type": "...", "data": {...}}`. The server forwards events it
//! does not know without looking inside ([`RawEvent`] keeps `data` as the original JSON
//! text), and applications get compile-time types for their own events by implementing
//! [`Event`] (or with the [`event!`](crate::event!) macro).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// How hard the server tries to deliver an event to a slow client.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Must-deliver: never dropped. If a client cannot keep up, its connection is closed
    /// with 4009 and it recovers the publication from history when it reconnects.
    #[default]
    Reliable,
    /// May be coalesced (a newer one replaces a queued older one with the same key) or
    /// dropped under pressure. Progress updates and typing indicators are ephemeral.
    Ephemeral,
}

impl Delivery {
    /// `true` for [`Delivery::Ephemeral`].
    pub fn is_ephemeral(self) -> bool {
        self == Delivery::Ephemeral
    }
}

/// An application event type with a compile-time payload.
///
/// Implement it for your own payloads (or use [`event!`](crate::event!)) and every Tidings
/// API that takes or yields events becomes typed for it:
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tidings_protocol::{Event, RawEvent};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// struct InvoicePaid { invoice: u64, cents: u64 }
/// tidings_protocol::event!(InvoicePaid, "invoice_paid");
///
/// let raw = RawEvent::new(&InvoicePaid { invoice: 7, cents: 1200 }).unwrap();
/// assert_eq!(raw.kind(), "invoice_paid");
/// assert_eq!(raw.decode::<InvoicePaid>().unwrap().unwrap().cents, 1200);
/// ```
pub trait Event: Serialize + DeserializeOwned {
    /// The event's `type` on the wire (snake_case by convention).
    const TYPE: &'static str;
    /// The delivery class the server applies when nothing else is said.
    const DELIVERY: Delivery = Delivery::Reliable;
}

/// Implements [`Event`] for a type: `event!(MyPayload, "my_payload")`, optionally followed by
/// `, ephemeral` for events that may be coalesced or dropped under pressure.
#[macro_export]
macro_rules! event {
    ($ty:ty, $name:literal) => {
        impl $crate::Event for $ty {
            const TYPE: &'static str = $name;
        }
    };
    ($ty:ty, $name:literal, ephemeral) => {
        impl $crate::Event for $ty {
            const TYPE: &'static str = $name;
            const DELIVERY: $crate::Delivery = $crate::Delivery::Ephemeral;
        }
    };
}

/// An event as it travels: its type name and its data, kept as the original JSON text.
///
/// The server never re-encodes `data`; it validates it only for the standard event types.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawEvent {
    /// The event type name, e.g. `notification` or an application's own.
    #[serde(rename = "type")]
    kind: String,
    /// The payload; `null` when the frame had none.
    #[serde(default = "null_value")]
    data: Box<RawValue>,
}

fn null_value() -> Box<RawValue> {
    // `null` is valid JSON, so this cannot fail; the fallback keeps the function total.
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| Box::<RawValue>::default())
}

impl PartialEq for RawEvent {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.data.get() == other.data.get()
    }
}

impl RawEvent {
    /// Encodes a typed event.
    pub fn new<E: Event>(event: &E) -> Result<RawEvent, serde_json::Error> {
        Ok(RawEvent {
            kind: E::TYPE.to_owned(),
            data: serde_json::value::to_raw_value(event)?,
        })
    }

    /// Builds an event from a type name and any serializable payload (for events without a
    /// Rust type, e.g. forwarded from another service).
    pub fn from_parts(
        kind: impl Into<String>,
        data: &impl Serialize,
    ) -> Result<RawEvent, serde_json::Error> {
        Ok(RawEvent {
            kind: kind.into(),
            data: serde_json::value::to_raw_value(data)?,
        })
    }

    /// The event type name.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The payload as JSON text.
    pub fn data_json(&self) -> &str {
        self.data.get()
    }

    /// Decodes the payload as `E` when the type name is `E::TYPE`; `None` for other types.
    pub fn decode<E: Event>(&self) -> Option<Result<E, serde_json::Error>> {
        (self.kind == E::TYPE).then(|| serde_json::from_str(self.data.get()))
    }

    /// The delivery class of the standard event types; [`Delivery::Reliable`] for others.
    pub fn default_delivery(&self) -> Delivery {
        match self.kind.as_str() {
            UploadProgress::TYPE => UploadProgress::DELIVERY,
            _ => Delivery::Reliable,
        }
    }

    /// Checks the payload of the standard event types against their Rust types, so a
    /// malformed `notification` is refused at the door instead of breaking every client.
    /// Application-defined types pass unchecked.
    pub fn validate_standard(&self) -> Result<(), serde_json::Error> {
        fn check<E: Event>(data: &RawValue) -> Result<(), serde_json::Error> {
            serde_json::from_str::<E>(data.get()).map(drop)
        }
        match self.kind.as_str() {
            Notification::TYPE => check::<Notification>(&self.data),
            UploadProgress::TYPE => check::<UploadProgress>(&self.data),
            AnalysisStatus::TYPE => check::<AnalysisStatus>(&self.data),
            ChatMessage::TYPE => check::<ChatMessage>(&self.data),
            _ => Ok(()),
        }
    }

    /// A key under which a newer ephemeral event replaces an older queued one: the type
    /// plus the payload's `id` when it has one (so two uploads' progress never merge).
    pub fn coalesce_key(&self) -> String {
        #[derive(Deserialize)]
        struct WithId<'a> {
            #[serde(borrow)]
            id: Option<&'a RawValue>,
        }
        let id = serde_json::from_str::<WithId<'_>>(self.data.get())
            .ok()
            .and_then(|w| w.id)
            .map(RawValue::get)
            .unwrap_or("");
        format!("{}\u{0}{}", self.kind, id)
    }
}

/// Severity of a [`Notification`].
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Neutral information (the default).
    #[default]
    Info,
    /// Something finished well.
    Success,
    /// Attention needed, nothing failed.
    Warning,
    /// Something failed.
    Error,
}

/// A user-facing notification: a title, a message and a level, shown as a toast or a list item.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Notification {
    /// Short headline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The text shown to the user.
    pub message: String,
    /// Severity; `info` when absent.
    #[serde(default)]
    pub level: Level,
    /// Application data attached to the notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(type = "unknown"))]
    pub data: Option<serde_json::Value>,
}
event!(Notification, "notification");

/// Progress of an upload; ephemeral, so a slow client only sees the latest value per `id`.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadProgress {
    /// The upload this progress belongs to.
    pub id: String,
    /// Percent done, 0–100.
    pub progress: f64,
    /// Application status word, e.g. `uploading`, `processing`, `done`.
    pub status: String,
}
event!(UploadProgress, "upload_progress", ephemeral);

/// Progress and outcome of a long-running job (an analysis, an export), pushed by a back-end worker.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisStatus {
    /// The job this status belongs to.
    pub id: String,
    /// Application status word, e.g. `started`, `running`, `completed`, `failed`.
    pub status: String,
    /// Percent done, 0–100.
    pub progress: f64,
    /// The job's result once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(type = "unknown"))]
    pub result: Option<serde_json::Value>,
    /// Why the job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether a failed job may be retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}
event!(AnalysisStatus, "analysis_status");

/// A chat message in a room, such as a support ticket's conversation.
#[cfg_attr(feature = "ts", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Client-chosen id, so a resent message can be recognised.
    pub id: String,
    /// The text.
    pub content: String,
    /// Application data (attachments, mentions, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", tsify(type = "unknown"))]
    pub metadata: Option<serde_json::Value>,
}
event!(ChatMessage, "chat_message");

/// Anchors this module's TypeScript declarations in a WebAssembly link; see [`crate::ts::link`].
#[cfg(feature = "ts")]
#[inline(never)]
pub(crate) fn ts_link() -> usize {
    <Notification as tsify::Tsify>::DECL.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_round_trip_and_type_mismatch() -> Result<(), serde_json::Error> {
        let n = Notification {
            title: Some("Done".into()),
            message: "Analysis complete".into(),
            level: Level::Success,
            data: None,
        };
        let raw = RawEvent::new(&n)?;
        assert_eq!(raw.kind(), "notification");
        assert_eq!(raw.decode::<Notification>().transpose()?, Some(n));
        assert!(raw.decode::<ChatMessage>().is_none());
        Ok(())
    }

    #[test]
    fn standard_payloads_are_validated_and_custom_ones_are_not() -> Result<(), serde_json::Error> {
        let bad: RawEvent =
            serde_json::from_str(r#"{"type":"notification","data":{"level":"loud"}}"#)?;
        assert!(bad.validate_standard().is_err());
        let custom: RawEvent = serde_json::from_str(r#"{"type":"anything","data":[1,2]}"#)?;
        assert!(custom.validate_standard().is_ok());
        let missing: RawEvent = serde_json::from_str(r#"{"type":"ping_me"}"#)?;
        assert_eq!(missing.data_json(), "null");
        Ok(())
    }

    #[test]
    fn coalesce_key_separates_ids() -> Result<(), serde_json::Error> {
        let a = RawEvent::new(&UploadProgress {
            id: "a".into(),
            progress: 1.0,
            status: "x".into(),
        })?;
        let a2 = RawEvent::new(&UploadProgress {
            id: "a".into(),
            progress: 2.0,
            status: "x".into(),
        })?;
        let b = RawEvent::new(&UploadProgress {
            id: "b".into(),
            progress: 1.0,
            status: "x".into(),
        })?;
        assert_eq!(a.coalesce_key(), a2.coalesce_key());
        assert_ne!(a.coalesce_key(), b.coalesce_key());
        assert_eq!(a.default_delivery(), Delivery::Ephemeral);
        Ok(())
    }
}
