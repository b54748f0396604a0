//! `unsubscribe`: leave a channel the client joined (not one the server joined for it).

use tidings_protocol::Code;
use tidings_protocol::messages::{Reply, Unsubscribe};

use super::Answer;
use crate::connection::Session;
use crate::errors::RequestError;

pub(super) async fn handle(
    session: &mut Session,
    request: Unsubscribe,
) -> Result<Answer, RequestError> {
    let channel = request.channel;
    if session.automatic.iter().any(|c| **c == *channel) {
        let message = format!("{channel} was joined by the server and cannot be left");
        return Err(RequestError::new(Code::Forbidden, message));
    }
    if !session.subscriptions.remove(channel.as_str()) {
        let message = format!("not subscribed to {channel}");
        return Err(RequestError::new(Code::NotFound, message));
    }
    session
        .shared
        .hub
        .unsubscribe(&session.conn, &channel)
        .await;
    Ok(Answer::Reply(Reply::Unsubscribe { channel }))
}
