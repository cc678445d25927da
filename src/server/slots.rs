//! Connection slots (issue 8): `--max-connections` permits, which
//! connections hold one without a request in flight, and closing those
//! first when a new connection needs a slot.
//!
//! # Why closing idle connections at the cap
//! Past the cap a new connection waits for a slot. If the slots are held
//! by connections that never send a request (400 tokenless connections
//! that sent nothing) a real client waited for hyper's header timeout,
//! 30 s. As nginx reuses its keep-alive connections, the accept loop now
//! closes the connection that has been idle longest (no request in
//! flight: nothing sent yet, a head still arriving, or kept alive after an
//! answer) once it has been idle [`EVICT_MIN_IDLE`]; a connection with a
//! request or a stream in flight is never closed for this. A client whose
//! kept-alive connection is closed sees what it sees after any keep-alive
//! timeout, and retries.
//!
//! # Heads still arriving
//! A head may be 72 KiB, and hyper keeps what has arrived of it for up to
//! 30 s: 20,000 connections sending heads slowly would hold 1.4 GB. The
//! bytes read by connections that are between requests are counted
//! ([`HeadBytes`] around the socket); past the server's head budget
//! ([`DEFAULT_HEAD_BUDGET`]) the longest-idle connection is closed at once,
//! young or not, as many as it takes.
//!
//! # WebSockets count
//! A connection's permit lives in its [`Conn`]; `ws::upgrade` takes it
//! into the upgraded socket's task, so a WebSocket holds its slot until it
//! closes. Regression: 496 sockets were open under a cap of 100.
//!
//! # Locks
//! `idle` is a std Mutex, held for one map insert or removal (never across
//! `.await`): by a connection when its request starts or its response
//! ends, and by the accept loop when it evicts.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::sync::lock;

/// How long a connection must have been idle before it may be closed to
/// make room: a client that just connected gets this long to send its
/// request (its first bytes are usually in by the time it is accepted).
pub const EVICT_MIN_IDLE: Duration = Duration::from_millis(250);
/// Default budget of bytes read by connections between requests (heads
/// still arriving) over the whole server: a quarter of the 1 GiB a
/// hostile crowd may cost, and 3,500 heads at their 72 KiB limit.
pub const DEFAULT_HEAD_BUDGET: u64 = 256 * 1024 * 1024;
/// How long the accept loop waits for an evicted connection's slot before
/// it evicts the next (the one it picked may have just got a request).
pub const EVICT_RETRY: Duration = Duration::from_millis(50);

/// The server's connection slots.
pub(crate) struct Slots {
    permits: Arc<Semaphore>,
    /// Idle connections, oldest first (keys increase), with when each
    /// became idle.
    idle: std::sync::Mutex<BTreeMap<u64, (Instant, Arc<Conn>)>>,
    next_key: AtomicU64,
    /// Bytes read by connections between requests, over all of them.
    head_bytes: AtomicU64,
    head_budget: u64,
}

/// One connection's share of the slots. Shared by its task, its requests
/// (an extension, for `ws::upgrade`) and its response bodies.
pub(crate) struct Conn {
    slots: Arc<Slots>,
    permit: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
    /// A request is in flight (set when hyper calls the service, cleared
    /// when its response body is done). Written and read in the
    /// connection's own task.
    busy: AtomicBool,
    /// Key in `slots.idle` while registered there (0: not registered).
    key: AtomicU64,
    /// The accept loop wants this connection's slot.
    evict: Notify,
    /// The connection's task has ended: a body dropped after that must not
    /// put it back in the idle map (which would keep it alive forever).
    closed: AtomicBool,
    /// This connection's share of `slots.head_bytes`.
    head_bytes: AtomicU64,
}

impl Slots {
    pub fn new(max_connections: usize, head_budget: u64) -> Arc<Self> {
        Arc::new(Slots {
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            idle: std::sync::Mutex::new(BTreeMap::new()),
            next_key: AtomicU64::new(1),
            head_bytes: AtomicU64::new(0),
            head_budget,
        })
    }

