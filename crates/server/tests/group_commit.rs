//! Group commit under load: many concurrent publishers on a few channels share commits, and
//! still every channel's offsets are gap-free, in publish order per publisher, delivered to
//! subscribers once and in order, and readable again after a restart of the store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::db::TestDb;
use common::*;
use serde_json::json;
use tidings_protocol::ServerMessage;
use tidings_server::Tidings;

const CHANNELS: usize = 4;
const PUBLISHERS: usize = 32;
const EACH: u64 = 25;

async fn concurrent_publishers_share_commits_and_keep_order(db: TestDb) {
    let store = Arc::new(db.open().await);
    let server = start_with(Tidings::builder().config(config()).store(store)).await;
    let mut readers = Vec::new();
    for c in 0..CHANNELS {
        let mut reader = server.connect(&format!("reader{c}")).await;
        reader.subscribe(&format!("orders:{c}")).await;
        readers.push(reader);
    }

    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let tidings = server.tidings.clone();
        tasks.push(tokio::spawn(async move {
            let channel = format!("orders:{}", p % CHANNELS);
            let mut offsets = Vec::new();
            for n in 0..EACH {
                let event =
                    tidings_protocol::RawEvent::from_parts("order", &json!({"p": p, "n": n}))
                        .unwrap();
                let published = tidings
                    .publish_raw(&channel, event, tidings_protocol::Delivery::Reliable)
                    .await
                    .unwrap();
                offsets.push(published.offset.unwrap());
            }
            (channel, offsets)
        }));
    }
    let mut per_channel: HashMap<String, Vec<u64>> = HashMap::new();
    for task in tasks {
        let (channel, offsets) = task.await.unwrap();
        // One publisher's publications keep its order.
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
        per_channel.entry(channel).or_default().extend(offsets);
    }
    let per_channel_total = (PUBLISHERS / CHANNELS) as u64 * EACH;
    for offsets in per_channel.values_mut() {
        offsets.sort_unstable();
        assert_eq!(
            *offsets,
            (1..=per_channel_total).collect::<Vec<_>>(),
            "gap-free, each once"
        );
    }

    // Each subscriber got its channel's publications once, in offset order, with the data
    // each publisher sent at that offset.
    for reader in &mut readers {
        let mut seen = Vec::new();
        while (seen.len() as u64) < per_channel_total {
            match reader.next_frame(Duration::from_secs(10)).await.unwrap() {
                Some(frame) => {
                    if let ServerMessage::Message(body) = frame.message {
                        seen.push(body.offset.unwrap());
                    }
                }
                None => panic!("only {} of {per_channel_total} arrived", seen.len()),
            }
        }
        assert_eq!(seen, (1..=per_channel_total).collect::<Vec<_>>());
    }

    // What was acknowledged is in the store for a new instance (as after a restart).
    let reopened = db.open().await;
    use tidings_server::store::PublicationStore;
    for c in 0..CHANNELS {
        let position = reopened.position(&format!("orders:{c}")).await.unwrap();
        assert_eq!(position.offset, per_channel_total);
    }
}

/// Publishes one socket sends back to back without waiting for replies.
const PIPELINED: u64 = 300;

/// One connection's publishes are pipelined: it reads its next request while earlier ones
/// commit, so they share commits; offsets still follow the order it sent them, every one is
/// answered, and a client that closes right after sending loses none of them.
async fn one_connection_pipelines_its_publishes_in_order(db: TestDb) {
    let store = Arc::new(db.open().await);
    let mut config = config();
    config.limits.rate_per_second = 100_000;
    config.limits.rate_burst = 100_000;
    let server = start_with(Tidings::builder().config(config).store(store)).await;
    let mut reader = server.connect("reader").await;
    reader.subscribe("orders:pipe").await;
    let mut writer = server.connect("writer").await;
    let mut ids = Vec::new();
    for n in 0..PIPELINED {
        let data = json!({"channel": "orders:pipe", "event": {"type": "order", "data": {"n": n}}});
        ids.push(writer.request("publish", data).await);
    }
    // Every publish answered, each with the offset of its place in the sending order.
    let mut offsets = HashMap::new();
    while (offsets.len() as u64) < PIPELINED {
        let frame = writer.recv().await;
        if let (Some(id), ServerMessage::Reply(_)) = (frame.id, &frame.message) {
            let offset = as_json(&frame)["data"]["offset"].as_u64().unwrap();
            offsets.insert(id, offset);
        } else {
            assert!(
                !matches!(frame.message, ServerMessage::Error(_)),
                "{frame:?}"
            );
        }
    }
    for (k, id) in ids.iter().enumerate() {
        assert_eq!(offsets[id], k as u64 + 1, "request {id}");
    }
    let mut seen = Vec::new();
    while (seen.len() as u64) < PIPELINED {
        let frame = reader.recv().await;
        if let ServerMessage::Message(body) = &frame.message {
            let n = as_json(&frame)["data"]["event"]["data"]["n"]
                .as_u64()
                .unwrap();
            assert_eq!(body.offset, Some(n + 1), "offset follows the sending order");
            seen.push(n);
        }
    }

    // Publishes followed at once by a close: every one is stored.
    for n in 0..PIPELINED {
        let data = json!({"channel": "orders:pipe", "event": {"type": "order", "data": {"n": n}}});
        writer.request("publish", data).await;
    }
    writer.close().await;
    let mut arrived = 0;
    while arrived < PIPELINED {
        if let ServerMessage::Message(_) = reader.recv().await.message {
            arrived += 1;
        }
    }
    use tidings_server::store::PublicationStore;
    let position = db.open().await.position("orders:pipe").await.unwrap();
    assert_eq!(position.offset, 2 * PIPELINED);
}

on_both!(
    concurrent_publishers_share_commits_and_keep_order,
    one_connection_pipelines_its_publishes_in_order
);
