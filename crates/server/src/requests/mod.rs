//! One handler per client request, each a function from the connection's [`Session`] and
//! the request to an [`Answer`] or a [`RequestError`]. `dispatch` matches every request type
//! without a catch-all arm: a new request type in the protocol does not compile until it has
//! a handler here.
//!
//! Handlers never touch the socket: they queue frames on the connection's outbox, so they
//! are tested without one (`tests.rs`).

use tidings_protocol::messages::Reply;
use tidings_protocol::{ClientFrame, ClientMessage, ServerFrame, ServerMessage};

use futures_util::future::BoxFuture;

use crate::connection::Session;
use crate::errors::RequestError;
use crate::hub::Conn;

mod ack;
mod history;
mod presence;
mod publish;
mod rpc;
mod subscribe;
#[cfg(test)]
mod tests;
mod typing;
mod unsubscribe;

/// A reply that waits for something (a commit) without holding up the connection.
pub(crate) type LaterReply = BoxFuture<'static, Result<Reply, RequestError>>;

/// A request's answer still to come: the connection polls it beside its reads and the
/// answer queues itself when ready.
pub(crate) type Deferred = BoxFuture<'static, ()>;

/// What a handler asks the dispatcher to send back.
pub(crate) enum Answer {
    /// A `reply` frame, always.
    Reply(Reply),
    /// A `reply` frame (or the error) once the future is ready; the connection reads on.
    Later(LaterReply),
    /// A `reply` frame only when the request had an id (fire-and-forget requests).
    ReplyIfAsked(Reply),
    /// A `pong` frame.
    Pong,
    /// Nothing more: the handler queued its reply itself (it had to go before other frames).
    Sent,
}

/// Handles one decoded request and queues its answer or error, or returns the answer still
/// to come (a publish waiting for its commit).
pub(crate) async fn dispatch(session: &mut Session, frame: ClientFrame) -> Option<Deferred> {
    let id = frame.id;
    let answer = match frame.message {
        ClientMessage::Ping => Ok(Answer::Pong),
        ClientMessage::Subscribe(request) => subscribe::handle(session, id, request).await,
        ClientMessage::Unsubscribe(request) => unsubscribe::handle(session, request).await,
        ClientMessage::Publish(request) => publish::handle(session, request).await,
        ClientMessage::Typing(request) => typing::handle(session, request).await,
        ClientMessage::Presence(request) => presence::handle(session, request).await,
        ClientMessage::History(request) => history::handle(session, request).await,
        ClientMessage::Ack(request) => ack::handle(session, request).await,
        ClientMessage::Rpc(request) => rpc::handle(session, request).await,
    };
    let message = match answer {
        Ok(Answer::Reply(reply)) => ServerMessage::Reply(reply),
        Ok(Answer::ReplyIfAsked(reply)) if id.is_some() => ServerMessage::Reply(reply),
        Ok(Answer::Pong) => ServerMessage::Pong,
        Ok(Answer::Later(later)) => {
            let conn = session.conn.clone();
            return Some(Box::pin(async move {
                let message = match later.await {
                    Ok(reply) => ServerMessage::Reply(reply),
                    Err(error) => return reply_error(&conn, id, &error),
                };
                conn.send(&ServerFrame { id, message });
            }));
        }
        Ok(Answer::ReplyIfAsked(_) | Answer::Sent) => return None,
        Err(error) => {
            reply_error(&session.conn, id, &error);
            return None;
        }
    };
    session.conn.send(&ServerFrame { id, message });
    None
}

/// Queues an error frame answering request `id`.
pub(crate) fn reply_error(conn: &Conn, id: Option<u64>, error: &RequestError) {
    crate::metrics::error(error.code);
    conn.send(&ServerFrame::error(id, error.code, error.message.as_str()));
}
