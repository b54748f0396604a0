//! What the application's JavaScript handlers are called with.
//!
//! `on(type, fn)` takes an event type name (`"notification"`, an application's own) or one
//! of the reserved names of [`Listen::parse`]. Which handlers hear an event is decided by
//! the core's [`Handlers`]; here each gets its arguments, converted once per event:
//!
//! - `state`: `(change, state)`: a `ConnectionChange` and the `ConnectionState` after it
//! - an event type: `(data, meta)`: the payload (standard types with their defaults filled
//!   in) and a `PublicationMeta`
//! - `publication`: `({type, data}, meta)`, even when the payload is malformed
//! - `subscribed`, `unsubscribed`, `presence`, `typing`: `(info)`
//!
//! Handlers run in registration order, one event at a time; a handler that throws is
//! reported to the `state` handlers as an `error` change and the others still run.

use js_sys::Function;
use wasm_bindgen::JsValue;

use super::convert::{message_of, parse, to_js};
use crate::ClientError;
use crate::core::view::{PresenceEvent, PublicationMeta, Unsubscribed, event_data};
use crate::core::{ClientEvent, ConnectionEvent, Handlers, Listen, Publication, State};

/// A JavaScript handler: the function called, and the function the application knows it
/// by (for `offListener`; the same one unless a wrapper, such as `@tidings/client`'s
/// argument reordering, is called in its place).
pub(super) struct JsHandler {
    call: Function,
    key: JsValue,
}

impl JsHandler {
    /// `call`, known as `key` (or as itself).
    pub(super) fn new(call: Function, key: Option<JsValue>) -> JsHandler {
        let key = key.unwrap_or_else(|| call.clone().into());
        JsHandler { call, key }
    }

    /// Whether the application knows this handler as `listener`.
    pub(super) fn is(&self, listener: &JsValue) -> bool {
        self.key == *listener
    }
}

/// The calls one event makes, with their arguments; built while the client is borrowed,
/// made after it is released (a handler may call the client).
pub(super) struct Calls {
    calls: Vec<(Function, JsValue, JsValue)>,
    /// Payloads that did not convert, reported after the calls.
    problems: Vec<ClientError>,
}

/// The calls `event` makes (`state`: the state after it).
pub(super) fn calls(handlers: &Handlers<JsHandler>, event: &ClientEvent, state: State) -> Calls {
    let mut out = Calls {
        calls: Vec::new(),
        problems: Vec::new(),
    };
    if handlers.is_deaf_to(event) {
        return out;
    }
    let args = match event {
        ClientEvent::Publication(publication) => {
            return publication_calls(handlers, event, publication);
        }
        ClientEvent::Connection(change) => to_js(change).map(|c| (c, state.name().into())),
        ClientEvent::Subscribed(info) => to_js(info).map(|v| (v, JsValue::UNDEFINED)),
        ClientEvent::Unsubscribed { channel, error } => {
            to_js(&Unsubscribed { channel, error }).map(|v| (v, JsValue::UNDEFINED))
        }
        ClientEvent::UserJoined(change) => {
            to_js(&PresenceEvent::UserJoined(change)).map(|v| (v, JsValue::UNDEFINED))
        }
        ClientEvent::UserLeft(change) => {
            to_js(&PresenceEvent::UserLeft(change)).map(|v| (v, JsValue::UNDEFINED))
        }
        ClientEvent::Typing(notice) => to_js(notice).map(|v| (v, JsValue::UNDEFINED)),
    };
    match args {
        Ok((first, second)) => {
            for (_, call) in handlers.matching(event) {
                out.calls
                    .push((call.call.clone(), first.clone(), second.clone()));
            }
        }
        Err(problem) => out.problems.push(problem),
    }
    out
}

/// A publication's calls: `(data, meta)` for handlers of its event type (skipped when the
/// payload is malformed, which is reported once), `({type, data}, meta)` for the others.
fn publication_calls(
    handlers: &Handlers<JsHandler>,
    event: &ClientEvent,
    publication: &Publication,
) -> Calls {
    let mut out = Calls {
        calls: Vec::new(),
        problems: Vec::new(),
    };
    let meta = to_js(&PublicationMeta::of(publication)).unwrap_or(JsValue::UNDEFINED);
    let data = event_data(&publication.event).and_then(|text| parse(&text));
    let mut object = None;
    for (listen, call) in handlers.matching(event) {
        let first = match (listen, &data) {
            (Listen::Event(_), Ok(data)) => data.clone(),
            (Listen::Event(_), Err(_)) => continue,
            _ => object
                .get_or_insert_with(|| {
                    // Publication handlers see every event, even one whose payload is
                    // malformed: as it came, then.
                    let data = data.as_ref().cloned().unwrap_or_else(|_| {
                        parse(publication.event.data_json()).unwrap_or(JsValue::NULL)
                    });
                    let object = js_sys::Object::new();
                    let kind = JsValue::from_str(publication.event.kind());
                    let _ = js_sys::Reflect::set(&object, &"type".into(), &kind);
                    let _ = js_sys::Reflect::set(&object, &"data".into(), &data);
                    JsValue::from(object)
                })
                .clone(),
        };
        out.calls.push((call.call.clone(), first, meta.clone()));
    }
    if let Err(problem) = data {
        out.problems.push(problem);
    }
    out
}

impl Calls {
    /// Whether no handler listens.
    pub(super) fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Calls every handler; returns what went wrong (payloads that did not decode, handlers
    /// that threw, with what they threw), for the caller to report as `error` changes.
    pub(super) fn run(self) -> Vec<(ClientError, Option<JsValue>)> {
        let mut problems: Vec<_> = self.problems.into_iter().map(|p| (p, None)).collect();
        for (call, first, second) in self.calls {
            if let Err(thrown) = call.call2(&JsValue::UNDEFINED, &first, &second) {
                problems.push((ClientError::Handler(message_of(&thrown)), Some(thrown)));
            }
        }
        problems
    }
}

/// The event that reports `problem` to the `state` handlers.
pub(super) fn problem_event(problem: ClientError) -> ClientEvent {
    ClientEvent::Connection(ConnectionEvent::Error(problem))
}
