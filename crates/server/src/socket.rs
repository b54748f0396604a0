//! One WebSocket connection: the handshake checks, then a reader loop (decode → limits →
//! request handling) and a writer task (outbox → socket, one flush per batch, heartbeats).

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::future::BoxFuture;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tidings_protocol::messages::{Connected, Recover, Reply};
use tidings_protocol::{
    ClientFrame, ClientMessage, Code, PROTOCOL_VERSION, RawEvent, ServerFrame, ServerMessage,
};
use tokio::time::{Instant, sleep_until};

use crate::auth::{Action, Claims};
use crate::hub::{Asked, Conn};
use crate::outbox::{Batch, Outbox};
use crate::server::Shared;

/// Who connected, decided during the HTTP upgrade.
pub(crate) struct Admission {
    pub(crate) claims: Claims,
    /// A channel the route binds the connection to (e.g. `ticket:42` from the path).
    pub(crate) bound_channel: Option<String>,
    /// The device whose inbox position the personal channel starts from.
    pub(crate) device: String,
}

/// Closes a socket right after the upgrade with a code and reason (auth failures etc.).
///
/// Boxed so that its state does not enlarge every connection's long-lived task.
pub(crate) fn refuse(mut socket: WebSocket, code: Code, reason: String) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        metrics::counter!("tidings_errors_total", "code" => code.name()).increment(1);
        let frame = CloseFrame {
            code: code.as_u16(),
            reason: Utf8Bytes::from(reason),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            socket.send(Message::Close(Some(frame))),
        )
        .await;
    })
}

/// Runs an admitted connection until it ends.
pub(crate) async fn serve(shared: Arc<Shared>, socket: WebSocket, admission: Admission) {
    let config = &shared.config;
    let user_id: Arc<str> = Arc::from(admission.claims.sub.as_str());
    let session_id = format!("{:016x}", rand::random::<u64>());
    let outbox = Outbox::new(
        config.limits.outbound_queue_bytes,
        config.limits.outbound_queue_frames,
    );
    let Some(conn) = shared.hub.register(
        session_id,
        user_id.clone(),
        outbox,
        config.limits.max_connections_per_user,
    ) else {
        let reason = format!(
            "user already has {} connections",
            config.limits.max_connections_per_user
        );
        return refuse(socket, Code::TooManyConnections, reason).await;
    };
    metrics::gauge!("tidings_connections").increment(1.0);
    shared.hub.emit("user.connected", None, who(&conn));
    tracing::debug!(session = %conn.session_id, user = %user_id, "connected");

    let mut connection = Connection {
        device: admission.device,
        claims: Arc::new(admission.claims),
        subscriptions: HashSet::new(),
        automatic: Vec::new(),
        limiter: rate_limiter(&shared),
        violations: (Instant::now(), 0),
        shared: shared.clone(),
        conn: conn.clone(),
    };
    let (sink, stream) = socket.split();
    let writer = tokio::spawn(write_loop(sink, conn, shared.config.heartbeat));
    // Boxed, like request handling: a future's state is as large as its largest await, and
    // the connection's task lives for hours while this runs for microseconds.
    let started = Box::pin(connection.start(admission.bound_channel)).await;
    // The rest of the connection's life gets a task of its own, sized for the read loop:
    // this future, and axum's upgrade task around it, carry the handshake's state and end
    // here. It halves what an idle connection costs.
    tokio::spawn(connection.run(stream, writer, started));
}

/// The payload of the `user.connected` / `user.disconnected` hooks.
fn who(conn: &Conn) -> serde_json::Value {
    serde_json::json!({"user_id": &*conn.user_id, "session_id": &conn.session_id})
}

/// Lets the writer send what is queued and the close frame; a client that does not read
/// gets its socket dropped after the deadline. Boxed: it runs once, at the end.
fn finish_writer(writer: tokio::task::JoinHandle<()>) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let abort = writer.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .is_err()
        {
            abort.abort();
        }
    })
}

