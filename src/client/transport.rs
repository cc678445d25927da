//! [`Client`]: one server's address, token and connection pool, and how a
//! request goes out and its answer comes back (timeouts, auth, error
//! statuses). The endpoint calls built on it are in [`super::api`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{ClientError, api_error, error_chain};
use super::resumable::ReconnectPolicy;
use super::url::normalize_url;

/// Time allowed to open a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a whole non-streaming request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle pooled connection is kept for the next request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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

impl Client {
    /// A client of the server at `url` (`http://host:port` or `host:port`).
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = normalize_url(url)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
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
        let req = self.request(method, path_and_query, body, extra)?;
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
                self.transport_error(&e)
            }
        })?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized {
                token_sent: self.inner.token.is_some(),
            });
        }
        Ok(resp)
    }

    /// The request: URL, token, extra headers, body and its content type.
    fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(&'static str, Bytes)>,
        extra: &[(header::HeaderName, String)],
    ) -> Result<Request<Full<Bytes>>, ClientError> {
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
        req.body(Full::new(body)).map_err(|e| ClientError::InvalidUrl {
            url,
            message: e.to_string(),
        })
    }

    fn transport_error(&self, e: &(dyn std::error::Error + 'static)) -> ClientError {
        ClientError::Transport {
            url: self.inner.base.clone(),
            message: error_chain(e),
        }
    }

    /// Sends a request, reads the whole answer, maps error statuses.
    pub(crate) async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(&'static str, Bytes)>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), ClientError> {
        let exchange = async {
            let resp = self.send_raw(method, path_and_query, body, &[]).await?;
            let (parts, body) = resp.into_parts();
            let bytes = body.collect().await.map_err(|e| self.transport_error(&e))?.to_bytes();
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

    /// A call with an optional JSON body whose answer is JSON.
    pub(crate) async fn json<T: DeserializeOwned>(
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
        self.parse_json(&bytes)
    }

    /// Reads an answer as JSON; what does not parse is a protocol error
    /// quoting the start of the body.
    pub(crate) fn parse_json<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol {
            url: self.inner.base.clone(),
            message: format!("{e} in {:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(200)])),
        })
    }
}
