//! The native client against the real server on 127.0.0.1.
#![cfg(not(target_arch = "wasm32"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_client::{Client, ConnectionEvent, State};
use tidings_protocol::{ChatMessage, Level, Notification};
use tidings_server::store::{MemoryStore, Store};
use tidings_server::{Config, Tidings};
use tokio::sync::oneshot;

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
    let tidings = Tidings::builder()
        .config(config())
        .store(store)
        .build()
        .unwrap();
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
