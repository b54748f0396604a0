//! Webhooks from the durable queue: a real local receiver that hangs, fails, then works.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::db::TestDb;
use common::*;
use serde_json::Value;
use tidings_protocol::Notification;
use tidings_server::Tidings;
use tidings_server::config::{WebhookDelivery, WebhookEndpoint};
use tidings_server::webhooks::signature;

const HANG: u8 = 0;
const FAIL: u8 = 1;
const UP: u8 = 2;
const SECRET_KEY: &str = "whsec_test";

#[derive(Clone, Default)]
struct Receiver {
    mode: Arc<AtomicU8>,
    /// (event id, signature header, body) of every request answered 2xx.
    accepted: Arc<Mutex<Vec<(String, String, String)>>>,
    attempts: Arc<AtomicU8>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    r.attempts.fetch_add(1, Ordering::Relaxed);
    match r.mode.load(Ordering::SeqCst) {
        HANG => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK
        }
        FAIL => StatusCode::SERVICE_UNAVAILABLE,
        _ => {
            let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
            r.accepted.lock().unwrap().push((
                header("x-tidings-event-id"),
                header("x-tidings-signature"),
                body,
            ));
            StatusCode::NO_CONTENT
        }
    }
}

async fn start_receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (receiver, url)
}

fn verify(signature_header: &str, body: &str) -> bool {
    let timestamp: u64 = signature_header
        .strip_prefix("t=")
        .and_then(|rest| rest.split(',').next())
        .and_then(|t| t.parse().ok())
        .unwrap();
    signature(SECRET_KEY, timestamp, body) == signature_header
}

async fn every_event_arrives_signed_while_messaging_goes_on(db: TestDb) {
    let (receiver, url) = start_receiver().await;
    let mut config = config();
    config.webhooks = vec![WebhookEndpoint {
        url,
        secret: SECRET_KEY.into(),
        events: vec![],
        channels: vec![],
    }];
    config.webhook_delivery = WebhookDelivery {
        timeout: Duration::from_millis(300),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        max_attempts: 1000,
        poll_interval: Duration::from_millis(50),
    };
    let store = Arc::new(db.open().await);
    let server = start_with(Tidings::builder().config(config).store(store.clone())).await;

    // The receiver hangs: messaging must not notice.
    let mut client = server.connect("7").await;
    client.subscribe("ticket:1").await;
    for n in 1..=10u64 {
        let note = Notification {
            message: format!("n{n}"),
            ..Default::default()
        };
        server.tidings.publish("ticket:1", &note).await.unwrap();
        assert_eq!(message(&client.recv().await).offset, Some(n));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.mode.store(FAIL, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.mode.store(UP, Ordering::SeqCst);

    // Everything arrives: 10 publications, the connect, the two joins.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let by_id = loop {
        let accepted = receiver.accepted.lock().unwrap().clone();
        let mut by_id: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for (id, signature, body) in accepted {
            by_id.entry(id).or_default().push((signature, body));
        }
        if by_id.len() >= 13 {
            break by_id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} events arrived",
            by_id.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        receiver.attempts.load(Ordering::Relaxed) as usize > by_id.len(),
        "there were failed attempts"
    );

    let mut kinds = BTreeMap::<String, usize>::new();
    let mut offsets = Vec::new();
    for (id, copies) in &by_id {
        let first_body = &copies[0].1;
        for (signature, body) in copies {
            assert!(verify(signature, body), "bad signature on {id}");
            assert_eq!(body, first_body, "a duplicate of {id} differs");
        }
        let event: Value = serde_json::from_str(first_body).unwrap();
        assert_eq!(event["id"], id.as_str());
        *kinds
            .entry(event["type"].as_str().unwrap().to_owned())
            .or_default() += 1;
        if event["type"] == "message.published" {
            assert_eq!(event["data"]["channel"], "ticket:1");
            assert_eq!(event["data"]["event"]["type"], "notification");
            offsets.push(event["data"]["offset"].as_u64().unwrap());
        }
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (1..=10).collect::<Vec<_>>());
    assert_eq!(kinds.get("user.connected"), Some(&1));
    assert_eq!(kinds.get("channel.joined"), Some(&2), "user:7 and ticket:1"); // {kinds:?}

    // The queue drains.
    let queue: &dyn tidings_server::webhook_queue::WebhookQueue = &*store;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while queue.backlog().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue never drained"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

on_both!(every_event_arrives_signed_while_messaging_goes_on);
