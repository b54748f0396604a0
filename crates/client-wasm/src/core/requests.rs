//! Requests on the wire: ids, deadlines, replies, the offline publish queue, and what
//! happens to each kind of request when the connection drops.

use tidings_protocol::messages::{ErrorBody, Publish, Recover, Reply};
use tidings_protocol::{ClientFrame, ClientMessage, Code};

use super::config::millis;
use super::{Completion, Core, OpId, Output, PublishReply, Timer};
use crate::ClientError;

/// A request in flight, by wire id.
pub(super) struct Pending {
    /// What it was, and whom to tell.
    pub(super) request: Request,
    /// When it times out; `None` for pings, which the heartbeat watches instead.
    pub(super) deadline: Option<u64>,
}

/// The kinds of request, with what is needed to finish (or resend) each one.
pub(super) enum Request {
    /// Application and restore subscribes alike: the result goes to the subscription.
    Subscribe {
        channel: String,
        /// The position sent, to tell whether the reply recovered it.
        recover: Option<Recover>,
    },
    /// `op` is `None` for the core's own unsubscribes, whose errors nobody needs.
    Unsubscribe {
        channel: String,
        op: Option<OpId>,
    },
    /// The publication is kept so it can be resent after a drop.
    Publish {
        op: OpId,
        publish: Publish,
    },
    Presence {
        op: OpId,
    },
    History {
        op: OpId,
    },
    /// A call to the back end: never resent (it may not be idempotent).
    Rpc {
        op: OpId,
    },
    /// A heartbeat probe.
    Ping,
}

/// A publish waiting for a connection.
pub(super) struct Queued {
    pub(super) op: OpId,
    pub(super) publish: Publish,
}

impl Core {
    /// Sends `message` with a fresh id on the live connection and remembers it; with
    /// `timed`, it fails with [`ClientError::Timeout`] after the request timeout. Fails
    /// without sending when the frame exceeds the server's size limit.
    pub(super) fn send_request(
        &mut self,
        now: u64,
        message: ClientMessage,
        request: Request,
        timed: bool,
    ) -> Result<u64, ClientError> {
        let Some(conn) = self.attempt.as_ref().map(|a| a.conn) else {
            return Err(ClientError::NotConnected);
        };
        self.next_request += 1;
        let id = self.next_request;
        let text = ClientFrame::request(id, message).encode();
        if self.max_frame_bytes > 0 && text.len() > self.max_frame_bytes {
            return Err(ClientError::FrameTooLarge {
                size: text.len(),
                max: self.max_frame_bytes,
            });
        }
        self.push(Output::Send { conn, text });
        let deadline = timed.then(|| now.saturating_add(millis(self.config.request_timeout)));
        self.pending.insert(id, Pending { request, deadline });
        if let Some(deadline) = deadline {
            // Every request gets the same timeout, so a new deadline is never earlier than
            // an armed one: arm only when nothing is armed (firing rescans everything).
            if !self.timers.contains_key(&Timer::Requests) {
                self.set_timer(Timer::Requests, deadline);
            }
        }
        Ok(id)
    }

    /// Sends a publish now (the connection is live).
    pub(super) fn send_publish(
        &mut self,
        now: u64,
        op: OpId,
        publish: Publish,
    ) -> Result<(), ClientError> {
        let message = ClientMessage::Publish(publish.clone());
        self.send_request(now, message, Request::Publish { op, publish }, true)
            .map(drop)
    }

    /// Sends every queued publish, oldest first (after `connected`).
    pub(super) fn flush_queue(&mut self, now: u64) {
        while let Some(Queued { op, publish }) = self.queue.pop_front() {
            if let Err(error) = self.send_publish(now, op, publish) {
                self.complete(op, Err(error));
            }
        }
    }

    /// The connection dropped: settles every request in flight. Publishes go back to the
    /// front of the queue in the order they were sent (at-least-once); unsubscribes are
    /// done (the server forgot the connection); presence, history and rpc fail with
    /// [`ClientError::Disconnected`] (an rpc is never resent: the back end may have run it,
    /// and it may not be idempotent); subscribes and pings are dropped here because
    /// subscriptions are restored from the subscription table.
    pub(super) fn settle_requests(&mut self, code: Code, reason: &str) {
        let pending = std::mem::take(&mut self.pending);
        let mut resend = Vec::new();
        for (_, pending) in pending {
            match pending.request {
                Request::Subscribe { .. }
                | Request::Ping
                | Request::Unsubscribe { op: None, .. } => {}
                Request::Unsubscribe {
                    channel,
                    op: Some(op),
                } => self.complete(op, Ok(Completion::Unsubscribed { channel })),
                Request::Publish { op, publish } => resend.push(Queued { op, publish }),
                Request::Presence { op } | Request::History { op } | Request::Rpc { op } => {
                    let error = ClientError::Disconnected {
                        code,
                        reason: reason.to_owned(),
                    };
                    self.complete(op, Err(error));
                }
            }
        }
        for queued in resend.into_iter().rev() {
            self.queue.push_front(queued);
        }
        self.cancel_timer(Timer::Requests);
    }

