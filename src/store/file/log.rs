//! The output of one process: its segments (head log + index, tail
//! segments, see [`super::segments`]), appended under one lock that also
//! guards the process's lazily created broadcast emitter, the head + tail
//! retention that decides which segments exist ([`Retain`]), the
//! store-wide SEQ counter ([`Seqs`]), and the blocking reads of a log
//! (ranges at character boundaries). [`super::follow`] is the
//! replay-then-live stream a follower reads from it; [`super::chunk`] is
//! what the emitter carries.
//!
//! # Why replay and live never overlap or leave a gap
//! An append writes each piece's bytes and then its index record, advances
//! the segment's end and `total` and broadcasts the piece's chunk, all
//! under the process's `LogState` lock. A subscriber takes the same lock
//! to read `total` and subscribe to the emitter. So every byte below the
//! `total` it saw is in a segment of the view it takes later, or in the
//! view's elided range (reported as `lagged`), and every chunk after it
//! arrives on its receiver; chunks already covered by the replay are
//! recognised by their offset and skipped.
//!
//! # Descriptors
//! A log holds no descriptor of its own: appends take the pair (log,
//! index) of the segment being written from the store-wide
//! [`super::handles::LogHandles`] cache (at most [`MAX_OPEN_LOGS`]
//! processes, two descriptors each), and reads open a file for one block
//! and close it again.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use super::Clock;
use super::appends::{self, Append};
use super::chunk::{Chunk, piece_end};
use super::error::{Result, StoreError};
use super::follow::Follow;
use super::handles::LogHandles;
use super::segments::{OutputView, SegmentView, segment_paths};
use crate::model::{Status, StatusInfo, StreamKind};

/// Chunks an emitter buffers for its slowest subscriber before that one is
/// told it lagged (and catches up from the log).
pub const EMITTER_CAPACITY: usize = 1024;
/// Size of one read from the log while replaying or catching up.
pub const REPLAY_BLOCK: usize = 64 * 1024;
/// Processes whose segment the store keeps open at once for appends,
/// store-wide (fewer under a low descriptor limit: `handles::capacity`);
/// past it the least recently appended-to process's pair is closed and
/// reopened on its next append (two `open`s of a few microseconds, only
/// for a process that had gone quiet while 256 others wrote).
///
/// The store's descriptor budget is twice this (each process's log and
/// index) plus a handful: the `LOCK` file, the two record folders kept
/// open for their fsyncs, one temp file per record write in flight, one or
/// two files per read or fsync in flight (each closed at once), and two
/// per append in flight past an eviction. Whoever sizes the server's
/// connections against `RLIMIT_NOFILE` reserves at least
/// `2 * MAX_OPEN_LOGS` plus those for the store.
pub const MAX_OPEN_LOGS: usize = 256;
/// Name of the SEQ floor file in the output folder.
pub const SEQ_FILE: &str = "SEQ";

/// Hands out each log's key into [`LogHandles`]: unique for the life of the
/// program, unlike an address or an id, which a deleted and re-created
/// process reuses.
static NEXT_LOG_KEY: AtomicU64 = AtomicU64::new(0);

/// The head + tail retention of `--max-output` = C (README, on-disk
/// section): the head keeps the first C/2 bytes, then tail segments of
/// about C/4 take the rest, and once more than C was appended only the
/// last C/2 bytes of the tail are served, the segments wholly before them
/// deleted.
///
/// Tiny caps: C < 2 keeps no tail at all (everything past the head, which
/// is empty for C = 0, is elided, never stored, and its live chunks carry
/// SEQ 0); for 2 <= C < 4 segments hold at least one piece each, so disk
/// use is bounded by the cap plus three pieces (`MAX_CHUNK` each). Nothing
/// panics for any C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retain {
    /// Bytes the head keeps (C/2).
    pub head: u64,
    /// Bytes of the tail served once more than C was appended (C/2).
    pub window: u64,
    /// A new tail segment starts when the current one has this many bytes
    /// (C/4, at least 1).
    pub segment: u64,
}

impl Retain {
    pub fn new(max_output: u64) -> Self {
        Retain {
            head: max_output / 2,
            window: max_output / 2,
            segment: (max_output / 4).max(1),
        }
    }
}

