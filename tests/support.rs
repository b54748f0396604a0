//! Helpers for the end-to-end tests: run the `tidings` binary as a child process, call its
//! HTTP API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The secret and API key every test node uses.
pub const SECRET: &str = "e2e-secret";
/// The API key every test node uses.
pub const API_KEY: &str = "e2e-api-key";

/// The `tidings` binary next to the test executable (built by `cargo test --workspace`),
/// or `TIDINGS_BIN`.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TIDINGS_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = dir.join("tidings");
    if !binary.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "tidings-server", "--bin", "tidings"])
            .status()
            .unwrap();
        assert!(status.success(), "cannot build the tidings binary");
    }
    binary
}

/// A free port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A running `tidings serve`, killed with SIGKILL when dropped.
pub struct Node {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Node {
    /// Starts `tidings serve --bind addr` with the given extra arguments and waits until it
    /// answers `/healthz`.
    pub async fn start(addr: SocketAddr, args: &[&str]) -> Node {
        Node::start_with_env(addr, args, &[]).await
    }

    /// [`Node::start`] with extra environment variables (`TIDINGS_*` settings).
    pub async fn start_with_env(addr: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> Node {
        let child = Command::new(binary())
            .args(["serve", "--bind", &addr.to_string()])
            .args(args)
            .envs(env.iter().copied())
            .env("TIDINGS_JWT_SECRET", SECRET)
            .env("TIDINGS_API_KEY", API_KEY)
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let node = Node { child, addr };
        for _ in 0..200 {
            if let Ok((200, _)) = http(addr, "GET", "/healthz", None).await {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the node on {addr} did not come up");
    }

    /// SIGKILL: no shutdown frame, no flush, nothing.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token for `user`.
pub fn token(user: &str) -> String {
    tidings_server::mint_token(SECRET, user, 3600).unwrap()
}

/// One HTTP/1.1 request with the API key; `Err` when the node is unreachable.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let body = body.map(ToString::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A PostgreSQL database of one test's own on `DATABASE_URL`'s server, dropped (with
/// `drop_database`) at the end; `None` when `TIDINGS_TEST_SKIP_POSTGRES` is set.
pub struct FreshDatabase {
    /// Its URL, for `--database-url`.
    pub url: String,
    name: String,
    admin: sqlx::PgConnection,
}

impl FreshDatabase {
    /// Creates a database named `{prefix}_{random}`.
    pub async fn create(prefix: &str) -> Option<FreshDatabase> {
        use sqlx::Connection;
        if std::env::var_os("TIDINGS_TEST_SKIP_POSTGRES").is_some() {
            return None;
        }
        let admin_url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let name = format!("{prefix}_{:016x}", rand::random::<u64>());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        Some(FreshDatabase {
            url: format!("{base}/{name}"),
            name,
            admin,
        })
    }

    /// Drops the database, closing whatever is still connected to it.
    pub async fn drop_database(mut self) {
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&mut self.admin)
            .await
            .unwrap();
    }
}