    /// The core closed for good: every request in flight and every queued publish fails.
    pub(super) fn fail_requests(&mut self, error: &ClientError) {
        let pending = std::mem::take(&mut self.pending);
        for (_, pending) in pending {
            match pending.request {
                Request::Unsubscribe { op: Some(op), .. }
                | Request::Publish { op, .. }
                | Request::Presence { op }
                | Request::History { op }
                | Request::Rpc { op } => self.complete(op, Err(error.clone())),
                Request::Subscribe { .. }
                | Request::Ping
                | Request::Unsubscribe { op: None, .. } => {}
            }
        }
        let queued: Vec<OpId> = self.queue.drain(..).map(|q| q.op).collect();
        self.fail_all(queued, error);
        self.cancel_timer(Timer::Requests);
    }

    /// The requests timer fired: fails every request past its deadline, re-arms for the
    /// earliest remaining one.
    pub(super) fn expire_requests(&mut self, now: u64) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        let error = ClientError::Timeout {
            after: self.config.request_timeout,
        };
        for id in expired {
            if let Some(pending) = self.pending.remove(&id) {
                self.request_failed(now, id, pending.request, error.clone());
            }
        }
        if let Some(next) = self.pending.values().filter_map(|p| p.deadline).min() {
            self.set_timer(Timer::Requests, next);
        }
    }

    /// A `pong`: the probe is answered (the heartbeat already saw the frame).
    pub(super) fn on_pong(&mut self, id: Option<u64>) {
        if let Some(id) = id
            && matches!(
                self.pending.get(&id),
                Some(Pending {
                    request: Request::Ping,
                    ..
                })
            )
        {
            self.pending.remove(&id);
        }
    }

    /// A `reply`: completes the request with the same id; replies to unknown ids (answers
    /// to requests that timed out) are ignored.
    pub(super) fn on_reply(&mut self, now: u64, id: Option<u64>, reply: Reply) {
        let Some((id, pending)) = id.and_then(|id| self.pending.remove(&id).map(|p| (id, p)))
        else {
            return;
        };
        match (pending.request, reply) {
            (
                Request::Subscribe { channel, recover },
                Reply::Subscribe {
                    epoch,
                    offset,
                    recovered,
                    missed,
                    ..
                },
            ) => self.subscribe_succeeded(id, channel, recover, epoch, offset, recovered, missed),
            (Request::Unsubscribe { channel, op }, Reply::Unsubscribe { .. }) => {
                if !self.auto.contains(&channel) {
                    self.left.remove(&channel);
                }
                if let Some(op) = op {
                    self.complete(op, Ok(Completion::Unsubscribed { channel }));
                }
            }
            (
                Request::Publish { op, .. },
                Reply::Publish {
                    channel,
                    offset,
                    epoch,
                    delivered,
                },
            ) => {
                let reply = PublishReply {
                    channel,
                    offset,
                    epoch,
                    delivered,
                };
                self.complete(op, Ok(Completion::Published(reply)));
            }
            (Request::History { op }, Reply::History(page)) => {
                self.complete(op, Ok(Completion::History(page)));
            }
            (Request::Presence { op }, Reply::Presence { channel, members }) => {
                self.complete(op, Ok(Completion::Presence { channel, members }));
            }
            (Request::Rpc { op }, Reply::Rpc { data }) => {
                self.complete(op, Ok(Completion::Rpc(data)));
            }
            (request, reply) => {
                let error = ClientError::Decode(format!(
                    "the server answered request {id} with a reply of another kind ({})",
                    reply_kind(&reply)
                ));
                self.request_failed(now, id, request, error);
            }
        }
    }

    /// An `error`: fails the request with the same id; without a (known) id it is a
    /// warning for the application.
    pub(super) fn on_error(&mut self, now: u64, id: Option<u64>, body: ErrorBody) {
        let error = ClientError::Server {
            code: body.code,
            message: body.message,
        };
        match id.and_then(|id| self.pending.remove(&id).map(|p| (id, p))) {
            Some((id, pending)) => self.request_failed(now, id, pending.request, error),
            None => self.emit_connection(super::ConnectionEvent::Error(error)),
        }
    }

    /// A request failed (error frame, timeout, mismatched reply).
    fn request_failed(&mut self, now: u64, id: u64, request: Request, error: ClientError) {
        match request {
            Request::Subscribe { channel, .. } => self.subscribe_failed(now, id, &channel, error),
            Request::Unsubscribe { channel, op } => {
                if !self.auto.contains(&channel) {
                    self.left.remove(&channel);
                }
                if let Some(op) = op {
                    self.complete(op, Err(error));
                }
            }
            Request::Publish { op, .. }
            | Request::Presence { op }
            | Request::History { op }
            | Request::Rpc { op } => {
                self.complete(op, Err(error));
            }
            Request::Ping => {}
        }
    }
}

/// The name of a reply's kind, for messages (without `Debug`, whose code the browser would
/// download for every protocol type).
fn reply_kind(reply: &Reply) -> &'static str {
    match reply {
        Reply::Subscribe { .. } => "subscribe",
        Reply::Unsubscribe { .. } => "unsubscribe",
        Reply::Publish { .. } => "publish",
        Reply::Presence { .. } => "presence",
        Reply::Typing { .. } => "typing",
        Reply::History(_) => "history",
        Reply::Ack { .. } => "ack",
        Reply::Rpc { .. } => "rpc",
        _ => "unknown",
    }
}
