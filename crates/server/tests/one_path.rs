//! One rule, three entry points: a request refused on the socket is refused the same way by
//! the Rust API and by the HTTP API (the same protocol code; HTTP adds the matching status).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use serde_json::{Value, json};
use tidings_protocol::{Code, Delivery, RawEvent};
use tidings_server::{ChannelError, PublishError};

const FRAME_LIMIT: usize = 2048;

async fn server() -> TestServer {
    let mut config = config();
    config.limits.max_frame_bytes = FRAME_LIMIT;
    start_config(config).await
}

/// The HTTP API's answer: (status, the error's code name).
async fn http_refusal(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String) {
    let (status, text) = http(method, &server.http(path), Some(API_KEY), body).await;
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status} {text}"));
    (status, json["error"]["code"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn publishing_to_the_reserved_broadcast_channel() {
    let server = server().await;
    let event = json!({"type": "notification", "data": {"message": "hi"}});
    let mut client = server.connect("ann").await;
    let answer = client
        .call("publish", json!({"channel": "broadcast", "event": event}))
        .await;
    assert_eq!(error(&answer).code, Code::Forbidden);

    let raw: RawEvent = serde_json::from_value(event.clone()).unwrap();
    let refused = server
        .tidings
        .publish_raw("broadcast", raw, Delivery::Reliable)
        .await;
    assert!(
        matches!(&refused, Err(e @ PublishError::Forbidden(_)) if e.code() == Code::Forbidden),
        "{refused:?}"
    );

    let body = json!({"channel": "broadcast", "event": event});
    assert_eq!(
        http_refusal(&server, "POST", "/api/publish", Some(body)).await,
        (403, "forbidden".into())
    );
}

#[tokio::test]
async fn reading_the_history_or_members_of_the_broadcast_channel() {
    let server = server().await;
    let mut client = server.connect("ann").await;
    let answer = client
        .call("history", json!({"channel": "broadcast"}))
        .await;
    assert_eq!(error(&answer).code, Code::Forbidden);
    let answer = client
        .call("presence", json!({"channel": "broadcast"}))
        .await;
    assert_eq!(error(&answer).code, Code::Forbidden);

    let history = server.tidings.history("broadcast", None, None, 10).await;
    assert!(
        matches!(history, Err(ChannelError::Forbidden(_))),
        "{history:?}"
    );
    let members = server.tidings.channel_members("broadcast").await;
    assert!(
        matches!(members, Err(ChannelError::Forbidden(_))),
        "{members:?}"
    );

    let expected = (403, "forbidden".to_owned());
    assert_eq!(
        http_refusal(&server, "GET", "/api/channels/broadcast/history", None).await,
        expected
    );
    assert_eq!(
        http_refusal(&server, "GET", "/api/channels/broadcast/members", None).await,
        expected
    );
}

#[tokio::test]
async fn an_event_larger_than_a_client_can_receive() {
    let server = server().await;
    let event = json!({"type": "blob", "data": "x".repeat(FRAME_LIMIT + 100)});

    let raw: RawEvent = serde_json::from_value(event.clone()).unwrap();
    let refused = server
        .tidings
        .publish_raw("room", raw, Delivery::Reliable)
        .await;
    assert!(
        matches!(&refused, Err(e @ PublishError::TooLarge { .. }) if e.code() == Code::FrameTooLarge),
        "{refused:?}"
    );

    let body = json!({"channel": "room", "event": event});
    assert_eq!(
        http_refusal(&server, "POST", "/api/publish", Some(body)).await,
        (413, "frame_too_large".into())
    );
    let body = json!({"event": event});
    assert_eq!(
        http_refusal(&server, "POST", "/api/broadcast", Some(body)).await,
        (413, "frame_too_large".into())
    );

    // On the socket the frame itself is over the limit: the same code, as a close.
    let mut client = server.connect("ann").await;
    client
        .send_json(json!({"type": "publish", "id": 1, "data": {"channel": "room", "event": event}}))
        .await;
    assert_eq!(
        client.expect_close().await.code,
        Code::FrameTooLarge.as_u16()
    );
    assert_eq!(
        server
            .tidings
            .store()
            .position("room")
            .await
            .unwrap()
            .offset,
        0,
        "nothing stored"
    );
}

#[tokio::test]
async fn an_invalid_standard_event() {
    let server = server().await;
    let event = json!({"type": "notification", "data": {"level": "loud"}});
    let mut client = server.connect("ann").await;
    let answer = client
        .call("publish", json!({"channel": "room", "event": event}))
        .await;
    assert_eq!(error(&answer).code, Code::BadFrame);

    let raw: RawEvent = serde_json::from_value(event.clone()).unwrap();
    let refused = server
        .tidings
        .publish_raw("room", raw, Delivery::Reliable)
        .await;
    assert!(
        matches!(&refused, Err(e @ PublishError::InvalidEvent(_)) if e.code() == Code::BadFrame),
        "{refused:?}"
    );

    let body = json!({"channel": "room", "event": event});
    assert_eq!(
        http_refusal(&server, "POST", "/api/publish", Some(body)).await,
        (400, "bad_frame".into())
    );
}
