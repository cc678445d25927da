//! `GET /ws`: lifecycle events over a WebSocket (SPEC section 4). The
//! handshake is answered here; the upgraded socket is served by a task of
//! the server's `TaskTracker` (an upgraded connection leaves hyper's
//! graceful-shutdown watch), which closes it at shutdown.
//!
//! A socket reads the store's event ring through its `Subscription`; one
//! that falls out of the ring (a client too slow, or not reading at all)
//! is closed with 1013 and [`LAGGED_REASON`], even while a write to it is
//! blocked, so it pins neither events nor its task.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tracing::Instrument;

use super::App;
use super::error::ApiError;
use super::events::{wanted, workspace_filter};
use super::response::{self, Resp};
use super::sse::{self, Heartbeat};
use super::url::Query;
use crate::model::Id;
use crate::store::{SeqEvent, Subscription};

/// Read buffer per socket: clients only send pings and closes, and
/// tungstenite's default (128 KiB) adds up over thousands of sockets.
pub const READ_BUFFER: usize = 4 * 1024;
/// Largest message accepted from a client.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// How long a closing socket waits for the client's close reply.
pub const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether `key` is 16 bytes in base64: 22 base64 characters, the last of
/// them carrying only 2 bits (`A`, `Q`, `g` or `w`), then `==`.
fn is_websocket_key(key: &[u8]) -> bool {
    let b64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    key.len() == 24 && key[..21].iter().all(b64) && b"AQgw".contains(&key[21]) && &key[22..] == b"=="
}

/// Answers the handshake with 101 and serves the socket in a tracked task.
pub fn upgrade(app: &Arc<App>, req: Request<Incoming>, q: &Query) -> Result<Resp, ApiError> {
    let filter = workspace_filter(q)?;
    let h = req.headers();
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()));
    let (Some(accept), true, true) = (
        key,
        has_token(h, header::CONNECTION, "upgrade"),
        has_token(h, header::UPGRADE, "websocket"),
    ) else {
        return Err(ApiError::bad_request(
            "not_websocket",
            "GET /ws expects a WebSocket handshake (Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Key)",
        ));
    };
    // Regression (found by schemathesis): any key was taken; RFC 6455 says
    // it is 16 bytes in base64, and a server refuses anything else.
    if !h
        .get(header::SEC_WEBSOCKET_KEY)
        .is_some_and(|k| is_websocket_key(k.as_bytes()))
    {
        return Err(ApiError::bad_request(
            "not_websocket",
            "Sec-WebSocket-Key must be 16 bytes in base64 (24 characters)",
        ));
    }
    if h.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
        return Err(ApiError::bad_request(
            "not_websocket",
            "Sec-WebSocket-Version must be 13",
        ));
    }
    // Subscribed before the 101 goes out: nothing published after the
    // client sees the handshake can be missed.
    let rx = app.store.events().subscribe();
    let task_app = app.clone();
    let span = tracing::debug_span!("ws");
    // The socket keeps its connection's slot until it closes (issue 8).
    let permit = super::slots::take_permit(&req);
    app.tracker.spawn(
        async move {
            let _permit = permit;
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => serve(task_app, upgraded, rx, filter).await,
                Err(e) => tracing::debug!(%e, "WebSocket upgrade failed"),
            }
        }
        .instrument(span),
    );
    let mut resp = Response::new(response::empty_body());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is header-safe"),
    );
    Ok(resp)
}

type Socket = WebSocketStream<TokioIo<Upgraded>>;
type WsError = tokio_tungstenite::tungstenite::Error;

/// Close reason for a socket that fell behind the store's event ring
/// (code 1013, "try again later", as Centrifugo and Mercure treat slow
/// consumers): the client reconnects and re-lists.
pub const LAGGED_REASON: &str = "fell behind the lifecycle events; reconnect and re-list";

/// Why a socket's loop ended.
enum Ended {
    /// The client went away, or the store closed.
    Gone,
    Shutdown,
    /// The subscription fell behind the ring.
    Lagged,
}

