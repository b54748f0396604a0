//! The offline inbox (acks per device) and history (socket and HTTP), on SQLite and PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[macro_use]
mod common;

use std::sync::Arc;

use common::db::TestDb;
use common::*;
use serde_json::{Value, json};
use tidings_protocol::Notification;
use tidings_server::{Config, Tidings};

fn note(text: &str) -> Notification {
    Notification {
        message: text.into(),
        ..Default::default()
    }
}

async fn node(db: &TestDb, config: Config) -> TestServer {
    let store = Arc::new(db.open().await);
    start_with(
        Tidings::builder()
            .config(config)
            .store(store)
            .authorize(|request| async move { !request.channel.starts_with("secret:") }),
    )
    .await
}

/// Connects as `user` on `device` and returns the client and its `connected` data.
async fn connect(server: &TestServer, user: &str, device: &str) -> (Client, Value) {
    let mut client = Client::open(&format!("{}&device={device}", server.url(user))).await;
    let connected = as_json(&client.recv().await);
    assert_eq!(connected["type"], "connected");
    (client, connected["data"].clone())
}

fn inbox_position(connected: &Value) -> (String, u64) {
    let personal = &connected["subscriptions"][0];
    (
        personal["epoch"].as_str().unwrap().to_owned(),
        personal["offset"].as_u64().unwrap(),
    )
}

async fn offline_user_gets_the_inbox_once_per_device(db: TestDb) {
    let server = node(&db, config()).await;
    // Notified while offline (never connected before).
    for text in ["first", "second"] {
        assert_eq!(
            server.tidings.notify_user("7", &note(text)).await.unwrap(),
            0
        );
    }
    let (mut laptop, connected) = connect(&server, "7", "laptop").await;
    assert_eq!(
        inbox_position(&connected).1,
        0,
        "the inbox starts before the first item"
    );
    let got: Vec<String> = [laptop.recv().await, laptop.recv().await]
        .iter()
        .map(|f| {
            message(f)
                .event
                .decode::<Notification>()
                .unwrap()
                .unwrap()
                .message
        })
        .collect();
    assert_eq!(got, vec!["first", "second"]);
    let epoch = inbox_position(&connected).0;
    let acked = laptop
        .call(
            "ack",
            json!({"channel": "user:7", "epoch": epoch, "offset": 2}),
        )
        .await;
    assert_eq!(
        as_json(&acked)["data"],
        json!({"kind": "ack", "channel": "user:7", "offset": 2})
    );
    drop(laptop);

    // The laptop again: nothing twice.
    let (mut laptop, connected) = connect(&server, "7", "laptop").await;
    assert_eq!(inbox_position(&connected).1, 2);
    laptop.expect_silence(300).await;
    drop(laptop);

    // Another device has its own position: it was never acknowledged there, but a device the
    // server has not seen starts at the user's latest acknowledgement...
    let (mut phone, connected) = connect(&server, "7", "phone").await;
    assert_eq!(inbox_position(&connected).1, 2);
    phone.expect_silence(200).await;
    drop(phone);

    // ...and from then on each device gets each item once.
    server
        .tidings
        .notify_user("7", &note("third"))
        .await
        .unwrap();
    for device in ["laptop", "phone"] {
        let (mut client, connected) = connect(&server, "7", device).await;
        assert_eq!(inbox_position(&connected).1, 2, "{device}");
        let third = client.recv().await;
        assert_eq!(message(&third).offset, Some(3), "{device}");
        client
            .request(
                "ack",
                json!({"channel": "user:7", "epoch": epoch, "offset": 3}),
            )
            .await;
        client.ping_ok().await; // the ack (no id) was processed before this answer
    }
    for device in ["laptop", "phone"] {
        let (mut client, connected) = connect(&server, "7", device).await;
        assert_eq!(inbox_position(&connected).1, 3, "{device}");
        client.expect_silence(200).await;
    }
    // Acks only for one's own personal channel; a smaller ack never moves back.
    let (mut client, _) = connect(&server, "7", "laptop").await;
    let refused = client
        .call(
            "ack",
            json!({"channel": "user:8", "epoch": epoch, "offset": 1}),
        )
        .await;
    assert_eq!(error(&refused).code.as_u16(), 4003);
    client
        .call(
            "ack",
            json!({"channel": "user:7", "epoch": epoch, "offset": 1}),
        )
        .await;
    drop(client);
    let (_, connected) = connect(&server, "7", "laptop").await;
    assert_eq!(inbox_position(&connected).1, 3);
}

