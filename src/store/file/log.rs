//! The output log of one process: `output/<id>.log`, appended under one
//! lock that also guards the process's lazily created broadcast emitter,
//! and the blocking reads of a log (ranges at character boundaries, sizes
//! at open). [`super::follow`] is the replay-then-live stream a follower
//! reads from it; [`super::chunk`] is what the emitter carries.
//!
//! # Why replay and live never overlap or leave a gap
//! An append writes the bytes to the log, advances `stored`/`total` and
//! broadcasts the chunk, all under the process's `LogState` lock. A
//! subscriber takes the same lock to read `stored` and subscribe to the
//! emitter. So every byte below the `stored` it saw is in the log, and every
//! chunk after it arrives on its receiver; chunks already covered by the
//! replay are recognised by their offset and skipped.
//!
//! # Descriptors
//! A log holds no descriptor of its own: appends take one from the
//! store-wide [`super::handles::LogHandles`] cache (at most
//! [`MAX_OPEN_LOGS`] open), and reads open the file for one block and close
//! it again.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use super::chunk::Chunk;
use super::error::{Result, StoreError};
use super::follow::Follow;
use super::handles::LogHandles;
use crate::model::{Status, StatusInfo, StreamKind};

/// Chunks an emitter buffers for its slowest subscriber before that one is
/// told it lagged (and catches up from the log).
pub const EMITTER_CAPACITY: usize = 1024;
/// Most runs of one pipe (stdout/stderr) remembered per process so replayed
/// output keeps its `stream` tag; past this, replay of later output is
/// untagged. 16 bytes each: at most 1 MiB per process.
pub const MAX_STREAM_RUNS: usize = 65_536;
/// Size of one read from the log while replaying or catching up.
pub const REPLAY_BLOCK: usize = 64 * 1024;
/// Output logs the store keeps open at once for appends, store-wide (fewer
/// under a low descriptor limit: `handles::capacity`); past it the least
/// recently appended-to log is closed and reopened on its next
/// append (an `open` of a few microseconds, only for a process that had
/// gone quiet while 256 others wrote).
///
/// The store's descriptor budget is this plus a handful: the `LOCK` file,
/// the two record folders kept open for their fsyncs, one temp file per
/// record write in flight, one log per read or fsync in flight (each closed
/// at once), and one per append in flight past an eviction. Whoever sizes
/// the server's connections against `RLIMIT_NOFILE` reserves at least
/// `MAX_OPEN_LOGS` plus those for the store.
pub const MAX_OPEN_LOGS: usize = 256;

/// Hands out each log's key into [`LogHandles`]: unique for the life of the
/// program, unlike an address or an id, which a deleted and re-created
/// process reuses.
static NEXT_LOG_KEY: AtomicU64 = AtomicU64::new(0);

/// The mutable output state of one process. Append, subscribe, completion
/// and follower teardown take this std Mutex; it is held for one page-cache
/// write at most and never across an `.await`.
pub(crate) struct LogState {
    path: PathBuf,
    /// Key of this log's handle in the store's [`LogHandles`].
    key: u64,
    /// Appends since the last fsync: `sync` has something to flush (and
    /// reopens the log for it if its handle was closed in between).
    unsynced: bool,
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
    /// Where each run of stored output from one pipe starts, in order:
    /// `(offset, pipe)`, a new entry only when the pipe changes. Lets a
    /// replay tag stored chunks `stdout`/`stderr` like live ones (a `run`
    /// client that connects after the command's first lines still sends
    /// stderr to stderr). In memory only: after a restart replays are
    /// untagged.
    streams: Vec<(u64, Option<StreamKind>)>,
}

impl LogState {
    /// Writes `bytes` at `stored` (taking the log's handle from `handles`,
    /// opening it if it is not cached) and counts them as stored.
    ///
    /// Writes are positioned, not appended: bytes a failed write left past
    /// `stored` (a full disk takes part of a write) are overwritten by the
    /// next one, never skipped, and they are cut off again when the log is
    /// next opened, so a restart (which takes the log's length as
    /// `output_bytes`) never serves them either.
    fn write(&mut self, handles: &LogHandles, bytes: &[u8], stream: Option<StreamKind>) -> Result<()> {
        let (file, fresh) = handles
            .for_writing(self.key, &self.path)
            .map_err(StoreError::io("open output log", &self.path))?;
        if fresh {
            trim_to(&file, self.stored).map_err(StoreError::io("trim output log", &self.path))?;
        }
        if let Err(e) = file.write_all_at(bytes, self.stored) {
            let _ = file.set_len(self.stored);
            return Err(StoreError::io("append to", &self.path)(e));
        }
        self.unsynced = true;
        self.note_stream(stream);
        self.stored += bytes.len() as u64;
        Ok(())
    }