fn rate_limiter(shared: &Shared) -> DefaultDirectRateLimiter {
    let limits = &shared.config.limits;
    let rate = NonZeroU32::new(limits.rate_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limits.rate_burst).unwrap_or(rate);
    RateLimiter::direct_with_clock(
        Quota::per_second(rate).allow_burst(burst),
        shared.rate_clock.clone(),
    )
}

/// The reader side's state for one connection.
struct Connection {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    claims: Arc<Claims>,
    /// The device named at connect (`?device=`), for the offline inbox.
    device: String,
    /// Channels this connection is in, including the automatic ones.
    subscriptions: HashSet<Arc<str>>,
    /// Channels the server joined by itself (personal, route-bound): they cannot be left.
    automatic: Vec<Arc<str>>,
    limiter: DefaultDirectRateLimiter,
    /// (start of the current one-second window, violations in it).
    violations: (Instant, u32),
}

impl Connection {
    /// Reads until the connection ends (unless `start` refused it), then leaves every channel.
    async fn run(
        mut self,
        stream: SplitStream<WebSocket>,
        writer: tokio::task::JoinHandle<()>,
        started: bool,
    ) {
        if started {
            self.read_loop(stream, writer).await;
        } else {
            finish_writer(writer).await;
        }
        let channels = std::mem::take(&mut self.subscriptions);
        Box::pin(self.shared.hub.unregister(&self.conn, channels)).await;
        metrics::gauge!("tidings_connections").decrement(1.0);
        self.shared
            .hub
            .emit("user.disconnected", None, who(&self.conn));
        tracing::debug!(session = %self.conn.session_id, user = %self.conn.user_id, "disconnected");
    }

    /// Queues `connected`, then joins the personal and route-bound channels. False when the
    /// connection was refused (the close is already queued).
    async fn start(&mut self, bound_channel: Option<String>) -> bool {
        let mut automatic = vec![tidings_protocol::user_channel(&self.conn.user_id)];
        if let Some(channel) = bound_channel {
            if !self.allowed(&channel, Action::Subscribe).await {
                self.conn
                    .outbox
                    .close(Code::Forbidden, format!("access to {channel} denied"));
                return false;
            }
            if !automatic.contains(&channel) {
                automatic.push(channel);
            }
        }
        // Read positions first and announce them in `connected`; then subscribe recovering
        // from those positions, so whatever is published in between still arrives, after
        // `connected` and in order.
        let personal = automatic.first().cloned().unwrap_or_default();
        let mut subscriptions = Vec::with_capacity(automatic.len());
        for channel in &automatic {
            let position = match self.shared.hub.position(channel).await {
                Ok(position) => position,
                Err(e) => {
                    self.conn.outbox.close(Code::Unavailable, e.to_string());
                    return false;
                }
            };
            // The personal channel is the offline inbox: it starts where this device
            // acknowledged, so what was published while it was away follows `connected`.
            let offset = if *channel == personal {
                match self.inbox_start(channel, &position).await {
                    Ok(offset) => offset,
                    Err(e) => {
                        self.conn.outbox.close(Code::Unavailable, e.to_string());
                        return false;
                    }
                }
            } else {
                position.offset
            };
            subscriptions.push(tidings_protocol::messages::ChannelPosition {
                channel: channel.clone(),
                epoch: position.epoch.to_string(),
                offset,
            });
        }
        let config = &self.shared.config;
        self.conn
            .send(&ServerFrame::push(ServerMessage::Connected(Connected {
                session_id: self.conn.session_id.clone(),
                user_id: self.conn.user_id.to_string(),
                protocol: PROTOCOL_VERSION,
                heartbeat_ms: millis(config.heartbeat),
                heartbeat_timeout_ms: millis(config.heartbeat_timeout),
                max_frame_bytes: config.limits.max_frame_bytes,
                subscriptions: subscriptions.clone(),
            })));
        for position in subscriptions {
            let recover = Recover {
                epoch: position.epoch,
                offset: position.offset,
            };
            let joined = self
                .shared
                .hub
                .subscribe(
                    &self.conn,
                    &position.channel,
                    None,
                    Some(recover),
                    Asked::Automatically,
                )
                .await;
            if let Err(e) = joined {
                self.conn.outbox.close(Code::Unavailable, e.to_string());
                return false;
            }
            let channel: Arc<str> = Arc::from(position.channel);
            self.automatic.push(channel.clone());
            self.subscriptions.insert(channel);
        }
        true
    }

