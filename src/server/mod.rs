//! The HTTP server: the listener, one task per connection, and the one
//! shutdown signal (`CancellationToken`) everything watches, with one
//! `TaskTracker` that shutdown waits on.
//!
//! # Why hyper's http1 builder and not hyper-util's `auto`
//! Measured with 3,000 idle followers, `auto::Builder` (HTTP/1 + HTTP/2
//! sniffing) cost ~21 KiB of RSS per connection against ~12 KiB for
//! `hyper::server::conn::http1` with upgrades, which is what the bare
//! hyper baseline costs. hyper-util's `GracefulShutdown` does not accept
//! `http1::UpgradeableConnection`, so each connection watches the token
//! itself and calls `graceful_shutdown` (a few lines), and the tracker
//! replaces the graceful watcher's count. HTTP/2 is therefore not offered
//! (SSE over HTTP/1.1 and WebSocket upgrades are what clients use).
//!
//! # Layout
//! * [`run`] (here): accept loop, connection cap, graceful drain. The
//!   `prochub serve` command around it (data folder, bind, `server.json`,
//!   signals) is `cli::serve`.
//! * `router`: method + path to handler, auth and CORS around it.
//! * `handlers/`: thin REST handlers over the store.
//! * `sse` / `events` / `ws`: output follow streams (and the SSE framing
//!   shared with events), lifecycle events over SSE and WebSocket.
//! * `error`: the one place mapping errors to status + `{"error","code"}`.
//! * `body`, `url`, `response`, `auth`, `cors`: request and response plumbing.
//! * `origin`: the `Host`/`Origin` guard (browser safety, DNS rebinding).
//! * `scrape`, `openapi`, `access_log`, `limits`, `malformed`: operations
//!   (SPEC section 12): `/metrics`, the OpenAPI document, request metrics
//!   and access log, head limits, JSON for what hyper rejects itself.
//! * `slots`, `stall`, `fds`: hostile and careless clients (issue 8): the
//!   connection cap (WebSockets count; idle connections make room), peers
//!   that stop reading, the descriptor limit and its reserve.
//!
//! # What a connection may cost
//! hyper's buffers are capped at [`READ_BUF_MAX`] (the head limits' need,
//! not hyper's ~400 KiB default), a body must arrive within the body
//! timeout and shares one budget with every body being read (`body`), a
//! stalled write ends the connection (`stall`), and a head must arrive
//! within [`HEADER_READ_TIMEOUT`].

mod access_log;
mod auth;
mod body;
mod cors;
mod error;
mod events;
pub mod fds;
mod handlers;
mod limits;
mod malformed;
mod openapi;
mod origin;
mod response;
mod router;
mod scrape;
mod slots;
mod sse;
mod stall;
mod url;
mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

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

/// The most hyper buffers per connection, reading or writing: a head at
/// its limits ([`limits::MAX_HEAD`], 72 KiB) and no more. hyper's default
/// (~400 KiB) let each connection sending a head slowly, or a body, hold
/// several times that; SSE output queued in hyper is bounded by it too.
pub const READ_BUF_MAX: usize = limits::MAX_HEAD;

pub use body::{BUDGET_WAIT, DEFAULT_BODY_BUDGET, DEFAULT_BODY_TIMEOUT};
pub use slots::{DEFAULT_HEAD_BUDGET, EVICT_MIN_IDLE};
pub use stall::{STALL_FLOOR, STALL_HEARTBEATS};

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
    /// `Host` names answered besides the bound address and `localhost`
    /// (`--allowed-host`; `*`: any). See `server::origin`.
    pub allowed_hosts: Vec<String>,
    /// Time a request body has to arrive in full (408 past it).
    pub body_timeout: Duration,
    /// Bytes of request bodies buffered at once over all connections;
    /// past it new bodies wait a little, then get 503 `busy`.
    pub body_budget: u64,
    /// A connection whose writes make no progress this long is closed;
    /// None: [`STALL_HEARTBEATS`] heartbeats, at least [`STALL_FLOOR`].
    pub write_stall: Option<Duration>,
    /// Bytes of request heads still arriving, over all connections; past
    /// it the longest-idle connection is closed ([`DEFAULT_HEAD_BUDGET`]).
    pub head_budget: u64,
}

