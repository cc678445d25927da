//! Limits on a request's head (SPEC section 12): the request line at most
//! [`MAX_REQUEST_LINE`] bytes (414 past it), header fields at most
//! [`MAX_HEADER_BYTES`] bytes and [`MAX_HEADERS`] fields (431 past either).
//!
//! # Who enforces what
//! * hyper, while parsing: more than [`MAX_HEADERS`] fields (its default
//!   header array; setting it explicitly would move that array to the heap
//!   for every request), and a head longer than [`MAX_HEAD`] (its
//!   `max_header_size`). It answers those itself, with an empty body that
//!   [`super::malformed`] rewrites into JSON.
//! * [`check`], before routing: the finer limits inside [`MAX_HEAD`], so a
//!   30 KiB request line is a 414 and 70 KiB of headers a 431, each with a
//!   JSON body, on a connection that stays usable.

use http::Request;

use super::error::ApiError;

/// Longest request line (method, target, version and the spaces).
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Most bytes of header fields, counted as sent (`name: value` + CRLF).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most header fields. This is hyper's default, which hyper enforces.
pub const MAX_HEADERS: usize = 100;
/// Longest head hyper parses at all: a request line and the header fields
/// each at their limit, plus the CRLFs around them. Past it hyper stops
/// reading and answers 431 (or 414, see `super::malformed`).
pub const MAX_HEAD: usize = MAX_REQUEST_LINE + 2 + MAX_HEADER_BYTES + 2;

/// The `limit` text of a 431.
pub const HEADERS_LIMIT: &str = "at most 65536 bytes and 100 fields";

/// Refuses a head that hyper parsed but that is over a limit.
pub fn check<B>(req: &Request<B>) -> Result<(), ApiError> {
    let target = req
        .uri()
        .path_and_query()
        .map_or(req.uri().path().len(), |pq| pq.as_str().len());
    // "METHOD SP target SP HTTP/1.1"
    let line = req.method().as_str().len() + 1 + target + 1 + "HTTP/1.1".len();
    if line > MAX_REQUEST_LINE {
        return Err(ApiError::UriTooLong {
            limit: MAX_REQUEST_LINE,
        });
    }
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    if bytes > MAX_HEADER_BYTES || headers.len() > MAX_HEADERS {
        return Err(ApiError::HeadersTooLarge { limit: HEADERS_LIMIT });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_text_says_the_limits() {
        assert_eq!(
            HEADERS_LIMIT,
            format!("at most {MAX_HEADER_BYTES} bytes and {MAX_HEADERS} fields")
        );
    }
}
