//! [`Follow`], the stream a follower reads: stored output replayed from
//! where it asked, then live chunks from the process's emitter, catching up
//! from the stored output whenever it falls behind, then the final status.
//! See [`super::log`] for why replay and live never overlap or leave a gap.
//!
//! A replay reads the segments of an [`OutputView`] (taken under the log
//! lock, read without it): index records in batches, log bytes in
//! [`REPLAY_BLOCK`] blocks, and makes one chunk per record (or the part
//! of one in the block), carrying that record's SEQ, time and pipe. The
//! elided range between head and tail is reported once as
//! [`FollowEvent::Lagged`] and the replay continues after it.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::appends::{IndexReader, READ_BATCH};
use super::chunk::Chunk;
use super::log::{OutputLog, REPLAY_BLOCK, log_text, read_range};
use super::segments::OutputView;
use crate::model::StatusInfo;

/// Index records read by the first read of a replay block; doubled while
/// the records read do not cover the block (a block of 4 KiB appends
/// needs 16, one of 10-byte lines thousands, at most [`READ_BATCH`]).
const FIRST_BATCH: u64 = 64;

/// What a follower receives.
#[derive(Debug, Clone)]
pub enum FollowEvent {
    Chunk(Arc<Chunk>),
    /// Output in `from..to` is not stored (elided between the kept head and
    /// tail, or past a cap too small for a tail) and went by while this
    /// follower was behind: it cannot be delivered.
    Lagged {
        from: u64,
        to: u64,
    },
    /// The process is finished; this is the last event.
    Status(StatusInfo),
}

/// A follower: replays stored output from where it asked, then goes live,
/// catching up from the stored output whenever it falls behind the
/// emitter, and ends with the process's final status. Dropping it
/// unsubscribes at once and removes the emitter if it was the last
/// follower.
pub struct Follow {
    log: Arc<OutputLog>,
    /// Next byte offset to deliver.
    pos: u64,
    /// Output below this offset is replayed (stored or reported elided)
    /// before going (back) to the receiver.
    replay_end: u64,
    /// Replayed chunks not delivered yet (one block's worth at most).
    pending: VecDeque<Arc<Chunk>>,
    /// Where the replay is in the index: `(segment start, record holding
    /// pos)`, so consecutive blocks need no search.
    cursor: Option<(u64, u64)>,
    /// A live chunk that arrived ahead of `pos`, delivered after catch-up.
    held: Option<Arc<Chunk>>,
    rx: Option<broadcast::Receiver<Arc<Chunk>>>,
    done: bool,
    /// The status to end with, when the process was finished at subscribe.
    final_status: Option<StatusInfo>,
    /// Times it fell behind the emitter and caught up from the store.
    catch_ups: u64,
}

/// What one replay step read.
enum Block {
    /// Chunks starting at the position asked for, and the cursor after
    /// them.
    Chunks(Vec<Chunk>, Option<(u64, u64)>),
    /// The position is in the elided range: continue at this offset.
    Elided(u64),
    /// Nothing is stored there (the files are shorter than the view says,
    /// or gone): stop replaying.
    End,
}

