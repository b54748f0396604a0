//! `[proxy]` and the builder's hooks: the application's back end decides subscriptions,
//! checks and rewrites publications and answers `rpc`, over real HTTP to a real app on
//! 127.0.0.1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use common::*;
use serde_json::{Value, json};
use tidings_server::Config;
use tidings_server::hooks::HookError;

const PROXY_SECRET: &str = "proxy-secret";

/// What the app saw: (kind header, body), and whether every signature checked out.
#[derive(Default)]
struct Seen {
    calls: Vec<(String, Value)>,
    bad_signatures: usize,
}

/// The application's back end: a FastAPI-like app written with axum.
async fn start_app(seen: Arc<Mutex<Seen>>) -> SocketAddr {
    let check = {
        let seen = seen.clone();
        move |headers: &HeaderMap, body: &str| {
            let kind = headers["x-tidings-proxy"].to_str().unwrap().to_owned();
            let header = headers["x-tidings-signature"].to_str().unwrap();
            let t: u64 = header
                .strip_prefix("t=")
                .and_then(|rest| rest.split(',').next())
                .unwrap()
                .parse()
                .unwrap();
            let mut seen = seen.lock().unwrap();
            if tidings_server::webhooks::signature(PROXY_SECRET, t, body) != header {
                seen.bad_signatures += 1;
            }
            let value: Value = serde_json::from_str(body).unwrap();
            seen.calls.push((kind, value.clone()));
            value
        }
    };
    let subscribe = {
        let check = check.clone();
        move |headers: HeaderMap, body: String| async move {
            let request = check(&headers, &body);
            match request["channel"].as_str().unwrap() {
                "ticket:down" => StatusCode::BAD_GATEWAY.into_response(),
                "ticket:fastapi" => {
                    (StatusCode::FORBIDDEN, Json(json!({"detail": "archived"}))).into_response()
                }
                "ticket:typo" => Json(json!({"allowed": false})).into_response(),
                "ticket:null" => Json(Value::Null).into_response(),
                "ticket:crash" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                "ticket:2" => {
                    Json(json!({"allow": false, "message": "not your ticket"})).into_response()
                }
                "ticket:3" => (StatusCode::FORBIDDEN, "closed ticket").into_response(),
                _ => Json(json!({})).into_response(),
            }
        }
    };
    let publish = {
        let check = check.clone();
        move |headers: HeaderMap, body: String| async move {
            let request = check(&headers, &body);
            let content = request["event"]["data"]["content"]
                .as_str()
                .unwrap_or_default();
            if content.contains("spam") {
                return Json(json!({"allow": false, "message": "no spam here"}));
            }
            // Enrich: the back end adds who the sender is.
            let mut event = request["event"].clone();
            event["data"]["sender_role"] = json!("customer");
            Json(json!({"event": event}))
        }
    };
    let rpc = {
        let check = check.clone();
        move |headers: HeaderMap, body: String| async move {
            let request = check(&headers, &body);
            match request["method"].as_str().unwrap() {
                "motivation_requested" => Json(json!({"data": {
                    "message": format!("Keep going, {}!", request["user_id"].as_str().unwrap()),
                    "mood": request["data"]["mood"],
                }}))
                .into_response(),
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    Json(json!({"data": null})).into_response()
                }
                "huge" => Json(json!({"data": "x".repeat(2 << 20)})).into_response(),
                "invalid" => {
                    Json(json!({"error": {"code": "bad_request", "message": "mood is required"}}))
                        .into_response()
                }
                "forbidden" => {
                    Json(json!({"error": {"code": "forbidden", "message": "admins only"}}))
                        .into_response()
                }
                _ => Json(json!({"error": {"code": "not_found", "message": "no such method"}}))
                    .into_response(),
            }
        }
    };
    let connect = {
        let check = check.clone();
        move |headers: HeaderMap, body: String| async move {
            let request = check(&headers, &body);
            let cookie = request["headers"]["cookie"].as_str().unwrap_or_default();
            match (request["user_id"].as_str(), cookie) {
                (None, "session=bob-session") => Json(json!({"user_id": "bob"})),
                (None, _) => Json(json!({"allow": false, "message": "log in first"})),
                (Some("mallory"), _) => Json(json!({"allow": false, "message": "banned"})),
                (Some("carol"), _) => Json(json!({"channels": ["ticket:*"]})),
                (Some(_), _) => Json(json!({})),
            }
        }
    };
    let app = axum::Router::new()
        .route("/tidings/connect", post(connect))
        .route("/tidings/subscribe", post(subscribe))
        .route("/tidings/publish", post(publish))
        .route("/tidings/rpc", post(rpc));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn proxied(app: SocketAddr) -> Config {
    let mut config = config();
    config.proxy.subscribe = Some(format!("http://{app}/tidings/subscribe"));
    config.proxy.publish = Some(format!("http://{app}/tidings/publish"));
    config.proxy.rpc = Some(format!("http://{app}/tidings/rpc"));
    config.proxy.secret = Some(PROXY_SECRET.into());
    config.proxy.timeout = Duration::from_secs(1);
    config
}

