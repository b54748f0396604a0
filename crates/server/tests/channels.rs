//! Channels: authorization, isolation, presence, typing, route-bound channels.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use axum::extract::Path;
use axum::routing::get;
use common::*;
use serde_json::json;
use tidings_server::{ConnectRequest, Tidings};

fn ticket_policy() -> tidings_server::TidingsBuilder {
    // User "agent" may open every ticket; others only tickets ending in their id.
    Tidings::builder()
        .config(config())
        .authorize(|request| async move {
            match request.channel.strip_prefix("ticket:") {
                Some(ticket) => &*request.user_id == "agent" || ticket.ends_with(&*request.user_id),
                None => true,
            }
        })
}

#[tokio::test]
async fn unauthorized_subscribe_is_an_error_4003_and_the_connection_stays() {
    let server = start_with(ticket_policy()).await;
    let mut client = server.connect("7").await;
    let answer = client
        .call("subscribe", json!({"channel": "ticket:42"}))
        .await;
    assert_eq!(answer.kind(), "error");
    assert_eq!(error(&answer).code.as_u16(), 4003);
    client.ping_ok().await;
    // The allowed one works on the same connection.
    client.subscribe("ticket:17").await;
}

#[tokio::test]
async fn another_users_personal_channel_is_forbidden_and_broadcast_is_reserved() {
    let server = start().await;
    let mut client = server.connect("7").await;
    let answer = client.call("subscribe", json!({"channel": "user:8"})).await;
    assert_eq!(error(&answer).code.as_u16(), 4003);
    let answer = client
        .call("subscribe", json!({"channel": "broadcast"}))
        .await;
    assert_eq!(error(&answer).code.as_u16(), 4003);
    let answer = client
        .call("unsubscribe", json!({"channel": "user:7"}))
        .await;
    assert_eq!(error(&answer).code.as_u16(), 4003);
    let answer = client
        .call("unsubscribe", json!({"channel": "never-joined"}))
        .await;
    assert_eq!(error(&answer).code.as_u16(), 4004);
}

#[tokio::test]
async fn two_channels_are_isolated() {
    let server = start().await;
    let mut a = server.connect("a").await;
    let mut b = server.connect("b").await;
    a.subscribe("ticket:1").await;
    b.subscribe("ticket:2").await;
    let event = json!({"type": "chat_message", "data": {"id": "m1", "content": "for ticket 1"}});
    let id = a
        .request("publish", json!({"channel": "ticket:1", "event": event}))
        .await;
    // The publisher is subscribed: its copy is queued before the reply.
    let got = a.recv().await;
    let reply = a.recv().await;
    assert_eq!(reply.id, Some(id));
    assert_eq!(as_json(&reply)["data"]["delivered"], 1);
    assert_eq!(message(&got).channel, "ticket:1");
    assert_eq!(message(&got).sender.as_deref(), Some("a"));
    b.expect_silence(300).await;
}

