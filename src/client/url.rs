//! Server addresses and query strings: what the client puts in a URL.

use http::Uri;

use super::error::ClientError;
use crate::percent;

/// Default server address when nothing else names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// Normalises a server address: `host:port` gets `http://`, a trailing
/// slash goes; https and paths are refused (the server speaks plain HTTP).
pub fn normalize_url(url: &str) -> Result<String, ClientError> {
    let bad = |message: &str| ClientError::InvalidUrl {
        url: url.to_owned(),
        message: message.to_owned(),
    };
    let trimmed = url.trim().trim_end_matches('/');
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let uri: Uri = with_scheme.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "https is not supported; prochub serves plain HTTP (put a proxy in front)",
            ));
        }
        _ => return Err(bad("the scheme must be http")),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(bad("give only the scheme, host and port"));
    }
    Ok(format!("http://{authority}"))
}

/// Builds `?a=1&b=2` from the pairs that have a value ("" when none).
pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", percent::encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised() {
        assert_eq!(normalize_url("127.0.0.1:7070").unwrap(), "http://127.0.0.1:7070");
        assert_eq!(normalize_url("http://localhost:80/").unwrap(), "http://localhost:80");
        assert!(normalize_url("https://x:1").is_err());
        assert!(normalize_url("http://x:1/api").is_err());
        assert!(normalize_url("").is_err());
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(
            query(&[("a", Some("x y/z".into())), ("b", None), ("c", Some("1".into()))]),
            "?a=x%20y%2Fz&c=1"
        );
        assert_eq!(query(&[("a", None)]), "");
    }
}
