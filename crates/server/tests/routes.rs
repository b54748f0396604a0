//! `[[routes]]`, `allow_anonymous` and `jwt.user_id_claim`: what the binary offers back ends
//! that cannot embed the library.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use serde_json::{Value, json};
use tidings_server::Config;
use tidings_server::config::RouteConfig;

fn routed() -> Config {
    let mut config = config();
    config.routes = vec![
        RouteConfig {
            path: "/ws/chat/{ticket_id}".into(),
            channel: Some("ticket:{ticket_id}".into()),
            user: None,
        },
        RouteConfig {
            path: "/api/v1/ws/{user_id}".into(),
            channel: None,
            user: Some("{user_id}".into()),
        },
    ];
    config
}

fn channels_of(connected: &Value) -> Vec<String> {
    connected["data"]["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["channel"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_route_joins_its_channel_or_closes_4003() {
    let server = start_config(routed()).await;
    let addr = server.addr;
    let mut chat = Client::open(&format!("ws://{addr}/ws/chat/42?token={}", token("7"))).await;
    let connected = as_json(&chat.recv().await);
    assert_eq!(channels_of(&connected), ["user:7", "ticket:42"]);
    let (status, body) = http(
        "POST",
        &server.http("/api/publish"),
        Some(API_KEY),
        Some(json!({"channel": "ticket:42", "event": {"type": "chat_message", "data": {"id": "m1", "content": "hi"}}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(message(&chat.recv().await).channel, "ticket:42");

    // A token limited to other tickets may not open this one.
    let claims = tidings_server::Claims {
        sub: "7".into(),
        exp: u64::MAX / 2,
        channels: Some(vec!["ticket:1".into()]),
        extra: Default::default(),
    };
    let limited = tidings_server::auth::mint_claims(SECRET, &claims).unwrap();
    let mut denied = Client::open(&format!("ws://{addr}/ws/chat/42?token={limited}")).await;
    assert_eq!(denied.expect_close().await.code, 4003);
    // Plain /ws is still there.
    server.connect("8").await;
}

#[tokio::test]
async fn a_user_route_takes_only_its_own_user() {
    let server = start_config(routed()).await;
    let addr = server.addr;
    let mut me = Client::open(&format!("ws://{addr}/api/v1/ws/7?token={}", token("7"))).await;
    assert_eq!(me.recv().await.kind(), "connected");
    let mut not_me = Client::open(&format!("ws://{addr}/api/v1/ws/8?token={}", token("7"))).await;
    assert_eq!(not_me.expect_close().await.code, 4003);
    let mut no_token = Client::open(&format!("ws://{addr}/api/v1/ws/7")).await;
    assert_eq!(no_token.expect_close().await.code, 4001);
}

#[tokio::test]
async fn anonymous_connections_get_an_id_of_their_own_or_the_routes() {
    let mut config = routed();
    config.allow_anonymous = true;
    let server = start_config(config).await;
    let addr = server.addr;
    let mut first = Client::open(&format!("ws://{addr}/ws")).await;
    let mut second = Client::open(&format!("ws://{addr}/ws")).await;
    let ids: Vec<String> = [first.recv().await, second.recv().await]
        .iter()
        .map(|frame| {
            as_json(frame)["data"]["user_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(ids.iter().all(|id| id.starts_with("anon-")), "{ids:?}");
    assert_ne!(ids[0], ids[1]);

    let mut diary = Client::open(&format!("ws://{addr}/api/v1/ws/9")).await;
    assert_eq!(as_json(&diary.recv().await)["data"]["user_id"], "9");
    assert!(server.tidings.is_user_connected("9"));
    // A path's user id is held to the rules of user ids.
    let long = "x".repeat(300);
    for bad in ["a%00b", long.as_str()] {
        let mut refused = Client::open(&format!("ws://{addr}/api/v1/ws/{bad}")).await;
        assert_eq!(refused.expect_close().await.code, 4400, "{bad}");
    }
    // A token that is present is still checked.
    let mut forged = Client::open(&format!("ws://{addr}/ws?token=forged")).await;
    assert_eq!(forged.expect_close().await.code, 4001);
}

#[tokio::test]
async fn the_user_id_claim_names_the_user() {
    let mut config = config();
    config.jwt.user_id_claim = Some("user_id".into());
    let server = start_config(config).await;
    let claims = tidings_server::Claims {
        sub: "session-1".into(),
        exp: u64::MAX / 2,
        channels: None,
        extra: [("user_id".to_owned(), json!(1234))].into_iter().collect(),
    };
    let token = tidings_server::auth::mint_claims(SECRET, &claims).unwrap();
    let mut client = Client::open(&format!("ws://{}/ws?token={token}", server.addr)).await;
    let connected = as_json(&client.recv().await);
    assert_eq!(connected["data"]["user_id"], "1234");
    assert_eq!(channels_of(&connected), ["user:1234"]);
}

#[test]
fn routes_the_router_cannot_serve_are_refused() {
    let refused = |path: &str, channel: Option<&str>| {
        let mut config = config();
        config.routes = vec![RouteConfig {
            path: path.into(),
            channel: channel.map(Into::into),
            user: None,
        }];
        config.validate().err().map(|e| e.to_string())
    };
    assert_eq!(
        refused("/ws/chat/{ticket_id}", Some("ticket:{ticket_id}")),
        None
    );
    for (path, channel, why) in [
        ("ws/chat", None, "start with /"),
        ("/ws/{a}{b}", None, "segment"),
        ("/ws/{*rest}", None, "segment"),
        ("/ws//x", None, "segment"),
        ("/ws", None, "uses this path"),
        ("/api/users/{id}", None, "uses this path"),
        ("/ws/{a}/{a}", None, "twice"),
        ("/ws/chat/{id}", Some("ticket:{ticket_id}"), "not a segment"),
    ] {
        let message = refused(path, channel).unwrap_or_default();
        assert!(message.contains(why), "{path}: {message}");
    }
    let mut config = config();
    let route = |path: &str| RouteConfig {
        path: path.into(),
        channel: None,
        user: None,
    };
    config.routes = vec![route("/a/{x}"), route("/a/{y}")];
    let message = config.validate().unwrap_err().to_string();
    assert!(message.contains("same shape"), "{message}");
}