async fn serve(app: Arc<App>, upgraded: Upgraded, mut rx: Subscription, filter: Option<Id>) {
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let _open = crate::metrics::get().open(crate::metrics::ConnKind::Ws);
    // A child token, so sockets do not contend on the server token's lock.
    let shutdown = app.shutdown.child_token();
    // A ping every heartbeat interval (events or not: filtered-out events
    // write nothing), as SSE streams send heartbeats. Regression: without
    // them a client that vanished silently was never noticed while no
    // events flowed, and its task, socket and receiver stayed forever.
    let mut heartbeat = Heartbeat::new(app.config.heartbeat);
    tracing::debug!("WebSocket open");
    let ended = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ended::Shutdown,
            _ = heartbeat.idle() => {
                let sent = tokio::select! {
                    sent = ws.send(Message::Ping(Default::default())) => sent,
                    _ = shutdown.cancelled() => break Ended::Shutdown,
                };
                if sent.is_err() {
                    break Ended::Gone;
                }
            }
            // Pings are answered by tungstenite while it reads; a close
            // from the client is answered likewise and then ends the stream.
            msg = ws.next() => match msg {
                None | Some(Err(_)) => break Ended::Gone,
                Some(Ok(_)) => {}
            },
            r = rx.recv() => {
                let first = match r {
                    Ok(ev) => ev,
                    Err(RecvError::Lagged(_)) => break Ended::Lagged,
                    Err(RecvError::Closed) => break Ended::Gone,
                };
                let (batch, lagged) = ready_messages(&mut rx, &filter, first);
                // A client that stops reading blocks the send: neither
                // shutdown nor the ring moving past it waits on that (and
                // a socket that lagged already gets CLOSE_WAIT for these).
                let sent = tokio::select! {
                    sent = send_all(&mut ws, batch) => sent,
                    _ = rx.lagged() => break Ended::Lagged,
                    _ = tokio::time::sleep(CLOSE_WAIT), if lagged => break Ended::Lagged,
                    _ = shutdown.cancelled() => break Ended::Shutdown,
                };
                if sent.is_err() {
                    break Ended::Gone;
                }
                if lagged || rx.is_lagged() {
                    break Ended::Lagged;
                }
            }
        }
    };
    match ended {
        Ended::Gone => {}
        Ended::Shutdown => close(&mut ws, CloseCode::Away, "server shutting down").await,
        Ended::Lagged => close(&mut ws, CloseCode::Again, LAGGED_REASON).await,
    }
    tracing::debug!("WebSocket closed");
}

/// `first` and every event ready after it that passes `filter`, as text
/// messages, up to [`sse::MAX_FRAME`] bytes (the rest stays in the ring
/// for the next round), and whether the subscription lagged meanwhile (the
/// caller sends these, then closes).
fn ready_messages(rx: &mut Subscription, filter: &Option<Id>, first: Arc<SeqEvent>) -> (Vec<Message>, bool) {
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut next = first;
    loop {
        if wanted(filter, &next) {
            bytes += next.json.len();
            out.push(Message::text(next.json.clone()));
        }
        if bytes >= sse::MAX_FRAME {
            return (out, false);
        }
        next = match rx.try_recv() {
            Ok(ev) => ev,
            Err(TryRecvError::Lagged(_)) => return (out, true),
            Err(_) => return (out, false),
        };
    }
}

/// Queues every message, then flushes once.
async fn send_all(ws: &mut Socket, batch: Vec<Message>) -> Result<(), WsError> {
    for m in batch {
        ws.feed(m).await?;
    }
    ws.flush().await
}

/// Sends a close frame and waits (briefly) for the client's reply. The
/// whole close is bounded: a client that stopped reading cannot take the
/// close frame (regression: the task then waited on it forever).
async fn close(ws: &mut Socket, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_owned().into(),
    };
    let closing = async {
        let _ = ws.close(Some(frame)).await;
        while let Some(Ok(_)) = ws.next().await {}
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, closing).await;
}
