//! Values that cross to JavaScript: the options, the objects handed to handlers and
//! promises, and errors. Every type here derives `Tsify`, so its TypeScript declaration is
//! generated from the same definition serde uses; objects cross with serde-wasm-bindgen's
//! JSON-compatible serializer (maps become plain objects, `None` fields are left out).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tsify::Tsify;
use wasm_bindgen::{JsCast, JsValue};

use tidings_protocol::messages::{Connected, Member, PresenceChange};
use tidings_protocol::{
    AnalysisStatus, ChatMessage, Delivery, Event, Notification, RawEvent, UploadProgress,
};

use crate::ClientError;
use crate::core::{self, Backoff, Config, ConnectionEvent, Publication, State};

/// Plain data for JavaScript: serde-wasm-bindgen with the JSON-compatible settings.
pub(super) fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, ClientError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| ClientError::Encode(e.to_string()))
}

/// The settings of a client (`ClientOptions` adds `getToken`, which is a function).
#[derive(Debug, Default, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub(super) struct ClientSettings {
    /// The same token on every attempt (put in the URL as `?token=`).
    #[tsify(optional)]
    token: Option<String>,
    /// Reconnect delays.
    #[tsify(optional)]
    backoff: Option<BackoffSettings>,
    /// How long a request waits for its answer on a live connection (default 10 000 ms).
    #[tsify(optional)]
    request_timeout_ms: Option<u64>,
    /// How long one connect attempt may take (default 10 000 ms).
    #[tsify(optional)]
    connect_timeout_ms: Option<u64>,
    /// How many publishes made while disconnected are kept (default 1000).
    #[tsify(optional)]
    publish_queue: Option<usize>,
}

/// Reconnect delays: full jitter between 0 and `min(maxMs, minMs * factor^n)`.
#[derive(Debug, Default, Deserialize, Tsify)]
#[serde(rename_all = "camelCase")]
pub(super) struct BackoffSettings {
    /// The cap of the first retry's delay (default 500).
    #[tsify(optional)]
    min_ms: Option<u64>,
    /// The largest delay (default 20 000).
    #[tsify(optional)]
    max_ms: Option<u64>,
    /// Growth of the cap per retry (default 2).
    #[tsify(optional)]
    factor: Option<f64>,
    /// Give up after this many failed reconnect attempts in a row (default: never).
    #[tsify(optional)]
    max_attempts: Option<u32>,
    /// A connection that lasted this long resets the retry counter (default 5000).
    #[tsify(optional)]
    reset_after_ms: Option<u64>,
}

impl ClientSettings {
    /// Reads the options object (`undefined` and `null` mean the defaults).
    pub(super) fn parse(options: &JsValue) -> Result<ClientSettings, JsValue> {
        if options.is_undefined() || options.is_null() {
            return Ok(ClientSettings::default());
        }
        serde_wasm_bindgen::from_value(options.clone())
            .map_err(|e| type_error(&format!("invalid client options: {e}")))
    }

    /// The core's configuration for `url`.
    pub(super) fn config(self, url: String) -> Config {
        let mut config = Config::new(with_device(url));
        if let Some(token) = self.token {
            config.auth = core::Auth::Token(token);
        }
        if let Some(b) = self.backoff {
            let defaults = Backoff::default();
            let mut backoff = Backoff::new(
                b.min_ms.map_or(defaults.min, Duration::from_millis),
                b.max_ms.map_or(defaults.max, Duration::from_millis),
            );
            backoff.factor = b.factor.unwrap_or(defaults.factor);
            backoff.max_attempts = b.max_attempts;
            backoff.reset_after = b
                .reset_after_ms
                .map_or(defaults.reset_after, Duration::from_millis);
            config.backoff = backoff;
        }
        if let Some(ms) = self.request_timeout_ms {
            config.request_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.connect_timeout_ms {
            config.connect_timeout = Duration::from_millis(ms);
        }
        if let Some(capacity) = self.publish_queue {
            config.publish_queue = capacity;
        }
        config
    }
}

/// Options of one subscription.
#[derive(Debug, Default, Deserialize, Tsify)]
pub(super) struct SubscribeOptions {
    /// Deliver only these event types on this subscription (the first subscribe to a
    /// channel decides).
    #[tsify(optional)]
    pub(super) events: Option<Vec<String>>,
}

/// Options of one publish.
#[derive(Debug, Default, Deserialize, Tsify)]
pub(super) struct PublishOptions {
    /// Override the event type's delivery class.
    #[tsify(optional)]
    pub(super) delivery: Option<Delivery>,
}

/// Reads an optional options object of type `T`.
pub(super) fn parse_options<T: Default + for<'de> Deserialize<'de>>(
    value: &JsValue,
    what: &str,
) -> Result<T, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(T::default());
    }
    serde_wasm_bindgen::from_value(value.clone())
        .map_err(|e| type_error(&format!("invalid {what} options: {e}")))
}

