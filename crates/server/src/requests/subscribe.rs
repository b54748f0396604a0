//! `subscribe`: join a channel, optionally recovering what was missed since an offset.

use std::sync::Arc;

use tidings_protocol::Code;
use tidings_protocol::messages::Subscribe;

use super::Answer;
use crate::connection::Session;
use crate::errors::RequestError;
use crate::hub::Asked;

pub(super) async fn handle(
    session: &mut Session,
    id: Option<u64>,
    request: Subscribe,
) -> Result<Answer, RequestError> {
    let channel = request.channel;
    let already = session.subscriptions.contains(channel.as_str());
    // Channels the server joined by itself do not count against the limit.
    let counted = session
        .subscriptions
        .len()
        .saturating_sub(session.automatic.len());
    let limit = session.shared.config.limits.max_subscriptions;
    if !already && counted >= limit {
        let message = format!("at most {limit} channels per connection");
        return Err(RequestError::new(Code::TooManySubscriptions, message));
    }
    session
        .shared
        .check_read(session.caller(), &channel)
        .await?;
    // The reply is queued by the hub, under the channel's lock, ahead of recovered frames.
    session
        .shared
        .hub
        .subscribe(
            &session.conn,
            &channel,
            request.events,
            request.recover,
            Asked::Request(id),
        )
        .await?;
    session.subscriptions.insert(Arc::from(channel));
    Ok(Answer::Sent)
}
