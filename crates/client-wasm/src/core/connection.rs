//! The connection's life: attempts, `connected`, heartbeat, drops, and the decision after
//! each drop (reconnect after which delay, or close for good).

use tidings_protocol::messages::Connected;
use tidings_protocol::{ClientMessage, Code, PROTOCOL_VERSION, ServerFrame, ServerMessage};

use super::config::{millis, url_with_token};
use super::requests::Request;
use super::{Auth, ClientEvent, ConnId, ConnectionEvent, Core, Input, Output, State, Timer};
use crate::ClientError;

/// One connect attempt, and the connection it becomes.
pub(super) struct Attempt {
    /// Tags the transport's inputs; anything tagged otherwise is stale.
    pub(super) conn: ConnId,
    pub(super) phase: Phase,
    /// When `connected` arrived: how long the connection lasted decides whether the
    /// backoff resets.
    pub(super) connected_at: Option<u64>,
}

/// How far an attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for the driver's token.
    Token,
    /// The transport is opening.
    Opening,
    /// Open, waiting for `connected`.
    Handshake,
    /// `connected` arrived.
    Connected,
}

/// Liveness of a connection: any frame (or WebSocket ping) is proof of life. After
/// `interval` of silence the core sends a `ping`; after `timeout` more, the connection is
/// dead (closed locally with 4002). One timer serves both steps, and frames do not re-arm
/// it: when it fires early the core re-arms it from the last activity.
pub(super) struct Heartbeat {
    interval: u64,
    timeout: u64,
    last_activity: u64,
    /// When the probe `ping` was sent, if it is still unanswered.
    probe_sent: Option<u64>,
}

impl Core {
    /// Feeds one input that happened at `now` (milliseconds on the driver's clock).
    pub fn handle(&mut self, now: u64, input: Input) {
        match input {
            Input::Token { conn, result } => {
                if self.is_current(conn, Some(Phase::Token)) {
                    self.on_token(now, conn, result);
                }
            }
            Input::TransportOpened { conn } => {
                if let Some(attempt) = self.attempt.as_mut()
                    && attempt.conn == conn
                    && attempt.phase == Phase::Opening
                {
                    attempt.phase = Phase::Handshake;
                }
            }
            Input::Frame { conn, text } => {
                if self.is_current(conn, None) {
                    self.touch(now);
                    self.on_frame(now, &text);
                }
            }
            Input::Activity { conn } => {
                if self.is_current(conn, None) {
                    self.touch(now);
                }
            }
            Input::TransportClosed { conn, code, reason } => {
                if self.is_current(conn, None) {
                    let code = Code::from_u16(code.unwrap_or(1006));
                    self.connection_lost(now, code, reason, false);
                }
            }
            Input::TransportError { conn, message } => {
                if self.is_current(conn, None) {
                    self.connection_lost(now, Code::Abnormal, message, false);
                }
            }
            Input::TimerFired(timer) => self.on_timer(now, timer),
            Input::Online => {
                self.offline = false;
                if self.state == State::Reconnecting {
                    self.cancel_timer(Timer::Reconnect);
                    self.start_attempt(now);
                }
            }
            Input::Offline => {
                self.offline = true;
                match self.state {
                    State::Connecting | State::Connected => {
                        let reason = "the network is offline".to_owned();
                        self.connection_lost(now, Code::Abnormal, reason, true);
                    }
                    State::Reconnecting => self.schedule_reconnect(now, 0),
                    State::Idle | State::Closed => {}
                }
            }
        }
    }

    fn is_current(&self, conn: ConnId, phase: Option<Phase>) -> bool {
        self.attempt
            .as_ref()
            .is_some_and(|a| a.conn == conn && phase.is_none_or(|p| p == a.phase))
    }

    /// Starts an attempt: asks for a token or opens the transport at once.
    pub(super) fn start_attempt(&mut self, now: u64) {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        let phase = match self.config.auth {
            Auth::Provider => Phase::Token,
            _ => Phase::Opening,
        };
        self.attempt = Some(Attempt {
            conn,
            phase,
            connected_at: None,
        });
        self.state = State::Connecting;
        self.emit_connection(ConnectionEvent::Connecting {
            attempt: self.retry,
        });
        let deadline = now.saturating_add(millis(self.config.connect_timeout));
        self.set_timer(Timer::Connect, deadline);
        match &self.config.auth {
            Auth::Provider => self.push(Output::NeedToken { conn }),
            Auth::Token(token) => {
                let url = url_with_token(self.current_url(), Some(token));
                self.push(Output::OpenTransport { conn, url });
            }
            Auth::None => {
                let url = self.current_url().to_owned();
                self.push(Output::OpenTransport { conn, url });
            }
        }
    }

