//! An existing axum app that embeds Tidings: the shop keeps its own routes and state, mounts
//! the WebSocket endpoint at `/realtime/ws`, and its `POST /orders/{id}/ship` handler tells
//! the order's owner through [`Tidings::notify_user`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tidings_protocol::{Level, Notification};
use tidings_server::Tidings;
use tokio::sync::Mutex;

/// One order of the shop.
#[derive(Debug, Clone)]
pub struct Order {
    /// The user who placed it: the one to tell when it ships.
    pub owner: String,
    /// Whether it left the warehouse.
    pub shipped: bool,
}

/// The shop's state: its own data, plus the Tidings handle to reach its users.
#[derive(Clone)]
struct Shop {
    tidings: Tidings,
    /// A database in a real app.
    orders: Arc<Mutex<HashMap<u64, Order>>>,
}

type Failure = (StatusCode, String);

/// Two orders: #1 by `alice`, #2 by `bob`.
pub fn demo_orders() -> HashMap<u64, Order> {
    let order = |owner: &str| Order {
        owner: owner.to_owned(),
        shipped: false,
    };
    HashMap::from([(1, order("alice")), (2, order("bob"))])
}

/// The shop's router, with Tidings mounted at `/realtime/ws`. Only the WebSocket endpoint
/// is mounted: the shop calls the Rust API itself, so it needs no HTTP API (add
/// `.nest("/realtime", tidings.router())` for that, with an API key).
pub fn app(tidings: Tidings, orders: HashMap<u64, Order>) -> Router {
    let shop = Shop {
        tidings: tidings.clone(),
        orders: Arc::new(Mutex::new(orders)),
    };
    Router::new()
        .route(
            "/",
            get(|| async { "The shop: GET /orders/{id}, POST /orders/{id}/ship\n" }),
        )
        .route("/orders/{id}", get(order))
        .route("/orders/{id}/ship", post(ship))
        .route("/realtime/ws", tidings.ws_handler())
        .with_state(shop)
}

async fn order(State(shop): State<Shop>, Path(id): Path<u64>) -> Result<Json<Value>, Failure> {
    let orders = shop.orders.lock().await;
    let order = orders.get(&id).ok_or_else(|| not_found(id))?;
    Ok(Json(
        json!({ "id": id, "owner": order.owner, "shipped": order.shipped }),
    ))
}

/// Marks the order shipped, then notifies every open connection of its owner.
async fn ship(State(shop): State<Shop>, Path(id): Path<u64>) -> Result<Json<Value>, Failure> {
    let owner = {
        let mut orders = shop.orders.lock().await;
        let order = orders.get_mut(&id).ok_or_else(|| not_found(id))?;
        order.shipped = true;
        order.owner.clone()
    };
    let note = Notification {
        title: Some("Order shipped".to_owned()),
        message: format!("Order #{id} is on its way"),
        level: Level::Success,
        data: Some(json!({ "order": id })),
    };
    let reached = (shop.tidings.notify_user(&owner, &note).await)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(
        json!({ "id": id, "shipped": true, "notified_connections": reached }),
    ))
}

fn not_found(id: u64) -> Failure {
    (StatusCode::NOT_FOUND, format!("no order {id}\n"))
}
