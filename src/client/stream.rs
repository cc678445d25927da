//! Streams that survive a dropped connection: [`Follower`] (a process's
//! output, SPEC section 3) and [`EventStream`] (lifecycle events, section 4).
//!
//! Both sit on `Resumable`, which opens an SSE request, parses it with
//! [`SseParser`], and when the connection drops (reset, server restart, a
//! stream that ends without its final event, silence longer than the idle
//! timeout) opens a new one carrying `Last-Event-ID`, after a bounded
//! exponential backoff. The server replays from that id, and the follower
//! additionally drops any byte it already delivered, so output is seen
//! exactly once across reconnects.

use std::time::Duration;

use futures_util::Stream;
use http::{Method, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;

use super::api::{Client, REQUEST_TIMEOUT, api_error, error_chain, query};
use super::error::ClientError;
use super::sse::{SseEvent, SseParser};
use crate::model::{LifecycleEvent, StatusInfo, StreamKind};

/// How streams reconnect.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    /// Consecutive failed attempts before the stream gives up with the
    /// last error. A stream that never connected gives up at once.
    pub max_attempts: u32,
    /// Delay before the first reconnect; doubles on each failure.
    pub initial_delay: Duration,
    /// Longest delay between attempts (the server's `retry:` lowers it).
    pub max_delay: Duration,
    /// Silence after which a connection counts as dead (the server sends
    /// heartbeats while idle, every 15 s by default).
    pub idle_timeout: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            max_attempts: 30,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(45),
        }
    }
}

/// An SSE request that reopens itself with `Last-Event-ID`.
struct Resumable {
    client: Client,
    path_and_query: String,
    /// Resume point: the last event id received (on any connection).
    last_id: Option<String>,
    body: Option<Incoming>,
    parser: SseParser,
    /// Whether any connection ever succeeded (before that, errors are
    /// returned at once instead of retried).
    connected_once: bool,
    failures: u32,
    /// The server's `retry:` hint.
    retry_hint: Option<Duration>,
    closed: bool,
}

impl Resumable {
    fn new(client: Client, path_and_query: String, last_id: Option<String>) -> Self {
        Resumable {
            client,
            path_and_query,
            last_id,
            body: None,
            parser: SseParser::new(),
            connected_once: false,
            failures: 0,
            retry_hint: None,
            closed: false,
        }
    }

    fn close(&mut self) {
        self.closed = true;
        self.body = None;
    }

    fn delay(&self) -> Duration {
        let policy = self.client.policy();
        let cap = self.retry_hint.map_or(policy.max_delay, |h| h.min(policy.max_delay));
        let exp = policy
            .initial_delay
            .saturating_mul(1 << self.failures.saturating_sub(1).min(16));
        exp.min(cap)
    }

