//! The browser driver: runs the core's [`Session`] on the JavaScript event loop with a
//! `WebSocket`, `setTimeout` timers, `performance.now()` and the `online`/`offline` events.
//!
//! Everything happens on the one JavaScript thread. Each entry point (a method called from
//! JavaScript, a socket event, a timer, a network event) borrows the client, feeds the
//! session, and carries out the I/O it asks for (open, send, close, timers). What reaches
//! application code — events for handlers, results for promises, readiness for `connect`,
//! a call of `getToken` — is queued and delivered only after the borrow ends, so a handler
//! may call the client again; events it causes are queued behind the ones being delivered,
//! so handlers always see events in the order the core emitted them.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use gloo_timers::callback::Timeout;
use js_sys::Function;
use wasm_bindgen::prelude::*;

use super::convert::error_value;
use super::handlers::{JsHandler, calls, problem_event};
use super::socket::{Network, Socket, close, listen_network, navigator_online, open};
use crate::ClientError;
use crate::core::{
    ClientEvent, Completion, Config, ConnId, ConnectionEvent, Core, Input, Io, Session, State,
    Step, Timer,
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

/// The core's clock: whole milliseconds of `performance.now()`.
pub(super) fn now() -> u64 {
    // `as` saturates, so a negative or huge reading cannot wrap.
    performance_now() as u64
}

/// The promise of one operation.
pub(super) struct Pending {
    pub(super) resolve: Function,
    pub(super) reject: Function,
}

/// Something for application code, delivered outside the borrow.
enum Deliver {
    Event(ClientEvent),
    Reply(Pending, Result<Completion, ClientError>),
    Ready(Result<(), ClientError>),
    /// Call `getToken` for this attempt.
    NeedToken(ConnId),
}

/// The state of one client, shared by its `TidingsClient` and `Subscription` objects.
pub(super) struct Shared {
    inner: RefCell<Inner>,
    /// Delivery to application code is under way (further deliveries queue behind it).
    delivering: Cell<bool>,
}

/// Everything mutable, behind the one borrow.
pub(super) struct Inner {
    pub(super) session: Session<Pending, JsHandler>,
    /// The application's `getToken`.
    provider: Option<Function>,
    socket: Option<Socket>,
    /// The armed timers (at most one per name, a handful in all).
    timers: Vec<(Timer, Timeout)>,
    /// `connect()` promises waiting for the first `connected` (or a terminal close).
    ready: Vec<(Function, Function)>,
    queue: VecDeque<Deliver>,
    /// Transport failures found while carrying out I/O, told to the core afterwards.
    pub(super) failures: Vec<Input>,
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
                session: Session::new(Core::new(config, seed)),
                provider,
                socket: None,
                timers: Vec::new(),
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
            if inner.session.core().state() != State::Idle {
                return;
            }
            inner.ready.extend(ready);
            inner.alive = inner.weak.upgrade();
            inner.network = listen_network(&inner.weak);
            inner.session.connect(now);
            if !navigator_online() {
                inner.session.core_mut().handle(now, Input::Offline);
            }
        });
    }

    /// Runs `f` on the borrowed client with the current time, carries out the I/O it
    /// caused, then delivers what is for application code.
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

    /// Feeds `input` to the core.
    pub(super) fn input(self: &Rc<Self>, input: Input) {
        self.with(|inner, now| inner.session.core_mut().handle(now, input));
    }

    /// Reads the client (nothing can happen).
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
                Deliver::Reply(pending, result) => {
                    let value = result.and_then(|done| super::api::resolved(self, done));
                    let _ = match value {
                        Ok(value) => pending.resolve.call1(&JsValue::UNDEFINED, &value),
                        Err(error) => pending
                            .reject
                            .call1(&JsValue::UNDEFINED, &error_value(&error)),
                    };
                }
                Deliver::Ready(result) => self.settle_ready(&result),
                Deliver::NeedToken(conn) => self.need_token(conn),
            }
        }
        self.delivering.set(false);
    }

    fn deliver_event(self: &Rc<Self>, event: &ClientEvent) {
        if let ClientEvent::Connection(ConnectionEvent::Closed { .. }) = event {
            // Closed for good: from now on only references keep the client.
            let alive = self.inner.borrow_mut().alive.take();
            drop(alive);
        }
        let calls_of = |event: &ClientEvent| {
            self.read(|inner| {
                calls(
                    inner.session.handlers(),
                    event,
                    inner.session.core().state(),
                )
            })
        };
        for (problem, thrown) in calls_of(event).run() {
            let report = problem_event(problem);
            let reports = calls_of(&report);
            if reports.is_empty() {
                // Nobody listens to `state`: the console is the only place left to tell.
                let value = match (&report, thrown) {
                    (_, Some(thrown)) => thrown,
                    (ClientEvent::Connection(ConnectionEvent::Error(error)), None) => {
                        error_value(error)
                    }
                    (_, None) => JsValue::UNDEFINED,
                };
                console_error("tidings: a handler failed", &value);
            }
            // Problems while reporting a problem are not reported again.
            let _ = reports.run();
        }
    }

    fn settle_ready(self: &Rc<Self>, outcome: &Result<(), ClientError>) {
        let ready = std::mem::take(&mut self.inner.borrow_mut().ready);
        for (resolve, reject) in ready {
            let _ = match outcome {
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
            self.input(Input::Token { conn, result });
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
                shared.input(Input::Token { conn, result });
            }
        });
    }
}

