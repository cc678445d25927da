//! [`Follow`], the stream a follower reads: stored output replayed from
//! where it asked, then live chunks from the process's emitter, catching up
//! from the stored output whenever it falls behind, then the final status.
//! See [`super::log`] for why replay and live never overlap or leave a gap.
//!
//! A replay reads the stored output through [`Pieces`] (the reader
//! `GET …/output` uses too), on a fresh [`OutputView`] per block: one
//! chunk per index record (or the part of one in the block), carrying that
//! record's SEQ, time and pipe. Whatever no segment serves (the elided
//! range, a gap between segments, a segment deleted under the reader) is
//! reported as [`FollowEvent::Lagged`] and the replay goes on after it; a
//! deleted process's output (its head gone) ends the replay, and the stream
//! ends with the status. So a follower always either moves on or ends.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::chunk::Chunk;
use super::error::{Result, StoreError};
use super::log::OutputLog;
use super::records::{Item, Pieces, Step};
#[cfg(doc)]
use super::segments::OutputView;
use crate::model::StatusInfo;

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
    /// Replayed events not delivered yet (one block's worth at most).
    pending: VecDeque<FollowEvent>,
    /// The replay's reader, kept between blocks for its index cursor (None
    /// before the first block, or after a read was cancelled half-way).
    pieces: Option<Pieces>,
    /// The output was deleted under the replay: nothing more is delivered
    /// but the final status.
    gone: bool,
    /// A live chunk that arrived ahead of `pos`, delivered after catch-up.
    held: Option<Arc<Chunk>>,
    rx: Option<broadcast::Receiver<Arc<Chunk>>>,
    done: bool,
    /// The status to end with, when the process was finished at subscribe.
    final_status: Option<StatusInfo>,
    /// Times it fell behind the emitter and caught up from the store.
    catch_ups: u64,
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
            pieces: None,
            gone: false,
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
        if let Some(ev) = self.pending.pop_front() {
            return Some(ev);
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
        if chunk.offset <= self.pos || self.gone {
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
        if self.gone {
            return;
        }
        let st = self.log.lock();
        self.replay_end = st.total.max(self.pos);
    }

    /// One replay step, read on the blocking pool: a block of chunks and
    /// the holes around it (the first event returned, the rest queued), or
    /// the end of a deleted process's output. Always moves `pos` on, or
    /// ends the replay for good.
    async fn read_block(&mut self) -> Result<Option<FollowEvent>> {
        let view = self.log.view();
        let (from, to) = (self.pos, self.replay_end);
        let mut pieces = match self.pieces.take() {
            Some(mut p) => {
                p.set_view(view);
                // A live delivery may have moved pos: the cursor is then
                // dropped, never used for another position.
                p.seek(from);
                p.set_end(to);
                p
            }
            None => Pieces::new(view, from, to, true),
        };
        let (pieces, step) = tokio::task::spawn_blocking(move || {
            let step = pieces.step();
            (pieces, step)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?;
        let at = pieces.position();
        self.pieces = Some(pieces);
        match step? {
            Step::Gone => {
                // The process was deleted: its stored output and anything
                // held for after it go; the status ends the stream.
                tracing::debug!(from, "output deleted while following");
                self.gone = true;
                self.held = None;
                self.replay_end = self.pos;
                Ok(None)
            }
            Step::End => {
                // Only when pos reached the end, which the loop never asks
                // for; skip rather than stall if it ever happens.
                self.pos = to;
                Ok((from < to).then_some(FollowEvent::Lagged { from, to }))
            }
            Step::Items(items) => {
                crate::metrics::get().replayed((at - from) as usize);
                self.pos = at;
                for item in items {
                    match item {
                        Item::Hole { from, to } => self.pending.push_back(FollowEvent::Lagged { from, to }),
                        Item::Text(p) if !p.text.is_empty() => {
                            let (pipe, seq, ts_ms) = (p.pipe(), p.seq(), p.ts_ms());
                            let chunk = Chunk::new(p.end, p.text, pipe, seq, ts_ms);
                            self.pending.push_back(FollowEvent::Chunk(Arc::new(chunk)));
                        }
                        Item::Text(_) => {}
                    }
                }
                Ok(self.pending.pop_front())
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

impl Drop for Follow {
    fn drop(&mut self) {
        crate::metrics::get().follower_closed();
        // The receiver goes first, so the count below no longer includes it.
        if self.rx.take().is_some() {
            self.log.release_emitter_if_unused();
        }
    }
}
