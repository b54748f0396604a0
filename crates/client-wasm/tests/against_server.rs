//! The native client against the real server on 127.0.0.1.
#![cfg(not(target_arch = "wasm32"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tidings_client::{Client, ClientError, ConnectionEvent, ErrorKind, State};
use tidings_protocol::{ChatMessage, Code, Level, Notification};
use tidings_server::hooks::{HookError, RpcRequest};
use tidings_server::store::{MemoryStore, Store};
use tidings_server::{Config, Tidings, TidingsBuilder};
use tokio::sync::{mpsc, oneshot};

const SECRET: &str = "client-test-secret";

struct Running {
    tidings: Tidings,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
}

fn config() -> Config {
    let mut config = Config::default();
    config.jwt.secret = Some(SECRET.into());
    config.shutdown_reconnect_spread = Duration::from_millis(200);
    config
}

/// Starts a node on `addr` (port 0 for any) with the given store.
async fn serve(addr: SocketAddr, store: Arc<dyn Store>) -> (Running, SocketAddr) {
    serve_with(addr, Tidings::builder().config(config()).store(store)).await
}

/// Starts the node `builder` makes on `addr` (port 0 for any).
async fn serve_with(addr: SocketAddr, builder: TidingsBuilder) -> (Running, SocketAddr) {
    let tidings = builder.build().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let listener = socket.listen(1024).unwrap();
    let local = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let app = tidings.router();
    let served = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (
        Running {
            tidings,
            stop,
            served,
        },
        local,
    )
}

impl Running {
    async fn stop(self) {
        self.tidings.shutdown().await;
        let _ = self.stop.send(());
        self.served.await.unwrap();
    }
}

