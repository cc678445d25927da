//! [`Client`]: typed calls for every endpoint of SPEC section 2, over
//! hyper-util's pooled HTTP/1 client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::ClientError;
use super::stream::{EventStream, Follower, ReconnectPolicy};
use crate::model::{NewProcess, NewWorkspace, Process, ProcessPatch, Status, Workspace};

/// Default server address when nothing else names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";
/// Time allowed to open a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a whole non-streaming request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub uptime_s: f64,
}

/// Filters and paging of `GET /api/processes`.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub workspace: Option<String>,
    pub status: Option<Status>,
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of processes, newest first.
#[derive(Debug, Clone)]
pub struct ProcessPage {
    pub items: Vec<Process>,
    /// Present when the server announced a next page (`Link: rel="next"`).
    pub next_cursor: Option<String>,
}

/// Which part of the stored output to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputRange {
    All,
    /// From this byte offset to the end.
    From(u64),
    /// The last N bytes.
    Tail(u64),
}

/// A handle on one server. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient<HttpConnector, Full<Bytes>>,
    /// `http://host:port`, no trailing slash.
    base: String,
    token: Option<String>,
    /// Requests attempted so far (tests check that an offline client
    /// attempts none).
    requests: AtomicU64,
    policy: ReconnectPolicy,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

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

/// Percent-encodes a query value (everything but RFC 3986 unreserved).
pub(crate) use crate::percent::encode;

fn decode(value: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let pair = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? * 16 + hex(bytes[i + 2])?))
            .flatten();
        match (pair, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Builds `?a=1&b=2` from the pairs that have a value ("" when none).
pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The `cursor` of the `rel="next"` target of a `Link` header.
fn next_cursor(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "").eq_ignore_ascii_case("rel=\"next\"") || p.trim() == "rel=next");
        if !is_next {
            return None;
        }
        let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let (_, q) = url.split_once('?')?;
        q.split('&').find_map(|kv| kv.strip_prefix("cursor=")).map(decode)
    })
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

