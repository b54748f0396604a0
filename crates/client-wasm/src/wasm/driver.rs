//! The browser driver: runs the [`Core`] on the JavaScript event loop with a `WebSocket`,
//! `setTimeout` timers, `performance.now()` and the `online`/`offline` events.
//!
//! Everything happens on the one JavaScript thread. Each entry point (a method called from
//! JavaScript, a socket event, a timer, a network event) borrows the client, feeds the
//! core, and carries out the core's outputs that are I/O (open, send, close, timers). The
//! outputs that reach application code — events for handlers, results for promises, a call
//! of `getToken` — are queued and delivered only after the borrow ends, so a handler may
//! call the client again; events it causes are queued behind the ones being delivered, so
//! handlers always see events in the order the core emitted them.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};

use gloo_timers::callback::Timeout;
use js_sys::Function;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, Event, EventTarget, MessageEvent, WebSocket};

use tidings_protocol::SUBPROTOCOL;

use super::convert::error_value;
use super::handlers::{Registry, problem_event};
use crate::ClientError;
use crate::core::{
    ClientEvent, Completion, Config, ConnId, ConnectionEvent, Core, Input, OpId, Output, State,
    Timer,
};

#[wasm_bindgen]
extern "C" {
    /// `performance.now()`: monotonic milliseconds (in windows, workers and Node alike).
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
    /// `console.error(message, value)`.
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &str, value: &JsValue);
}

/// The message of a reported problem, for the console.
fn report_value(event: &ClientEvent) -> JsValue {
    match event {
        ClientEvent::Connection(ConnectionEvent::Error(error)) => error_value(error),
        other => JsValue::from_str(&format!("{other:?}")),
    }
}

/// The core's clock: whole milliseconds of `performance.now()`.
fn now() -> u64 {
    // `as` saturates, so a negative or huge reading cannot wrap.
    performance_now() as u64
}

/// What an operation's promise resolves with, once the core completes it.
pub(super) enum Answer {
    /// A `Subscription` of this channel.
    Subscription(String),
    /// `undefined`.
    Nothing,
    /// A `PublishReply`.
    PublishReply,
    /// The members.
    Members,
    /// A `HistoryPage`.
    History,
}

/// The promise of one operation.
pub(super) struct Pending {
    pub(super) resolve: Function,
    pub(super) reject: Function,
    pub(super) answer: Answer,
}

/// Something for application code, delivered outside the borrow.
enum Deliver {
    Event(ClientEvent),
    Completed(Pending, Result<Completion, ClientError>),
    /// Call `getToken` for this attempt.
    NeedToken(ConnId),
}

/// The open (or opening) WebSocket and the callbacks attached to it.
struct Socket {
    conn: ConnId,
    ws: WebSocket,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Nothing more about this transport reaches the core; the closures go with it.
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
    }
}

/// The `online`/`offline` listeners on the global object.
struct Network {
    target: EventTarget,
    online: Closure<dyn FnMut(Event)>,
    offline: Closure<dyn FnMut(Event)>,
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = self
            .target
            .remove_event_listener_with_callback("online", self.online.as_ref().unchecked_ref());
        let _ = self
            .target
            .remove_event_listener_with_callback("offline", self.offline.as_ref().unchecked_ref());
    }
}

/// The state of one client, shared by its `TidingsClient` and `Subscription` objects.
pub(super) struct Shared {
    inner: RefCell<Inner>,
    /// Delivery to application code is under way (further deliveries queue behind it).
    delivering: Cell<bool>,
}

/// Everything mutable, behind the one borrow.
pub(super) struct Inner {
    pub(super) core: Core,
    pub(super) handlers: Registry,
    /// The application's `getToken`.
    provider: Option<Function>,
    socket: Option<Socket>,
    timers: HashMap<Timer, Timeout>,
    pending: HashMap<OpId, Pending>,
    /// `connect()` promises waiting for the first `connected` (or a terminal close).
    ready: Vec<(Function, Function)>,
    queue: VecDeque<Deliver>,
    /// Transport failures found while carrying out outputs, told to the core afterwards.
    failures: Vec<Input>,
    network: Option<Network>,
    /// The client itself, from `start` until it closes: like a WebSocket, a running client
    /// lives on while application code holds no reference to it (its handlers still run).
    alive: Option<Rc<Shared>>,
    weak: Weak<Shared>,
}