fn code_of(frame: &tidings_protocol::ServerFrame) -> u16 {
    error(frame).code.as_u16()
}

#[tokio::test]
async fn rpc_goes_to_the_back_end_and_every_failure_is_typed() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = start_app(seen.clone()).await;
    let server = start_config(proxied(app)).await;
    let mut client = server.connect("alice").await;

    let answer = client
        .call(
            "rpc",
            json!({"method": "motivation_requested", "data": {"mood": "tired"}}),
        )
        .await;
    assert_eq!(
        as_json(&answer)["data"],
        json!({"kind": "rpc", "data": {"message": "Keep going, alice!", "mood": "tired"}})
    );
    let unknown = client.call("rpc", json!({"method": "nope"})).await;
    assert_eq!(code_of(&unknown), 4004);
    let refused = client.call("rpc", json!({"method": "forbidden"})).await;
    assert_eq!(
        (code_of(&refused), error(&refused).message.as_str()),
        (4003, "admins only")
    );
    // Slower than proxy.timeout: a retryable 4503, and the connection reads on meanwhile.
    let slow_id = client.request("rpc", json!({"method": "slow"})).await;
    client.ping_ok().await;
    let slow = client.recv_until(|f| f.id == Some(slow_id)).await;
    assert_eq!(code_of(&slow), 4503);
    // An answer over 1 MiB is the back end's failure, not an allocation.
    let huge = client.call("rpc", json!({"method": "huge"})).await;
    assert_eq!(code_of(&huge), 4500, "{:?}", error(&huge).message);
    let invalid = client.call("rpc", json!({"method": "invalid"})).await;
    assert_eq!(
        (code_of(&invalid), error(&invalid).message.as_str()),
        (4400, "mood is required")
    );
    let bad = client.call("rpc", json!({"method": ""})).await;
    assert_eq!(code_of(&bad), 4400);
    client.ping_ok().await;

    let seen = seen.lock().unwrap();
    assert_eq!(seen.bad_signatures, 0);
    let (kind, first) = &seen.calls[0];
    assert_eq!(kind, "rpc");
    assert_eq!(first["user_id"], "alice");
    assert_eq!(first["claims"]["sub"], "alice");
}

#[tokio::test]
async fn a_back_end_that_is_down_gives_4503_and_without_one_rpc_is_4004() {
    // A port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let server = start_config(proxied(addr)).await;
    let mut client = server.connect("alice").await;
    let down = client.call("rpc", json!({"method": "anything"})).await;
    assert_eq!(code_of(&down), 4503);
    // The app's address is internal: it is not in the reason clients see.
    let port = addr.port().to_string();
    assert!(
        !error(&down).message.contains(&port),
        "{:?}",
        error(&down).message
    );
    let subscribe = client
        .call("subscribe", json!({"channel": "ticket:1"}))
        .await;
    assert_eq!(code_of(&subscribe), 4503);
    let publish = client
        .call("publish", json!({"channel": "lobby", "event": {"type": "chat_message", "data": {"id": "1", "content": "hi"}}}))
        .await;
    assert_eq!(code_of(&publish), 4503);

    let plain = start().await;
    let mut client = plain.connect("bob").await;
    assert_eq!(
        code_of(&client.call("rpc", json!({"method": "x"})).await),
        4004
    );
}

