//! The JavaScript API: the `TidingsClient` and `Subscription` classes and `connect()`.
//!
//! Methods whose TypeScript signature wasm-bindgen cannot express (overloads, generics)
//! are declared by hand in [`super::ts`] and skipped here.

use std::rc::Rc;

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;

use super::convert::{
    PublishOptions, SubscribeOptions, error_value, from_js, json_value, raw_event, to_js,
    type_error,
};
use super::driver::{Inner, Pending, Shared};
use super::handlers::JsHandler;
use super::socket::with_device;
use crate::ClientError;
use crate::core::view::HistoryResult;
use crate::core::{Auth, Completion, Config, Listen, Operation};

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
    let mut config =
        from_js::<Config>(options, "client options")?.unwrap_or_else(|| Config::new(String::new()));
    config.url = with_device(url);
    config.fallback_urls = std::mem::take(&mut config.fallback_urls)
        .into_iter()
        .map(with_device)
        .collect();
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

/// A promise settled by the result of the operation `prepare` returns (called with the
/// client borrowed, just before the operation starts).
fn operation(shared: &Rc<Shared>, prepare: impl FnOnce(&mut Inner) -> Operation) -> Promise {
    let mut prepare = Some(prepare);
    Promise::new(&mut |resolve, reject| {
        if let Some(prepare) = prepare.take() {
            shared.with(|inner, now| {
                let operation = prepare(inner);
                inner
                    .session
                    .perform(now, operation, Pending { resolve, reject });
            });
        }
    })
}

/// What an operation's promise resolves with: one line per kind of operation.
pub(super) fn resolved(shared: &Rc<Shared>, done: Completion) -> Result<JsValue, ClientError> {
    match done {
        Completion::Subscribed(info) => Ok(Subscription {
            shared: shared.clone(),
            channel: info.channel,
        }
        .into()),
        Completion::Unsubscribed { .. } => Ok(JsValue::UNDEFINED),
        Completion::Published(reply) => to_js(&reply),
        Completion::Presence { members, .. } => to_js(&members),
        Completion::History(page) => to_js(&HistoryResult::of(&page)?),
        Completion::Rpc(data) => to_js(&data),
    }
}

fn subscribe(
    shared: &Rc<Shared>,
    channel: String,
    handler: Option<Function>,
    options: &JsValue,
) -> Promise {
    let options: SubscribeOptions = match from_js(options, "subscribe options") {
        Ok(options) => options.unwrap_or_default(),
        Err(error) => return Promise::reject(&error),
    };
    operation(shared, move |inner| {
        // The handler is in place before the subscribe is sent: nothing can slip past it.
        if let Some(handler) = handler {
            let handlers = inner.session.handlers_mut();
            let id = handlers.next_id();
            let handler = JsHandler::new(handler, None);
            handlers.add(id, Listen::Publication, Some(channel.clone()), handler);
        }
        Operation::Subscribe {
            channel,
            events: options.events,
        }
    })
}

fn publish(shared: &Rc<Shared>, channel: String, event: &JsValue, options: &JsValue) -> Promise {
    let options: PublishOptions = match from_js(options, "publish options") {
        Ok(options) => options.unwrap_or_default(),
        Err(error) => return Promise::reject(&error),
    };
    let event = match raw_event(event) {
        Ok(event) => event,
        Err(error) => return Promise::reject(&error_value(&error)),
    };
    operation(shared, move |_| Operation::Publish {
        channel,
        event,
        delivery: options.delivery,
    })
}

/// Registers `handler` for `event_type` (of `channel` only, when given), known to the
/// application as `key` when that is not `undefined`.
fn on(
    shared: &Rc<Shared>,
    event_type: &str,
    channel: Option<String>,
    handler: JsValue,
    key: JsValue,
) -> Result<u32, JsValue> {
    let call = handler
        .dyn_into::<Function>()
        .map_err(|_| type_error("a handler must be a function"))?;
    let handler = JsHandler::new(call, Some(key).filter(|k| !k.is_undefined()));
    let listen = Listen::parse(event_type);
    Ok(shared.with(|inner, _| {
        let handlers = inner.session.handlers_mut();
        let id = handlers.next_id();
        handlers.add(id, listen, channel, handler);
        // JavaScript numbers; ids wrap after four billion handlers.
        id.get() as u32
    }))
}

fn off(shared: &Rc<Shared>, id: u32) {
    shared.with(|inner, _| {
        let id = crate::core::HandlerId::from_raw(u64::from(id));
        inner.session.handlers_mut().remove(id);
    });
}

