//! The JavaScript API: the `TidingsClient` and `Subscription` classes and `connect()`.
//!
//! Methods whose TypeScript signature wasm-bindgen cannot express (overloads, generics)
//! are declared by hand in [`super::ts`] and skipped here.

use std::rc::Rc;

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;

use super::convert::{
    self, ClientSettings, ConnectionState, PublishOptions, SubscribeOptions, error_value,
    type_error,
};
use super::driver::{Answer, Inner, Pending, Shared};
use crate::ClientError;
use crate::core::{Auth, Completion, OpId};

/// Starts a client of the WebSocket endpoint `url` (`ws://` or `wss://`) and resolves once
/// the server accepted the first connection; rejects with a `TidingsError` on a terminal
/// close (a bad token, exhausted `backoff.maxAttempts`) or with a `TypeError` for invalid
/// options.
#[wasm_bindgen(unchecked_return_type = "Promise<TidingsClient>")]
pub fn connect(
    url: String,
    #[wasm_bindgen(unchecked_optional_param_type = "ClientOptions")] options: JsValue,
) -> Promise {
    match build(url, &options) {
        Ok(shared) => Promise::new(&mut |resolve, reject| {
            shared.start(Some((resolve, reject)));
        }),
        Err(error) => Promise::reject(&error),
    }
}

fn build(url: String, options: &JsValue) -> Result<Rc<Shared>, JsValue> {
    let settings = ClientSettings::parse(options)?;
    let provider = if options.is_object() {
        js_sys::Reflect::get(options, &"getToken".into())
            .ok()
            .filter(|f| !f.is_undefined() && !f.is_null())
    } else {
        None
    };
    let provider = match provider {
        Some(value) => Some(
            value
                .dyn_into::<Function>()
                .map_err(|_| type_error("getToken must be a function"))?,
        ),
        None => None,
    };
    let mut config = settings.config(url);
    if provider.is_some() {
        config.auth = Auth::Provider;
    }
    Ok(Shared::new(config, provider))
}

/// A Tidings client: one WebSocket, reconnecting with backoff, restoring its subscriptions
/// with recovery of missed publications, queueing publishes while offline.
#[wasm_bindgen]
pub struct TidingsClient {
    shared: Rc<Shared>,
}

impl TidingsClient {
    pub(super) fn from_shared(shared: Rc<Shared>) -> TidingsClient {
        TidingsClient { shared }
    }
}

/// A promise settled by the core's completion of the operation `start` begins.
fn operation(
    shared: &Rc<Shared>,
    answer: Answer,
    start: impl FnOnce(&mut Inner, u64) -> Result<OpId, ClientError>,
) -> Promise {
    let mut start = Some(start);
    let mut answer = Some(answer);
    Promise::new(&mut |resolve, reject| {
        if let (Some(start), Some(answer)) = (start.take(), answer.take()) {
            shared.with(|inner, now| {
                let op = start(inner, now);
                inner.track(
                    op,
                    Pending {
                        resolve,
                        reject,
                        answer,
                    },
                );
            });
        }
    })
}

/// What an operation's promise resolves with.
pub(super) fn answer(
    shared: &Rc<Shared>,
    answer: Answer,
    completion: Completion,
) -> Result<JsValue, ClientError> {
    match (answer, completion) {
        (Answer::Subscription(channel), Completion::Subscribed(_)) => Ok(Subscription {
            shared: shared.clone(),
            channel,
        }
        .into()),
        (Answer::Nothing, _) => Ok(JsValue::UNDEFINED),
        (Answer::PublishReply, Completion::Published(reply)) => {
            convert::to_js(&convert::PublishReply::of(&reply))
        }
        (Answer::Members, Completion::Presence { members, .. }) => convert::members(&members),
        (Answer::History, Completion::History(page)) => convert::history(&page),
        (_, other) => Err(ClientError::Decode(format!("unexpected result {other:?}"))),
    }
}

fn subscribe(
    shared: &Rc<Shared>,
    channel: String,
    handler: Option<Function>,
    options: &JsValue,
) -> Promise {
    let options: SubscribeOptions = match convert::parse_options(options, "subscribe") {
        Ok(options) => options,
        Err(error) => return Promise::reject(&error),
    };
    let answer = Answer::Subscription(channel.clone());
    operation(shared, answer, move |inner, now| {
        // The handler is in place before the subscribe is sent: nothing can slip past it.
        if let Some(handler) = handler {
            inner
                .handlers
                .add("publication", Some(channel.clone()), handler);
        }
        inner.core.subscribe(now, channel, options.events)
    })
}

fn unsubscribe(shared: &Rc<Shared>, channel: String) -> Promise {
    operation(shared, Answer::Nothing, move |inner, now| {
        inner.handlers.remove_channel(&channel);
        inner.core.unsubscribe(now, channel)
    })
}

fn publish(shared: &Rc<Shared>, channel: String, event: &JsValue, options: &JsValue) -> Promise {
    let options: PublishOptions = match convert::parse_options(options, "publish") {
        Ok(options) => options,
        Err(error) => return Promise::reject(&error),
    };
    let event = match convert::raw_event(event) {
        Ok(event) => event,
        Err(error) => return Promise::reject(&error_value(&error)),
    };
    operation(shared, Answer::PublishReply, move |inner, now| {
        inner.core.publish(now, channel, event, options.delivery)
    })
}

fn presence(shared: &Rc<Shared>, channel: String) -> Promise {
    operation(shared, Answer::Members, move |inner, now| {
        inner.core.presence(now, channel)
    })
}

