//! One WebSocket connection, transport only: a reader loop (size, rate limit, decode, then
//! [`requests::dispatch`](crate::requests::dispatch)) and a writer task (`writer`). What a
//! request does lives in `requests/`; who may connect is decided in `handshake`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::stream::SplitStream;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tidings_protocol::{ClientFrame, Code};
use tokio::time::{Instant, sleep_until};

use crate::auth::Claims;
use crate::errors::RequestError;
use crate::hub::Conn;
use crate::node::Shared;
use crate::outbox::Outbox;
use crate::requests::Deferred;

mod session;
mod writer;

pub(crate) use session::Session;
use writer::{close_frame, write_loop};

/// Publishes one connection may have waiting for their commit before it stops reading: deep
/// enough that one client's stream of publishes fills group commits, bounded so that it
/// cannot queue without limit.
const MAX_DEFERRED: usize = 64;

/// How long a closing connection waits for the answers of publishes it already accepted.
const DEFERRED_GRACE: Duration = Duration::from_secs(5);

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
        crate::metrics::error(code);
        let frame = close_frame(code, &reason);
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            socket.send(Message::Close(Some(frame))),
        )
        .await;
    })
}

/// Runs an admitted connection until it ends.
pub(crate) async fn serve(shared: Arc<Shared>, socket: WebSocket, admission: Admission) {
    let limits = &shared.config.limits;
    let user_id: Arc<str> = Arc::from(admission.claims.sub.as_str());
    let session_id = format!("{:016x}", rand::random::<u64>());
    let outbox = Outbox::new(limits.outbound_queue_bytes, limits.outbound_queue_frames);
    let registered = shared.hub.register(
        session_id,
        user_id.clone(),
        outbox,
        limits.max_connections_per_user,
    );
    let Some(conn) = registered else {
        let reason = format!(
            "user already has {} connections",
            limits.max_connections_per_user
        );
        return refuse(socket, Code::TooManyConnections, reason).await;
    };
    metrics::gauge!(crate::metrics::CONNECTIONS).increment(1.0);
    shared.hub.emit("user.connected", None, who(&conn));
    tracing::debug!(session = %conn.session_id, user = %user_id, "connected");

    let mut session = Session::new(
        shared.clone(),
        conn.clone(),
        admission.claims,
        admission.device,
    );
    let (sink, stream) = socket.split();
    let writer = tokio::spawn(write_loop(sink, conn.clone(), shared.config.heartbeat));
    // Boxed, like request handling: a future's state is as large as its largest await, and
    // the connection's task lives for hours while this runs for microseconds.
    let started = match Box::pin(session.start(admission.bound_channel)).await {
        Ok(()) => true,
        Err(RequestError { code, message }) => {
            conn.outbox.close(code, message);
            false
        }
    };
    let connection = Connection {
        limiter: rate_limiter(&shared),
        violations: (Instant::now(), 0),
        session,
    };
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
    session: Session,
    limiter: DefaultDirectRateLimiter,
    /// (start of the current one-second window, violations in it).
    violations: (Instant, u32),
}

