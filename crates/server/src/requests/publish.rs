//! `publish`: a client's publication, through the node's one publish path.

use tidings_protocol::messages::{Publish, Reply};

use super::Answer;
use crate::connection::Session;
use crate::errors::RequestError;

pub(super) async fn handle(
    session: &mut Session,
    request: Publish,
) -> Result<Answer, RequestError> {
    let published = session
        .shared
        .publish(
            session.caller(),
            &request.channel,
            request.event,
            request.delivery,
        )
        .await?;
    Ok(Answer::Reply(Reply::Publish {
        channel: request.channel,
        offset: published.offset,
        epoch: published.epoch,
        delivered: published.delivered as u64,
    }))
}
