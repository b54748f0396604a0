//! The HTTP API for back ends (`/api/*`, bearer API key) and the open `/healthz`,
//! `/metrics` and `/api/openapi.json`.

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use tidings_protocol::{Code, Delivery, Event, Level, Notification, RawEvent};
use utoipa::{OpenApi, ToSchema};

use crate::auth::{bearer_token, is_api_key};
use crate::errors::{ChannelError, PublishError};
use crate::node::Caller;
use crate::server::{Stats, Tidings};

/// `POST /api/publish` body.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct PublishBody {
    /// Target channel.
    channel: String,
    /// `{"type": "...", "data": {...}}`.
    #[schema(value_type = Object)]
    event: RawEvent,
    /// `reliable` (default for most types) or `ephemeral`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    delivery: Option<Delivery>,
    /// The user the back end publishes for (a chat message it checked): subscribers see
    /// it as the message's `sender`. Absent: a back-end publication without a sender.
    #[serde(default)]
    sender: Option<String>,
}

/// What a count in an answer covers.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Scope {
    /// This node only (other nodes deliver or close their own without counting here).
    Node,
    /// Every node of the cluster, from their presence reports.
    Cluster,
}

impl Scope {
    /// `Cluster` with a broker, else `Node` (a single node is the whole cluster).
    fn of_presence(tidings: &Tidings) -> Scope {
        if tidings.broker_connected().is_some() {
            Scope::Cluster
        } else {
            Scope::Node
        }
    }
}

/// `POST /api/publish` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PublishAnswer {
    /// Offset given to the publication (absent for ephemeral ones).
    offset: Option<u64>,
    /// The channel's epoch.
    epoch: String,
    /// Connections on this node it was queued for.
    delivered: usize,
    /// Always `node`: other nodes deliver to theirs.
    scope: Scope,
}

/// `POST /api/notify/user/{id}` body: the notification's fields.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NotifyBody {
    title: Option<String>,
    message: String,
    /// `info` | `success` | `warning` | `error`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    level: Level,
    #[schema(value_type = Option<Object>)]
    data: Option<serde_json::Value>,
    /// The user it comes from, shown to the recipient as the message's `sender`.
    #[serde(default)]
    sender: Option<String>,
}

/// `POST /api/broadcast` body.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct BroadcastBody {
    /// `{"type": "...", "data": {...}}`.
    #[schema(value_type = Object)]
    event: RawEvent,
    /// The user it comes from, shown as the message's `sender`.
    #[serde(default)]
    sender: Option<String>,
}

/// `GET /api/users` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct UsersQuery {
    /// Only user ids after this one (the previous page's `next`).
    after: Option<String>,
    /// Page size, default 100, at most 1000.
    limit: Option<u32>,
}

/// `GET /api/users` answer: a page of connected users, sorted by id.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Users {
    users: Vec<String>,
    /// Pass as `after` for the next page; `null` on the last page.
    next: Option<String>,
    /// `cluster` with a broker (users on every node), else `node`.
    scope: Scope,
}

/// `GET /api/status` answer (served only with `status_route = true`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Status {
    /// `ok`, or `degraded` while the broker is disconnected.
    status: &'static str,
    /// Open connections (the cluster's, with a broker).
    connections: usize,
    /// Connected users (the cluster's, with a broker).
    users: usize,
}

/// How many connections a notify or broadcast reached.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Delivered {
    /// Connections on this node it was queued for.
    delivered: usize,
    /// Always `node`: other nodes deliver to theirs.
    scope: Scope,
}

/// `GET /api/users/{id}/status` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserStatus {
    user_id: String,
    connected: bool,
    connections: usize,
    /// `cluster` with a broker (every node's connections), else `node`.
    scope: Scope,
}

/// `GET /api/channels/{name}/members` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Members {
    channel: String,
    #[schema(value_type = Vec<Object>)]
    members: Vec<tidings_protocol::messages::Member>,
    /// `cluster` with a broker (members on every node), else `node`.
    scope: Scope,
}

/// `POST /api/users/{id}/disconnect` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Disconnected {
    /// Connections closed on this node.
    disconnected: usize,
    /// Always `node`: other nodes close theirs.
    scope: Scope,
}