impl Shared {
    /// A client of `config` that has not started yet.
    pub(super) fn new(config: Config, provider: Option<Function>) -> Rc<Shared> {
        // Keeps the protocol's TypeScript declarations in the `.d.ts` (see the function).
        std::hint::black_box(tidings_protocol::ts::link());
        let seed = (js_sys::Math::random() * 9_007_199_254_740_992.0) as u64;
        Rc::new_cyclic(|weak| Shared {
            inner: RefCell::new(Inner {
                core: Core::new(config, seed),
                handlers: Registry::default(),
                provider,
                socket: None,
                timers: HashMap::new(),
                pending: HashMap::new(),
                ready: Vec::new(),
                queue: VecDeque::new(),
                failures: Vec::new(),
                network: None,
                alive: None,
                weak: weak.clone(),
            }),
            delivering: Cell::new(false),
        })
    }

    /// Starts connecting; `ready` settles on the first `connected` or a terminal close.
    /// Nothing happens when the client was closed before it started.
    pub(super) fn start(self: &Rc<Self>, ready: Option<(Function, Function)>) {
        self.with(|inner, now| {
            if inner.core.state() != State::Idle {
                return;
            }
            inner.ready.extend(ready);
            inner.alive = inner.weak.upgrade();
            inner.network = listen_network(&inner.weak);
            inner.core.connect(now);
            if !navigator_online() {
                inner.core.handle(now, Input::Offline);
            }
        });
    }

    /// Runs `f` on the borrowed client with the current time, carries out the core's
    /// outputs, then delivers what is for application code.
    pub(super) fn with<R>(self: &Rc<Self>, f: impl FnOnce(&mut Inner, u64) -> R) -> R {
        let result = {
            let mut inner = self.inner.borrow_mut();
            let result = f(&mut inner, now());
            inner.pump();
            result
        };
        self.deliver();
        result
    }

    /// Reads the client (no outputs can arise).
    pub(super) fn read<R>(&self, f: impl FnOnce(&Inner) -> R) -> R {
        f(&self.inner.borrow())
    }

    fn deliver(self: &Rc<Self>) {
        if self.delivering.replace(true) {
            return;
        }
        loop {
            let next = self.inner.borrow_mut().queue.pop_front();
            let Some(next) = next else { break };
            match next {
                Deliver::Event(event) => self.deliver_event(&event),
                Deliver::Completed(pending, result) => settle(self, pending, result),
                Deliver::NeedToken(conn) => self.need_token(conn),
            }
        }
        self.delivering.set(false);
    }

    fn deliver_event(self: &Rc<Self>, event: &ClientEvent) {
        if let ClientEvent::Connection(change) = event {
            self.settle_ready(change);
        }
        let calls = self.read(|inner| inner.handlers.calls(event, inner.core.state()));
        for (problem, thrown) in calls.run() {
            let report = problem_event(problem);
            let calls = self.read(|inner| inner.handlers.calls(&report, inner.core.state()));
            if calls.is_empty() {
                // Nobody listens to `state`: the console is the only place left to tell.
                console_error(
                    "tidings: a handler failed",
                    &thrown.unwrap_or_else(|| report_value(&report)),
                );
            }
            // Problems while reporting a problem are not reported again.
            let _ = calls.run();
        }
    }

    fn settle_ready(self: &Rc<Self>, change: &ConnectionEvent) {
        let outcome = match change {
            ConnectionEvent::Connected(_) => Ok(()),
            ConnectionEvent::Closed { code, reason } => {
                // Closed for good: from now on only references keep the client.
                let alive = self.inner.borrow_mut().alive.take();
                drop(alive);
                Err(ClientError::Closed {
                    code: *code,
                    reason: reason.clone(),
                })
            }
            _ => return,
        };
        let ready = std::mem::take(&mut self.inner.borrow_mut().ready);
        for (resolve, reject) in ready {
            let _ = match &outcome {
                Ok(()) => {
                    let client = super::api::TidingsClient::from_shared(self.clone());
                    resolve.call1(&JsValue::UNDEFINED, &client.into())
                }
                Err(error) => reject.call1(&JsValue::UNDEFINED, &error_value(error)),
            };
        }
    }

