//! The blocking half of `GET …/output`: which stored bytes a
//! [`OutputQuery`] selects, and their text, one block at a time.
//! [`super::reader::OutputReader`] runs it on the blocking pool.
//!
//! # How a query becomes bytes
//! Everything is planned against an [`OutputView`] (a snapshot taken
//! under the log lock), in the order SPEC section 10 gives:
//! 1. the byte range (`offset`/`tail`) against the view's end;
//! 2. `since`/`until` become a byte interval by binary search in each
//!    segment's index (times never decrease within a process, so the
//!    records of a time window are one contiguous run): no log is scanned;
//! 3. `stream` filters records by pipe while reading;
//! 4. `lines` moves the start back from the end of what 1-3 select,
//!    walking index batches and log blocks backwards, never more than one
//!    of each in memory.
//!
//! A *hole* is a part of the selected interval that no segment serves:
//! the elided middle (head + tail retention), or a segment that retention
//! deleted between the snapshot and the read (a file not found). Bytes of
//! a hole are never guessed: the text gets one marker line
//! `[… N bytes elided …]` there, and the hole is reported for the
//! `Prochub-Elided` header. A hole ends a line, like a newline.
//!
//! # Text
//! Each piece read from a log goes through [`log_text`], the one decoding
//! of stored bytes (follow replays use it too): a start inside a character
//! (an `offset`, or a tail window that begins inside one) moves to the next
//! character and invalid bytes become U+FFFD. Blocks are read with
//! [`read_range`], which ends them on a character boundary, and records
//! end on one, so no character is split between two pieces.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use super::appends::{Append, IndexReader, READ_BATCH, ms_of, ts_from_ms};
use super::error::{Result, StoreError};
use super::log::{REPLAY_BLOCK, log_text, read_range};
use super::segments::{OutputView, SegmentView};
use crate::model::{OutputQuery, OutputRange, format_ts};

/// Longest record the index can describe (its `len` is a `u32`): a log
/// without index records is read as records of this size.
const MAX_RECORD_LEN: u64 = u32::MAX as u64;

/// A served stretch of one segment, `from..to` (absolute offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    seg: usize,
    from: u64,
    to: u64,
}

/// A hole in the selection that is waiting for its marker line: it is
/// written just before the next text (or at the end), so holes with
/// nothing served between them (a run left out by `stream=`, or a
/// deleted segment next to the elided range) share one marker.
#[derive(Debug, Clone, Copy)]
struct PendingHole {
    bytes: u64,
}

/// The records of one segment as of the snapshot.
enum Records {
    Index(IndexReader),
    /// A segment with bytes but no index records (a log the index has not
    /// covered yet): read as records of at most [`MAX_RECORD_LEN`] bytes,
    /// no pipe, stamped with the log's modification time, the same records
    /// the store writes for such a log at open.
    Whole {
        start: u64,
        end: u64,
        ts_ms: i64,
    },
}

impl Records {
    /// Opens the records of `seg` (NotFound if its files were deleted).
    fn open(seg: &SegmentView) -> io::Result<Records> {
        if seg.records == 0 {
            let ts_ms = if seg.end > seg.start {
                let modified = std::fs::metadata(&seg.log)?.modified()?;
                ms_of(chrono::DateTime::<chrono::Utc>::from(modified))
            } else {
                0
            };
            return Ok(Records::Whole {
                start: seg.start,
                end: seg.end,
                ts_ms,
            });
        }
        IndexReader::open_with_count(&seg.idx, seg.records).map(Records::Index)
    }

    fn count(&self) -> u64 {
        match self {
            Records::Index(r) => r.count(),
            Records::Whole { start, end, .. } => (end - start).div_ceil(MAX_RECORD_LEN),
        }
    }

    fn get(&self, i: u64) -> io::Result<Append> {
        match self {
            Records::Index(r) => r.get(i),
            Records::Whole { start, end, ts_ms } => {
                let from = start + i * MAX_RECORD_LEN;
                Ok(Append {
                    start: from,
                    seq: 0,
                    ts_ms: *ts_ms,
                    len: (end - from).min(MAX_RECORD_LEN) as u32,
                    pipe: None,
                })
            }
        }
    }

    /// Records `i..i + n`, clipped to the count.
    fn read(&self, i: u64, n: u64) -> io::Result<Vec<Append>> {
        match self {
            Records::Index(r) => r.read(i, n),
            Records::Whole { .. } => (i..(i + n).min(self.count())).map(|k| self.get(k)).collect(),
        }
    }

