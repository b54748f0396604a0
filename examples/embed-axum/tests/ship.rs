//! The shop on 127.0.0.1: shipping an order reaches its owner's WebSocket.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::future::IntoFuture;
use std::net::SocketAddr;

use futures_util::StreamExt;
use serde_json::Value;
use tidings_server::{Tidings, mint_token};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "example-secret";

async fn start() -> SocketAddr {
    let tidings = Tidings::builder().jwt_secret(SECRET).build().unwrap();
    let listener = tidings_server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let app = example_embed_axum::app(tidings.clone(), example_embed_axum::demo_orders());
    let serve = tidings_server::serve(listener, tidings)
        .with_router(app)
        .with_shutdown(std::future::pending());
    tokio::spawn(serve.into_future());
    addr
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON text frame (5 s at most).
async fn next_json(ws: &mut Socket) -> Value {
    let wait = std::time::Duration::from_secs(5);
    loop {
        match tokio::time::timeout(wait, ws.next())
            .await
            .expect("a frame within 5 s")
        {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn shipping_an_order_notifies_its_owner() {
    let addr = start().await;
    let token = mint_token(SECRET, "alice", 60).unwrap();
    let url = format!("ws://{addr}/realtime/ws?token={token}");
    let (mut alice, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(next_json(&mut alice).await["type"], "connected");

    let http = reqwest::Client::new();
    let shipped = http
        .post(format!("http://{addr}/orders/1/ship"))
        .send()
        .await
        .unwrap();
    assert_eq!(shipped.status(), 200);
    let body: Value = serde_json::from_str(&shipped.text().await.unwrap()).unwrap();
    assert_eq!(body["notified_connections"], 1, "{body}");

    let frame = next_json(&mut alice).await;
    assert_eq!(frame["type"], "message", "{frame}");
    assert_eq!(frame["data"]["channel"], "user:alice");
    let event = &frame["data"]["event"];
    assert_eq!(event["type"], "notification");
    assert_eq!(event["data"]["message"], "Order #1 is on its way");
    assert_eq!(event["data"]["data"]["order"], 1);

    let order = http
        .get(format!("http://{addr}/orders/1"))
        .send()
        .await
        .unwrap();
    assert!(order.text().await.unwrap().contains(r#""shipped":true"#));
}

#[tokio::test]
async fn unknown_orders_are_404_and_an_offline_owner_is_not_reached() {
    let addr = start().await;
    let http = reqwest::Client::new();
    let missing = http
        .post(format!("http://{addr}/orders/9/ship"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Bob's order reaches nobody while bob is offline.
    let shipped = http
        .post(format!("http://{addr}/orders/2/ship"))
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&shipped.text().await.unwrap()).unwrap();
    assert_eq!(body["notified_connections"], 0, "{body}");
}