fn on(
    shared: &Rc<Shared>,
    event_type: &str,
    channel: Option<String>,
    handler: JsValue,
) -> Result<u32, JsValue> {
    let handler = handler
        .dyn_into::<Function>()
        .map_err(|_| type_error("a handler must be a function"))?;
    Ok(shared.with(|inner, _| inner.handlers.add(event_type, channel, handler)))
}

#[wasm_bindgen]
impl TidingsClient {
    /// Starts a client of `url` without waiting: it connects in the background (from a
    /// microtask, so handlers registered right after construction see every event), and
    /// operations made meanwhile wait for the connection (publishes are queued). Throws a
    /// `TypeError` for invalid options.
    #[wasm_bindgen(constructor)]
    pub fn new(
        url: String,
        #[wasm_bindgen(unchecked_optional_param_type = "ClientOptions")] options: JsValue,
    ) -> Result<TidingsClient, JsValue> {
        let shared = build(url, &options)?;
        let starting = shared.clone();
        wasm_bindgen_futures::spawn_local(async move { starting.start(None) });
        Ok(TidingsClient { shared })
    }

    /// The connection state now.
    #[wasm_bindgen(getter, unchecked_return_type = "ConnectionState")]
    pub fn state(&self) -> String {
        let state = self.shared.read(|inner| inner.core.state());
        ConnectionState::of(state).name().to_owned()
    }

    /// Registers a handler; see the declaration for the event types. Returns its id.
    #[wasm_bindgen(skip_typescript)]
    pub fn on(&self, event_type: String, handler: JsValue) -> Result<u32, JsValue> {
        on(&self.shared, &event_type, None, handler)
    }

    /// Removes the handler with this id (from `on` here or on a `Subscription`).
    pub fn off(&self, id: u32) {
        self.shared.with(|inner, _| inner.handlers.remove(id));
    }

    /// Subscribes to `channel` (restored after every reconnect until unsubscribed).
    #[wasm_bindgen(skip_typescript)]
    pub fn subscribe(
        &self,
        channel: String,
        handler: Option<Function>,
        options: JsValue,
    ) -> Promise {
        subscribe(&self.shared, channel, handler, &options)
    }

    /// Leaves `channel` and removes the handlers registered on its `Subscription`s.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn unsubscribe(&self, channel: String) -> Promise {
        unsubscribe(&self.shared, channel)
    }

    /// Publishes an event; queued while disconnected.
    #[wasm_bindgen(skip_typescript)]
    pub fn publish(&self, channel: String, event: JsValue, options: JsValue) -> Promise {
        publish(&self.shared, channel, &event, &options)
    }

    /// The members of `channel` (needs a live connection).
    #[wasm_bindgen(unchecked_return_type = "Promise<Member[]>")]
    pub fn presence(&self, channel: String) -> Promise {
        presence(&self.shared, channel)
    }

    /// A page of `channel`'s stored history (needs a live connection): with `since`, the
    /// oldest publications after that offset; without, the newest before `before` (or the
    /// end). `limit` defaults to 100, at most 1000.
    #[wasm_bindgen(unchecked_return_type = "Promise<HistoryResult>")]
    pub fn history(
        &self,
        channel: String,
        since: Option<f64>,
        before: Option<f64>,
        limit: Option<u32>,
    ) -> Promise {
        // JavaScript numbers: offsets are integers well below 2^53.
        let (since, before) = (since.map(|v| v as u64), before.map(|v| v as u64));
        operation(&self.shared, Answer::History, move |inner, now| {
            inner.core.history(now, channel, since, before, limit)
        })
    }

    /// Tells the other members of `channel` the user is typing (dropped when disconnected).
    pub fn typing(&self, channel: String) {
        self.shared
            .with(|inner, now| inner.core.typing(now, channel));
    }

    /// How many publishes wait for a connection.
    #[wasm_bindgen(getter, js_name = queuedPublishes)]
    pub fn queued_publishes(&self) -> usize {
        self.shared.read(|inner| inner.core.queued_publishes())
    }

    /// Closes the connection with 1000 and stops reconnecting; operations still waiting
    /// reject with a `closed` error.
    pub fn close(&self) {
        self.shared.with(|inner, now| {
            inner.core.close(now);
            inner.stop_listening();
        });
    }
}

/// A channel of a client: its own handlers, publish and presence.
#[wasm_bindgen]
pub struct Subscription {
    shared: Rc<Shared>,
    channel: String,
}

#[wasm_bindgen]
impl Subscription {
    /// The channel.
    #[wasm_bindgen(getter)]
    pub fn channel(&self) -> String {
        self.channel.clone()
    }

    /// Registers a handler for this channel's events; see the declaration. Returns its id.
    #[wasm_bindgen(skip_typescript)]
    pub fn on(&self, event_type: String, handler: JsValue) -> Result<u32, JsValue> {
        on(
            &self.shared,
            &event_type,
            Some(self.channel.clone()),
            handler,
        )
    }

    /// Removes the handler with this id.
    pub fn off(&self, id: u32) {
        self.shared.with(|inner, _| inner.handlers.remove(id));
    }

    /// Publishes an event on this channel.
    #[wasm_bindgen(skip_typescript)]
    pub fn publish(&self, event: JsValue, options: JsValue) -> Promise {
        publish(&self.shared, self.channel.clone(), &event, &options)
    }

    /// The members of this channel.
    #[wasm_bindgen(unchecked_return_type = "Promise<Member[]>")]
    pub fn presence(&self) -> Promise {
        presence(&self.shared, self.channel.clone())
    }

    /// Tells the members the user is typing.
    pub fn typing(&self) {
        let channel = self.channel.clone();
        self.shared
            .with(|inner, now| inner.core.typing(now, channel));
    }

    /// Leaves the channel and removes its handlers.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn unsubscribe(&self) -> Promise {
        unsubscribe(&self.shared, self.channel.clone())
    }
}
