//! The driver task: owns the [`Session`] (the core, its waiters and handlers), the
//! WebSocket and the timers, and turns the session's steps into I/O and its inputs out of
//! I/O.
//!
//! One loop: drain the session's steps (open, send, close, arm timers, call handlers,
//! answer operations), then wait for whichever comes first of a command from a handle, a
//! WebSocket message, the end of a handshake, a token, or the earliest timer.

use std::collections::BTreeMap;
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

use super::handlers::{HandlerFn, dispatch};
use super::{Command, ReplyTo, TokenProvider};
use crate::ClientError;
use crate::core::{ClientEvent, Config, ConnId, Core, Input, Io, Session, State, Step, Timer};

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
    session: Session<ReplyTo, HandlerFn>,
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
    /// Published to every handle's `state()`.
    state: watch::Sender<State>,
    /// Answers `ClientBuilder::connect` on the first `connected` or a terminal close.
    ready: Option<oneshot::Sender<Result<(), ClientError>>>,
    /// A write failed; told to the core once the current batch of outputs is done.
    write_failed: Option<(ConnId, String)>,
    /// `Command::Start` arrived: the first connect was made.
    started: bool,
}

impl Driver {
    pub(super) fn new(
        config: Config,
        provider: Option<TokenProvider>,
        state: watch::Sender<State>,
        ready: oneshot::Sender<Result<(), ClientError>>,
    ) -> Driver {
        Driver {
            session: Session::new(Core::new(config, random_seed())),
            origin: Instant::now(),
            provider,
            ws: None,
            opening: None,
            token: None,
            timers: BTreeMap::new(),
            state,
            ready: Some(ready),
            write_failed: None,
            started: false,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn input(&mut self, input: Input) {
        let now = self.now();
        self.session.core_mut().handle(now, input);
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
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
                    self.session.core_mut().close(now);
                    self.drain().await;
                    return;
                }
                Wake::Command(Some(Command::Close { done })) => {
                    let now = self.now();
                    self.session.core_mut().close(now);
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
                        self.session
                            .core_mut()
                            .handle(now, Input::TimerFired(timer));
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
        match command {
            Command::Perform { operation, reply } => {
                self.session.perform(now, operation, reply);
            }
            Command::Typing { channel } => self.session.core_mut().typing(now, channel),
            Command::Start => {
                if !self.started {
                    self.started = true;
                    self.session.connect(now);
                }
            }
            Command::AddHandler {
                id,
                listen,
                channel,
                call,
            } => self.session.handlers_mut().add(id, listen, channel, call),
            Command::RemoveHandler { id } => self.session.handlers_mut().remove(id),
            Command::Network { online } => {
                let input = if online {
                    Input::Online
                } else {
                    Input::Offline
                };
                self.session.core_mut().handle(now, input);
            }
            // Handled by the loop, which ends after it.
            Command::Close { done } => {
                let _ = done.send(());
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

    /// Carries out every step of the session, then reports write failures (which produce
    /// more steps) until nothing is left.
    async fn drain(&mut self) {
        loop {
            let mut wrote = false;
            while let Some(step) = self.session.poll() {
                wrote |= self.step(step).await;
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
        let state = self.session.core().state();
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }

    /// One step; `true` when a frame was written (and needs a flush).
    async fn step(&mut self, step: Step<ReplyTo>) -> bool {
        match step {
            Step::Io(io) => return self.io(io).await,
            Step::Ready(result) => {
                // State first, so code woken by this (e.g. `connect()`) sees it.
                self.publish_state();
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(result);
                }
            }
            Step::Event(event) => {
                if let ClientEvent::Connection(_) = event {
                    self.publish_state();
                }
                dispatch(self.session.handlers_mut(), &event);
            }
            Step::Reply(reply, result) => {
                let _ = reply.send(result);
            }
        }
        false
    }

    /// One piece of I/O; `true` when a frame was written (and needs a flush).
    async fn io(&mut self, io: Io) -> bool {
        match io {
            Io::NeedToken { conn } => match &self.provider {
                Some(provider) => self.token = Some((conn, provider())),
                None => {
                    let result = Err("no token provider is configured".to_owned());
                    self.input(Input::Token { conn, result });
                }
            },
            Io::Open { conn, url } => {
                self.release_ws(None);
                self.opening = Some((conn, Box::pin(open(url))));
            }
            Io::Send { conn, text } => {
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
            Io::Close { conn, code, reason } => {
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
            Io::SetTimer { timer, deadline } => {
                self.timers.insert(timer, deadline);
            }
            Io::CancelTimer { timer } => {
                self.timers.remove(&timer);
            }
        }
        false
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
