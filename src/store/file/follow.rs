//! [`Follow`], the stream a follower reads: stored output replayed from
//! where it asked, then live chunks from the process's emitter, catching up
//! from the log whenever it falls behind, then the final status. See
//! [`super::log`] for why replay and live never overlap or leave a gap.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::chunk::Chunk;
use super::log::{OutputLog, REPLAY_BLOCK, log_text, read_range};
use crate::model::StatusInfo;

/// What a follower receives.
#[derive(Debug, Clone)]
pub enum FollowEvent {
    Chunk(Arc<Chunk>),
    /// Output in `from..to` was never stored (past the cap) and went by
    /// while this follower was behind: it cannot be delivered.
    Lagged {
        from: u64,
        to: u64,
    },
    /// The process is finished; this is the last event.
    Status(StatusInfo),
}

/// A follower: replays stored output from where it asked, then goes live,
/// catching up from the log whenever it falls behind the emitter, and ends
/// with the process's final status. Dropping it unsubscribes at once and
/// removes the emitter if it was the last follower.
pub struct Follow {
    log: Arc<OutputLog>,
    path: PathBuf,
    /// Next byte offset to deliver.
    pos: u64,
    /// Stored output below this offset is read from the log before going
    /// (back) to the receiver.
    replay_end: u64,
    /// After the replay, output up to here was never stored and is reported
    /// as skipped before `held` is delivered.
    gap_to: u64,
    /// A live chunk that arrived ahead of `pos`, delivered after catch-up.
    held: Option<Arc<Chunk>>,
    rx: Option<broadcast::Receiver<Arc<Chunk>>>,
    done: bool,
    /// The status to end with, when the process was finished at subscribe.
    final_status: Option<StatusInfo>,
}

impl Follow {
    /// Built by [`OutputLog::subscribe`] under the log lock.
    pub(super) fn new(
        log: Arc<OutputLog>,
        path: PathBuf,
        pos: u64,
        replay_end: u64,
        gap_to: u64,
        rx: Option<broadcast::Receiver<Arc<Chunk>>>,
        final_status: Option<StatusInfo>,
    ) -> Self {
        crate::metrics::get().follower_opened();
        Follow {
            log,
            path,
            pos,
            replay_end,
            gap_to,
            held: None,
            rx,
            done: false,
            final_status,
        }
    }

