//! Following output over Server-Sent Events (SPEC section 3), and the SSE
//! plumbing shared with `/api/events`: headers, heartbeats, batching.
//!
//! # Why frames are batched
//! On loopback the cost per write, not bandwidth, limits fan-out. After a
//! follower wakes for one event, every event already waiting for it is
//! drained with `try_next` into the same frame (up to [`MAX_FRAME`]). The
//! SSE text of a live chunk is encoded once, into `Chunk::encoded`, and
//! shared by every follower as a cheap `Bytes` clone.
//!
//! # Why a slow follower costs no memory
//! hyper polls the body only when it can write, so a follower that stops
//! reading stops pulling from its `Follow`; when it falls more than the
//! emitter's capacity behind it catches up from the log instead.

use std::convert::Infallible;
use std::fmt::Display;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::header::{CACHE_CONTROL, HeaderValue};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde::Serialize;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::response::{self, Resp};
use super::stall::Backlog;
use super::url::Query;
use super::{App, ConnShutdown};
use crate::model::{Id, StreamKind};
use crate::store::{Chunk, Follow, FollowEvent};

/// Largest frame built from ready events before it is handed to hyper:
/// one log block (`REPLAY_BLOCK`), so a catch-up frame is one block, not a
/// copy of four. A frame is what a follower that stops reading holds once
/// its socket is backed up (see `Gated`); hyper writes several frames in
/// one `writev` when they are ready, so the write count stays low.
pub const MAX_FRAME: usize = 64 * 1024;
/// Reconnect delay suggested to EventSource clients, in milliseconds.
pub const RETRY_MS: u64 = 2000;
/// The heartbeat event.
pub const HEARTBEAT: &[u8] = b"event: heartbeat\ndata: {}\n\n";

/// The token a response stream of `req` ends on: its connection's. Not
/// the server's own token: polling a token's `cancelled` future locks that
/// token's waiter list, and 1,000 followers polling one token at every
/// frame contend on that one lock.
fn stream_token<B>(app: &App, req: &Request<B>) -> CancellationToken {
    match req.extensions().get::<ConnShutdown>() {
        Some(c) => c.0.clone(),
        None => app.shutdown.child_token(),
    }
}

/// A `text/event-stream` response to `req` over `frames`, ending when its
/// connection shuts down, and making no frame while its socket is backed
/// up (`stall::Backlog`).
pub fn response<B, S>(app: &App, req: &Request<B>, frames: S) -> Resp
where
    S: Stream<Item = Bytes> + Send + Unpin + 'static,
{
    let shutdown = stream_token(app, req);
    let frames = Gated {
        inner: frames,
        backlog: req.extensions().get::<Arc<Backlog>>().cloned(),
    };
    let open = crate::metrics::get().open(crate::metrics::ConnKind::Sse);
    let frames = frames.take_until(shutdown.cancelled_owned()).map(move |b| {
        let _open = &open; // counted as long as the body lives
        Ok::<_, Infallible>(Frame::data(b))
    });
    let mut resp = response::with_type(
        StatusCode::OK,
        StreamBody::new(frames).boxed_unsync(),
        "text/event-stream",
    );
    let h = resp.headers_mut();
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// A stream of frames that waits while its connection's socket is backed
/// up, so hyper's write queue does not fill with frames a peer that stopped
/// reading will never take (issue 8: ~150 KiB per stalled follower).
struct Gated<S> {
    inner: S,
    /// None for a request that did not come through a connection (tests
    /// that call the router directly).
    backlog: Option<Arc<Backlog>>,
}

impl<S: Stream + Unpin> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.backlog.as_ref().is_some_and(|b| b.is_blocked(cx)) {
            return Poll::Pending;
        }
        self.inner.poll_next_unpin(cx)
    }
}