#[tokio::test]
async fn the_back_end_decides_who_reads_a_channel() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = start_app(seen.clone()).await;
    let mut config = proxied(app);
    config.routes = vec![tidings_server::config::RouteConfig {
        path: "/ws/chat/{ticket_id}".into(),
        channel: Some("ticket:{ticket_id}".into()),
        user: None,
    }];
    let server = start_config(config).await;
    let mut client = server.connect("alice").await;
    client.subscribe("ticket:1").await;
    let denied = client
        .call("subscribe", json!({"channel": "ticket:2"}))
        .await;
    assert_eq!(
        (code_of(&denied), error(&denied).message.as_str()),
        (4003, "not your ticket")
    );
    let closed = client
        .call("subscribe", json!({"channel": "ticket:3"}))
        .await;
    assert_eq!(
        (code_of(&closed), error(&closed).message.as_str()),
        (4003, "closed ticket")
    );
    let down = client
        .call("subscribe", json!({"channel": "ticket:down"}))
        .await;
    assert_eq!(code_of(&down), 4503);
    let fastapi = client
        .call("subscribe", json!({"channel": "ticket:fastapi"}))
        .await;
    assert_eq!(
        (code_of(&fastapi), error(&fastapi).message.as_str()),
        (4003, "archived")
    );
    // A misspelt answer is a failure, never an allow; `null` is `{}`; a crash is 4500.
    let typo = client
        .call("subscribe", json!({"channel": "ticket:typo"}))
        .await;
    assert_eq!(code_of(&typo), 4500);
    client.subscribe("ticket:null").await;
    let crash = client
        .call("subscribe", json!({"channel": "ticket:crash"}))
        .await;
    assert_eq!(code_of(&crash), 4500);
    // History asks too.
    let history = client.call("history", json!({"channel": "ticket:2"})).await;
    assert_eq!(code_of(&history), 4003);
    client.ping_ok().await;

    // A route's channel: joined when allowed, closed with 4003 when not.
    let addr = server.addr;
    let mut open = Client::open(&format!("ws://{addr}/ws/chat/7?token={}", token("alice"))).await;
    assert_eq!(open.recv().await.kind(), "connected");
    let mut refused =
        Client::open(&format!("ws://{addr}/ws/chat/2?token={}", token("alice"))).await;
    let closed = refused.expect_close().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4003, "not your ticket")
    );
    // The personal channel is the built-in policy's, never asked.
    let seen = seen.lock().unwrap();
    assert!(
        seen.calls
            .iter()
            .all(|(_, call)| call["channel"] != "user:alice")
    );
    // "ticket:down" was tried twice (proxy.retries = 1).
    let tries = seen
        .calls
        .iter()
        .filter(|(_, call)| call["channel"] == "ticket:down")
        .count();
    assert_eq!(tries, 2);
    let crashes = seen
        .calls
        .iter()
        .filter(|(_, call)| call["channel"] == "ticket:crash")
        .count();
    assert_eq!(crashes, 1, "a 500 is not repeated");
}