/// An event from JavaScript, `{type: string, data?: any}`, as it goes on the wire.
pub(super) fn raw_event(event: &JsValue) -> Result<RawEvent, ClientError> {
    let text = js_sys::JSON::stringify(event)
        .map_err(|e| ClientError::Encode(message_of(&e)))?
        .as_string()
        .ok_or_else(|| ClientError::Encode("the event is not JSON".to_owned()))?;
    serde_json::from_str(&text)
        .map_err(|e| ClientError::Encode(format!("an event is {{type: string, data?: any}}: {e}")))
}

/// The connection state, as a string.
#[derive(Debug, Clone, Copy, Serialize, Tsify)]
#[serde(rename_all = "snake_case")]
pub(super) enum ConnectionState {
    /// Not started.
    Idle,
    /// An attempt is under way.
    Connecting,
    /// Requests flow.
    Connected,
    /// Waiting for the next attempt (a backoff delay, or the network to come back).
    Reconnecting,
    /// Stopped for good.
    Closed,
}

impl ConnectionState {
    pub(super) fn of(state: State) -> ConnectionState {
        match state {
            State::Idle => ConnectionState::Idle,
            State::Connecting => ConnectionState::Connecting,
            State::Connected => ConnectionState::Connected,
            State::Reconnecting => ConnectionState::Reconnecting,
            State::Closed => ConnectionState::Closed,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            ConnectionState::Idle => "idle",
            ConnectionState::Connecting => "connecting",
            ConnectionState::Connected => "connected",
            ConnectionState::Reconnecting => "reconnecting",
            ConnectionState::Closed => "closed",
        }
    }
}

/// A change of the connection, for `on("state", ...)`.
#[derive(Debug, Serialize, Tsify)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ConnectionChange {
    /// An attempt starts (0: the first; n: the n-th reconnect attempt in a row).
    Connecting {
        /// The attempt number.
        attempt: u32,
    },
    /// The server accepted the connection (the `connected` frame's data).
    Connected(Connected),
    /// A connection or attempt ended.
    Disconnected {
        /// The close code (1006 when the connection dropped without one).
        #[tsify(type = "Code")]
        code: u16,
        /// Why.
        reason: String,
    },
    /// A reconnect is scheduled.
    Reconnecting {
        /// The coming attempt's number.
        attempt: u32,
        /// The wait before it; absent while the network is offline (the attempt starts
        /// when it is back).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[tsify(optional)]
        delay_ms: Option<u64>,
    },
    /// The client stopped reconnecting.
    Closed {
        /// 1000 when the application closed it, else the terminal close code.
        #[tsify(type = "Code")]
        code: u16,
        /// Why.
        reason: String,
    },
    /// Something went wrong without ending the connection (an undecodable frame or
    /// payload, a handler that threw, a failing `getToken`).
    Error(ErrorInfo),
}

