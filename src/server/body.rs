//! Reading request bodies: the limit is enforced while reading (never more
//! than `max_body` bytes are buffered), and the content type is checked
//! before anything is read.
//!
//! # Slow and many bodies (issue 8)
//! A body must arrive in full within the server's body timeout (408
//! `request_timeout` past it), and the bytes of all bodies being read at
//! once come out of one [`Budget`]: a body reserves its declared length
//! (or, when chunked, each frame as it arrives) before it is read, waits
//! at most [`BUDGET_WAIT`] for room, and is refused with 503 `busy` and
//! `Retry-After` past that. Before both, 1,000 POSTs that sent all but the
//! last byte of a 1 MiB body held 1.57 GB for as long as they liked.
//!
//! The server's [`Limits`] reach this module through a task-local set
//! around each request's future (`server::serve_connection`): every
//! handler reads its body through here, and none has to pass them along.
//!
//! Why not just `http_body_util::Limited`: after an over-limit body is
//! refused we still read (and discard, up to [`DRAIN_MAX`] bytes or
//! [`DRAIN_TIME`]) what the client keeps sending. Closing a socket with
//! unread data makes the kernel send a reset, and the client then often
//! loses our 413 and sees a dropped connection instead.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, EXPECT};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::error::ApiError;

/// Most bytes of a refused body that are read and thrown away so the client
/// gets to see the error response.
pub const DRAIN_MAX: u64 = 64 * 1024 * 1024;
/// Longest time spent draining a refused body.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Default time a request body has to arrive in full, counted from when
/// its handler starts reading it: 1 MiB in 30 s is 35 KB/s, slower than
/// any link a client of this server sits behind.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default budget of body bytes buffered at once over all requests: 128
/// bodies at the default 1 MiB limit, far more than honest clients of a
/// process hub send at once (appends are small), and an eighth of the
/// 1 GiB a hostile crowd may cost the server in all.
pub const DEFAULT_BODY_BUDGET: u64 = 128 * 1024 * 1024;
/// Bodies of at most this many bytes need no room in the budget: every
/// create and patch and most appends, so a crowd holding the budget with
/// big slow bodies does not stall real clients' small ones (measured: a
/// create waited 5 s for a 503 behind 2,000). 20,000 such bodies held at
/// once cost at most 320 MiB, inside the 1 GiB a hostile crowd may cost.
pub const FREE_BODY: u64 = 16 * 1024;
/// Longest wait for room in the budget before a body is refused with 503.
pub const BUDGET_WAIT: Duration = Duration::from_secs(5);
/// The budget counts in units of this many bytes (a tokio semaphore
/// counts permits in u32, and a budget may pass 4 GiB).
const UNIT: u64 = 1024;

/// The bytes of bodies being read at once, shared by every connection of a
/// server. A semaphore, so waiting bodies are served in arrival order.
pub struct Budget {
    units: Arc<Semaphore>,
    total: u32,
}

