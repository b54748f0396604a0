//! Three `tidings` nodes on one PostgreSQL database (a fresh one per run, at `DATABASE_URL`'s
//! server) and one broker (`REDIS_URL` / `NATS_URL`, or the local defaults). Acknowledged
//! publishes go through every node's HTTP API while a client on each node listens; one node
//! is killed with SIGKILL in the middle. Its client moves to the next URL of its list and
//! recovers there; both clients end with every acknowledged publication once, in order.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tidings_client::Client;
use tidings_e2e::{FreshDatabase, Node, free_addr, http, token};

const TOTAL_ACKED: usize = 300;
const KILL_AFTER: usize = 100;
const PUBLISHERS: usize = 6;

async fn a_node_killed_mid_stream_loses_nothing(broker: &str) {
    let Some(database) = FreshDatabase::create("tidings_cluster").await else {
        return;
    };
    let args = ["--database-url", database.url.as_str(), "--broker", broker];
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let mut nodes = Vec::new();
    for addr in &addrs {
        nodes.push(Some(Node::start(*addr, &args).await));
    }
    // Other runs may share the broker: a channel of this run's own.
    let channel = format!("orders-{:08x}", rand::random::<u32>());
    let url = |i: usize| format!("ws://{}/ws", addrs[i]);

    // A client on node 0 (it will move on) and one on node 2; each lists the other nodes.
    let mut readers = Vec::new();
    for (first, rest) in [(0, [1, 2]), (2, [0, 1])] {
        let client = Client::builder(url(first))
            .fallback_urls(rest.map(url))
            .token(token(&format!("reader-{first}")))
            .connect()
            .await
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::<u64>::new()));
        let subscription = client.subscription(&channel);
        let seen = got.clone();
        subscription.on_publication(move |p| seen.lock().unwrap().push(p.offset.unwrap()));
        subscription.subscribe().await.unwrap();
        readers.push((client, got));
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // broker subscriptions in place

    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let node0_dead = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let (acked, count, node0_dead, addrs) = (
            acked.clone(),
            count.clone(),
            node0_dead.clone(),
            addrs.clone(),
        );
        let channel = channel.clone();
        publishers.push(tokio::spawn(async move {
            let mut turn = p;
            while count.load(Ordering::SeqCst) < TOTAL_ACKED {
                turn += 1;
                let target = turn % 3;
                if target == 0 && node0_dead.load(Ordering::SeqCst) {
                    continue;
                }
                let body = json!({"channel": channel, "event": {"type": "order_placed", "data": {"p": p, "turn": turn}}});
                match http(addrs[target], "POST", "/api/publish", Some(&body)).await {
                    Ok((200, answer)) => {
                        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
                        acked.lock().unwrap().push(answer["offset"].as_u64().unwrap());
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    // The killed node, mid-request or after: never acknowledged.
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }));
    }
    while count.load(Ordering::SeqCst) < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node0_dead.store(true, Ordering::SeqCst);
    nodes[0].take().unwrap().kill();
    for publisher in publishers {
        publisher.await.unwrap();
    }

    let mut acked = acked.lock().unwrap().clone();
    acked.sort_unstable();
    assert!(
        acked.windows(2).all(|w| w[0] < w[1]),
        "an offset acknowledged twice"
    );
    let last = *acked.last().unwrap();
    for (client, got) in &readers {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while got.lock().unwrap().last().is_none_or(|&o| o < last) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a reader is missing acknowledged publications: has {} of {last}",
                got.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await; // room for a duplicate
        let got = got.lock().unwrap().clone();
        assert_eq!(
            got,
            (1..=last).collect::<Vec<u64>>(),
            "every publication once, in order"
        );
        client.close().await;
    }
    drop(nodes);
    database.drop_database().await;
}

/// Users of a node killed with SIGKILL leave every channel within the presence TTL: the
/// other nodes' members get `user_left`, and status and members forget them.
async fn a_killed_nodes_users_leave_within_the_ttl(broker: &str) {
    let Some(database) = FreshDatabase::create("tidings_cluster").await else {
        return;
    };
    let args = ["--database-url", database.url.as_str(), "--broker", broker];
    let ttl = [("TIDINGS_PRESENCE_TTL", "2s")];
    let (doomed_addr, survivor_addr) = (free_addr(), free_addr());
    let doomed = Node::start_with_env(doomed_addr, &args, &ttl).await;
    let survivor = Node::start_with_env(survivor_addr, &args, &ttl).await;
    let channel = format!("room-{:08x}", rand::random::<u32>());

    let watcher = Client::builder(format!("ws://{survivor_addr}/ws"))
        .token(token("watcher"))
        .connect()
        .await
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = events.clone();
    watcher.on_event(move |event| {
        if let tidings_client::ClientEvent::UserJoined(change) = event {
            seen.lock()
                .unwrap()
                .push(format!("joined {}", change.user_id));
        } else if let tidings_client::ClientEvent::UserLeft(change) = event {
            seen.lock()
                .unwrap()
                .push(format!("left {}", change.user_id));
        }
    });
    watcher.subscription(&channel).subscribe().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Two connections of one user on the doomed node; they never close cleanly.
    let mut doomed_clients = Vec::new();
    for _ in 0..2 {
        let client = Client::builder(format!("ws://{doomed_addr}/ws"))
            .token(token("ghost"))
            .connect()
            .await
            .unwrap();
        client.subscription(&channel).subscribe().await.unwrap();
        doomed_clients.push(client);
    }
    let status = |addr| async move {
        let (code, body) = http(addr, "GET", "/api/users/ghost/status", None)
            .await
            .unwrap();
        assert_eq!(code, 200);
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    wait_until("ghost's join reaches the other node", || {
        events.lock().unwrap().contains(&"joined ghost".to_owned())
    })
    .await;
    // The join is announced at the first connection; the count of both follows with the
    // next presence report (every 50 ms).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let seen_there = loop {
        let seen_there = status(survivor_addr).await;
        if seen_there["connections"] == 2 || tokio::time::Instant::now() > deadline {
            break seen_there;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(seen_there["connections"], 2, "{seen_there}");
    assert_eq!(seen_there["scope"], "cluster");

    doomed.kill();
    let killed = std::time::Instant::now();
    wait_until("ghost's leave after the TTL", || {
        events.lock().unwrap().contains(&"left ghost".to_owned())
    })
    .await;
    let after = killed.elapsed();
    assert!(
        after <= Duration::from_millis(2_000 + 2_000),
        "gone after {after:?}, TTL 2 s"
    );
    assert_eq!(status(survivor_addr).await["connected"], false);
    let (_, members) = http(
        survivor_addr,
        "GET",
        &format!("/api/channels/{channel}/members"),
        None,
    )
    .await
    .unwrap();
    let members: serde_json::Value = serde_json::from_str(&members).unwrap();
    assert_eq!(
        members["members"],
        json!([{"user_id": "watcher", "connections": 1}]),
        "{members}"
    );
    assert_eq!(
        *events.lock().unwrap(),
        ["joined ghost", "left ghost"],
        "one join and one leave for two connections"
    );
    watcher.close().await;
    drop(doomed_clients);
    drop(survivor);
    database.drop_database().await;
}

/// Polls `done` for up to 10 s.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_a_killed_nodes_users_leave_within_the_ttl() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    a_killed_nodes_users_leave_within_the_ttl(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_a_killed_nodes_users_leave_within_the_ttl() {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    a_killed_nodes_users_leave_within_the_ttl(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_a_node_killed_mid_stream_loses_nothing() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    a_node_killed_mid_stream_loses_nothing(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_a_node_killed_mid_stream_loses_nothing() {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    a_node_killed_mid_stream_loses_nothing(&url).await;
}