impl ServerConfig {
    /// The write-stall limit in force.
    pub fn write_stall_limit(&self) -> Duration {
        self.write_stall.unwrap_or_else(|| stall::limit_for(self.heartbeat))
    }
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
            allowed_hosts: Vec::new(),
            body_timeout: DEFAULT_BODY_TIMEOUT,
            body_budget: DEFAULT_BODY_BUDGET,
            write_stall: None,
            head_budget: DEFAULT_HEAD_BUDGET,
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
            .field("allowed_hosts", &self.allowed_hosts)
            .field("body_timeout", &self.body_timeout)
            .field("body_budget", &self.body_budget)
            .field("write_stall", &self.write_stall)
            .field("head_budget", &self.head_budget)
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
    /// Tracks connection tasks and upgraded WebSocket tasks (which leave
    /// their connection): shutdown waits for both.
    pub tracker: TaskTracker,
    pub started: Instant,
    /// The `Host` values this server answers (bound address + config).
    pub hosts: origin::Hosts,
    /// Connection slots: the cap, and the idle connections closed first.
    slots: Arc<slots::Slots>,
    /// Body timeout and budget, shared by every request (`body`).
    bodies: Arc<body::Limits>,
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
    let bound = listener
        .local_addr()
        .expect("a bound listener knows its address (getsockname on a valid socket)");
    let app = Arc::new(App {
        hosts: origin::Hosts::new(bound, &config.allowed_hosts),
        slots: slots::Slots::new(config.max_connections, config.head_budget),
        bodies: Arc::new(body::Limits {
            budget: body::Budget::new(config.body_budget, config.max_body),
            timeout: config.body_timeout,
        }),
        config,
        store: store.clone(),
        runner: runner.clone(),
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
        started: Instant::now(),
    });
    accept_loop(&listener, &app).await;
    drop(listener);
    tracing::info!("shutting down: draining connections");
    app.tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, app.tracker.wait()).await.is_err() {
        tracing::warn!("connections still open after the grace period; not waiting for them any longer");
    }
    runner.shutdown().await;
    store.sync_output().await?;
    tracing::info!("server stopped");
    Ok(())
}

/// Accepts connections until shutdown. Each takes a slot before it is
/// served: at the cap the loop closes the longest-idle connection (see
/// `slots`) or waits, and the connections behind wait in the kernel's
/// accept queue instead of being refused.
async fn accept_loop(listener: &TcpListener, app: &Arc<App>) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff.reset();
                    a
                }
                Err(e) => {
                    // Out of descriptors: an idle connection's is the one
                    // to give back, as at the cap.
                    if matches!(e.raw_os_error(), Some(libc_errno::EMFILE | libc_errno::ENFILE)) {
                        app.slots.evict_oldest();
                    }
                    tokio::select! {
                        _ = app.shutdown.cancelled() => return,
                        _ = backoff.pause(&e) => continue,
                    }
                }
            },
        };
        let Some(slot) = app.slots.admit(&app.shutdown).await else {
            return;
        };
        let conn = serve_connection(stream, peer, app.clone(), slot);
        app.tracker.spawn(conn.instrument(tracing::info_span!("conn", %peer)));
    }
}

/// The errno values of "too many open files" (per process, system-wide).
mod libc_errno {
    pub const EMFILE: i32 = nix::errno::Errno::EMFILE as i32;
    pub const ENFILE: i32 = nix::errno::Errno::ENFILE as i32;
}

/// First pause after a failed accept.
pub const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
/// Longest pause after failed accepts in a row (doubling from the first).
pub const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

/// Pauses after failed accepts. Out of descriptors (EMFILE, ENFILE) or
/// memory the next accept fails the same way at once: retrying in a loop
/// would spin a core, so each failure in a row doubles the pause up to
/// [`ACCEPT_PAUSE_MAX`] (nginx stops accepting for 500 ms). A warning is
/// written at most every [`ACCEPT_WARN_EVERY`], with the count since.
#[derive(Default)]
struct AcceptBackoff {
    /// The next pause; zero when the last accept succeeded.
    next: Duration,
    /// Failures since the last warning, and when that was.
    unreported: u64,
    warned: Option<Instant>,
}

