//! What the server records about each answered request: the request
//! metrics (count and time by route pattern, method, status) and one
//! access-log line, as nginx writes one.
//!
//! # The access log
//! One `info` event with target [`TARGET`] per request, written when the
//! response has been sent (its body finished or dropped), with `method`,
//! `route` (the pattern), `path` (never the query: it may carry
//! `access_token`), `status`, `bytes` (body bytes sent) and `duration_ms`
//! (from the request head to the end of the response: for an SSE stream,
//! its whole life). The connection's span adds the peer address.
//!
//! It is a level filter target: `--quiet-access-log` (or
//! `PROCHUB_LOG=info,prochub::access=off`) turns it off, and then the
//! response body is not wrapped at all.
//!
//! # The metrics
//! Recorded when the response head is ready, so an SSE stream counts once,
//! with the time it took to open.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};

use super::response::{Body, Resp};

/// The tracing target of access-log lines.
pub const TARGET: &str = "prochub::access";
/// Longest path written to the log; the rest is cut (a request line may
/// be 8 KiB, and one line per request should stay readable).
pub const MAX_LOGGED_PATH: usize = 1024;

/// A request being answered.
pub struct Observed {
    started: Instant,
    method: Method,
    /// Only kept when the access log is on.
    path: Option<String>,
}

impl Observed {
    pub fn start<B>(req: &Request<B>) -> Self {
        let logging = tracing::enabled!(target: TARGET, tracing::Level::INFO);
        Observed {
            started: Instant::now(),
            method: req.method().clone(),
            path: logging.then(|| {
                let path = req.uri().path();
                let mut end = path.len().min(MAX_LOGGED_PATH);
                while !path.is_char_boundary(end) {
                    end -= 1;
                }
                path[..end].to_owned()
            }),
        }
    }

    /// Records the metrics of `resp` and, when the access log is on, wraps
    /// its body so the line is written once the body is done.
    pub fn finish(self, route: &'static str, resp: Resp) -> Resp {
        let status = resp.status().as_u16();
        crate::metrics::get().request(route, self.method.as_str(), status, self.started.elapsed());
        let Some(path) = self.path else {
            return resp;
        };
        resp.map(|inner| {
            Logged {
                inner,
                bytes: 0,
                line: Line {
                    started: self.started,
                    method: self.method,
                    route,
                    path,
                    status,
                },
            }
            .boxed_unsync()
        })
    }
}

/// What the access-log line says besides the byte count.
struct Line {
    started: Instant,
    method: Method,
    route: &'static str,
    path: String,
    status: u16,
}

/// A response body that counts what it hands to hyper and writes the
/// access-log line when dropped (hyper drops it once the body is done, or
/// the client went away). One add per frame: nothing more on the fan-out
/// path.
struct Logged {
    inner: Body,
    bytes: u64,
    line: Line,
}

impl hyper::body::Body for Logged {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.bytes += data.len() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let l = &self.line;
        tracing::info!(
            target: TARGET,
            method = %l.method,
            route = l.route,
            path = %l.path,
            status = l.status,
            bytes = self.bytes,
            duration_ms = l.started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
}