    /// The first record for which `pred` is false (a binary search, one
    /// read per probe); `pred` must hold for a prefix of the records.
    fn partition_point(&self, mut pred: impl FnMut(&Append) -> bool) -> io::Result<u64> {
        let (mut lo, mut hi) = (0, self.count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.get(mid)?) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The first record that ends after `offset`.
    fn first_ending_after(&self, offset: u64) -> io::Result<u64> {
        self.partition_point(|a| a.end() <= offset)
    }
}

/// Records of one segment read forward in batches of [`READ_BATCH`], for
/// the block being read.
#[derive(Default)]
struct Cursor {
    /// Segment the batch belongs to.
    seg: Option<usize>,
    batch: VecDeque<Append>,
    /// Index of the record after the batch.
    next: u64,
    count: u64,
}

/// One query's reading, planned on the first block.
pub(crate) struct History {
    view: OutputView,
    query: OutputQuery,
    planned: bool,
    /// Runs still to read, in offset order (the front is being read).
    runs: VecDeque<Run>,
    /// Next byte to serve.
    pos: u64,
    /// End of the selection.
    end: u64,
    /// Span of every hole the selection crosses (planned, and found while
    /// reading).
    elided: Option<(u64, u64)>,
    pending: Option<PendingHole>,
    /// The text so far ends a line (or is empty).
    at_line_start: bool,
    /// Some text was produced.
    served_any: bool,
    cursor: Cursor,
    done: bool,
}

impl History {
    /// A reading of `query` over `view`. No I/O until [`History::next_block`].
    pub(crate) fn new(view: OutputView, query: OutputQuery) -> History {
        History {
            view,
            query,
            planned: false,
            runs: VecDeque::new(),
            pos: 0,
            end: 0,
            elided: None,
            pending: None,
            at_line_start: true,
            served_any: false,
            cursor: Cursor::default(),
            done: false,
        }
    }

    /// The span of the holes crossed so far (all the planned ones once the
    /// first block was read).
    pub(crate) fn elided(&self) -> Option<(u64, u64)> {
        self.elided
    }

    /// Whether the text is complete.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// The next piece of text (from at most [`REPLAY_BLOCK`] bytes of log,
    /// longer with timestamps, a marker line or U+FFFD), or None at the end.
    pub(crate) fn next_block(&mut self) -> Result<Option<String>> {
        if !self.planned {
            self.plan()?;
            self.planned = true;
        }
        while !self.done {
            let Some(run) = self.runs.front().copied() else {
                let hole_end = self.end;
                self.hole(self.pos, hole_end);
                self.done = true;
                let mut out = String::new();
                self.flush_hole(&mut out);
                return Ok((!out.is_empty()).then_some(out));
            };
            if self.pos < run.from {
                self.hole(self.pos, run.from);
            }
            self.pos = self.pos.max(run.from);
            if self.pos >= run.to {
                self.runs.pop_front();
                continue;
            }
            let mut out = String::new();
            if self.read_block(run, &mut out)? {
                self.note_if_done();
                if !out.is_empty() {
                    return Ok(Some(out));
                }
            }
        }
        Ok(None)
    }

    /// Nothing is left to read: the text is complete (lets a short answer
    /// go out with its length).
    fn note_if_done(&mut self) {
        while self.runs.front().is_some_and(|r| self.pos >= r.to) {
            self.runs.pop_front();
        }
        if self.runs.is_empty() && self.pos >= self.end && self.pending.is_none() {
            self.done = true;
        }
    }

    /// Adds `from..to` (may be empty) to the holes.
    fn hole(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        self.elided = Some(match self.elided {
            Some((a, b)) => (a.min(from), b.max(to)),
            None => (from, to),
        });
        let p = self.pending.get_or_insert(PendingHole { bytes: 0 });
        p.bytes += to - from;
        self.pos = self.pos.max(to);
    }

    /// Writes the marker of the pending hole, on a line of its own.
    fn flush_hole(&mut self, out: &mut String) {
        let Some(p) = self.pending.take() else { return };
        if self.served_any && !self.at_line_start {
            out.push('\n');
        }
        out.push_str(&elided_marker(p.bytes));
        self.at_line_start = true;
        self.served_any = true;
    }

