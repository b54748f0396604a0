//! The hub on its own: ordering under the channel lock, presence on first join and last
//! leave, channels retired when empty, slow consumers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use serde_json::Value;
use tidings_protocol::messages::Recover;
use tidings_protocol::{Code, Delivery, RawEvent};

use super::{Asked, Conn, Hub};
use crate::outbox::Outbox;
use crate::store::{MemoryStore, Stores};

fn hub(presence_events_max_members: usize) -> Arc<Hub> {
    let stores = Stores::complete(Arc::new(MemoryStore::new(100)));
    Arc::new(Hub::new(
        stores,
        None,
        None,
        presence_events_max_members,
        0,
        std::time::Duration::from_secs(30),
    ))
}

fn conn(hub: &Hub, user: &str, queue_bytes: usize) -> Arc<Conn> {
    let outbox = Outbox::new(queue_bytes, 4096);
    hub.register(format!("s-{user}"), Arc::from(user), outbox, 0)
        .unwrap()
}

fn kinds(conn: &Conn) -> Vec<String> {
    conn.outbox
        .drain()
        .iter()
        .map(|text| {
            let frame: Value = serde_json::from_str(text).unwrap();
            frame["type"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn event(n: u32) -> RawEvent {
    RawEvent::from_parts("n", &n).unwrap()
}

#[tokio::test]
async fn joins_and_leaves_are_announced_on_first_and_last_connection_only() {
    let hub = hub(100);
    let (ann1, ann2, bob) = (
        conn(&hub, "ann", 1 << 20),
        conn(&hub, "ann", 1 << 20),
        conn(&hub, "bob", 1 << 20),
    );
    hub.subscribe(&bob, "room", None, None, Asked::Automatically)
        .await
        .unwrap();
    hub.subscribe(&ann1, "room", None, None, Asked::Automatically)
        .await
        .unwrap();
    hub.subscribe(&ann2, "room", None, None, Asked::Automatically)
        .await
        .unwrap();
    assert_eq!(
        kinds(&bob),
        vec!["user_joined"],
        "one join for ann's two connections"
    );
    assert_eq!(
        hub.members("room")
            .await
            .iter()
            .map(|m| m.connections)
            .sum::<u32>(),
        3
    );
    assert!(hub.unsubscribe(&ann1, "room").await);
    assert!(kinds(&bob).is_empty(), "ann is still there");
    assert!(hub.unsubscribe(&ann2, "room").await);
    assert_eq!(kinds(&bob), vec!["user_left"]);
    assert!(!hub.unsubscribe(&ann2, "room").await);
}

#[tokio::test]
async fn presence_events_stop_above_the_cap() {
    let hub = hub(1);
    let (ann, bob) = (conn(&hub, "ann", 1 << 20), conn(&hub, "bob", 1 << 20));
    hub.subscribe(&ann, "room", None, None, Asked::Automatically)
        .await
        .unwrap();
    hub.subscribe(&bob, "room", None, None, Asked::Automatically)
        .await
        .unwrap();
    assert!(
        kinds(&ann).is_empty(),
        "two members are over the cap of one"
    );
    assert_eq!(
        hub.members("room").await.len(),
        2,
        "the presence list is complete"
    );
}

/// A reliable publish to "room", waited for until committed and fanned out.
async fn publish(hub: &Arc<Hub>, event: RawEvent) {
    let submitted = hub.submit("room", event, None, Delivery::Reliable).await;
    submitted.unwrap().outcome().await.unwrap();
}

#[tokio::test]
async fn recovery_comes_before_live_publications_and_channels_retire_when_empty() {
    let hub = hub(100);
    for n in 1..=3 {
        publish(&hub, event(n)).await;
    }
    assert_eq!(
        hub.sizes().2,
        0,
        "publishing to an empty channel leaves nothing behind"
    );
    let ann = conn(&hub, "ann", 1 << 20);
    let epoch = hub.position("room").await.unwrap().epoch.to_string();
    let recover = Recover { epoch, offset: 1 };
    hub.subscribe(&ann, "room", None, Some(recover), Asked::Request(Some(7)))
        .await
        .unwrap();
    publish(&hub, event(4)).await;
    let frames: Vec<Value> = ann
        .outbox
        .drain()
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    assert_eq!(frames[0]["id"], 7);
    let offsets: Vec<u64> = frames[1..]
        .iter()
        .map(|f| f["data"]["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![2, 3, 4]);
    hub.unsubscribe(&ann, "room").await;
    assert_eq!(hub.sizes().2, 0);
}

#[tokio::test]
async fn a_slow_consumer_is_closed_with_4009_and_counted() {
    let hub = hub(100);
    let slow = conn(&hub, "slow", 300);
    hub.subscribe(&slow, "room", None, None, Asked::Automatically)
        .await
        .unwrap();
    for n in 0..20 {
        publish(&hub, event(n)).await;
    }
    assert_eq!(
        slow.outbox.close_order().map(|o| o.code),
        Some(Code::SlowConsumer)
    );
    assert_eq!(hub.counters.snapshot().slow_consumers, 1);
    assert_eq!(hub.counters.snapshot().publications, 20);
}
