//! Start-up shared by the `tidings` binary, the examples and embedders: a listener for
//! connection bursts, and serving with a graceful shutdown that tells clients first.
//!
//! Shutdown order matters: on the signal, [`Tidings::shutdown`] runs while axum still
//! serves, so every client gets a `shutdown` frame (with a jittered reconnect delay) and a
//! 1012 close, and the node waits up to `shutdown_deadline` for them to leave; new upgrades
//! are refused with 503 meanwhile. Only then does axum stop accepting and finish the
//! plain HTTP requests in flight.

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use axum::Router;
use tokio::net::{TcpListener, TcpSocket};

use crate::Tidings;

/// A boxed, sendable future, as [`Serve`] stores its shutdown signal and returns its run.
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How many connections may wait to be accepted: enough for a burst of reconnects after a
/// restart (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: u32 = 4096;

/// How long plain HTTP requests may still run once the WebSocket clients are gone.
const HTTP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves `tidings` on `listener` until ctrl-c or SIGTERM, then shuts down gracefully.
///
/// By default it serves [`Tidings::router`] (`/ws`, the HTTP API under `/api`, `/healthz`,
/// `/metrics`); [`Serve::with_router`] serves your own app instead and
/// [`Serve::with_shutdown`] replaces the signals with any future. Await the result: it
/// resolves once the clients are gone and axum has stopped, with axum's I/O error if
/// serving failed. WebSocket clients get `shutdown_deadline` to leave; plain HTTP requests
/// still open 2 s after that (a half-sent request, a client that never reads) are dropped,
/// so a shutdown always ends.
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use tidings_server::Tidings;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let tidings = Tidings::builder().jwt_secret("change-me").build()?;
/// let app = Router::new()
///     .route("/", get(|| async { "my app" }))
///     .route("/realtime/ws", tidings.ws_handler());
///
/// let listener = tidings_server::listen("127.0.0.1:8000".parse()?)?;
/// println!("listening on {}", listener.local_addr()?);
/// tidings_server::serve(listener, tidings).with_router(app).await?;
/// # Ok(()) }
/// ```
pub fn serve(listener: TcpListener, tidings: Tidings) -> Serve {
    Serve {
        listener,
        tidings,
        app: None,
        signal: None,
    }
}

/// A node being served; from [`serve`]. Configure it, then `.await` it.
#[must_use = "nothing is served until the `Serve` is awaited"]
pub struct Serve {
    listener: TcpListener,
    tidings: Tidings,
    /// The app to serve; `None` serves `tidings.router()`.
    app: Option<Router>,
    /// When to shut down; `None` waits for ctrl-c or SIGTERM.
    signal: Option<BoxFuture<()>>,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("custom_router", &self.app.is_some())
            .field("custom_shutdown", &self.signal.is_some())
            .finish_non_exhaustive()
    }
}

impl Serve {
    /// Serves `app` instead of `tidings.router()`: your own routes, with Tidings mounted
    /// where you chose (`.merge(tidings.router())`, `.route("/rt", tidings.ws_handler())`,
    /// or routes calling [`Tidings::accept`]).
    pub fn with_router(mut self, app: Router) -> Self {
        self.app = Some(app);
        self
    }

    /// Shuts down when `signal` completes instead of on ctrl-c or SIGTERM (combine them
    /// with [`shutdown_signal`] if you want both).
    pub fn with_shutdown(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.signal = Some(Box::pin(signal));
        self
    }
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = BoxFuture<io::Result<()>>;

    fn into_future(self) -> Self::IntoFuture {
        let Serve {
            listener,
            tidings,
            app,
            signal,
        } = self;
        let app = app.unwrap_or_else(|| tidings.router());
        let signal = signal.unwrap_or_else(|| Box::pin(shutdown_signal()));
        Box::pin(async move {
            let (stopped, shut_down) = tokio::sync::oneshot::channel::<()>();
            let serving = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    signal.await;
                    // WebSocket clients are told and closed within the shutdown deadline.
                    tidings.shutdown().await;
                    let _ = stopped.send(());
                })
                .into_future();
            // An HTTP request that never completes (a half-sent request line, a client that
            // never reads) would hold the graceful shutdown forever: give it a moment after
            // the WebSocket clients are gone, then stop whatever is left.
            let deadline = async {
                if shut_down.await.is_ok() {
                    tokio::time::sleep(HTTP_GRACE).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                served = serving => served,
                () = deadline => {
                    tracing::warn!("HTTP connections still open after the shutdown deadline: closed");
                    Ok(())
                }
            }
        })
    }
}

/// A listener on `addr` ready for many connections: a large accept backlog (so bursts of
/// connects are not refused), `SO_REUSEADDR` (so a restart can bind at once) and
/// `TCP_NODELAY` (small frames leave without waiting).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Completes on ctrl-c or, on Unix, SIGTERM (what container runtimes send). A signal whose
/// handler cannot be installed never fires, rather than shutting down at once.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
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
    tracing::info!("shutdown signal received");
}