#[tokio::test]
async fn the_back_end_checks_and_enriches_publications() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = start_app(seen.clone()).await;
    let server = start_config(proxied(app)).await;
    let mut writer = server.connect("alice").await;
    let mut reader = server.connect("bob").await;
    reader.subscribe("ticket:1").await;
    writer.subscribe("ticket:1").await;

    let reply = writer
        .call("publish", json!({"channel": "ticket:1", "event": {"type": "chat_message", "data": {"id": "m1", "content": "hello"}}}))
        .await;
    assert_eq!(reply.kind(), "reply", "{reply:?}");
    let got = as_json(&reader.recv_until(|f| f.kind() == "message").await);
    assert_eq!(got["data"]["event"]["data"]["sender_role"], "customer");
    assert_eq!(got["data"]["sender"], "alice");

    let spam = writer
        .call("publish", json!({"channel": "ticket:1", "event": {"type": "chat_message", "data": {"id": "m2", "content": "buy spam"}}}))
        .await;
    assert_eq!(
        (code_of(&spam), error(&spam).message.as_str()),
        (4003, "no spam here")
    );
    reader.expect_silence(200).await;

    // The back end's own publications are not sent back to it.
    let before = seen.lock().unwrap().calls.len();
    let (status, _) = http(
        "POST",
        &server.http("/api/publish"),
        Some(API_KEY),
        Some(json!({"channel": "ticket:1", "event": {"type": "chat_message", "data": {"id": "m3", "content": "spam from the back end"}}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(seen.lock().unwrap().calls.len(), before);
}

#[tokio::test]
async fn an_embedding_app_sets_the_same_as_hooks() {
    let builder = tidings_server::Tidings::builder()
        .config(config())
        .on_rpc(|request| async move {
            match request.method.as_str() {
                "echo" => Ok(request.data),
                other => Err(HookError::NotFound(format!("no {other}"))),
            }
        })
        .on_subscribe(|request| async move {
            if request.channel.starts_with("vip:") {
                Err(HookError::Refused("members only".into()))
            } else {
                Ok(())
            }
        });
    let server = start_with(builder).await;
    let mut client = server.connect("alice").await;
    let echo = client
        .call("rpc", json!({"method": "echo", "data": [1, 2, 3]}))
        .await;
    assert_eq!(as_json(&echo)["data"]["data"], json!([1, 2, 3]));
    assert_eq!(
        code_of(&client.call("rpc", json!({"method": "other"})).await),
        4004
    );
    let vip = client
        .call("subscribe", json!({"channel": "vip:lounge"}))
        .await;
    assert_eq!(
        (code_of(&vip), error(&vip).message.as_str()),
        (4003, "members only")
    );
    client.subscribe("lobby").await;
}

#[tokio::test]
async fn the_back_end_admits_names_and_limits_connections() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = start_app(seen.clone()).await;
    let mut config = proxied(app);
    config.proxy.connect = Some(format!("http://{app}/tidings/connect"));
    let server = start_config(config).await;
    let addr = server.addr;
    // A token the app accepts as is.
    server.connect("alice").await;
    // No token: the app knows the user by its session cookie.
    let mut bob = Client::open_with(
        &format!("ws://{addr}/ws"),
        &[("cookie", "session=bob-session".to_owned())],
    )
    .await
    .unwrap();
    assert_eq!(as_json(&bob.recv().await)["data"]["user_id"], "bob");
    let mut stranger = Client::open(&format!("ws://{addr}/ws")).await;
    let closed = stranger.expect_close().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4003, "log in first")
    );
    let mut mallory = Client::open(&server.url("mallory")).await;
    let closed = mallory.expect_close().await;
    assert_eq!((closed.code, closed.reason.as_str()), (4003, "banned"));
    // Granted channels limit what the connection may use.
    let mut carol = server.connect("carol").await;
    carol.subscribe("ticket:9").await;
    let lobby = carol.call("subscribe", json!({"channel": "lobby"})).await;
    assert_eq!(code_of(&lobby), 4003);
    let seen = seen.lock().unwrap();
    let (_, first) = seen
        .calls
        .iter()
        .find(|(kind, _)| kind == "connect")
        .unwrap();
    assert_eq!(first["path"], "/ws");
    assert_eq!(first["claims"]["sub"], "alice");
}

#[tokio::test]
async fn a_connect_back_end_that_is_down_closes_with_4503() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let mut config = config();
    config.proxy.connect = Some(format!("http://{addr}/tidings/connect"));
    let server = start_config(config).await;
    let mut client = Client::open(&server.url("alice")).await;
    assert_eq!(client.expect_close().await.code, 4503);
}
