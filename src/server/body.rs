//! Reading request bodies: the limit is enforced while reading (never more
//! than `max_body` bytes are buffered), and the content type is checked
//! before anything is read.
//!
//! Why not just `http_body_util::Limited`: after an over-limit body is
//! refused we still read (and discard, up to [`DRAIN_MAX`] bytes or
//! [`DRAIN_TIME`]) what the client keeps sending. Closing a socket with
//! unread data makes the kernel send a reset, and the client then often
//! loses our 413 and sees a dropped connection instead.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Most bytes of a refused body that are read and thrown away so the client
/// gets to see the error response.
pub const DRAIN_MAX: u64 = 64 * 1024 * 1024;
/// Longest time spent draining a refused body.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

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
        discard(body).await;
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
/// (at once when `Content-Length` already says so).
pub async fn read(headers: &HeaderMap, mut body: Incoming, limit: u64) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        discard(body).await;
        return Err(ApiError::TooLarge { limit });
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BodyRead(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                discard(body).await;
                return Err(ApiError::TooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
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
