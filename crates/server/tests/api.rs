//! The back-end Rust API and the HTTP API.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use serde_json::{Value, json};
use tidings_protocol::{Level, Notification};

#[tokio::test]
async fn http_api_needs_the_key() {
    let server = start().await;
    for (method, path) in [
        ("POST", "/api/publish"),
        ("POST", "/api/notify/user/7"),
        ("POST", "/api/broadcast"),
        ("GET", "/api/stats"),
        ("GET", "/api/users"),
        ("GET", "/api/users/7/status"),
        ("GET", "/api/channels/c/members"),
        ("POST", "/api/users/7/disconnect"),
    ] {
        let (status, body) = http(method, &server.http(path), None, Some(json!({}))).await;
        assert_eq!(status, 401, "{method} {path}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        let (status, _) = http(method, &server.http(path), Some("wrong"), Some(json!({}))).await;
        assert_eq!(status, 401, "{method} {path} with a wrong key");
    }
    let (status, body) = http("GET", &server.http("/healthz"), None, None).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn notify_user_reaches_every_tab_and_counts_them() {
    let server = start().await;
    let mut tab1 = server.connect("7").await;
    let mut tab2 = server.connect("7").await;
    let mut other = server.connect("8").await;
    let note = Notification {
        title: Some("Report".into()),
        message: "ready".into(),
        level: Level::Success,
        data: None,
    };
    assert_eq!(server.tidings.notify_user("7", &note).await.unwrap(), 2);
    for tab in [&mut tab1, &mut tab2] {
        let got = tab.recv().await;
        assert_eq!(message(&got).channel, "user:7");
        assert_eq!(
            message(&got)
                .event
                .decode::<Notification>()
                .unwrap()
                .unwrap(),
            note
        );
    }
    other.expect_silence(200).await;

    // The same over HTTP.
    let (status, body) = http(
        "POST",
        &server.http("/api/notify/user/7"),
        Some(API_KEY),
        Some(json!({"message": "again", "level": "warning"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"delivered": 2, "scope": "node"})
    );
    let got = tab1.recv().await;
    assert_eq!(as_json(&got)["data"]["event"]["data"]["level"], "warning");
    assert_eq!(
        server.tidings.notify_user("nobody", &note).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn http_publish_broadcast_status_members_and_disconnect() {
    let server = start().await;
    let mut a = server.connect("a").await;
    let mut b = server.connect("b").await;
    a.subscribe("ticket:1").await;

    let (status, body) = http(
        "POST",
        &server.http("/api/publish"),
        Some(API_KEY),
        Some(json!({"channel": "ticket:1", "event": {"type": "chat_message", "data": {"id": "m1", "content": "hi"}}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (answer["offset"].clone(), answer["delivered"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(message(&a.recv().await).sender, None);

    let (status, body) = http(
        "POST",
        &server.http("/api/publish"),
        Some(API_KEY),
        Some(json!({"channel": "ticket:1", "event": {"type": "notification", "data": {"level": "nope"}}})),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    let (_, body) = http(
        "POST",
        &server.http("/api/broadcast"),
        Some(API_KEY),
        Some(json!({"event": {"type": "maintenance:mode", "data": {"in_minutes": 5}}})),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"delivered": 2, "scope": "node"})
    );
    for client in [&mut a, &mut b] {
        let got = client.recv().await;
        assert_eq!(
            (message(&got).channel.as_str(), message(&got).offset),
            ("broadcast", None)
        );
        assert_eq!(message(&got).event.kind(), "maintenance:mode");
    }

    let (_, body) = http(
        "GET",
        &server.http("/api/users/a/status"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"user_id": "a", "connected": true, "connections": 1, "scope": "node"})
    );
    let (_, body) = http(
        "GET",
        &server.http("/api/users/zed/status"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["connected"],
        false
    );
    let (_, body) = http(
        "GET",
        &server.http("/api/channels/ticket:1/members"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"channel": "ticket:1", "members": [{"user_id": "a", "connections": 1}], "scope": "node"})
    );
    let (_, body) = http("GET", &server.http("/api/stats"), Some(API_KEY), None).await;
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (stats["connections"].clone(), stats["users"].clone()),
        (json!(2), json!(2))
    );

    let (_, body) = http(
        "POST",
        &server.http("/api/users/b/disconnect"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"disconnected": 1, "scope": "node"})
    );
    assert_eq!(b.expect_close().await.code, 4006);
    assert!(server.tidings.is_user_connected("a"));
    assert_eq!(server.tidings.connected_users(), vec!["a".to_owned()]);
}

#[tokio::test]
async fn back_end_publications_can_name_their_sender() {
    let server = start().await;
    let mut a = server.connect("a").await;
    a.subscribe("ticket:1").await;
    let calls = [
        (
            "/api/publish",
            json!({"channel": "ticket:1", "sender": "agent-7", "event": {"type": "chat_message", "data": {"id": "m1", "content": "hi"}}}),
        ),
        (
            "/api/notify/user/a",
            json!({"message": "hello", "sender": "agent-7"}),
        ),
        (
            "/api/broadcast",
            json!({"sender": "agent-7", "event": {"type": "maintenance:mode", "data": {}}}),
        ),
    ];
    for (path, body) in calls {
        let (status, answer) = http("POST", &server.http(path), Some(API_KEY), Some(body)).await;
        assert_eq!(status, 200, "{path}: {answer}");
        let got = a.recv().await;
        assert_eq!(message(&got).sender.as_deref(), Some("agent-7"), "{path}");
    }
    // Stored with it: history shows the sender too.
    let page = server
        .tidings
        .history("ticket:1", None, None, 10)
        .await
        .unwrap();
    assert_eq!(page.publications[0].sender.as_deref(), Some("agent-7"));
}

#[tokio::test]
async fn connected_users_come_in_sorted_pages() {
    let server = start().await;
    let mut clients = Vec::new();
    for user in ["c", "a", "e", "b", "d"] {
        clients.push(server.connect(user).await);
    }
    let page = |query: &'static str| {
        let url = server.http(&format!("/api/users{query}"));
        async move {
            let (status, body) = http("GET", &url, Some(API_KEY), None).await;
            assert_eq!(status, 200, "{body}");
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };
    assert_eq!(
        page("?limit=2").await,
        json!({"users": ["a", "b"], "next": "b", "scope": "node"})
    );
    assert_eq!(
        page("?limit=2&after=b").await,
        json!({"users": ["c", "d"], "next": "d", "scope": "node"})
    );
    assert_eq!(
        page("?limit=2&after=d").await,
        json!({"users": ["e"], "next": null, "scope": "node"})
    );
    // `after` need not be connected any more: the page starts where it would be.
    assert_eq!(page("?after=bb").await["users"], json!(["c", "d", "e"]));
    assert_eq!(page("").await["users"], json!(["a", "b", "c", "d", "e"]));
    let (status, _) = http("GET", &server.http("/api/users"), None, None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_status_route_is_open_only_when_turned_on() {
    let off = start().await;
    let (status, _) = http("GET", &off.http("/api/status"), None, None).await;
    assert_eq!(status, 404);

    let mut config = common::config();
    config.status_route = true;
    let on = start_config(config).await;
    let _a = on.connect("a").await;
    let _a2 = on.connect("a").await;
    let _b = on.connect("b").await;
    let (status, body) = http("GET", &on.http("/api/status"), None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": "ok", "connections": 3, "users": 2})
    );
}

#[tokio::test]
async fn every_api_refusal_is_typed_json() {
    let server = start().await;
    let refusal = |status: u16, body: &str| {
        let value: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {body}"));
        (status, value["error"]["code"].as_str().unwrap().to_owned())
    };
    let (status, body) = http("GET", &server.http("/api/nope"), Some(API_KEY), None).await;
    assert_eq!(refusal(status, &body), (404, "not_found".to_owned()));
    let (status, body) = http("GET", &server.http("/api/status"), None, None).await;
    assert_eq!(refusal(status, &body), (404, "not_found".to_owned()));
    let (status, body) = http(
        "GET",
        &server.http("/api/channels/c/history?since=abc"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(refusal(status, &body), (400, "bad_request".to_owned()));
    let (status, body) = http(
        "GET",
        &server.http("/api/users?limit=-1"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(refusal(status, &body), (400, "bad_request".to_owned()));
    for (path, body) in [
        (
            "/api/publish",
            json!({"channel": "c", "sender": "", "event": {"type": "x", "data": {}}}),
        ),
        (
            "/api/notify/user/7",
            json!({"message": "m", "sender": "a\nb"}),
        ),
        (
            "/api/broadcast",
            json!({"sender": "", "event": {"type": "x", "data": {}}}),
        ),
    ] {
        let (status, answer) = http("POST", &server.http(path), Some(API_KEY), Some(body)).await;
        assert_eq!(
            refusal(status, &answer),
            (400, "bad_frame".to_owned()),
            "{path}"
        );
        assert!(answer.contains("invalid sender"), "{answer}");
    }
    // A wrong key on history says what it expected.
    let (status, body) = http(
        "GET",
        &server.http("/api/channels/c/history"),
        Some("wrong"),
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains("API key"), "{body}");
}

#[tokio::test]
async fn openapi_and_metrics_are_served() {
    let server = start().await;
    let mut client = server.connect("7").await;
    client.ping_ok().await;
    let (status, body) = http("GET", &server.http("/api/openapi.json"), None, None).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    for path in [
        "/api/publish",
        "/api/notify/user/{id}",
        "/api/broadcast",
        "/api/stats",
        "/api/users/{id}/status",
        "/api/channels/{name}/members",
        "/api/users/{id}/disconnect",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    let (status, body) = http("GET", &server.http("/metrics"), None, None).await;
    assert_eq!(status, 200);
    for name in [
        "tidings_connections",
        "tidings_frames_in_total",
        "tidings_frames_out_total",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
}

#[tokio::test]
async fn shutdown_sends_shutdown_then_closes_1012_and_refuses_new_connections() {
    let server = start().await;
    let mut client = server.connect("7").await;
    let tidings = server.tidings.clone();
    let stopping = tokio::spawn(async move { tidings.shutdown().await });
    let frame = client.recv().await;
    assert_eq!(frame.kind(), "shutdown");
    let after = as_json(&frame)["data"]["reconnect_after_ms"]
        .as_u64()
        .unwrap();
    assert!(after <= 5000);
    assert_eq!(
        client.expect_close().await,
        Closed {
            code: 1012,
            reason: "server restart".into()
        }
    );
    stopping.await.unwrap();
    assert_eq!(server.tidings.stats().connections, 0);
    let refused = Client::open_with(&server.url("7"), &[]).await;
    assert!(
        refused.is_err(),
        "new connections must be refused while shutting down"
    );
}