    /// Opens the stream: the response head, bounded by the request timeout
    /// (the body then streams for as long as it lasts).
    async fn connect(&mut self) -> Result<Incoming, ClientError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.connect_unbounded())
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Timeout {
                    url: self.client.base_url().to_owned(),
                    secs: REQUEST_TIMEOUT.as_secs(),
                })
            })
    }

    async fn connect_unbounded(&mut self) -> Result<Incoming, ClientError> {
        let mut headers = vec![(header::ACCEPT, "text/event-stream".to_owned())];
        if let Some(id) = &self.last_id {
            headers.push((header::HeaderName::from_static("last-event-id"), id.clone()));
        }
        let resp = self
            .client
            .send_raw(Method::GET, &self.path_and_query, None, &headers)
            .await?;
        let status = resp.status();
        if status != StatusCode::OK {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(api_error(status, &bytes));
        }
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            return Err(ClientError::Protocol {
                url: self.client.base_url().to_owned(),
                message: format!("{} is not an event stream", self.path_and_query),
            });
        }
        Ok(resp.into_body())
    }

    /// Opens the connection now (normally the first `next` does): when
    /// this returns, the server has subscribed this stream.
    async fn open_now(&mut self) -> Result<(), ClientError> {
        if self.body.is_none() && !self.closed {
            let body = self.connect().await?;
            self.attach(body);
        }
        Ok(())
    }

    fn attach(&mut self, body: Incoming) {
        self.connected_once = true;
        self.body = Some(body);
        // A fresh parser: a half-received event of the old connection is
        // resent by the server, which resumes after the last complete id.
        self.parser = SseParser::new();
    }

    /// The next event, reconnecting as needed; None once closed.
    async fn next(&mut self) -> Option<Result<SseEvent, ClientError>> {
        loop {
            if self.closed {
                return None;
            }
            if let Some(ev) = self.parser.next_event() {
                if !ev.id.is_empty() {
                    self.last_id = Some(ev.id.clone());
                }
                return Some(Ok(ev));
            }
            let Some(body) = self.body.as_mut() else {
                if self.connected_once && self.failures > 0 {
                    tokio::time::sleep(self.delay()).await;
                }
                match self.connect().await {
                    Ok(body) => self.attach(body),
                    Err(e) if self.connected_once && e.is_retryable() => {
                        self.failures += 1;
                        if self.failures >= self.client.policy().max_attempts {
                            self.close();
                            return Some(Err(e));
                        }
                        tracing::debug!(err = %e, attempt = self.failures, "stream reconnect failed");
                    }
                    Err(e) => {
                        self.close();
                        return Some(Err(e));
                    }
                }
                continue;
            };
            let idle = self.client.policy().idle_timeout;
            match tokio::time::timeout(idle, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.parser.feed(&data);
                        self.failures = 0;
                        if let Some(ms) = self.parser.retry_ms() {
                            self.retry_hint = Some(Duration::from_millis(ms));
                        }
                    }
                }
                outcome => {
                    let why = match outcome {
                        Ok(Some(Err(e))) => error_chain(&e),
                        Ok(None) => "the server ended the stream".to_owned(),
                        Err(_) => format!("no data for {}s", idle.as_secs()),
                        Ok(Some(Ok(_))) => unreachable!("handled above"),
                    };
                    tracing::debug!(path = %self.path_and_query, %why, "stream dropped; reconnecting");
                    self.body = None;
                    // Counts as a failure so that a server that keeps
                    // closing at once is not hammered.
                    self.failures += 1;
                }
            }
        }
    }
}

/// What a follower receives.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowEvent {
    /// Output; `offset` is the byte offset after it.
    Chunk {
        offset: u64,
        content: String,
        /// `stdout`/`stderr` for live chunks of server-run commands.
        stream: Option<StreamKind>,
    },
    /// Output in `from..to` is gone (past the server's cap) and skipped.
    Lagged { from: u64, to: u64 },
    /// The process ended; `Done` follows.
    Status(StatusInfo),
    /// Last event: the stream is over.
    Done,
}

#[derive(Deserialize)]
struct ChunkData {
    content: String,
    #[serde(default)]
    stream: Option<StreamKind>,
}

#[derive(Deserialize)]
struct LaggedData {
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    to: Option<u64>,
}

/// Follows one process's output; see [`Client::follow`].
pub struct Follower {
    id: String,
    /// The requested start; None: resolve "now" from the record on first use.
    from: Option<u64>,
    conn: Option<Resumable>,
    client: Client,
    /// Offset after the last byte delivered.
    pos: Option<u64>,
    got_status: bool,
    done: bool,
}

impl Follower {
    pub(crate) fn new(client: Client, id: String, from: Option<u64>) -> Self {
        Follower {
            id,
            from,
            conn: None,
            client,
            pos: from,
            got_status: false,
            done: false,
        }
    }

    /// Process id being followed.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Offset after the last byte delivered (where a resume would start).
    pub fn position(&self) -> Option<u64> {
        self.pos
    }

    fn open(&mut self) -> Result<(), ClientError> {
        crate::model::Id::parse(&self.id).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let from = self.from.expect("resolved before opening");
        let path = format!(
            "/api/processes/{}/stream{}",
            self.id,
            query(&[("from", Some(from.to_string()))])
        );
        self.conn = Some(Resumable::new(self.client.clone(), path, None));
        Ok(())
    }

    /// Resolves the start and prepares the stream (no request yet).
    async fn prepare(&mut self) -> Result<(), ClientError> {
        if self.conn.is_some() {
            return Ok(());
        }
        if self.from.is_none() {
            // "From now on", pinned to an offset, so that a reconnect
            // before the first chunk still knows where to resume.
            let p = self.client.get_process(&self.id).await?;
            self.from = Some(p.output_bytes);
            self.pos = Some(p.output_bytes);
        }
        self.open()
    }

