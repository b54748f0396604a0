//! One handler per client request, each a function from the connection's [`Session`] and
//! the request to an [`Answer`] or a [`RequestError`]. `dispatch` matches every request type
//! without a catch-all arm: a new request type in the protocol does not compile until it has
//! a handler here.
//!
//! Handlers never touch the socket: they queue frames on the connection's outbox, so they
//! are tested without one (`tests.rs`).

use tidings_protocol::messages::Reply;
use tidings_protocol::{ClientFrame, ClientMessage, ServerFrame, ServerMessage};

use crate::connection::Session;

mod ack;
mod history;
mod presence;
mod publish;
mod subscribe;
#[cfg(test)]
mod tests;
mod typing;
mod unsubscribe;

/// What a handler asks the dispatcher to send back.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A `reply` frame, always.
    Reply(Reply),
    /// A `reply` frame only when the request had an id (fire-and-forget requests).
    ReplyIfAsked(Reply),
    /// A `pong` frame.
    Pong,
    /// Nothing more: the handler queued its reply itself (it had to go before other frames).
    Sent,
}

/// Handles one decoded request and queues its answer or error.
pub(crate) async fn dispatch(session: &mut Session, frame: ClientFrame) {
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
    };
    let message = match answer {
        Ok(Answer::Reply(reply)) => ServerMessage::Reply(reply),
        Ok(Answer::ReplyIfAsked(reply)) if id.is_some() => ServerMessage::Reply(reply),
        Ok(Answer::Pong) => ServerMessage::Pong,
        Ok(Answer::ReplyIfAsked(_) | Answer::Sent) => return,
        Err(error) => return session.reply_error(id, &error),
    };
    session.conn.send(&ServerFrame { id, message });
}
