//! The sans-I/O client core: every decision of the client, and no sockets, clocks or tasks.
//!
//! A [`Core`] is a state machine (`Idle → Connecting → Connected → Reconnecting → Closed`,
//! see [`State`]). A driver feeds it [`Input`]s (transport opened, frame received, transport
//! closed, timer fired, network online/offline) with the current time in milliseconds since
//! any origin it likes, calls its methods for application commands (subscribe, publish, ...),
//! and carries out the [`Output`]s it drains with [`Core::poll_output`]: open or close the
//! transport, send a frame, arm or disarm a named [`Timer`], hand an event or an operation's
//! result to the application. The same core serves the tokio driver and the browser driver,
//! and the tests drive it with a fake clock.
//!
//! Drivers use it through a [`Session`], which adds what they would otherwise each write
//! again: it routes every [`Operation`] and answers whoever started it, tells `connect` when
//! the client is ready, keeps the [`Handlers`], and hands the driver only the [`Io`] to do.
//! A new operation is a variant of [`Operation`] and of [`Completion`], a method here, and
//! in each driver the one line that turns its completion into the driver's result.
//!
//! ```
//! use tidings_client::core::{Config, Core, Input, Output};
//!
//! let mut core = Core::new(Config::new("ws://localhost:8080/ws"), 7);
//! core.connect(0);
//! let mut conn = None;
//! while let Some(output) = core.poll_output() {
//!     if let Output::OpenTransport { conn: c, url } = output {
//!         assert_eq!(url, "ws://localhost:8080/ws");
//!         conn = Some(c);
//!     }
//! }
//! let conn = conn.unwrap();
//! core.handle(3, Input::TransportOpened { conn });
//! core.handle(5, Input::Frame {
//!     conn,
//!     text: r#"{"type":"connected","data":{"session_id":"s1","user_id":"7","protocol":1,
//!         "heartbeat_ms":25000,"heartbeat_timeout_ms":10000,"max_frame_bytes":65536,
//!         "subscriptions":[{"channel":"user:7","epoch":"e1","offset":0}]}}"#.into(),
//! });
//! assert_eq!(core.state(), tidings_client::core::State::Connected);
//! ```
//!
//! ## Guarantees
//! - **Order and uniqueness.** Per channel, publications with an offset reach the
//!   application in increasing offset order, at most once per epoch. A duplicate (offset at
//!   or below the last delivered) is dropped; a gap (offset beyond last + 1) or a new epoch
//!   is never delivered out of order: the core resubscribes with `recover` from the last
//!   delivered offset and delivers the missed publications as the server replays them.
//!   With an event filter offsets skip the other types by design, so there only
//!   duplicates are dropped.
//! - **Subscriptions survive reconnects.** After every `connected` each subscription is
//!   restored with `recover: {epoch, offset}` when it has seen a position; the application
//!   hears [`ClientEvent::Subscribed`] with `recovered`.
//! - **Publishes are at-least-once across drops.** A publish made while not connected is
//!   queued (bounded by [`Config::publish_queue`]); a publish in flight when the connection
//!   drops is sent again after the reconnect, so the server may receive it twice (give
//!   events an id, like [`ChatMessage::id`](tidings_protocol::ChatMessage), to recognise
//!   resends). A publish that times out is not resent: its outcome is unknown.
//! - **Presence** needs a live connection and fails with
//!   [`ClientError::Disconnected`](crate::ClientError) when the connection drops under it.
//! - **RPC is at-most-once.** A call ([`Core::rpc`]) needs a live connection and is sent
//!   exactly once: when the connection drops before the answer it fails with
//!   [`ClientError::Disconnected`](crate::ClientError) and is *not* resent after the
//!   reconnect (the back end may already have run it, and it may not be idempotent); after
//!   the request timeout it fails with [`ClientError::Timeout`](crate::ClientError), its
//!   outcome unknown. Retrying either is the application's decision.

mod channels;
mod config;
mod connection;
mod handlers;
mod io;
mod map;
mod requests;
mod session;
#[cfg(test)]
mod tests;
pub mod view;