    /// Calls `getToken` and answers the core when its promise settles.
    fn need_token(self: &Rc<Self>, conn: ConnId) {
        let provider = self.read(|inner| inner.provider.clone());
        let Some(provider) = provider else {
            let result = Err("no getToken function is configured".to_owned());
            self.with(|inner, now| inner.core.handle(now, Input::Token { conn, result }));
            return;
        };
        let returned = provider.call0(&JsValue::UNDEFINED);
        let weak = Rc::downgrade(self);
        wasm_bindgen_futures::spawn_local(async move {
            let value = match returned {
                Ok(value) => {
                    let promise = js_sys::Promise::resolve(&value);
                    wasm_bindgen_futures::JsFuture::from(promise).await
                }
                Err(thrown) => Err(thrown),
            };
            let result = match value {
                Ok(token) => token
                    .as_string()
                    .ok_or_else(|| "getToken must return a string".to_owned()),
                Err(thrown) => Err(super::convert::message_of(&thrown)),
            };
            if let Some(shared) = weak.upgrade() {
                shared.with(|inner, now| inner.core.handle(now, Input::Token { conn, result }));
            }
        });
    }
}

/// Resolves or rejects an operation's promise.
fn settle(shared: &Rc<Shared>, pending: Pending, result: Result<Completion, ClientError>) {
    let value =
        result.and_then(|completion| super::api::answer(shared, pending.answer, completion));
    let _ = match value {
        Ok(value) => pending.resolve.call1(&JsValue::UNDEFINED, &value),
        Err(error) => pending
            .reject
            .call1(&JsValue::UNDEFINED, &error_value(&error)),
    };
}

impl Inner {
    /// Remembers the promise of operation `op` (or rejects it at once when the core
    /// refused the operation).
    pub(super) fn track(&mut self, op: Result<OpId, ClientError>, pending: Pending) {
        match op {
            Ok(op) => {
                self.pending.insert(op, pending);
            }
            Err(error) => self
                .queue
                .push_back(Deliver::Completed(pending, Err(error))),
        }
    }

    /// Stops listening to the network (after `close()`).
    pub(super) fn stop_listening(&mut self) {
        self.network = None;
    }

    /// Carries out every output of the core, and the inputs that doing so produced.
    fn pump(&mut self) {
        loop {
            while let Some(output) = self.core.poll_output() {
                self.output(output);
            }
            if self.failures.is_empty() {
                break;
            }
            let now = now();
            for input in std::mem::take(&mut self.failures) {
                self.core.handle(now, input);
            }
        }
    }

