//! Nothing acknowledged is lost by a crash: the node is killed with SIGKILL in the middle of a
//! stream of acknowledged publishes and started again; the client has every acknowledged
//! publication exactly once, in order. Once on SQLite (the embedded default), once on the
//! PostgreSQL at `DATABASE_URL` (a fresh database per run).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sqlx::Connection;
use tidings_client::Client;
use tidings_e2e::{Node, free_addr, http, token};

const TOTAL_ACKED: u64 = 300;
const KILL_AFTER: u64 = 120;

async fn survive_sigkill(args: Vec<String>) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let addr = free_addr();
    let node = Node::start(addr, &args).await;

    let client = Client::builder(format!("ws://{addr}/ws"))
        .token(token("reader"))
        .connect()
        .await
        .unwrap();
    let received = Arc::new(Mutex::new(Vec::<u64>::new()));
    let orders = client.subscription("orders");
    let seen = received.clone();
    orders.on_publication(move |p| seen.lock().unwrap().push(p.offset.unwrap()));
    orders.subscribe().await.unwrap();

    // Publish through the HTTP API; an offset counts once the node answered 200.
    let mut acked = BTreeSet::new();
    let mut node = Some(node);
    let mut attempt = 0u64;
    let mut killed = false;
    while (acked.len() as u64) < TOTAL_ACKED {
        attempt += 1;
        let body =
            json!({"channel": "orders", "event": {"type": "order_placed", "data": {"n": attempt}}});
        if let Ok((200, answer)) = http(addr, "POST", "/api/publish", Some(&body)).await {
            let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
            acked.insert(answer["offset"].as_u64().unwrap());
        }
        if acked.len() as u64 == KILL_AFTER && !killed {
            killed = true;
            node.take().unwrap().kill();
            // A few publishes fail while it is down; they were never acknowledged.
            for _ in 0..3 {
                assert!(
                    http(addr, "POST", "/api/publish", Some(&body))
                        .await
                        .is_err()
                );
            }
            node = Some(Node::start(addr, &args).await);
        }
    }

    assert!(killed, "the node was never killed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got: BTreeSet<u64> = received.lock().unwrap().iter().copied().collect();
        if acked.is_subset(&got) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing {:?}",
            acked.difference(&got).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = received.lock().unwrap().clone();
    let expected: Vec<u64> = (1..=*got.last().unwrap()).collect();
    assert_eq!(got, expected, "every publication once, in order, no gap");
    assert!(acked.iter().all(|offset| got.contains(offset)));
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_sigkill() {
    let dir = std::env::temp_dir().join(format!("tidings-e2e-{:016x}", rand::random::<u64>()));
    survive_sigkill(vec!["--data-dir".into(), dir.display().to_string()]).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_sigkill() {
    if std::env::var_os("TIDINGS_TEST_SKIP_POSTGRES").is_some() {
        return;
    }
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("tidings_e2e_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    survive_sigkill(vec!["--database-url".into(), format!("{base}/{name}")]).await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}