    /// Appends text of a record stored at `ts_ms` (prefixing each line that
    /// starts in it when timestamps are asked for).
    fn push_text(&mut self, out: &mut String, text: &str, ts_ms: i64) {
        if text.is_empty() {
            return;
        }
        self.flush_hole(out);
        if self.query.timestamps {
            let stamp = format_ts(&ts_from_ms(ts_ms));
            for line in text.split_inclusive('\n') {
                if self.at_line_start {
                    out.push_str(&stamp);
                    out.push(' ');
                }
                out.push_str(line);
                self.at_line_start = line.ends_with('\n');
            }
        } else {
            out.push_str(text);
            self.at_line_start = text.ends_with('\n');
        }
        self.served_any = true;
    }

    /// Reads one block of `run` at `pos` into `out`. Returns false when the
    /// segment's files are gone (the rest of the run became a hole; a
    /// missing head means the process was deleted: the text ends).
    fn read_block(&mut self, run: Run, out: &mut String) -> Result<bool> {
        let seg = &self.view.segments[run.seg];
        let (seg_start, log) = (seg.start, seg.log.clone());
        // The whole run as the range: a block that stops short of its end
        // is cut back to a character boundary.
        let read = read_range(&log, self.pos - seg_start, run.to - seg_start, REPLAY_BLOCK);
        let bytes = match read {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => return Ok(self.gone(run)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(self.gone(run)),
            Err(e) => return Err(StoreError::io("read", &log)(e)),
        };
        let block_end = self.pos + bytes.len() as u64;
        if self.query.stream.is_none() && !self.query.timestamps {
            self.push_text(out, &log_text(bytes), 0);
            self.pos = block_end;
            return Ok(true);
        }
        let mut at = self.pos;
        while at < block_end {
            let Some(r) = self.record_at(run.seg, at)? else {
                break;
            };
            if r.start >= block_end {
                break;
            }
            let (from, to) = (r.start.max(at), r.end().min(block_end));
            if self.query.stream.is_none() || r.pipe == self.query.stream {
                let piece = bytes[(from - self.pos) as usize..(to - self.pos) as usize].to_vec();
                self.push_text(out, &log_text(piece), r.ts_ms);
            }
            at = to;
        }
        self.pos = block_end;
        Ok(true)
    }

    /// The segment of `run` vanished (or is shorter than the snapshot
    /// says): its unread bytes are never served.
    fn gone(&mut self, run: Run) -> bool {
        self.runs.pop_front();
        self.cursor = Cursor::default();
        if self.view.segments[run.seg].start == 0 {
            // The head is deleted only with the process: nothing follows.
            self.runs.clear();
            self.end = self.pos;
        } else {
            self.hole(self.pos, run.to);
        }
        false
    }

    /// The record of segment `seg` holding byte `at` (the first ending
    /// after it), read in batches; None if there is none (or the index is
    /// gone, which ends the run's record-based reading).
    fn record_at(&mut self, seg: usize, at: u64) -> Result<Option<Append>> {
        if self.cursor.seg != Some(seg) {
            let s = &self.view.segments[seg];
            let records = match Records::open(s) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StoreError::io("read index", &s.idx)(e)),
            };
            let first = records
                .first_ending_after(at)
                .map_err(StoreError::io("read index", &s.idx))?;
            self.cursor = Cursor {
                seg: Some(seg),
                batch: VecDeque::new(),
                next: first,
                count: records.count(),
            };
        }
        loop {
            while self.cursor.batch.front().is_some_and(|r| r.end() <= at) {
                self.cursor.batch.pop_front();
            }
            if let Some(r) = self.cursor.batch.front() {
                return Ok(Some(*r));
            }
            if self.cursor.next >= self.cursor.count {
                return Ok(None);
            }
            let s = &self.view.segments[seg];
            let more = Records::open(s)
                .and_then(|r| r.read(self.cursor.next, READ_BATCH))
                .map_err(StoreError::io("read index", &s.idx))?;
            if more.is_empty() {
                return Ok(None);
            }
            self.cursor.next += more.len() as u64;
            self.cursor.batch.extend(more);
        }
    }

