//! Nothing acknowledged is lost by a crash: the node is killed with SIGKILL in the middle of
//! acknowledged publishes from 16 concurrent publishers on two channels (so commits are
//! shared) and started again; the client has every acknowledged publication exactly once, in
//! order per channel. Once on SQLite (the embedded default), once on the
//! PostgreSQL at `DATABASE_URL` (a fresh database per run).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tidings_client::Client;
use tidings_e2e::{FreshDatabase, Node, free_addr, http, token};

/// Publishers publishing at once (so commits are shared: group commit), over two channels.
const PUBLISHERS: usize = 16;
const CHANNELS: [&str; 2] = ["orders", "invoices"];
const TOTAL_ACKED: usize = 600;
const KILL_AFTER: usize = 250;

type Offsets = Arc<Mutex<BTreeMap<String, Vec<u64>>>>;

async fn survive_sigkill(args: Vec<String>) {
    let args: Vec<String> = args;
    let addr = free_addr();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start(addr, &arg_refs).await;

    let client = Client::builder(format!("ws://{addr}/ws"))
        .token(token("reader"))
        .connect()
        .await
        .unwrap();
    let received: Offsets = Arc::default();
    for channel in CHANNELS {
        let subscription = client.subscription(channel);
        let seen = received.clone();
        subscription.on_publication(move |p| {
            let mut seen = seen.lock().unwrap();
            seen.entry(channel.to_owned())
                .or_default()
                .push(p.offset.unwrap());
        });
        subscription.subscribe().await.unwrap();
    }

    // Publish through the HTTP API from many tasks at once; an offset counts once the node
    // answered 200. The node is killed in the middle and started again.
    let acked: Offsets = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let (acked, count) = (acked.clone(), count.clone());
        publishers.push(tokio::spawn(async move {
            let channel = CHANNELS[p % CHANNELS.len()];
            let mut attempt = 0u64;
            while count.load(Ordering::SeqCst) < TOTAL_ACKED {
                attempt += 1;
                let body = json!({"channel": channel, "event": {"type": "order_placed", "data": {"p": p, "n": attempt}}});
                match http(addr, "POST", "/api/publish", Some(&body)).await {
                    Ok((200, answer)) => {
                        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
                        let offset = answer["offset"].as_u64().unwrap();
                        acked.lock().unwrap().entry(channel.to_owned()).or_default().push(offset);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    // Down, or closed mid-request by the kill: never acknowledged.
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    while count.load(Ordering::SeqCst) < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let node = Node::start(addr, &arg_refs).await;
    for publisher in publishers {
        publisher.await.unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let complete = CHANNELS.iter().all(|channel| {
            let got = received
                .lock()
                .unwrap()
                .get(*channel)
                .cloned()
                .unwrap_or_default();
            let got: BTreeSet<u64> = got.into_iter().collect();
            acked
                .get(*channel)
                .is_none_or(|a| a.iter().all(|o| got.contains(o)))
        });
        if complete {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "acknowledged publications missing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for channel in CHANNELS {
        let got = received
            .lock()
            .unwrap()
            .get(channel)
            .cloned()
            .unwrap_or_default();
        let expected: Vec<u64> = (1..=*got.last().unwrap()).collect();
        assert_eq!(
            got, expected,
            "{channel}: every publication once, in order, no gap"
        );
        let mut acked = acked.get(channel).cloned().unwrap_or_default();
        acked.sort_unstable();
        assert!(
            acked.windows(2).all(|w| w[0] < w[1]),
            "{channel}: an offset acknowledged twice"
        );
    }
    client.close().await;
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_sigkill() {
    let dir = std::env::temp_dir().join(format!("tidings-e2e-{:016x}", rand::random::<u64>()));
    survive_sigkill(vec!["--data-dir".into(), dir.display().to_string()]).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_sigkill() {
    let Some(database) = FreshDatabase::create("tidings_e2e").await else {
        return;
    };
    survive_sigkill(vec!["--database-url".into(), database.url.clone()]).await;
    database.drop_database().await;
}

/// The offline inbox across a crash: what a device acknowledged (and the node wrote) is not
/// delivered again after a SIGKILL, and what it never received is not lost.
async fn inbox_survives_sigkill(args: Vec<String>) {
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let addr = free_addr();
    let node = Node::start(addr, &arg_refs).await;
    let notify = |n: u64| async move {
        let body = json!({"message": format!("item {n}")});
        let (status, _) = http(addr, "POST", "/api/notify/user/7", Some(&body))
            .await
            .unwrap();
        assert_eq!(status, 200);
    };
    let phone = || async {
        let received = Arc::new(Mutex::new(Vec::<u64>::new()));
        let client = Client::builder(format!("ws://{addr}/ws?device=phone"))
            .token(token("7"))
            .connect()
            .await
            .unwrap();
        let seen = received.clone();
        client.on_publication(move |p| seen.lock().unwrap().push(p.offset.unwrap()));
        (client, received)
    };
    let wait_for = |received: Arc<Mutex<Vec<u64>>>, count: usize| async move {
        for _ in 0..400 {
            if received.lock().unwrap().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        received.lock().unwrap().clone()
    };

    // Received and acknowledged (the client acks its inbox by itself); the node writes acks
    // within 100 ms.
    let (client, received) = phone().await;
    for n in 1..=10 {
        notify(n).await;
    }
    assert_eq!(wait_for(received, 10).await, (1..=10).collect::<Vec<_>>());
    client.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Published while the device is away: never acknowledged.
    for n in 11..=15 {
        notify(n).await;
    }
    node.kill();
    let node = Node::start(addr, &arg_refs).await;
    let (client, received) = phone().await;
    assert_eq!(wait_for(received, 5).await, (11..=15).collect::<Vec<_>>());
    client.close().await;
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_inbox_survives_sigkill() {
    let dir = std::env::temp_dir().join(format!("tidings-e2e-{:016x}", rand::random::<u64>()));
    inbox_survives_sigkill(vec!["--data-dir".into(), dir.display().to_string()]).await;
    let _ = std::fs::remove_dir_all(dir);
}
