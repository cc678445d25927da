//! The one place that turns an error into an HTTP status and the JSON body
//! `{"error": "...", "code": "..."}` (plus `existing` for a 409 on an
//! existing process id, and `field` for an invalid field).
//!
//! Server faults are answered without their details (paths stay private),
//! except the ones an operator fixes ([`Fault`]: a full disk, a read-only
//! folder, no descriptors left): those say what happened and name the file
//! by its place in the data folder (`processes/ID.json`), never by its
//! absolute path.

use http::StatusCode;
use http::header::{ALLOW, HeaderValue};
use serde_json::{Map, Value, json};

use super::response::{self, Resp};
use crate::store::{Fault, StoreError};

/// `Retry-After` of every `503 busy` (out of file descriptors, or no room
/// in the body budget): descriptors and budget come back as connections,
/// reads and bodies end, usually within a second.
pub const BUSY_RETRY_AFTER_SECS: u32 = 1;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bad input found by the server layer (query, path, body shape).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("no route for {path}")]
    NoRoute { path: String },
    #[error("method {method} is not allowed here (allowed: {allow})")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("unsupported content type {got:?}: send {expected}")]
    UnsupportedType { got: String, expected: &'static str },
    #[error("missing or wrong token")]
    Unauthorized,
    #[error("this server does not run commands (start it with --allow-exec)")]
    ExecDisabled,
    #[error("reading the request body failed: {0}")]
    BodyRead(String),
    /// A request hyper could not parse (request line or header syntax).
    #[error("malformed request: the request line or a header could not be parsed")]
    Malformed,
    #[error("the request line is longer than the limit of {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("request headers are over the limit ({limit})")]
    HeadersTooLarge { limit: &'static str },
    /// A browser request from a page of another origin (`server::origin`).
    #[error("requests from origin {origin:?} are refused: it is neither this server nor --cors-origin")]
    ForbiddenOrigin { origin: String },
    /// A `Host` this server does not answer for (DNS rebinding).
    #[error("this server does not answer for host {host:?} (see --allowed-host)")]
    MisdirectedHost { host: String },
    /// The body did not arrive in full within the body timeout.
    #[error("the request body did not arrive within {limit:?}")]
    BodyTimeout { limit: std::time::Duration },
    /// No room in the budget of body bytes read at once (`server::body`).
    #[error("the server is reading too many request bodies at once; retry in {BUSY_RETRY_AFTER_SECS} s")]
    Busy,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// Status and `code` of this error.
    pub(crate) fn status_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::Store(e) => store_status(e),
            ApiError::BadRequest { code, .. } => (S::BAD_REQUEST, code),
            ApiError::NoRoute { .. } => (S::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed { .. } => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::TooLarge { .. } => (S::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::UnsupportedType { .. } => (S::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::Unauthorized => (S::UNAUTHORIZED, "unauthorized"),
            ApiError::ExecDisabled => (S::FORBIDDEN, "exec_disabled"),
            ApiError::BodyRead(_) => (S::BAD_REQUEST, "body_read_failed"),
            ApiError::Malformed => (S::BAD_REQUEST, "malformed_request"),
            ApiError::UriTooLong { .. } => (S::URI_TOO_LONG, "uri_too_long"),
            ApiError::HeadersTooLarge { .. } => (S::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large"),
            ApiError::ForbiddenOrigin { .. } => (S::FORBIDDEN, "forbidden_origin"),
            ApiError::MisdirectedHost { .. } => (S::MISDIRECTED_REQUEST, "misdirected_host"),
            ApiError::BodyTimeout { .. } => (S::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Busy => (S::SERVICE_UNAVAILABLE, "busy"),
        }
    }

    /// The response for this error. Server faults are logged here and
    /// answered without their details (paths stay private).
    pub fn into_response(self) -> Resp {
        let (status, code) = self.status_code();
        let fault = match &self {
            ApiError::Store(e) => e.fault(),
            _ => None,
        };
        let message = match fault {
            Some((fault, path)) => {
                tracing::error!(error = %self, "request failed");
                fault_message(fault, path, &self)
            }
            // A 503 `busy` is load, not a fault: its message is for the client.
            None if status.is_server_error() && !matches!(self, ApiError::Busy) => {
                tracing::error!(error = %self, "request failed");
                "internal server error".to_owned()
            }
            None => self.to_string(),
        };
        let mut body = Map::new();
        body.insert("error".into(), Value::String(message));
        body.insert("code".into(), Value::String(code.into()));
        match &self {
            ApiError::Store(StoreError::ProcessExists { existing }) => {
                body.insert("existing".into(), json!(existing));
            }
            ApiError::Store(StoreError::OffsetMismatch { output_bytes, .. }) => {
                body.insert("output_bytes".into(), json!(output_bytes));
            }
            ApiError::Store(StoreError::Invalid { field, .. }) => {
                body.insert("field".into(), Value::String((*field).into()));
            }
            _ => {}
        }
        let mut resp = response::json(status, &body);
        match &self {
            ApiError::MethodNotAllowed { allow, .. } => {
                resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Unauthorized => {
                resp.headers_mut()
                    .insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        if matches!(self, ApiError::Busy) || matches!(fault, Some((Fault::Busy, _))) {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(BUSY_RETRY_AFTER_SECS));
        }
        resp
    }
}

/// What an operator needs to hear about a fault: what is wrong, and where.
fn fault_message(fault: Fault, path: &std::path::Path, err: &ApiError) -> String {
    let place = data_path(path);
    let os = match err {
        ApiError::Store(StoreError::Io { source, .. } | StoreError::NotDurable { source, .. }) => source.to_string(),
        _ => String::new(),
    };
    match fault {
        Fault::NoSpace => format!("the disk of the data folder is full: cannot write {place} ({os})"),
        Fault::ReadOnly => format!("the data folder cannot be written: cannot write {place} ({os})"),
        Fault::Busy => format!("the server is out of file descriptors: cannot open {place} ({os}); try again"),
    }
}

/// `processes/ID.json`: a store path by its folder and file name, which
/// say which record it is without telling a client where the data lives.
fn data_path(path: &std::path::Path) -> String {
    let mut parts: Vec<_> = path.components().rev().take(2).collect();
    parts.reverse();
    parts
        .iter()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn store_status(e: &StoreError) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match e {
        StoreError::InvalidId { .. } => (S::BAD_REQUEST, "invalid_id"),
        StoreError::Invalid { .. } => (S::BAD_REQUEST, "invalid_field"),
        StoreError::BadCursor(_) => (S::BAD_REQUEST, "invalid_cursor"),
        StoreError::UnknownWorkspace(_) => (S::BAD_REQUEST, "unknown_workspace"),
        StoreError::NotFound { .. } => (S::NOT_FOUND, "not_found"),
        StoreError::ProcessExists { .. } => (S::CONFLICT, "already_exists"),
        StoreError::BadTransition { .. } => (S::CONFLICT, "invalid_transition"),
        StoreError::NotRunning { .. } => (S::CONFLICT, "not_running"),
        StoreError::OffsetMismatch { .. } => (S::CONFLICT, "offset_mismatch"),
        StoreError::WorkspaceNotEmpty { .. } => (S::CONFLICT, "workspace_not_empty"),
        StoreError::DefaultWorkspace => (S::CONFLICT, "default_workspace"),
        StoreError::Io { .. } | StoreError::NotDurable { .. } => match e.fault() {
            Some((Fault::NoSpace, _)) => (S::INSUFFICIENT_STORAGE, "insufficient_storage"),
            Some((Fault::ReadOnly, _)) => (S::SERVICE_UNAVAILABLE, "read_only"),
            Some((Fault::Busy, _)) => (S::SERVICE_UNAVAILABLE, "busy"),
            None => (S::INTERNAL_SERVER_ERROR, "internal"),
        },
        StoreError::Locked { .. } | StoreError::Encode { .. } | StoreError::Task(_) => {
            (S::INTERNAL_SERVER_ERROR, "internal")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error(code: i32) -> ApiError {
        ApiError::Store(StoreError::Io {
            op: "create a temp file for",
            path: "/srv/secret/prochub/processes/abc.json".into(),
            source: std::io::Error::from_raw_os_error(code),
        })
    }

    #[test]
    fn storage_faults_get_their_own_status_and_name_the_data_path_only() {
        for (code, status, name) in [
            (nix::libc::ENOSPC, 507, "insufficient_storage"),
            (nix::libc::EDQUOT, 507, "insufficient_storage"),
            (nix::libc::EROFS, 503, "read_only"),
            (nix::libc::EMFILE, 503, "busy"),
            (nix::libc::ENFILE, 503, "busy"),
            (nix::libc::EIO, 500, "internal"),
        ] {
            let err = io_error(code);
            assert_eq!(err.status_code(), (StatusCode::from_u16(status).unwrap(), name));
            let resp = err.into_response();
            assert_eq!(resp.status().as_u16(), status);
            assert_eq!(
                resp.headers().get(http::header::RETRY_AFTER).is_some(),
                name == "busy",
                "Retry-After only on busy"
            );
        }
        let msg = fault_message(
            Fault::NoSpace,
            std::path::Path::new("/srv/secret/prochub/processes/abc.json"),
            &io_error(nix::libc::ENOSPC),
        );
        assert!(msg.contains("processes/abc.json") && !msg.contains("secret"), "{msg}");
    }

    #[test]
    fn a_fault_wrapped_with_its_path_is_still_classified() {
        // An error wrapped with its path carries the code one level down.
        let inner = std::io::Error::from_raw_os_error(nix::libc::EMFILE);
        let wrapped = std::io::Error::new(inner.kind(), inner);
        assert_eq!(wrapped.raw_os_error(), None);
        assert_eq!(Fault::of(&wrapped), Some(Fault::Busy));
    }
}
