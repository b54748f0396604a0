//! The browser dashboard demo: an axum app that embeds a Tidings node and serves the page
//! in `examples/browser-dashboard/web` (built by Vite, using the packed `@tidings/client`).
//!
//! - `/ws`, `/api/*`, `/healthz`, `/metrics`: the Tidings node (`tidings.router()`).
//! - `GET /demo/token?user=alice`: a JWT for any user name (a demo: a real app mints tokens
//!   for the user its own session says).
//! - `POST /demo/jobs` `{"user", "file"?, "fail"?}`: a simulated upload and analysis job
//!   that pushes `upload_progress`, `analysis_status` and `notification` events to
//!   `user:{user}`.
//! - everything else: the built page (`index.html` for paths without an extension).
//!
//! Publications are kept in SQLite in the data directory, with the secrets, so history and
//! tokens survive a restart; with `--database-url postgres://… --broker redis://…` several
//! demo servers share them (`scripts/cluster --dashboard` runs three behind nginx).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::{Deserialize, Serialize};
use tidings_protocol::{AnalysisStatus, Level, Notification, UploadProgress};
use tidings_server::{Config, Tidings, mint_token};

/// The demo server.
#[derive(Parser)]
#[command(
    name = "browser-dashboard",
    about = "The Tidings browser dashboard demo"
)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, env = "DASHBOARD_BIND", default_value = "127.0.0.1:8080")]
    bind: String,
    /// Where the SQLite database and the demo's secrets live [default:
    /// examples/browser-dashboard/data].
    #[arg(long, env = "DASHBOARD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The built page [default: examples/browser-dashboard/web/dist].
    #[arg(long, env = "DASHBOARD_STATIC_DIR")]
    static_dir: Option<PathBuf>,
    /// Milliseconds between two steps of a simulated job.
    #[arg(long, default_value_t = 150)]
    job_step_ms: u64,
    /// Keep publications in this PostgreSQL database instead of SQLite (several demo
    /// servers: see `scripts/cluster --dashboard`).
    #[arg(long, env = "DASHBOARD_DATABASE_URL")]
    database_url: Option<String>,
    /// Link this server to the others through Redis or NATS (`redis://…`, `nats://…`);
    /// needs `--database-url`.
    #[arg(long, env = "DASHBOARD_BROKER")]
    broker: Option<String>,
}

/// Secrets made up on first start and kept in the data directory.
#[derive(Serialize, Deserialize)]
struct Secrets {
    jwt_secret: String,
    api_key: String,
}

#[derive(Clone)]
struct App {
    tidings: Tidings,
    secret: Arc<str>,
    static_dir: Arc<Path>,
    jobs: Arc<AtomicU64>,
    step: Duration,
}

type Failure = (StatusCode, String);

fn bad_request(message: impl Into<String>) -> Failure {
    (StatusCode::BAD_REQUEST, message.into())
}

fn internal(error: impl std::fmt::Display) -> Failure {
    (StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("browser-dashboard: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data_dir = args.data_dir.unwrap_or_else(|| here.join("../data"));
    let secrets = secrets(&data_dir)?;
    let mut config = Config::default();
    config.storage.data_dir.clone_from(&data_dir);
    config.jwt.secret = Some(secrets.jwt_secret.clone());
    config.api_key = Some(secrets.api_key.clone());
    // Restarts are part of the demo: clients come back within half a second.
    config.shutdown_reconnect_spread = Duration::from_millis(500);
    config.shutdown_deadline = Duration::from_secs(2);
    // Several demo servers behind a load balancer share PostgreSQL and a broker; the
    // builder opens the broker the configuration names.
    config.storage.database_url = args.database_url;
    config.broker = args.broker;
    let store = tidings_server::store::open(&config)
        .await
        .map_err(|e| format!("cannot open the publication store: {e}"))?;
    let tidings = Tidings::builder()
        .config(config)
        .store(store)
        // Every user may open every ticket here; ask your database in a real app. The
        // built-in policy still keeps `user:{id}` channels to their own user.
        .authorize(|request| async move { !request.channel.starts_with("admin:") })
        .build()
        .map_err(|e| e.to_string())?;
    let static_dir = args.static_dir.unwrap_or_else(|| here.join("../web/dist"));
    let app = App {
        tidings: tidings.clone(),
        secret: secrets.jwt_secret.into(),
        static_dir: static_dir.into(),
        jobs: Arc::new(AtomicU64::new(0)),
        step: Duration::from_millis(args.job_step_ms),
    };
    let router = Router::new()
        .route("/demo/token", get(token))
        .route("/demo/jobs", post(start_job))
        .fallback(get(static_file))
        .with_state(app.clone())
        .merge(tidings.router());

    let addr: SocketAddr = args
        .bind
        .parse()
        .map_err(|e| format!("invalid bind address {}: {e}", args.bind))?;
    let listener = listen(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    if !app.static_dir.join("index.html").is_file() {
        tracing::warn!(
            dir = %app.static_dir.display(),
            "no built page: run examples/browser-dashboard/build.sh first"
        );
    }
    println!(
        "Tidings dashboard demo on http://{local}\n  \
         open http://{local}/?user=alice&ticket=42 and http://{local}/?user=bob&ticket=42\n  \
         HTTP API key: {key}",
        key = secrets.api_key
    );
    let stopping = tidings.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            tidings_server::shutdown_signal().await;
            stopping.shutdown().await;
        })
        .await
        .map_err(|e| e.to_string())
}

/// A listener that can take over the port of a server that just stopped.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn secrets(data_dir: &Path) -> Result<Secrets, String> {
    let path = data_dir.join("demo-secrets.json");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(secrets) = serde_json::from_str(&text)
    {
        return Ok(secrets);
    }
    let secrets = Secrets {
        jwt_secret: format!("{:032x}", rand::random::<u128>()),
        api_key: format!("{:032x}", rand::random::<u128>()),
    };
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let text = serde_json::to_string_pretty(&secrets).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(secrets)
}