impl ConnectionChange {
    pub(super) fn of(event: &ConnectionEvent) -> ConnectionChange {
        match event {
            ConnectionEvent::Connecting { attempt } => {
                ConnectionChange::Connecting { attempt: *attempt }
            }
            ConnectionEvent::Connected(connected) => {
                ConnectionChange::Connected(connected.as_ref().clone())
            }
            ConnectionEvent::Disconnected { code, reason } => ConnectionChange::Disconnected {
                code: code.as_u16(),
                reason: reason.clone(),
            },
            ConnectionEvent::Reconnecting { attempt, delay } => ConnectionChange::Reconnecting {
                attempt: *attempt,
                delay_ms: delay.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            },
            ConnectionEvent::Closed { code, reason } => ConnectionChange::Closed {
                code: code.as_u16(),
                reason: reason.clone(),
            },
            ConnectionEvent::Error(error) => ConnectionChange::Error(ErrorInfo::of(error)),
        }
    }
}

/// What went wrong, as plain data (a rejected promise gets an `Error` with the same
/// `kind` and `code` properties: `TidingsError`).
#[derive(Debug, Serialize, Tsify)]
pub(super) struct ErrorInfo {
    /// Which kind of failure.
    kind: ErrorKind,
    /// A human-readable explanation.
    message: String,
    /// The protocol code, for `server`, `closed` and `disconnected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional, type = "Code")]
    code: Option<u16>,
}

impl ErrorInfo {
    pub(super) fn of(error: &ClientError) -> ErrorInfo {
        ErrorInfo {
            kind: ErrorKind::of(error),
            message: error.to_string(),
            code: error.code().map(|c| c.as_u16()),
        }
    }
}

/// Every way an operation fails (`TidingsError.kind`).
#[derive(Debug, Clone, Copy, Serialize, Tsify)]
#[serde(rename_all = "snake_case")]
pub(super) enum ErrorKind {
    /// The server refused the request (`code` says why).
    Server,
    /// No answer within `requestTimeoutMs`; a publish's outcome is unknown.
    Timeout,
    /// The client is closed (`code`: 1000 after `close()`, else the terminal close code).
    Closed,
    /// The connection dropped before a presence request was answered.
    Disconnected,
    /// The request needs a live connection.
    NotConnected,
    /// The offline publish queue is full.
    QueueFull,
    /// The frame is larger than the server accepts.
    FrameTooLarge,
    /// The channel was unsubscribed before its subscription completed.
    Unsubscribed,
    /// A frame or payload could not be decoded.
    Decode,
    /// An event could not be encoded.
    Encode,
    /// The WebSocket failed.
    Transport,
    /// A handler threw.
    Handler,
    /// `getToken` failed.
    Token,
}

impl ErrorKind {
    fn of(error: &ClientError) -> ErrorKind {
        match error {
            ClientError::Server { .. } => ErrorKind::Server,
            ClientError::Timeout { .. } => ErrorKind::Timeout,
            ClientError::Closed { .. } => ErrorKind::Closed,
            ClientError::Disconnected { .. } => ErrorKind::Disconnected,
            ClientError::NotConnected => ErrorKind::NotConnected,
            ClientError::QueueFull { .. } => ErrorKind::QueueFull,
            ClientError::FrameTooLarge { .. } => ErrorKind::FrameTooLarge,
            ClientError::Unsubscribed { .. } => ErrorKind::Unsubscribed,
            ClientError::Decode(_) => ErrorKind::Decode,
            ClientError::Encode(_) => ErrorKind::Encode,
            ClientError::Transport(_) => ErrorKind::Transport,
            ClientError::Handler(_) => ErrorKind::Handler,
            ClientError::Token(_) => ErrorKind::Token,
        }
    }
}

/// A rejection: a JavaScript `Error` named `TidingsError` with `kind` and `code`.
pub(super) fn error_value(error: &ClientError) -> JsValue {
    let value = js_sys::Error::new(&error.to_string());
    value.set_name("TidingsError");
    let info = ErrorInfo::of(error);
    let kind = to_js(&info.kind).unwrap_or(JsValue::UNDEFINED);
    let _ = js_sys::Reflect::set(&value, &"kind".into(), &kind);
    if let Some(code) = info.code {
        let _ = js_sys::Reflect::set(&value, &"code".into(), &JsValue::from(code));
    }
    value.into()
}

