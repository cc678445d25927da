//! Percent-encoding of URL components, shared by the server (path
//! segments, query strings, `Link` headers) and the client (query strings,
//! `Link` parsing), so a cursor or an id survives the round trip. Built on
//! the `percent-encoding` crate; the one rule of our own is strictness:
//! a malformed escape is an error, never passed through.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - _ . ~`)
/// is escaped: safe in a path segment and in a query value.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Why a component could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid percent-encoding in {0:?}")]
    BadEscape(String),
    #[error("percent-encoded bytes of {0:?} are not UTF-8")]
    NotUtf8(String),
}

/// Percent-encodes a path segment or query value.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Decodes `%XX` escapes, and `+` as a space when `plus` is set (query
/// strings). A `%` not followed by two hex digits, or escaped bytes that
/// are not UTF-8, are errors.
pub fn decode(s: &str, plus: bool) -> Result<String, DecodeError> {
    if !s.contains(['%', '+']) {
        return Ok(s.to_owned());
    }
    let b = s.as_bytes();
    let well_formed = b
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == b'%')
        .all(|(i, _)| b.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)));
    if !well_formed {
        return Err(DecodeError::BadEscape(s.to_owned()));
    }
    let spaced;
    let s = if plus && s.contains('+') {
        spaced = s.replace('+', " ");
        spaced.as_str()
    } else {
        s
    };
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| DecodeError::NotUtf8(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_escapes_all_but_unreserved() {
        for s in ["abc-_.~", "a b/c?d=e&f", "é%+", "01J0-cursor:2026"] {
            assert_eq!(decode(&encode(s), false).as_deref(), Ok(s));
        }
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn malformed_escapes_are_errors() {
        assert!(decode("%zz", false).is_err());
        assert!(decode("abc%2", false).is_err());
        assert!(decode("%FF", false).is_err());
        assert_eq!(decode("a+b", true).as_deref(), Ok("a b"));
        assert_eq!(decode("a+b", false).as_deref(), Ok("a+b"));
        assert_eq!(decode("%2B", true).as_deref(), Ok("+"));
    }
}
