//! `typing`: tell a channel's other members that this user is typing (ephemeral).

use tidings_protocol::Code;
use tidings_protocol::messages::{ChannelRef, Reply};

use super::Answer;
use crate::connection::Session;
use crate::errors::RequestError;

pub(super) async fn handle(
    session: &mut Session,
    request: ChannelRef,
) -> Result<Answer, RequestError> {
    let channel = request.channel;
    if !session.shared.hub.typing(&session.conn, &channel).await {
        let message = format!("not subscribed to {channel}");
        return Err(RequestError::new(Code::NotFound, message));
    }
    Ok(Answer::ReplyIfAsked(Reply::Typing { channel }))
}
