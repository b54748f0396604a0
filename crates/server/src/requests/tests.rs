//! Every request handler, run without a socket: a session on a real node (memory store),
//! its frames read back from the connection's outbox.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use serde_json::{Value, json};
use tidings_protocol::ClientFrame;

use super::dispatch;
use crate::auth::Claims;
use crate::connection::Session;
use crate::outbox::Outbox;
use crate::{Config, Tidings};

fn node(config: Config) -> Tidings {
    Tidings::builder()
        .config(config)
        .jwt_secret("test")
        .authorize(|request| async move { !request.channel.starts_with("secret:") })
        .build()
        .unwrap()
}

async fn session(tidings: &Tidings, user: &str) -> Session {
    let shared = tidings.shared.clone();
    let conn = shared
        .hub
        .register(
            format!("s-{user}"),
            Arc::from(user),
            Outbox::new(1 << 20, 4096),
            0,
        )
        .unwrap();
    let claims = Claims {
        sub: user.into(),
        exp: u64::MAX,
        channels: None,
        extra: serde_json::Map::new(),
    };
    let mut session = Session::new(shared, conn, claims, "default".into());
    session.start(None).await.unwrap();
    session.conn.outbox.drain(); // `connected`
    session
}

/// Sends one request frame and returns the frames it queued.
async fn ask(session: &mut Session, request: Value) -> Vec<Value> {
    let frame = ClientFrame::decode(&request.to_string()).unwrap();
    if let Some(later) = dispatch(session, frame).await {
        later.await;
    }
    frames(session)
}

fn frames(session: &Session) -> Vec<Value> {
    session
        .conn
        .outbox
        .drain()
        .iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect()
}

fn error_code(frame: &Value) -> u64 {
    assert_eq!(frame["type"], "error", "{frame}");
    frame["data"]["code"].as_u64().unwrap()
}

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let tidings = node(Config::default());
    let mut ann = session(&tidings, "ann").await;
    let out = ask(&mut ann, json!({"type": "ping", "id": 1})).await;
    assert_eq!(out, vec![json!({"type": "pong", "id": 1})]);
}