    fn on_token(&mut self, now: u64, conn: ConnId, result: Result<String, String>) {
        match result {
            Ok(token) => {
                if let Some(attempt) = self.attempt.as_mut() {
                    attempt.phase = Phase::Opening;
                }
                let url = url_with_token(self.current_url(), Some(&token));
                self.push(Output::OpenTransport { conn, url });
            }
            Err(message) => {
                let reason = format!("the token provider failed: {message}");
                self.emit_connection(ConnectionEvent::Error(ClientError::Token(message)));
                self.connection_lost(now, Code::Abnormal, reason, false);
            }
        }
    }

    fn on_frame(&mut self, now: u64, text: &str) {
        let frame = match ServerFrame::decode(text) {
            Ok(frame) => frame,
            Err(error) => {
                let error = ClientError::Decode(error.to_string());
                self.emit_connection(ConnectionEvent::Error(error));
                return;
            }
        };
        match frame.message {
            ServerMessage::Connected(connected) => self.on_connected(now, connected),
            ServerMessage::Pong => self.on_pong(frame.id),
            ServerMessage::Reply(reply) => self.on_reply(now, frame.id, reply),
            ServerMessage::Error(body) => self.on_error(now, frame.id, body),
            ServerMessage::Message(message) => self.on_message(now, message),
            ServerMessage::UserJoined(change) => self.emit(ClientEvent::UserJoined(change)),
            ServerMessage::UserLeft(change) => self.emit(ClientEvent::UserLeft(change)),
            ServerMessage::Typing(notice) => self.emit(ClientEvent::Typing(notice)),
            ServerMessage::Shutdown(shutdown) => {
                // The server closes next; reconnect after the delay it chose (jittered per
                // connection by the server, so used as is).
                self.shutdown_delay = Some(shutdown.reconnect_after_ms);
            }
            _ => {}
        }
    }

    fn on_connected(&mut self, now: u64, connected: Connected) {
        let Some(attempt) = self.attempt.as_mut() else {
            return;
        };
        if attempt.connected_at.is_some() {
            let error = ClientError::Decode("a second `connected` frame".to_owned());
            self.emit_connection(ConnectionEvent::Error(error));
            return;
        }
        if connected.protocol != PROTOCOL_VERSION {
            let reason = format!("the server speaks protocol {}", connected.protocol);
            self.connection_lost(now, Code::UnsupportedProtocol, reason, true);
            return;
        }
        attempt.phase = Phase::Connected;
        attempt.connected_at = Some(now);
        self.cancel_timer(Timer::Connect);
        self.max_frame_bytes = connected.max_frame_bytes;
        self.heartbeat = (connected.heartbeat_ms > 0).then_some(Heartbeat {
            interval: connected.heartbeat_ms,
            // A server that announces no grace period still gets one interval.
            timeout: match connected.heartbeat_timeout_ms {
                0 => connected.heartbeat_ms,
                timeout => timeout,
            },
            last_activity: now,
            probe_sent: None,
        });
        if connected.heartbeat_ms > 0 {
            self.set_timer(Timer::Heartbeat, now.saturating_add(connected.heartbeat_ms));
        }
        self.state = State::Connected;
        self.personal = Some(tidings_protocol::user_channel(&connected.user_id));
        let automatic = connected.subscriptions.clone();
        self.emit_connection(ConnectionEvent::Connected(Box::new(connected)));
        self.restore_subscriptions(now, &automatic);
        self.flush_queue(now);
    }

    /// Any proof of life from the server.
    fn touch(&mut self, now: u64) {
        if let Some(heartbeat) = self.heartbeat.as_mut() {
            heartbeat.last_activity = now;
            heartbeat.probe_sent = None;
        }
    }

    fn on_timer(&mut self, now: u64, timer: Timer) {
        match self.timers.get(&timer) {
            None => return,
            Some(&deadline) if deadline > now => {
                // Fired early (a coarse driver clock): ask again for the same deadline.
                self.push(Output::SetTimer { timer, deadline });
                return;
            }
            Some(_) => {
                self.timers.remove(&timer);
            }
        }
        match timer {
            Timer::Reconnect => {
                if self.state == State::Reconnecting && !self.offline {
                    self.start_attempt(now);
                }
            }
            Timer::Connect => {
                if self.state == State::Connecting {
                    let reason = "the connect attempt timed out".to_owned();
                    self.connection_lost(now, Code::Abnormal, reason, true);
                }
            }
            Timer::Heartbeat => self.on_heartbeat(now),
            Timer::Requests => self.expire_requests(now),
            Timer::Resubscribe => {
                if self.is_connected() {
                    self.retry_subscriptions(now);
                }
            }
            Timer::Ack => self.send_ack(),
        }
    }

