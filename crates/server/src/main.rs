//! The `tidings` binary: `tidings serve` runs a node, `tidings token` mints a test token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tidings_server::{Config, Tidings, mint_token};

#[derive(Parser)]
#[command(
    name = "tidings",
    version,
    about = "Real-time channels over WebSocket, with an HTTP API for back ends"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Tidings node.
    Serve(ServeArgs),
    /// Print an HS256 token for a user (for development and tests).
    Token(TokenArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8000].
    #[arg(long, env = "TIDINGS_BIND")]
    bind: Option<String>,
    /// TOML configuration file (see docs/configuration in the README).
    #[arg(long, env = "TIDINGS_CONFIG")]
    config: Option<PathBuf>,
    /// HS256 secret that verifies client tokens.
    #[arg(long, env = "TIDINGS_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// PEM public key (RSA or EC) that verifies RS256/ES256 client tokens.
    #[arg(long, env = "TIDINGS_JWT_PUBLIC_KEY")]
    jwt_public_key: Option<String>,
    /// Bearer key for the HTTP API.
    #[arg(long, env = "TIDINGS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Allowed browser origins, comma-separated (default: any).
    #[arg(long, env = "TIDINGS_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Option<Vec<String>>,
    /// Directory of the embedded SQLite database [default: ./tidings-data].
    #[arg(long, env = "TIDINGS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL (`postgres://...`, for several nodes) or SQLite (`sqlite://...`) URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Keep publications in memory only (lost on restart).
    #[arg(long)]
    ephemeral: bool,
    /// Development mode: make up any missing secrets (kept in the data directory so tokens
    /// survive restarts) and print a ready token and the URLs.
    #[arg(long)]
    dev: bool,
}

#[derive(Args)]
struct TokenArgs {
    /// The user id (`sub` claim).
    #[arg(long)]
    sub: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// The HS256 secret (the same as the server's).
    #[arg(long, env = "TIDINGS_JWT_SECRET", hide_env_values = true)]
    secret: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Token(args) => mint_token(&args.secret, &args.sub, args.ttl)
            .map(|token| println!("{token}"))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tidings: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Flags beat environment variables (clap merges those two), which beat the file, which
/// beats the defaults.
fn load_config(args: &ServeArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::from_toml_file(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(bind) = &args.bind {
        config.bind.clone_from(bind);
    }
    if args.jwt_secret.is_some() {
        config.jwt.secret.clone_from(&args.jwt_secret);
    }
    if args.jwt_public_key.is_some() {
        config
            .jwt
            .public_key_pem_file
            .clone_from(&args.jwt_public_key);
    }
    if args.api_key.is_some() {
        config.api_key.clone_from(&args.api_key);
    }
    if let Some(origins) = &args.allowed_origins {
        config.allowed_origins.clone_from(origins);
    }
    if let Some(dir) = &args.data_dir {
        config.storage.data_dir.clone_from(dir);
    }
    if args.database_url.is_some() {
        config.storage.database_url.clone_from(&args.database_url);
    }
    if args.ephemeral {
        config.storage.ephemeral = true;
    }
    Ok(config)
}

/// Secrets made up by `--dev`, kept so that tokens stay valid across restarts.
#[derive(serde::Serialize, serde::Deserialize)]
struct DevSecrets {
    jwt_secret: String,
    api_key: String,
}

fn dev_secrets(data_dir: &std::path::Path) -> Result<DevSecrets, String> {
    let path = data_dir.join("dev-secrets.json");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(secrets) = serde_json::from_str(&text)
    {
        return Ok(secrets);
    }
    let secrets = DevSecrets {
        jwt_secret: format!("{:032x}", rand::random::<u128>()),
        api_key: format!("{:032x}", rand::random::<u128>()),
    };
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let text = serde_json::to_string_pretty(&secrets).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(secrets)
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let mut config = load_config(&args)?;
    if args.dev
        && (config.jwt.secret.is_none() && config.jwt.public_key_pem_file.is_none()
            || config.api_key.is_none())
    {
        let secrets = dev_secrets(&config.storage.data_dir)?;
        config.jwt.secret.get_or_insert(secrets.jwt_secret);
        config.api_key.get_or_insert(secrets.api_key);
    }
    if config.jwt.secret.is_none() && config.jwt.public_key_pem_file.is_none() {
        return Err(
            "no JWT key: set TIDINGS_JWT_SECRET (or --jwt-public-key), or run with --dev"
                .to_owned(),
        );
    }
    let addr: SocketAddr = config
        .bind
        .parse()
        .map_err(|e| format!("invalid bind address {}: {e}", config.bind))?;
    let store = tidings_server::store::open(&config)
        .await
        .map_err(|e| format!("cannot open the publication store: {e}"))?;
    let storage = if config.storage.ephemeral {
        "memory (--ephemeral)".to_owned()
    } else if config.storage.database_url.is_some() {
        "database URL".to_owned()
    } else {
        format!("SQLite in {}", config.storage.data_dir.display())
    };
    tracing::info!(%storage, "publication store open");
    let tidings = Tidings::builder()
        .config(config)
        .store(store)
        .build()
        .map_err(|e| e.to_string())?;
    let listener = listen(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    if args.dev {
        print_dev_banner(&tidings, local);
    }
    tracing::info!(%local, "tidings listening");
    let app = tidings.router();
    let stopping = tidings.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            stopping.shutdown().await;
        })
        .await
        .map_err(|e| e.to_string())
}

/// A listener with a large accept backlog, so connection bursts are not refused.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

fn print_dev_banner(tidings: &Tidings, addr: SocketAddr) {
    let config = tidings.config();
    let secret = config.jwt.secret.clone().unwrap_or_default();
    let token = mint_token(&secret, "dev", 24 * 3600).unwrap_or_default();
    let api_key = config.api_key.clone().unwrap_or_default();
    println!(
        "\nTidings dev server on http://{addr}\n\n  \
         WebSocket (user \"dev\", valid 24 h):\n    ws://{addr}/ws?token={token}\n\n  \
         Try it:\n    python3 -m websockets 'ws://{addr}/ws?token={token}'\n    \
         then type {{\"type\":\"subscribe\",\"id\":1,\"data\":{{\"channel\":\"lobby\"}}}}\n\n  \
         HTTP API key: {api_key}\n    \
         curl -H 'Authorization: Bearer {api_key}' -H 'content-type: application/json' \\\n      \
         -d '{{\"channel\":\"lobby\",\"event\":{{\"type\":\"notification\",\"data\":{{\"message\":\"hi\"}}}}}}' \\\n      \
         http://{addr}/api/publish\n\n  \
         More tokens: TIDINGS_JWT_SECRET={secret} tidings token --sub alice\n  \
         (secrets are kept in {secrets_file})\n",
        secrets_file = config.storage.data_dir.join("dev-secrets.json").display()
    );
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
