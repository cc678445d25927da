//! Path segments and query strings, percent-decoded with [`crate::percent`].
//! Decoding happens before validation, so `%2F` or `%00` inside an id is
//! seen as `/` or NUL and refused by `Id::parse`.

use std::collections::HashMap;

use super::error::ApiError;

/// Decodes `%XX` escapes (and `+` as space when `plus` is set). Invalid
/// escapes or bytes that are not UTF-8 are a 400.
pub fn percent_decode(s: &str, plus: bool) -> Result<String, ApiError> {
    crate::percent::decode(s, plus).map_err(|e| ApiError::bad_request("invalid_encoding", e.to_string()))
}

/// The decoded segments of a path: `/api/processes/x` → `["api",
/// "processes", "x"]`. A trailing slash is ignored; empty inner segments
/// are kept (so `//` never matches a route).
pub fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed.split('/').map(|s| percent_decode(s, false)).collect()
}

/// A parsed query string. Later duplicates win.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Result<Query, ApiError> {
        let mut map = HashMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k, true)?, percent_decode(v, true)?);
        }
        Ok(Query(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The parameter names given (each once).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// A non-negative integer parameter.
    pub fn u64(&self, key: &'static str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("query parameter `{key}` must be a non-negative integer, got {v:?}"),
                    )
                })
            })
            .transpose()
    }

    /// A boolean parameter (`true`/`false`/`1`/`0`).
    pub fn bool(&self, key: &'static str) -> Result<bool, ApiError> {
        match self.get(key) {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1" | "") => Ok(true),
            Some(v) => Err(ApiError::bad_request(
                "invalid_query",
                format!("query parameter `{key}` must be true or false, got {v:?}"),
            )),
        }
    }
}

/// Percent-encodes a query value (for `Link` headers).
pub use crate::percent::encode as encode_component;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_segments_and_queries() {
        assert_eq!(segments("/api/processes/a%2Fb/").unwrap(), ["api", "processes", "a/b"]);
        assert_eq!(segments("/").unwrap(), Vec::<String>::new());
        assert!(segments("/x%zz").is_err());
        assert!(segments("/x%ff").is_err());
        let q = Query::parse(Some("a=1&b=x+y&c=%41")).unwrap();
        assert_eq!(q.get("b"), Some("x y"));
        assert_eq!(q.get("c"), Some("A"));
        assert_eq!(encode_component("1.a b"), "1.a%20b");
    }
}
