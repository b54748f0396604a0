//! The native client: a tokio task drives the [core](crate::core) over tokio-tungstenite,
//! and a cloneable [`Client`] handle talks to it.
//!
//! Every handle method sends a command to the task; handlers run on the task, one at a
//! time, in the order the core emits events, so a handler for an event type sees that
//! channel's publications in offset order, each once. Keep handlers short (spawn a task
//! for slow work): while one runs, the client reads nothing.
//!
//! The task ends when [`Client::close`] is called or when every handle is dropped. A
//! handler that captures a [`Client`] keeps the task alive until `close`.

mod driver;
mod handlers;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot, watch};

use tidings_protocol::messages::{HistoryPage, Member};
use tidings_protocol::{Code, Delivery, Event, RawEvent};

use crate::ClientError;
pub use crate::core::HandlerId;
use crate::core::{
    Auth, Backoff, ClientEvent, Completion, Config, ConnectionEvent, Listen, Operation,
    Publication, PublishReply, State, Subscribed,
};
use handlers::HandlerFn;

/// An async function returning a fresh token, called before every connect attempt.
type TokenProvider =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// Where an operation's result goes.
type ReplyTo = oneshot::Sender<Result<Completion, ClientError>>;

/// What a handle asks of the driver task.
enum Command {
    /// An operation with a result (subscribe, publish, presence, ...).
    Perform {
        operation: Operation,
        reply: ReplyTo,
    },
    Typing {
        channel: String,
    },
    /// Begin connecting (once; later ones are ignored).
    Start,
    AddHandler {
        id: HandlerId,
        listen: Listen,
        channel: Option<String>,
        call: HandlerFn,
    },
    RemoveHandler {
        id: HandlerId,
    },
    Network {
        online: bool,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// Configures and starts a [`Client`]; from [`Client::builder`].
#[must_use = "a builder does nothing until `connect` or `start`"]
pub struct ClientBuilder {
    config: Config,
    provider: Option<TokenProvider>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.config.url)
            .field("token_provider", &self.provider.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// Authenticates with the same token on every attempt.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.auth = Auth::Token(token.into());
        self.provider = None;
        self
    }

    /// Calls `provider` for a fresh token before every attempt. After a 4001 close the
    /// client retries once at once with a new token; a second 4001 in a row is terminal.
    /// A provider error counts as a failed attempt and is retried with backoff.
    pub fn token_provider<F, Fut, E>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        self.config.auth = Auth::Provider;
        self.provider = Some(Arc::new(move || {
            let future = provider();
            Box::pin(async move { future.await.map_err(|e| e.to_string()) })
        }));
        self
    }

    /// Other nodes of the same cluster: each reconnect after a lost connection or a failed
    /// attempt opens the next URL, round the list with the builder's URL first.
    pub fn fallback_urls<I, U>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = U>,
        U: Into<String>,
    {
        self.config.fallback_urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// Reconnect delays (default: full jitter from 500 ms to 20 s, forever).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// How long a request waits for its answer on a live connection (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// How long one connect attempt may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How many publishes made while disconnected are kept (default 1000).
    pub fn publish_queue(mut self, capacity: usize) -> Self {
        self.config.publish_queue = capacity;
        self
    }

    /// Starts the client and waits until the server accepted the first connection. Keeps
    /// retrying through retryable failures (bound it with [`Backoff::max_attempts`] or
    /// `tokio::time::timeout`); fails with [`ClientError::Closed`] on a terminal one.
    /// Must be called within a tokio runtime.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let (client, ready) = self.spawn();
        match ready.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ended()),
        }
    }

    /// Starts the client without waiting: it connects in the background, and operations
    /// made meanwhile wait for the connection (publishes are queued). Must be called within
    /// a tokio runtime.
    pub fn start(self) -> Client {
        self.spawn().0
    }

    /// Creates the client without connecting: register the handlers that must hear
    /// everything (a personal channel's inbox arrives right after `connected`, before any
    /// subscribe), then call [`Client::start`]. Must be called within a tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo() {
    /// use tidings_client::Client;
    /// use tidings_protocol::Notification;
    ///
    /// let client = Client::builder("ws://127.0.0.1:8000/ws").token("<jwt>").build();
    /// client.on::<Notification>(|note| println!("{}", note.message));
    /// client.start(); // nothing can arrive before the handler above
    /// # }
    /// ```
    pub fn build(self) -> Client {
        self.create().0
    }

    fn spawn(self) -> (Client, oneshot::Receiver<Result<(), ClientError>>) {
        let (client, ready) = self.create();
        client.start();
        (client, ready)
    }

    fn create(self) -> (Client, oneshot::Receiver<Result<(), ClientError>>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(State::Idle);
        let (ready_tx, ready) = oneshot::channel();
        let driver = driver::Driver::new(self.config, self.provider, state_tx, ready_tx);
        tokio::spawn(driver.run(receiver));
        let client = Client {
            shared: Arc::new(Shared {
                commands,
                state,
                next_handler: AtomicU64::new(0),
            }),
        };
        (client, ready)
    }
}

