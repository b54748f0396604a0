//! `ack`: the device processed its personal channel (the offline inbox) up to an offset.

use tidings_protocol::Code;
use tidings_protocol::messages::{Ack, Reply};

use super::Answer;
use crate::connection::Session;
use crate::errors::RequestError;

pub(super) async fn handle(session: &mut Session, ack: Ack) -> Result<Answer, RequestError> {
    if ack.channel != tidings_protocol::user_channel(&session.conn.user_id) {
        let message = "acknowledgements are kept for your own user:{id} channel only";
        return Err(RequestError::new(Code::Forbidden, message));
    }
    let Some(inbox) = &session.shared.hub.stores().inbox else {
        let message = "this server keeps no offline inbox (its store has no InboxStore)";
        return Err(RequestError::new(Code::NotFound, message));
    };
    inbox
        .ack(
            &session.conn.user_id,
            &session.device,
            &ack.epoch,
            ack.offset,
        )
        .await?;
    Ok(Answer::ReplyIfAsked(Reply::Ack {
        channel: ack.channel,
        offset: ack.offset,
    }))
}
