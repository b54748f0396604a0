//! The servers under test: Tidings (its default durable SQLite store, and as diagnostic rows
//! `--ephemeral` and PostgreSQL), its two peers and the ceilings, started pinned to core 0,
//! with their RSS and CPU time read from /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use crate::Res;
use crate::client::{Proto, Target};

/// Every server the bench runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// The `tidings` binary as a user runs it: durable SQLite in a fresh data directory.
    Tidings,
    /// `tidings serve --database-url postgres://…`, a fresh database per start.
    TidingsPostgres,
    /// `tidings serve --ephemeral`: publications in memory only. A diagnostic row.
    TidingsEphemeral,
    /// Tidings (SQLite) again, with every client connecting as one user id: no presence traffic
    /// (`user_joined`/`user_left` go to every other member, O(N²) frames for N users joining
    /// one channel). A diagnostic row, not a peer.
    TidingsOneUser,
    Socketioxide,
    SocketIo,
    RawNaive,
    RawBatch,
    BareWs,
}

impl Kind {
    pub(crate) fn proto(self) -> Proto {
        match self {
            Kind::Tidings
            | Kind::TidingsPostgres
            | Kind::TidingsEphemeral
            | Kind::TidingsOneUser => Proto::Tidings,
            Kind::Socketioxide | Kind::SocketIo => Proto::SocketIo,
            Kind::RawNaive | Kind::RawBatch => Proto::Raw,
            Kind::BareWs => Proto::Ws,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Tidings => "Tidings (SQLite, the default)",
            Kind::TidingsPostgres => "Tidings, PostgreSQL",
            Kind::TidingsEphemeral => "Tidings --ephemeral",
            Kind::TidingsOneUser => "Tidings, one user id (no presence)",
            Kind::Socketioxide => "socketioxide",
            Kind::SocketIo => "Socket.IO (Node)",
            Kind::RawNaive => "raw TCP, one write per delivery",
            Kind::RawBatch => "raw TCP, batched writes",
            Kind::BareWs => "bare tokio-tungstenite",
        }
    }
}

/// Where the server programs are.
#[derive(Clone, Debug)]
pub(crate) struct Paths {
    pub(crate) tidings: PathBuf,
    pub(crate) sio_peer: PathBuf,
    pub(crate) node_peer: PathBuf,
    pub(crate) ceiling: PathBuf,
    pub(crate) work: PathBuf,
}

/// Settings every server gets alike.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Common {
    pub(crate) heartbeat_ms: u64,
    pub(crate) heartbeat_timeout_ms: u64,
    pub(crate) server_core: usize,
    /// Tidings keeps the backlog scenario's channels whole (only that scenario sets it, so
    /// that every other one runs the default retention).
    pub(crate) keep_backlog: bool,
}

pub(crate) const SECRET: &str = "tidings-bench-secret-0123456789abcdef";
/// The Tidings HTTP API key (`Authorization: Bearer ...`).
pub(crate) const API_KEY: &str = "bench-api-key";

/// A running server.
pub(crate) struct Server {
    pub(crate) kind: Kind,
    pub(crate) addr: SocketAddr,
    pid: u32,
    child: Child,
    /// The store made for this start, removed by [`Server::stop`].
    store: FreshStore,
}

/// What a Tidings server was given to store publications in.
enum FreshStore {
    None,
    /// A new SQLite data directory.
    DataDir(PathBuf),
    /// A new PostgreSQL database, dropped afterwards.
    Database(String),
}

/// The PostgreSQL server the `tidings_postgres` row uses (`DATABASE_URL`, as the tests).
pub(crate) fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Databases this process creates are named `tidings_bench_<pid>_<n>`.
fn database_prefix() -> String {
    format!("tidings_bench_{}_", std::process::id())
}

/// Creates a fresh database; returns its name and URL.
pub(crate) async fn create_database() -> Res<(String, String)> {
    use sqlx::Connection;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("{}{n}", database_prefix());
    let admin = admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .map_err(|e| format!("PostgreSQL at {admin}: {e}"))?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    let _ = conn.close().await;
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Ok((name.clone(), format!("{base}/{name}")))
}

