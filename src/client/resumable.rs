//! An SSE request that survives a dropped connection, under both of the
//! client's streams ([`super::Follower`], [`super::EventStream`]).
//!
//! `Resumable` opens the request, parses it with [`SseParser`], and when
//! the connection drops (reset, server restart, a stream that ends without
//! its final event, silence longer than the idle timeout) opens a new one
//! carrying `Last-Event-ID`, after a bounded exponential backoff. The
//! server replays from that id.

use std::time::Duration;

use http::{Method, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::error::{ClientError, api_error, error_chain};
use super::sse::{SseEvent, SseParser};
use super::transport::{Client, REQUEST_TIMEOUT};

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
pub(crate) struct Resumable {
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
    pub(crate) fn new(client: Client, path_and_query: String) -> Self {
        Resumable {
            client,
            path_and_query,
            last_id: None,
            body: None,
            parser: SseParser::new(),
            connected_once: false,
            failures: 0,
            retry_hint: None,
            closed: false,
        }
    }

    /// The id a resume would send.
    pub(crate) fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Ends the stream: no more events, no reconnect.
    pub(crate) fn close(&mut self) {
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
    pub(crate) async fn open_now(&mut self) -> Result<(), ClientError> {
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
    pub(crate) async fn next(&mut self) -> Option<Result<SseEvent, ClientError>> {
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
            if self.body.is_none() {
                if let Err(e) = self.reconnect().await {
                    self.close();
                    return Some(Err(e));
                }
            } else {
                self.read_frame().await;
            }
        }
    }

    /// One attempt to (re)open the connection, after the backoff delay.
    /// A retryable failure is counted and swallowed (the caller loops); an
    /// error is final: the first connection failed, the error is not
    /// retryable, or the attempts are used up.
    async fn reconnect(&mut self) -> Result<(), ClientError> {
        if self.connected_once && self.failures > 0 {
            tokio::time::sleep(self.delay()).await;
        }
        match self.connect().await {
            Ok(body) => self.attach(body),
            Err(e) if self.connected_once && e.is_retryable() => {
                self.failures += 1;
                if self.failures >= self.client.policy().max_attempts {
                    return Err(e);
                }
                tracing::debug!(err = %e, attempt = self.failures, "stream reconnect failed");
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Feeds the next body frame to the parser, or notes that the
    /// connection dropped (the next `next` reconnects).
    async fn read_frame(&mut self) {
        let idle = self.client.policy().idle_timeout;
        let body = self.body.as_mut().expect("called with a connection");
        let why = match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    self.parser.feed(&data);
                    self.failures = 0;
                    if let Some(ms) = self.parser.retry_ms() {
                        self.retry_hint = Some(Duration::from_millis(ms));
                    }
                }
                return;
            }
            Ok(Some(Err(e))) => error_chain(&e),
            Ok(None) => "the server ended the stream".to_owned(),
            Err(_) => format!("no data for {}s", idle.as_secs()),
        };
        tracing::debug!(path = %self.path_and_query, %why, "stream dropped; reconnecting");
        self.body = None;
        // Counts as a failure so that a server that keeps closing at once
        // is not hammered.
        self.failures += 1;
    }
}
