//! Seed 003 ("WebSocket Feature with Room Management") on Tidings: an axum app that embeds a
//! Tidings node at the seed's `/api/v1/ws?token=…`.
//!
//! - Rooms are channels `room:{name}`: clients join with `subscribe`, leave with
//!   `unsubscribe` and talk with `publish`. Each user's personal room is Tidings' `user:{id}`,
//!   joined on connect.
//! - The seed's `broadcast` and `text` client frames are `rpc` calls answered here.
//! - Background jobs ([`jobs`]) notify a user, a room or everyone and log how many
//!   connections they reached.
//! - The app's own routes answer who is connected and who is in a room, from the Rust API.

pub mod jobs;

use std::sync::{Arc, OnceLock};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tidings_protocol::{Notification, RawEvent};
use tidings_server::hooks::{HookError, RpcRequest};
use tidings_server::{BuildError, Tidings};

/// The channel of a room: `room:{name}`.
pub fn room_channel(room: &str) -> String {
    format!("room:{room}")
}

/// What a user says to everyone (`broadcast`) or to the server (`text`): the seed's `data`.
#[derive(Serialize, Deserialize)]
struct Said {
    message: String,
}

type Failure = (StatusCode, String);

/// The node and the app's routes: the WebSocket endpoint at `/api/v1/ws`, the presence
/// queries under `/api/v1/ws/`, and two routes that hand work to background jobs.
pub fn app(jwt_secret: &str) -> Result<(Tidings, Router), BuildError> {
    // The rpc hook broadcasts through the node it belongs to, which exists only after build.
    let node: Arc<OnceLock<Tidings>> = Arc::default();
    let rpc_node = Arc::clone(&node);
    let tidings = Tidings::builder()
        .jwt_secret(jwt_secret)
        // Rooms, and the user's own personal room (the built-in policy refuses others').
        .authorize(|request| async move {
            request.channel.starts_with("room:") || request.channel.starts_with("user:")
        })
        .on_rpc(move |request| rpc(rpc_node.get().cloned(), request))
        .build()?;
    let _ = node.set(tidings.clone());
    let router = Router::new()
        .route("/api/v1/ws", tidings.ws_handler())
        .route("/api/v1/ws/users", get(connected_users))
        .route("/api/v1/ws/users/{user_id}", get(user_status))
        .route("/api/v1/ws/rooms/{room}/members", get(room_members))
        .route("/api/v1/projects/{project_id}/upload", post(upload))
        .route("/api/v1/announcements", post(announce))
        .with_state(tidings.clone());
    Ok((tidings, router))
}

/// The seed's client frames that are not room operations: `broadcast` reaches every
/// connection (with the caller as `sender`); `text` is echoed back.
async fn rpc(tidings: Option<Tidings>, request: RpcRequest) -> Result<Value, HookError> {
    let said = || {
        serde_json::from_value::<Said>(request.data.clone())
            .map_err(|e| HookError::Invalid(e.to_string()))
    };
    match request.method.as_str() {
        "text" => Ok(json!({ "type": "text", "message": said()?.message })),
        "broadcast" => {
            let event = RawEvent::from_parts("broadcast", &said()?).map_err(failed)?;
            let tidings = tidings.ok_or_else(|| failed("the node is starting"))?;
            let delivered = tidings
                .broadcast_raw_from(Some(&request.user_id), event)
                .map_err(failed)?;
            Ok(json!({ "delivered": delivered }))
        }
        other => Err(HookError::NotFound(format!("no method {other}"))),
    }
}

/// The hook's answer when the node fails.
fn failed(error: impl std::fmt::Display) -> HookError {
    HookError::Failed(error.to_string())
}

/// `GET /api/v1/ws/users`: the seed's `get_connected_users()`.
async fn connected_users(State(tidings): State<Tidings>) -> Json<Value> {
    let mut users = tidings.connected_users();
    users.sort();
    Json(json!({ "users": users }))
}

/// `GET /api/v1/ws/users/{user_id}`: the seed's `is_user_connected`, and how many
/// connections (tabs, devices) the user has.
async fn user_status(State(tidings): State<Tidings>, Path(user_id): Path<String>) -> Json<Value> {
    let connected = tidings.is_user_connected(&user_id);
    let connections = tidings.user_connections(&user_id);
    Json(json!({ "user_id": user_id, "connected": connected, "connections": connections }))
}

/// `GET /api/v1/ws/rooms/{room}/members`: the seed's `get_room_members`, one entry per user.
async fn room_members(
    State(tidings): State<Tidings>,
    Path(room): Path<String>,
) -> Result<Json<Value>, Failure> {
    let members = tidings
        .channel_members(&room_channel(&room))
        .await
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(Json(json!({ "room": room, "members": members })))
}

/// `POST /api/v1/projects/{project_id}/upload` (the seed's Example 1): answers at once and
/// hands the file to a background job, which notifies the uploader and the project's room.
async fn upload(
    State(tidings): State<Tidings>,
    Path(project_id): Path<u64>,
    Json(upload): Json<jobs::Upload>,
) -> (StatusCode, Json<Value>) {
    tokio::spawn(async move {
        if let Err(e) = jobs::process_upload(&tidings, project_id, &upload).await {
            tracing::warn!(error = %e, project_id, "upload job could not notify");
        }
    });
    (StatusCode::ACCEPTED, Json(json!({ "status": "accepted" })))
}

/// `POST /api/v1/announcements` with a notification (`{"message", "level"}`): broadcast by
/// a background job to every connection.
async fn announce(
    State(tidings): State<Tidings>,
    Json(notification): Json<Notification>,
) -> StatusCode {
    tokio::spawn(async move {
        if let Err(e) = jobs::announce(&tidings, &notification) {
            tracing::warn!(error = %e, "announcement not sent");
        }
    });
    StatusCode::ACCEPTED
}