/// Every API error: `{"error": {"code": "...", "message": "..."}}`; `code` is the
/// protocol's name for the same refusal on a WebSocket (`forbidden`, `frame_too_large`, ...)
/// or `unauthorized` / `bad_request` for the API's own checks.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApiError {
    error: ApiErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApiErrorBody {
    code: &'static str,
    message: String,
}

/// `Json` whose rejections are API errors (`bad_request` with serde's message), not text.
pub(crate) struct ApiJson<T>(T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(api_error(
                rejection.status(),
                "bad_request",
                rejection.body_text(),
            )),
        }
    }
}

/// `Query` whose rejections are API errors (`bad_request` with serde's message), not text.
pub(crate) struct ApiQuery<T>(T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(api_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                rejection.body_text(),
            )),
        }
    }
}

fn api_error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    let body = ApiError {
        error: ApiErrorBody {
            code,
            message: message.into(),
        },
    };
    (status, Json(body)).into_response()
}

/// The HTTP status of a refusal the socket reports with `code`.
fn status_of(code: Code) -> StatusCode {
    match code {
        Code::BadFrame => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Forbidden => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::FrameTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for PublishError {
    fn into_response(self) -> Response {
        let code = self.code();
        api_error(status_of(code), code.name(), self.to_string())
    }
}

impl IntoResponse for ChannelError {
    fn into_response(self) -> Response {
        let code = self.code();
        api_error(status_of(code), code.name(), self.to_string())
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Tidings HTTP API", description = "Publish, notify and inspect a Tidings node. Every /api route except this document needs `Authorization: Bearer <TIDINGS_API_KEY>`."),
    paths(publish, notify_user, broadcast, stats, users, user_status, channel_members, history, disconnect_user, status),
    components(schemas(Scope, PublishBody, PublishAnswer, NotifyBody, BroadcastBody, Delivered, Users, UserStatus, Members, Disconnected, Status, ApiError, ApiErrorBody, Stats)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API and the open endpoints, as one router with its state applied.
pub(crate) fn routes(tidings: Tidings) -> Router {
    let guarded = Router::new()
        .route("/api/publish", post(publish))
        .route("/api/notify/user/{id}", post(notify_user))
        .route("/api/broadcast", post(broadcast))
        .route("/api/stats", get(stats))
        .route("/api/users", get(users))
        .route("/api/users/{id}/status", get(user_status))
        .route("/api/channels/{name}/members", get(channel_members))
        .route("/api/users/{id}/disconnect", post(disconnect_user))
        .route_layer(middleware::from_fn_with_state(
            tidings.clone(),
            require_api_key,
        ));
    let open = if tidings.config().status_route {
        Router::new().route("/api/status", get(status))
    } else {
        Router::new()
    };
    Router::new()
        .merge(guarded)
        .merge(open)
        .route("/api/channels/{name}/history", get(history))
        .route(
            "/api/openapi.json",
            get(|| async { Json(ApiDoc::openapi()) }),
        )
        // Unknown API paths answer in the API's JSON, not an empty 404.
        .route("/api/{*rest}", axum::routing::any(unknown_api_path))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(tidings)
}

/// `200 ok`; `200 degraded: …` while the broker is disconnected. The node still serves its
/// own clients then (publishes are stored and acknowledged), so it stays in rotation.
async fn healthz(State(tidings): State<Tidings>) -> &'static str {
    match tidings.broker_connected() {
        Some(false) => "degraded: the broker is disconnected; other nodes catch up once it is back",
        _ => "ok",
    }
}

async fn unknown_api_path(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no API route {method} {} (see /api/openapi.json)",
            uri.path()
        ),
    )
}

async fn require_api_key(State(tidings): State<Tidings>, request: Request, next: Next) -> Response {
    let expected = tidings.config().api_key.as_deref();
    if is_api_key(expected, bearer_token(request.headers())) {
        return next.run(request).await;
    }
    match expected {
        None => api_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the server has no API key configured (TIDINGS_API_KEY)",
        ),
        _ => api_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key: send Authorization: Bearer <TIDINGS_API_KEY>",
        ),
    }
}

