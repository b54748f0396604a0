//! The driver task: owns the [`Core`], the WebSocket, the timers and the handlers, and
//! turns the core's outputs into I/O and its inputs out of I/O.
//!
//! One loop: drain the core's outputs (open, send, close, arm timers, call handlers,
//! answer operations), then wait for whichever comes first of a command from a handle, a
//! WebSocket message, the end of a handshake, a token, or the earliest timer.

use std::collections::{BTreeMap, HashMap};
use std::future::{Future, pending};
use std::pin::Pin;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use tidings_protocol::SUBPROTOCOL;

use super::handlers::Registry;
use super::{Command, ReplyTo, TokenProvider};
use crate::ClientError;
use crate::core::{
    ClientEvent, Config, ConnId, ConnectionEvent, Core, Input, OpId, Output, State, Timer,
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
/// A future of the driver, boxed so the loop can hold any kind.
type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// A future under way for one attempt (a handshake or a token).
type Slot<T> = Option<(ConnId, Boxed<T>)>;

/// How long a closing WebSocket may take to send its close frame, in the background.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why a handshake failed: with a close code the core should see (a refusal that says
/// why), or as a plain transport error (retryable).
enum Failure {
    Refused { code: u16, reason: String },
    Error(String),
}

/// What woke the loop.
enum Wake {
    Command(Option<Command>),
    Message(Option<Result<Message, tungstenite::Error>>),
    Opened(Result<Box<Ws>, Failure>),
    Token(Result<String, String>),
    Timer,
}

pub(super) struct Driver {
    core: Core,
    /// Time zero of the core's clock.
    origin: Instant,
    /// The application's token provider, when it gave one.
    provider: Option<TokenProvider>,
    /// The open WebSocket and the attempt it belongs to.
    ws: Option<(ConnId, Box<Ws>)>,
    /// A handshake under way.
    opening: Slot<Result<Box<Ws>, Failure>>,
    /// A token being fetched.
    token: Slot<Result<String, String>>,
    /// The core's armed timers, by deadline in ms since `origin`.
    timers: BTreeMap<Timer, u64>,
    /// Where each operation's result goes.
    replies: HashMap<OpId, ReplyTo>,
    handlers: Registry,
    /// Published to every handle's `state()`.
    state: watch::Sender<State>,
    /// Answers `ClientBuilder::connect` on the first `connected` or a terminal close.
    ready: Option<oneshot::Sender<Result<(), ClientError>>>,
    /// A write failed; told to the core once the current batch of outputs is done.
    write_failed: Option<(ConnId, String)>,
}

impl Driver {
    pub(super) fn new(
        config: Config,
        provider: Option<TokenProvider>,
        state: watch::Sender<State>,
        ready: oneshot::Sender<Result<(), ClientError>>,
    ) -> Driver {
        Driver {
            core: Core::new(config, random_seed()),
            origin: Instant::now(),
            provider,
            ws: None,
            opening: None,
            token: None,
            timers: BTreeMap::new(),
            replies: HashMap::new(),
            handlers: Registry::default(),
            state,
            ready: Some(ready),
            write_failed: None,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn input(&mut self, input: Input) {
        let now = self.now();
        self.core.handle(now, input);
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let now = self.now();
        self.core.connect(now);
        loop {
            self.drain().await;
            let deadline = self.timers.values().min().map(|ms| self.instant(*ms));
            let wake = tokio::select! {
                command = commands.recv() => Wake::Command(command),
                message = next_message(&mut self.ws) => Wake::Message(message),
                opened = poll_slot(&mut self.opening) => Wake::Opened(opened),
                token = poll_slot(&mut self.token) => Wake::Token(token),
                () = sleep_until(deadline) => Wake::Timer,
            };
            match wake {
                Wake::Command(None) => {
                    // Every handle is gone: nobody can hear from this client any more.
                    let now = self.now();
                    self.core.close(now);
                    self.drain().await;
                    return;
                }
                Wake::Command(Some(Command::Close { done })) => {
                    let now = self.now();
                    self.core.close(now);
                    self.drain().await;
                    let _ = done.send(());
                    return;
                }
                Wake::Command(Some(command)) => self.command(command),
                Wake::Message(message) => self.on_message(message).await,
                Wake::Opened(result) => {
                    let Some((conn, _)) = self.opening.take() else {
                        continue;
                    };
                    match result {
                        Ok(ws) => {
                            self.ws = Some((conn, ws));
                            self.input(Input::TransportOpened { conn });
                        }
                        Err(Failure::Refused { code, reason }) => {
                            let code = Some(code);
                            self.input(Input::TransportClosed { conn, code, reason });
                        }
                        Err(Failure::Error(message)) => {
                            self.input(Input::TransportError { conn, message });
                        }
                    }
                }
                Wake::Token(result) => {
                    if let Some((conn, _)) = self.token.take() {
                        self.input(Input::Token { conn, result });
                    }
                }
                Wake::Timer => {
                    let now = self.now();
                    let due: Vec<Timer> = self
                        .timers
                        .iter()
                        .filter(|(_, deadline)| **deadline <= now)
                        .map(|(timer, _)| *timer)
                        .collect();
                    for timer in due {
                        self.timers.remove(&timer);
                        self.core.handle(now, Input::TimerFired(timer));
                    }
                }
            }
        }
    }

    /// The tokio instant of a deadline on the core's clock.
    fn instant(&self, ms: u64) -> Instant {
        self.origin
            .checked_add(Duration::from_millis(ms))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600))
    }

    fn command(&mut self, command: Command) {
        let now = self.now();
        let (op, reply) = match command {
            Command::Subscribe {
                channel,
                events,
                reply,
            } => (self.core.subscribe(now, channel, events), reply),
            Command::Unsubscribe { channel, reply } => {
                self.handlers.remove_channel(&channel);
                (self.core.unsubscribe(now, channel), reply)
            }
            Command::Publish {
                channel,
                event,
                delivery,
                reply,
            } => (self.core.publish(now, channel, event, delivery), reply),
            Command::Presence { channel, reply } => (self.core.presence(now, channel), reply),
            Command::History {
                channel,
                since,
                before,
                limit,
                reply,
            } => (self.core.history(now, channel, since, before, limit), reply),
            Command::Typing { channel } => return self.core.typing(now, channel),
            Command::AddHandler { id, handler } => return self.handlers.add(id, handler),
            Command::RemoveHandler { id } => return self.handlers.remove(id),
            Command::Network { online } => {
                let input = if online {
                    Input::Online
                } else {
                    Input::Offline
                };
                return self.core.handle(now, input);
            }
            // Handled by the loop, which ends after it.
            Command::Close { done } => {
                let _ = done.send(());
                return;
            }
        };
        match op {
            Ok(op) => {
                self.replies.insert(op, reply);
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    async fn on_message(&mut self, message: Option<Result<Message, tungstenite::Error>>) {
        let Some(conn) = self.ws.as_ref().map(|(conn, _)| *conn) else {
            return;
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                self.input(Input::Frame {
                    conn,
                    text: text.as_str().to_owned(),
                });
            }
            Some(Ok(Message::Ping(_))) => {
                // tungstenite queued the pong; push it out now rather than with the next
                // frame we happen to send.
                if let Some((_, ws)) = self.ws.as_mut()
                    && let Err(error) = ws.flush().await
                {
                    self.write_failed = Some((conn, error.to_string()));
                }
                self.input(Input::Activity { conn });
            }
            Some(Ok(Message::Pong(_) | Message::Binary(_) | Message::Frame(_))) => {
                self.input(Input::Activity { conn });
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame.map_or((None, String::new()), |f| {
                    (Some(u16::from(f.code)), f.reason.as_str().to_owned())
                });
                self.release_ws(None);
                self.input(Input::TransportClosed { conn, code, reason });
            }
            Some(Err(error)) => {
                self.ws = None;
                let message = error.to_string();
                self.input(Input::TransportError { conn, message });
            }
            None => {
                self.ws = None;
                let reason = "the connection ended without a close frame".to_owned();
                self.input(Input::TransportClosed {
                    conn,
                    code: None,
                    reason,
                });
            }
        }
    }

    /// Closes the open WebSocket in the background (sending `frame`, or answering the
    /// server's close) so the loop never waits for a slow peer.
    fn release_ws(&mut self, frame: Option<CloseFrame>) {
        if let Some((_, mut ws)) = self.ws.take() {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(CLOSE_GRACE, Ws::close(&mut ws, frame)).await;
            });
        }
    }

    /// Carries out every output of the core, then reports write failures (which produce
    /// more outputs) until nothing is left.
    async fn drain(&mut self) {
        loop {
            let mut wrote = false;
            while let Some(output) = self.core.poll_output() {
                wrote |= self.output(output).await;
            }
            if wrote
                && let Some((conn, ws)) = self.ws.as_mut()
                && let Err(error) = ws.flush().await
            {
                self.write_failed = Some((*conn, error.to_string()));
            }
            let Some((conn, message)) = self.write_failed.take() else {
                break;
            };
            if self.ws.as_ref().is_some_and(|(c, _)| *c == conn) {
                self.ws = None;
            }
            self.input(Input::TransportError { conn, message });
        }
        self.publish_state();
    }

    /// Makes `Client::state()` show the core's state.
    fn publish_state(&self) {
        let state = self.core.state();
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }

    /// One output; `true` when a frame was written (and needs a flush).
    async fn output(&mut self, output: Output) -> bool {
        match output {
            Output::NeedToken { conn } => match &self.provider {
                Some(provider) => self.token = Some((conn, provider())),
                None => {
                    let result = Err("no token provider is configured".to_owned());
                    self.input(Input::Token { conn, result });
                }
            },
            Output::OpenTransport { conn, url } => {
                self.release_ws(None);
                self.opening = Some((conn, Box::pin(open(url))));
            }
            Output::Send { conn, text } => {
                if self.write_failed.is_none()
                    && let Some((open, ws)) = self.ws.as_mut()
                    && *open == conn
                {
                    if let Err(error) = ws.feed(Message::text(text)).await {
                        self.write_failed = Some((conn, error.to_string()));
                    }
                    return true;
                }
            }
            Output::CloseTransport { conn, code, reason } => {
                if self.ws.as_ref().is_some_and(|(c, _)| *c == conn) {
                    let frame = CloseFrame {
                        code: code.into(),
                        reason: reason.into(),
                    };
                    self.release_ws(Some(frame));
                }
                if self.opening.as_ref().is_some_and(|(c, _)| *c == conn) {
                    self.opening = None;
                }
                if self.token.as_ref().is_some_and(|(c, _)| *c == conn) {
                    self.token = None;
                }
            }
            Output::SetTimer { timer, deadline } => {
                self.timers.insert(timer, deadline);
            }
            Output::CancelTimer { timer } => {
                self.timers.remove(&timer);
            }
            Output::Event(event) => self.dispatch(&event),
            Output::Completed { op, result } => {
                if let Some(reply) = self.replies.remove(&op) {
                    let _ = reply.send(result);
                }
            }
        }
        false
    }

    fn dispatch(&mut self, event: &ClientEvent) {
        if let ClientEvent::Connection(_) = event {
            // State first, so code woken by this event (e.g. `connect()`) sees it.
            self.publish_state();
        }
        match event {
            ClientEvent::Connection(ConnectionEvent::Connected(_)) => {
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Ok(()));
                }
            }
            ClientEvent::Connection(ConnectionEvent::Closed { code, reason }) => {
                if let Some(ready) = self.ready.take() {
                    let error = ClientError::Closed {
                        code: *code,
                        reason: reason.clone(),
                    };
                    let _ = ready.send(Err(error));
                }
            }
            _ => {}
        }
        self.handlers.dispatch(event);
    }
}

