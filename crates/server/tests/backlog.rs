//! Backlogs larger than a connection's outbound queue (1 MiB by default) reach a client that
//! keeps reading: recovery, the offline inbox and history are fed as the connection drains,
//! never all at once into its queue (which would close it with 4009, again on every
//! reconnect). On SQLite and PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::db::TestDb;
use common::*;
use serde_json::{Value, json};
use tidings_protocol::{Delivery, Notification, RawEvent, ServerMessage};
use tidings_server::Tidings;

async fn node(db: &TestDb) -> TestServer {
    let store = Arc::new(db.open().await);
    start_with(Tidings::builder().config(config()).store(store)).await
}

/// Reads until `count` publications of `channel` arrived; returns their offsets in order.
async fn read_publications(client: &mut Client, channel: &str, count: usize) -> Vec<u64> {
    let mut offsets = Vec::new();
    while offsets.len() < count {
        let frame = client
            .next_frame(Duration::from_secs(20))
            .await
            .unwrap_or_else(|closed| {
                panic!("closed after {} of {count}: {closed:?}", offsets.len())
            })
            .unwrap_or_else(|| panic!("silence after {} of {count}", offsets.len()));
        if let ServerMessage::Message(body) = frame.message
            && body.channel == channel
        {
            offsets.push(body.offset.unwrap());
        }
    }
    offsets
}

async fn publish_big(server: &TestServer, channel: &str, count: u64, bytes: usize) {
    for n in 0..count {
        let data = json!({"n": n, "blob": "x".repeat(bytes)});
        let event = RawEvent::from_parts("blob", &data).unwrap();
        server
            .tidings
            .publish_raw(channel, event, Delivery::Reliable)
            .await
            .unwrap();
    }
}

async fn recovery_of_a_backlog_larger_than_the_queue(db: TestDb) {
    let server = node(&db).await;
    let mut client = server.connect("ann").await;
    let reply = as_json(&client.subscribe("files").await);
    let epoch = reply["data"]["epoch"].as_str().unwrap().to_owned();
    drop(client);
    // 40 × 60 KiB: 2.4 MB missed, over twice the 1 MiB queue.
    publish_big(&server, "files", 40, 60 * 1024).await;

    let mut client = server.connect("ann").await;
    let reply = as_json(
        &client
            .call(
                "subscribe",
                json!({"channel": "files", "recover": {"epoch": epoch, "offset": 0}}),
            )
            .await,
    );
    assert_eq!(reply["data"]["recovered"], true, "{reply}");
    assert_eq!(reply["data"]["missed"], 40);
    assert_eq!(
        read_publications(&mut client, "files", 40).await,
        (1..=40).collect::<Vec<_>>()
    );
    // Live publications follow, once.
    publish_big(&server, "files", 1, 10).await;
    assert_eq!(read_publications(&mut client, "files", 1).await, vec![41]);
    client.ping_ok().await;
}

async fn an_inbox_larger_than_the_queue(db: TestDb) {
    let server = node(&db).await;
    // The device is known (its first connect pins its position), then goes offline.
    let url = format!("{}&device=phone", server.url("7"));
    let mut phone = Client::open(&url).await;
    assert_eq!(phone.recv().await.kind(), "connected");
    drop(phone);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 1,100 notifications of 1.2 KiB: 1.4 MB, over the queue's 1 MiB.
    for n in 0..1100 {
        let note = Notification {
            message: format!("{n} {}", "y".repeat(1200)),
            ..Default::default()
        };
        server.tidings.notify_user("7", &note).await.unwrap();
    }
    for attempt in 0..2 {
        let mut phone = Client::open(&url).await;
        let connected = as_json(&phone.recv().await);
        assert_eq!(
            connected["data"]["subscriptions"][0]["offset"], 0,
            "attempt {attempt}"
        );
        let offsets = read_publications(&mut phone, "user:7", 1100).await;
        assert_eq!(offsets, (1..=1100).collect::<Vec<_>>());
        phone.ping_ok().await;
    }
}