impl Follow {
    /// Built by [`OutputLog::subscribe`] under the log lock.
    pub(super) fn new(
        log: Arc<OutputLog>,
        pos: u64,
        replay_end: u64,
        rx: Option<broadcast::Receiver<Arc<Chunk>>>,
        final_status: Option<StatusInfo>,
    ) -> Self {
        crate::metrics::get().follower_opened();
        Follow {
            log,
            pos,
            replay_end,
            pending: VecDeque::new(),
            cursor: None,
            held: None,
            rx,
            done: false,
            final_status,
            catch_ups: 0,
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
                    Err(e) => {
                        // Cannot be read now (no descriptor left, an I/O
                        // error): end this stream rather than skip output
                        // silently. A client resumes from its position
                        // (`Last-Event-ID`), with no gap.
                        tracing::warn!(%e, "output unreadable while following; ending the stream");
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

    /// How many times this follower fell behind the emitter's buffer and
    /// caught up from the stored output (what a test of a slow follower
    /// checks it really tested).
    pub fn catch_ups(&self) -> u64 {
        self.catch_ups
    }

    /// A replayed chunk not yet delivered, or the held chunk once the
    /// replay is over.
    fn next_ready(&mut self) -> Option<FollowEvent> {
        if let Some(c) = self.pending.pop_front() {
            return Some(FollowEvent::Chunk(c));
        }
        if self.pos < self.replay_end {
            return None;
        }
        let chunk = self.held.take()?;
        self.accept(chunk)
    }

    /// Decides what to do with a live chunk: skip it (already delivered by
    /// the replay), deliver it, or hold it while the gap before it is
    /// replayed from the stored output.
    fn accept(&mut self, chunk: Arc<Chunk>) -> Option<FollowEvent> {
        if chunk.offset <= self.pos {
            return None;
        }
        let start = chunk.start();
        if start > self.pos {
            // Everything below `start` is stored or elided by now.
            self.replay_end = start;
            self.held = Some(chunk);
            return None;
        }
        if start < self.pos {
            // Only possible after a replay that began inside this chunk
            // (or jumped over an elided range into it). A cut inside a
            // character moves on to the next one (it used to drop the
            // whole rest of the chunk).
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
                chunk.seq,
                chunk.ts_ms,
            ))));
        }
        self.pos = chunk.offset;
        Some(FollowEvent::Chunk(chunk))
    }

    /// After a lag: counted, then [`Follow::catch_up`].
    fn catch_up_laggard(&mut self) {
        crate::metrics::get().laggard_caught_up();
        self.catch_ups += 1;
        self.catch_up();
    }

    /// After a lag or the end of the live part: replay up to what was
    /// appended by now (every byte of it is stored or elided).
    fn catch_up(&mut self) {
        let st = self.log.lock();
        self.replay_end = st.total.max(self.pos);
    }

    /// One replay step: a block of chunks (the first returned, the rest
    /// queued), or the elided range skipped.
    async fn read_block(&mut self) -> io::Result<Option<FollowEvent>> {
        let view = self.log.view();
        let (from, to, cursor) = (self.pos, self.replay_end, self.cursor);
        let read = tokio::task::spawn_blocking(move || replay_block(&view, from, to, cursor))
            .await
            .map_err(io::Error::other)?;
        let block = match read {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A segment was deleted after the view was taken: it left
                // the window (the next view says so) or the process was
                // deleted (nothing more to replay).
                tracing::debug!(%e, "output segment gone while following");
                match self.log.view().served_from(from) {
                    to if to > from => Block::Elided(to),
                    _ => Block::End,
                }
            }
            other => other?,
        };
        match block {
            Block::Elided(to) => {
                self.pos = to;
                self.cursor = None;
                Ok(Some(FollowEvent::Lagged { from, to }))
            }
            Block::End => {
                self.replay_end = self.pos;
                Ok(None)
            }
            Block::Chunks(chunks, cursor) => {
                self.cursor = cursor;
                if let Some(last) = chunks.last() {
                    crate::metrics::get().replayed((last.offset - from) as usize);
                    self.pos = last.offset;
                }
                self.pending
                    .extend(chunks.into_iter().filter(|c| !c.content.is_empty()).map(Arc::new));
                Ok(self.pending.pop_front().map(FollowEvent::Chunk))
            }
        }
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

/// Reads stored output from `pos` (below `end`) in `view`: at most one
/// [`REPLAY_BLOCK`] of one segment, one chunk per index record in it (the
/// first and last possibly partial), each with the record's SEQ, time and
/// pipe. Blocking. `cursor` is where the previous block left off in the
/// index, which saves the binary search when it still applies.
fn replay_block(view: &OutputView, pos: u64, end: u64, cursor: Option<(u64, u64)>) -> io::Result<Block> {
    let served = view.served_from(pos);
    if served > pos {
        return Ok(Block::Elided(served));
    }
    let Some(seg) = view.segment_at(pos) else {
        return Ok(Block::End);
    };
    let stop = end.min(seg.end).min(pos + REPLAY_BLOCK as u64);
    let bytes = read_range(&seg.log, pos - seg.start, stop - seg.start, REPLAY_BLOCK)?;
    if bytes.is_empty() {
        return Ok(Block::End);
    }
    let got_end = pos + bytes.len() as u64;
    let idx = IndexReader::open_with_count(&seg.idx, seg.records)?;
    let mut i = match cursor {
        Some((start, i)) if start == seg.start => i,
        _ => idx.first_ending_after(pos)?,
    };
    let mut chunks = Vec::new();
    let mut batch = FIRST_BATCH;
    while i < idx.count() {
        let records = idx.read(i, batch)?;
        let mut covered = false;
        for r in &records {
            if r.start >= got_end {
                covered = true;
                break;
            }
            let (a, b) = (r.start.max(pos), r.end().min(got_end));
            if b > a {
                let slice = bytes[(a - pos) as usize..(b - pos) as usize].to_vec();
                chunks.push(Chunk::new(b, log_text(slice), r.pipe, r.seq, r.ts_ms));
            }
            if r.end() > got_end {
                covered = true;
                break;
            }
            i += 1;
        }
        if covered || records.is_empty() {
            break;
        }
        batch = (batch * 2).min(READ_BATCH);
    }
    if chunks.is_empty() {
        // Bytes without records (cannot happen after open's repair): one
        // untagged chunk rather than a stall.
        chunks.push(Chunk::new(got_end, log_text(bytes), None, 0, 0));
    }
    Ok(Block::Chunks(chunks, Some((seg.start, i))))
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
