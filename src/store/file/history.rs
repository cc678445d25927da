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
//! Reading forward is [`Pieces`]'s job (the reader follow replays use
//! too): it yields per-record pieces with their time and pipe, and
//! *holes*, the parts of the selected interval that no segment serves (the
//! elided middle, a gap between segments, a segment or index deleted
//! between the snapshot and the read). Bytes of a hole are never guessed:
//! the text gets one marker line `[… N bytes elided …]` there, and the hole
//! is reported for the `Prochub-Elided` header. A hole ends a line, like a
//! newline. The head going away means the process was deleted: the text
//! ends there.
//!
//! # Text
//! Each piece read from a log goes through [`log_text`], the one decoding
//! of stored bytes (follow replays use it too): a start inside a character
//! (an `offset`, or a tail window that begins inside one) moves to the next
//! character and invalid bytes become U+FFFD. Blocks are read with
//! [`read_range`], which ends them on a character boundary, and records
//! end on one, so no character is split between two pieces.

use std::io;

use super::appends::{IndexReader, READ_BATCH, ms_of, ts_from_ms};
use super::error::{Result, StoreError};
#[cfg(doc)]
use super::log::log_text;
use super::log::{REPLAY_BLOCK, read_range};
use super::records::{Item, Pieces, Run, Step, served_runs};
use super::segments::{OutputView, SegmentView};
use crate::model::{OutputQuery, OutputRange, format_ts};

/// A hole in the selection that is waiting for its marker line: it is
/// written just before the next text (or at the end), so holes with
/// nothing served between them (a run left out by `stream=`, or a
/// deleted segment next to the elided range) share one marker.
#[derive(Debug, Clone, Copy)]
struct PendingHole {
    bytes: u64,
}

/// One query's reading, planned on the first block.
pub(crate) struct History {
    view: OutputView,
    query: OutputQuery,
    planned: bool,
    /// The forward reader of the selection (made by the plan).
    pieces: Option<Pieces>,
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
    done: bool,
}

impl History {
    /// A reading of `query` over `view`. No I/O until [`History::next_block`].
    pub(crate) fn new(view: OutputView, query: OutputQuery) -> History {
        History {
            view,
            query,
            planned: false,
            pieces: None,
            end: 0,
            elided: None,
            pending: None,
            at_line_start: true,
            served_any: false,
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
            let pieces = self.pieces.as_mut().expect("planned above");
            let step = pieces.step()?;
            let at_end = pieces.position() >= self.end;
            let mut out = String::new();
            match step {
                Step::End | Step::Gone => {
                    self.done = true;
                    self.flush_hole(&mut out);
                    return Ok((!out.is_empty()).then_some(out));
                }
                Step::Items(items) => {
                    for item in items {
                        match item {
                            Item::Hole { from, to } => self.hole(from, to),
                            Item::Text(p) if self.query.stream.is_none() || p.pipe() == self.query.stream => {
                                self.push_text(&mut out, &p.text, p.ts_ms());
                            }
                            Item::Text(_) => {}
                        }
                    }
                    // Nothing is left to read: the text is complete (lets
                    // a short answer go out with its length).
                    if at_end && self.pending.is_none() {
                        self.done = true;
                    }
                    if !out.is_empty() {
                        return Ok(Some(out));
                    }
                }
            }
        }
        Ok(None)
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

    /// Decides the runs to read: range, then time window, then lines.
    fn plan(&mut self) -> Result<()> {
        let end = self.view.end;
        let (mut from, mut to) = match self.query.range {
            OutputRange::All => (0, end),
            OutputRange::From(n) => (n.min(end), end),
            OutputRange::Tail(n) => (end.saturating_sub(n), end),
        };
        let served = served_runs(&self.view);
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
            self.start_reading(from, from);
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
        self.start_reading(from, to);
        Ok(())
    }

    /// The plan is made: reads `from..to` from now on (the view goes to the
    /// reader, the plan needs it no more). Records are read only when the
    /// text needs their pipe or time.
    fn start_reading(&mut self, from: u64, to: u64) {
        let with_records = self.query.stream.is_some() || self.query.timestamps;
        self.end = to;
        let view = std::mem::take(&mut self.view);
        self.pieces = Some(Pieces::new(view, from, to, with_records));
    }

    /// Offset of the first served byte of the first record stored at or
    /// after `ts_ms`, if any.
    fn first_at_or_after(&self, runs: &[Run], ts_ms: i64) -> Result<Option<u64>> {
        for run in runs {
            let s = &self.view.segments[run.seg];
            let Some(records) = index_of(s)? else { continue };
            let io = StoreError::io("read index", &s.idx);
            let found = (|| -> io::Result<Option<u64>> {
                let k = records
                    .first_at_or_after(ts_ms)?
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
            let Some(records) = index_of(s)? else { continue };
            let io = StoreError::io("read index", &s.idx);
            let found = (|| -> io::Result<Option<u64>> {
                let k = records.first_after(ts_ms)?;
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
        if seg.records == 0 {
            // No records, so none of that pipe.
            return Ok(Walked::Start);
        }
        let Some(records) = index_of(seg)? else {
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
                let (from, to) = (lo - self.seg.start, at - self.seg.start);
                match read_range(&self.seg.log, from, to, REPLAY_BLOCK) {
                    Ok(bytes) if bytes.len() as u64 == to - from => (self.start, self.bytes) = (lo, bytes),
                    // Shorter than the snapshot says, or gone.
                    Ok(_) => return Ok(Walked::Gone),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Walked::Gone),
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

/// The index of `seg` as of the snapshot, or None if it has no records
/// or its files are gone.
fn index_of(seg: &SegmentView) -> Result<Option<IndexReader>> {
    if seg.records == 0 {
        return Ok(None);
    }
    match IndexReader::open_with_count(&seg.idx, seg.records) {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read index", &seg.idx)(e)),
    }
}

/// The line that stands for `n` elided bytes.
pub(crate) fn elided_marker(n: u64) -> String {
    format!("[\u{2026} {n} bytes elided \u{2026}]\n")
}