/// Drops the databases this process created and left behind (a run that failed midway).
pub(crate) async fn drop_databases() {
    use sqlx::Connection;
    let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await else {
        return;
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)")
            .bind(database_prefix())
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    for name in names {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
    let _ = conn.close().await;
}

/// Drops one database this process created (forcing its connections closed).
pub(crate) async fn drop_database(name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

/// CPU seconds of the PostgreSQL backends serving `database` now (backends that ended are
/// not counted).
pub(crate) fn backends_cpu(database: &str) -> f64 {
    backend_pids(database)
        .into_iter()
        .map(cpu_seconds)
        .filter(|s| s.is_finite())
        .sum()
}

/// PostgreSQL backend processes serving `database` (their titles name it), for their CPU.
fn backend_pids(database: &str) -> Vec<u32> {
    let needle = format!(" {database} ");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let title = std::fs::read(entry.path().join("cmdline")).ok()?;
        let title = String::from_utf8_lossy(&title);
        (title.starts_with("postgres:") && title.contains(&needle)).then_some(pid)
    })
    .collect()
}

fn free_port() -> Res<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(clock_ticks);
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may hold spaces) start at ") ".
    let Some(after) = stat.rfind(") ").and_then(|i| stat.get(i + 2..)) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let utime: f64 = fields
        .get(11)
        .and_then(|f| f.parse().ok())
        .unwrap_or(f64::NAN);
    let stime: f64 = fields
        .get(12)
        .and_then(|f| f.parse().ok())
        .unwrap_or(f64::NAN);
    (utime + stime) / ticks
}

/// Resident set size of a process, in bytes.
pub(crate) fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

impl Server {
    /// Starts `kind` pinned to the server core and waits until it accepts connections.
    pub(crate) async fn start(kind: Kind, paths: &Paths, common: Common) -> Res<Server> {
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let core = common.server_core.to_string();
        let mut command = Command::new("taskset");
        command.arg("-c").arg(&core);
        let mut store = FreshStore::None;
        match kind {
            Kind::Tidings
            | Kind::TidingsPostgres
            | Kind::TidingsEphemeral
            | Kind::TidingsOneUser => {
                store = tidings_command(&mut command, kind, paths, common, addr).await?;
            }
            Kind::Socketioxide | Kind::SocketIo => {
                if kind == Kind::Socketioxide {
                    command.arg(&paths.sio_peer);
                } else {
                    command.arg("node").arg(&paths.node_peer);
                }
                command
                    .env("BIND", addr.to_string())
                    .env("JWT_SECRET", SECRET)
                    .env("PING_INTERVAL_MS", common.heartbeat_ms.to_string())
                    .env("PING_TIMEOUT_MS", common.heartbeat_timeout_ms.to_string())
                    .env("NODE_ENV", "production");
            }
            Kind::RawNaive | Kind::RawBatch | Kind::BareWs => {
                let mode = match kind {
                    Kind::RawNaive => "naive",
                    Kind::RawBatch => "batch",
                    _ => "ws",
                };
                command
                    .arg(&paths.ceiling)
                    .arg(mode)
                    .arg("--bind")
                    .arg(addr.to_string());
            }
        }
        Server::spawn(
            command,
            kind,
            addr,
            store,
            &paths.work.join(format!("{kind:?}.log")),
        )
        .await
    }