/// Least time between two "accept failed" warnings.
pub const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(60);

impl AcceptBackoff {
    async fn pause(&mut self, e: &std::io::Error) {
        // A peer that reset before we accepted it is its own problem.
        if e.kind() == std::io::ErrorKind::ConnectionAborted {
            return;
        }
        self.unreported += 1;
        if self.warned.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_EVERY) {
            tracing::warn!(%e, failures = self.unreported, "accept failed; pausing accepts (up to 1 s each) while it fails");
            self.warned = Some(Instant::now());
            self.unreported = 0;
        }
        self.next = (self.next * 2).clamp(ACCEPT_PAUSE_MIN, ACCEPT_PAUSE_MAX);
        tokio::time::sleep(self.next).await;
    }

    fn reset(&mut self) {
        self.next = Duration::ZERO;
    }
}

/// The connection's shutdown token (a child of the server's), put in each
/// request's extensions so a response stream ends on the same token the
/// connection watches, without a token of its own.
#[derive(Clone)]
pub(crate) struct ConnShutdown(pub CancellationToken);

/// A request's future, boxed: hyper keeps one slot per connection sized
/// for the service future for the connection's whole life, and the router's
/// future (every handler inlined) is several KiB. Boxed, the slot is a
/// pointer and the handler's memory is freed as soon as it has answered,
/// which is what an idle follower's connection costs.
type RequestFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<slots::Tracked<response::Body>>, Infallible>> + Send>>;

/// One HTTP/1.1 connection (with upgrades for `/ws`). On shutdown it is
/// told to finish gracefully: the response in flight completes (SSE bodies
/// end on the same token), keep-alive stops, the connection closes. When
/// the accept loop needs its slot while it is idle, it just closes.
///
/// Returned boxed so the task holds the (large) connection state once.
fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    slot: Arc<slots::Conn>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let _ = stream.set_nodelay(true);
    // A child token: the connection polls it at every wake-up, and polling
    // the server's one token from every connection contends on its lock.
    let shutdown = app.shutdown.child_token();
    let conn_token = shutdown.clone();
    let stall = app.config.write_stall_limit();
    let backlog = Arc::new(stall::Backlog::default());
    let service_backlog = backlog.clone();
    let service_slot = slot.clone();
    let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| -> RequestFuture {
        service_slot.busy();
        req.extensions_mut().insert(ConnShutdown(conn_token.clone()));
        req.extensions_mut().insert(service_backlog.clone());
        req.extensions_mut().insert(slots::ConnSlot(service_slot.clone()));
        let app = app.clone();
        let slot = service_slot.clone();
        Box::pin(async move {
            let limits = app.bodies.clone();
            let resp = body::LIMITS.scope(limits, router::handle(app, req)).await;
            Ok(resp.map(|b| slots::Tracked::new(b, slot)))
        })
    });
    let socket = slots::HeadBytes::new(stream, slot.clone());
    let io = malformed::JsonErrors::new(stall::WriteStall::new(socket, stall, backlog));
    let mut conn = Box::pin(
        http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_header_size(limits::MAX_HEAD)
            .max_buf_size(READ_BUF_MAX)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades(),
    );
    Box::pin(async move {
        let _open = crate::metrics::get().open(crate::metrics::ConnKind::Http);
        tracing::debug!("connection opened");
        let result = tokio::select! {
            r = conn.as_mut() => Some(r),
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                Some(conn.as_mut().await)
            }
            _ = slot.evicted() => {
                tracing::debug!("idle connection closed to make room for a new one");
                None
            }
        };
        if let Some(Err(e)) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
        // The connection (and any response body in it) goes first, so
        // nothing puts it back in the idle map after it gave its slot back.
        drop(conn);
        slot.release();
        tracing::debug!("connection closed");
    })
}