impl Budget {
    /// A budget of `bytes`, at least `max_body` (a body the limit allows
    /// must fit, or it would wait for nothing).
    pub fn new(bytes: u64, max_body: u64) -> Self {
        let total = u32::try_from(bytes.max(max_body).div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .max(1);
        Budget {
            units: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }
}

/// What [`read`] needs from the server: one per server, shared.
pub struct Limits {
    pub budget: Budget,
    pub timeout: Duration,
}

tokio::task_local! {
    /// The serving server's [`Limits`], set around each request's future.
    pub static LIMITS: Arc<Limits>;
}

/// The part of the budget one body holds; given back when dropped.
struct Held {
    budget: Option<Arc<Limits>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Held {
    fn units(&self) -> u64 {
        self.permit.as_ref().map_or(0, |p| p.num_permits() as u64)
    }

    /// Holds room for `bytes` in all, waiting at most until `until`.
    async fn grow_to(&mut self, bytes: u64, until: Instant) -> Result<(), ApiError> {
        let Some(limits) = &self.budget else {
            return Ok(());
        };
        if bytes <= FREE_BODY {
            return Ok(());
        }
        let want = bytes.div_ceil(UNIT).min(limits.budget.total as u64);
        let more = want.saturating_sub(self.units());
        if more == 0 {
            return Ok(());
        }
        let more = u32::try_from(more).expect("at most the budget's u32 total");
        let acquire = limits.budget.units.clone().acquire_many_owned(more);
        let permit = match tokio::time::timeout_at(until, acquire).await {
            Ok(p) => p.expect("the budget's semaphore is never closed"),
            Err(_) => {
                return Err(ApiError::Busy);
            }
        };
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
        Ok(())
    }
}

/// The media types a body may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Json,
    Text,
}

/// The kind of the request's `Content-Type`, if it is one we take.
/// Parameters (`; charset=utf-8`) are ignored.
pub fn content_kind(headers: &HeaderMap) -> Option<Kind> {
    let ct = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" | "application/merge-patch+json" => Some(Kind::Json),
        "text/plain" => Some(Kind::Text),
        _ => None,
    }
}

/// Requires a JSON content type, then reads and parses the body.
pub async fn json<T: DeserializeOwned>(headers: &HeaderMap, body: Incoming, limit: u64) -> Result<T, ApiError> {
    if content_kind(headers) != Some(Kind::Json) {
        refuse(headers, body).await;
        return Err(unsupported(headers, "application/json"));
    }
    let bytes = read(headers, body, limit).await?;
    parse_json(&bytes)
}

/// Parses a JSON object, mapping serde's complaint to a 400. Every body
/// the API takes is an object. Regression (found by schemathesis): serde
/// also builds a struct from an array, so `[null, null]` was a valid patch.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(ApiError::bad_request(
            "invalid_field",
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_data() { "invalid_field" } else { "invalid_json" };
        ApiError::bad_request(code, format!("invalid request body: {e}"))
    })
}

pub fn unsupported(headers: &HeaderMap, expected: &'static str) -> ApiError {
    let got = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_else(|| "(none)".into());
    ApiError::UnsupportedType { got, expected }
}

/// Reads the whole body, refusing it with 413 as soon as it passes `limit`
/// (at once when `Content-Length` already says so), with 408 when it does
/// not arrive within the body timeout, and with 503 when the budget has no
/// room for it within [`BUDGET_WAIT`].
pub async fn read(headers: &HeaderMap, mut body: Incoming, limit: u64) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        refuse(headers, body).await;
        return Err(ApiError::TooLarge { limit });
    }
    let limits = LIMITS.try_with(Arc::clone).ok();
    let timeout = limits.as_ref().map_or(DEFAULT_BODY_TIMEOUT, |l| l.timeout);
    let mut held = Held {
        budget: limits,
        permit: None,
    };
    // Room for the declared length before the first poll of the body,
    // which is what sends `100 Continue` to a client that asked for it.
    let declared = declared.unwrap_or(0);
    held.grow_to(declared, Instant::now() + BUDGET_WAIT).await?;
    let deadline = Instant::now() + timeout;
    let mut buf = BytesMut::with_capacity(declared as usize);
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => return Err(ApiError::BodyTimeout { limit: timeout }),
        };
        let frame = frame.map_err(|e| ApiError::BodyRead(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            let len = (buf.len() + data.len()) as u64;
            if len > limit {
                discard(body).await;
                return Err(ApiError::TooLarge { limit });
            }
            // A chunked body (or one longer than it said) takes its room
            // as it comes, within the same deadline.
            held.grow_to(len, deadline.min(Instant::now() + BUDGET_WAIT)).await?;
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Whether the client waits for `100 Continue` before it sends the body.
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Refuses a body before reading any of it. A client that sent
/// `Expect: 100-continue` has sent nothing yet: dropping the body unread
/// makes hyper skip the `100 Continue` (and close the connection after the
/// answer), so the client gets its 4xx without uploading. Regression: the
/// drain polled the body, hyper answered `100 Continue`, and the client
/// sent the whole over-limit body for nothing. Anything else is drained.
pub async fn refuse(headers: &HeaderMap, body: Incoming) {
    if expects_continue(headers) {
        drop(body);
    } else {
        discard(body).await;
    }
}

/// Reads and drops the rest of a refused body, within [`DRAIN_MAX`] and
/// [`DRAIN_TIME`]; beyond that hyper closes the connection.
pub async fn discard(mut body: Incoming) {
    let drain = async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len() as u64;
                if seen > DRAIN_MAX {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}