use std::collections::VecDeque;

use tidings_protocol::messages::{Ack, ChannelRef, History, Publish, Rpc};
use tidings_protocol::{ClientFrame, ClientMessage, Code, Delivery, RawEvent};

pub(crate) use config::millis;
pub use config::{Auth, Backoff, Config, RandomSource, SplitMix64, url_with_param, url_with_token};
pub use handlers::{HandlerId, Handlers, Listen};
pub use io::{
    ClientEvent, Completion, ConnId, ConnectionEvent, Input, OpId, Operation, Output, Publication,
    PublishReply, State, Subscribed, Timer,
};
pub use session::{Io, Session, Step};

use crate::ClientError;
use channels::{Sub, SubPhase};
use connection::{Attempt, Heartbeat};
use map::{VecMap, VecSet};
use requests::{Pending, Queued, Request};

/// The client's state machine. See the [module documentation](self).
pub struct Core {
    /// Where and how to connect; fixed for the core's life.
    config: Config,
    /// Jitter for reconnect delays, injected so tests are deterministic.
    random: Box<dyn RandomSource>,
    /// The connection state reported by [`Core::state`].
    state: State,
    /// Outputs not yet drained by the driver, in the order they were decided.
    outputs: VecDeque<Output>,
    /// Every timer the core has armed, with its deadline. A firing of a timer that is not
    /// here (cancelled, replaced) is stale and ignored, so drivers need no care.
    timers: VecMap<Timer, u64>,
    /// Last [`OpId`] handed out.
    next_op: u64,
    /// Last wire request id used; ids are never reused, even across connections.
    next_request: u64,
    /// Last [`ConnId`] handed out.
    next_conn: u64,
    /// The current attempt or connection; `None` while idle, reconnecting or closed.
    attempt: Option<Attempt>,
    /// Liveness of the current connection; `None` until `connected` (or when the server
    /// announced no heartbeat).
    heartbeat: Option<Heartbeat>,
    /// Reconnects scheduled since the last stable connection: the backoff exponent.
    retry: u32,
    /// Which URL the next attempt opens: 0 is `config.url`, then `config.fallback_urls`.
    url_index: usize,
    /// A 4001 was already retried with a fresh token, so the next one is terminal.
    auth_retried: bool,
    /// The delay a `shutdown` frame asked for, used for the next reconnect.
    shutdown_delay: Option<u64>,
    /// The network is reported offline: no attempts until it is back.
    offline: bool,
    /// Why the core closed, for the errors of operations attempted afterwards.
    closed: Option<(Code, String)>,
    /// The server's frame size limit on this connection (0: unknown).
    max_frame_bytes: usize,
    /// Subscriptions by channel: what the client restores after every reconnect.
    subs: VecMap<String, Sub>,
    /// Channels the application left: their late publications are dropped (for good for
    /// the server's automatic channels, which cannot be left on the server).
    left: VecSet<String>,
    /// Channels the server subscribed this connection to by itself.
    auto: VecSet<String>,
    /// Requests in flight on this connection, by wire id (ascending: the order they were
    /// sent, which is the order in-flight publishes are resent in).
    pending: VecMap<u64, Pending>,
    /// Publishes waiting for a connection, oldest first.
    queue: VecDeque<Queued>,
    /// This user's personal channel (`user:{id}` from `connected`), whose processed
    /// publications are acknowledged for the offline inbox.
    personal: Option<String>,
    /// The personal channel's last processed (epoch, offset) not yet acknowledged.
    pending_ack: Option<(String, u64)>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("state", &self.state)
            .field("url", &self.config.url)
            .field("subscriptions", &self.subs.len())
            .field("pending", &self.pending.len())
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Core {
    /// A core in [`State::Idle`] whose jitter comes from [`SplitMix64`] seeded with `seed`
    /// (drivers pass something random so clients do not share a sequence).
    pub fn new(config: Config, seed: u64) -> Core {
        Core::with_random(config, Box::new(SplitMix64::new(seed)))
    }

    /// A core whose jitter comes from `random` (tests pass a constant).
    pub fn with_random(config: Config, random: Box<dyn RandomSource>) -> Core {
        Core {
            config,
            random,
            state: State::Idle,
            outputs: VecDeque::new(),
            timers: VecMap::default(),
            next_op: 0,
            next_request: 0,
            next_conn: 0,
            attempt: None,
            heartbeat: None,
            retry: 0,
            url_index: 0,
            auth_retried: false,
            shutdown_delay: None,
            offline: false,
            closed: None,
            max_frame_bytes: 0,
            subs: VecMap::default(),
            left: VecSet::default(),
            auto: VecSet::default(),
            personal: None,
            pending_ack: None,
            pending: VecMap::default(),
            queue: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The connection state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The channels the client is subscribed to or subscribing to (including the server's
    /// automatic ones), each with the last position delivered: `(channel, epoch, offset)`.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&str, Option<(&str, u64)>)> {
        self.subs.iter().map(|(channel, sub)| {
            let position = sub.position.as_ref().map(|p| (p.epoch.as_str(), p.offset));
            (channel.as_str(), position)
        })
    }

    /// How many publishes wait for a connection.
    pub fn queued_publishes(&self) -> usize {
        self.queue.len()
    }

    /// The next output, oldest first; drain until `None` after every call into the core.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Starts an application operation: the one entry point drivers use for all of them
    /// (the methods below are the same operations one by one). The result comes as an
    /// [`Output::Completed`] with the returned id; an error here means it never started.
    pub fn perform(&mut self, now: u64, operation: Operation) -> Result<OpId, ClientError> {
        match operation {
            Operation::Subscribe { channel, events } => self.subscribe(now, channel, events),
            Operation::Unsubscribe { channel } => self.unsubscribe(now, channel),
            Operation::Publish {
                channel,
                event,
                delivery,
            } => self.publish(now, channel, event, delivery),
            Operation::Presence { channel } => self.presence(now, channel),
            Operation::History {
                channel,
                since,
                before,
                limit,
            } => self.history(now, channel, since, before, limit),
            Operation::Rpc { method, data } => self.rpc(now, method, data),
        }
    }

    /// Starts connecting (from [`State::Idle`] or [`State::Closed`]; otherwise nothing
    /// happens). Subscriptions kept from before a close are restored once connected.
    pub fn connect(&mut self, now: u64) {
        if matches!(self.state, State::Idle | State::Closed) {
            self.retry = 0;
            self.auth_retried = false;
            self.closed = None;
            self.start_attempt(now);
        }
    }

    /// Closes the connection with 1000 and stops reconnecting. Every operation still
    /// waiting fails with [`ClientError::Closed`]; subscriptions are kept in case
    /// [`Core::connect`] is called again.
    pub fn close(&mut self, _now: u64) {
        if self.state == State::Closed {
            return;
        }
        self.send_ack();
        if let Some(attempt) = self.attempt.take() {
            self.push(Output::CloseTransport {
                conn: attempt.conn,
                code: Code::Normal.as_u16(),
                reason: "client closed".to_owned(),
            });
        }
        self.shut(Code::Normal, "client closed".to_owned());
    }

    /// Subscribes to `channel`, optionally to some event types only (the filter of the
    /// first subscribe to a channel wins). Completes with [`Completion::Subscribed`] on the
    /// first successful reply, however many reconnects that takes; at once when already
    /// subscribed.
    pub fn subscribe(
        &mut self,
        now: u64,
        channel: impl Into<String>,
        events: Option<Vec<String>>,
    ) -> Result<OpId, ClientError> {
        self.check_open()?;
        let channel = channel.into();
        let op = self.new_op();
        self.left.remove(&channel);
        match self.subs.get_mut(&channel) {
            Some(sub) if sub.phase == SubPhase::Active => {
                let info = sub.info(&channel);
                self.complete(op, Ok(Completion::Subscribed(info)));
            }
            Some(sub) => sub.waiters.push(op),
            None => {
                self.subs.insert(channel.clone(), Sub::new(events, op));
                if self.is_connected() {
                    self.send_subscribe(now, &channel);
                }
            }
        }
        Ok(op)
    }

    /// Leaves `channel`: the client forgets it at once (no more publications, no restore);
    /// the operation completes when the server confirms, or at once when not connected (the
    /// server forgets a connection's subscriptions when it drops). A channel the server
    /// joined by itself (`user:{id}`) cannot be left on the server (it answers 4003): the
    /// client leaves it locally, dropping its publications, and completes at once.
    pub fn unsubscribe(
        &mut self,
        now: u64,
        channel: impl Into<String>,
    ) -> Result<OpId, ClientError> {
        self.check_open()?;
        let channel = channel.into();
        let op = self.new_op();
        if let Some(sub) = self.subs.remove(&channel) {
            self.fail_all(
                sub.waiters,
                &ClientError::Unsubscribed {
                    channel: channel.clone(),
                },
            );
        }
        if self.auto.contains(&channel) {
            self.left.insert(channel.clone());
            self.complete(op, Ok(Completion::Unsubscribed { channel }));
        } else if self.is_connected() {
            self.left.insert(channel.clone());
            let message = ClientMessage::Unsubscribe(tidings_protocol::messages::Unsubscribe {
                channel: channel.clone(),
            });
            let request = Request::Unsubscribe {
                channel,
                op: Some(op),
            };
            if let Err(error) = self.send_request(now, message, request, true) {
                self.complete(op, Err(error));
            }
        } else {
            self.complete(op, Ok(Completion::Unsubscribed { channel }));
        }
        Ok(op)
    }

    /// Publishes `event` to `channel`, with the event type's delivery class unless
    /// `delivery` overrides it. Sent now when connected, else queued (see the
    /// [module documentation](self) for the delivery guarantee). Fails at once with
    /// [`ClientError::QueueFull`] when the offline queue is full, or
    /// [`ClientError::FrameTooLarge`] when the frame exceeds the server's limit.
    pub fn publish(
        &mut self,
        now: u64,
        channel: impl Into<String>,
        event: RawEvent,
        delivery: Option<Delivery>,
    ) -> Result<OpId, ClientError> {
        self.check_open()?;
        let publish = Publish {
            channel: channel.into(),
            event,
            delivery,
        };
        if self.is_connected() {
            let op = self.new_op();
            self.send_publish(now, op, publish)?;
            Ok(op)
        } else if self.queue.len() >= self.config.publish_queue {
            Err(ClientError::QueueFull {
                capacity: self.config.publish_queue,
            })
        } else {
            let op = self.new_op();
            self.queue.push_back(Queued { op, publish });
            Ok(op)
        }
    }

    /// Asks for the members of `channel`. Needs a live connection
    /// ([`ClientError::NotConnected`] otherwise).
    pub fn presence(&mut self, now: u64, channel: impl Into<String>) -> Result<OpId, ClientError> {
        self.check_open()?;
        if !self.is_connected() {
            return Err(ClientError::NotConnected);
        }
        let channel = channel.into();
        let op = self.new_op();
        let message = ClientMessage::Presence(ChannelRef { channel });
        self.send_request(now, message, Request::Presence { op }, true)?;
        Ok(op)
    }

    /// Reads a page of `channel`'s stored history (needs a live connection): with `since`,
    /// the oldest publications after it; without, the newest before `before` (or the end).
    /// Completes with [`Completion::History`].
    pub fn history(
        &mut self,
        now: u64,
        channel: impl Into<String>,
        since: Option<u64>,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<OpId, ClientError> {
        self.check_open()?;
        if !self.is_connected() {
            return Err(ClientError::NotConnected);
        }
        let op = self.new_op();
        let message = ClientMessage::History(History {
            channel: channel.into(),
            since,
            before,
            limit,
        });
        self.send_request(now, message, Request::History { op }, true)?;
        Ok(op)
    }

    /// Calls `method` of the application's back end with `data` (needs a live connection:
    /// [`ClientError::NotConnected`] otherwise). Completes with [`Completion::Rpc`] and the
    /// back end's answer, or fails with [`ClientError::Server`] carrying the server's code:
    /// 4004 `not_found` (no back end answers the method), 4003 `forbidden` (the back end
    /// refused, with its message), 4503 `unavailable` (down or too slow: retryable), 4500
    /// `internal_error`, 4400 `bad_frame` (a method that is empty, over 128 bytes or has
    /// control characters). Sent once, never resent: a drop before the answer fails it with
    /// [`ClientError::Disconnected`].
    pub fn rpc(
        &mut self,
        now: u64,
        method: impl Into<String>,
        data: serde_json::Value,
    ) -> Result<OpId, ClientError> {
        self.check_open()?;
        if !self.is_connected() {
            return Err(ClientError::NotConnected);
        }
        let op = self.new_op();
        let message = ClientMessage::Rpc(Rpc {
            method: method.into(),
            data,
        });
        self.send_request(now, message, Request::Rpc { op }, true)?;
        Ok(op)
    }

    /// Tells the other members of `channel` that the user is typing. Fire and forget:
    /// dropped when not connected.
    pub fn typing(&mut self, _now: u64, channel: impl Into<String>) {
        if let (true, Some(attempt)) = (self.is_connected(), &self.attempt) {
            let conn = attempt.conn;
            let frame = ClientFrame {
                id: None,
                message: ClientMessage::Typing(ChannelRef {
                    channel: channel.into(),
                }),
            };
            self.push(Output::Send {
                conn,
                text: frame.encode(),
            });
        }
    }

    // ----- helpers shared by the submodules -----

    /// Sends the pending acknowledgement of the personal channel, if connected.
    fn send_ack(&mut self) {
        let (Some(channel), Some(attempt), true) =
            (self.personal.clone(), &self.attempt, self.is_connected())
        else {
            return;
        };
        let conn = attempt.conn;
        if let Some((epoch, offset)) = self.pending_ack.take() {
            let frame = ClientFrame {
                id: None,
                message: ClientMessage::Ack(Ack {
                    channel,
                    epoch,
                    offset,
                }),
            };
            self.push(Output::Send {
                conn,
                text: frame.encode(),
            });
        }
    }

    /// Notes that the application got a personal-channel publication; acknowledged after
    /// [`Config::ack_delay`].
    fn note_processed(&mut self, now: u64, channel: &str, epoch: &str, offset: u64) {
        if self.personal.as_deref() != Some(channel) {
            return;
        }
        self.pending_ack = Some((epoch.to_owned(), offset));
        if !self.timers.contains_key(&Timer::Ack) {
            let delay = u64::try_from(self.config.ack_delay.as_millis()).unwrap_or(u64::MAX);
            self.set_timer(Timer::Ack, now.saturating_add(delay));
        }
    }

    fn push(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    fn emit(&mut self, event: ClientEvent) {
        self.push(Output::Event(event));
    }

    fn emit_connection(&mut self, event: ConnectionEvent) {
        self.emit(ClientEvent::Connection(event));
    }

    fn complete(&mut self, op: OpId, result: Result<Completion, ClientError>) {
        self.push(Output::Completed { op, result });
    }

    fn fail_all(&mut self, ops: impl IntoIterator<Item = OpId>, error: &ClientError) {
        for op in ops {
            self.complete(op, Err(error.clone()));
        }
    }

    fn new_op(&mut self) -> OpId {
        self.next_op += 1;
        OpId(self.next_op)
    }

    fn set_timer(&mut self, timer: Timer, deadline: u64) {
        if self.timers.insert(timer, deadline) != Some(deadline) {
            self.push(Output::SetTimer { timer, deadline });
        }
    }

    fn cancel_timer(&mut self, timer: Timer) {
        if self.timers.remove(&timer).is_some() {
            self.push(Output::CancelTimer { timer });
        }
    }

    fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    fn check_open(&self) -> Result<(), ClientError> {
        match &self.closed {
            Some((code, reason)) if self.state == State::Closed => Err(ClientError::Closed {
                code: *code,
                reason: reason.clone(),
            }),
            _ => Ok(()),
        }
    }
}
