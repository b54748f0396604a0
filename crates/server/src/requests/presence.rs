//! `presence`: list a channel's members.

use tidings_protocol::messages::{ChannelRef, Reply};

use super::Answer;
use crate::connection::Session;
use crate::errors::RequestError;

pub(super) async fn handle(
    session: &mut Session,
    request: ChannelRef,
) -> Result<Answer, RequestError> {
    let members = session
        .shared
        .presence(session.caller(), &request.channel)
        .await?;
    Ok(Answer::Reply(Reply::Presence {
        channel: request.channel,
        members,
    }))
}