#[tokio::test]
async fn subscribe_replies_then_recovers_in_order_and_counts_the_limit() {
    let mut config = Config::default();
    config.limits.max_subscriptions = 1;
    let tidings = node(config);
    for n in 1..=3 {
        tidings
            .publish(
                "room",
                &tidings_protocol::Notification {
                    message: format!("{n}"),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let mut ann = session(&tidings, "ann").await;
    let epoch = tidings.store().position("room").await.unwrap().epoch;
    let out = ask(&mut ann, json!({"type": "subscribe", "id": 2, "data": {"channel": "room", "recover": {"epoch": &*epoch, "offset": 1}}})).await;
    assert_eq!(out[0]["type"], "reply");
    assert_eq!(out[0]["data"]["recovered"], true);
    let offsets: Vec<&Value> = out[1..].iter().map(|f| &f["data"]["offset"]).collect();
    assert_eq!(offsets, vec![&json!(2), &json!(3)]);
    // The personal channel does not count; a second channel does.
    let refused = ask(
        &mut ann,
        json!({"type": "subscribe", "id": 3, "data": {"channel": "other"}}),
    )
    .await;
    assert_eq!(error_code(&refused[0]), 4011);
    assert_eq!(refused[0]["id"], 3);
}

#[tokio::test]
async fn subscribe_is_refused_for_forbidden_reserved_and_invalid_channels() {
    let tidings = node(Config::default());
    let mut ann = session(&tidings, "ann").await;
    for (channel, code) in [
        ("secret:x", 4003),
        ("broadcast", 4003),
        ("user:bob", 4003),
        ("", 4400),
    ] {
        let out = ask(
            &mut ann,
            json!({"type": "subscribe", "id": 4, "data": {"channel": channel}}),
        )
        .await;
        assert_eq!(error_code(&out[0]), code, "{channel}");
    }
    assert_eq!(ann.subscriptions.len(), 1, "only the personal channel");
}

#[tokio::test]
async fn an_events_filter_is_bounded_and_the_connection_stays_usable() {
    use super::subscribe::{MAX_FILTER_EVENTS, MAX_FILTER_NAME_BYTES};
    let tidings = node(Config::default());
    let mut ann = session(&tidings, "ann").await;
    let too_many: Vec<String> = (0..=MAX_FILTER_EVENTS).map(|n| format!("e{n}")).collect();
    let too_long = vec!["x".repeat(MAX_FILTER_NAME_BYTES + 1)];
    for (id, events) in [(1, too_many), (2, too_long)] {
        let out = ask(
            &mut ann,
            json!({"type": "subscribe", "id": id, "data": {"channel": "room", "events": events}}),
        )
        .await;
        assert_eq!(error_code(&out[0]), 4400);
        assert_eq!(out[0]["id"], id, "the error answers its request");
    }
    assert_eq!(ann.subscriptions.len(), 1, "nothing joined");
    // Repeats do not count; the bound itself is accepted; the connection works on.
    let mut names: Vec<String> = (0..MAX_FILTER_EVENTS).map(|n| format!("e{n}")).collect();
    names.extend(names.clone());
    let out = ask(
        &mut ann,
        json!({"type": "subscribe", "id": 3, "data": {"channel": "room", "events": names}}),
    )
    .await;
    assert_eq!(out[0]["type"], "reply", "{}", out[0]);
    assert_eq!(ann.subscriptions.len(), 2);
}

#[tokio::test]
async fn unsubscribe_leaves_joined_channels_only() {
    let tidings = node(Config::default());
    let mut ann = session(&tidings, "ann").await;
    ask(
        &mut ann,
        json!({"type": "subscribe", "id": 1, "data": {"channel": "room"}}),
    )
    .await;
    let out = ask(
        &mut ann,
        json!({"type": "unsubscribe", "id": 2, "data": {"channel": "room"}}),
    )
    .await;
    assert_eq!(
        out[0]["data"],
        json!({"kind": "unsubscribe", "channel": "room"})
    );
    let again = ask(
        &mut ann,
        json!({"type": "unsubscribe", "id": 3, "data": {"channel": "room"}}),
    )
    .await;
    assert_eq!(error_code(&again[0]), 4004);
    let personal = ask(
        &mut ann,
        json!({"type": "unsubscribe", "id": 4, "data": {"channel": "user:ann"}}),
    )
    .await;
    assert_eq!(error_code(&personal[0]), 4003);
}

#[tokio::test]
async fn publish_goes_through_the_one_path() {
    let tidings = node(Config::default());
    let mut ann = session(&tidings, "ann").await;
    let mut bob = session(&tidings, "bob").await;
    ask(
        &mut bob,
        json!({"type": "subscribe", "id": 1, "data": {"channel": "room"}}),
    )
    .await;
    let event = json!({"type": "chat_message", "data": {"id": "m1", "content": "hi"}});
    let out = ask(
        &mut ann,
        json!({"type": "publish", "id": 5, "data": {"channel": "room", "event": event}}),
    )
    .await;
    assert_eq!(out[0]["data"]["kind"], "publish");
    assert_eq!(out[0]["data"]["offset"], 1);
    let delivered = frames(&bob);
    assert_eq!(delivered[0]["data"]["sender"], "ann");
    let bad = json!({"type": "notification", "data": {"level": 7}});
    let out = ask(
        &mut ann,
        json!({"type": "publish", "id": 6, "data": {"channel": "room", "event": bad}}),
    )
    .await;
    assert_eq!(error_code(&out[0]), 4400);
    let out = ask(
        &mut ann,
        json!({"type": "publish", "id": 7, "data": {"channel": "broadcast", "event": event}}),
    )
    .await;
    assert_eq!(error_code(&out[0]), 4003);
}

#[tokio::test]
async fn typing_reaches_others_and_replies_only_when_asked() {
    let tidings = node(Config::default());
    let mut ann = session(&tidings, "ann").await;
    let mut bob = session(&tidings, "bob").await;
    for s in [&mut ann, &mut bob] {
        ask(
            s,
            json!({"type": "subscribe", "id": 1, "data": {"channel": "room"}}),
        )
        .await;
    }
    frames(&ann);
    assert!(
        ask(
            &mut ann,
            json!({"type": "typing", "data": {"channel": "room"}})
        )
        .await
        .is_empty()
    );
    assert_eq!(frames(&bob)[0]["type"], "typing");
    let out = ask(
        &mut ann,
        json!({"type": "typing", "id": 9, "data": {"channel": "room"}}),
    )
    .await;
    assert_eq!(out[0]["data"]["kind"], "typing");
    let out = ask(
        &mut ann,
        json!({"type": "typing", "id": 10, "data": {"channel": "elsewhere"}}),
    )
    .await;
    assert_eq!(error_code(&out[0]), 4004);
}

#[tokio::test]
async fn presence_lists_members_of_allowed_channels() {
    let tidings = node(Config::default());
    let mut ann = session(&tidings, "ann").await;
    ask(
        &mut ann,
        json!({"type": "subscribe", "id": 1, "data": {"channel": "room"}}),
    )
    .await;
    let out = ask(
        &mut ann,
        json!({"type": "presence", "id": 2, "data": {"channel": "room"}}),
    )
    .await;
    assert_eq!(
        out[0]["data"]["members"],
        json!([{"user_id": "ann", "connections": 1}])
    );
    let out = ask(
        &mut ann,
        json!({"type": "presence", "id": 3, "data": {"channel": "secret:x"}}),
    )
    .await;
    assert_eq!(error_code(&out[0]), 4003);
}

#[tokio::test]
async fn history_pages_and_checks_access() {
    let tidings = node(Config::default());
    for n in 1..=5 {
        tidings
            .publish(
                "room",
                &tidings_protocol::Notification {
                    message: format!("{n}"),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let mut ann = session(&tidings, "ann").await;
    let out = ask(
        &mut ann,
        json!({"type": "history", "id": 1, "data": {"channel": "room", "limit": 2}}),
    )
    .await;
    let page = &out[0]["data"];
    assert_eq!(page["kind"], "history");
    let offsets: Vec<&Value> = page["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["offset"])
        .collect();
    assert_eq!(offsets, vec![&json!(4), &json!(5)]);
    for channel in ["secret:x", "broadcast"] {
        let out = ask(
            &mut ann,
            json!({"type": "history", "id": 2, "data": {"channel": channel}}),
        )
        .await;
        assert_eq!(error_code(&out[0]), 4003, "{channel}");
    }
}

#[tokio::test]
async fn ack_moves_the_devices_inbox_for_the_own_channel_only() {
    let tidings = node(Config::default());
    let mut ann = session(&tidings, "ann").await;
    let epoch = tidings.store().position("user:ann").await.unwrap().epoch;
    let out = ask(&mut ann, json!({"type": "ack", "id": 1, "data": {"channel": "user:ann", "epoch": &*epoch, "offset": 3}})).await;
    assert_eq!(
        out[0]["data"],
        json!({"kind": "ack", "channel": "user:ann", "offset": 3})
    );
    let inbox = tidings.shared.hub.stores().inbox.clone().unwrap();
    let start = inbox.inbox_start("ann", "default").await.unwrap().unwrap();
    assert_eq!(start.offset, 3);
    assert!(
        ask(
            &mut ann,
            json!({"type": "ack", "data": {"channel": "user:ann", "epoch": &*epoch, "offset": 4}})
        )
        .await
        .is_empty()
    );
    let out = ask(&mut ann, json!({"type": "ack", "id": 2, "data": {"channel": "user:bob", "epoch": &*epoch, "offset": 1}})).await;
    assert_eq!(error_code(&out[0]), 4003);
}
