//! Output of one process: the append-only log `output/<id>.log`, its
//! lazily created broadcast emitter, and [`Follow`], the replay-then-live
//! stream a follower reads.
//!
//! # Why replay and live never overlap or leave a gap
//! An append writes the bytes to the log, advances `stored`/`total` and
//! broadcasts the chunk, all under the process's `OutputState` lock. A
//! subscriber takes the same lock to read `stored` and subscribe to the
//! emitter. So every byte below the `stored` it saw is in the log, and every
//! chunk after it arrives on its receiver; chunks already covered by the
//! replay are recognised by their offset and skipped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use tokio::sync::broadcast;

use super::error::{Result, StoreError};
use crate::model::{Status, StatusInfo, StreamKind};

/// Chunks an emitter buffers for its slowest subscriber before that one is
/// told it lagged (and catches up from the log).
pub const EMITTER_CAPACITY: usize = 1024;
/// Appends larger than this are split (at character boundaries) into several
/// chunks, so an emitter's buffer holds at most
/// `EMITTER_CAPACITY * MAX_CHUNK` bytes = 16 MiB.
pub const MAX_CHUNK: usize = 16 * 1024;
/// Size of one read from the log while replaying or catching up.
pub const REPLAY_BLOCK: usize = 64 * 1024;

/// One piece of output as it travels from an append to its followers.
#[derive(Debug)]
pub struct Chunk {
    /// Byte offset of the output after this chunk (the SSE `id`).
    pub offset: u64,
    /// Always valid UTF-8 and never split inside a character.
    pub content: String,
    /// Set for chunks of server-run commands, live only (replayed output
    /// comes from the log, which does not keep it).
    pub stream: Option<StreamKind>,
    /// A transport's encoding of this chunk (e.g. the SSE frame), filled by
    /// the first follower that needs it so 1,000 followers encode it once.
    pub encoded: OnceLock<Bytes>,
}

impl Chunk {
    pub fn new(offset: u64, content: String, stream: Option<StreamKind>) -> Self {
        Chunk {
            offset,
            content,
            stream,
            encoded: OnceLock::new(),
        }
    }

    /// Offset of the first byte of this chunk.
    pub fn start(&self) -> u64 {
        self.offset - self.content.len() as u64
    }
}

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

/// The mutable output state of one process. Append, subscribe, completion
/// and follower teardown take this std Mutex; it is held for one page-cache
/// write at most and never across an `.await`.
pub(crate) struct OutputState {
    path: PathBuf,
    /// The open log. Arc so that an fsync can run on a clone of the handle
    /// without holding this lock (an fsync can take many milliseconds, and
    /// `list`/`get` take this lock to read `stored`).
    file: Option<Arc<File>>,
    /// Bytes in the log (acknowledged, readable).
    pub stored: u64,
    /// Bytes emitted in all (>= stored once the cap is hit).
    pub total: u64,
    pub truncated: bool,
    /// Appends are accepted only while the process is running.
    pub accepting: bool,
    /// The process's status as far as output is concerned: what a refused
    /// append reports. Already terminal while a completion is being written.
    pub status: Status,
    /// The process is finished (at open, or `finish` ran): followers that
    /// arrive replay and end instead of subscribing. Not the same as a
    /// terminal `status`, which is set before the completion is durable.
    pub finished: bool,
    /// The final status event of a process that finished (or was deleted)
    /// while this store was open, for followers attached at that moment.
    /// Not kept for processes already finished at open: their followers get
    /// it from the record at subscribe time (keeping a copy of every
    /// finished record's `result` here cost ~0.6 KiB per record at open).
    pub final_status: Option<StatusInfo>,
    emitter: Option<broadcast::Sender<Arc<Chunk>>>,
}

/// Shared handle of a process's output.
pub(crate) struct Output {
    pub state: Mutex<OutputState>,
    /// Live emitters across the store (observable in tests and /healthz).
    emitters: Arc<AtomicUsize>,
}

