//! `history`: a page of a channel's stored publications.

use tidings_protocol::messages::{History, Reply};

use super::Answer;
use crate::connection::Session;
use crate::errors::RequestError;

pub(super) async fn handle(
    session: &mut Session,
    request: History,
) -> Result<Answer, RequestError> {
    let page = session
        .shared
        .history(
            session.caller(),
            &request.channel,
            request.since,
            request.before,
            request.limit,
        )
        .await?;
    // Wait until the reply fits the connection's queue beside live traffic.
    let size: usize = page
        .publications
        .iter()
        .map(|p| p.event.data_json().len() + 200)
        .sum();
    if !session.conn.outbox.room_for(size).await {
        return Ok(Answer::Sent);
    }
    Ok(Answer::Reply(Reply::History(page)))
}
