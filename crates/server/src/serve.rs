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

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use dashmap::DashMap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

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
            let limits = &tidings.config().limits;
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // A request's headers must arrive within the timeout: half-sent requests do
            // not hold sockets (axum::serve gives hyper no timer, so it has none).
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let acceptor = Acceptor {
                listener,
                app,
                builder,
                gate: Arc::new(Gate::new(
                    limits.max_connections,
                    limits.max_connections_per_ip,
                )),
                graceful: GracefulShutdown::new(),
            };
            acceptor.accept_until(signal).await;
            // WebSocket clients are told and closed within the shutdown deadline; new
            // upgrades meanwhile get 503 from Tidings, so the listener stays open.
            acceptor.accept_until(tidings.shutdown()).await;
            let Acceptor {
                listener, graceful, ..
            } = acceptor;
            drop(listener);
            // An HTTP request that never completes (a client that never reads) would hold
            // the shutdown forever: give the rest a moment, then stop whatever is left.
            if tokio::time::timeout(HTTP_GRACE, graceful.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("HTTP connections still open after the shutdown deadline: closed");
            }
            Ok(())
        })
    }
}

/// The accept loop's parts.
struct Acceptor {
    listener: TcpListener,
    app: Router,
    builder: auto::Builder<TokioExecutor>,
    gate: Arc<Gate>,
    graceful: GracefulShutdown,
}

impl Acceptor {
    /// Serves every socket accepted until `stop` completes.
    async fn accept_until(&self, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => self.serve_one(stream, peer),
                    // Out of file descriptors, or a connection reset before accept:
                    // wait a little rather than spin.
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
            }
        }
    }

    fn serve_one(&self, stream: TcpStream, peer: SocketAddr) {
        let Some(pass) = self.gate.admit(peer.ip()) else {
            crate::metrics::refused_connection();
            tokio::spawn(refuse(stream));
            return;
        };
        let _ = stream.set_nodelay(true);
        // The pass travels with the socket, through a WebSocket upgrade, until it closes.
        let io = TokioIo::new(Counted {
            stream,
            _pass: pass,
        });
        let service = TowerToHyperService::new(self.app.clone());
        let connection = self
            .builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let connection = self.graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
}

/// Pause after a failed accept (e.g. no file descriptor left).
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Answers a socket over the connection caps with 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let answer = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 27\r\nconnection: close\r\n\r\ntoo many connections; retry";
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(answer)).await;
    let _ = stream.shutdown().await;
}

/// Counts open sockets, in all and per IP address.
struct Gate {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
}

/// One admitted socket; dropping it frees its place.
struct Pass {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Gate {
    fn new(max_total: usize, max_per_ip: usize) -> Gate {
        Gate {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: DashMap::new(),
        }
    }

    /// A pass for a socket from `ip`, unless a cap (0: none) is reached.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Pass> {
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        if self.max_total > 0 && total > self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if self.max_per_ip > 0 {
            let mut count = self.per_ip.entry(ip).or_insert(0);
            if *count >= self.max_per_ip {
                drop(count);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            *count += 1;
        }
        Some(Pass {
            gate: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let gate = &self.gate;
        gate.total.fetch_sub(1, Ordering::AcqRel);
        if gate.max_per_ip > 0 {
            // The entry goes when its last socket does, so the map holds live addresses only.
            gate.per_ip.remove_if_mut(&self.ip, |_, count| {
                *count = count.saturating_sub(1);
                *count == 0
            });
        }
    }
}

/// A socket with its [`Pass`].
struct Counted {
    stream: TcpStream,
    _pass: Pass,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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