    /// The offset the personal channel starts after: the device's (or user's) last ack in
    /// this epoch, else 0; moved past what retention already removed.
    async fn inbox_start(
        &self,
        channel: &str,
        position: &crate::store::Position,
    ) -> Result<u64, crate::store::StoreError> {
        let store = self.shared.hub.store();
        let (user, device) = (&*self.conn.user_id, self.device.as_str());
        let known = store.inbox_start(user, device).await?;
        let acked = match &known {
            Some(start) if *start.epoch == *position.epoch && start.offset <= position.offset => {
                start.offset
            }
            _ => 0,
        };
        let start = if acked >= position.offset {
            position.offset
        } else {
            let oldest = store.history(channel, Some(acked), None, 1).await?;
            match oldest.first().and_then(|p| p.offset) {
                Some(first) => first.saturating_sub(1).max(acked),
                None => position.offset,
            }
        };
        // A device's first connection pins its own position, so from now on it gets every
        // item once, whatever the user's other devices acknowledge.
        if !known.as_ref().is_some_and(|k| k.own) {
            store.ack(user, device, &position.epoch, start).await?;
        }
        Ok(start)
    }

    async fn read_loop(
        &mut self,
        mut stream: SplitStream<WebSocket>,
        mut writer: tokio::task::JoinHandle<()>,
    ) {
        let silence_limit = self.shared.config.heartbeat + self.shared.config.heartbeat_timeout;
        let silence = sleep_until(Instant::now() + silence_limit);
        tokio::pin!(silence);
        let expiry = sleep_until(token_deadline(self.claims.exp));
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                _ = &mut writer => return,
                () = self.conn.outbox.closed() => break,
                () = &mut silence => {
                    self.conn.outbox.close(Code::HeartbeatTimeout, "no frame within the heartbeat timeout");
                    break;
                }
                () = &mut expiry => {
                    self.conn.outbox.close(Code::Unauthenticated, "token expired");
                    break;
                }
                frame = stream.next() => {
                    silence.as_mut().reset(Instant::now() + silence_limit);
                    match frame {
                        Some(Ok(Message::Text(text))) => Box::pin(self.on_text(text.as_str())).await,
                        Some(Ok(Message::Binary(_))) => {
                            self.reply_error(None, Code::BadFrame, "binary frames are not supported; send JSON text");
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | None => {
                            self.conn.outbox.close(Code::Normal, "");
                            break;
                        }
                        Some(Err(e)) => {
                            if is_size_error(e) {
                                self.too_large();
                            } else {
                                self.conn.outbox.close(Code::Abnormal, "");
                            }
                            break;
                        }
                    }
                    if self.conn.outbox.is_closing() {
                        break;
                    }
                }
            }
        }
        finish_writer(writer).await;
    }

    fn too_large(&self) {
        let limit = self.shared.config.limits.max_frame_bytes;
        metrics::counter!("tidings_errors_total", "code" => Code::FrameTooLarge.name())
            .increment(1);
        self.conn.outbox.close(
            Code::FrameTooLarge,
            format!("frame larger than {limit} bytes"),
        );
    }

    async fn on_text(&mut self, text: &str) {
        metrics::counter!("tidings_frames_in_total").increment(1);
        if text.len() > self.shared.config.limits.max_frame_bytes {
            return self.too_large();
        }
        if self.limiter.check().is_err() {
            return self.rate_limited(text);
        }
        match ClientFrame::decode(text) {
            Ok(frame) => self.handle(frame).await,
            Err(e) => self.reply_error(e.id, Code::BadFrame, &e.kind.to_string()),
        }
    }

    fn rate_limited(&mut self, text: &str) {
        let now = Instant::now();
        let (window, count) = &mut self.violations;
        if now.duration_since(*window) > Duration::from_secs(1) {
            *window = now;
            *count = 0;
        }
        *count += 1;
        if *count > self.shared.config.limits.rate_violations_before_close {
            metrics::counter!("tidings_errors_total", "code" => Code::RateLimited.name())
                .increment(1);
            self.conn
                .outbox
                .close(Code::RateLimited, "rate limit exceeded repeatedly");
        } else {
            // Best effort to answer the request it refused.
            let id = ClientFrame::decode(text).ok().and_then(|f| f.id);
            self.reply_error(id, Code::RateLimited, "rate limit exceeded; slow down");
        }
    }

    fn reply_error(&self, id: Option<u64>, code: Code, message: &str) {
        metrics::counter!("tidings_errors_total", "code" => code.name()).increment(1);
        self.conn.send(&ServerFrame::error(id, code, message));
    }

    fn reply(&self, id: Option<u64>, reply: Reply) {
        self.conn.send(&ServerFrame {
            id,
            message: ServerMessage::Reply(reply),
        });
    }

    async fn allowed(&self, channel: &str, action: Action) -> bool {
        // The broadcast pseudo-channel is the server's alone.
        if channel == tidings_protocol::BROADCAST_CHANNEL {
            return false;
        }
        self.shared
            .authorize(&self.conn.user_id, &self.claims, channel, action)
            .await
    }

    async fn handle(&mut self, frame: ClientFrame) {
        let id = frame.id;
        match frame.message {
            ClientMessage::Ping => {
                self.conn.send(&ServerFrame {
                    id,
                    message: ServerMessage::Pong,
                });
            }
            ClientMessage::Subscribe(request) => {
                let channel = request.channel;
                if let Err(reason) = check_channel_name(&channel) {
                    return self.reply_error(id, Code::BadFrame, &reason);
                }
                let already = self.subscriptions.contains(channel.as_str());
                // Channels the server joined by itself do not count against the limit.
                let counted = self
                    .subscriptions
                    .len()
                    .saturating_sub(self.automatic.len());
                if !already && counted >= self.shared.config.limits.max_subscriptions {
                    let message = format!(
                        "at most {} channels per connection",
                        self.shared.config.limits.max_subscriptions
                    );
                    return self.reply_error(id, Code::TooManySubscriptions, &message);
                }
                if !self.allowed(&channel, Action::Subscribe).await {
                    return self.reply_error(
                        id,
                        Code::Forbidden,
                        &format!("access to {channel} denied"),
                    );
                }
                let joined = self
                    .shared
                    .hub
                    .subscribe(
                        &self.conn,
                        &channel,
                        request.events,
                        request.recover,
                        Asked::Request(id),
                    )
                    .await;
                match joined {
                    Ok(_) => {
                        self.subscriptions.insert(Arc::from(channel));
                    }
                    Err(e) => self.reply_error(id, Code::Unavailable, &e.to_string()),
                }
            }
            ClientMessage::Unsubscribe(request) => {
                if self.automatic.iter().any(|c| **c == *request.channel) {
                    let message = format!(
                        "{} was joined by the server and cannot be left",
                        request.channel
                    );
                    return self.reply_error(id, Code::Forbidden, &message);
                }
                if self.subscriptions.remove(request.channel.as_str()) {
                    self.shared
                        .hub
                        .unsubscribe(&self.conn, &request.channel)
                        .await;
                    self.reply(
                        id,
                        Reply::Unsubscribe {
                            channel: request.channel,
                        },
                    );
                } else {
                    self.reply_error(
                        id,
                        Code::NotFound,
                        &format!("not subscribed to {}", request.channel),
                    );
                }
            }
            ClientMessage::Publish(request) => {
                if let Err(reason) = check_channel_name(&request.channel) {
                    return self.reply_error(id, Code::BadFrame, &reason);
                }
                if let Err(e) = request.event.validate_standard() {
                    let message = format!("invalid {} event: {e}", request.event.kind());
                    return self.reply_error(id, Code::BadFrame, &message);
                }
                if !self.allowed(&request.channel, Action::Publish).await {
                    return self.reply_error(
                        id,
                        Code::Forbidden,
                        &format!("publishing to {} denied", request.channel),
                    );
                }
                self.publish(id, request.channel, request.event, request.delivery)
                    .await;
            }
            ClientMessage::Typing(request) => {
                if self.shared.hub.typing(&self.conn, &request.channel).await {
                    if id.is_some() {
                        self.reply(
                            id,
                            Reply::Typing {
                                channel: request.channel,
                            },
                        );
                    }
                } else {
                    self.reply_error(
                        id,
                        Code::NotFound,
                        &format!("not subscribed to {}", request.channel),
                    );
                }
            }
            ClientMessage::Presence(request) => {
                if !self.subscriptions.contains(request.channel.as_str())
                    && !self.allowed(&request.channel, Action::Subscribe).await
                {
                    return self.reply_error(
                        id,
                        Code::Forbidden,
                        &format!("access to {} denied", request.channel),
                    );
                }
                let members = self.shared.hub.members(&request.channel).await;
                self.reply(
                    id,
                    Reply::Presence {
                        channel: request.channel,
                        members,
                    },
                );
            }
            ClientMessage::History(request) => {
                if let Err(reason) = check_channel_name(&request.channel) {
                    return self.reply_error(id, Code::BadFrame, &reason);
                }
                if !self.allowed(&request.channel, Action::Subscribe).await {
                    let message = format!("access to {} denied", request.channel);
                    return self.reply_error(id, Code::Forbidden, &message);
                }
                let limit = request.limit.unwrap_or(100);
                let page = self
                    .shared
                    .history_page(&request.channel, request.since, request.before, limit)
                    .await;
                match page {
                    Ok(page) => self.reply(id, Reply::History(page)),
                    Err(e) => self.reply_error(id, Code::Unavailable, &e.to_string()),
                }
            }
            ClientMessage::Ack(ack) => {
                if ack.channel != tidings_protocol::user_channel(&self.conn.user_id) {
                    let message = "acknowledgements are kept for your own user:{id} channel only";
                    return self.reply_error(id, Code::Forbidden, message);
                }
                let store = self.shared.hub.store();
                match store
                    .ack(&self.conn.user_id, &self.device, &ack.epoch, ack.offset)
                    .await
                {
                    Ok(()) if id.is_some() => self.reply(
                        id,
                        Reply::Ack {
                            channel: ack.channel,
                            offset: ack.offset,
                        },
                    ),
                    Ok(()) => {}
                    Err(e) => self.reply_error(id, Code::Unavailable, &e.to_string()),
                }
            }
            _ => self.reply_error(id, Code::BadFrame, "unsupported request"),
        }
    }

    async fn publish(
        &self,
        id: Option<u64>,
        channel: String,
        event: RawEvent,
        delivery: Option<tidings_protocol::Delivery>,
    ) {
        let requested = delivery.unwrap_or_else(|| event.default_delivery());
        let delivery = self.shared.delivery(&channel, requested);
        let sender = Some(self.conn.user_id.clone());
        match self
            .shared
            .hub
            .publish(&channel, event, sender, delivery)
            .await
        {
            Ok(published) => self.reply(
                id,
                Reply::Publish {
                    channel,
                    offset: published.offset,
                    epoch: published.epoch,
                    delivered: published.delivered as u64,
                },
            ),
            Err(e) => self.reply_error(id, Code::Unavailable, &e.to_string()),
        }
    }
}

