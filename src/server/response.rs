//! Response building blocks: the one body type every handler returns, and
//! JSON / text / empty responses.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use serde::Serialize;

/// The body of every response: a whole buffer or a stream (SSE, output,
/// lists). Not
/// `Sync`: a follow stream owns its `Follow`, which only needs `Send`.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

pub type Resp = Response<Body>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A body written as `frames` yields them: hyper polls it only when the
/// connection can take more, so a client that stops reading stops the
/// stream (it holds one frame, not the whole response). No length is
/// known: HTTP/1.1 sends it chunked.
pub fn stream<S>(frames: S) -> Body
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    StreamBody::new(frames.map(|b| Ok::<_, Infallible>(Frame::data(b)))).boxed_unsync()
}

pub fn empty_body() -> Body {
    Empty::new().boxed_unsync()
}

/// A JSON response.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Resp {
    let bytes = serde_json::to_vec(value).expect("response types always serialize");
    with_type(status, full(bytes), "application/json")
}

/// A response with a body and its content type.
pub fn with_type(status: StatusCode, body: Body, content_type: &'static str) -> Resp {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// An empty response (204 and friends).
pub fn empty(status: StatusCode) -> Resp {
    let mut resp = Response::new(empty_body());
    *resp.status_mut() = status;
    resp
}