impl Client {
    /// A client of the server at `url` (`http://host:port` or `host:port`).
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = normalize_url(url)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                token: token.filter(|t| !t.is_empty()),
                requests: AtomicU64::new(0),
                policy: ReconnectPolicy::default(),
            }),
        })
    }

    /// The same server with another reconnect policy for streams.
    pub fn with_policy(&self, policy: ReconnectPolicy) -> Self {
        Client {
            inner: Arc::new(Inner {
                http: self.inner.http.clone(),
                base: self.inner.base.clone(),
                token: self.inner.token.clone(),
                requests: AtomicU64::new(0),
                policy,
            }),
        }
    }

    /// `http://host:port` of the server.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    pub(crate) fn policy(&self) -> &ReconnectPolicy {
        &self.inner.policy
    }

    /// Requests this client attempted (connected or not).
    pub fn requests_attempted(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Sends a request and returns the response head with its body still
    /// streaming (for SSE). `extra` headers are added as given.
    pub(crate) async fn send_raw(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(&'static str, Bytes)>,
        extra: &[(header::HeaderName, String)],
    ) -> Result<Response<Incoming>, ClientError> {
        let url = format!("{}{}", self.inner.base, path_and_query);
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(token) = &self.inner.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in extra {
            let value = HeaderValue::from_str(value)
                .map_err(|_| ClientError::Invalid(format!("header {name}: {value:?} is not a valid value")))?;
            req = req.header(name, value);
        }
        let body = match body {
            Some((content_type, bytes)) => {
                req = req.header(header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(body)).map_err(|e| ClientError::InvalidUrl {
            url: url.clone(),
            message: e.to_string(),
        })?;
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self.inner.http.request(req).await.map_err(|e| {
            if e.is_connect() {
                let cause = error_chain(&e);
                tracing::debug!(url = %self.inner.base, %cause, "cannot connect");
                ClientError::Unreachable {
                    url: self.inner.base.clone(),
                    cause,
                }
            } else {
                ClientError::Transport {
                    url: self.inner.base.clone(),
                    message: error_chain(&e),
                }
            }
        })?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized {
                token_sent: self.inner.token.is_some(),
            });
        }
        Ok(resp)
    }

    /// Sends a request, reads the whole answer, maps error statuses.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), ClientError> {
        let exchange = async {
            let resp = self.send_raw(method, path_and_query, body, &[]).await?;
            let (parts, body) = resp.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| ClientError::Transport {
                    url: self.inner.base.clone(),
                    message: error_chain(&e),
                })?
                .to_bytes();
            Ok::<_, ClientError>((parts.status, parts.headers, bytes))
        };
        let (status, headers, bytes) =
            tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                .await
                .map_err(|_| ClientError::Timeout {
                    url: self.inner.base.clone(),
                    secs: REQUEST_TIMEOUT.as_secs(),
                })??;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        Ok((status, headers, bytes))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => Some((
                "application/json",
                Bytes::from(serde_json::to_vec(b).map_err(|e| ClientError::Invalid(e.to_string()))?),
            )),
            None => None,
        };
        let (_, _, bytes) = self.call(method, path_and_query, body).await?;
        self.decode(&bytes)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol {
            url: self.inner.base.clone(),
            message: format!("{e} in {:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(200)])),
        })
    }

    fn process_path(id: &str) -> Result<String, ClientError> {
        crate::model::Id::parse(id).map_err(|e| ClientError::Invalid(e.to_string()))?;
        Ok(format!("/api/processes/{id}"))
    }

    fn workspace_path(id: &str) -> Result<String, ClientError> {
        crate::model::Id::parse(id).map_err(|e| ClientError::Invalid(e.to_string()))?;
        Ok(format!("/api/workspaces/{id}"))
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.json(Method::GET, "/healthz", None::<&()>).await
    }

    /// `POST /api/workspaces`: creates, or returns the existing one (same id).
    pub async fn create_workspace(&self, new: &NewWorkspace) -> Result<Workspace, ClientError> {
        self.json(Method::POST, "/api/workspaces", Some(new)).await
    }

    pub async fn list_workspaces(&self) -> Result<Vec<Workspace>, ClientError> {
        self.json(Method::GET, "/api/workspaces", None::<&()>).await
    }

    pub async fn get_workspace(&self, id: &str) -> Result<Workspace, ClientError> {
        self.json(Method::GET, &Self::workspace_path(id)?, None::<&()>).await
    }

    /// `DELETE /api/workspaces/:id` (`cascade` also deletes its processes).
    pub async fn delete_workspace(&self, id: &str, cascade: bool) -> Result<(), ClientError> {
        let q = query(&[("cascade", cascade.then(|| "true".to_owned()))]);
        self.call(Method::DELETE, &format!("{}{q}", Self::workspace_path(id)?), None)
            .await
            .map(drop)
    }

    /// `POST /api/processes`. An existing client-chosen id is a 409 whose
    /// [`ClientError::Api`] carries the stored record in `existing`.
    pub async fn create_process(&self, new: &NewProcess) -> Result<Process, ClientError> {
        self.json(Method::POST, "/api/processes", Some(new)).await
    }

    /// One page of `GET /api/processes`.
    pub async fn list_processes(&self, params: &ListParams) -> Result<ProcessPage, ClientError> {
        let q = query(&[
            ("workspace", params.workspace.clone()),
            ("status", params.status.map(|s| s.to_string())),
            ("limit", params.limit.map(|l| l.to_string())),
            ("cursor", params.cursor.clone()),
        ]);
        let (_, headers, bytes) = self.call(Method::GET, &format!("/api/processes{q}"), None).await?;
        let items: Vec<Process> = self.decode(&bytes)?;
        let next_cursor = headers
            .get_all(header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_cursor);
        Ok(ProcessPage { items, next_cursor })
    }

    /// Every matching process (following `Link` pages), at most `max`.
    pub async fn list_all(&self, params: &ListParams, max: Option<usize>) -> Result<Vec<Process>, ClientError> {
        let mut params = params.clone();
        let mut all = Vec::new();
        loop {
            if let Some(max) = max {
                let left = max.saturating_sub(all.len());
                if left == 0 {
                    break;
                }
                params.limit = Some(params.limit.map_or(left, |l| l.min(left)));
            }
            let page = self.list_processes(&params).await?;
            all.extend(page.items);
            match page.next_cursor {
                Some(c) => params.cursor = Some(c),
                None => break,
            }
        }
        Ok(all)
    }

    pub async fn get_process(&self, id: &str) -> Result<Process, ClientError> {
        self.json(Method::GET, &Self::process_path(id)?, None::<&()>).await
    }

    /// `PATCH /api/processes/:id` (JSON merge of the given fields).
    pub async fn update_process(&self, id: &str, patch: &ProcessPatch) -> Result<Process, ClientError> {
        self.json(Method::PATCH, &Self::process_path(id)?, Some(patch)).await
    }

    /// `DELETE /api/processes/:id` (404 is an error here; see
    /// [`crate::client::WorkspaceClient::remove`] for the idempotent one).
    pub async fn delete_process(&self, id: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &Self::process_path(id)?, None)
            .await
            .map(drop)
    }

    /// `POST /api/processes/:id/output`; returns the stored byte count.
    pub async fn append_output(&self, id: &str, content: &str) -> Result<u64, ClientError> {
        #[derive(Serialize)]
        struct Body<'a> {
            content: &'a str,
        }
        #[derive(Deserialize)]
        struct Answer {
            output_bytes: u64,
        }
        let path = format!("{}/output", Self::process_path(id)?);
        let a: Answer = self.json(Method::POST, &path, Some(&Body { content })).await?;
        Ok(a.output_bytes)
    }

    /// `GET /api/processes/:id/output` as text. The server stores text, but
    /// a range edge may cut a character: its bytes become U+FFFD here (use
    /// [`Client::read_output_bytes`] when offsets must stay exact).
    pub async fn read_output(&self, id: &str, range: OutputRange) -> Result<String, ClientError> {
        let bytes = self.read_output_bytes(id, range).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `GET /api/processes/:id/output`, the bytes as stored.
    pub async fn read_output_bytes(&self, id: &str, range: OutputRange) -> Result<Bytes, ClientError> {
        let q = match range {
            OutputRange::All => String::new(),
            OutputRange::From(n) => format!("?offset={n}"),
            OutputRange::Tail(n) => format!("?tail={n}"),
        };
        let path = format!("{}/output{q}", Self::process_path(id)?);
        let (_, _, bytes) = self.call(Method::GET, &path, None).await?;
        Ok(bytes)
    }

    /// `POST /api/processes/:id/cancel`; returns the final record.
    pub async fn cancel(&self, id: &str) -> Result<Process, ClientError> {
        let path = format!("{}/cancel", Self::process_path(id)?);
        let (_, _, bytes) = self.call(Method::POST, &path, None).await?;
        match serde_json::from_slice::<Process>(&bytes) {
            Ok(p) => Ok(p),
            // A server that answers with something else: read the record.
            Err(_) => self.get_process(id).await,
        }
    }

    /// `POST /api/prune`; returns how many processes were removed.
    pub async fn prune(&self, max_age: Option<Duration>, max_count: Option<usize>) -> Result<u64, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            removed: u64,
        }
        let q = query(&[
            ("max_age", max_age.map(|d| format!("{}s", d.as_secs()))),
            ("max_count", max_count.map(|c| c.to_string())),
        ]);
        let a: Answer = self.json(Method::POST, &format!("/api/prune{q}"), None::<&()>).await?;
        Ok(a.removed)
    }

    /// Follows a process's output (SPEC section 3): from byte `from`
    /// (`Some(0)`: everything), or from now on (`None`). Reconnects by
    /// itself after a dropped connection, resuming after the last byte it
    /// delivered.
    pub fn follow(&self, id: &str, from: Option<u64>) -> Follower {
        Follower::new(self.clone(), id.to_owned(), from)
    }

    /// Lifecycle events (SSE `/api/events`), optionally of one workspace.
    pub fn events(&self, workspace: Option<&str>) -> EventStream {
        EventStream::new(self.clone(), workspace.map(str::to_owned))
    }
}