#[tokio::test]
async fn presence_joins_on_first_tab_and_leaves_on_last() {
    let server = start().await;
    let mut watcher = server.connect("w").await;
    watcher.subscribe("room").await;

    let mut tab1 = server.connect("u").await;
    tab1.subscribe("room").await;
    let joined = watcher.recv().await;
    assert_eq!(joined.kind(), "user_joined");
    assert_eq!(
        as_json(&joined)["data"],
        json!({"channel": "room", "user_id": "u"})
    );

    let mut tab2 = server.connect("u").await;
    tab2.subscribe("room").await;
    watcher.expect_silence(200).await; // second tab: no second join

    let presence = watcher.call("presence", json!({"channel": "room"})).await;
    assert_eq!(
        as_json(&presence)["data"]["members"],
        json!([{"user_id": "u", "connections": 2}, {"user_id": "w", "connections": 1}])
    );

    drop(tab1);
    watcher.expect_silence(300).await; // one tab left: still present
    tab2.call("unsubscribe", json!({"channel": "room"})).await;
    let left = watcher.recv().await;
    assert_eq!(left.kind(), "user_left");
    assert_eq!(as_json(&left)["data"]["user_id"], "u");
    assert_eq!(
        server.tidings.channel_members("room").await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn closing_the_last_tab_announces_user_left() {
    let server = start().await;
    let mut watcher = server.connect("w").await;
    watcher.subscribe("room").await;
    let mut tab = server.connect("u").await;
    tab.subscribe("room").await;
    assert_eq!(watcher.recv().await.kind(), "user_joined");
    drop(tab);
    let left = watcher.recv().await;
    assert_eq!(left.kind(), "user_left");
}

#[tokio::test]
async fn typing_reaches_other_members_but_not_its_sender() {
    let server = start().await;
    let mut alice = server.connect("alice").await;
    let mut alice_tab2 = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    alice.subscribe("ticket:9").await;
    alice_tab2.subscribe("ticket:9").await;
    bob.subscribe("ticket:9").await;
    alice.recv_until(|f| f.kind() == "user_joined").await; // bob joined
    alice_tab2.recv_until(|f| f.kind() == "user_joined").await;

    alice
        .send_json(json!({"type": "typing", "data": {"channel": "ticket:9"}}))
        .await;
    let typing = bob.recv().await;
    assert_eq!(
        as_json(&typing),
        json!({"type": "typing", "data": {"channel": "ticket:9", "user_id": "alice"}})
    );
    alice.expect_silence(200).await;
    alice_tab2.expect_silence(100).await;

    // Typing in a channel one is not in is an error.
    let answer = bob.call("typing", json!({"channel": "elsewhere"})).await;
    assert_eq!(error(&answer).code.as_u16(), 4004);
}

#[tokio::test]
async fn event_filters_deliver_only_the_named_types() {
    let server = start().await;
    let mut client = server.connect("7").await;
    client
        .call(
            "subscribe",
            json!({"channel": "jobs", "events": ["analysis_status"]}),
        )
        .await;
    let note = tidings_protocol::Notification {
        message: "skip me".into(),
        ..Default::default()
    };
    server.tidings.publish("jobs", &note).await.unwrap();
    let status = tidings_protocol::AnalysisStatus {
        id: "j1".into(),
        status: "completed".into(),
        progress: 100.0,
        result: None,
        error: None,
        retryable: None,
    };
    server.tidings.publish("jobs", &status).await.unwrap();
    let got = client.recv().await;
    assert_eq!(message(&got).event.kind(), "analysis_status");
    assert_eq!(message(&got).offset, Some(2));
}

#[tokio::test]
async fn route_bound_channels_join_on_connect_or_close_4003() {
    let tidings = ticket_policy().build().unwrap();
    let chat = tidings.clone();
    let app = axum::Router::new().route(
        "/ws/chat/{ticket}",
        get(
            move |Path(ticket): Path<String>, request: ConnectRequest| async move {
                chat.accept(request)
                    .bind_channel(format!("ticket:{ticket}"))
            },
        ),
    );
    let user_route = tidings.clone();
    let app = app.route(
        "/api/v1/ws/{user_id}",
        get(
            move |Path(user): Path<String>, request: ConnectRequest| async move {
                user_route.accept(request).expect_user(user)
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut allowed = Client::open(&format!("ws://{addr}/ws/chat/107?token={}", token("7"))).await;
    let connected = as_json(&allowed.recv().await);
    let channels: Vec<&str> = connected["data"]["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels, vec!["user:7", "ticket:107"]);
    tidings
        .publish(
            "ticket:107",
            &tidings_protocol::ChatMessage {
                id: "m".into(),
                content: "hello".into(),
                metadata: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(message(&allowed.recv().await).channel, "ticket:107");

    let mut denied = Client::open(&format!("ws://{addr}/ws/chat/42?token={}", token("7"))).await;
    let closed = denied.expect_close().await;
    assert_eq!(closed.code, 4003);

    let mut me = Client::open(&format!("ws://{addr}/api/v1/ws/7?token={}", token("7"))).await;
    assert_eq!(me.recv().await.kind(), "connected");
    let mut not_me = Client::open(&format!("ws://{addr}/api/v1/ws/8?token={}", token("7"))).await;
    assert_eq!(not_me.expect_close().await.code, 4003);
}

#[tokio::test]
async fn claims_can_restrict_channels() {
    let server = start().await;
    let claims = tidings_server::Claims {
        sub: "7".into(),
        exp: u64::MAX / 2,
        channels: Some(vec!["ticket:*".into()]),
        extra: Default::default(),
    };
    let token = tidings_server::auth::mint_claims(SECRET, &claims).unwrap();
    let mut client = Client::open(&format!("ws://{}/ws?token={token}", server.addr)).await;
    client.recv().await;
    client.subscribe("ticket:5").await;
    let answer = client.call("subscribe", json!({"channel": "lobby"})).await;
    assert_eq!(error(&answer).code.as_u16(), 4003);
}

#[tokio::test]
async fn crowded_channels_send_no_join_and_leave_frames() {
    let mut config = config();
    config.presence_events_max_members = 2;
    let server = start_config(config).await;
    let mut watcher = server.connect("w").await;
    watcher.subscribe("hall").await;
    let mut first = server.connect("u1").await;
    first.subscribe("hall").await;
    assert_eq!(watcher.recv().await.kind(), "user_joined"); // 2 members: still announced
    let mut second = server.connect("u2").await;
    second.subscribe("hall").await; // 3 members: a crowd, not announced
    watcher.expect_silence(200).await;
    first.expect_silence(100).await;
    // `presence` still lists everyone.
    let presence = watcher.call("presence", json!({"channel": "hall"})).await;
    assert_eq!(
        as_json(&presence)["data"]["members"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    drop(second);
    watcher.expect_silence(200).await;
    drop(first); // back to one other member: announced again
    assert_eq!(watcher.recv().await.kind(), "user_left");
}