/// The store-wide SEQ counter: +1 per stored piece, strictly increasing
/// across restarts. At open it resumes after the largest SEQ of any index
/// and the floor in `output/SEQ`; the floor is raised before the files
/// holding the largest SEQs are deleted, so a restart never hands them out
/// again.
pub(crate) struct Seqs {
    /// The last SEQ handed out. Incremented under the appending process's
    /// output lock, so within a process SEQ order is byte order.
    last: AtomicU64,
    /// What `output/SEQ` holds on disk. std Mutex, a leaf: held across
    /// the durable write of that file, which only a delete of a process
    /// holding SEQs above it does, never under an output lock.
    floor: Mutex<u64>,
    path: PathBuf,
}

impl Seqs {
    pub fn new(output_dir: &Path, last: u64, floor: u64) -> Self {
        Seqs {
            last: AtomicU64::new(last),
            floor: Mutex::new(floor),
            path: output_dir.join(SEQ_FILE),
        }
    }

    fn next(&self) -> u64 {
        self.last.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The last SEQ handed out.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    /// Called before deleting files whose largest SEQ is `seq`: if that is
    /// above the floor on disk, writes the current counter as the new
    /// floor (durably), so the next open starts above it. Blocking.
    pub fn keep_above(&self, seq: u64) -> Result<()> {
        let mut floor = crate::sync::lock(&self.floor);
        if seq <= *floor {
            return Ok(());
        }
        let now = self.last().max(seq);
        crate::durable::write(&self.path, format!("{now}\n").as_bytes(), None)?;
        *floor = now;
        Ok(())
    }
}

/// What every output log of one store shares.
pub(crate) struct LogEnv {
    /// `DIR/output`.
    pub dir: PathBuf,
    pub seqs: Seqs,
    /// The store's clock: an append's time.
    pub clock: Clock,
    pub retain: Retain,
    /// Live emitters across the store (observable in tests and /healthz).
    pub emitters: AtomicUsize,
}

/// Where a process's output stands when its log is built: what open found
/// on disk (or nothing, for a new process).
#[derive(Debug, Clone, Default)]
pub(crate) struct Stored {
    /// The head first, then tail segments in offset order (empty: a head
    /// with nothing in it).
    pub segments: Vec<SegmentView>,
    /// Every byte appended, stored or elided.
    pub total: u64,
    pub elided: Option<(u64, u64)>,
    /// The SEQ and time of the last stored piece (0 if none).
    pub last_seq: u64,
    pub last_ts_ms: i64,
}

/// The mutable output state of one process. Append, subscribe, completion
/// and follower teardown take this std Mutex; it is held for one append's
/// page-cache writes at most and never across an `.await`.
pub(crate) struct LogState {
    id: String,
    /// Key of this log's handles in the store's [`LogHandles`].
    key: u64,
    env: Arc<LogEnv>,
    /// The head first, then tail segments: what [`LogState::view`] hands
    /// out. Segments are added by appends and removed (with their files)
    /// when they leave the retention window.
    segments: Vec<SegmentView>,
    /// Segments from this position on were written since the last fsync.
    sync_from: usize,
    /// Appends since the last fsync: `sync` has something to flush.
    unsynced: bool,
    /// Offset just past the last stored byte (the last segment's end).
    pub stored: u64,
    /// Every byte appended, stored or elided: `output_bytes`.
    pub total: u64,
    /// Bytes no longer (or never) stored, between the head and the tail.
    pub elided: Option<(u64, u64)>,
    pub truncated: bool,
    /// Time of the last stored piece: times never go back within a process.
    last_ts_ms: i64,
    /// SEQ of the last stored piece (0: none).
    pub last_seq: u64,
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

impl LogState {
    /// Bytes in the elided range.
    pub fn elided_bytes(&self) -> u64 {
        self.elided.map_or(0, |(a, b)| b - a)
    }

    /// End of the head.
    fn head_end(&self) -> u64 {
        self.segments[0].end
    }