/// What every clone of a [`Client`] shares.
struct Shared {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<State>,
    next_handler: AtomicU64,
}

/// A handle to a running client; cheap to clone, usable from any task.
///
/// ```no_run
/// # async fn demo() -> Result<(), tidings_client::ClientError> {
/// use tidings_client::Client;
/// use tidings_protocol::Notification;
///
/// let client = Client::builder("ws://localhost:8080/ws").token("jwt").connect().await?;
/// client.on::<Notification>(|note| println!("{}", note.message));
/// client.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .finish()
    }
}

/// The error of an operation whose driver task is gone.
fn ended() -> ClientError {
    ClientError::Closed {
        code: Code::Normal,
        reason: "the client has ended".to_owned(),
    }
}

impl Client {
    /// A builder for a client of the WebSocket endpoint `url` (`ws://` or `wss://`, the
    /// latter with the `rustls` feature).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            config: Config::new(url),
            provider: None,
        }
    }

    /// The connection state now.
    pub fn state(&self) -> State {
        *self.shared.state.borrow()
    }

    /// A receiver that sees every state change (for `changed().await`).
    pub fn state_changes(&self) -> watch::Receiver<State> {
        self.shared.state.clone()
    }

    fn send(&self, command: Command) -> bool {
        self.shared.commands.send(command).is_ok()
    }

    /// Starts `operation` in the driver task and waits for its result.
    async fn perform(&self, operation: Operation) -> Result<Completion, ClientError> {
        let (reply, result) = oneshot::channel();
        if !self.send(Command::Perform { operation, reply }) {
            return Err(ended());
        }
        result.await.unwrap_or_else(|_| Err(ended()))
    }

    fn add_handler(
        &self,
        (listen, channel, call): (Listen, Option<String>, HandlerFn),
    ) -> HandlerId {
        let id = HandlerId::from_raw(self.shared.next_handler.fetch_add(1, Ordering::Relaxed));
        self.send(Command::AddHandler {
            id,
            listen,
            channel,
            call,
        });
        id
    }

    /// Calls `handler` with every publication of type `E` on any channel, in offset order
    /// per channel. Publications of other types are skipped; one that does not decode as
    /// `E` is reported as a [`ConnectionEvent::Error`].
    pub fn on<E: Event>(&self, handler: impl FnMut(E) + Send + 'static) -> HandlerId {
        self.add_handler(handlers::typed::<E>(None, handler))
    }

    /// Calls `handler` with every publication on any channel, undecoded, with its channel,
    /// offset, epoch and sender.
    pub fn on_publication(&self, handler: impl FnMut(&Publication) + Send + 'static) -> HandlerId {
        self.add_handler(handlers::raw(None, handler))
    }

    /// Calls `handler` with every connection change: connecting, connected, disconnected
    /// {code, reason}, reconnecting {attempt, delay}, closed {code, reason}, error.
    pub fn on_state(&self, handler: impl FnMut(&ConnectionEvent) + Send + 'static) -> HandlerId {
        self.add_handler(handlers::connection(handler))
    }

    /// Calls `handler` with every client event (the above, plus subscriptions restored or
    /// lost, presence changes and typing notices).
    pub fn on_event(&self, handler: impl FnMut(&ClientEvent) + Send + 'static) -> HandlerId {
        self.add_handler(handlers::every(handler))
    }

    /// Begins connecting a client made with [`ClientBuilder::build`]; commands and handlers
    /// given before it are in place before the first message is read. Calling it again, or
    /// on a client from `connect` or `start`, does nothing.
    pub fn start(&self) {
        self.send(Command::Start);
    }

    /// Removes a handler.
    pub fn off(&self, id: HandlerId) {
        self.send(Command::RemoveHandler { id });
    }

    /// A handle for `channel` without subscribing yet: register its handlers, then call
    /// [`Subscription::subscribe`], and no publication can arrive before the handlers.
    pub fn subscription(&self, channel: impl Into<String>) -> Subscription {
        Subscription {
            client: self.clone(),
            channel: channel.into().into(),
            events: None,
        }
    }

    /// Subscribes to `channel` and returns its handle once the server confirmed (after
    /// however many reconnects that takes). Publications arriving between the confirmation
    /// and the registration of the handle's handlers reach only client-wide handlers; use
    /// [`Client::subscription`] to register first when that matters.
    pub async fn subscribe(&self, channel: impl Into<String>) -> Result<Subscription, ClientError> {
        let subscription = self.subscription(channel);
        subscription.subscribe().await?;
        Ok(subscription)
    }

    /// Publishes `event` to `channel`, with `E`'s delivery class. Queued while
    /// disconnected (see [`ClientError::QueueFull`]); resent after a reconnect when the
    /// connection dropped before the reply, so the server may see it twice.
    pub async fn publish<E: Event>(
        &self,
        channel: impl Into<String>,
        event: &E,
    ) -> Result<PublishReply, ClientError> {
        let raw = RawEvent::new(event).map_err(|e| ClientError::Encode(e.to_string()))?;
        let delivery = (E::DELIVERY != raw.default_delivery()).then_some(E::DELIVERY);
        self.publish_raw(channel, raw, delivery).await
    }

    /// Publishes an already encoded event, optionally overriding its delivery class.
    pub async fn publish_raw(
        &self,
        channel: impl Into<String>,
        event: RawEvent,
        delivery: Option<Delivery>,
    ) -> Result<PublishReply, ClientError> {
        let operation = Operation::Publish {
            channel: channel.into(),
            event,
            delivery,
        };
        match self.perform(operation).await? {
            Completion::Published(reply) => Ok(reply),
            other => Err(unexpected(&other)),
        }
    }

    /// The members of `channel` (needs a live connection).
    pub async fn presence(&self, channel: impl Into<String>) -> Result<Vec<Member>, ClientError> {
        let channel = channel.into();
        match self.perform(Operation::Presence { channel }).await? {
            Completion::Presence { members, .. } => Ok(members),
            other => Err(unexpected(&other)),
        }
    }

    /// A page of `channel`'s stored history (needs a live connection): with `since`, the
    /// oldest publications after that offset; without, the newest before `before` (or the
    /// end). `limit` defaults to 100 on the server, at most 1000.
    pub async fn history(
        &self,
        channel: impl Into<String>,
        since: Option<u64>,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, ClientError> {
        let operation = Operation::History {
            channel: channel.into(),
            since,
            before,
            limit,
        };
        match self.perform(operation).await? {
            Completion::History(page) => Ok(page),
            other => Err(unexpected(&other)),
        }
    }

    /// Calls `method` of the application's back end (the server's `on_rpc` hook or its
    /// `[proxy] rpc` URL) with `data`, and returns what it answered. Needs a live connection
    /// ([`ClientError::NotConnected`] otherwise).
    ///
    /// The call is sent once and never resent: when the connection drops before the answer
    /// it fails with [`ClientError::Disconnected`] (the back end may already have run it, so
    /// retrying is the caller's decision), and with [`ClientError::Timeout`] after the
    /// request timeout. The server's refusals are [`ClientError::Server`] with its code and
    /// message: 4004 `not_found` (no back end answers the method), 4003 `forbidden` (the back
    /// end refused), 4503 `unavailable` (down or too slow;
    /// [`Code::is_retryable`](tidings_protocol::Code::is_retryable)), 4500 `internal_error`,
    /// 4400 `bad_frame` (a method that is empty, over 128 bytes or has control characters).
    ///
    /// ```no_run
    /// # async fn demo(client: tidings_client::Client) -> Result<(), tidings_client::ClientError> {
    /// let answer = client
    ///     .rpc("motivation_requested", serde_json::json!({"mood": "tired"}))
    ///     .await?;
    /// println!("{}", answer["message"]);
    /// # Ok(()) }
    /// ```
    pub async fn rpc(
        &self,
        method: impl Into<String>,
        data: serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let operation = Operation::Rpc {
            method: method.into(),
            data,
        };
        match self.perform(operation).await? {
            Completion::Rpc(answer) => Ok(answer),
            other => Err(unexpected(&other)),
        }
    }

    /// [`Client::rpc`] with typed arguments and answer: `request` is encoded as JSON
    /// ([`ClientError::Encode`] when it cannot be), the answer decoded as `Resp`
    /// ([`ClientError::Decode`] when it does not fit).
    ///
    /// ```no_run
    /// # async fn demo(client: tidings_client::Client) -> Result<(), tidings_client::ClientError> {
    /// #[derive(serde::Serialize)]
    /// struct Mood { mood: String }
    /// #[derive(serde::Deserialize)]
    /// struct Motivation { message: String }
    ///
    /// let answer: Motivation = client
    ///     .rpc_as("motivation_requested", &Mood { mood: "tired".into() })
    ///     .await?;
    /// println!("{}", answer.message);
    /// # Ok(()) }
    /// ```
    pub async fn rpc_as<Req, Resp>(
        &self,
        method: impl Into<String>,
        request: &Req,
    ) -> Result<Resp, ClientError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let data = serde_json::to_value(request).map_err(|e| ClientError::Encode(e.to_string()))?;
        let answer = self.rpc(method, data).await?;
        serde_json::from_value(answer).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Leaves `channel` and removes the handlers registered on its [`Subscription`]s.
    pub async fn unsubscribe(&self, channel: impl Into<String>) -> Result<(), ClientError> {
        let channel = channel.into();
        self.perform(Operation::Unsubscribe { channel })
            .await
            .map(drop)
    }

    /// Tells the members of `channel` the user is typing (dropped when disconnected).
    pub fn typing(&self, channel: impl Into<String>) {
        self.send(Command::Typing {
            channel: channel.into(),
        });
    }

    /// Tells the client whether the network is up (e.g. from an OS notification): offline
    /// drops the connection and pauses reconnecting; online reconnects at once.
    pub fn set_online(&self, online: bool) {
        self.send(Command::Network { online });
    }

    /// Closes the connection with 1000 and stops the client; operations still waiting
    /// fail with [`ClientError::Closed`]. Returns once the close frame was sent.
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.send(Command::Close { done }) {
            let _ = finished.await;
        }
    }
}