async fn history_pages_over_the_socket_and_http(db: TestDb) {
    let server = node(&db, config()).await;
    for n in 1..=5 {
        server
            .tidings
            .publish("ticket:9", &note(&format!("m{n}")))
            .await
            .unwrap();
    }
    server
        .tidings
        .publish("secret:1", &note("hidden"))
        .await
        .unwrap();
    let (mut client, _) = connect(&server, "7", "d").await;

    let offsets = |page: &Value| -> Vec<u64> {
        page["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect()
    };
    let newest = as_json(
        &client
            .call("history", json!({"channel": "ticket:9", "limit": 2}))
            .await,
    );
    assert_eq!(newest["data"]["kind"], "history");
    assert_eq!(offsets(&newest["data"]), vec![4, 5]);
    assert_eq!(newest["data"]["offset"], 5);
    let back = as_json(
        &client
            .call(
                "history",
                json!({"channel": "ticket:9", "before": 4, "limit": 2}),
            )
            .await,
    );
    assert_eq!(offsets(&back["data"]), vec![2, 3]);
    let forward = as_json(
        &client
            .call("history", json!({"channel": "ticket:9", "since": 3}))
            .await,
    );
    assert_eq!(offsets(&forward["data"]), vec![4, 5]);
    assert_eq!(
        forward["data"]["publications"][0]["event"]["data"]["message"],
        "m4"
    );
    let denied = client.call("history", json!({"channel": "secret:1"})).await;
    assert_eq!(error(&denied).code.as_u16(), 4003);

    // HTTP: the API key, a user's token the authorizer allows, and one it refuses.
    let url = |channel: &str, query: &str| {
        server.http(&format!("/api/channels/{channel}/history{query}"))
    };
    let (status, body) = http(
        "GET",
        &url("ticket:9", "?since=0&limit=3"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        offsets(&serde_json::from_str(&body).unwrap()),
        vec![1, 2, 3]
    );
    let user_token = token("7");
    let (status, body) = http("GET", &url("ticket:9", ""), Some(&user_token), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        offsets(&serde_json::from_str(&body).unwrap()),
        vec![1, 2, 3, 4, 5]
    );
    let (status, _) = http("GET", &url("secret:1", ""), Some(&user_token), None).await;
    assert_eq!(status, 403);
    let (status, _) = http("GET", &url("ticket:9", ""), None, None).await;
    assert_eq!(status, 401);
    let (status, _) = http("GET", &url("ticket:9", ""), Some("not-a-token"), None).await;
    assert_eq!(status, 401);
}

async fn beyond_retention_says_where_history_starts(db: TestDb) {
    let server = node(&db, config()).await;
    let (mut client, _) = connect(&server, "7", "d").await;
    let epoch = as_json(&client.subscribe("feed").await)["data"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    for n in 1..=10 {
        server
            .tidings
            .publish("feed", &note(&format!("{n}")))
            .await
            .unwrap();
    }
    for _ in 1..=10 {
        client.recv().await;
    }
    let mut config = config();
    config.history_size = 4;
    tidings_server::store::prune_all(&**server.tidings.store(), &config)
        .await
        .unwrap();
    let reply = as_json(
        &client
            .call(
                "subscribe",
                json!({"channel": "feed", "recover": {"epoch": epoch, "offset": 2}}),
            )
            .await,
    );
    assert_eq!(reply["data"]["recovered"], false);
    assert_eq!(reply["data"]["history_start"], 7);
    assert_eq!(reply["data"]["offset"], 10);
}

/// An inbox that retention cut short starts after what is gone and says so in `connected`;
/// a whole one says `recovered: true`.
async fn an_inbox_cut_by_retention_is_not_recovered(db: TestDb) {
    let server = node(&db, config()).await;
    let (mut client, connected) = connect(&server, "7", "laptop").await;
    assert_eq!(
        connected["subscriptions"][0]["recovered"], true,
        "{connected}"
    );
    client.close().await;
    for n in 1..=10 {
        server
            .tidings
            .notify_user("7", &note(&format!("{n}")))
            .await
            .unwrap();
    }
    let mut config = config();
    config.history_size = 4;
    tidings_server::store::prune_all(&**server.tidings.store(), &config)
        .await
        .unwrap();
    let (mut client, connected) = connect(&server, "7", "laptop").await;
    let personal = &connected["subscriptions"][0];
    assert_eq!(personal["recovered"], false, "{connected}");
    assert_eq!(personal["history_start"], 7, "{connected}");
    assert_eq!(personal["offset"], 6, "{connected}");
    for n in 7..=10 {
        let frame = as_json(&client.recv().await);
        assert_eq!(frame["data"]["offset"], n, "{frame}");
    }
}

on_both!(
    an_inbox_cut_by_retention_is_not_recovered,
    offline_user_gets_the_inbox_once_per_device,
    history_pages_over_the_socket_and_http,
    beyond_retention_says_where_history_starts,
);