    fn on_heartbeat(&mut self, now: u64) {
        let Some(heartbeat) = self.heartbeat.as_mut() else {
            return;
        };
        match heartbeat.probe_sent {
            Some(sent) if now >= sent.saturating_add(heartbeat.timeout) => {
                let reason = "no frame from the server within the heartbeat timeout".to_owned();
                self.connection_lost(now, Code::HeartbeatTimeout, reason, true);
            }
            Some(sent) => {
                let deadline = sent.saturating_add(heartbeat.timeout);
                self.set_timer(Timer::Heartbeat, deadline);
            }
            None if now >= heartbeat.last_activity.saturating_add(heartbeat.interval) => {
                heartbeat.probe_sent = Some(now);
                let deadline = now.saturating_add(heartbeat.timeout);
                // A probe never times out as a request: the heartbeat decides.
                let _ = self.send_request(now, ClientMessage::Ping, Request::Ping, false);
                self.set_timer(Timer::Heartbeat, deadline);
            }
            None => {
                let deadline = heartbeat.last_activity.saturating_add(heartbeat.interval);
                self.set_timer(Timer::Heartbeat, deadline);
            }
        }
    }

    /// The current attempt or connection ended with `code`. With `close`, the core decided
    /// it (heartbeat, timeout, offline) and tells the driver to close the transport.
    pub(super) fn connection_lost(&mut self, now: u64, code: Code, reason: String, close: bool) {
        let Some(attempt) = self.attempt.take() else {
            return;
        };
        if close && attempt.phase != Phase::Token {
            self.push(Output::CloseTransport {
                conn: attempt.conn,
                code: close_frame_code(code),
                reason: reason.clone(),
            });
        }
        self.heartbeat = None;
        self.cancel_timer(Timer::Heartbeat);
        self.cancel_timer(Timer::Connect);
        self.settle_requests(code, &reason);
        self.subscriptions_offline();
        self.emit_connection(ConnectionEvent::Disconnected {
            code,
            reason: reason.clone(),
        });

        let lasted = attempt.connected_at.map(|at| now.saturating_sub(at));
        if lasted.is_some_and(|ms| ms >= millis(self.config.backoff.reset_after)) {
            self.retry = 0;
            self.auth_retried = false;
        }
        let shutdown_delay = self.shutdown_delay.take();
        let provider = self.config.auth == Auth::Provider;
        let delay = if code == Code::Unauthenticated && provider && !self.auth_retried {
            // The token probably expired: retry at once with a fresh one, once.
            self.auth_retried = true;
            0
        } else if !code.is_retryable() {
            self.shut(code, reason);
            return;
        } else if let Some(delay) = shutdown_delay {
            delay
        } else {
            millis(
                self.config
                    .backoff
                    .delay(self.retry, self.random.next_u64()),
            )
        };
        if self
            .config
            .backoff
            .max_attempts
            .is_some_and(|max| self.retry >= max)
        {
            let reason = format!("gave up after {} reconnect attempts: {reason}", self.retry);
            self.shut(code, reason);
            return;
        }
        self.retry = self.retry.saturating_add(1);
        // Another node of the cluster may be up where this one is not.
        self.url_index = (self.url_index + 1) % (1 + self.config.fallback_urls.len());
        self.schedule_reconnect(now, delay);
    }

    /// The URL the next attempt opens.
    fn current_url(&self) -> &str {
        match self.url_index.checked_sub(1) {
            Some(i) => self
                .config
                .fallback_urls
                .get(i)
                .map_or(&self.config.url, |url| url),
            None => &self.config.url,
        }
    }

    /// Enters [`State::Reconnecting`]: the next attempt starts after `delay`, or when the
    /// network is back if it is offline.
    pub(super) fn schedule_reconnect(&mut self, now: u64, delay: u64) {
        self.state = State::Reconnecting;
        if self.offline {
            self.cancel_timer(Timer::Reconnect);
            self.emit_connection(ConnectionEvent::Reconnecting {
                attempt: self.retry,
                delay: None,
            });
        } else {
            self.set_timer(Timer::Reconnect, now.saturating_add(delay));
            self.emit_connection(ConnectionEvent::Reconnecting {
                attempt: self.retry,
                delay: Some(std::time::Duration::from_millis(delay)),
            });
        }
    }

    /// Enters [`State::Closed`]: everything still waiting fails, every timer is disarmed.
    pub(super) fn shut(&mut self, code: Code, reason: String) {
        self.state = State::Closed;
        self.attempt = None;
        self.heartbeat = None;
        self.shutdown_delay = None;
        let error = ClientError::Closed {
            code,
            reason: reason.clone(),
        };
        self.fail_requests(&error);
        let waiters: Vec<_> = self
            .subs
            .values_mut()
            .flat_map(|sub| std::mem::take(&mut sub.waiters))
            .collect();
        self.fail_all(waiters, &error);
        self.subscriptions_offline();
        let timers: Vec<Timer> = self.timers.keys().copied().collect();
        for timer in timers {
            self.cancel_timer(timer);
        }
        self.closed = Some((code, reason.clone()));
        self.emit_connection(ConnectionEvent::Closed { code, reason });
    }
}

/// The code to put in a close frame for a drop the core decided: codes a close frame may
/// not carry (1005, 1006, 1015) become 1000.
fn close_frame_code(code: Code) -> u16 {
    match code.as_u16() {
        n @ (1000..=1003 | 1007..=1014 | 3000..=4999) => n,
        _ => Code::Normal.as_u16(),
    }
}