    /// Starts one node of several (the cluster scenario): `tidings serve` pinned to the
    /// server core on the PostgreSQL database `database_url` (made and dropped by the
    /// caller, shared by the nodes), with `broker` (its URL and this cluster's
    /// `broker_prefix`) or none (one node). Its CPU ([`Server::own_cpu`]) is the node's
    /// alone; the caller reads the database's backends.
    pub(crate) async fn start_node(
        name: &str,
        paths: &Paths,
        common: Common,
        database_url: &str,
        broker: Option<(&str, &str)>,
    ) -> Res<Server> {
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut toml = String::new();
        if let Some((_, prefix)) = broker {
            // Top-level keys come before the tables of tidings_config.
            toml.push_str(&format!(
                "# This run's own broker channel names: runs never hear each other.\n\
                 broker_prefix = \"{prefix}\"\n"
            ));
        }
        toml.push_str(&tidings_config(common));
        let config = paths.work.join(format!("tidings-{name}.toml"));
        std::fs::write(&config, toml)?;
        let mut command = Command::new("taskset");
        command
            .arg("-c")
            .arg(common.server_core.to_string())
            .arg(&paths.tidings)
            .arg("serve")
            .arg("--bind")
            .arg(addr.to_string())
            .arg("--config")
            .arg(&config)
            .arg("--database-url")
            .arg(database_url)
            .env_remove("DATABASE_URL")
            .env_remove("TIDINGS_DATA_DIR")
            .env_remove("TIDINGS_BROKER")
            .env_remove("TIDINGS_BROKER_PREFIX")
            .env("TIDINGS_JWT_SECRET", SECRET)
            .env("TIDINGS_API_KEY", API_KEY)
            .env("RUST_LOG", "warn");
        if let Some((url, _)) = broker {
            command.arg("--broker").arg(url);
        }
        let log = paths.work.join(format!("{name}.log"));
        Server::spawn(command, Kind::TidingsPostgres, addr, FreshStore::None, &log).await
    }

