//! The socketioxide peer of the Tidings benchmarks: the same behaviour as the Tidings bench
//! setup. HS256 JWT verified on connect (`auth: {token}`), a personal room `user:{sub}`,
//! `join` (ack), `publish` to a room (ack after the broadcast), `echo` (ack with the data).
//!
//! Environment: `BIND` (127.0.0.1:9001), `JWT_SECRET`, `PING_INTERVAL_MS` (25000),
//! `PING_TIMEOUT_MS` (20000).

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::handler::ConnectHandler;

#[derive(Deserialize)]
struct Auth {
    token: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

#[derive(Clone)]
struct User(String);

#[derive(Debug)]
struct AuthError;

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unauthenticated")
    }
}

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:9001".into());
    let secret = std::env::var("JWT_SECRET").map_err(|_| "JWT_SECRET is required")?;
    let key: &'static jsonwebtoken::DecodingKey = Box::leak(Box::new(
        jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
    ));
    let validation: &'static jsonwebtoken::Validation = Box::leak(Box::new(
        jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
    ));

    let (layer, io) = SocketIo::builder()
        .ping_interval(env_ms("PING_INTERVAL_MS", 25_000))
        .ping_timeout(env_ms("PING_TIMEOUT_MS", 20_000))
        .build_layer();

    let authenticate = move |s: SocketRef, Data(auth): Data<Auth>| async move {
        let data =
            jsonwebtoken::decode::<Claims>(&auth.token, key, validation).map_err(|_| AuthError)?;
        s.extensions.insert(User(data.claims.sub));
        Ok::<(), AuthError>(())
    };

    let on_connect = |s: SocketRef, io: SocketIo| async move {
        if let Some(User(sub)) = s.extensions.get::<User>() {
            s.join(format!("user:{sub}"));
        }
        s.on(
            "join",
            |s: SocketRef, Data(room): Data<String>, ack: AckSender| async move {
                s.join(room);
                let _ = ack.send(&"ok");
            },
        );
        s.on(
            "publish",
            move |Data((room, payload)): Data<(String, Value)>, ack: AckSender| {
                let io = io.clone();
                async move {
                    let _ = io.to(room).emit("message", &payload).await;
                    let _ = ack.send(&"ok");
                }
            },
        );
        s.on(
            "echo",
            |Data(payload): Data<Value>, ack: AckSender| async move {
                let _ = ack.send(&payload);
            },
        );
    };
    io.ns("/", on_connect.with(authenticate));

    let addr: std::net::SocketAddr = bind.parse()?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    eprintln!("socketioxide peer listening on {addr}");
    let app = axum::Router::new().layer(layer);
    axum::serve(listener, app).await?;
    Ok(())
}
