//! JSON for the requests hyper rejects itself (SPEC section 12).
//!
//! When hyper cannot parse a request head (a bad request line or header,
//! more than 100 header fields, a head past `limits::MAX_HEAD`) it never
//! calls our service: it writes its own bodiless answer
//! (`HTTP/1.1 400 Bad Request`, `content-length: 0`) and closes the
//! connection. [`JsonErrors`] wraps the socket and rewrites exactly that
//! answer, on its way out, into one with `{"error","code"}`.
//!
//! # Why a write-side rewrite, and why it is safe
//! The alternative, parsing every head ourselves before hyper does, would
//! mean tracking where each request's body ends (lengths, chunked
//! framing): a second HTTP parser. The rewrite only has to recognise
//! hyper's automatic answer, which has a fixed shape: the head of a 400,
//! 414 or 431 with `content-length: 0`, alone in one write. The service
//! never sends that: every error it answers carries a JSON body (one place
//! builds them, `error.rs`), so its heads say a non-zero length, and a
//! body or a stream frame never begins with `HTTP/1.1 `. hyper closes the
//! connection after its automatic answer, so replacing it (and adding
//! `connection: close`) changes nothing else on the wire.
//!
//! # 414 or 431
//! hyper says 431 for any head longer than it buffers, including one whose
//! request line alone is too long. On a connection's first request
//! (nothing written yet) the head starts at the first byte read, so the
//! length of its request line is known exactly from the bytes read: past
//! `limits::MAX_REQUEST_LINE` the answer becomes a 414. Later on a
//! kept-alive connection the head's start is not tracked (that needs body
//! framing), and such an answer stays a 431.
//!
//! # Cost
//! Every write checks whether its first bytes are `HTTP/1.1 4`: a compare
//! of ten bytes. Reads scan for the end of the first line only until it is
//! found.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::ApiError;
use super::limits;

/// A socket whose outgoing automatic error answers from hyper are
/// rewritten into JSON ones.
pub struct JsonErrors<T> {
    inner: T,
    /// The rewritten answer, or what is left of it to write.
    pending: Option<Bytes>,
    /// Something was written on this connection already.
    wrote: bool,
    /// The first request line ended (a `\n` after other bytes).
    first_line_ended: bool,
    /// Bytes of the first request line read so far, CR/LF not counted
    /// (empty lines before a request line are allowed and skipped).
    first_line_len: usize,
}

impl<T> JsonErrors<T> {
    pub fn new(inner: T) -> Self {
        JsonErrors {
            inner,
            pending: None,
            wrote: false,
            first_line_ended: false,
            first_line_len: 0,
        }
    }

    fn note_read(&mut self, bytes: &[u8]) {
        if self.first_line_ended || self.wrote {
            return;
        }
        for &b in bytes {
            match b {
                b'\n' if self.first_line_len > 0 => {
                    self.first_line_ended = true;
                    return;
                }
                b'\r' | b'\n' => {}
                _ => self.first_line_len += 1,
            }
        }
    }

    /// The JSON answer replacing hyper's automatic `status` answer `head`.
    fn rewrite(&self, status: u16, head: &[u8]) -> Bytes {
        let error = match status {
            431 if !self.wrote && self.first_line_len > limits::MAX_REQUEST_LINE => ApiError::UriTooLong {
                limit: limits::MAX_REQUEST_LINE,
            },
            431 => ApiError::HeadersTooLarge {
                limit: limits::HEADERS_LIMIT,
            },
            414 => ApiError::UriTooLong {
                limit: limits::MAX_REQUEST_LINE,
            },
            _ => ApiError::Malformed,
        };
        let (status, code) = error.status_code();
        let body = serde_json::json!({ "error": error.to_string(), "code": code }).to_string();
        crate::metrics::get().request(
            crate::metrics::MALFORMED_ROUTE,
            "",
            status.as_u16(),
            std::time::Duration::ZERO,
        );
        tracing::info!(
            target: super::access_log::TARGET,
            method = "-",
            route = crate::metrics::MALFORMED_ROUTE,
            path = "-",
            status = status.as_u16(),
            bytes = body.len(),
            duration_ms = 0.0,
            "request"
        );
        let date = head
            .split(|&b| b == b'\n')
            .find(|l| l.len() > 5 && l[..5].eq_ignore_ascii_case(b"date:"))
            .map(|l| String::from_utf8_lossy(l).trim().to_owned());
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        if let Some(date) = date {
            out.push_str(&date);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&body);
        Bytes::from(out)
    }
}

/// The status of hyper's automatic error answer, if `data` is one.
fn automatic_answer(data: &[u8]) -> Option<u16> {
    let rest = data.strip_prefix(b"HTTP/1.1 4")?;
    let status = match rest.get(..3)? {
        b"00 " => 400,
        b"14 " => 414,
        b"31 " => 431,
        _ => return None,
    };
    // A bare head, and one that says it has no body.
    let is_head = data.len() <= 512 && data.ends_with(b"\r\n\r\n");
    let empty = data.windows(21).any(|w| w == b"\r\ncontent-length: 0\r\n");
    (is_head && empty).then_some(status)
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    /// Writes what is left of the rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(p) = self.pending.as_mut() {
            if p.is_empty() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, p))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            p.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `data` (all of it) in place of hyper's automatic answer.
    fn replace(&mut self, cx: &mut Context<'_>, status: u16, data: &[u8]) -> Poll<io::Result<usize>> {
        self.pending = Some(self.rewrite(status, data));
        self.wrote = true;
        // What does not go out now goes out on the flush that follows.
        if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let filled = &buf.filled()[before..];
        this.note_read(filled);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(status) = automatic_answer(buf) {
            return this.replace(cx, status, buf);
        }
        this.wrote = true;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(first), None) = (nonempty.next(), nonempty.next())
            && let Some(status) = automatic_answer(first)
        {
            return this.replace(cx, status, first);
        }
        this.wrote = true;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_answers_are_recognised() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 23:07:50 GMT\r\n\r\n";
        assert_eq!(automatic_answer(hyper), Some(431));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 107\r\n\r\n";
        assert_eq!(automatic_answer(ours), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_answer(ok), None);
        assert_eq!(automatic_answer(b"1a\r\nid: 3\r\n"), None);
    }

    #[test]
    fn a_first_line_over_the_limit_is_a_414() {
        let head = b"HTTP/1.1 431 x\r\ncontent-length: 0\r\n\r\n";
        let mut long = JsonErrors::new(tokio::io::empty());
        long.note_read(b"\r\nGET /");
        long.note_read(&[b'a'; limits::MAX_REQUEST_LINE]);
        long.note_read(b" HTTP/1.1\r\nx: y");
        assert!(long.rewrite(431, head).starts_with(b"HTTP/1.1 414 URI Too Long\r\n"));
        let mut short = JsonErrors::new(tokio::io::empty());
        short.note_read(b"\r\nGET /a HTTP/1.1\r\nx: ");
        short.note_read(&[b'v'; 2 * limits::MAX_HEAD]);
        assert!(
            short
                .rewrite(431, head)
                .starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
        );
    }
}