    /// Connects now instead of at the first `next`: for `follow(id, None)`
    /// this fixes "now", and output appended after it returns is delivered.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        self.prepare().await?;
        self.conn.as_mut().expect("prepared").open_now().await
    }

    /// The next event; None after `Done` or after an error.
    pub async fn next(&mut self) -> Option<Result<FollowEvent, ClientError>> {
        if self.done {
            return None;
        }
        if let Err(e) = self.prepare().await {
            self.done = true;
            return Some(Err(e));
        }
        let conn = self.conn.as_mut().expect("opened above");
        loop {
            let ev = match conn.next().await {
                None => {
                    self.done = true;
                    return None;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(ev)) => ev,
            };
            match ev.event.as_str() {
                "chunk" => {
                    let Ok(data) = serde_json::from_str::<ChunkData>(&ev.data) else {
                        tracing::warn!(data = %ev.data, "ignoring a malformed chunk event");
                        continue;
                    };
                    let offset: u64 = ev.id.parse().unwrap_or(0);
                    let mut content = data.content;
                    if let (Some(pos), true) = (self.pos, offset > 0) {
                        if offset <= pos {
                            continue; // already delivered before a reconnect
                        }
                        let start = offset - content.len() as u64;
                        if start < pos {
                            let skip = (pos - start) as usize;
                            if content.is_char_boundary(skip) {
                                content.drain(..skip);
                            }
                        }
                    }
                    if offset > 0 {
                        self.pos = Some(offset);
                    }
                    return Some(Ok(FollowEvent::Chunk {
                        offset,
                        content,
                        stream: data.stream,
                    }));
                }
                "status" => {
                    if self.got_status {
                        continue; // resent after a reconnect
                    }
                    match serde_json::from_str::<StatusInfo>(&ev.data) {
                        Ok(s) => {
                            self.got_status = true;
                            return Some(Ok(FollowEvent::Status(s)));
                        }
                        Err(e) => tracing::warn!(%e, data = %ev.data, "ignoring a malformed status event"),
                    }
                }
                "done" => {
                    conn.close();
                    self.done = true;
                    return Some(Ok(FollowEvent::Done));
                }
                "lagged" => {
                    let d: LaggedData = serde_json::from_str(&ev.data).unwrap_or(LaggedData { from: None, to: None });
                    let from = d.from.or(self.pos).unwrap_or(0);
                    let to = d.to.or_else(|| ev.id.parse().ok()).unwrap_or(from);
                    self.pos = Some(self.pos.map_or(to, |p| p.max(to)));
                    return Some(Ok(FollowEvent::Lagged { from, to }));
                }
                _ => {} // heartbeat and anything newer
            }
        }
    }

    /// As a `futures` Stream.
    pub fn into_stream(self) -> impl Stream<Item = Result<FollowEvent, ClientError>> + Send {
        futures_util::stream::unfold(self, |mut f| async move { f.next().await.map(|ev| (ev, f)) })
    }
}

/// What an event stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Lifecycle(Box<LifecycleEvent>),
    /// The server could not replay what was missed while disconnected
    /// (restart or too old): re-list to resynchronise.
    Reset,
}

/// Lifecycle events; see [`Client::events`].
pub struct EventStream {
    conn: Resumable,
}

impl EventStream {
    pub(crate) fn new(client: Client, workspace: Option<String>) -> Self {
        let path = format!("/api/events{}", query(&[("workspace", workspace)]));
        EventStream {
            conn: Resumable::new(client, path, None),
        }
    }

    /// The next event; None only after an error ended the stream.
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            let ev = match self.conn.next().await? {
                Ok(ev) => ev,
                Err(e) => return Some(Err(e)),
            };
            match ev.event.as_str() {
                "reset" => return Some(Ok(Event::Reset)),
                "heartbeat" => {}
                _ => match serde_json::from_str::<LifecycleEvent>(&ev.data) {
                    Ok(le) => return Some(Ok(Event::Lifecycle(Box::new(le)))),
                    Err(e) => tracing::debug!(%e, event = %ev.event, "ignoring an event this client does not know"),
                },
            }
        }
    }

    /// Connects now instead of at the first `next`: events that happen
    /// after this returns are delivered.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        self.conn.open_now().await
    }

    /// The id a resume would send (`EPOCH-SEQ`).
    pub fn last_event_id(&self) -> Option<&str> {
        self.conn.last_id.as_deref()
    }

    pub fn into_stream(self) -> impl Stream<Item = Result<Event, ClientError>> + Send {
        futures_util::stream::unfold(self, |mut s| async move { s.next().await.map(|ev| (ev, s)) })
    }
}
