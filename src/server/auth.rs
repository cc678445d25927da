//! Bearer-token auth (SPEC section 7): `Authorization: Bearer T` or
//! `?access_token=T` (EventSource cannot set headers), compared in
//! constant time so the token cannot be guessed byte by byte from timings.

use http::HeaderMap;
use http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::url::Query;

/// Checks a request against the configured token (if any).
pub fn check(token: Option<&str>, headers: &HeaderMap, query: &Query) -> Result<(), ApiError> {
    let Some(expected) = token else {
        return Ok(());
    };
    let from_header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    let given = from_header.or_else(|| query.access_token());
    match given {
        // An empty configured token matches nothing (fails closed); `serve`
        // refuses to start with one.
        Some(g) if !expected.is_empty() && bool::from(g.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}