/// A `TypeError` for a bad argument.
pub(super) fn type_error(message: &str) -> JsValue {
    js_sys::TypeError::new(message).into()
}

/// The message of a thrown JavaScript value.
pub(super) fn message_of(value: &JsValue) -> String {
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}

/// Names this browser as a device for the offline inbox: a `device=` query parameter kept
/// in `localStorage` (`tidings.device`), unless the URL already has one or there is no
/// `localStorage` (Node): then the server's default device is used.
fn with_device(url: String) -> String {
    if url.contains("device=") {
        return url;
    }
    let Some(device) = stored_device() else {
        return url;
    };
    let (base, fragment) = url.split_at(url.find('#').unwrap_or(url.len()));
    let separator = if base.contains('?') { "&" } else { "?" };
    format!("{base}{separator}device={device}{fragment}")
}

fn stored_device() -> Option<String> {
    use wasm_bindgen::JsCast;
    const KEY: &str = "tidings.device";
    let storage = js_sys::Reflect::get(&js_sys::global(), &"localStorage".into())
        .ok()
        .filter(JsValue::is_object)?;
    let method = |name: &str| -> Option<js_sys::Function> {
        js_sys::Reflect::get(&storage, &name.into())
            .ok()?
            .dyn_into()
            .ok()
    };
    let existing = method("getItem")?
        .call1(&storage, &KEY.into())
        .ok()
        .and_then(|v| v.as_string())
        .filter(|d| !d.is_empty() && d.len() <= 64);
    if existing.is_some() {
        return existing;
    }
    let random = (js_sys::Math::random() * 2f64.powi(52)) as u64;
    let device = format!("web-{random:013x}");
    method("setItem")?
        .call2(&storage, &KEY.into(), &device.as_str().into())
        .ok()?;
    Some(device)
}

/// Where a publication came from: the second argument of every event handler.
#[derive(Debug, Serialize, Tsify)]
pub(super) struct PublicationMeta {
    /// The event type.
    #[serde(rename = "type")]
    kind: String,
    /// The channel it was published to.
    channel: String,
    /// Its position in the channel (absent for ephemeral publications).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    offset: Option<u64>,
    /// The channel's epoch.
    epoch: String,
    /// Server time of publication, milliseconds since the Unix epoch.
    ts: u64,
    /// The publishing user (absent for back-end publications).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    sender: Option<String>,
}

impl PublicationMeta {
    pub(super) fn of(p: &Publication) -> PublicationMeta {
        PublicationMeta {
            kind: p.event.kind().to_owned(),
            channel: p.channel.clone(),
            offset: p.offset,
            epoch: p.epoch.clone(),
            ts: p.ts,
            sender: p.sender.clone(),
        }
    }
}

/// An event's payload for JavaScript: the standard event types are decoded into their Rust
/// types first (so defaults such as a notification's `level` are filled in and a malformed
/// payload is reported, not handed on); other types are parsed as they are.
pub(super) fn event_data(event: &RawEvent) -> Result<JsValue, ClientError> {
    fn typed<E: Event>(event: &RawEvent) -> Option<Result<JsValue, ClientError>> {
        event.decode::<E>().map(|decoded| {
            let value =
                decoded.map_err(|e| ClientError::Decode(format!("{} payload: {e}", E::TYPE)))?;
            to_js(&value)
        })
    }
    typed::<Notification>(event)
        .or_else(|| typed::<UploadProgress>(event))
        .or_else(|| typed::<AnalysisStatus>(event))
        .or_else(|| typed::<ChatMessage>(event))
        .unwrap_or_else(|| {
            js_sys::JSON::parse(event.data_json()).map_err(|e| ClientError::Decode(message_of(&e)))
        })
}