    /// Records that stored output from `stored` on comes from `stream`.
    fn note_stream(&mut self, stream: Option<StreamKind>) {
        let current = self.streams.last().and_then(|r| r.1);
        if current == stream || (self.streams.is_empty() && stream.is_none()) {
            return;
        }
        if self.streams.len() + 1 >= MAX_STREAM_RUNS {
            // Full: replay the rest untagged rather than grow without bound.
            if current.is_some() {
                self.streams.push((self.stored, None));
            }
            return;
        }
        self.streams.push((self.stored, stream));
    }

    /// Where the stored output is right now, for a reader that reads
    /// without the lock (`GET …/output`, replays).
    // Base commit of issue 10: the head only, no index records yet; the
    // store-core work keeps this up to date with the index and segments.
    #[allow(dead_code)] // until the history reader uses it
    pub(crate) fn view(&self) -> super::segments::OutputView {
        let idx = self.path.with_extension("idx");
        super::segments::OutputView {
            segments: vec![super::segments::SegmentView {
                start: 0,
                end: self.stored,
                records: 0,
                log: self.path.clone(),
                idx,
            }],
            end: self.total,
            elided: None,
        }
    }

    /// The pipe of stored output at `pos`, and where that run ends (if
    /// before `to`).
    pub(crate) fn stream_run(&self, pos: u64, to: u64) -> (Option<StreamKind>, u64) {
        let i = self.streams.partition_point(|r| r.0 <= pos);
        let tag = i.checked_sub(1).and_then(|j| self.streams[j].1);
        let end = self.streams.get(i).map_or(to, |r| r.0.min(to));
        (tag, end)
    }
}