    /// Decides the runs to read: range, then time window, then lines.
    fn plan(&mut self) -> Result<()> {
        let end = self.view.end;
        let (mut from, mut to) = match self.query.range {
            OutputRange::All => (0, end),
            OutputRange::From(n) => (n.min(end), end),
            OutputRange::Tail(n) => (end.saturating_sub(n), end),
        };
        let served = self.served_runs();
        if let Some(since) = self.query.since {
            match self.first_at_or_after(&served, ms_of(since))? {
                Some(start) => from = from.max(start),
                None => from = to,
            }
        }
        if let Some(until) = self.query.until {
            match self.last_end_at_or_before(&served, ms_of(until))? {
                Some(stop) => to = to.min(stop),
                None => to = from,
            }
        }
        if from >= to {
            self.pos = from;
            self.end = from;
            return Ok(());
        }
        let mut runs = clip(&served, from, to);
        if let Some(n) = self.query.lines {
            from = self.lines_start(&runs, from, to, n)?;
            runs = clip(&runs, from, to);
        }
        // Every hole of the selection, for the header before any text.
        let mut at = from;
        for r in runs.iter().chain(std::iter::once(&Run { seg: 0, from: to, to })) {
            if at < r.from {
                self.elided = Some(match self.elided {
                    Some((a, _)) => (a, r.from),
                    None => (at, r.from),
                });
            }
            at = at.max(r.to);
        }
        self.pos = from;
        self.end = to;
        self.runs = runs.into();
        Ok(())
    }

    /// What each segment serves: all its bytes, less those below the end
    /// of the elided range (a partly expired tail segment).
    fn served_runs(&self) -> Vec<Run> {
        let mut runs = Vec::new();
        for (i, s) in self.view.segments.iter().enumerate() {
            let from = match self.view.elided {
                Some((a, b)) if s.start < b && s.end > a => s.start.max(b),
                _ => s.start,
            };
            if from < s.end {
                runs.push(Run {
                    seg: i,
                    from,
                    to: s.end,
                });
            }
        }
        runs
    }