/// Channel names: 1–255 bytes, no control characters, not the broadcast pseudo-channel.
pub(crate) fn check_channel_name(channel: &str) -> Result<(), String> {
    if channel.is_empty() || channel.len() > 255 {
        return Err("channel names are 1 to 255 bytes".to_owned());
    }
    if channel.chars().any(char::is_control) {
        return Err("channel names may not contain control characters".to_owned());
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The instant a token with this `exp` expires.
fn token_deadline(exp: u64) -> Instant {
    let remaining = exp.saturating_sub(crate::auth::unix_now());
    // Far-future tokens: cap the timer at a year (sleep_until overflows on huge values).
    Instant::now() + Duration::from_secs(remaining.min(365 * 24 * 3600))
}

/// Whether a read error means the peer sent a frame above tungstenite's size cap.
fn is_size_error(error: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
    match error.into_inner().downcast::<Error>() {
        Ok(e) => matches!(
            *e,
            Error::Capacity(CapacityError::MessageTooLong { .. }) | Error::Capacity(_)
        ),
        Err(_) => false,
    }
}

/// Sends queued frames, one flush per batch, plus heartbeat pings; ends after a close order
/// or when the socket fails.
async fn write_loop(mut sink: SplitSink<WebSocket, Message>, conn: Arc<Conn>, heartbeat: Duration) {
    let mut ticker = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let batch = tokio::select! {
            batch = conn.outbox.next_batch() => batch,
            _ = ticker.tick() => Batch { ping: true, ..Batch::default() },
        };
        let Batch {
            frames,
            ping,
            close,
        } = batch;
        let count = frames.len() as u64;
        let mut result = Ok(());
        for item in frames {
            result = sink.feed(Message::Text(item.frame)).await;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() && ping {
            result = sink.feed(Message::Ping(Default::default())).await;
        }
        if result.is_ok() {
            // A client that stops reading stalls this flush; the outbox keeps bounding memory
            // and a close order (4009) cannot be delivered to it anyway.
            result = sink.flush().await;
        }
        metrics::counter!("tidings_frames_out_total").increment(count);
        if result.is_err() {
            conn.outbox.close(Code::Abnormal, "");
            return;
        }
        if let Some(order) = close {
            if order.code != Code::Abnormal {
                let frame = CloseFrame {
                    code: order.code.as_u16(),
                    reason: Utf8Bytes::from(truncate_reason(order.reason)),
                };
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    sink.send(Message::Close(Some(frame))),
                )
                .await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
            return;
        }
    }
}

/// Close reasons are limited to 123 bytes by RFC 6455.
fn truncate_reason(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut end = 123;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

#[cfg(test)]
mod future_sizes {
    //! Every idle connection keeps two futures alive for hours: their size is memory per
    //! connection (the benchmark's idle scenario measures the total). Rarely-run work is
    //! boxed so that it does not inflate them; these bounds catch a regression such as a
    //! big local held across the read loop's await.
    use super::*;

    fn size_of_output<A, B, C, F: FnOnce(A, B, C) -> Fut, Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn the_long_lived_connection_futures_stay_small() {
        let reader = size_of_output(
            |connection: Connection,
             stream: SplitStream<WebSocket>,
             writer: tokio::task::JoinHandle<()>| connection.run(stream, writer, true),
        );
        let writer = size_of_output(
            |sink: SplitSink<WebSocket, Message>, conn: Arc<Conn>, heartbeat: Duration| {
                write_loop(sink, conn, heartbeat)
            },
        );
        assert!(reader <= 1024, "the read task's future is {reader} bytes");
        assert!(writer <= 640, "the write task's future is {writer} bytes");
        let refusal = size_of_output(refuse);
        assert!(refusal <= 64, "refuse's future is {refusal} bytes: box it");
    }
}
