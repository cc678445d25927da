//! Pumps: a command's stdout and stderr into the store, as chunks of whole
//! characters tagged with their pipe (SPEC section 6: a chunk never splits
//! a UTF-8 character; invalid bytes become U+FFFD).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tokio::task::JoinHandle;

use super::PIPE_DRAIN;
use super::supervise::{StopReason, Tracked};
use crate::model::{Id, StreamKind};
use crate::store::{FileProcessStore, StoreError};
use crate::utf8::Utf8Decoder;

/// Bytes read from a pipe at once (one chunk at most, usually less).
pub const READ_BLOCK: usize = 16 * 1024;

/// The pumps of one command, one task per pipe.
pub(super) struct Pumps(Vec<JoinHandle<()>>);

impl Pumps {
    /// Takes the child's pipes and starts pumping them.
    pub(super) fn start(store: &Arc<FileProcessStore>, id: &Id, child: &mut Child, tracked: &Arc<Tracked>) -> Self {
        let mut tasks = Vec::new();
        if let Some(out) = child.stdout.take() {
            tasks.push(spawn(store, id, out, StreamKind::Stdout, tracked));
        }
        if let Some(err) = child.stderr.take() {
            tasks.push(spawn(store, id, err, StreamKind::Stderr, tracked));
        }
        Pumps(tasks)
    }

    /// Waits for every pipe to reach EOF, each for at most [`PIPE_DRAIN`]
    /// (the command has exited; a grandchild may hold a pipe open).
    pub(super) async fn finish(self, id: &Id) {
        for mut pump in self.0 {
            if tokio::time::timeout(PIPE_DRAIN, &mut pump).await.is_err() {
                tracing::warn!(id = %id, "a pipe stayed open after the command exited; its further output is dropped");
                pump.abort();
            }
        }
    }
}

fn spawn(
    store: &Arc<FileProcessStore>,
    id: &Id,
    pipe: impl AsyncRead + Send + Unpin + 'static,
    kind: StreamKind,
    tracked: &Arc<Tracked>,
) -> JoinHandle<()> {
    tokio::spawn(pump(store.clone(), id.clone(), pipe, kind, tracked.clone()))
}

/// Copies one pipe into the store as chunks of whole characters.
async fn pump(
    store: Arc<FileProcessStore>,
    id: Id,
    mut pipe: impl AsyncRead + Unpin,
    kind: StreamKind,
    tracked: Arc<Tracked>,
) {
    let mut buf = vec![0u8; READ_BLOCK];
    let mut decoder = Utf8Decoder::new();
    // Once the store refuses output (record ended or deleted), keep
    // draining the pipe so the command never blocks on a full pipe.
    let mut storing = true;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) => {
                tracing::warn!(%err, id = %id, ?kind, "reading the command's output");
                break;
            }
        };
        let text = decoder.push(&buf[..n]);
        if storing && !text.is_empty() {
            storing = append(&store, &id, text, kind, &tracked).await;
        }
    }
    let tail = decoder.finish();
    if storing && !tail.is_empty() {
        append(&store, &id, tail, kind, &tracked).await;
    }
}

/// Appends one chunk; false once the store will not take more.
async fn append(store: &Arc<FileProcessStore>, id: &Id, text: String, kind: StreamKind, tracked: &Tracked) -> bool {
    match store.append_output(id, text, Some(kind)).await {
        Ok(_) => true,
        Err(StoreError::NotFound { .. }) => {
            tracked.request_stop(StopReason::Deleted);
            false
        }
        Err(StoreError::NotRunning { .. }) => false,
        Err(err) => {
            tracing::warn!(%err, id = %id, "storing the command's output");
            false
        }
    }
}