    async fn spawn(
        mut command: Command,
        kind: Kind,
        addr: SocketAddr,
        store: FreshStore,
        log: &Path,
    ) -> Res<Server> {
        let log = std::fs::File::create(log)?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = command.spawn()?;
        let pid = child.id().ok_or("the server exited at once")?;
        let mut server = Server {
            kind,
            addr,
            pid,
            child,
            store,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Res<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("{} exited: {status}", self.kind.label()).into());
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("{} did not start listening", self.kind.label()).into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn target(&self) -> Target {
        Target {
            proto: self.kind.proto(),
            addr: self.addr,
            secret: SECRET.into(),
            one_user: self.kind == Kind::TidingsOneUser,
        }
    }

    pub(crate) fn rss(&self) -> u64 {
        rss_bytes(self.pid)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// CPU seconds of the server process alone.
    pub(crate) fn own_cpu(&self) -> f64 {
        cpu_seconds(self.pid)
    }

    /// CPU seconds of the server, and of the PostgreSQL backends serving its database (they
    /// do its storage work; backends that ended meanwhile are not counted).
    pub(crate) fn cpu(&self) -> f64 {
        let own = cpu_seconds(self.pid);
        match &self.store {
            FreshStore::Database(name) => own + backends_cpu(name),
            _ => own,
        }
    }

    /// Stops the server (SIGKILL: nothing of its state matters after a run), removes the
    /// store made for it and flushes the disk.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
        // Let the kernel release the listening socket and the connections.
        tokio::time::sleep(Duration::from_millis(300)).await;
        match &self.store {
            FreshStore::DataDir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            FreshStore::Database(name) => drop_database(name).await,
            FreshStore::None => {}
        }
        // Write back what this server (and PostgreSQL, dropping its database) left dirty, so
        // that the next server's fsyncs do not wait behind it.
        let _ = Command::new("sync").status().await;
    }
}

/// Adds the `tidings serve` command line of `kind` to `command`, with a fresh store.
async fn tidings_command(
    command: &mut Command,
    kind: Kind,
    paths: &Paths,
    common: Common,
    addr: SocketAddr,
) -> Res<FreshStore> {
    static STARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let config = paths.work.join("tidings-bench.toml");
    std::fs::write(&config, tidings_config(common))?;
    command
        .arg(&paths.tidings)
        .arg("serve")
        .arg("--bind")
        .arg(addr.to_string())
        .arg("--config")
        .arg(&config)
        .env_remove("DATABASE_URL")
        .env_remove("TIDINGS_DATA_DIR")
        .env("TIDINGS_JWT_SECRET", SECRET)
        .env("TIDINGS_API_KEY", API_KEY)
        .env("RUST_LOG", "warn");
    Ok(match kind {
        Kind::TidingsEphemeral => {
            command.arg("--ephemeral");
            FreshStore::None
        }
        Kind::TidingsPostgres => {
            let (name, url) = create_database().await?;
            command.arg("--database-url").arg(url);
            FreshStore::Database(name)
        }
        _ => {
            // The default store, in a directory of its own per start.
            let dir = paths.work.join(format!("data-{n}"));
            command.arg("--data-dir").arg(&dir);
            FreshStore::DataDir(dir)
        }
    })
}

/// The TOML the bench gives every Tidings row; everything not named is the binary's default.
fn tidings_config(common: Common) -> String {
    let mut toml = format!(
        "# Written by the bench. Anything not set here is the tidings binary's default.\n\
         # Client rate limits raised so that the load generator is never throttled, and no\n\
         # cap on connections per user (the one-user diagnostic row is one user).\n\
         heartbeat = {}\nheartbeat_timeout = {}\n\n\
         [limits]\nrate_per_second = 10000000\nrate_burst = 10000000\n\
         rate_violations_before_close = 1000000\nmax_connections_per_user = 0\n",
        common.heartbeat_ms, common.heartbeat_timeout_ms
    );
    if common.keep_backlog {
        // The default keeps 1,000 publications per channel.
        toml.push_str(&format!(
            "\n# The backlog scenario: its channel and the personal channels keep it whole.\n\
             [[channels]]\npattern = \"{BACKLOG_PREFIX}*\"\nhistory_size = {BACKLOG_HISTORY}\n\n\
             [[channels]]\npattern = \"user:*\"\nhistory_size = {BACKLOG_HISTORY}\n"
        ));
    }
    toml
}

/// Channels of the backlog scenario start with this.
pub(crate) const BACKLOG_PREFIX: &str = "backlog:";
/// Publications the backlog scenario's channels keep.
const BACKLOG_HISTORY: usize = 1_000_000;

/// Versions of what is measured, for the report.
pub(crate) fn versions(paths: &Paths) -> Vec<(String, String)> {
    let run = |program: &str, args: &[&str]| -> String {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let lock_version = |lock: &Path, name: &str| -> String {
        let Ok(text) = std::fs::read_to_string(lock) else {
            return "unknown".to_owned();
        };
        let needle = format!("name = \"{name}\"\nversion = \"");
        text.find(&needle)
            .and_then(|i| text.get(i + needle.len()..))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("unknown")
            .to_owned()
    };
    let node_module = |name: &str| -> String {
        let dir = paths.node_peer.parent().unwrap_or(Path::new("."));
        std::fs::read_to_string(dir.join("node_modules").join(name).join("package.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("version").and_then(|v| v.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let sio_lock = paths
        .sio_peer
        .ancestors()
        .find(|p| p.join("Cargo.lock").exists())
        .map(|p| p.join("Cargo.lock"))
        .unwrap_or_default();
    vec![
        (
            "tidings".into(),
            run(&paths.tidings.to_string_lossy(), &["--version"]),
        ),
        (
            "socketioxide".into(),
            lock_version(&sio_lock, "socketioxide"),
        ),
        ("socket.io".into(), node_module("socket.io")),
        ("node".into(), run("node", &["--version"])),
        (
            "postgresql".into(),
            run("psql", &[&admin_url(), "-tAc", "SHOW server_version"]),
        ),
        ("rustc".into(), run("rustc", &["--version"])),
        ("kernel".into(), run("uname", &["-r"])),
    ]
}

/// A short description of the machine.
pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{cpu}; CPUs online {online} (this process may use {cores}); {:.1} GiB RAM; open files per process: 20,000",
        mem_kb as f64 / 1024.0 / 1024.0
    )
}