    /// Offset of the first served byte of the first record stored at or
    /// after `ts_ms`, if any.
    fn first_at_or_after(&self, runs: &[Run], ts_ms: i64) -> Result<Option<u64>> {
        for run in runs {
            let s = &self.view.segments[run.seg];
            let Some(records) = open_or_gone(s)? else { continue };
            let io = StoreError::io("read index", &s.idx);
            let found = (|| -> io::Result<Option<u64>> {
                let k = records
                    .partition_point(|a| a.ts_ms < ts_ms)?
                    .max(records.first_ending_after(run.from)?);
                Ok(if k < records.count() {
                    Some(records.get(k)?.start.max(run.from))
                } else {
                    None
                })
            })()
            .map_err(io)?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Offset just past the last served byte of the last record stored at
    /// or before `ts_ms`, if any.
    fn last_end_at_or_before(&self, runs: &[Run], ts_ms: i64) -> Result<Option<u64>> {
        for run in runs.iter().rev() {
            let s = &self.view.segments[run.seg];
            let Some(records) = open_or_gone(s)? else { continue };
            let io = StoreError::io("read index", &s.idx);
            let found = (|| -> io::Result<Option<u64>> {
                let k = records.partition_point(|a| a.ts_ms <= ts_ms)?;
                if k == 0 {
                    return Ok(None);
                }
                let r = records.get(k - 1)?;
                Ok((r.end() > run.from).then(|| r.end().min(run.to)))
            })()
            .map_err(io)?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Where the last `n` lines of the selection `runs` (within
    /// `from..to`, filtered by pipe) start: walks back from the end, one
    /// index batch and one log block at a time. A line ends at `\n` or at a
    /// hole; a last line without `\n` counts.
    fn lines_start(&self, runs: &[Run], from: u64, to: u64, n: u64) -> Result<u64> {
        if n == 0 {
            return Ok(to);
        }
        let mut walk = LineWalk {
            n,
            count: 0,
            skip_newline: true,
            line_has_bytes: false,
        };
        let mut after = to; // start of what follows the run being walked
        for run in runs.iter().rev() {
            if run.to < after && walk.hole() {
                return Ok(after);
            }
            let s = &self.view.segments[run.seg];
            match self.walk_run(&mut walk, s, *run)? {
                Walked::Found(at) => return Ok(at),
                Walked::Gone => {
                    if walk.hole() {
                        return Ok(after);
                    }
                }
                Walked::Start => {}
            }
            after = run.from;
        }
        if from < after && walk.hole() {
            return Ok(after);
        }
        Ok(from)
    }

    /// Walks `run` backwards (its selected bytes only).
    fn walk_run(&self, walk: &mut LineWalk, seg: &SegmentView, run: Run) -> Result<Walked> {
        let mut block = BackBlock::new(seg, run.from);
        let Some(stream) = self.query.stream else {
            return block.scan(walk, run.from, run.to);
        };
        let Some(records) = open_or_gone(seg)? else {
            return Ok(Walked::Gone);
        };
        let io = || StoreError::io("read index", &seg.idx);
        let first = records.first_ending_after(run.from).map_err(io())?;
        let mut hi = records.partition_point(|a| a.start < run.to).map_err(io())?;
        while hi > first {
            let lo = hi.saturating_sub(READ_BATCH).max(first);
            let batch = records.read(lo, hi - lo).map_err(io())?;
            for r in batch.iter().rev().filter(|r| r.pipe == Some(stream)) {
                let (a, b) = (r.start.max(run.from), r.end().min(run.to));
                match block.scan(walk, a, b)? {
                    Walked::Start => {}
                    other => return Ok(other),
                }
            }
            hi = lo;
        }
        Ok(Walked::Start)
    }
}

/// How a backward walk of a run ended.
enum Walked {
    /// The last `n` lines start here.
    Found(u64),
    /// Reached the run's start.
    Start,
    /// Its files are gone: it is a hole.
    Gone,
}

/// State of the backward line count.
struct LineWalk {
    n: u64,
    count: u64,
    /// The next `\n` met ends the line after it rather than starting one:
    /// true at the end of the selection and after a hole.
    skip_newline: bool,
    /// Bytes were met since the last line boundary.
    line_has_bytes: bool,
}

impl LineWalk {
    /// Meets byte `b`; true when the `n`-th line from the end starts just
    /// after it.
    fn byte(&mut self, b: u8) -> bool {
        let skip = std::mem::take(&mut self.skip_newline);
        let newline = b == b'\n' && !skip;
        if newline {
            self.count += 1;
            if self.count == self.n {
                return true;
            }
        }
        self.line_has_bytes = true;
        false
    }

    /// Meets a hole, which ends the line before it; true when the `n`-th
    /// line from the end starts just after it.
    fn hole(&mut self) -> bool {
        if std::mem::take(&mut self.line_has_bytes) {
            self.count += 1;
            if self.count == self.n {
                return true;
            }
        }
        self.skip_newline = true;
        false
    }
}

/// Log bytes read backwards one [`REPLAY_BLOCK`] at a time.
struct BackBlock<'a> {
    seg: &'a SegmentView,
    /// Lowest offset ever needed (the run's start).
    floor: u64,
    /// Absolute offset of `bytes[0]`.
    start: u64,
    bytes: Vec<u8>,
}

impl<'a> BackBlock<'a> {
    fn new(seg: &'a SegmentView, floor: u64) -> Self {
        BackBlock {
            seg,
            floor,
            start: 0,
            bytes: Vec::new(),
        }
    }

    /// Walks bytes `a..b` backwards.
    fn scan(&mut self, walk: &mut LineWalk, a: u64, b: u64) -> Result<Walked> {
        let mut at = b;
        while at > a {
            if !(self.start < at && at <= self.start + self.bytes.len() as u64) {
                let lo = at.saturating_sub(REPLAY_BLOCK as u64).max(self.floor);
                match read_exact(&self.seg.log, lo - self.seg.start, (at - lo) as usize) {
                    Ok(bytes) => (self.start, self.bytes) = (lo, bytes),
                    Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof) => {
                        return Ok(Walked::Gone);
                    }
                    Err(e) => return Err(StoreError::io("read", &self.seg.log)(e)),
                }
            }
            let lo = a.max(self.start);
            let slice = &self.bytes[(lo - self.start) as usize..(at - self.start) as usize];
            for (k, &byte) in slice.iter().enumerate().rev() {
                if walk.byte(byte) {
                    return Ok(Walked::Found(lo + k as u64 + 1));
                }
            }
            at = lo;
        }
        Ok(Walked::Start)
    }
}

/// `runs` cut to `from..to`, empty ones left out.
fn clip(runs: &[Run], from: u64, to: u64) -> Vec<Run> {
    runs.iter()
        .map(|r| Run {
            seg: r.seg,
            from: r.from.max(from),
            to: r.to.min(to),
        })
        .filter(|r| r.from < r.to)
        .collect()
}

/// The records of `seg`, or None if its files are gone.
fn open_or_gone(seg: &SegmentView) -> Result<Option<Records>> {
    match Records::open(seg) {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read index", &seg.idx)(e)),
    }
}

/// Exactly `len` bytes of the file at `path` from `at`.
fn read_exact(path: &Path, at: u64, len: usize) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, at)?;
    Ok(buf)
}

/// The line that stands for `n` elided bytes.
pub(crate) fn elided_marker(n: u64) -> String {
    format!("[\u{2026} {n} bytes elided \u{2026}]\n")
}