fn unexpected(completion: &Completion) -> ClientError {
    ClientError::Decode(format!("unexpected result {completion:?}"))
}

/// A channel of a [`Client`]: its own handlers, publish and presence.
#[derive(Clone)]
pub struct Subscription {
    client: Client,
    channel: Arc<str>,
    events: Option<Vec<String>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", &self.channel)
            .finish()
    }
}

impl Subscription {
    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Subscribes to only these event types (call before [`Subscription::subscribe`]).
    pub fn only(mut self, events: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.events = Some(events.into_iter().map(Into::into).collect());
        self
    }

    /// Subscribes (or confirms an existing subscription), restored after every reconnect
    /// until [`Subscription::unsubscribe`].
    pub async fn subscribe(&self) -> Result<Subscribed, ClientError> {
        let operation = Operation::Subscribe {
            channel: self.channel.to_string(),
            events: self.events.clone(),
        };
        match self.client.perform(operation).await? {
            Completion::Subscribed(info) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// Calls `handler` with this channel's publications of type `E`, in offset order.
    pub fn on<E: Event>(&self, handler: impl FnMut(E) + Send + 'static) -> HandlerId {
        let channel = Some(self.channel.to_string());
        self.client
            .add_handler(handlers::typed::<E>(channel, handler))
    }

    /// Calls `handler` with this channel's publications, undecoded.
    pub fn on_publication(&self, handler: impl FnMut(&Publication) + Send + 'static) -> HandlerId {
        let channel = Some(self.channel.to_string());
        self.client.add_handler(handlers::raw(channel, handler))
    }

    /// Publishes `event` on this channel; see [`Client::publish`].
    pub async fn publish<E: Event>(&self, event: &E) -> Result<PublishReply, ClientError> {
        self.client.publish(self.channel.to_string(), event).await
    }

    /// The members of this channel.
    pub async fn presence(&self) -> Result<Vec<Member>, ClientError> {
        self.client.presence(self.channel.to_string()).await
    }

    /// Tells the members the user is typing.
    pub fn typing(&self) {
        self.client.typing(self.channel.to_string());
    }

    /// Leaves the channel and removes its handlers.
    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        self.client.unsubscribe(self.channel.to_string()).await
    }
}