async fn metrics() -> Response {
    match crate::metrics::render() {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics go to the application's own recorder",
        )
            .into_response(),
    }
}

/// Publish an event to a channel.
#[utoipa::path(post, path = "/api/publish", request_body = PublishBody,
    responses((status = 200, body = PublishAnswer), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, description = "reserved channel", body = ApiError), (status = 413, description = "event larger than the frame limit", body = ApiError)),
    security(("api_key" = [])))]
async fn publish(
    State(tidings): State<Tidings>,
    ApiJson(body): ApiJson<PublishBody>,
) -> Result<Json<PublishAnswer>, PublishError> {
    let published = tidings
        .shared
        .publish(
            backend_for(body.sender.as_deref()),
            &body.channel,
            body.event,
            body.delivery,
        )
        .await?;
    Ok(Json(PublishAnswer {
        offset: published.offset,
        epoch: published.epoch,
        delivered: published.delivered,
        scope: Scope::Node,
    }))
}

/// The back end, publishing for `sender` when it names one.
fn backend_for(sender: Option<&str>) -> Caller<'_> {
    match sender {
        Some(sender) => Caller::BackendFor { sender },
        None => Caller::Backend,
    }
}

/// Send a notification to every connection of a user.
#[utoipa::path(post, path = "/api/notify/user/{id}", request_body = NotifyBody,
    params(("id" = String, Path, description = "user id (the token's sub)")),
    responses((status = 200, body = Delivered), (status = 401, body = ApiError)),
    security(("api_key" = [])))]
async fn notify_user(
    State(tidings): State<Tidings>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NotifyBody>,
) -> Result<Json<Delivered>, PublishError> {
    let notification = Notification {
        title: body.title,
        message: body.message,
        level: body.level,
        data: body.data,
    };
    let delivered = tidings
        .shared
        .publish(
            backend_for(body.sender.as_deref()),
            &tidings_protocol::user_channel(&id),
            RawEvent::new(&notification)?,
            Some(Notification::DELIVERY),
        )
        .await?
        .delivered;
    Ok(Json(Delivered {
        delivered,
        scope: Scope::Node,
    }))
}

/// Send an event to every connection.
#[utoipa::path(post, path = "/api/broadcast", request_body = BroadcastBody,
    responses((status = 200, body = Delivered), (status = 401, body = ApiError)),
    security(("api_key" = [])))]
async fn broadcast(
    State(tidings): State<Tidings>,
    ApiJson(body): ApiJson<BroadcastBody>,
) -> Result<Json<Delivered>, PublishError> {
    let delivered = tidings.broadcast_raw_from(body.sender.as_deref(), body.event)?;
    Ok(Json(Delivered {
        delivered,
        scope: Scope::Node,
    }))
}

/// Counts of connections, users, channels and deliveries on this node, and with a broker
/// the cluster's (`cluster`).
#[utoipa::path(get, path = "/api/stats", responses((status = 200, body = Stats), (status = 401, body = ApiError)),
    security(("api_key" = [])))]
async fn stats(State(tidings): State<Tidings>) -> Json<Stats> {
    Json(tidings.stats())
}

/// A page of connected users, sorted by id (follow `next` for the rest).
#[utoipa::path(get, path = "/api/users", params(UsersQuery),
    responses((status = 200, body = Users), (status = 401, body = ApiError)),
    security(("api_key" = [])))]
async fn users(
    State(tidings): State<Tidings>,
    ApiQuery(query): ApiQuery<UsersQuery>,
) -> Json<Users> {
    let limit = query
        .limit
        .unwrap_or(crate::node::HISTORY_DEFAULT_LIMIT)
        .clamp(1, crate::node::HISTORY_MAX_LIMIT) as usize;
    let all = tidings.connected_users();
    // Sorted: the page starts after `after`, wherever that id would be.
    let start = match &query.after {
        Some(after) => all.partition_point(|user| user <= after),
        None => 0,
    };
    let users: Vec<String> = all.iter().skip(start).take(limit).cloned().collect();
    let next = (start + users.len() < all.len())
        .then(|| users.last().cloned())
        .flatten();
    Json(Users {
        users,
        next,
        scope: Scope::of_presence(&tidings),
    })
}

