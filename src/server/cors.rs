//! CORS (`--cors-origin`): the allowed origin on every response, and
//! answers to preflight `OPTIONS` requests. Without the flag no CORS header
//! is sent and browsers keep other origins out.

use http::header::{self, HeaderValue};
use http::{HeaderMap, StatusCode};

use super::response::{self, Resp};

/// Methods a browser may use.
pub const ALLOW_METHODS: &str = "GET, POST, PATCH, DELETE, OPTIONS";
/// Request headers a browser may send (`Last-Event-ID` for EventSource).
pub const ALLOW_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";
/// Response headers scripts may read.
pub const EXPOSE_HEADERS: &str = "Location, Link, Prochub-Output-End, Prochub-Elided";
/// How long a browser may cache a preflight answer, in seconds.
pub const MAX_AGE_S: &str = "600";

/// Whether `--cors-origin` lets pages of `origin` in (`*`: any origin,
/// `null` included). The `Origin` guard (`server::origin`) asks this.
pub fn allows(cors_origin: Option<&str>, origin: &str) -> bool {
    match cors_origin {
        Some("*") => true,
        Some(allowed) => origin.eq_ignore_ascii_case(allowed.trim_end_matches('/')),
        None => false,
    }
}

/// Adds the CORS headers of a normal response.
pub fn decorate(origin: Option<&str>, headers: &mut HeaderMap) {
    let Some(value) = origin.and_then(|o| HeaderValue::from_str(o).ok()) else {
        return;
    };
    let specific = value != "*";
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    if specific {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// The answer to `OPTIONS` on a known path: 204 with `Allow`, plus the
/// preflight headers when CORS is on.
pub fn preflight(origin: Option<&str>, allow: &'static str) -> Resp {
    let mut resp = response::empty(StatusCode::NO_CONTENT);
    let h = resp.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static(allow));
    if origin.is_some() {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE_S));
    }
    resp
}