    /// The next event, or None after the final status.
    pub async fn next(&mut self) -> Option<FollowEvent> {
        loop {
            if let Some(ev) = self.next_ready() {
                return Some(ev);
            }
            if self.pos < self.replay_end {
                match self.read_block().await {
                    Ok(Some(ev)) => return Some(ev),
                    Ok(None) => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // The log vanished (the process was deleted):
                        // nothing more can be replayed.
                        tracing::debug!(%e, path = %self.path.display(), "output log gone while following");
                        self.replay_end = self.pos;
                        continue;
                    }
                    Err(e) => {
                        // Cannot be read now (no descriptor left, an I/O
                        // error): end this stream rather than skip output
                        // silently. A client resumes from its position
                        // (`Last-Event-ID`), with no gap.
                        tracing::warn!(%e, path = %self.path.display(), "output log unreadable while following; ending the stream");
                        // The receiver stays until drop, which releases
                        // the emitter.
                        self.done = true;
                        return None;
                    }
                }
            }
            if self.done {
                return None;
            }
            match self.rx.as_mut() {
                None => return self.finish(),
                Some(rx) => match rx.recv().await {
                    Ok(chunk) => {
                        if let Some(ev) = self.accept(chunk) {
                            return Some(ev);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up_laggard(),
                    Err(broadcast::error::RecvError::Closed) => {
                        self.rx = None;
                        self.catch_up();
                    }
                },
            }
        }
    }

    /// An event that is ready without waiting, if any: used to batch every
    /// ready event into one write. Never reads the log (that needs a
    /// blocking task) and never ends the stream.
    pub fn try_next(&mut self) -> Option<FollowEvent> {
        loop {
            if let Some(ev) = self.next_ready() {
                return Some(ev);
            }
            if self.pos < self.replay_end || self.done {
                return None;
            }
            let rx = self.rx.as_mut()?;
            match rx.try_recv() {
                Ok(chunk) => {
                    if let Some(ev) = self.accept(chunk) {
                        return Some(ev);
                    }
                }
                Err(broadcast::error::TryRecvError::Empty) => return None,
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.catch_up_laggard(),
                Err(broadcast::error::TryRecvError::Closed) => {
                    self.rx = None;
                    self.catch_up();
                }
            }
        }
    }

    /// Byte offset of the next byte this follower will deliver.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The gap report or held chunk that follows a finished catch-up.
    fn next_ready(&mut self) -> Option<FollowEvent> {
        if self.pos < self.replay_end {
            return None;
        }
        if self.pos < self.gap_to {
            let ev = FollowEvent::Lagged {
                from: self.pos,
                to: self.gap_to,
            };
            self.pos = self.gap_to;
            return Some(ev);
        }
        let chunk = self.held.take()?;
        self.accept(chunk)
    }

    /// Decides what to do with a live chunk: skip it (already delivered by
    /// the replay), deliver it, or hold it while the gap before it is
    /// filled from the log.
    fn accept(&mut self, chunk: Arc<Chunk>) -> Option<FollowEvent> {
        if chunk.offset <= self.pos {
            return None;
        }
        let start = chunk.start();
        if start > self.pos {
            let stored = self.log.lock().stored;
            self.replay_end = stored.min(start).max(self.pos);
            self.gap_to = start;
            self.held = Some(chunk);
            return None;
        }
        if start < self.pos {
            // Only possible after a replay that began inside this chunk. A
            // cut inside a character moves on to the next one (it used to
            // drop the whole rest of the chunk).
            let mut skip = (self.pos - start) as usize;
            while !chunk.content.is_char_boundary(skip) {
                skip += 1;
            }
            let rest = &chunk.content[skip..];
            self.pos = chunk.offset;
            if rest.is_empty() {
                return None;
            }
            return Some(FollowEvent::Chunk(Arc::new(Chunk::new(
                chunk.offset,
                rest.to_owned(),
                chunk.stream,
            ))));
        }
        self.pos = chunk.offset;
        Some(FollowEvent::Chunk(chunk))
    }

    /// After a lag: counted, then [`Follow::catch_up`].
    fn catch_up_laggard(&mut self) {
        crate::metrics::get().laggard_caught_up();
        self.catch_up();
    }

    /// After a lag or the end of the live part: replay the log up to what is
    /// stored now; anything beyond that which went by is a gap.
    fn catch_up(&mut self) {
        let st = self.log.lock();
        self.replay_end = st.stored.max(self.pos);
        if self.rx.is_none() {
            // Finished: whatever was emitted but not stored is gone.
            self.gap_to = st.total;
        }
    }

    async fn read_block(&mut self) -> io::Result<Option<FollowEvent>> {
        let (stream, to) = self.log.lock().stream_run(self.pos, self.replay_end);
        let (path, from) = (self.path.clone(), self.pos);
        let bytes = tokio::task::spawn_blocking(move || read_range(&path, from, to, REPLAY_BLOCK))
            .await
            .map_err(io::Error::other)??;
        if bytes.is_empty() {
            // The log is shorter than the index says: stop replaying.
            self.replay_end = self.pos;
            return Ok(None);
        }
        // Everywhere but the first block of a replay asked to start inside
        // a character, blocks start and end on characters.
        crate::metrics::get().replayed(bytes.len());
        self.pos += bytes.len() as u64;
        let content = log_text(bytes);
        if content.is_empty() {
            return Ok(None);
        }
        Ok(Some(FollowEvent::Chunk(Arc::new(Chunk::new(
            self.pos, content, stream,
        )))))
    }

    fn finish(&mut self) -> Option<FollowEvent> {
        self.done = true;
        let status = match self.final_status.take() {
            Some(s) => s,
            None => self.log.lock().final_status.clone()?,
        };
        Some(FollowEvent::Status(status))
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        crate::metrics::get().follower_closed();
        // The receiver goes first, so the count below no longer includes it.
        if self.rx.take().is_some() {
            self.log.release_emitter_if_unused();
        }
    }
}
