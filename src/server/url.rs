//! Path segments and query strings, percent-decoded with [`crate::percent`].
//! Decoding happens before validation, so `%2F` or `%00` inside an id is
//! seen as `/` or NUL and refused by `Id::parse`.
//!
//! Query strings are strict, like request bodies: each endpoint has its
//! [`Params`], and [`Query::check`] refuses any other parameter, and a
//! repeated one that may be given only once, before the handler runs.

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

/// The name of the token parameter (`server::auth`), accepted on every
/// endpoint auth applies to, whatever its own parameters.
pub const ACCESS_TOKEN: &str = "access_token";

/// Longest unknown parameter name quoted back in an error message.
const MAX_NAME_IN_ERROR: usize = 64;

/// The query parameters one endpoint accepts (SPEC section 2: any other is
/// a 400 `invalid_query`). `Route::params` in the router says which set
/// each endpoint has; the OpenAPI test checks the document lists exactly
/// these, and [`Query`]'s getters check (in debug builds) that a handler
/// reads only from its set, so a parameter cannot be added to one and not
/// the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Parameters given at most once: a second copy is a 400, since
    /// "later wins" would silently drop one of two conflicting values.
    pub once: &'static [&'static str],
    /// Parameters that may repeat (such as `process=` of `/api/stream`,
    /// SPEC section 9). The pairs are kept in order for reading them all.
    pub repeated: &'static [&'static str],
}

impl Params {
    /// Parameters that are each given at most once.
    pub const fn once(names: &'static [&'static str]) -> Params {
        Params {
            once: names,
            repeated: &[],
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.once.contains(&name) || self.repeated.contains(&name)
    }

    /// Every name, in order, as an error message lists them.
    fn names(&self, auth: bool) -> Vec<&'static str> {
        let mut v: Vec<_> = self.once.iter().chain(self.repeated).copied().collect();
        if auth {
            v.push(ACCESS_TOKEN);
        }
        v
    }
}

/// Endpoints that read no parameter.
pub const NO_PARAMS: Params = Params::once(&[]);

/// `GET /api/processes/:id/output` (`handlers::output::read`).
pub const OUTPUT_READ_PARAMS: Params =
    Params::once(&["offset", "tail", "since", "until", "lines", "timestamps", "stream"]);

/// `POST /api/processes/:id/output` (`handlers::output::append`).
pub const OUTPUT_APPEND_PARAMS: Params = Params::once(&["at"]);

/// `GET /api/processes/:id/stream` (`server::sse::follow`).
pub const FOLLOW_PARAMS: Params = Params::once(&["from"]);

/// `GET /api/events` and `GET /ws` (`server::events::workspace_filter`).
pub const EVENTS_PARAMS: Params = Params::once(&["workspace"]);

/// A parsed query string: its pairs in order, and (once [`Query::check`]
/// passed) the set of parameters its endpoint accepts.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
    allowed: Option<Params>,
}

impl Query {
    pub fn parse(q: Option<&str>) -> Result<Query, ApiError> {
        let mut pairs = Vec::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((percent_decode(k, true)?, percent_decode(v, true)?));
        }
        Ok(Query { pairs, allowed: None })
    }

    /// Refuses (400 `invalid_query`, naming it) a parameter that is not in
    /// `params` (or `access_token` where `auth` applies), and a second copy
    /// of one that is not repeatable. Called by the router before any
    /// handler runs, so a refused request has changed nothing.
    pub fn check(&mut self, params: Params, auth: bool) -> Result<(), ApiError> {
        for (i, (k, _)) in self.pairs.iter().enumerate() {
            let known = params.contains(k) || (auth && k == ACCESS_TOKEN);
            if !known {
                return Err(unknown(k, &params.names(auth)));
            }
            let repeatable = params.repeated.contains(&k.as_str());
            if !repeatable && self.pairs[..i].iter().any(|(seen, _)| seen == k) {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("query parameter `{k}` is given more than once"),
                ));
            }
        }
        self.allowed = Some(params);
        Ok(())
    }

    /// The token, for `server::auth`, which runs before [`Query::check`].
    pub fn access_token(&self) -> Option<&str> {
        self.first(ACCESS_TOKEN)
    }

    /// The value of a parameter the endpoint accepts.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.assert_allowed(key);
        self.first(key)
    }

    fn first(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A handler reading a parameter outside its endpoint's set would
    /// accept it in the code and refuse it in the check: caught by any
    /// test that sends it.
    fn assert_allowed(&self, key: &str) {
        debug_assert!(
            self.allowed.is_some_and(|p| p.contains(key)),
            "query parameter `{key}` is read but not in its endpoint's `Params` (router: `Route::params`), or the query was never checked"
        );
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

/// The 400 of a parameter the endpoint does not take.
fn unknown(name: &str, allowed: &[&str]) -> ApiError {
    let shown: String = name.chars().take(MAX_NAME_IN_ERROR).collect();
    let ellipsis = if shown.len() < name.len() { "…" } else { "" };
    let hint = if allowed.is_empty() {
        "this endpoint takes no query parameters".to_owned()
    } else {
        format!("allowed: {}", allowed.join(", "))
    };
    ApiError::bad_request(
        "invalid_query",
        format!("unknown query parameter `{shown}{ellipsis}` ({hint})"),
    )
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
        let mut q = Query::parse(Some("a=1&b=x+y&c=%41")).unwrap();
        q.check(Params::once(&["a", "b", "c"]), false).unwrap();
        assert_eq!(q.get("b"), Some("x y"));
        assert_eq!(q.get("c"), Some("A"));
        assert_eq!(encode_component("1.a b"), "1.a%20b");
    }

    fn refusal(q: &str, params: Params, auth: bool) -> String {
        let mut q = Query::parse(Some(q)).unwrap();
        match q.check(params, auth) {
            Err(ApiError::BadRequest { code, message }) => {
                assert_eq!(code, "invalid_query");
                message
            }
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        let list = Params::once(&["status", "limit"]);
        let m = refusal("stauts=completed", list, true);
        assert_eq!(
            m,
            "unknown query parameter `stauts` (allowed: status, limit, access_token)"
        );
        // `access_token` only where auth applies.
        assert!(refusal("access_token=t", list, false).contains("`access_token`"));
        assert!(refusal("x=1", NO_PARAMS, false).contains("takes no query parameters"));
        assert!(refusal("limit=1&limit=2", list, true).contains("`limit` is given more than once"));
        assert!(refusal("access_token=a&access_token=b", list, true).contains("more than once"));
        let long = "k".repeat(1000);
        assert!(refusal(&long, list, false).len() < 200);

        let stream = Params {
            once: &["since"],
            repeated: &["process"],
        };
        let mut q = Query::parse(Some("process=a&since=1m&process=b&access_token=t")).unwrap();
        assert_eq!(q.access_token(), Some("t"));
        q.check(stream, true).unwrap();
        assert_eq!(q.get("process"), Some("a"));
        assert_eq!(q.get("since"), Some("1m"));
        let mut empty = Query::parse(None).unwrap();
        empty.check(NO_PARAMS, false).unwrap();
    }

    #[test]
    #[should_panic(expected = "`tail` is read but not in its endpoint's `Params`")]
    fn reading_an_undeclared_parameter_is_a_bug() {
        let mut q = Query::parse(Some("offset=1")).unwrap();
        q.check(Params::once(&["offset"]), false).unwrap();
        let _ = q.get("tail");
    }
}