/// Heartbeats while a stream is idle. The timer is re-armed only when it
/// fires, not at every write (writes just record the time), which keeps
/// the timer wheel out of the hot path.
pub struct Heartbeat {
    every: Duration,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl Heartbeat {
    pub fn new(every: Duration) -> Self {
        let now = Instant::now();
        Heartbeat {
            every,
            last: now,
            sleep: Box::pin(tokio::time::sleep_until(now + every)),
        }
    }

    /// Something was written: the stream is not idle.
    pub fn wrote(&mut self) {
        self.last = Instant::now();
    }

    /// Completes once the stream has been idle for a whole interval; never
    /// for an interval of zero (`--heartbeat 0s` turns heartbeats off).
    /// Regression: a zero interval was due at once, every time, so each
    /// idle stream sent heartbeats as fast as its client read them.
    /// Cancel-safe: all state changes happen after the await.
    pub async fn idle(&mut self) {
        if self.every.is_zero() {
            return std::future::pending().await;
        }
        loop {
            self.sleep.as_mut().await;
            let due = self.last + self.every;
            let now = Instant::now();
            if now >= due {
                self.last = now;
                self.sleep.as_mut().reset(now + self.every);
                return;
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

/// Collects ready events into one frame without copying when there is
/// just one (the common case of a shared, pre-encoded chunk).
#[derive(Default)]
pub struct Batch {
    first: Option<Bytes>,
    buf: BytesMut,
}

impl Batch {
    pub fn push(&mut self, b: Bytes) {
        if self.first.is_none() && self.buf.is_empty() {
            self.first = Some(b);
            return;
        }
        if let Some(first) = self.first.take() {
            self.buf.extend_from_slice(&first);
        }
        self.buf.extend_from_slice(&b);
    }

    pub fn len(&self) -> usize {
        self.first.as_ref().map_or(self.buf.len(), Bytes::len)
    }

    pub fn is_full(&self) -> bool {
        self.len() >= MAX_FRAME
    }

    pub fn finish(self) -> Bytes {
        self.first.unwrap_or_else(|| self.buf.freeze())
    }
}

/// `data` of a chunk event.
#[derive(Serialize)]
struct ChunkData<'a> {
    content: &'a str,
    /// When the store took it: RFC 3339 UTC with milliseconds and `Z`.
    ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<StreamKind>,
}

/// One event with an optional id and a JSON `data` line.
pub fn event<T: Serialize + ?Sized>(id: Option<&dyn Display>, name: &str, data: &T) -> Bytes {
    let mut out = head(64, id, name);
    serde_json::to_writer(&mut out, data).expect("event data always serializes");
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// [`event`] for data that is one line of JSON already (a lifecycle
/// event, serialized once for every subscriber).
pub fn event_json(id: Option<&dyn Display>, name: &str, json: &str) -> Bytes {
    let mut out = head(json.len() + 64, id, name);
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The `id:` and `event:` lines of an event and the start of its `data:`.
fn head(capacity: usize, id: Option<&dyn Display>, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    if let Some(id) = id {
        let _ = writeln!(out, "id: {id}");
    }
    let _ = write!(out, "event: {name}\ndata: ");
    out
}

/// The SSE text of a chunk, encoded once per chunk however many follow it.
fn chunk_frame(c: &Chunk) -> Bytes {
    c.encoded
        .get_or_init(|| {
            let data = ChunkData {
                content: &c.content,
                ts: crate::model::format_ts(&c.ts()),
                stream: c.stream,
            };
            event(Some(&c.offset), "chunk", &data)
        })
        .clone()
}

/// Where a follow starts: `Last-Event-ID` wins over `?from=N` (a
/// reconnecting EventSource sends the header while its URL still carries
/// the original `from`); neither means "from now on".
fn start_offset(headers: &HeaderMap, q: &Query) -> Result<Option<u64>, ApiError> {
    if let Some(v) = headers.get("last-event-id") {
        let s = v.to_str().unwrap_or("").trim();
        let n = s.parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "invalid_last_event_id",
                format!("Last-Event-ID must be a byte offset, got {s:?}"),
            )
        })?;
        return Ok(Some(n));
    }
    q.u64("from")
}

/// `GET /api/processes/:id/stream`.
pub fn follow<B>(app: &Arc<App>, id: &Id, req: &Request<B>, q: &Query) -> Result<Resp, ApiError> {
    let from = start_offset(req.headers(), q)?;
    let follow = app.store.subscribe(id, from)?;
    let state = FollowStream {
        follow,
        heartbeat: Heartbeat::new(app.config.heartbeat),
        process_id: id.to_string(),
        started: false,
        done: false,
    };
    let frames = futures_util::stream::unfold(state, |mut s| async move { s.next_frame().await.map(|b| (b, s)) });
    Ok(response(app, req, Box::pin(frames)))
}

/// The state of one follower's stream.
struct FollowStream {
    follow: Follow,
    heartbeat: Heartbeat,
    process_id: String,
    started: bool,
    /// `status` and `done` were written: the next poll ends the body.
    done: bool,
}

impl FollowStream {
    async fn next_frame(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if !self.started {
            self.started = true;
            return Some(Bytes::from(format!("retry: {RETRY_MS}\n\n")));
        }
        tokio::select! {
            biased;
            ev = self.follow.next() => {
                let Some(ev) = ev else {
                    self.done = true;
                    return None;
                };
                self.heartbeat.wrote();
                Some(self.batch(ev))
            }
            _ = self.heartbeat.idle() => Some(Bytes::from_static(HEARTBEAT)),
        }
    }

    /// `first` and every event ready after it, as one frame.
    fn batch(&mut self, first: FollowEvent) -> Bytes {
        let mut batch = Batch::default();
        self.push(&mut batch, first);
        while !self.done && !batch.is_full() {
            match self.follow.try_next() {
                Some(ev) => self.push(&mut batch, ev),
                None => break,
            }
        }
        batch.finish()
    }

    fn push(&mut self, batch: &mut Batch, ev: FollowEvent) {
        match ev {
            FollowEvent::Chunk(c) => batch.push(chunk_frame(&c)),
            FollowEvent::Lagged { from, to } => {
                batch.push(event(
                    Some(&to),
                    "lagged",
                    &serde_json::json!({ "from": from, "to": to }),
                ));
            }
            FollowEvent::Status(info) => {
                batch.push(event(None, "status", &info));
                batch.push(event(
                    None,
                    "done",
                    &serde_json::json!({ "process_id": self.process_id }),
                ));
                self.done = true;
            }
        }
    }
}
