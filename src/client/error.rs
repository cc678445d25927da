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
}

/// Maps an error status and its body (JSON, or whatever a proxy in between
/// sent) to [`ClientError::Api`]; empty parts fall back to the status.
pub(crate) fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let (code, message, existing) = match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(b) => (b.code, b.error, b.existing),
        Err(_) => {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]);
            (String::new(), text.trim().to_owned(), None)
        }
    };
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
}