impl Connection {
    fn conn(&self) -> &Arc<Conn> {
        &self.session.conn
    }

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
        let session = &mut self.session;
        let channels = std::mem::take(&mut session.subscriptions);
        Box::pin(session.shared.hub.unregister(&session.conn, channels)).await;
        metrics::gauge!(crate::metrics::CONNECTIONS).decrement(1.0);
        session
            .shared
            .hub
            .emit("user.disconnected", None, who(&session.conn));
        tracing::debug!(session = %session.conn.session_id, user = %session.conn.user_id, "disconnected");
    }

    async fn read_loop(
        &mut self,
        mut stream: SplitStream<WebSocket>,
        mut writer: tokio::task::JoinHandle<()>,
    ) {
        let config = &self.session.shared.config;
        let silence_limit = config.heartbeat + config.heartbeat_timeout;
        let silence = sleep_until(Instant::now() + silence_limit);
        tokio::pin!(silence);
        let expiry = sleep_until(token_deadline(self.session.claims.exp));
        tokio::pin!(expiry);
        // Answers still to come (publishes waiting for their commit), in any order; at most
        // MAX_DEFERRED before the next frame is read.
        let mut deferred = FuturesUnordered::<Deferred>::new();
        loop {
            tokio::select! {
                _ = &mut writer => return,
                Some(()) = deferred.next(), if !deferred.is_empty() => {}
                () = self.conn().outbox.closed() => break,
                () = &mut silence => {
                    self.conn().outbox.close(Code::HeartbeatTimeout, "no frame within the heartbeat timeout");
                    break;
                }
                () = &mut expiry => {
                    self.conn().outbox.close(Code::Unauthenticated, "token expired");
                    break;
                }
                frame = stream.next(), if deferred.len() < MAX_DEFERRED => {
                    silence.as_mut().reset(Instant::now() + silence_limit);
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            if let Some(answer) = Box::pin(self.on_text(text.as_str())).await {
                                deferred.push(answer);
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            // Counted like text: a flood of them is rate limited too.
                            metrics::counter!(crate::metrics::FRAMES_IN).increment(1);
                            if self.limiter.check().is_err() {
                                self.rate_limited("");
                            } else {
                                let error = RequestError::new(Code::BadFrame, "binary frames are not supported; send JSON text");
                                self.session.reply_error(None, &error);
                            }
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) | None => {
                            self.conn().outbox.close(Code::Normal, "");
                            break;
                        }
                        Some(Err(e)) => {
                            if is_size_error(e) {
                                self.too_large();
                            } else {
                                self.conn().outbox.close(Code::Abnormal, "");
                            }
                            break;
                        }
                    }
                    if self.conn().outbox.is_closing() {
                        break;
                    }
                }
            }
        }
        // What was accepted is committed whatever happens here; its answers go out if the
        // writer still sends (a client that closed after its publishes still hears them).
        if !deferred.is_empty() {
            let answered = async { while deferred.next().await.is_some() {} };
            let _ = tokio::time::timeout(DEFERRED_GRACE, answered).await;
        }
        finish_writer(writer).await;
    }

    fn too_large(&self) {
        let limit = self.session.shared.config.limits.max_frame_bytes;
        crate::metrics::error(Code::FrameTooLarge);
        self.conn().outbox.close(
            Code::FrameTooLarge,
            format!("frame larger than {limit} bytes"),
        );
    }

    /// Handles one text frame; returns the answer still to come, if any.
    async fn on_text(&mut self, text: &str) -> Option<Deferred> {
        metrics::counter!(crate::metrics::FRAMES_IN).increment(1);
        if text.len() > self.session.shared.config.limits.max_frame_bytes {
            self.too_large();
            return None;
        }
        if self.limiter.check().is_err() {
            self.rate_limited(text);
            return None;
        }
        match ClientFrame::decode(text) {
            Ok(frame) => crate::requests::dispatch(&mut self.session, frame).await,
            Err(e) => {
                let error = RequestError::new(Code::BadFrame, e.kind.to_string());
                self.session.reply_error(e.id, &error);
                None
            }
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
        if *count
            > self
                .session
                .shared
                .config
                .limits
                .rate_violations_before_close
        {
            crate::metrics::error(Code::RateLimited);
            self.conn()
                .outbox
                .close(Code::RateLimited, "rate limit exceeded repeatedly");
        } else {
            // Best effort to answer the request it refused.
            let id = ClientFrame::decode(text).ok().and_then(|f| f.id);
            let error = RequestError::new(Code::RateLimited, "rate limit exceeded; slow down");
            self.session.reply_error(id, &error);
        }
    }
}

/// The instant a token with this `exp` expires.
fn token_deadline(exp: u64) -> Instant {
    let remaining = exp.saturating_sub(crate::time::now_secs());
    // Far-future tokens: cap the timer at a year (sleep_until overflows on huge values).
    Instant::now() + Duration::from_secs(remaining.min(365 * 24 * 3600))
}

/// Whether a read error means the peer sent a frame above tungstenite's size cap.
fn is_size_error(error: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::error::Error;
    match error.into_inner().downcast::<Error>() {
        Ok(e) => matches!(*e, Error::Capacity(_)),
        Err(_) => false,
    }
}

#[cfg(test)]
mod future_sizes {
    //! Every idle connection keeps two futures alive for hours: their size is memory per
    //! connection (the benchmark's idle scenario measures the total). Rarely-run work is
    //! boxed so that it does not inflate them; these bounds catch a regression such as a
    //! big local held across the read loop's await.
    use futures_util::stream::SplitSink;

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
