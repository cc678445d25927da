//! The one place that turns an error into an HTTP status and the JSON body
//! `{"error": "...", "code": "..."}` (plus `existing` for a 409 on an
//! existing process id, and `field` for an invalid field).

use http::StatusCode;
use http::header::{ALLOW, HeaderValue};
use serde_json::{Map, Value, json};

use super::response::{self, Resp};
use crate::store::StoreError;

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
    /// The body did not arrive in full within the body timeout.
    #[error("the request body did not arrive within {limit:?}")]
    BodyTimeout { limit: std::time::Duration },
    /// No room in the budget of body bytes read at once (`server::body`).
    #[error("the server is reading too many request bodies at once; retry in {retry_after} s")]
    Busy { retry_after: u64 },
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
            ApiError::BodyTimeout { .. } => (S::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Busy { .. } => (S::SERVICE_UNAVAILABLE, "busy"),
        }
    }

    /// The response for this error. Server faults are logged here and
    /// answered without their details (paths stay private).
    pub fn into_response(self) -> Resp {
        let (status, code) = self.status_code();
        // A 503 `busy` is load, not a fault: its message is for the client.
        let message = if status.is_server_error() && !matches!(self, ApiError::Busy { .. }) {
            tracing::error!(error = %self, "request failed");
            "internal server error".to_owned()
        } else {
            self.to_string()
        };
        let mut body = Map::new();
        body.insert("error".into(), Value::String(message));
        body.insert("code".into(), Value::String(code.into()));
        match &self {
            ApiError::Store(StoreError::ProcessExists { existing }) => {
                body.insert("existing".into(), json!(existing));
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
            ApiError::Busy { retry_after } => {
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        resp
    }
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
        StoreError::WorkspaceNotEmpty { .. } => (S::CONFLICT, "workspace_not_empty"),
        StoreError::DefaultWorkspace => (S::CONFLICT, "default_workspace"),
        StoreError::Locked { .. } | StoreError::Io { .. } | StoreError::Encode { .. } | StoreError::Task(_) => {
            (S::INTERNAL_SERVER_ERROR, "internal")
        }
    }
}
