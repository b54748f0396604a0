//! Test fixture: a real server on 127.0.0.1:0 and a small raw WebSocket client.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub
)]

#[macro_use]
pub mod db;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tidings_protocol::{ServerFrame, ServerMessage};
use tidings_server::{Config, Tidings, TidingsBuilder};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret";
pub const API_KEY: &str = "test-api-key";

pub struct TestServer {
    pub addr: SocketAddr,
    pub tidings: Tidings,
}

/// A config with the test secrets and short timers.
pub fn config() -> Config {
    let mut config = Config::default();
    config.jwt.secret = Some(SECRET.into());
    config.api_key = Some(API_KEY.into());
    config
}

pub async fn start() -> TestServer {
    start_with(Tidings::builder().config(config())).await
}

pub async fn start_config(config: Config) -> TestServer {
    start_with(Tidings::builder().config(config)).await
}

pub async fn start_with(builder: TidingsBuilder) -> TestServer {
    let tidings = builder.build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = tidings.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    TestServer { addr, tidings }
}

pub fn token(user: &str) -> String {
    tidings_server::mint_token(SECRET, user, 3600).unwrap()
}

impl TestServer {
    pub fn url(&self, user: &str) -> String {
        format!("ws://{}/ws?token={}", self.addr, token(user))
    }

    /// Connects as `user` and reads the `connected` frame.
    pub async fn connect(&self, user: &str) -> Client {
        let mut client = Client::open(&self.url(user)).await;
        let connected = client.recv().await;
        assert_eq!(connected.kind(), "connected", "{connected:?}");
        client
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl Client {
    pub async fn open(url: &str) -> Client {
        Self::open_with(url, &[]).await.unwrap()
    }

    pub async fn open_with(
        url: &str,
        headers: &[(&'static str, String)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, HeaderValue::from_str(value).unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Client { ws, next_id: 1 })
    }

    /// Sends a close frame (normal closure) without waiting for the server's.
    pub async fn close(&mut self) {
        self.ws.close(None).await.unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_owned())).await.unwrap();
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a request with a fresh id and returns the id.
    pub async fn request(&mut self, kind: &str, data: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let frame = if data.is_null() {
            json!({"type": kind, "id": id})
        } else {
            json!({"type": kind, "id": id, "data": data})
        };
        self.send_json(frame).await;
        id
    }

    /// Sends a request and returns the frame that answers it (skipping pushes).
    pub async fn call(&mut self, kind: &str, data: Value) -> ServerFrame {
        let id = self.request(kind, data).await;
        self.recv_until(|f| f.id == Some(id)).await
    }

    pub async fn subscribe(&mut self, channel: &str) -> ServerFrame {
        let reply = self.call("subscribe", json!({ "channel": channel })).await;
        assert_eq!(reply.kind(), "reply", "{reply:?}");
        reply
    }

    /// The next server frame (skipping WebSocket pings); panics on close or after 5 s.
    pub async fn recv(&mut self) -> ServerFrame {
        match self.next_frame(Duration::from_secs(5)).await {
            Ok(Some(frame)) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// `Ok(None)` on timeout, `Err` on close.
    pub async fn next_frame(&mut self, wait: Duration) -> Result<Option<ServerFrame>, Closed> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await;
            let message = match next {
                Err(_) => return Ok(None),
                Ok(None) => {
                    return Err(Closed {
                        code: 1006,
                        reason: String::new(),
                    });
                }
                Ok(Some(Err(e))) => {
                    return Err(Closed {
                        code: 1006,
                        reason: e.to_string(),
                    });
                }
                Ok(Some(Ok(m))) => m,
            };
            match message {
                Message::Text(text) => {
                    return Ok(Some(ServerFrame::decode(text.as_str()).unwrap()));
                }
                Message::Close(frame) => {
                    return Err(frame.map_or(
                        Closed {
                            code: 1005,
                            reason: String::new(),
                        },
                        |f| Closed {
                            code: u16::from(f.code),
                            reason: f.reason.to_string(),
                        },
                    ));
                }
                _ => continue,
            }
        }
    }

    pub async fn recv_until(
        &mut self,
        mut matches: impl FnMut(&ServerFrame) -> bool,
    ) -> ServerFrame {
        loop {
            let frame = self.recv().await;
            if matches(&frame) {
                return frame;
            }
        }
    }

    /// Asserts nothing arrives for `ms` milliseconds.
    pub async fn expect_silence(&mut self, ms: u64) {
        match self.next_frame(Duration::from_millis(ms)).await {
            Ok(None) => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn expect_close(&mut self) -> Closed {
        loop {
            match self.next_frame(Duration::from_secs(10)).await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("no close within 10 s"),
                Err(closed) => return closed,
            }
        }
    }

    pub async fn ping_ok(&mut self) {
        let pong = self.call("ping", Value::Null).await;
        assert_eq!(pong.kind(), "pong");
    }
}

/// The `message` body of a frame, or a panic.
pub fn message(frame: &ServerFrame) -> &tidings_protocol::messages::MessageBody {
    match &frame.message {
        ServerMessage::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The `error` body of a frame, or a panic.
pub fn error(frame: &ServerFrame) -> &tidings_protocol::messages::ErrorBody {
    match &frame.message {
        ServerMessage::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Decodes a frame as JSON for loose assertions.
pub fn as_json(frame: &ServerFrame) -> Value {
    serde_json::from_str(&frame.encode()).unwrap()
}

/// A minimal HTTP/1.1 client over a TcpStream, to avoid a client dependency in tests.
pub async fn http(
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = TcpStream::connect(host).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let status: u16 = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}