    /// A slot for a new connection. At the cap, closes idle connections,
    /// oldest first, until a slot frees up (or shutdown: None). Never
    /// spins: with nothing idle to close it waits for any connection to end.
    pub async fn admit(self: &Arc<Self>, shutdown: &CancellationToken) -> Option<Arc<Conn>> {
        loop {
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return Some(self.conn(permit));
            }
            self.evict_oldest();
            let wait = tokio::time::timeout(EVICT_RETRY, self.permits.clone().acquire_owned());
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                p = wait => if let Ok(p) = p {
                    return Some(self.conn(p.expect("the connection semaphore is never closed")));
                },
            }
        }
    }

    fn conn(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            slots: self.clone(),
            permit: std::sync::Mutex::new(Some(permit)),
            busy: AtomicBool::new(false),
            key: AtomicU64::new(0),
            evict: Notify::new(),
            closed: AtomicBool::new(false),
            head_bytes: AtomicU64::new(0),
        });
        conn.idle();
        conn
    }

    /// Tells the longest-idle connection, if idle long enough, to close.
    pub fn evict_oldest(&self) {
        self.evict(EVICT_MIN_IDLE);
    }

    /// Tells the longest-idle connection, if idle at least `min_idle`, to close.
    fn evict(&self, min_idle: Duration) {
        let mut idle = lock(&self.idle);
        let Some(entry) = idle.first_entry() else { return };
        if entry.get().0.elapsed() < min_idle {
            return;
        }
        let key = *entry.key();
        let (_, conn) = entry.remove();
        drop(idle);
        self.close_evicted(key, conn);
    }

    /// Past the head budget: closes the longest-idle connection that holds
    /// head bytes. One holding none (a kept-alive client between requests)
    /// would lower nothing, and closing it would only make the next read
    /// close another honest connection (review finding).
    fn evict_for_heads(&self) {
        let mut idle = lock(&self.idle);
        let Some(key) = idle
            .iter()
            .find(|(_, (_, c))| c.head_bytes.load(Ordering::Relaxed) > 0)
            .map(|(k, _)| *k)
        else {
            return;
        };
        let (_, conn) = idle.remove(&key).expect("found under the same lock");
        drop(idle);
        self.close_evicted(key, conn);
    }

    /// `conn`, just taken out of the idle map under `key`, is told to close.
    fn close_evicted(&self, key: u64, conn: Arc<Conn>) {
        // Only if still registered under that key: went busy and idle again
        // since, it has a new entry that `release` must find (review
        // finding: the entry and its `Conn` outlived the connection).
        let _ = conn.key.compare_exchange(key, 0, Ordering::Relaxed, Ordering::Relaxed);
        conn.evict.notify_one();
        // Its head no longer counts: it is closing. Left counted until the
        // task ends, every read past the budget meanwhile evicted one more
        // connection (regression: under load the newest head went too).
        conn.forget_head();
    }
}

impl Conn {
    /// A request starts: this connection is no longer idle, and its head
    /// is hyper's to keep no longer.
    pub fn busy(&self) {
        self.busy.store(true, Ordering::Relaxed);
        self.unregister();
        self.forget_head();
    }

    /// `n` bytes were read from the socket: between requests they are a
    /// head arriving, and count against the head budget.
    fn note_read(&self, n: usize) {
        // Busy: a body. Closed: an upgraded WebSocket's frames.
        if n == 0 || self.busy.load(Ordering::Relaxed) || self.closed.load(Ordering::Relaxed) {
            return;
        }
        self.head_bytes.fetch_add(n as u64, Ordering::Relaxed);
        let total = self.slots.head_bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total > self.slots.head_budget {
            self.slots.evict_for_heads();
        }
    }

    fn forget_head(&self) {
        let mine = self.head_bytes.swap(0, Ordering::Relaxed);
        if mine > 0 {
            self.slots.head_bytes.fetch_sub(mine, Ordering::Relaxed);
        }
    }

    /// Its response is done: idle until the next request.
    pub fn idle(self: &Arc<Self>) {
        self.busy.store(false, Ordering::Relaxed);
        self.unregister();
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let key = self.slots.next_key.fetch_add(1, Ordering::Relaxed);
        self.key.store(key, Ordering::Relaxed);
        lock(&self.slots.idle).insert(key, (Instant::now(), self.clone()));
    }

    fn unregister(&self) {
        let key = self.key.swap(0, Ordering::Relaxed);
        if key != 0 {
            lock(&self.slots.idle).remove(&key);
        }
    }

    /// Resolves when the accept loop has picked this connection to close
    /// and it is still idle (a request that arrived since keeps it).
    pub async fn evicted(&self) {
        loop {
            self.evict.notified().await;
            if !self.busy.load(Ordering::Relaxed) {
                return;
            }
        }
    }

    /// The slot, for a WebSocket task that outlives the connection's task.
    pub fn take_permit(&self) -> Option<OwnedSemaphorePermit> {
        lock(&self.permit).take()
    }

    /// The connection's task ends: give the slot back (unless a WebSocket
    /// took it) and leave the idle map.
    pub fn release(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.unregister();
        self.forget_head();
        drop(self.take_permit());
    }
}

/// A response body that marks its connection idle when it is done (ended
/// or dropped), so a connection streaming SSE stays busy until it ends.
pub(crate) struct Tracked<B> {
    inner: B,
    conn: Arc<Conn>,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, conn: Arc<Conn>) -> Self {
        Tracked { inner, conn }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.conn.idle();
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket of a connection, counting what it reads between requests.
pub(crate) struct HeadBytes<T> {
    inner: T,
    conn: Arc<Conn>,
}

impl<T> HeadBytes<T> {
    pub fn new(inner: T, conn: Arc<Conn>) -> Self {
        HeadBytes { inner, conn }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadBytes<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.conn.note_read(buf.filled().len() - before);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadBytes<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The request extension through which `ws::upgrade` finds its connection.
#[derive(Clone)]
pub(crate) struct ConnSlot(pub Arc<Conn>);

/// Takes the connection's slot out of `req`'s connection, for the task
/// serving its upgraded socket.
pub(crate) fn take_permit<B>(req: &http::Request<B>) -> Option<OwnedSemaphorePermit> {
    req.extensions().get::<ConnSlot>().and_then(|c| c.0.take_permit())
}
