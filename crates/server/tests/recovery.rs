//! Offsets, epochs and recovery of missed publications.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use common::*;
use serde_json::json;
use tidings_protocol::Notification;

fn note(n: u64) -> Notification {
    Notification {
        message: format!("n{n}"),
        ..Default::default()
    }
}

#[tokio::test]
async fn recover_returns_exactly_the_missed_offsets() {
    let server = start().await;
    let mut client = server.connect("7").await;
    let reply = as_json(&client.subscribe("feed").await);
    let epoch = reply["data"]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(reply["data"]["offset"], 0);
    for n in 1..=2 {
        server.tidings.publish("feed", &note(n)).await.unwrap();
    }
    assert_eq!(message(&client.recv().await).offset, Some(1));
    assert_eq!(message(&client.recv().await).offset, Some(2));
    drop(client);

    for n in 3..=5 {
        server.tidings.publish("feed", &note(n)).await.unwrap();
    }
    let mut back = server.connect("7").await;
    let reply = back
        .call(
            "subscribe",
            json!({"channel": "feed", "recover": {"epoch": epoch, "offset": 2}}),
        )
        .await;
    let reply = as_json(&reply);
    assert_eq!(reply["data"]["recovered"], true);
    assert_eq!(reply["data"]["missed"], 3);
    assert_eq!(reply["data"]["offset"], 5);
    let offsets: Vec<Option<u64>> = [back.recv().await, back.recv().await, back.recv().await]
        .iter()
        .map(|f| message(f).offset)
        .collect();
    assert_eq!(offsets, vec![Some(3), Some(4), Some(5)]);
    // Live ones continue right after, with no duplicate.
    server.tidings.publish("feed", &note(6)).await.unwrap();
    let live = back.recv().await;
    assert_eq!(message(&live).offset, Some(6));
    back.expect_silence(200).await;
}

#[tokio::test]
async fn beyond_history_or_another_epoch_is_not_recovered() {
    let mut config = config();
    config.history_size = 2;
    let server = start_config(config).await;
    let mut client = server.connect("7").await;
    let epoch = as_json(&client.subscribe("feed").await)["data"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    for n in 1..=5 {
        server.tidings.publish("feed", &note(n)).await.unwrap();
    }
    let reply = as_json(
        &client
            .call(
                "subscribe",
                json!({"channel": "feed", "recover": {"epoch": epoch, "offset": 1}}),
            )
            .await,
    );
    assert_eq!(reply["data"]["recovered"], false);
    assert_eq!(reply["data"]["offset"], 5);

    let reply = as_json(
        &client
            .call(
                "subscribe",
                json!({"channel": "feed", "recover": {"epoch": "old", "offset": 4}}),
            )
            .await,
    );
    assert_eq!(reply["data"]["recovered"], false);

    // Within the window it works: offsets 4 and 5 are kept.
    let reply = as_json(
        &client
            .call(
                "subscribe",
                json!({"channel": "feed", "recover": {"epoch": epoch, "offset": 3}}),
            )
            .await,
    );
    assert_eq!(reply["data"]["recovered"], true);
    assert_eq!(reply["data"]["missed"], 2);
}

#[tokio::test]
async fn personal_channel_publications_made_before_connect_follow_connected() {
    let server = start().await;
    server.tidings.notify_user("7", &note(1)).await.unwrap();
    let mut client = Client::open(&server.url("7")).await;
    let connected = as_json(&client.recv().await);
    assert_eq!(connected["data"]["subscriptions"][0]["channel"], "user:7");
    // The offline inbox: it starts before the unacknowledged notification, which follows.
    assert_eq!(connected["data"]["subscriptions"][0]["offset"], 0);
    let inbox = client.recv().await;
    assert_eq!(
        (message(&inbox).channel.as_str(), message(&inbox).offset),
        ("user:7", Some(1))
    );
}

#[tokio::test]
async fn concurrent_publishes_arrive_gap_free_and_in_order() {
    let server = start().await;
    let mut client = server.connect("7").await;
    client.subscribe("busy").await;
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let tidings = server.tidings.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..50 {
                tidings
                    .publish("busy", &note(worker * 100 + n))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for expected in 1..=200 {
        assert_eq!(message(&client.recv().await).offset, Some(expected));
    }
}

#[tokio::test]
async fn channel_classes_set_ephemerality_and_retention() {
    let mut config = config();
    config.history_size = 3;
    config.channels = toml::from_str::<tidings_server::Config>(
        "[[channels]]\npattern = \"progress:*\"\nephemeral = true\n\
         [[channels]]\npattern = \"ticket:*\"\nhistory_size = 10\n",
    )
    .unwrap()
    .channels;
    let server = start_config(config).await;

    // Ephemeral class: no offset, nothing stored, whatever the event type.
    let published = server
        .tidings
        .publish("progress:job-1", &note(1))
        .await
        .unwrap();
    assert_eq!(published.offset, None);

    for n in 1..=8 {
        server.tidings.publish("ticket:1", &note(n)).await.unwrap();
        server.tidings.publish("lobby", &note(n)).await.unwrap();
    }
    let lobby_epoch = server
        .tidings
        .publish("lobby", &note(9))
        .await
        .unwrap()
        .epoch;
    // In memory the store keeps the largest class size; retention trims the rest.
    server.tidings.prune().await.unwrap();
    let mut client = server.connect("7").await;
    let reply = as_json(
        &client
            .call(
                "subscribe",
                json!({"channel": "ticket:1", "recover": {"epoch": lobby_epoch, "offset": 0}}),
            )
            .await,
    );
    assert_eq!(
        (
            reply["data"]["recovered"].clone(),
            reply["data"]["missed"].clone()
        ),
        (json!(true), json!(8))
    );
    for _ in 0..8 {
        client.recv().await;
    }
    let reply = as_json(
        &client
            .call(
                "subscribe",
                json!({"channel": "lobby", "recover": {"epoch": lobby_epoch, "offset": 5}}),
            )
            .await,
    );
    assert_eq!(
        reply["data"]["recovered"], false,
        "lobby keeps only 3 (6..=9)"
    );
    let reply = as_json(
        &client
            .call(
                "subscribe",
                json!({"channel": "lobby", "recover": {"epoch": lobby_epoch, "offset": 6}}),
            )
            .await,
    );
    assert_eq!(
        (
            reply["data"]["recovered"].clone(),
            reply["data"]["missed"].clone()
        ),
        (json!(true), json!(3))
    );
}