/// Result of an append.
pub(crate) struct Appended {
    /// Logical offset after the append (what followers see as `id`).
    pub total: u64,
    /// True when this append was the one that crossed the cap.
    pub newly_truncated: bool,
}

impl Output {
    pub fn new(path: PathBuf, stored: u64, status: Status, truncated: bool, emitters: Arc<AtomicUsize>) -> Self {
        Output {
            state: Mutex::new(OutputState {
                path,
                file: None,
                stored,
                total: stored,
                truncated,
                accepting: status == Status::Running,
                status,
                finished: status.is_terminal(),
                final_status: None,
                emitter: None,
            }),
            emitters,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, OutputState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `content`. Blocking (one page-cache write under the lock):
    /// the store calls it through `blocking_short`, never bare on the
    /// executor. Stores it unless that would pass `max_output`, in which
    /// case it is only broadcast and the output is marked truncated from
    /// then on.
    pub fn append_blocking(
        &self,
        id: &str,
        content: String,
        stream: Option<StreamKind>,
        max_output: u64,
    ) -> Result<Appended> {
        let mut st = self.lock();
        if !st.accepting {
            return Err(StoreError::NotRunning {
                id: id.to_owned(),
                status: st.status,
            });
        }
        let mut newly_truncated = false;
        let len = content.len() as u64;
        if !st.truncated && st.stored + len <= max_output {
            if st.file.is_none() {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&st.path)
                    .map_err(StoreError::io("open output log", &st.path))?;
                st.file = Some(Arc::new(f));
            }
            let mut file: &File = st.file.as_deref().expect("opened just above");
            if let Err(e) = file.write_all(content.as_bytes()) {
                // Cut a partial write back off, so the log never holds
                // bytes beyond `stored` that later offsets would skip.
                let _ = file.set_len(st.stored);
                return Err(StoreError::io("append to", &st.path)(e));
            }
            st.stored += len;
        } else if !st.truncated && len > 0 {
            st.truncated = true;
            newly_truncated = true;
        }
        let start = st.total;
        st.total += len;
        if let Some(tx) = &st.emitter {
            if content.len() <= MAX_CHUNK {
                // The common case: the content becomes the chunk, no copy.
                let _ = tx.send(Arc::new(Chunk::new(st.total, content, stream)));
            } else {
                for (at, piece) in split_chunks(&content) {
                    let end = start + (at + piece.len()) as u64;
                    // An error only means nobody is subscribed right now.
                    let _ = tx.send(Arc::new(Chunk::new(end, piece.to_owned(), stream)));
                }
            }
        }
        Ok(Appended {
            total: st.total,
            newly_truncated,
        })
    }

    /// Stops accepting appends; returns the stored length. First step of
    /// moving a process to `to` (terminal), which refused appends report
    /// from now on (regression: they used to say "queued" in this window).
    pub fn close_for_appends(&self, to: Status) -> u64 {
        let mut st = self.lock();
        st.accepting = false;
        st.status = to;
        st.stored
    }

    /// Re-opens for appends (the completion's record write failed, or the
    /// process moved queued → running).
    pub fn reopen_for_appends(&self) {
        let mut st = self.lock();
        st.accepting = true;
        st.status = Status::Running;
    }

    /// fsyncs the log (blocking), so a finished process's output is durable.
    pub fn sync(&self) -> Result<()> {
        // Regression: this used to fsync while holding the state lock, so
        // every `get`/`list` touching this process (and every append and
        // subscribe) stalled for the whole fsync, on the async executor.
        let (file, path) = {
            let st = self.lock();
            (st.file.clone(), st.path.clone())
        };
        if let Some(f) = file {
            f.sync_data().map_err(StoreError::io("fsync", &path))?;
        }
        Ok(())
    }

    /// Marks the process finished and drops the emitter, which ends every
    /// follower's live part: each then catches up from the log and gets
    /// `status`.
    pub fn finish(&self, status: StatusInfo) {
        let mut st = self.lock();
        st.accepting = false;
        st.status = status.status;
        st.finished = true;
        st.final_status = Some(status);
        st.file = None;
        if st.emitter.take().is_some() {
            self.emitters.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Starts following at byte `from` (None: from now on). `current` is the
    /// record's status event now, used if the process is already finished.
    pub fn subscribe(self: &Arc<Self>, from: Option<u64>, current: StatusInfo) -> Follow {
        let mut st = self.lock();
        let finished = st.finished;
        let rx = if finished {
            None
        } else {
            let tx = st.emitter.get_or_insert_with(|| {
                self.emitters.fetch_add(1, Ordering::Relaxed);
                broadcast::channel(EMITTER_CAPACITY).0
            });
            Some(tx.subscribe())
        };
        let pos = from.map_or(st.total, |n| n.min(st.total));
        let follow = Follow {
            output: self.clone(),
            path: st.path.clone(),
            pos,
            replay_end: st.stored.max(pos),
            gap_to: st.total,
            held: None,
            rx,
            done: false,
            final_status: finished.then(|| {
                if current.status.is_terminal() {
                    current
                } else {
                    // Deleted while running: the record never became terminal.
                    st.final_status.clone().unwrap_or(current)
                }
            }),
        };
        drop(st);
        follow
    }
}

/// Splits `s` into pieces of at most [`MAX_CHUNK`] bytes at character
/// boundaries, with each piece's byte index.
fn split_chunks(s: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= s.len() {
            return None;
        }
        let end = floor_char_boundary(s.as_bytes(), (at + MAX_CHUNK).min(s.len()));
        let end = if end <= at { s.len() } else { end };
        let piece = (at, &s[at..end]);
        at = end;
        Some(piece)
    })
}

/// The largest index `<= i` that is not inside a UTF-8 sequence.
fn floor_char_boundary(b: &[u8], mut i: usize) -> usize {
    while i > 0 && i < b.len() && (b[i] & 0xC0) == 0x80 {
        i -= 1;
    }
    i
}

/// Length of the longest prefix of `b` that does not end inside an
/// incomplete UTF-8 sequence.
fn complete_prefix_len(b: &[u8]) -> usize {
    // A sequence is at most 4 bytes: look back at most 3 for its lead byte.
    for back in 1..=b.len().min(4) {
        let i = b.len() - back;
        let byte = b[i];
        if byte & 0xC0 == 0x80 {
            continue;
        }
        let need = match byte {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
        return if back >= need { b.len() } else { i };
    }
    b.len()
}

/// Reads `from..to` of a log, or as much of it as fits in `max` bytes,
/// ending at a character boundary unless that is the end of the range.
pub(crate) fn read_range(path: &Path, from: u64, to: u64, max: usize) -> io::Result<Vec<u8>> {
    if to <= from {
        return Ok(Vec::new());
    }
    let want = ((to - from) as usize).min(max);
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0; want];
    let mut got = 0;
    while got < want {
        match f.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    if (from + got as u64) < to {
        let cut = complete_prefix_len(&buf);
        if cut > 0 {
            buf.truncate(cut);
        }
    }
    Ok(buf)
}

/// Sizes of every `<id>.log` in `dir`, by id: `output_bytes` is derived
/// from the log at open, never trusted from the record.
pub(crate) fn log_sizes(dir: &Path) -> Result<std::collections::HashMap<String, u64>> {
    let mut sizes = std::collections::HashMap::new();
    for entry in fs::read_dir(dir).map_err(StoreError::io("read folder", dir))? {
        let entry = entry.map_err(StoreError::io("read folder", dir))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if crate::model::validate_id(id).is_err() {
            continue;
        }
        let len = entry.metadata().map_err(StoreError::io("stat", entry.path()))?.len();
        sizes.insert(id.to_owned(), len);
    }
    Ok(sizes)
}

/// A follower: replays stored output from where it asked, then goes live,
/// catching up from the log whenever it falls behind the emitter, and ends
/// with the process's final status. Dropping it unsubscribes at once and
/// removes the emitter if it was the last follower.
pub struct Follow {
    output: Arc<Output>,
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
                        // The log vanished (the process was deleted) or
                        // cannot be read: nothing more can be replayed.
                        tracing::debug!(%e, path = %self.path.display(), "output log unreadable while following");
                        self.replay_end = self.pos;
                        continue;
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
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up(),
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
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.catch_up(),
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
            let stored = self.output.lock().stored;
            self.replay_end = stored.min(start).max(self.pos);
            self.gap_to = start;
            self.held = Some(chunk);
            return None;
        }
        if start < self.pos {
            // Only possible after a replay that began inside this chunk.
            let skip = (self.pos - start) as usize;
            let rest = chunk.content.get(skip..)?;
            self.pos = chunk.offset;
            return Some(FollowEvent::Chunk(Arc::new(Chunk::new(
                chunk.offset,
                rest.to_owned(),
                chunk.stream,
            ))));
        }
        self.pos = chunk.offset;
        Some(FollowEvent::Chunk(chunk))
    }

