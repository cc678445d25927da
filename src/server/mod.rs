//! The HTTP server: the listener, one task per connection under hyper-util's
//! `GracefulShutdown`, and the one shutdown signal everything watches.
//!
//! # Layout
//! * [`run`] (here): accept loop, connection cap, graceful drain.
//! * `command`: `prochub serve` (data folder, bind, `server.json`, signals).
//! * `router`: method + path to handler, auth and CORS around it.
//! * `handlers/`: thin REST handlers over the store.
//! * `sse` / `events` / `ws`: output follow streams, lifecycle events over
//!   SSE and WebSocket.
//! * `error`: the one place mapping errors to status + `{"error","code"}`.
//! * `body`, `url`, `response`, `auth`, `cors`: request and response plumbing.

mod auth;
mod body;
mod command;
mod cors;
mod error;
mod events;
mod handlers;
mod response;
mod router;
mod sse;
mod url;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use command::serve_command;
pub use error::ApiError;

use crate::runner::{CANCEL_GRACE, Runner};
use crate::store::FileProcessStore;

/// Default largest request body (SPEC section 2).
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
/// Default interval of SSE heartbeats while a stream is idle.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// Default cap on connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// How long a graceful shutdown waits for in-flight requests before it
/// drops the remaining connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A client must send a request's headers within this time (slow-loris
/// connections would otherwise hold a connection slot forever).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What the server needs to know besides its listener and store.
#[derive(Clone)]
pub struct ServerConfig {
    /// Required bearer token on `/api` and `/ws`, if any.
    pub token: Option<String>,
    /// Largest request body, enforced while reading.
    pub max_body: u64,
    /// SSE heartbeat interval while a stream is idle.
    pub heartbeat: Duration,
    /// Whether clients may have the server run commands.
    pub allow_exec: bool,
    /// `Access-Control-Allow-Origin` value, if CORS is enabled.
    pub cors_origin: Option<String>,
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// The runner of server-run commands; `run` makes one when None.
    pub runner: Option<Arc<Runner>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            max_body: DEFAULT_MAX_BODY,
            heartbeat: DEFAULT_HEARTBEAT,
            allow_exec: false,
            cors_origin: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            runner: None,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("max_body", &self.max_body)
            .field("heartbeat", &self.heartbeat)
            .field("allow_exec", &self.allow_exec)
            .field("cors_origin", &self.cors_origin)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

/// Everything a request handler may touch. Shared read-only as `Arc<App>`;
/// the mutable state lives in the store and the runner.
pub(crate) struct App {
    pub config: ServerConfig,
    pub store: Arc<FileProcessStore>,
    pub runner: Arc<Runner>,
    /// Fires once at shutdown: ends SSE bodies and WebSocket tasks.
    pub shutdown: CancellationToken,
    /// Tracks upgraded WebSocket tasks, which leave hyper's connection.
    pub tracker: TaskTracker,
    pub started: Instant,
}

/// Serves `store` on `listener` until `shutdown` fires, then drains:
/// stops accepting, ends SSE streams and WebSockets, lets in-flight
/// requests finish (at most [`SHUTDOWN_GRACE`]), terminates server-run
/// commands and fsyncs the output logs.
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    store: Arc<FileProcessStore>,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    let runner = config
        .runner
        .clone()
        .unwrap_or_else(|| Runner::new(store.clone(), CANCEL_GRACE));
    match runner.recover_orphans().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(orphans = n, "marked commands of a previous server as failed"),
        Err(e) => tracing::warn!(%e, "could not recover orphaned commands"),
    }
    let app = Arc::new(App {
        config,
        store: store.clone(),
        runner: runner.clone(),
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
        started: Instant::now(),
    });
    let graceful = GracefulShutdown::new();
    accept_loop(&listener, &app, &graceful).await;
    drop(listener);
    tracing::info!("shutting down: draining connections");
    app.tracker.close();
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("connections still open after the grace period; dropping them"),
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, app.tracker.wait()).await.is_err() {
        tracing::warn!("WebSocket tasks still running after the grace period");
    }
    runner.shutdown().await;
    store.sync_output().await?;
    tracing::info!("server stopped");
    Ok(())
}

/// Accepts connections until shutdown. A permit of the connection
/// semaphore is taken before each accept, so past the cap new connections
/// wait in the kernel's accept queue instead of being refused.
async fn accept_loop(listener: &TcpListener, app: &Arc<App>, graceful: &GracefulShutdown) {
    let permits = Arc::new(Semaphore::new(app.config.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let conn = serve_connection(stream, peer, app.clone(), graceful);
        tokio::spawn(
            async move {
                conn.await;
                drop(permit);
            }
            .instrument(tracing::info_span!("conn", %peer)),
        );
    }
}

/// One connection: HTTP/1 (with upgrades) or HTTP/2, watched by `graceful`.
fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    graceful: &GracefulShutdown,
) -> impl Future<Output = ()> + Send + 'static {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(router::handle(app, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    let conn = graceful.watch(conn);
    async move {
        tracing::debug!("connection opened");
        if let Err(e) = conn.await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
        tracing::debug!("connection closed");
    }
}