impl Inner {
    /// Whether `conn` is the open (or opening) socket.
    pub(super) fn is_current(&self, conn: ConnId) -> bool {
        self.socket.as_ref().is_some_and(|s| s.conn == conn)
    }

    /// Forgets the socket (it closed by itself).
    pub(super) fn forget_socket(&mut self) {
        self.socket = None;
    }

    /// Stops listening to the network (after `close()`).
    pub(super) fn stop_listening(&mut self) {
        self.network = None;
    }

    /// Carries out every step of the session, and the inputs that doing so produced.
    fn pump(&mut self) {
        loop {
            while let Some(step) = self.session.poll() {
                match step {
                    Step::Io(io) => self.io(io),
                    Step::Ready(result) => self.queue.push_back(Deliver::Ready(result)),
                    Step::Event(event) => self.queue.push_back(Deliver::Event(event)),
                    Step::Reply(pending, result) => {
                        self.queue.push_back(Deliver::Reply(pending, result));
                    }
                }
            }
            if self.failures.is_empty() {
                break;
            }
            let now = now();
            for input in std::mem::take(&mut self.failures) {
                self.session.core_mut().handle(now, input);
            }
        }
    }

    fn io(&mut self, io: Io) {
        match io {
            Io::NeedToken { conn } => self.queue.push_back(Deliver::NeedToken(conn)),
            Io::Open { conn, url } => {
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
            Io::Send { conn, text } => {
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
            Io::Close { conn, code, reason } => {
                if let Some(socket) = self.socket.take_if(|s| s.conn == conn) {
                    close(&socket.ws, code, &reason);
                }
            }
            Io::SetTimer { timer, deadline } => {
                let delay = deadline.saturating_sub(now()).min(i32::MAX as u64);
                let weak = self.weak.clone();
                let timeout = Timeout::new(delay as u32, move || {
                    if let Some(shared) = weak.upgrade() {
                        shared.with(|inner, now| {
                            inner.timers.retain(|(t, _)| *t != timer);
                            inner
                                .session
                                .core_mut()
                                .handle(now, Input::TimerFired(timer));
                        });
                    }
                });
                self.timers.retain(|(t, _)| *t != timer);
                self.timers.push((timer, timeout));
            }
            Io::CancelTimer { timer } => self.timers.retain(|(t, _)| *t != timer),
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