    fn output(&mut self, output: Output) {
        match output {
            Output::NeedToken { conn } => self.queue.push_back(Deliver::NeedToken(conn)),
            Output::OpenTransport { conn, url } => {
                // The core closed any earlier transport already; this only guards against
                // leaving a socket open behind its back.
                if let Some(old) = self.socket.take() {
                    close(&old.ws, 1000, "replaced");
                }
                match open(&self.weak, conn, &url) {
                    Ok(socket) => self.socket = Some(socket),
                    // The browser refuses the URL itself (syntax, scheme, blocked port):
                    // retrying cannot help, so report it as a terminal 4400.
                    Err(reason) => self.failures.push(Input::TransportClosed {
                        conn,
                        code: Some(4400),
                        reason,
                    }),
                }
            }
            Output::Send { conn, text } => {
                if let Some(socket) = self.socket.as_ref().filter(|s| s.conn == conn)
                    && let Err(thrown) = socket.ws.send_with_str(&text)
                {
                    if let Some(failed) = self.socket.take() {
                        close(&failed.ws, 1000, "send failed");
                    }
                    let message = super::convert::message_of(&thrown);
                    self.failures.push(Input::TransportError { conn, message });
                }
            }
            Output::CloseTransport { conn, code, reason } => {
                if let Some(socket) = self.socket.take_if(|s| s.conn == conn) {
                    close(&socket.ws, code, &reason);
                }
            }
            Output::SetTimer { timer, deadline } => {
                let delay = deadline.saturating_sub(now()).min(i32::MAX as u64);
                let weak = self.weak.clone();
                let timeout = Timeout::new(delay as u32, move || {
                    if let Some(shared) = weak.upgrade() {
                        shared.with(|inner, now| {
                            inner.timers.remove(&timer);
                            inner.core.handle(now, Input::TimerFired(timer));
                        });
                    }
                });
                self.timers.insert(timer, timeout);
            }
            Output::CancelTimer { timer } => {
                self.timers.remove(&timer);
            }
            Output::Event(event) => self.queue.push_back(Deliver::Event(event)),
            Output::Completed { op, result } => {
                if let Some(pending) = self.pending.remove(&op) {
                    self.queue.push_back(Deliver::Completed(pending, result));
                }
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last JavaScript object of this client was freed: do not leave the socket open.
        if let Some(socket) = self.socket.take() {
            close(&socket.ws, 1000, "client dropped");
        }
    }
}

/// Opens a WebSocket offering `tidings.v1`, its events feeding the core as `conn`.
fn open(weak: &Weak<Shared>, conn: ConnId, url: &str) -> Result<Socket, String> {
    let ws = WebSocket::new_with_str(url, SUBPROTOCOL)
        .map_err(|thrown| super::convert::message_of(&thrown))?;
    ws.set_binary_type(BinaryType::Arraybuffer);
    let feed = move |weak: &Weak<Shared>, input: Input| {
        if let Some(shared) = weak.upgrade() {
            shared.with(|inner, now| {
                if inner.socket.as_ref().is_some_and(|s| s.conn == conn) {
                    if matches!(input, Input::TransportClosed { .. }) {
                        inner.socket = None;
                    }
                    inner.core.handle(now, input);
                }
            });
        }
    };
    let w = weak.clone();
    let on_open = Closure::<dyn FnMut(Event)>::new(move |_: Event| {
        feed(&w, Input::TransportOpened { conn });
    });
    let w = weak.clone();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let input = match event.data().as_string() {
            Some(text) => Input::Frame { conn, text },
            None => Input::Activity { conn },
        };
        feed(&w, input);
    });
    let w = weak.clone();
    let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
        // A connection that dropped or never opened closes with 1006 (browsers tell
        // nothing more about failed handshakes); 1005 means the peer sent no code.
        let code = Some(event.code()).filter(|c| *c != 1005);
        let reason = event.reason();
        feed(&w, Input::TransportClosed { conn, code, reason });
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    Ok(Socket {
        conn,
        ws,
        _on_open: on_open,
        _on_message: on_message,
        _on_close: on_close,
    })
}

/// Closes a WebSocket with `code` when browsers allow sending it (1000 and 3000–4999),
/// else with 1000; the reason is cut to the 123 bytes a close frame holds.
fn close(ws: &WebSocket, code: u16, reason: &str) {
    let code = if code == 1000 || (3000..=4999).contains(&code) {
        code
    } else {
        1000
    };
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason.get(..end).unwrap_or_default();
    if ws.close_with_code_and_reason(code, reason).is_err() {
        let _ = ws.close();
    }
}

/// `navigator.onLine`, `true` where there is no such thing.
fn navigator_online() -> bool {
    let global = js_sys::global();
    js_sys::Reflect::get(&global, &"navigator".into())
        .ok()
        .filter(|navigator| navigator.is_object())
        .and_then(|navigator| js_sys::Reflect::get(&navigator, &"onLine".into()).ok())
        .and_then(|online| online.as_bool())
        .unwrap_or(true)
}

/// Listens to the global object's `online` and `offline` events (windows and workers
/// have them; elsewhere there is nothing to listen to).
fn listen_network(weak: &Weak<Shared>) -> Option<Network> {
    let target = js_sys::global().dyn_into::<EventTarget>().ok()?;
    let handler = |input: fn() -> Input| {
        let weak = weak.clone();
        Closure::<dyn FnMut(Event)>::new(move |_: Event| {
            if let Some(shared) = weak.upgrade() {
                shared.with(|inner, now| inner.core.handle(now, input()));
            }
        })
    };
    let network = Network {
        target,
        online: handler(|| Input::Online),
        offline: handler(|| Input::Offline),
    };
    // Dropping `network` removes both listeners, added or not.
    for (name, closure) in [("online", &network.online), ("offline", &network.offline)] {
        let _ = network
            .target
            .add_event_listener_with_callback(name, closure.as_ref().unchecked_ref());
    }
    Some(network)
}