/// Maps an error status and its JSON body to [`ClientError::Api`].
pub(crate) fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(b) => ClientError::Api {
            status: status.as_u16(),
            code: if b.code.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_lowercase()
                    .replace(' ', "_")
            } else {
                b.code
            },
            message: if b.error.is_empty() {
                status.to_string()
            } else {
                b.error
            },
            existing: b.existing,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
                .replace(' ', "_"),
            message: {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                    .trim()
                    .to_owned();
                if text.is_empty() { status.to_string() } else { text }
            },
            existing: None,
        },
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
    fn urls_are_normalised() {
        assert_eq!(normalize_url("127.0.0.1:7070").unwrap(), "http://127.0.0.1:7070");
        assert_eq!(normalize_url("http://localhost:80/").unwrap(), "http://localhost:80");
        assert!(normalize_url("https://x:1").is_err());
        assert!(normalize_url("http://x:1/api").is_err());
        assert!(normalize_url("").is_err());
    }

    #[test]
    fn link_headers_give_the_next_cursor() {
        let link = r#"</api/processes?limit=2&cursor=1700000000000.01ABC%2D>; rel="next""#;
        assert_eq!(next_cursor(link).as_deref(), Some("1700000000000.01ABC-"));
        assert_eq!(next_cursor(r#"</x?cursor=a>; rel="prev""#), None);
        assert_eq!(
            next_cursor(r#"</x?cursor=a>; rel="prev", </x?cursor=b>; rel=next"#).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(
            query(&[("a", Some("x y/z".into())), ("b", None), ("c", Some("1".into()))]),
            "?a=x%20y%2Fz&c=1"
        );
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(decode("a%20b%zz%2"), "a b%zz%2");
    }

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