async fn history_of_large_publications_pages_instead_of_closing(db: TestDb) {
    let server = node(&db).await;
    publish_big(&server, "files", 40, 60 * 1024).await;
    let mut client = server.connect("ann").await;
    let mut since = 0;
    let mut seen = Vec::new();
    let mut replies = 0;
    while seen.len() < 40 {
        let page = as_json(
            &client
                .call(
                    "history",
                    json!({"channel": "files", "since": since, "limit": 1000}),
                )
                .await,
        );
        assert_eq!(page["type"], "reply", "{page}");
        let offsets: Vec<u64> = page["data"]["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect();
        assert!(
            !offsets.is_empty() && offsets.len() < 40,
            "a page that fits the queue"
        );
        since = *offsets.last().unwrap();
        seen.extend(offsets);
        replies += 1;
    }
    assert_eq!(seen, (1..=40).collect::<Vec<_>>());
    assert!(replies > 1);
    // Paging back from the newest keeps the newest.
    let newest = as_json(&client.call("history", json!({"channel": "files"})).await);
    let offsets: Vec<&Value> = newest["data"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["offset"])
        .collect();
    assert_eq!(offsets.last(), Some(&&json!(40)));
}

async fn a_recovery_over_the_limit_is_not_recovered_and_not_closed(db: TestDb) {
    let server = node(&db).await;
    publish_big(&server, "files", 3, 10).await;
    // Pruned down to the last one: recovering from 0 cannot be complete.
    let store = server.tidings.store().clone();
    store
        .prune(&tidings_server::store::PruneScope::all(), Some(1), None)
        .await
        .unwrap();
    let epoch = store.position("files").await.unwrap().epoch.to_string();
    let mut client = server.connect("ann").await;
    let reply = as_json(
        &client
            .call(
                "subscribe",
                json!({"channel": "files", "recover": {"epoch": epoch, "offset": 0}}),
            )
            .await,
    );
    assert_eq!(reply["data"]["recovered"], false, "{reply}");
    assert_eq!(reply["data"]["history_start"], 3);
    publish_big(&server, "files", 1, 10).await;
    assert_eq!(read_publications(&mut client, "files", 1).await, vec![4]);
}

async fn the_http_api_refuses_an_event_no_client_can_receive(db: TestDb) {
    let server = node(&db).await;
    let body =
        json!({"channel": "files", "event": {"type": "blob", "data": "z".repeat(1_500_000)}});
    let (status, text) = http(
        "POST",
        &server.http("/api/publish"),
        Some(API_KEY),
        Some(body),
    )
    .await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("frame_too_large"), "{text}");
    let position = server.tidings.store().position("files").await.unwrap();
    assert_eq!(position.offset, 0, "nothing stored");
}

/// `recovery_limit`: a `subscribe` that missed more is not recovered (and not closed); a
/// device's inbox gets the newest `limit` items and `connected` says it is not whole.
async fn the_configured_recovery_limit_cuts_replays_short(db: TestDb) {
    let store = Arc::new(db.open().await);
    let mut config = config();
    config.recovery_limit = 5;
    let server = start_with(Tidings::builder().config(config).store(store)).await;
    publish_big(&server, "files", 8, 10).await;
    let epoch = server
        .tidings
        .store()
        .position("files")
        .await
        .unwrap()
        .epoch
        .to_string();
    let mut client = server.connect("ann").await;
    let within = as_json(
        &client
            .call(
                "subscribe",
                json!({"channel": "files", "recover": {"epoch": epoch, "offset": 3}}),
            )
            .await,
    );
    assert_eq!(within["data"]["recovered"], true, "{within}");
    assert_eq!(
        read_publications(&mut client, "files", 5).await,
        vec![4, 5, 6, 7, 8]
    );
    let over = as_json(
        &client
            .call(
                "subscribe",
                json!({"channel": "files", "recover": {"epoch": epoch, "offset": 2}}),
            )
            .await,
    );
    assert_eq!(over["data"]["recovered"], false, "{over}");
    assert_eq!(over["data"]["history_start"], 1);
    client.ping_ok().await;

    // Nine notifications for a device that was never connected: the newest five follow.
    for n in 0..9 {
        let note = Notification {
            message: format!("{n}"),
            ..Default::default()
        };
        server.tidings.notify_user("bob", &note).await.unwrap();
    }
    let mut bob = Client::open(&format!("{}&device=phone", server.url("bob"))).await;
    let connected = as_json(&bob.recv().await);
    let personal = &connected["data"]["subscriptions"][0];
    assert_eq!(personal["offset"], 4, "{connected}");
    assert_eq!(personal["recovered"], false, "{connected}");
    assert_eq!(personal["history_start"], 1, "{connected}");
    assert_eq!(
        read_publications(&mut bob, "user:bob", 5).await,
        vec![5, 6, 7, 8, 9]
    );
}

on_both!(
    the_configured_recovery_limit_cuts_replays_short,
    recovery_of_a_backlog_larger_than_the_queue,
    an_inbox_larger_than_the_queue,
    history_of_large_publications_pages_instead_of_closing,
    a_recovery_over_the_limit_is_not_recovered_and_not_closed,
    the_http_api_refuses_an_event_no_client_can_receive,
);