/// A history page for JavaScript: `{channel, epoch, offset, publications: [{event, meta}]}`,
/// each event's payload as [`event_data`] gives it.
pub(super) fn history(
    page: &tidings_protocol::messages::HistoryPage,
) -> Result<JsValue, ClientError> {
    let publications = js_sys::Array::new();
    for publication in &page.publications {
        let data = event_data(&publication.event)?;
        let item = js_sys::Object::new();
        let _ = js_sys::Reflect::set(
            &item,
            &"event".into(),
            &event_object(&publication.event, &data),
        );
        let _ = js_sys::Reflect::set(
            &item,
            &"meta".into(),
            &to_js(&PublicationMeta::of(publication))?,
        );
        publications.push(&item);
    }
    let object = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&object, &"channel".into(), &page.channel.as_str().into());
    let _ = js_sys::Reflect::set(&object, &"epoch".into(), &page.epoch.as_str().into());
    let _ = js_sys::Reflect::set(
        &object,
        &"offset".into(),
        &JsValue::from_f64(page.offset as f64),
    );
    let _ = js_sys::Reflect::set(&object, &"publications".into(), &publications);
    Ok(object.into())
}

/// `{type, data}` for `publication` handlers (the payload as [`event_data`] gives it, or
/// as it came when it does not decode).
pub(super) fn event_object(event: &RawEvent, data: &JsValue) -> JsValue {
    let object = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&object, &"type".into(), &event.kind().into());
    let _ = js_sys::Reflect::set(&object, &"data".into(), data);
    object.into()
}

/// A subscription that started or was restored, for `on("subscribed", ...)` and as the
/// `info` of a `Subscription`.
#[derive(Debug, Serialize, Tsify)]
pub(super) struct Subscribed {
    /// The channel.
    channel: String,
    /// The channel's epoch.
    epoch: String,
    /// The channel's latest offset when the subscription started.
    offset: u64,
    /// Absent for a first subscription; after a reconnect or a gap, `true` when every
    /// missed publication follows, `false` when some were lost (history did not reach back
    /// far enough, or the epoch changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    recovered: Option<bool>,
    /// With recovery, how many missed publications follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    missed: Option<u64>,
}

impl Subscribed {
    pub(super) fn of(s: &core::Subscribed) -> Subscribed {
        Subscribed {
            channel: s.channel.clone(),
            epoch: s.epoch.clone(),
            offset: s.offset,
            recovered: s.recovered,
            missed: s.missed,
        }
    }
}

/// A subscription the server refused to restore, for `on("unsubscribed", ...)`.
#[derive(Debug, Serialize, Tsify)]
pub(super) struct Unsubscribed {
    /// The channel (the client forgot it).
    channel: String,
    /// The server's refusal.
    error: ErrorInfo,
}

impl Unsubscribed {
    pub(super) fn of(channel: &str, error: &ClientError) -> Unsubscribed {
        Unsubscribed {
            channel: channel.to_owned(),
            error: ErrorInfo::of(error),
        }
    }
}

/// A presence change, for `on("presence", ...)`.
#[derive(Debug, Serialize, Tsify)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum PresenceEvent {
    /// A user's first connection joined the channel.
    UserJoined(PresenceChange),
    /// A user's last connection left the channel.
    UserLeft(PresenceChange),
}

/// The answer to a publish.
#[derive(Debug, Serialize, Tsify)]
pub(super) struct PublishReply {
    /// The channel.
    channel: String,
    /// The publication's offset (absent for ephemeral publications).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    offset: Option<u64>,
    /// The channel's epoch.
    epoch: String,
    /// How many connections it was queued for on the server's node.
    delivered: u64,
}

impl PublishReply {
    pub(super) fn of(reply: &core::PublishReply) -> PublishReply {
        PublishReply {
            channel: reply.channel.clone(),
            offset: reply.offset,
            epoch: reply.epoch.clone(),
            delivered: reply.delivered,
        }
    }
}

/// The members of a channel.
pub(super) fn members(members: &[Member]) -> Result<JsValue, ClientError> {
    to_js(members)
}
