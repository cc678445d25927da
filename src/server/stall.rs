//! Ends connections whose peer stopped reading (issue 8).
//!
//! A follower that stops reading its socket costs the server its socket
//! buffers and a task for as long as it stays connected; heartbeats only
//! notice a peer that is gone, not one that is there and never reads.
//! [`WriteStall`] wraps the socket under hyper, so it covers plain
//! responses, SSE streams and upgraded WebSockets alike: when writing has
//! made no progress for the limit, the write fails with `TimedOut` and the
//! connection ends. The limit is [`STALL_HEARTBEATS`] heartbeat intervals,
//! at least [`STALL_FLOOR`] (`ServerConfig::write_stall` overrides it).
//!
//! # Cost
//! The timer is created at the first write that has to wait, and then only
//! reset: an idle connection, or one whose peer keeps up, never has one
//! (idle followers are measured in KiB).
//!
//! # Backlog: streams wait while the socket is full
//! hyper pulls frames from a response body until its write queue holds
//! `max_buf_size` bytes, whether or not the socket takes them: a follower
//! that stopped reading held that queue (72 KiB) plus the frame in flight
//! for as long as it stayed connected. [`Backlog`] tells a streaming body
//! (SSE, `server::sse::response`) that the last write had to wait, so it
//! makes no new frame until the socket has taken bytes again; what a
//! stalled follower holds is then the frame it was sending when it stopped.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A stall this many heartbeat intervals long ends the connection: a peer
/// that reads at all takes a heartbeat's bytes long before that.
pub const STALL_HEARTBEATS: u32 = 4;
/// The shortest stall limit, whatever the heartbeat (also the limit when
/// heartbeats are off): a busy client may pause reading for a few seconds.
pub const STALL_FLOOR: Duration = Duration::from_secs(30);

/// The stall limit for a heartbeat interval.
pub fn limit_for(heartbeat: Duration) -> Duration {
    (heartbeat * STALL_HEARTBEATS).max(STALL_FLOOR)
}

/// Whether a connection's socket is backed up: set by [`WriteStall`] when a
/// write has to wait, cleared (waking the stream that waits on it) when a
/// write makes progress. One per connection, shared with its requests
/// through their extensions; atomics, because the socket and the body are
/// polled by the same task but reached through different owners.
#[derive(Default)]
pub struct Backlog {
    blocked: AtomicBool,
    waker: AtomicWaker,
}

impl Backlog {
    /// True (and `cx` woken when that changes) while the socket is backed
    /// up: a body should make no new frame.
    pub fn is_blocked(&self, cx: &Context<'_>) -> bool {
        if !self.blocked.load(Ordering::Acquire) {
            return false;
        }
        self.waker.register(cx.waker());
        // Checked again after registering: a write that made progress in
        // between would otherwise leave the body waiting for nothing.
        self.blocked.load(Ordering::Acquire)
    }

    fn set(&self, blocked: bool) {
        if self.blocked.swap(blocked, Ordering::AcqRel) && !blocked {
            self.waker.wake();
        }
    }
}

/// A socket whose writes fail once they have waited longer than a limit.
pub struct WriteStall<T> {
    inner: T,
    limit: Duration,
    backlog: Arc<Backlog>,
    /// Made at the first write that had to wait, then reset and reused.
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer counts: the last write returned `Pending` and nothing has
    /// been written since.
    armed: bool,
}

impl<T> WriteStall<T> {
    pub fn new(inner: T, limit: Duration, backlog: Arc<Backlog>) -> Self {
        WriteStall {
            inner,
            limit,
            backlog,
            timer: None,
            armed: false,
        }
    }

    /// Passes a write's result on, failing it when it has waited too long.
    fn watch<R>(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if result.is_ready() {
            if self.armed {
                self.armed = false;
                self.backlog.set(false);
            }
            return result;
        }
        if !self.armed {
            self.armed = true;
            self.backlog.set(true);
            let deadline = Instant::now() + self.limit;
            match &mut self.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let timer = self.timer.as_mut().expect("armed above");
        if timer.as_mut().poll(cx).is_ready() {
            self.armed = false;
            self.backlog.set(false);
            tracing::debug!(limit = ?self.limit, "peer stopped reading; closing the connection");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer read nothing for {:?}", self.limit),
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStall<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStall<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn the_limit_is_heartbeats_with_a_floor() {
        assert_eq!(limit_for(Duration::from_secs(15)), Duration::from_secs(60));
        assert_eq!(limit_for(Duration::from_secs(1)), STALL_FLOOR);
        assert_eq!(limit_for(Duration::ZERO), STALL_FLOOR);
    }

    /// A peer that never reads: the write fails after the limit, and not
    /// before (paused clock: no real waiting).
    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_past_the_limit_fails() {
        let (a, _b) = tokio::io::duplex(16);
        let mut w = WriteStall::new(a, Duration::from_secs(60), Arc::default());
        let started = Instant::now();
        let err = w.write_all(&[0u8; 1024]).await.expect_err("the peer never reads");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    /// The backlog is set while a write waits and cleared, waking whoever
    /// waits on it, once the peer takes bytes again.
    #[tokio::test(start_paused = true)]
    async fn the_backlog_follows_the_socket() {
        use tokio::io::AsyncReadExt;
        let (a, mut b) = tokio::io::duplex(16);
        let backlog = Arc::new(Backlog::default());
        let mut w = WriteStall::new(a, Duration::from_secs(60), backlog.clone());
        let blocked = || std::future::poll_fn(|cx| Poll::Ready(backlog.is_blocked(cx)));
        assert!(!blocked().await, "nothing written yet");
        let writer = tokio::spawn(async move { w.write_all(&[0u8; 64]).await });
        tokio::task::yield_now().await;
        assert!(blocked().await, "the peer took 16 bytes and no more");
        let unblocked = std::future::poll_fn(|cx| {
            if backlog.is_blocked(cx) {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        });
        let reader = async {
            let mut buf = [0u8; 64];
            let mut got = 0;
            while got < 64 {
                got += b.read(&mut buf[got..]).await.expect("read");
            }
        };
        tokio::join!(unblocked, reader);
        writer.await.expect("writer").expect("the peer read it all");
        assert!(!blocked().await);
    }

    /// Progress resets the limit: a peer reading slowly is never cut off.
    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_is_not_a_stall() {
        use tokio::io::AsyncReadExt;
        let (a, mut b) = tokio::io::duplex(16);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let mut got = 0;
            while got < 1024 {
                tokio::time::sleep(Duration::from_secs(10)).await;
                got += b.read(&mut buf).await.expect("read");
            }
        });
        let mut w = WriteStall::new(a, Duration::from_secs(30), Arc::default());
        w.write_all(&[0u8; 1024]).await.expect("progress every 10 s");
        reader.await.expect("reader");
    }
}