/// Connection and user counts and health, without the API key (only with
/// `status_route = true`; 404 otherwise).
#[utoipa::path(get, path = "/api/status", responses((status = 200, body = Status), (status = 404, description = "status_route is off")))]
async fn status(State(tidings): State<Tidings>) -> Json<Status> {
    let stats = tidings.stats();
    let (connections, users) = match &stats.cluster {
        Some(cluster) => (cluster.connections, cluster.users),
        None => (stats.connections, stats.users),
    };
    Json(Status {
        status: match tidings.broker_connected() {
            Some(false) => "degraded",
            _ => "ok",
        },
        connections,
        users,
    })
}

/// Whether a user is connected, and with how many connections.
#[utoipa::path(get, path = "/api/users/{id}/status", params(("id" = String, Path, description = "user id")),
    responses((status = 200, body = UserStatus), (status = 401, body = ApiError)),
    security(("api_key" = [])))]
async fn user_status(State(tidings): State<Tidings>, Path(id): Path<String>) -> Json<UserStatus> {
    let connections = tidings.user_connections(&id);
    Json(UserStatus {
        user_id: id,
        connected: connections > 0,
        connections,
        scope: Scope::of_presence(&tidings),
    })
}

/// A channel's members.
#[utoipa::path(get, path = "/api/channels/{name}/members", params(("name" = String, Path, description = "channel name")),
    responses((status = 200, body = Members), (status = 401, body = ApiError)),
    security(("api_key" = [])))]
async fn channel_members(
    State(tidings): State<Tidings>,
    Path(name): Path<String>,
) -> Result<Json<Members>, ChannelError> {
    let members = tidings.channel_members(&name).await?;
    Ok(Json(Members {
        channel: name,
        members,
        scope: Scope::of_presence(&tidings),
    }))
}

/// `GET /api/channels/{name}/history` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct HistoryQuery {
    /// Only offsets greater than this, oldest first (paging forward).
    since: Option<u64>,
    /// Only offsets smaller than this; without `since`, the newest before it (paging back).
    before: Option<u64>,
    /// Page size, default 100, at most 1000.
    limit: Option<u32>,
}

/// A page of a channel's stored publications. Authorized by the API key, or by a user's
/// JWT (`Authorization: Bearer <token>`) when the user may subscribe to the channel.
#[utoipa::path(get, path = "/api/channels/{name}/history",
    params(("name" = String, Path, description = "channel name"), HistoryQuery),
    responses((status = 200, description = "{channel, epoch, offset, publications: [message data]}", body = Object),
        (status = 401, body = ApiError), (status = 403, body = ApiError)),
    security(("api_key" = [])))]
async fn history(
    State(tidings): State<Tidings>,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    let shared = &tidings.shared;
    let presented = bearer_token(&headers);
    let user = if is_api_key(shared.config.api_key.as_deref(), presented) {
        None
    } else {
        match shared.auth.verify(presented) {
            Ok(claims) => Some((Arc::<str>::from(claims.sub.as_str()), Arc::new(claims))),
            Err(e) => {
                let message = format!(
                    "send the API key or a user's token as Authorization: Bearer; as a token: {e}"
                );
                return api_error(StatusCode::UNAUTHORIZED, "unauthorized", message);
            }
        }
    };
    let caller = match &user {
        Some((user_id, claims)) => Caller::User { user_id, claims },
        None => Caller::Backend,
    };
    let page = shared
        .history(caller, &name, query.since, query.before, query.limit)
        .await;
    match page {
        Ok(page) => Json(page).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Close every connection of a user (close code 4006; clients do not reconnect).
#[utoipa::path(post, path = "/api/users/{id}/disconnect", params(("id" = String, Path, description = "user id")),
    responses((status = 200, body = Disconnected), (status = 401, body = ApiError)),
    security(("api_key" = [])))]
async fn disconnect_user(
    State(tidings): State<Tidings>,
    Path(id): Path<String>,
) -> Json<Disconnected> {
    Json(Disconnected {
        disconnected: tidings.disconnect_user(&id),
        scope: Scope::Node,
    })
}
