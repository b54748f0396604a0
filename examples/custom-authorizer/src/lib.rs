//! Channel access checked against the app's own data: a support desk where only a ticket's
//! participants may join `ticket:{id}`, asked of the app's "database" on every subscribe,
//! client publish, history and presence request, and for the route-bound channel of
//! `/ws/chat/{ticket_id}` (a refused user is closed with 4003).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use tidings_server::{AccessRequest, BuildError, ConnectRequest, Tidings};

/// The app's own data: who takes part in which ticket. A table in a real app.
#[derive(Clone, Default)]
pub struct Tickets(Arc<HashMap<u64, Vec<String>>>);

impl Tickets {
    /// Ticket 107 (alice and bob) and ticket 108 (carol).
    pub fn demo() -> Tickets {
        let people = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        Tickets(Arc::new(HashMap::from([
            (107, people(&["alice", "bob"])),
            (108, people(&["carol"])),
        ])))
    }

    /// Whether `user` takes part in ticket `id`. Async, as the database query it stands
    /// for would be.
    pub async fn is_participant(&self, id: u64, user: &str) -> bool {
        self.0
            .get(&id)
            .is_some_and(|users| users.iter().any(|u| u == user))
    }
}

/// Tidings' access decision: a ticket channel asks the app's data; a user's own channel is
/// fine (the built-in policy already refuses other users' ones); anything else is refused.
async fn may_access(tickets: Tickets, request: AccessRequest) -> bool {
    if request.channel.starts_with("user:") {
        return true;
    }
    match request.channel.strip_prefix("ticket:").map(str::parse) {
        Some(Ok(id)) => tickets.is_participant(id, &request.user_id).await,
        _ => false,
    }
}

/// The node with the app's authorizer, and the app's routes: `/ws/chat/{ticket_id}` joins
/// that ticket's channel on connect; `/ws` is the plain endpoint (subscribe by request).
pub fn app(jwt_secret: &str, tickets: Tickets) -> Result<(Tidings, Router), BuildError> {
    let tidings = Tidings::builder()
        .jwt_secret(jwt_secret)
        .authorize(move |request| may_access(tickets.clone(), request))
        .build()?;
    let chat = tidings.clone();
    let router = Router::new()
        .route(
            "/ws/chat/{ticket_id}",
            get(
                move |Path(id): Path<u64>, request: ConnectRequest| async move {
                    chat.accept(request).bind_channel(format!("ticket:{id}"))
                },
            ),
        )
        .route("/ws", tidings.ws_handler());
    Ok((tidings, router))
}