    /// Stores one piece: its bytes in the current segment's log (starting
    /// a new tail segment first if `to_head` is false and the head or the
    /// current tail is full), then its record in that segment's index.
    /// Returns its SEQ.
    ///
    /// Writes are positioned, not appended: bytes or records a failed write
    /// left past the segment's end are overwritten by the next one, never
    /// skipped, and they are cut off again when the segment is next opened
    /// for writing or the store is opened (`appends::repair`).
    fn write(
        &mut self,
        handles: &LogHandles,
        bytes: &[u8],
        pipe: Option<StreamKind>,
        ts_ms: i64,
        to_head: bool,
    ) -> Result<u64> {
        if !to_head {
            let last = self.segments.last().expect("a log always has its head");
            if self.segments.len() == 1 || last.end - last.start >= self.env.retain.segment {
                self.start_segment(handles);
            }
        }
        let seg = self.segments.last_mut().expect("a log always has its head");
        let (files, fresh) = handles
            .for_writing(self.key, seg.start, &seg.log, &seg.idx)
            .map_err(StoreError::io("open output log", &seg.log))?;
        let at = seg.end - seg.start;
        if fresh {
            trim_to(&files.log, at).map_err(StoreError::io("trim output log", &seg.log))?;
            trim_to(&files.idx, appends::record_pos(seg.records))
                .map_err(StoreError::io("trim output index", &seg.idx))?;
        }
        if let Err(e) = files.log.write_all_at(bytes, at) {
            let _ = files.log.set_len(at);
            return Err(StoreError::io("append to", &seg.log)(e));
        }
        let seq = self.env.seqs.next();
        let rec = Append {
            start: seg.end,
            seq,
            ts_ms,
            len: bytes.len() as u32,
            pipe,
        };
        if let Err(e) = appends::write_records(&files.idx, seg.records, &[rec]) {
            let _ = files.idx.set_len(appends::record_pos(seg.records));
            let _ = files.log.set_len(at);
            return Err(StoreError::io("append to", &seg.idx)(e));
        }
        seg.end = rec.end();
        seg.records += 1;
        self.stored = seg.end;
        self.last_seq = seq;
        self.unsynced = true;
        Ok(seq)
    }

    /// Starts a tail segment at `total` (its files are created by the
    /// first write) and closes the handles of the one before. `total`, not
    /// `stored`: they differ after an elided range that was never stored
    /// (review M2), and the next byte's offset is `total`.
    fn start_segment(&mut self, handles: &LogHandles) {
        handles.forget(self.key);
        let start = self.total;
        let (log, idx) = segment_paths(&self.env.dir, &self.id, start);
        self.segments.push(SegmentView {
            start,
            end: start,
            records: 0,
            log,
            idx,
        });
    }

    /// Applies the retention window after an append: the elided range, and
    /// the tail segments wholly before the window deleted. Returns whether
    /// elision started with this append.
    fn retain(&mut self) -> bool {
        let head_end = self.head_end();
        let from = self.total.saturating_sub(self.env.retain.window).max(head_end);
        if from <= head_end {
            return false;
        }
        self.elided = Some((head_end, from));
        let mut i = 1;
        while i + 1 < self.segments.len() {
            if self.segments[i].end <= from {
                let gone = self.segments.remove(i);
                remove_segment(&gone);
                if i < self.sync_from {
                    self.sync_from -= 1;
                }
            } else {
                i += 1;
            }
        }
        !std::mem::replace(&mut self.truncated, true)
    }