/// User names the demo accepts: 1 to 32 of `a-z`, `0-9`, `_`, `-`.
fn check_user(user: &str) -> Result<(), Failure> {
    let valid = !user.is_empty()
        && user.len() <= 32
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(bad_request("user: 1 to 32 of a-z, 0-9, _ and -"))
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    user: String,
}

#[derive(Serialize)]
struct TokenAnswer {
    user: String,
    token: String,
}

/// `GET /demo/token?user=alice`: a token valid for an hour.
async fn token(
    State(app): State<App>,
    Query(query): Query<TokenQuery>,
) -> Result<Json<TokenAnswer>, Failure> {
    check_user(&query.user)?;
    let token = mint_token(&app.secret, &query.user, 3600).map_err(internal)?;
    Ok(Json(TokenAnswer {
        user: query.user,
        token,
    }))
}

#[derive(Deserialize)]
struct JobRequest {
    user: String,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    fail: bool,
}

#[derive(Serialize)]
struct JobStarted {
    id: String,
    channel: String,
}

/// `POST /demo/jobs`: starts a simulated upload and analysis for a user.
async fn start_job(
    State(app): State<App>,
    Json(request): Json<JobRequest>,
) -> Result<Json<JobStarted>, Failure> {
    check_user(&request.user)?;
    let number = app.jobs.fetch_add(1, Ordering::Relaxed) + 1;
    let id = format!("job-{number}-{:04x}", rand::random::<u16>());
    let file = request.file.unwrap_or_else(|| "report.pdf".to_owned());
    let channel = tidings_protocol::user_channel(&request.user);
    tokio::spawn(run_job(app, request.user, id.clone(), file, request.fail));
    Ok(Json(JobStarted { id, channel }))
}

/// The job: an upload in ten steps, then an analysis in four, each step pushed to the user.
async fn run_job(app: App, user: String, id: String, file: String, fail: bool) {
    let channel = tidings_protocol::user_channel(&user);
    let tidings = &app.tidings;
    let note = |title: &str, message: String, level: Level| Notification {
        title: Some(title.to_owned()),
        message,
        level,
        data: Some(serde_json::json!({ "job": id })),
    };
    let mut outcome = tidings
        .notify_user(
            &user,
            &note("Upload started", format!("Uploading {file}"), Level::Info),
        )
        .await
        .map(drop);
    for step in 0..=10_u32 {
        if outcome.is_err() {
            break;
        }
        let progress = UploadProgress {
            id: id.clone(),
            progress: f64::from(step * 10),
            status: if step == 10 { "done" } else { "uploading" }.to_owned(),
        };
        outcome = tidings.publish(&channel, &progress).await.map(drop);
        tokio::time::sleep(app.step).await;
    }
    for step in 0..=4_u32 {
        if outcome.is_err() {
            break;
        }
        let progress = f64::from(step * 25);
        let mut status = AnalysisStatus {
            id: id.clone(),
            status: match step {
                0 => "started",
                4 => "completed",
                _ => "running",
            }
            .to_owned(),
            progress,
            result: None,
            error: None,
            retryable: None,
        };
        if fail && step == 2 {
            status.status = "failed".to_owned();
            status.error = Some("the analyser ran out of memory".to_owned());
            status.retryable = Some(true);
            outcome = tidings.publish(&channel, &status).await.map(drop);
            if outcome.is_ok() {
                outcome = tidings
                    .notify_user(
                        &user,
                        &note(
                            "Analysis failed",
                            format!("{file}: the analyser ran out of memory"),
                            Level::Error,
                        ),
                    )
                    .await
                    .map(drop);
            }
            break;
        }
        if step == 4 {
            status.result = Some(serde_json::json!({ "pages": 12, "findings": 3 }));
        }
        outcome = tidings.publish(&channel, &status).await.map(drop);
        if step == 4 && outcome.is_ok() {
            outcome = tidings
                .notify_user(
                    &user,
                    &note(
                        "Analysis complete",
                        format!("{file}: 12 pages, 3 findings"),
                        Level::Success,
                    ),
                )
                .await
                .map(drop);
        }
        tokio::time::sleep(app.step * 2).await;
    }
    if let Err(error) = outcome {
        tracing::warn!(%error, job = %id, "job stopped: publish failed");
    }
}

/// The built page: files by path, `index.html` for `/` and for paths without an extension.
async fn static_file(State(app): State<App>, uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path
        .split('/')
        .any(|part| part == ".." || part.starts_with('.') || part.contains('\\'))
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    let relative = if path.is_empty() { "index.html" } else { path };
    let file = app.static_dir.join(relative);
    match tokio::fs::read(&file).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type(&file))], bytes).into_response(),
        Err(_) if Path::new(relative).extension().is_none() => {
            let index = app.static_dir.join("index.html");
            match tokio::fs::read(&index).await {
                Ok(bytes) => {
                    ([(header::CONTENT_TYPE, content_type(&index))], bytes).into_response()
                }
                Err(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the page is not built: run examples/browser-dashboard/build.sh",
                )
                    .into_response(),
            }
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}