fn token(user: &str) -> String {
    tidings_server::mint_token(SECRET, user, 3600).unwrap()
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_events_requests_and_presence_against_the_server() {
    let (server, addr) = serve(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(MemoryStore::new(100)),
    )
    .await;
    let client = Client::builder(format!("ws://{addr}/ws"))
        .token(token("7"))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.state(), State::Connected);

    let notes = Arc::new(Mutex::new(Vec::<Notification>::new()));
    let seen = notes.clone();
    client.on::<Notification>(move |n| seen.lock().unwrap().push(n));
    let chats = Arc::new(Mutex::new(Vec::<String>::new()));
    let room = client.subscription("ticket:1");
    let seen = chats.clone();
    room.on::<ChatMessage>(move |m| seen.lock().unwrap().push(m.content));
    let subscribed = room.subscribe().await.unwrap();
    assert_eq!(subscribed.channel, "ticket:1");

    let note = Notification {
        title: None,
        message: "report ready".into(),
        level: Level::Success,
        data: None,
    };
    assert_eq!(server.tidings.notify_user("7", &note).await.unwrap(), 1);
    eventually("the notification", || notes.lock().unwrap().len() == 1).await;
    assert_eq!(notes.lock().unwrap()[0], note);

    let reply = room
        .publish(&ChatMessage {
            id: "m1".into(),
            content: "hello".into(),
            metadata: None,
        })
        .await
        .unwrap();
    assert_eq!(reply.offset, Some(1));
    eventually("the chat message", || chats.lock().unwrap().len() == 1).await;
    assert_eq!(chats.lock().unwrap()[0], "hello");

    let page = client
        .history("ticket:1", None, None, Some(10))
        .await
        .unwrap();
    assert_eq!(page.publications.len(), 1);
    assert_eq!(
        page.publications[0]
            .event
            .decode::<ChatMessage>()
            .unwrap()
            .unwrap()
            .content,
        "hello"
    );

    let members = room.presence().await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].user_id, "7");

    // A refused subscribe is a typed server error.
    let denied = client.subscribe("user:8").await.err().unwrap();
    assert_eq!(denied.code().map(|c| c.as_u16()), Some(4003));
    client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_on_the_same_port_loses_nothing() {
    // One store outlives both server instances, as a durable store would.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(10_000));
    let (first, addr) = serve("127.0.0.1:0".parse().unwrap(), store.clone()).await;

    let client = Client::builder(format!("ws://{addr}/ws"))
        .token(token("reader"))
        .connect()
        .await
        .unwrap();
    let changes = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = changes.clone();
    client.on_state(move |change| {
        let name = match change {
            ConnectionEvent::Reconnecting { .. } => "reconnecting",
            ConnectionEvent::Connected(_) => "connected",
            ConnectionEvent::Disconnected { .. } => "disconnected",
            _ => "other",
        };
        seen.lock().unwrap().push(name.to_owned());
    });
    let offsets = Arc::new(Mutex::new(Vec::<u64>::new()));
    let feed = client.subscription("feed");
    let seen = offsets.clone();
    feed.on_publication(move |p| seen.lock().unwrap().push(p.offset.unwrap()));
    feed.subscribe().await.unwrap();

    // The publisher keeps publishing through whichever node is current.
    const TOTAL: u64 = 300;
    let current = Arc::new(Mutex::new(first.tidings.clone()));
    let publisher = {
        let current = current.clone();
        tokio::spawn(async move {
            for n in 1..=TOTAL {
                let node = current.lock().unwrap().clone();
                let note = Notification {
                    message: format!("n{n}"),
                    ..Default::default()
                };
                let published = node.publish("feed", &note).await.unwrap();
                assert_eq!(published.offset, Some(n));
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };

    eventually("some publications before the restart", || {
        offsets.lock().unwrap().len() >= 50
    })
    .await;
    first.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await; // down for a while; publishing goes on
    let (second, _) = serve(addr, store.clone()).await;
    *current.lock().unwrap() = second.tidings.clone();

    publisher.await.unwrap();
    eventually("every publication", || {
        offsets.lock().unwrap().len() as u64 >= TOTAL
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await; // room for a duplicate to show up
    let got = offsets.lock().unwrap().clone();
    assert_eq!(
        got,
        (1..=TOTAL).collect::<Vec<_>>(),
        "in order, none missing, none twice"
    );
    assert_eq!(client.state(), State::Connected);
    let changes = changes.lock().unwrap().clone();
    assert!(changes.contains(&"reconnecting".to_owned()), "{changes:?}");
    assert_eq!(
        changes.last().map(String::as_str),
        Some("connected"),
        "{changes:?}"
    );
    client.close().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_goes_away_for_good_sends_the_client_to_the_next_url() {
    // Two nodes of one cluster share the store; node A shuts down and never comes back.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(10_000));
    let (a, a_addr) = serve("127.0.0.1:0".parse().unwrap(), store.clone()).await;
    let (b, b_addr) = serve("127.0.0.1:0".parse().unwrap(), store.clone()).await;
    let client = Client::builder(format!("ws://{a_addr}/ws"))
        .fallback_urls([format!("ws://{b_addr}/ws")])
        .token(token("reader"))
        .connect()
        .await
        .unwrap();
    let offsets = Arc::new(Mutex::new(Vec::<u64>::new()));
    let feed = client.subscription("feed");
    let seen = offsets.clone();
    feed.on_publication(move |p| seen.lock().unwrap().push(p.offset.unwrap()));
    feed.subscribe().await.unwrap();
    let note = Notification::default();
    for _ in 0..10 {
        a.tidings.publish("feed", &note).await.unwrap();
    }
    eventually("the first ten through node A", || {
        offsets.lock().unwrap().len() == 10
    })
    .await;
    a.stop().await;
    // Published while the client moves: it recovers them from node B.
    for _ in 0..10 {
        b.tidings.publish("feed", &note).await.unwrap();
    }
    eventually("all twenty", || offsets.lock().unwrap().len() >= 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // room for a duplicate to show up
    assert_eq!(*offsets.lock().unwrap(), (1..=20).collect::<Vec<u64>>());
    assert_eq!(client.state(), State::Connected);
    assert_eq!(b.tidings.user_connections("reader"), 1);
    client.close().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_inbox_is_delivered_once_and_acknowledged_automatically() {
    let (server, addr) = serve(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(MemoryStore::new(100)),
    )
    .await;
    for text in ["while away 1", "while away 2"] {
        let note = Notification {
            message: text.into(),
            ..Default::default()
        };
        assert_eq!(
            server.tidings.notify_user("9", &note).await.unwrap(),
            0,
            "nobody online"
        );
    }
    let url = format!("ws://{addr}/ws?device=laptop");
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let open = |seen: Arc<Mutex<Vec<String>>>| {
        let url = url.clone();
        async move {
            // Handlers first (`build`, then `start`): the inbox follows `connected` at once.
            let client = Client::builder(url).token(token("9")).build();
            client.on::<Notification>(move |n| seen.lock().unwrap().push(n.message));
            client.start();
            client
        }
    };

    let client = open(seen.clone()).await;
    eventually("the inbox", || seen.lock().unwrap().len() == 2).await;
    assert_eq!(*seen.lock().unwrap(), vec!["while away 1", "while away 2"]);
    client.close().await; // the pending ack goes out before the close
    // The server reads the ack before the close: once the connection is gone on the
    // server, the ack is stored (a busy machine may schedule the new connection first).
    eventually("the first connection gone", || {
        server.tidings.user_connections("9") == 0
    })
    .await;

    let again = open(seen.clone()).await;
    eventually("connected", || again.state() == State::Connected).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(seen.lock().unwrap().len(), 2, "nothing is delivered twice");
    let note = Notification {
        message: "live".into(),
        ..Default::default()
    };
    server.tidings.notify_user("9", &note).await.unwrap();
    eventually("the live one", || seen.lock().unwrap().len() == 3).await;
    again.close().await;
    server.stop().await;
}

/// What the application's back end saw: every call's method, and who to tell when a
/// `hang` call arrives.
#[derive(Default)]
struct Backend {
    calls: Mutex<Vec<String>>,
    hanging: Mutex<Option<mpsc::UnboundedSender<()>>>,
    hangs: AtomicUsize,
}

/// The application's `on_rpc` hook: a few methods, each answering one way.
async fn answer(
    backend: Arc<Backend>,
    request: RpcRequest,
) -> Result<serde_json::Value, HookError> {
    backend.calls.lock().unwrap().push(request.method.clone());
    match request.method.as_str() {
        "echo" => Ok(json!({"user_id": &*request.user_id, "data": request.data})),
        "motivation_requested" => {
            let mood = request.data["mood"].as_str().unwrap_or("fine").to_owned();
            Ok(json!({"message": format!("Keep going, {}! ({mood})", request.user_id)}))
        }
        "forbidden" => Err(HookError::Refused("members only".into())),
        "broken" => Err(HookError::Failed("the database said no".into())),
        "down" => Err(HookError::Unavailable("maintenance".into())),
        // Longer than the proxy timeout: the server answers 4503.
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(json!("too late"))
        }
        // Never answers in time; tells the test it arrived.
        "hang" => {
            backend.hangs.fetch_add(1, Ordering::SeqCst);
            if let Some(tell) = &*backend.hanging.lock().unwrap() {
                let _ = tell.send(());
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(json!("too late"))
        }
        other => Err(HookError::NotFound(format!("no method {other}"))),
    }
}

/// A node whose `on_rpc` hook is `answer`, with a 500 ms proxy timeout.
async fn serve_rpc(addr: SocketAddr, backend: Arc<Backend>) -> (Running, SocketAddr) {
    let mut config = config();
    config.proxy.timeout = Duration::from_millis(500);
    let builder = Tidings::builder()
        .config(config)
        .store(Arc::new(MemoryStore::new(100)))
        .on_rpc(move |request| answer(backend.clone(), request));
    serve_with(addr, builder).await
}

/// The server's code of a failed call.
fn server_code(error: &ClientError) -> Option<u16> {
    match error {
        ClientError::Server { code, .. } => Some(code.as_u16()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_calls_reach_the_back_end_and_every_refusal_is_typed() {
    let backend = Arc::new(Backend::default());
    let (server, addr) = serve_rpc("127.0.0.1:0".parse().unwrap(), backend.clone()).await;
    let client = Client::builder(format!("ws://{addr}/ws"))
        .token(token("alice"))
        .connect()
        .await
        .unwrap();

    // Any JSON in, any JSON out; the server adds who called.
    let answer = client
        .rpc(
            "echo",
            json!({"list": [1, 2.5, "three", null], "nested": {"ok": true}}),
        )
        .await
        .unwrap();
    assert_eq!(
        answer,
        json!({"user_id": "alice", "data": {"list": [1, 2.5, "three", null], "nested": {"ok": true}}})
    );
    assert_eq!(
        client.rpc("echo", serde_json::Value::Null).await.unwrap(),
        json!({"user_id": "alice", "data": null})
    );

    // Typed both ways.
    #[derive(serde::Serialize)]
    struct Mood<'a> {
        mood: &'a str,
    }
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Motivation {
        message: String,
    }
    let motivation: Motivation = client
        .rpc_as("motivation_requested", &Mood { mood: "tired" })
        .await
        .unwrap();
    assert_eq!(motivation.message, "Keep going, alice! (tired)");
    // An answer of another shape is a decode error, not a panic.
    let mismatch = client
        .rpc_as::<_, Motivation>("echo", &Mood { mood: "x" })
        .await
        .unwrap_err();
    assert_eq!(mismatch.kind(), ErrorKind::Decode, "{mismatch}");

    // Refusals carry the server's code and the back end's message.
    let unknown = client.rpc("nope", json!({})).await.unwrap_err();
    assert_eq!(server_code(&unknown), Some(4004), "{unknown}");
    assert!(unknown.to_string().contains("no method nope"), "{unknown}");
    let refused = client.rpc("forbidden", json!({})).await.unwrap_err();
    assert_eq!(
        refused,
        ClientError::Server {
            code: Code::Forbidden,
            message: "members only".into()
        }
    );
    let broken = client.rpc("broken", json!({})).await.unwrap_err();
    assert_eq!(server_code(&broken), Some(4500), "{broken}");
    let down = client.rpc("down", json!({})).await.unwrap_err();
    assert_eq!(server_code(&down), Some(4503), "{down}");
    assert!(down.code().unwrap().is_retryable());
    assert!(down.to_string().contains("maintenance"), "{down}");
    // Too slow for the proxy timeout: 4503 as well, long before the client's own timeout.
    let started = std::time::Instant::now();
    let slow = client.rpc("slow", json!({})).await.unwrap_err();
    assert_eq!(server_code(&slow), Some(4503), "{slow}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Method names the server will not pass on.
    for bad in [String::new(), "m".repeat(129), "line\nbreak".to_owned()] {
        let error = client.rpc(bad.clone(), json!({})).await.unwrap_err();
        assert_eq!(server_code(&error), Some(4400), "{bad:?}: {error}");
    }
    assert_eq!(
        client
            .rpc("m".repeat(128), json!({}))
            .await
            .map_err(|e| server_code(&e)),
        Err(Some(4004))
    );

    // None of that hurt the connection.
    assert_eq!(client.state(), State::Connected);
    assert_eq!(client.rpc("echo", json!(1)).await.unwrap()["data"], 1);
    let calls = backend.calls.lock().unwrap().clone();
    assert_eq!(
        calls
            .iter()
            .filter(|m| m.is_empty() || m.len() > 128 || m.contains('\n'))
            .count(),
        0,
        "invalid methods never reach the back end: {calls:?}"
    );
    client.close().await;
    let closed = client.rpc("echo", json!({})).await.unwrap_err();
    assert_eq!(closed.kind(), ErrorKind::Closed);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_in_flight_when_the_server_restarts_fails_and_is_not_sent_again() {
    let backend = Arc::new(Backend::default());
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    *backend.hanging.lock().unwrap() = Some(arrived);
    let (first, addr) = serve_rpc("127.0.0.1:0".parse().unwrap(), backend.clone()).await;
    let client = Client::builder(format!("ws://{addr}/ws"))
        .token(token("alice"))
        .connect()
        .await
        .unwrap();

    let calling = tokio::spawn({
        let client = client.clone();
        async move { client.rpc("hang", json!({"cents": 100})).await }
    });
    tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
        .await
        .unwrap()
        .unwrap();
    // The node shuts down (1012) while the back end is still thinking.
    first.stop().await;
    let error = tokio::time::timeout(Duration::from_secs(10), calling)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            &error,
            ClientError::Disconnected {
                code: Code::ServerRestart,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.code().unwrap().is_retryable());

    // Back on the same port with the same back end: the client reconnects, and the call
    // it lost is not made again.
    let (second, _) = serve_rpc(addr, backend.clone()).await;
    let mut states = client.state_changes();
    tokio::time::timeout(
        Duration::from_secs(20),
        states.wait_for(|s| *s == State::Connected),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        client.rpc("echo", json!("after")).await.unwrap()["data"],
        "after"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        backend.hangs.load(Ordering::SeqCst),
        1,
        "the back end ran the call once"
    );
    assert_eq!(*backend.calls.lock().unwrap(), ["hang", "echo"]);
    client.close().await;
    second.stop().await;
}