/// Removes the earliest handler of `event_type` (of `channel` only) known as `listener`.
fn off_listener(shared: &Rc<Shared>, event_type: &str, channel: Option<&str>, listener: &JsValue) {
    let listen = Listen::parse(event_type);
    shared.with(|inner, _| {
        let handlers = inner.session.handlers_mut();
        handlers.remove_first(&listen, channel, |handler| handler.is(listener));
    });
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
        let state = self.shared.read(|inner| inner.session.core().state());
        state.name().to_owned()
    }

    /// Registers a handler; see the declaration for the event types. Returns its id.
    #[wasm_bindgen(skip_typescript)]
    pub fn on(&self, event_type: String, handler: JsValue) -> Result<u32, JsValue> {
        on(&self.shared, &event_type, None, handler, JsValue::UNDEFINED)
    }

    /// Like `on`, for a `handler` that stands in for `listener` (a wrapper): `offListener`
    /// with `listener` removes it.
    #[wasm_bindgen(js_name = onListener, skip_typescript)]
    pub fn on_listener(
        &self,
        event_type: String,
        handler: JsValue,
        listener: JsValue,
    ) -> Result<u32, JsValue> {
        on(&self.shared, &event_type, None, handler, listener)
    }

    /// Removes the handler with this id (from `on` here or on a `Subscription`).
    pub fn off(&self, id: u32) {
        off(&self.shared, id);
    }

    /// Removes the earliest handler registered here (not on a `Subscription`) for `type`
    /// with this function.
    #[wasm_bindgen(js_name = offListener)]
    pub fn off_listener(
        &self,
        #[wasm_bindgen(js_name = type)] event_type: String,
        #[wasm_bindgen(unchecked_param_type = "Function")] listener: JsValue,
    ) {
        off_listener(&self.shared, &event_type, None, &listener);
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
        operation(&self.shared, |_| Operation::Unsubscribe { channel })
    }

    /// Publishes an event; queued while disconnected.
    #[wasm_bindgen(skip_typescript)]
    pub fn publish(&self, channel: String, event: JsValue, options: JsValue) -> Promise {
        publish(&self.shared, channel, &event, &options)
    }

    /// The members of `channel` (needs a live connection).
    #[wasm_bindgen(unchecked_return_type = "Promise<Member[]>")]
    pub fn presence(&self, channel: String) -> Promise {
        operation(&self.shared, |_| Operation::Presence { channel })
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
        operation(&self.shared, |_| Operation::History {
            channel,
            since,
            before,
            limit,
        })
    }

    /// Calls `method` of the application's back end with `data` (any JSON; `undefined` is
    /// sent as `null`) and resolves with its answer (needs a live connection). Sent once and
    /// never resent: a connection that drops before the answer rejects with a
    /// `disconnected` error. The server's refusals reject with kind `server` and its code:
    /// 4004 (no back end answers the method), 4003 (refused, with the back end's message),
    /// 4503 (back end down or too slow: retryable), 4500, 4400 (an invalid method name).
    #[wasm_bindgen(unchecked_return_type = "Promise<unknown>")]
    pub fn rpc(
        &self,
        method: String,
        #[wasm_bindgen(unchecked_optional_param_type = "unknown")] data: JsValue,
    ) -> Promise {
        let data = match json_value(&data) {
            Ok(data) => data,
            Err(error) => return Promise::reject(&error_value(&error)),
        };
        operation(&self.shared, |_| Operation::Rpc { method, data })
    }

    /// Tells the other members of `channel` the user is typing (dropped when disconnected).
    pub fn typing(&self, channel: String) {
        self.shared
            .with(|inner, now| inner.session.core_mut().typing(now, channel));
    }

    /// How many publishes wait for a connection.
    #[wasm_bindgen(getter, js_name = queuedPublishes)]
    pub fn queued_publishes(&self) -> usize {
        self.shared
            .read(|inner| inner.session.core().queued_publishes())
    }

    /// Closes the connection with 1000 and stops reconnecting; operations still waiting
    /// reject with a `closed` error.
    pub fn close(&self) {
        self.shared.with(|inner, now| {
            inner.session.core_mut().close(now);
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
        let channel = Some(self.channel.clone());
        on(
            &self.shared,
            &event_type,
            channel,
            handler,
            JsValue::UNDEFINED,
        )
    }

    /// Like `on`, for a `handler` that stands in for `listener` (a wrapper): `offListener`
    /// with `listener` removes it.
    #[wasm_bindgen(js_name = onListener, skip_typescript)]
    pub fn on_listener(
        &self,
        event_type: String,
        handler: JsValue,
        listener: JsValue,
    ) -> Result<u32, JsValue> {
        let channel = Some(self.channel.clone());
        on(&self.shared, &event_type, channel, handler, listener)
    }

    /// Removes the handler with this id.
    pub fn off(&self, id: u32) {
        off(&self.shared, id);
    }

    /// Removes the earliest handler registered on this subscription for `type` with this
    /// function.
    #[wasm_bindgen(js_name = offListener)]
    pub fn off_listener(
        &self,
        #[wasm_bindgen(js_name = type)] event_type: String,
        #[wasm_bindgen(unchecked_param_type = "Function")] listener: JsValue,
    ) {
        off_listener(&self.shared, &event_type, Some(&self.channel), &listener);
    }

    /// Publishes an event on this channel.
    #[wasm_bindgen(skip_typescript)]
    pub fn publish(&self, event: JsValue, options: JsValue) -> Promise {
        publish(&self.shared, self.channel.clone(), &event, &options)
    }

    /// The members of this channel.
    #[wasm_bindgen(unchecked_return_type = "Promise<Member[]>")]
    pub fn presence(&self) -> Promise {
        let channel = self.channel.clone();
        operation(&self.shared, |_| Operation::Presence { channel })
    }

    /// Tells the members the user is typing.
    pub fn typing(&self) {
        let channel = self.channel.clone();
        self.shared
            .with(|inner, now| inner.session.core_mut().typing(now, channel));
    }

    /// Leaves the channel and removes its handlers.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn unsubscribe(&self) -> Promise {
        let channel = self.channel.clone();
        operation(&self.shared, |_| Operation::Unsubscribe { channel })
    }
}
