//! The application's JavaScript handlers and how each client event reaches them.
//!
//! `on(type, fn)` takes an event type name (`"notification"`, an application's own) or one
//! of the reserved names below. Handlers run in registration order, one event at a time, in
//! the order the core emits events; a handler that throws is reported to the `state`
//! handlers as an `error` change and the others still run.

use js_sys::Function;
use wasm_bindgen::JsValue;

use super::convert::{
    ConnectionChange, ConnectionState, PresenceEvent, PublicationMeta, Subscribed, Unsubscribed,
    event_data, event_object, message_of, to_js,
};
use crate::ClientError;
use crate::core::{ClientEvent, ConnectionEvent, State};

/// What a handler listens to. The names of client events (`ClientEventType` in the
/// TypeScript declarations) are reserved; every other name is an event type.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Listen {
    /// Publications of one event type: `(data, meta)`.
    Event(String),
    /// Every publication: `({type, data}, meta)`.
    Publication,
    /// Connection changes: `(change, state)`.
    State,
    /// Subscriptions started or restored: `(info)`.
    Subscribed,
    /// Subscriptions the server refused to restore: `(info)`.
    Unsubscribed,
    /// Users joining and leaving: `(change)`.
    Presence,
    /// Typing notices: `(notice)`.
    Typing,
}

impl Listen {
    fn parse(name: &str) -> Listen {
        match name {
            "state" => Listen::State,
            "publication" => Listen::Publication,
            "subscribed" => Listen::Subscribed,
            "unsubscribed" => Listen::Unsubscribed,
            "presence" => Listen::Presence,
            "typing" => Listen::Typing,
            other => Listen::Event(other.to_owned()),
        }
    }
}

struct Handler {
    id: u32,
    listen: Listen,
    /// Only events of this channel (handlers registered on a `Subscription`).
    channel: Option<String>,
    call: Function,
}

/// Every registered handler, in registration order.
#[derive(Default)]
pub(super) struct Registry {
    next: u32,
    handlers: Vec<Handler>,
}

/// The handlers one event goes to, with their arguments; built while the client is
/// borrowed, called after it is released (a handler may call the client).
pub(super) struct Calls {
    calls: Vec<(Function, JsValue, JsValue)>,
    /// Payloads that did not convert, reported after the calls.
    problems: Vec<ClientError>,
}

impl Registry {
    /// Registers `call` for `event_type` (of `channel` only, when given); the id is for
    /// [`Registry::remove`].
    pub(super) fn add(&mut self, event_type: &str, channel: Option<String>, call: Function) -> u32 {
        self.next = self.next.wrapping_add(1);
        self.handlers.push(Handler {
            id: self.next,
            listen: Listen::parse(event_type),
            channel,
            call,
        });
        self.next
    }

    pub(super) fn remove(&mut self, id: u32) {
        self.handlers.retain(|h| h.id != id);
    }

    /// Forgets the handlers of one channel (after the application unsubscribed).
    pub(super) fn remove_channel(&mut self, channel: &str) {
        self.handlers
            .retain(|h| h.channel.as_deref() != Some(channel));
    }

    /// The calls `event` makes, with its JavaScript arguments (converted once per kind).
    pub(super) fn calls(&self, event: &ClientEvent, state: State) -> Calls {
        let mut out = Calls {
            calls: Vec::new(),
            problems: Vec::new(),
        };
        let (listen, channel) = match event {
            ClientEvent::Connection(_) => (Listen::State, None),
            ClientEvent::Subscribed(s) => (Listen::Subscribed, Some(s.channel.as_str())),
            ClientEvent::Unsubscribed { channel, .. } => {
                (Listen::Unsubscribed, Some(channel.as_str()))
            }
            ClientEvent::Publication(p) => (Listen::Publication, Some(p.channel.as_str())),
            ClientEvent::UserJoined(c) | ClientEvent::UserLeft(c) => {
                (Listen::Presence, Some(c.channel.as_str()))
            }
            ClientEvent::Typing(t) => (Listen::Typing, Some(t.channel.as_str())),
        };
        let wanted = |h: &Handler, listen: &Listen| {
            h.listen == *listen
                && match (&h.channel, channel) {
                    (Some(only), Some(channel)) => only == channel,
                    // Connection changes concern every channel.
                    (Some(_), None) | (None, _) => true,
                }
        };
        let targets: Vec<&Handler> = self
            .handlers
            .iter()
            .filter(|h| wanted(h, &listen))
            .collect();
        if let ClientEvent::Publication(p) = event {
            let typed = Listen::Event(p.event.kind().to_owned());
            let by_type: Vec<&Handler> =
                self.handlers.iter().filter(|h| wanted(h, &typed)).collect();
            if targets.is_empty() && by_type.is_empty() {
                return out;
            }
            let meta = to_js(&PublicationMeta::of(p)).unwrap_or(JsValue::UNDEFINED);
            let data = event_data(&p.event);
            if let Ok(data) = &data {
                for h in by_type {
                    out.calls.push((h.call.clone(), data.clone(), meta.clone()));
                }
            }
            if !targets.is_empty() {
                // Publication handlers see every event, even one whose payload is malformed.
                let data = data.as_ref().cloned().unwrap_or_else(|_| {
                    js_sys::JSON::parse(p.event.data_json()).unwrap_or(JsValue::NULL)
                });
                let object = event_object(&p.event, &data);
                for h in targets {
                    out.calls
                        .push((h.call.clone(), object.clone(), meta.clone()));
                }
            }
            if let Err(problem) = data {
                out.problems.push(problem);
            }
            return out;
        }
        if targets.is_empty() {
            return out;
        }
        let converted = match event {
            ClientEvent::Connection(change) => to_js(&ConnectionChange::of(change))
                .map(|c| (c, JsValue::from_str(ConnectionState::of(state).name()))),
            ClientEvent::Subscribed(s) => {
                to_js(&Subscribed::of(s)).map(|v| (v, JsValue::UNDEFINED))
            }
            ClientEvent::Unsubscribed { channel, error } => {
                to_js(&Unsubscribed::of(channel, error)).map(|v| (v, JsValue::UNDEFINED))
            }
            ClientEvent::UserJoined(c) => {
                to_js(&PresenceEvent::UserJoined(c.clone())).map(|v| (v, JsValue::UNDEFINED))
            }
            ClientEvent::UserLeft(c) => {
                to_js(&PresenceEvent::UserLeft(c.clone())).map(|v| (v, JsValue::UNDEFINED))
            }
            ClientEvent::Typing(t) => to_js(t).map(|v| (v, JsValue::UNDEFINED)),
            ClientEvent::Publication(_) => return out,
        };
        match converted {
            Ok((first, second)) => {
                for h in targets {
                    out.calls
                        .push((h.call.clone(), first.clone(), second.clone()));
                }
            }
            Err(problem) => out.problems.push(problem),
        }
        out
    }
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
