//! `tidings_server::serve`: serving a node and shutting it down gracefully.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{Client, http, token};
use tidings_protocol::ServerMessage;
use tidings_server::Tidings;
use tokio::sync::oneshot;

/// A node served by `serve` on 127.0.0.1:0, stopped when `stop` fires.
struct Served {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(app: impl FnOnce(&Tidings) -> Option<Router>) -> Served {
    start_config(common::config(), app).await
}

async fn start_config(
    mut config: tidings_server::Config,
    app: impl FnOnce(&Tidings) -> Option<Router>,
) -> Served {
    config.shutdown_reconnect_spread = Duration::from_millis(300);
    let tidings = Tidings::builder().config(config).build().unwrap();
    let listener = tidings_server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    assert_ne!(addr.port(), 0);
    let (stop, stopped) = oneshot::channel::<()>();
    let mut serve = tidings_server::serve(listener, tidings.clone()).with_shutdown(async move {
        let _ = stopped.await;
    });
    if let Some(app) = app(&tidings) {
        serve = serve.with_router(app);
    }
    let served = tokio::spawn(serve.into_future());
    Served { addr, stop, served }
}

#[tokio::test]
async fn shutdown_tells_clients_closes_1012_and_returns_ok() {
    let server = start(|_| None).await;
    let url = format!("ws://{}/ws?token={}", server.addr, token("7"));
    let mut client = Client::open(&url).await;
    assert_eq!(client.recv().await.kind(), "connected");
    client.ping_ok().await;

    server.stop.send(()).unwrap();
    let frame = client.recv().await;
    let ServerMessage::Shutdown(shutdown) = &frame.message else {
        panic!("expected a shutdown frame, got {frame:?}");
    };
    assert!(shutdown.reconnect_after_ms <= 300, "{shutdown:?}");
    assert_eq!(client.expect_close().await.code, 1012);

    tokio::time::timeout(Duration::from_secs(10), server.served)
        .await
        .expect("serve returns once the clients are gone")
        .unwrap()
        .unwrap();
    // The listener is gone with it.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn a_given_router_is_served_and_shut_down_the_same_way() {
    let server = start(|tidings| {
        Some(
            Router::new()
                .route("/hello", get(|| async { "from the app" }))
                .route("/realtime/ws", tidings.ws_handler()),
        )
    })
    .await;
    let (status, body) = http("GET", &format!("http://{}/hello", server.addr), None, None).await;
    assert_eq!((status, body.as_str()), (200, "from the app"));
    // Only the given router is served: the default `/healthz` is not mounted.
    let (status, _) = http(
        "GET",
        &format!("http://{}/healthz", server.addr),
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);

    let url = format!("ws://{}/realtime/ws?token={}", server.addr, token("7"));
    let mut client = Client::open(&url).await;
    assert_eq!(client.recv().await.kind(), "connected");
    server.stop.send(()).unwrap();
    assert_eq!(client.recv().await.kind(), "shutdown");
    assert_eq!(client.expect_close().await.code, 1012);
    server.served.await.unwrap().unwrap();
}

#[tokio::test]
async fn serve_without_clients_returns_ok_on_the_signal() {
    let server = start(|_| None).await;
    let (status, _) = http(
        "GET",
        &format!("http://{}/healthz", server.addr),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    server.stop.send(()).unwrap();
    server.served.await.unwrap().unwrap();
}

#[tokio::test]
async fn half_sent_http_requests_do_not_hold_the_shutdown() {
    use tokio::io::AsyncWriteExt;
    let server = start(|_| None).await;
    // Sockets that sent part of a request line and headers, then nothing.
    let mut stuck = Vec::new();
    for _ in 0..20 {
        let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        socket
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        stuck.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop.send(()).unwrap();
    // The WebSocket deadline (none open here) plus the HTTP grace of 2 s, with room.
    let served = tokio::time::timeout(Duration::from_secs(8), server.served)
        .await
        .expect("the shutdown waited for half-sent requests");
    served.unwrap().unwrap();
    drop(stuck);
}

/// Reads until the server closes the socket; `None` if it is still open after `wait`.
async fn closed_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(wait, read_all).await.ok()?;
    Some(String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test]
async fn a_request_whose_headers_never_finish_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let mut config = common::config();
    config.limits.header_timeout = Duration::from_millis(300);
    let server = start_config(config, |_| None).await;
    let mut half = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: web")
        .await
        .unwrap();
    assert!(
        closed_within(&mut half, Duration::from_secs(3))
            .await
            .is_some(),
        "a half-sent request was still open 3 s after a 300 ms header timeout"
    );
    // A complete request is served as usual, and a WebSocket outlives the header timeout.
    let (status, _) = http(
        "GET",
        &format!("http://{}/healthz", server.addr),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let mut client = Client::open(&format!("ws://{}/ws?token={}", server.addr, token("7"))).await;
    assert_eq!(client.recv().await.kind(), "connected");
    tokio::time::sleep(Duration::from_millis(600)).await;
    client.ping_ok().await;
}

#[tokio::test]
async fn connections_past_the_caps_get_503_and_places_free_up() {
    let mut config = common::config();
    config.limits.max_connections_per_ip = 2;
    config.limits.max_connections = 3;
    let server = start_config(config, |_| None).await;
    let url = |user: &str| format!("ws://{}/ws?token={}", server.addr, token(user));
    let mut first = Client::open(&url("a")).await;
    assert_eq!(first.recv().await.kind(), "connected");
    let mut second = Client::open(&url("b")).await;
    assert_eq!(second.recv().await.kind(), "connected");
    // A third socket from 127.0.0.1: over the per-IP cap.
    let refused = Client::open_with(&url("c"), &[]).await.err().unwrap();
    assert!(refused.to_string().contains("503"), "{refused}");
    // From another loopback address: under the per-IP cap, and the third of three overall.
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = other.connect(server.addr).await.unwrap();
    let (mut third, _) = tokio_tungstenite::client_async(url("d"), stream)
        .await
        .unwrap();
    use futures_util::StreamExt;
    let connected = third.next().await.unwrap().unwrap();
    assert!(connected.to_text().unwrap().contains("connected"));
    // A fourth from yet another address: over the global cap.
    let mut fourth = tokio::net::TcpSocket::new_v4().unwrap();
    fourth.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut stream = fourth.connect(server.addr).await.unwrap();
    let answer = closed_within(&mut stream, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // A place frees up when a socket closes.
    first.close().await;
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(client) = Client::open_with(&url("a"), &[]).await {
            again = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = again.expect("a place freed up within 2.5 s");
    assert_eq!(again.recv().await.kind(), "connected");
    fourth = tokio::net::TcpSocket::new_v4().unwrap();
    drop(fourth);
}