/// Shared handle of a process's output log and emitter.
pub(crate) struct OutputLog {
    /// This log's key in the store's [`LogHandles`] (also in `state`, for
    /// callers that do not take the lock).
    key: u64,
    pub state: Mutex<LogState>,
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

impl OutputLog {
    pub fn new(path: PathBuf, stored: u64, status: Status, truncated: bool, emitters: Arc<AtomicUsize>) -> Self {
        let key = NEXT_LOG_KEY.fetch_add(1, Ordering::Relaxed);
        OutputLog {
            key,
            state: Mutex::new(LogState {
                path,
                key,
                unsynced: false,
                stored,
                total: stored,
                truncated,
                accepting: status == Status::Running,
                status,
                finished: status.is_terminal(),
                final_status: None,
                emitter: None,
                streams: Vec::new(),
            }),
            emitters,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, LogState> {
        crate::sync::lock(&self.state)
    }

    /// [`LogState::view`] under the lock.
    #[allow(dead_code)] // until the history reader uses it
    pub(crate) fn view(&self) -> super::segments::OutputView {
        self.lock().view()
    }

    /// Appends `content`. Blocking (one page-cache write under the lock):
    /// the store calls it inline for appends up to `INLINE_APPEND_MAX` and
    /// through `blocking_short` for larger ones. Stores it unless that would
    /// pass `max_output`, in which case it is only broadcast and the output
    /// is marked truncated from then on.
    pub fn append_blocking(
        &self,
        handles: &LogHandles,
        id: &str,
        content: String,
        stream: Option<StreamKind>,
        at: Option<u64>,
        max_output: u64,
    ) -> Result<Appended> {
        let mut st = self.lock();
        if !st.accepting {
            return Err(StoreError::NotRunning {
                id: id.to_owned(),
                status: st.status,
            });
        }
        if let Some(at) = at.filter(|&n| n != st.total) {
            return Err(StoreError::OffsetMismatch {
                id: id.to_owned(),
                at,
                output_bytes: st.total,
            });
        }
        let len = content.len() as u64;
        let mut newly_truncated = false;
        if !st.truncated && st.stored + len <= max_output {
            st.write(handles, content.as_bytes(), stream)?;
        } else if !st.truncated && len > 0 {
            st.truncated = true;
            newly_truncated = true;
        }
        let start = st.total;
        st.total += len;
        if let Some(tx) = &st.emitter {
            // An error only means nobody is subscribed right now.
            Chunk::split(start, content, stream, |c| {
                let _ = tx.send(Arc::new(c));
            });
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
        self.restore_status(Status::Running);
    }

    /// Undoes [`OutputLog::close_for_appends`] after the record write that
    /// was to follow it failed: the process is `status` again, and takes
    /// appends only if that is `running`. Regression: a failed cancel of a
    /// queued process reopened it as running, so it took output.
    pub fn restore_status(&self, status: Status) {
        let mut st = self.lock();
        st.accepting = status == Status::Running;
        st.status = status;
    }

    /// fsyncs the log if it was appended to since the last fsync (blocking),
    /// so a finished process's output is durable. Uses the cached handle,
    /// else opens the log for the fsync alone: the data of a handle closed
    /// by eviction is flushed by an fsync through any descriptor.
    pub fn sync(&self, handles: &LogHandles) -> Result<()> {
        // Regression: this used to fsync while holding the state lock, so
        // every `get`/`list` touching this process (and every append and
        // subscribe) stalled for the whole fsync, on the async executor.
        let path = {
            let mut st = self.lock();
            if !std::mem::take(&mut st.unsynced) {
                return Ok(());
            }
            st.path.clone()
        };
        let synced = match handles.cached(self.key) {
            Some(f) => f.sync_data(),
            None => File::open(&path).and_then(|f| f.sync_data()),
        };
        if let Err(e) = synced {
            // Still to do: the next sync (or the shutdown's) tries again.
            self.lock().unsynced = true;
            return Err(StoreError::io("fsync", &path)(e));
        }
        Ok(())
    }

    /// Marks the process finished, closes its log's cached handle (no more
    /// appends; a deleted log's space is freed once no descriptor is left)
    /// and drops the emitter, which ends every follower's live part: each
    /// then catches up from the log and gets `status`.
    pub fn finish(&self, handles: &LogHandles, status: StatusInfo) {
        let mut st = self.lock();
        st.accepting = false;
        st.status = status.status;
        st.finished = true;
        st.final_status = Some(status);
        handles.forget(self.key);
        if st.emitter.take().is_some() {
            self.emitters.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A follower's receiver was dropped: remove the emitter if that was the
    /// last one (it is created again by the next subscribe).
    pub fn release_emitter_if_unused(&self) {
        let mut st = self.lock();
        if st.emitter.as_ref().is_some_and(|tx| tx.receiver_count() == 0) {
            st.emitter = None;
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
        let final_status = finished.then(|| {
            if current.status.is_terminal() {
                current
            } else {
                // Deleted while running: the record never became terminal.
                st.final_status.clone().unwrap_or(current)
            }
        });
        let follow = Follow::new(
            self.clone(),
            st.path.clone(),
            pos,
            st.stored.max(pos),
            st.total,
            rx,
            final_status,
        );
        drop(st);
        follow
    }
}

/// Cuts a freshly opened log back to `stored` bytes: what a failed write
/// (or the log of an earlier process of the same id that could not be
/// removed) left beyond the acknowledged output.
fn trim_to(file: &File, stored: u64) -> io::Result<()> {
    if file.metadata()?.len() > stored {
        file.set_len(stored)?;
    }
    Ok(())
}

/// Text of bytes read from a log at any byte offset: a start inside a
/// character moves to the next one (regression: the partial character
/// became U+FFFD, so a replayed chunk's length no longer matched its
/// offsets), and invalid bytes (a write torn by a crash, or a log written by
/// something else) become U+FFFD, so whatever is served as UTF-8 is UTF-8.
/// Used by follow replays and by `read_output` alike.
pub(crate) fn log_text(mut bytes: Vec<u8>) -> String {
    let skip = bytes.iter().take(3).take_while(|b| (**b & 0xC0) == 0x80).count();
    bytes.drain(..skip);
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
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
        let cut = crate::utf8::complete_prefix_len(&buf);
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
        if crate::model::Id::parse(id).is_err() {
            continue;
        }
        let len = entry.metadata().map_err(StoreError::io("stat", entry.path()))?.len();
        sizes.insert(id.to_owned(), len);
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

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
