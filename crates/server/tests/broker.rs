//! Several nodes on one PostgreSQL database, linked by Redis pub/sub or core NATS: the real
//! servers of `REDIS_URL` (default `redis://127.0.0.1:6379`) and `NATS_URL` (default
//! `nats://127.0.0.1:4222`), or a `redis-server` / `nats-server` of the test's own when it
//! must be restarted. Each test has its own schema and its own channel prefix. Every test
//! runs on both brokers (`redis::…`, `nats::…`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::db::TestDb;
use common::*;
use serde_json::json;
use tidings_protocol::Notification;
use tidings_server::Tidings;
use tidings_server::broker::Broker;
use tidings_server::broker::nats::NatsBroker;
use tidings_server::broker::redis::RedisBroker;

/// The broker a test runs on.
#[derive(Debug, Clone, Copy)]
enum Engine {
    Redis,
    Nats,
}

impl Engine {
    /// The server already running on this machine (and in CI).
    fn shared_url(self) -> String {
        match self {
            Engine::Redis => {
                std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
            }
            Engine::Nats => {
                std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
            }
        }
    }

    /// A prefix of this test's own, so tests sharing a server do not hear each other.
    fn prefix(self) -> String {
        let unique = rand::random::<u64>();
        match self {
            Engine::Redis => format!("tidings-test-{unique:016x}:"),
            Engine::Nats => format!("tidings_test_{unique:016x}."),
        }
    }

    fn broker(self, url: &str, prefix: &str) -> Arc<dyn Broker> {
        let node = format!("node-{:08x}", rand::random::<u32>());
        match self {
            Engine::Redis => Arc::new(RedisBroker::new(url, node).unwrap().prefix(prefix)),
            Engine::Nats => Arc::new(NatsBroker::new(url, node).unwrap().prefix(prefix)),
        }
    }
}

/// A node on `db`, linked through the broker at `url` under `prefix`.
async fn node(db: &TestDb, engine: Engine, url: &str, prefix: &str) -> TestServer {
    start_with(
        Tidings::builder()
            .config(config())
            .store(Arc::new(db.open().await))
            .broker(engine.broker(url, prefix)),
    )
    .await
}

/// [`node`] with `config` instead of the tests' defaults.
async fn node_with(
    db: &TestDb,
    engine: Engine,
    url: &str,
    prefix: &str,
    config: tidings_server::Config,
) -> TestServer {
    start_with(
        Tidings::builder()
            .config(config)
            .store(Arc::new(db.open().await))
            .broker(engine.broker(url, prefix)),
    )
    .await
}

/// Reads `count` messages of `channel` and returns their offsets (other frames skipped).
async fn offsets(client: &mut Client, count: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < count {
        let frame = tokio::time::timeout(Duration::from_secs(20), client.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} messages arrived: {got:?}", got.len()));
        if frame.kind() == "message" {
            got.push(message(&frame).offset.unwrap());
        }
    }
    got
}

