//! `publish`: a client's publication, through the node's one publish path. The handler
//! returns once the publication has its place in the channel; the reply follows its commit
//! (`Answer::Later`), so the connection reads its next request meanwhile and a stream of
//! publishes shares commits instead of waiting for one fsync each.

use tidings_protocol::messages::{Publish, Reply};

use super::Answer;
use crate::connection::Session;
use crate::errors::{PublishError, RequestError};
use crate::hub::{Published, Submitted};

pub(super) async fn handle(
    session: &mut Session,
    request: Publish,
) -> Result<Answer, RequestError> {
    let submitted = session
        .shared
        .submit_publish(
            session.caller(),
            &request.channel,
            request.event,
            request.delivery,
        )
        .await?;
    let channel = request.channel;
    Ok(match submitted {
        Submitted::Done(published) => Answer::Reply(reply(channel, published)),
        committing @ Submitted::Committing(_) => Answer::Later(Box::pin(async move {
            let published = committing.outcome().await.map_err(PublishError::from)?;
            Ok(reply(channel, published))
        })),
    })
}

fn reply(channel: String, published: Published) -> Reply {
    Reply::Publish {
        channel,
        offset: published.offset,
        epoch: published.epoch,
        delivered: published.delivered as u64,
    }
}
