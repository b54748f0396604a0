//! `rpc`: a client's call to the application's back end. The answer comes later
//! (`Answer::Later`): the connection reads on while the back end thinks.

use std::sync::Arc;

use tidings_protocol::Code;
use tidings_protocol::messages::{Reply, Rpc};

use super::Answer;
use crate::connection::Session;
use crate::errors::RequestError;

/// Longest method name.
const MAX_METHOD_BYTES: usize = 128;

pub(super) async fn handle(session: &mut Session, request: Rpc) -> Result<Answer, RequestError> {
    let method = request.method;
    if method.is_empty() || method.len() > MAX_METHOD_BYTES || method.chars().any(char::is_control)
    {
        return Err(RequestError::new(
            Code::BadFrame,
            "rpc methods are 1 to 128 bytes without control characters",
        ));
    }
    let shared = Arc::clone(&session.shared);
    let user_id = Arc::clone(&session.conn.user_id);
    let claims = Arc::clone(&session.claims);
    Ok(Answer::Later(Box::pin(async move {
        let data = shared.rpc(&user_id, &claims, method, request.data).await?;
        Ok(Reply::Rpc { data })
    })))
}