/// Opens a WebSocket offering the `tidings.v1` subprotocol.
async fn open(url: String) -> Result<Box<Ws>, Failure> {
    let mut request = url.into_client_request().map_err(refusal)?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    connect_async(request)
        .await
        .map(|(ws, _response)| Box::new(ws))
        .map_err(refusal)
}

/// Handshake failures that say why become close codes, so the core applies the same
/// retry rules as for a close: HTTP 401 → 4001, 403 → 4003, 426 or a missing subprotocol
/// → 4426, 429 → 4008, 503 → 4503, an invalid URL → 4400 (terminal). Anything else
/// (refused, reset, DNS, TLS, other statuses) is a retryable transport error.
fn refusal(error: tungstenite::Error) -> Failure {
    let code = match &error {
        tungstenite::Error::Http(response) => match response.status().as_u16() {
            401 => Some(4001),
            403 => Some(4003),
            426 => Some(4426),
            429 => Some(4008),
            503 => Some(4503),
            _ => None,
        },
        tungstenite::Error::Protocol(ProtocolError::SecWebSocketSubProtocolError(_)) => Some(4426),
        tungstenite::Error::Url(_) => Some(4400),
        _ => None,
    };
    match code {
        Some(code) => Failure::Refused {
            code,
            reason: error.to_string(),
        },
        None => Failure::Error(error.to_string()),
    }
}

async fn next_message(
    ws: &mut Option<(ConnId, Box<Ws>)>,
) -> Option<Result<Message, tungstenite::Error>> {
    match ws {
        Some((_, ws)) => ws.next().await,
        None => pending().await,
    }
}

async fn poll_slot<T>(slot: &mut Slot<T>) -> T {
    match slot {
        Some((_, future)) => future.await,
        None => pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => pending().await,
    }
}

/// A per-client seed for the jitter: std's randomly keyed hasher mixed with the time.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}
