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

/// Most items serialized into one frame of a streamed JSON array.
pub const ARRAY_BATCH: usize = 32;
/// A frame of a streamed JSON array ends once it reaches this size (it
/// may pass it by one item): items can be large (a 1 MB `result`), and a
/// client that stops reading holds one frame.
pub const ARRAY_FRAME_BYTES: usize = 64 * 1024;

/// A JSON array response whose items are taken from `next` and serialized
/// as the client reads, one frame of at most [`ARRAY_BATCH`] items (or
/// [`ARRAY_FRAME_BYTES`]) at a time. An array that fits in the first frame
/// goes out whole, with `Content-Length`; a longer one chunked.
pub fn json_array<T, F>(status: StatusCode, next: F) -> Resp
where
    T: Serialize,
    F: FnMut() -> Option<T> + Send + 'static,
{
    let mut frames = ArrayFrames {
        next,
        items: 0,
        done: false,
    };
    let first = frames.frame().expect("the first frame always exists");
    let body = if frames.done {
        full(first)
    } else {
        let rest = futures_util::stream::iter(std::iter::from_fn(move || frames.frame()));
        stream(futures_util::stream::once(std::future::ready(first)).chain(rest))
    };
    with_type(status, body, "application/json")
}

/// The frames of a streamed JSON array: `[`, items separated by `,`, `]`.
struct ArrayFrames<F> {
    next: F,
    /// Items written so far.
    items: usize,
    done: bool,
}

impl<T: Serialize, F: FnMut() -> Option<T>> ArrayFrames<F> {
    fn frame(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut buf = Vec::new();
        if self.items == 0 {
            buf.push(b'[');
        }
        for _ in 0..ARRAY_BATCH {
            let Some(item) = (self.next)() else {
                buf.push(b']');
                self.done = true;
                break;
            };
            if self.items > 0 {
                buf.push(b',');
            }
            serde_json::to_writer(&mut buf, &item).expect("response types always serialize");
            self.items += 1;
            if buf.len() >= ARRAY_FRAME_BYTES {
                break;
            }
        }
        Some(Bytes::from(buf))
    }
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