/// Lets each node's broker subscription start (it is confirmed asynchronously).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn publications_through_every_node_and_entry_point_reach_every_node_once_in_order(
    engine: Engine,
) {
    let Some(db) = TestDb::postgres() else { return };
    let (url, prefix) = (engine.shared_url(), engine.prefix());
    let nodes = [
        node(&db, engine, &url, &prefix).await,
        node(&db, engine, &url, &prefix).await,
        node(&db, engine, &url, &prefix).await,
    ];
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut client = node.connect(&format!("reader-{i}")).await;
        client.subscribe("room").await;
        clients.push(client);
    }
    settle().await;
    let mut publisher = nodes[1].connect("writer").await;
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        // Every fifth one near the 64 KiB frame limit: what large events cost between nodes.
        let size = if round % 5 == 0 { 60_000 } else { 10 };
        let note = Notification {
            message: format!("round {round} {}", "x".repeat(size)),
            ..Default::default()
        };
        // Node 0's Rust API, node 1's socket, node 2's HTTP API, in turn.
        nodes[0].tidings.publish("room", &note).await.unwrap();
        let reply = publisher
            .call(
                "publish",
                json!({"channel": "room", "event": {"type": "notification", "data": {"message": "socket"}}}),
            )
            .await;
        assert_eq!(reply.kind(), "reply", "{reply:?}");
        let (status, body) = http(
            "POST",
            &nodes[2].http("/api/publish"),
            Some(API_KEY),
            Some(json!({"channel": "room", "event": {"type": "notification", "data": {"message": "http"}}})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let expected: Vec<u64> = (1..=3 * ROUNDS as u64).collect();
    for client in &mut clients {
        assert_eq!(offsets(client, expected.len()).await, expected);
        client.expect_silence(300).await;
    }
}

async fn a_node_fills_from_the_store_what_the_broker_never_brought(engine: Engine) {
    let Some(db) = TestDb::postgres() else { return };
    let (url, prefix) = (engine.shared_url(), engine.prefix());
    let a = node(&db, engine, &url, &prefix).await;
    let b = node(&db, engine, &url, &prefix).await;
    // A node on the same database whose publications never reach the broker: to the others
    // they are exactly what a lost pub/sub message looks like.
    let silent = start_with(
        Tidings::builder()
            .config(config())
            .store(Arc::new(db.open().await)),
    )
    .await;
    let mut on_b = b.connect("reader").await;
    on_b.subscribe("room").await;
    settle().await;
    let note = Notification::default();
    a.tidings.publish("room", &note).await.unwrap();
    for _ in 0..5 {
        silent.tidings.publish("room", &note).await.unwrap();
    }
    assert_eq!(offsets(&mut on_b, 1).await, vec![1]);
    on_b.expect_silence(300).await;
    // The next publication that does travel shows the gap: 2..=6 come from the store first.
    a.tidings.publish("room", &note).await.unwrap();
    assert_eq!(offsets(&mut on_b, 6).await, (2..=7).collect::<Vec<u64>>());
    on_b.expect_silence(300).await;
}

async fn broadcast_and_disconnect_through_one_node_reach_every_node(engine: Engine) {
    let Some(db) = TestDb::postgres() else { return };
    let (url, prefix) = (engine.shared_url(), engine.prefix());
    let a = node(&db, engine, &url, &prefix).await;
    let b = node(&db, engine, &url, &prefix).await;
    let mut carol_on_b = b.connect("carol").await;
    let mut dave_on_b = b.connect("dave").await;
    settle().await;
    // Through the HTTP API of node A.
    let (status, body) = http(
        "POST",
        &a.http("/api/broadcast"),
        Some(API_KEY),
        Some(json!({"event": {"type": "maintenance", "data": {"in": "5m"}}, "sender": "ops"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for client in [&mut carol_on_b, &mut dave_on_b] {
        let frame = client.recv().await;
        assert_eq!(message(&frame).channel, "broadcast");
        assert_eq!(message(&frame).event.kind(), "maintenance");
        assert_eq!(message(&frame).sender.as_deref(), Some("ops"));
    }
    // Through the Rust API of node A: carol's connection on B closes with 4006, dave stays.
    assert_eq!(a.tidings.disconnect_user("carol"), 0);
    assert_eq!(carol_on_b.expect_close().await.code, 4006);
    dave_on_b.ping_ok().await;

    // Typing in a channel reaches its members on the other node (and only them).
    let mut erin_on_a = a.connect("erin").await;
    erin_on_a.subscribe("room").await;
    dave_on_b.subscribe("room").await;
    let mut frank_on_b = b.connect("frank").await;
    frank_on_b.subscribe("elsewhere").await;
    settle().await;
    erin_on_a
        .send_json(json!({"type": "typing", "data": {"channel": "room"}}))
        .await;
    let typing = dave_on_b.recv_until(|frame| frame.kind() == "typing").await;
    assert_eq!(
        as_json(&typing)["data"],
        json!({"channel": "room", "user_id": "erin"})
    );
    frank_on_b.expect_silence(300).await;
}

/// `GET path` on `node`'s HTTP API, as JSON.
async fn api_get(node: &TestServer, path: &str) -> serde_json::Value {
    let (status, body) = http("GET", &node.http(path), Some(API_KEY), None).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits (up to 10 s) until every node answers `path` with `expected` at `pointer`.
async fn agree(nodes: &[&TestServer], path: &str, pointer: &str, expected: serde_json::Value) {
    for node in nodes {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let answer = api_get(node, path).await;
            if answer.pointer(pointer) == Some(&expected) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} on {}: {answer} (expected {pointer} = {expected})",
                node.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The next `user_joined` / `user_left` a client gets, as "joined ann".
async fn presence_event(client: &mut Client) -> String {
    let frame = client
        .recv_until(|f| matches!(f.kind(), "user_joined" | "user_left"))
        .await;
    let json = as_json(&frame);
    let verb = if frame.kind() == "user_joined" {
        "joined"
    } else {
        "left"
    };
    format!("{verb} {}", json["data"]["user_id"].as_str().unwrap())
}

async fn presence_and_status_agree_on_every_node(engine: Engine) {
    let Some(db) = TestDb::postgres() else { return };
    let (url, prefix) = (engine.shared_url(), engine.prefix());
    let mut config = config();
    config.limits.max_connections_per_user = 3;
    let nodes = [
        node_with(&db, engine, &url, &prefix, config.clone()).await,
        node_with(&db, engine, &url, &prefix, config.clone()).await,
        node_with(&db, engine, &url, &prefix, config).await,
    ];
    let [a, b, c] = &nodes;
    let all = [a, b, c];
    let mut ann_on_a = a.connect("ann").await;
    ann_on_a.subscribe("room").await;
    let ann = json!([{"user_id": "ann", "connections": 1}]);
    agree(&all, "/api/channels/room/members", "/members", ann).await;
    agree(&all, "/api/users/ann/status", "/connections", json!(1)).await;

    // Bob's first join, on B, reaches Ann on A.
    let mut bob_on_b = b.connect("bob").await;
    bob_on_b.subscribe("room").await;
    assert_eq!(presence_event(&mut ann_on_a).await, "joined bob");
    let both = json!([
        {"user_id": "ann", "connections": 1},
        {"user_id": "bob", "connections": 1},
    ]);
    agree(&all, "/api/channels/room/members", "/members", both).await;
    agree(
        &all,
        "/api/channels/room/members",
        "/scope",
        json!("cluster"),
    )
    .await;

    // Ann again, on C: not a first join anywhere, so Bob hears nothing.
    let mut ann_on_c = c.connect("ann").await;
    ann_on_c.subscribe("room").await;
    agree(&all, "/api/users/ann/status", "/connections", json!(2)).await;
    let members = json!([
        {"user_id": "ann", "connections": 2},
        {"user_id": "bob", "connections": 1},
    ]);
    agree(&all, "/api/channels/room/members", "/members", members).await;
    // The per-user limit (3) counts every node: a third connection is fine, a fourth is not.
    let _ann_on_b = b.connect("ann").await;
    agree(&all, "/api/users/ann/status", "/connections", json!(3)).await;
    let mut fourth = Client::open(&a.url("ann")).await;
    assert_eq!(fourth.expect_close().await.code, 4010);
    agree(&all, "/api/stats", "/cluster/connections", json!(4)).await;
    agree(&all, "/api/stats", "/cluster/nodes", json!(3)).await;

    // Ann leaves A: she is still in the room on C. Then she leaves C: Bob hears it.
    ann_on_a.close().await;
    agree(&all, "/api/users/ann/status", "/connections", json!(2)).await;
    ann_on_c.close().await;
    assert_eq!(presence_event(&mut bob_on_b).await, "left ann");
    let only_bob = json!([{"user_id": "bob", "connections": 1}]);
    agree(&all, "/api/channels/room/members", "/members", only_bob).await;
    // The Rust API sees the cluster too.
    assert_eq!(a.tidings.user_connections("bob"), 1);
    assert!(c.tidings.connected_users().contains(&"bob".to_owned()));
}

/// A `redis-server` or `nats-server` of this test's own, on a free port, that it can stop
/// and start again.
struct OwnBroker {
    engine: Engine,
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnBroker {
    fn start(engine: Engine) -> OwnBroker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("tidings-broker-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = OwnBroker {
            engine,
            port,
            dir,
            child: None,
        };
        broker.restart();
        broker
    }

    fn url(&self) -> String {
        match self.engine {
            Engine::Redis => format!("redis://127.0.0.1:{}", self.port),
            Engine::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let mut command = match self.engine {
            Engine::Redis => {
                let mut command = std::process::Command::new("redis-server");
                command
                    .args(["--port", &port, "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no", "--dir"])
                    .arg(&self.dir);
                command
            }
            Engine::Nats => {
                let mut command = std::process::Command::new("nats-server");
                command.args(["-a", "127.0.0.1", "-p", &port]);
                command
            }
        };
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server and nats-server must be installed (scripts/setup)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{:?} did not start on port {}", self.engine, self.port);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn a_broker_restart_mid_stream_loses_nothing_and_nobody_reconnects(engine: Engine) {
    let Some(db) = TestDb::postgres() else { return };
    let mut broker = OwnBroker::start(engine);
    let prefix = engine.prefix();
    let a = node(&db, engine, &broker.url(), &prefix).await;
    let b = node(&db, engine, &broker.url(), &prefix).await;
    let mut on_a = a.connect("reader-a").await;
    let mut on_b = b.connect("reader-b").await;
    on_a.subscribe("room").await;
    on_b.subscribe("room").await;
    settle().await;
    let note = Notification::default();
    assert_eq!(health(&a).await, "ok");
    const TOTAL: u64 = 60;
    for i in 1..=TOTAL {
        if i == 20 {
            broker.stop();
            // Degraded, not down: the node keeps serving its own clients.
            wait_for_health(&b, "degraded").await;
        }
        if i == 40 {
            broker.restart();
        }
        // Every publication is acknowledged whatever the broker does: the store is the truth.
        let published = a.tidings.publish("room", &note).await.unwrap();
        assert_eq!(published.offset, Some(i));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let expected: Vec<u64> = (1..=TOTAL).collect();
    assert_eq!(offsets(&mut on_a, expected.len()).await, expected);
    assert_eq!(offsets(&mut on_b, expected.len()).await, expected);
    on_b.expect_silence(300).await;
    wait_for_health(&b, "ok").await;
}

async fn health(node: &TestServer) -> String {
    let (status, body) = http("GET", &node.http("/healthz"), None, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits (up to 10 s) until `/healthz` starts with `expected`.
async fn wait_for_health(node: &TestServer, expected: &str) {
    for _ in 0..200 {
        if health(node).await.starts_with(expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/healthz never said {expected:?}: {:?}", health(node).await);
}

/// Generates `redis::NAME` and `nats::NAME` for each `async fn NAME(Engine)` listed.
macro_rules! on_both_brokers {
    ($($name:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Engine::Redis).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Engine::Nats).await;
                }
            )*
        }
    };
}

on_both_brokers!(
    publications_through_every_node_and_entry_point_reach_every_node_once_in_order,
    a_node_fills_from_the_store_what_the_broker_never_brought,
    broadcast_and_disconnect_through_one_node_reach_every_node,
    a_broker_restart_mid_stream_loses_nothing_and_nobody_reconnects,
    presence_and_status_agree_on_every_node,
);

/// Without any broker: a message naming an offset the store has not reached (a stray or
/// forged one) is not delivered, and does not make the node skip the real publications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_message_beyond_the_store_is_ignored() {
    use tidings_protocol::RawEvent;
    use tidings_server::store::Publication;
    let node = start().await;
    let mut reader = node.connect("reader").await;
    let joined = reader.subscribe("room").await;
    let epoch = as_json(&joined)["data"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let forged = Publication::new(
        Arc::from("room"),
        Some(1_000_000),
        Arc::from(epoch.as_str()),
        0,
        None,
        RawEvent::from_parts("notification", &json!({"message": "forged"})).unwrap(),
    );
    assert_eq!(node.tidings.deliver_remote(&forged).await, 0);
    reader.expect_silence(200).await;
    let note = Notification::default();
    node.tidings.publish("room", &note).await.unwrap();
    assert_eq!(offsets(&mut reader, 1).await, vec![1]);
}