    /// After a lag or the end of the live part: replay the log up to what is
    /// stored now; anything beyond that which went by is a gap.
    fn catch_up(&mut self) {
        let st = self.output.lock();
        self.replay_end = st.stored.max(self.pos);
        if self.rx.is_none() {
            // Finished: whatever was emitted but not stored is gone.
            self.gap_to = st.total;
        }
    }

    async fn read_block(&mut self) -> io::Result<Option<FollowEvent>> {
        let (path, from, to) = (self.path.clone(), self.pos, self.replay_end);
        let bytes = tokio::task::spawn_blocking(move || read_range(&path, from, to, REPLAY_BLOCK))
            .await
            .map_err(io::Error::other)??;
        if bytes.is_empty() {
            // The log is shorter than the index says: stop replaying.
            self.replay_end = self.pos;
            return Ok(None);
        }
        self.pos += bytes.len() as u64;
        let content = match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        Ok(Some(FollowEvent::Chunk(Arc::new(Chunk::new(self.pos, content, None)))))
    }

    fn finish(&mut self) -> Option<FollowEvent> {
        self.done = true;
        let status = match self.final_status.take() {
            Some(s) => s,
            None => self.output.lock().final_status.clone()?,
        };
        Some(FollowEvent::Status(status))
    }

    /// The stream form of [`Follow::next`].
    pub fn into_stream(self) -> impl futures_util::Stream<Item = FollowEvent> + Send {
        futures_util::stream::unfold(self, |mut f| async move { f.next().await.map(|ev| (ev, f)) })
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        if self.rx.take().is_some() {
            let mut st = self.output.lock();
            if st.emitter.as_ref().is_some_and(|tx| tx.receiver_count() == 0) {
                st.emitter = None;
                self.output.emitters.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_never_cuts_a_character() {
        let s = "é".repeat(MAX_CHUNK);
        let pieces: Vec<_> = split_chunks(&s).collect();
        assert!(pieces.len() > 1);
        assert_eq!(pieces.iter().map(|(_, p)| *p).collect::<String>(), s);
        assert!(pieces.iter().all(|(_, p)| p.len() <= MAX_CHUNK));
    }

    #[test]
    fn ranges_end_on_character_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        fs::write(&p, "aé€😀").unwrap();
        let b = read_range(&p, 0, 10, 2).unwrap();
        assert_eq!(b, b"a");
        let b = read_range(&p, 1, 10, 4).unwrap();
        assert_eq!(std::str::from_utf8(&b).unwrap(), "é");
        let b = read_range(&p, 0, 10, 100).unwrap();
        assert_eq!(std::str::from_utf8(&b).unwrap(), "aé€😀");
    }
}
