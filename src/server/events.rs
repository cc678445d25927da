//! `GET /api/events`: lifecycle events as SSE (SPEC section 4). Ids are
//! `EPOCH-SEQ`; a reconnect with `Last-Event-ID` resumes from the store's
//! ring, or gets one `event: reset` (re-list) when that cannot be done, as
//! does a subscriber that falls behind the ring (it then goes on live).
//! The stream holds a position in the ring, never events of its own: a
//! client that stops reading costs its socket buffers and one frame.

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::App;
use super::error::ApiError;
use super::response::Resp;
use super::sse::{self, Batch, Heartbeat};
use super::url::Query;
use crate::model::Id;
use crate::store::{Events, FileProcessStore, Resume, SeqEvent, StoreError, Subscription};

/// The `?workspace=` filter of `/api/events` and `/ws`.
pub fn workspace_filter(q: &Query) -> Result<Option<Id>, ApiError> {
    let w = q.get("workspace").filter(|w| !w.is_empty());
    Ok(w.map(|w| StoreError::parse_id("workspace", w)).transpose()?)
}

/// Whether `ev` passes `filter`.
pub fn wanted(filter: &Option<Id>, ev: &SeqEvent) -> bool {
    filter.as_ref().is_none_or(|w| ev.workspace == *w)
}

const RESET: &[u8] = b"event: reset\ndata: {}\n\n";

pub fn sse<B>(app: &Arc<App>, req: &Request<B>, q: &Query) -> Result<Resp, ApiError> {
    let filter = workspace_filter(q)?;
    let headers = req.headers();
    let events = app.store.events();
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let mut first = Batch::default();
    first.push(Bytes::from(format!(": connected\nretry: {}\n\n", sse::RETRY_MS)));
    // A resumed subscription starts with the events it missed, read from
    // the ring as the client reads (regression: they were all copied into
    // the first frame, up to the ring's 32 MiB per reconnecting client).
    let rx = match last {
        None => events.subscribe(),
        Some(last) => {
            let (resume, rx) = events.resume(last.trim());
            if resume == Resume::Reset {
                first.push(Bytes::from_static(RESET));
            }
            rx
        }
    };
    let state = EventStream {
        rx,
        filter,
        store: app.store.clone(),
        heartbeat: Heartbeat::new(app.config.heartbeat),
        first: Some(first.finish()),
    };
    let frames = futures_util::stream::unfold(state, |mut s| async move { s.next_frame().await.map(|b| (b, s)) });
    Ok(sse::response(app, req, Box::pin(frames)))
}

/// One lifecycle event as SSE: its `EPOCH-SEQ` id, its type as the name.
/// Encoded once, into the event, and shared by every subscriber
/// (regression: each one copied it, so N stalled subscribers held N copies
/// of a frame carrying a 1 MB `result`).
fn frame(events: &Events, ev: &SeqEvent) -> Bytes {
    ev.encoded
        .get_or_init(|| sse::event_json(Some(&events.id_of(ev)), ev.kind.as_str(), &ev.json))
        .clone()
}

struct EventStream {
    rx: Subscription,
    filter: Option<Id>,
    /// For the events' ids (`Events::id_of`).
    store: Arc<FileProcessStore>,
    heartbeat: Heartbeat,
    /// The greeting (and a `reset` for a resume that cannot be served).
    first: Option<Bytes>,
}

impl EventStream {
    async fn next_frame(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            let mut batch = Batch::default();
            tokio::select! {
                r = self.rx.recv() => match r {
                    Ok(ev) => self.push(&mut batch, &ev),
                    Err(RecvError::Lagged(_)) => batch.push(Bytes::from_static(RESET)),
                    Err(RecvError::Closed) => return None,
                },
                _ = self.heartbeat.idle() => return Some(Bytes::from_static(sse::HEARTBEAT)),
            }
            while !batch.is_full() {
                match self.rx.try_recv() {
                    Ok(ev) => self.push(&mut batch, &ev),
                    Err(TryRecvError::Lagged(_)) => batch.push(Bytes::from_static(RESET)),
                    Err(_) => break,
                }
            }
            if batch.len() > 0 {
                self.heartbeat.wrote();
                return Some(batch.finish());
            }
        }
    }

    fn push(&self, batch: &mut Batch, ev: &SeqEvent) {
        if wanted(&self.filter, ev) {
            batch.push(frame(self.store.events(), ev));
        }
    }
}
