//! The client's error type, and the one place an HTTP error answer becomes
//! one: each variant names the cause the way a user can act on it ("start a
//! server", "pass --token", the server's message).

use std::path::PathBuf;

use http::StatusCode;
use serde::Deserialize;

use crate::model::{IdError, Process};

/// Errors of [`crate::client::Client`] and the layers built on it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the server's address (refused, no route, DNS).
    /// (`cause` is not part of the message: "connection refused" would
    /// only repeat it; it is there for logs.)
    #[error("no server at {url}: start one with `prochub serve`")]
    Unreachable { url: String, cause: String },
    /// The server wants a token we did not send, or refused ours.
    #[error("{}", if *.token_sent { "401: this server refused the token (check --token or PROCHUB_TOKEN)" } else { "401: this server needs --token" })]
    Unauthorized { token_sent: bool },
    /// The server answered with an error status and its JSON body.
    #[error("{message} ({status} {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
        /// On a 409 for an existing id: the stored record.
        existing: Option<Box<Process>>,
    },
    /// An append with `at` (`?at=N`) found the stored output ending at
    /// `output_bytes` instead (409 `offset_mismatch`): what the producer
    /// believes is stored is wrong. (An answer equal to `at` + the
    /// content's length means an earlier attempt was stored:
    /// [`crate::client::Client::append_output_at`] counts that as success
    /// and never returns this for it.)
    #[error("{message} (409 offset_mismatch)")]
    OffsetMismatch { output_bytes: u64, message: String },
    /// The connection broke during a request or a stream.
    #[error("connection to {url} failed: {message}")]
    Transport { url: String, message: String },
    #[error("{url} did not answer within {secs}s")]
    Timeout { url: String, secs: u64 },
    /// The server answered something this client does not understand.
    #[error("unexpected answer from {url}: {message}")]
    Protocol { url: String, message: String },
    #[error("invalid server URL {url:?}: {message}")]
    InvalidUrl { url: String, message: String },
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Reading or writing the offline queue or a workspace folder.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            ClientError::Unauthorized { .. } => Some(401),
            ClientError::OffsetMismatch { .. } => Some(409),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// The server could not be talked to at all, or the exchange broke
    /// off: the request may be retried later (the offline queue does).
    pub fn is_offline(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. } | ClientError::Transport { .. } | ClientError::Timeout { .. }
        )
    }

    /// Worth reconnecting a stream after: offline, or a server-side 5xx.
    pub fn is_retryable(&self) -> bool {
        self.is_offline() || self.status().is_some_and(|s| s >= 500)
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ClientError {
        let path = path.into();
        move |source| ClientError::Io { op, path, source }
    }
}

/// A bad id is refused before any request is made.
impl From<IdError> for ClientError {
    fn from(e: IdError) -> Self {
        ClientError::Invalid(e.to_string())
    }
}

/// A failed durable write of the offline queue.
impl From<crate::durable::WriteError> for ClientError {
    fn from(e: crate::durable::WriteError) -> Self {
        ClientError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

/// The JSON error body of SPEC section 2.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    existing: Option<Box<Process>>,
    /// On a 409 `offset_mismatch`: where the stored output ends.
    #[serde(default)]
    output_bytes: Option<u64>,
}

/// The `code` of a 409 answer to an append whose `?at=N` was not the end.
const OFFSET_MISMATCH: &str = "offset_mismatch";

/// Maps an error status and its body (JSON, or whatever a proxy in between
/// sent) to [`ClientError::Api`]; empty parts fall back to the status.
pub(crate) fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let (code, message, existing, output_bytes) = match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(b) => (b.code, b.error, b.existing, b.output_bytes),
        Err(_) => {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]);
            (String::new(), text.trim().to_owned(), None, None)
        }
    };
    if let (StatusCode::CONFLICT, OFFSET_MISMATCH, Some(output_bytes)) = (status, code.as_str(), output_bytes) {
        return ClientError::OffsetMismatch { output_bytes, message };
    }
    ClientError::Api {
        status: status.as_u16(),
        code: if code.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
                .replace(' ', "_")
        } else {
            code
        },
        message: if message.is_empty() {
            status.to_string()
        } else {
            message
        },
        existing,
    }
}

/// An error and its sources on one line.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_api_errors() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            br#"{"error":"process \"x\" not found","code":"not_found"}"#,
        );
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "process \"x\" not found (404 not_found)");
        let e = api_error(StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(e.status(), Some(502));
        assert!(e.is_retryable());
    }

    #[test]
    fn an_offset_mismatch_carries_where_the_output_ends() {
        let e = api_error(
            StatusCode::CONFLICT,
            br#"{"error":"output of process \"x\" ends at byte 12, not at 5","code":"offset_mismatch","output_bytes":12}"#,
        );
        assert!(
            matches!(e, ClientError::OffsetMismatch { output_bytes: 12, .. }),
            "{e:?}"
        );
        assert_eq!(e.status(), Some(409));
        assert!(!e.is_retryable());
        // Another 409 stays a plain API error.
        let e = api_error(StatusCode::CONFLICT, br#"{"error":"not running","code":"not_running"}"#);
        assert!(matches!(e, ClientError::Api { status: 409, .. }), "{e:?}");
    }
}