    /// Where the stored output is right now, for a reader that reads
    /// without the lock (`GET …/output`, replays).
    pub(crate) fn view(&self) -> OutputView {
        OutputView {
            segments: self.segments.clone(),
            end: self.total,
            elided: self.elided,
        }
    }
}

/// Removes a segment's log and index (it left the retention window, or
/// its process was deleted). A failure is logged: a segment left behind
/// holds real output, and the next open removes it if its process is
/// gone or serves only what the window allows.
pub(crate) fn remove_segment(seg: &SegmentView) {
    for path in [&seg.log, &seg.idx] {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(%e, file = %path.display(), "could not remove an output segment"),
        }
    }
}

/// Shared handle of a process's output log and emitter.
pub(crate) struct OutputLog {
    /// This log's key in the store's [`LogHandles`] (also in `state`, for
    /// callers that do not take the lock).
    key: u64,
    pub state: Mutex<LogState>,
    env: Arc<LogEnv>,
}

/// Result of an append.
pub(crate) struct Appended {
    /// Offset after the append (`output_bytes`, what followers see as `id`).
    pub total: u64,
    /// True when this append was the one that started the elision.
    pub newly_truncated: bool,
}

impl OutputLog {
    pub fn new(env: &Arc<LogEnv>, id: &str, stored: Stored, status: Status, truncated: bool) -> Self {
        let key = NEXT_LOG_KEY.fetch_add(1, Ordering::Relaxed);
        let mut segments = stored.segments;
        if segments.is_empty() {
            let (log, idx) = segment_paths(&env.dir, id, 0);
            segments.push(SegmentView {
                start: 0,
                end: 0,
                records: 0,
                log,
                idx,
            });
        }
        let last_end = segments.last().map_or(0, |s| s.end);
        OutputLog {
            key,
            state: Mutex::new(LogState {
                id: id.to_owned(),
                key,
                env: env.clone(),
                sync_from: segments.len() - 1,
                segments,
                unsynced: false,
                stored: last_end,
                total: stored.total.max(last_end),
                elided: stored.elided,
                truncated: truncated || stored.elided.is_some(),
                last_ts_ms: stored.last_ts_ms,
                last_seq: stored.last_seq,
                accepting: status == Status::Running,
                status,
                finished: status.is_terminal(),
                final_status: None,
                emitter: None,
            }),
            env: env.clone(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, LogState> {
        crate::sync::lock(&self.state)
    }

    /// [`LogState::view`] under the lock.
    pub(crate) fn view(&self) -> OutputView {
        self.lock().view()
    }

    /// Appends `content`. Blocking (page-cache writes under the lock): the
    /// store calls it inline for appends up to `INLINE_APPEND_MAX` and
    /// through `blocking_short` for larger ones. Each piece (at most
    /// [`super::chunk::MAX_CHUNK`], cut where the head ends) is stored with its own SEQ
    /// and the same time, and broadcast as one chunk. If a write fails the
    /// pieces before it stay stored (`output_bytes` says so).
    pub fn append_blocking(
        &self,
        handles: &LogHandles,
        id: &str,
        content: String,
        stream: Option<StreamKind>,
        at: Option<u64>,
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
        if content.is_empty() {
            return Ok(Appended {
                total: st.total,
                newly_truncated: false,
            });
        }
        let ts_ms = appends::ms_of((self.env.clock)()).max(st.last_ts_ms);
        st.last_ts_ms = ts_ms;
        let retain = self.env.retain;
        let mut newly_truncated = false;
        let mut at = 0;
        let mut whole = Some(content);
        let len = whole.as_ref().map_or(0, String::len);
        while at < len {
            let s = whole.as_deref().expect("content is kept until its last piece");
            let start = st.total;
            // The head takes pieces while it has room, up to exactly its
            // cap (cut back to a character); then the tail.
            // Only while nothing follows the head: a head-only log with an
            // elided range (a cap too small for a tail, then a restart with
            // a larger one) continues in a tail (regression, review M2: the
            // head took the piece at its own end, or `room` underflowed).
            let head_open = st.segments.len() == 1 && st.head_end() < retain.head && st.total == st.head_end();
            let mut to_head = false;
            let mut end = piece_end(s, at, usize::MAX);
            if head_open {
                let room = (retain.head - start) as usize;
                let cut = piece_end(s, at, at + room);
                if cut > at {
                    (end, to_head) = (cut, true);
                }
            }
            let bytes = &s.as_bytes()[at..end];
            let stores = to_head || retain.window > 0;
            let seq = if stores {
                st.write(handles, bytes, stream, ts_ms, to_head)?
            } else {
                0
            };
            st.total += bytes.len() as u64;
            if !to_head {
                newly_truncated |= if stores {
                    st.retain()
                } else {
                    let head_end = st.head_end();
                    st.elided = Some((head_end, st.total));
                    !std::mem::replace(&mut st.truncated, true)
                };
            }
            if let Some(tx) = &st.emitter {
                // The common case (one piece) moves the content, no copy.
                let text = if at == 0 && end == len {
                    whole.take().expect("the whole content is one piece")
                } else {
                    s[at..end].to_owned()
                };
                // An error only means nobody is subscribed right now.
                let _ = tx.send(Arc::new(Chunk::new(st.total, text, stream, seq, ts_ms)));
            }
            at = end;
        }
        Ok(Appended {
            total: st.total,
            newly_truncated,
        })
    }

    /// Stops accepting appends; returns `(output_bytes, output_elided)`,
    /// final from now on. First step of moving a process to `to`
    /// (terminal), which refused appends report from now on (regression:
    /// they used to say "queued" in this window).
    pub fn close_for_appends(&self, to: Status) -> (u64, u64) {
        let mut st = self.lock();
        st.accepting = false;
        st.status = to;
        (st.total, st.elided_bytes())
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

    /// fsyncs the log and index of every segment appended to since the
    /// last fsync (blocking), so a finished process's output is durable.
    /// The segment being written is synced through its cached handles,
    /// others (and an evicted pair) by opening them for the fsync alone:
    /// the data of a closed handle is flushed by an fsync through any
    /// descriptor. A segment deleted in between has nothing left to flush.
    pub fn sync(&self, handles: &LogHandles) -> Result<()> {
        // Regression: this used to fsync while holding the state lock, so
        // every `get`/`list` touching this process (and every append and
        // subscribe) stalled for the whole fsync, on the async executor.
        let todo = {
            let mut st = self.lock();
            if !std::mem::take(&mut st.unsynced) {
                return Ok(());
            }
            let todo: Vec<SegmentView> = st.segments[st.sync_from.min(st.segments.len() - 1)..].to_vec();
            st.sync_from = st.segments.len() - 1;
            todo
        };
        let cached = handles.cached(self.key);
        let result = todo.iter().try_for_each(|seg| {
            if let Some(f) = cached.as_ref().filter(|f| f.start == seg.start) {
                f.log.sync_data().map_err(StoreError::io("fsync", &seg.log))?;
                return f.idx.sync_data().map_err(StoreError::io("fsync", &seg.idx));
            }
            for path in [&seg.log, &seg.idx] {
                match File::open(path).and_then(|f| f.sync_data()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io("fsync", path)(e)),
                }
            }
            Ok(())
        });
        if result.is_err() {
            // Still to do: the next sync (or the shutdown's) tries again.
            // Every segment again: rare, and a segment synced twice costs
            // only its fsync.
            let mut st = self.lock();
            st.unsynced = true;
            st.sync_from = 0;
        }
        result
    }

    /// Marks the process finished, closes its segment's cached handles (no
    /// more appends; a deleted log's space is freed once no descriptor is
    /// left) and drops the emitter, which ends every follower's live part:
    /// each then catches up from the log and gets `status`.
    pub fn finish(&self, handles: &LogHandles, status: StatusInfo) {
        let mut st = self.lock();
        st.accepting = false;
        st.status = status.status;
        st.finished = true;
        st.final_status = Some(status);
        handles.forget(self.key);
        if st.emitter.take().is_some() {
            self.env.emitters.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The segments of this log and the largest SEQ they hold, for a
    /// delete (which raises the SEQ floor first, then removes the files).
    pub fn segments_for_removal(&self) -> (Vec<SegmentView>, u64) {
        let st = self.lock();
        (st.segments.clone(), st.last_seq)
    }

    /// A follower's receiver was dropped: remove the emitter if that was the
    /// last one (it is created again by the next subscribe).
    pub fn release_emitter_if_unused(&self) {
        let mut st = self.lock();
        if st.emitter.as_ref().is_some_and(|tx| tx.receiver_count() == 0) {
            st.emitter = None;
            self.env.emitters.fetch_sub(1, Ordering::Relaxed);
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
                self.env.emitters.fetch_add(1, Ordering::Relaxed);
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
        let follow = Follow::new(self.clone(), pos, st.total, rx, final_status);
        drop(st);
        follow
    }
}

/// Cuts a freshly opened log or index back to `stored` bytes: what a
/// failed write (or the files of an earlier process of the same id that
/// could not be removed) left beyond the acknowledged output.
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
