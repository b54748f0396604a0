//! `subscribe`: join a channel, optionally recovering what was missed since an offset.

use std::sync::Arc;

use tidings_protocol::Code;
use tidings_protocol::messages::Subscribe;

use super::Answer;
use crate::connection::Session;
use crate::errors::RequestError;
use crate::hub::Asked;

/// Event types one subscription's `events` filter may name: every publication is checked
/// against the filter of every subscriber, so it must stay small.
pub(crate) const MAX_FILTER_EVENTS: usize = 64;
/// Bytes of one event type name in a filter.
pub(crate) const MAX_FILTER_NAME_BYTES: usize = 128;

pub(super) async fn handle(
    session: &mut Session,
    id: Option<u64>,
    request: Subscribe,
) -> Result<Answer, RequestError> {
    let events = request.events.map(compact_filter).transpose()?;
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
            events,
            request.recover,
            Asked::Request(id),
        )
        .await?;
    session.subscriptions.insert(Arc::from(channel));
    Ok(Answer::Sent)
}

/// The `events` filter checked against its bounds (4400 past them), sorted and without
/// repeats.
fn compact_filter(mut events: Vec<String>) -> Result<Vec<String>, RequestError> {
    events.sort_unstable();
    events.dedup();
    if events.len() > MAX_FILTER_EVENTS {
        let message = format!(
            "an events filter names at most {MAX_FILTER_EVENTS} event types (got {})",
            events.len()
        );
        return Err(RequestError::new(Code::BadFrame, message));
    }
    if events.iter().any(|name| name.len() > MAX_FILTER_NAME_BYTES) {
        let message =
            format!("event type names in a filter are at most {MAX_FILTER_NAME_BYTES} bytes");
        return Err(RequestError::new(Code::BadFrame, message));
    }
    Ok(events)
}
