//! [`Pieces`]: the one forward reader of stored output, used by a
//! follower's replay ([`super::follow`]) and by `GET …/output`
//! ([`super::history`]), so both agree on what is stored and what is not.
//!
//! It reads `[pos, end)` of an [`OutputView`] one step at a time: one log
//! block of at most [`REPLAY_BLOCK`] bytes (read with [`read_range`], so it
//! ends on a character boundary), cut into one [`Piece`] per index record
//! in it (or the part of one), each carrying that record's SEQ, time and
//! pipe. Index records are read in batches that grow from [`FIRST_BATCH`]
//! to [`READ_BATCH`], and the batch is kept between steps so consecutive
//! blocks need no binary search.
//!
//! # Holes
//! A *hole* is output in the range that no segment serves. Every such byte
//! is reported as a [`Item::Hole`], never skipped silently and never
//! guessed, whatever the cause:
//! - the elided range between head and tail (retention);
//! - a gap between two segments (open repairs each segment alone, so a
//!   torn segment that is not the last ends before the next one starts);
//! - a segment deleted after the snapshot (it left the retention window),
//!   or shorter than the snapshot says;
//! - an index deleted between its log block and its records: the rest of
//!   the segment from the first byte not served.
//!
//! Only the head going away is different: the head is deleted only with
//! its process, so that is [`Step::Gone`], the end of the output.

use std::collections::VecDeque;
use std::io;

use super::appends::{Append, IndexReader, READ_BATCH};
use super::error::{Result, StoreError};
use super::log::{REPLAY_BLOCK, log_text, read_range};
use super::segments::OutputView;
use crate::model::StreamKind;

/// Index records read by the first read of a segment; doubled on each read
/// after it (a block of 4 KiB appends needs 16 records, one of 10-byte
/// lines thousands), up to [`READ_BATCH`].
pub(super) const FIRST_BATCH: u64 = 64;

/// A served stretch of one segment, `from..to` (absolute offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    /// Position of the segment in the view's `segments`.
    pub seg: usize,
    pub from: u64,
    pub to: u64,
}

/// What each segment of `view` serves, in offset order: all its bytes,
/// less those below the end of the elided range (a partly expired tail
/// segment). Whatever lies between two runs is a hole.
pub(super) fn served_runs(view: &OutputView) -> Vec<Run> {
    let mut runs = Vec::new();
    for (i, s) in view.segments.iter().enumerate() {
        let from = match view.elided {
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

/// Stored bytes `start..end` of one record (or the part of it in a block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Piece {
    pub start: u64,
    pub end: u64,
    /// Through [`log_text`]: a start inside a character moves to the next
    /// one, invalid bytes are U+FFFD.
    pub text: String,
    /// The record the bytes are in; None when records were not asked for,
    /// or for bytes no record covers (a segment without index records).
    pub record: Option<Append>,
}

impl Piece {
    pub fn pipe(&self) -> Option<StreamKind> {
        self.record.and_then(|r| r.pipe)
    }

    pub fn seq(&self) -> u64 {
        self.record.map_or(0, |r| r.seq)
    }

    /// Its record's time (0, the epoch, without one).
    pub fn ts_ms(&self) -> i64 {
        self.record.map_or(0, |r| r.ts_ms)
    }
}

/// One thing met while reading forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    Text(Piece),
    /// Output `from..to` is not stored: no segment serves it.
    Hole {
        from: u64,
        to: u64,
    },
}

/// What one [`Pieces::step`] read.
#[derive(Debug)]
pub(super) enum Step {
    /// In offset order, contiguous from the position before the step; at
    /// most one log block of text, holes merged when adjacent.
    Items(Vec<Item>),
    /// The head is gone: the process was deleted; nothing more is stored.
    Gone,
    /// The position reached the end of the range.
    End,
}

/// Where a segment's index is being read.
#[derive(Debug)]
struct IndexCursor {
    /// Start of the segment it belongs to.
    seg_start: u64,
    /// That segment's index, kept open from block to block (opening it per
    /// 64 KiB block was five syscalls per block of a catch-up).
    reader: IndexReader,
    /// Records read and not yet passed (the front holds or follows `pos`).
    batch: VecDeque<Append>,
    /// Index of the record after the batch.
    next: u64,
    /// Records the next read asks for.
    batch_len: u64,
}

/// A forward reader of `[pos, end)` of a view. Blocking (file reads): run
/// it on the blocking pool.
#[derive(Debug)]
pub(super) struct Pieces {
    view: OutputView,
    runs: Vec<Run>,
    pos: u64,
    end: u64,
    /// Cut blocks into per-record pieces (false: one untagged piece per
    /// block, and no index is read).
    with_records: bool,
    index: Option<IndexCursor>,
}

impl Pieces {
    pub fn new(view: OutputView, pos: u64, end: u64, with_records: bool) -> Pieces {
        Pieces {
            runs: served_runs(&view),
            view,
            pos,
            end,
            with_records,
            index: None,
        }
    }

    /// The next byte to read.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Moves to `pos`. Anywhere but where the reader already is, the index
    /// cursor is dropped (found again by binary search), so it never
    /// describes another position than the one read.
    pub fn seek(&mut self, pos: u64) {
        if pos != self.pos {
            self.pos = pos;
            self.index = None;
        }
    }

    /// Reads up to `end` from now on.
    pub fn set_end(&mut self, end: u64) {
        self.end = end;
    }

    /// Reads a newer snapshot of the same output from now on (a follower
    /// takes one per step: segments grow and come and go). The index cursor
    /// stays if its segment is still there: its records below the old
    /// count are unchanged.
    pub fn set_view(&mut self, view: OutputView) {
        if let Some(c) = &self.index
            && !view.segments.iter().any(|s| s.start == c.seg_start)
        {
            self.index = None;
        }
        self.runs = served_runs(&view);
        self.view = view;
    }

    /// Reads on: holes up to the next served byte, then one log block's
    /// pieces (and the hole after them, if the block's index vanished).
    /// Always moves the position on unless it returns End or Gone.
    pub fn step(&mut self) -> Result<Step> {
        let mut items = Vec::new();
        loop {
            let has_text = items.iter().any(|i| matches!(i, Item::Text(_)));
            if self.pos >= self.end || has_text {
                return Ok(if items.is_empty() {
                    Step::End
                } else {
                    Step::Items(items)
                });
            }
            let run = self.runs.iter().copied().find(|r| r.to > self.pos);
            match run {
                Some(r) if r.from <= self.pos => {
                    if !self.read_block(r, &mut items)? {
                        return Ok(Step::Gone);
                    }
                }
                // Not served up to the next run (or the end).
                other => {
                    let to = other.map_or(self.end, |r| r.from).min(self.end);
                    self.hole(&mut items, to);
                }
            }
        }
    }

    /// Makes `pos..to` a hole and moves there.
    fn hole(&mut self, items: &mut Vec<Item>, to: u64) {
        let from = self.pos;
        if to <= from {
            return;
        }
        match items.last_mut() {
            Some(Item::Hole { to: end, .. }) if *end == from => *end = to,
            _ => items.push(Item::Hole { from, to }),
        }
        self.pos = to;
        self.index = None;
    }

    /// Reads one block of `run` at `pos` into `items`. False when the head
    /// is gone (the process was deleted).
    fn read_block(&mut self, run: Run, items: &mut Vec<Item>) -> Result<bool> {
        let seg = &self.view.segments[run.seg];
        let (seg_start, records) = (seg.start, seg.records);
        let (log, idx_path) = (seg.log.clone(), seg.idx.clone());
        let stop = run.to.min(self.end);
        let bytes = match read_range(&log, self.pos - seg_start, stop - seg_start, REPLAY_BLOCK) {
            Ok(b) if !b.is_empty() => b,
            // Gone, or shorter than the snapshot says (cannot happen after
            // open's repair): not stored.
            Ok(_) => return Ok(self.vanished(items, stop)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(self.vanished(items, stop)),
            Err(e) => return Err(StoreError::io("read", &log)(e)),
        };
        let block_end = self.pos + bytes.len() as u64;
        if !self.with_records || records == 0 {
            self.push(items, &bytes, block_end, None);
            return Ok(true);
        }
        let io = || StoreError::io("read index", &idx_path);
        let block_start = self.pos;
        let mut cursor = match self.index.take() {
            // Still right for pos: its front (if any) does not start after it.
            Some(mut c) if c.seg_start == seg_start && c.batch.front().is_none_or(|r| r.start <= self.pos) => {
                c.reader.set_count(records);
                c
            }
            _ => {
                let reader = match IndexReader::open_with_count(&idx_path, records) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.hole(items, stop);
                        return Ok(true);
                    }
                    Err(e) => return Err(StoreError::io("read index", &idx_path)(e)),
                };
                IndexCursor {
                    seg_start,
                    next: reader.first_ending_after(self.pos).map_err(io())?,
                    reader,
                    batch: VecDeque::new(),
                    batch_len: FIRST_BATCH,
                }
            }
        };
        let slice = |from: u64, to: u64| &bytes[(from - block_start) as usize..(to - block_start) as usize];
        while self.pos < block_end {
            let at = self.pos;
            while cursor.batch.front().is_some_and(|r| r.end() <= at) {
                cursor.batch.pop_front();
            }
            let Some(r) = cursor.batch.front().copied() else {
                if cursor.next >= cursor.reader.count() {
                    break;
                }
                let more = cursor.reader.read(cursor.next, cursor.batch_len).map_err(io())?;
                if more.is_empty() {
                    break;
                }
                cursor.next += more.len() as u64;
                cursor.batch_len = (cursor.batch_len * 2).min(READ_BATCH);
                cursor.batch.extend(more);
                continue;
            };
            // Bytes before the record no record covers: untagged.
            let (to, record) = if r.start > at {
                (r.start.min(block_end), None)
            } else {
                (r.end().min(block_end), Some(r))
            };
            self.push(items, slice(at, to), to, record);
        }
        if self.pos < block_end {
            // Past the last record (cannot happen after open's repair): one
            // untagged piece rather than a stall.
            let rest = slice(self.pos, block_end);
            self.push(items, rest, block_end, None);
        }
        self.index = Some(cursor);
        Ok(true)
    }

    /// Adds the piece `pos..end` and moves there.
    fn push(&mut self, items: &mut Vec<Item>, bytes: &[u8], end: u64, record: Option<Append>) {
        items.push(Item::Text(Piece {
            start: self.pos,
            end,
            text: log_text(bytes.to_vec()),
            record,
        }));
        self.pos = end;
    }

    /// The segment being read has no file (or fewer bytes than the
    /// snapshot says): up to `stop` is a hole, unless the head is gone too
    /// (false: the output ends).
    fn vanished(&mut self, items: &mut Vec<Item>, stop: u64) -> bool {
        let head = &self.view.segments[0];
        let head_gone = head.end > head.start
            && matches!(std::fs::metadata(&head.log), Err(e) if e.kind() == io::ErrorKind::NotFound);
        if head_gone {
            return false;
        }
        self.hole(items, stop);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::store::file::segments::SegmentView;

    /// A segment at `start` of `texts`, one record each (SEQ = start + i + 1).
    fn segment(dir: &Path, start: u64, texts: &[&str]) -> SegmentView {
        let appends: Vec<_> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (*t, i as i64, Some(StreamKind::Stdout)))
            .collect();
        crate::store::file::segments::write_test_segment(dir, start, &appends)
    }

    /// Every item up to the end (and whether it ended as Gone).
    fn all(p: &mut Pieces) -> (Vec<Item>, bool) {
        let mut items = Vec::new();
        loop {
            match p.step().expect("readable") {
                Step::Items(i) => items.extend(i),
                Step::End => return (items, false),
                Step::Gone => return (items, true),
            }
        }
    }

    fn text(at: u64, s: &str, seq: u64) -> (u64, String, u64) {
        (at, s.to_owned(), seq)
    }

    fn summary(items: &[Item]) -> Vec<(u64, String, u64)> {
        items
            .iter()
            .map(|i| match i {
                Item::Text(p) => (p.start, p.text.clone(), p.seq()),
                Item::Hole { from, to } => (*from, format!("hole to {to}"), 0),
            })
            .collect()
    }

    #[test]
    fn pieces_per_record_and_a_hole_for_every_unserved_byte() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Head 0..6, elided 6..20, a tail from 16 (16..20 not served) to 24,
        // a gap 24..30 (a torn segment), a last segment 30..33, then
        // nothing stored up to 40 (elided past the end of the segments).
        let view = OutputView {
            segments: vec![
                segment(dir.path(), 0, &["ab", "cdef"]),
                segment(dir.path(), 16, &["xxxxyy", "zz"]),
                segment(dir.path(), 30, &["end"]),
            ],
            end: 40,
            elided: Some((6, 20)),
        };
        let (items, gone) = all(&mut Pieces::new(view.clone(), 0, 40, true));
        assert!(!gone);
        assert_eq!(
            summary(&items),
            vec![
                text(0, "ab", 1),
                text(2, "cdef", 2),
                (6, "hole to 20".into(), 0),
                text(20, "yy", 17),
                text(22, "zz", 18),
                (24, "hole to 30".into(), 0),
                text(30, "end", 31),
                (33, "hole to 40".into(), 0),
            ]
        );
        // Without records: one untagged piece per block.
        let (items, _) = all(&mut Pieces::new(view.clone(), 1, 24, false));
        assert_eq!(
            summary(&items),
            vec![text(1, "bcdef", 0), (6, "hole to 20".into(), 0), text(20, "yyzz", 0)]
        );
        // A deleted tail segment is a hole (merged with the gap after it);
        // a deleted head is the end.
        std::fs::remove_file(&view.segments[1].log).expect("delete tail");
        let (items, _) = all(&mut Pieces::new(view.clone(), 3, 33, true));
        assert_eq!(
            summary(&items),
            vec![text(3, "def", 2), (6, "hole to 30".into(), 0), text(30, "end", 31)]
        );
        std::fs::remove_file(&view.segments[0].log).expect("delete head");
        let (items, gone) = all(&mut Pieces::new(view, 20, 33, true));
        assert_eq!((items, gone), (vec![], true));
    }

    /// Review M3: the index cursor is kept from block to block, and dropped
    /// when the reader is moved elsewhere (a follower's live delivery), so
    /// it never describes another position than the one read.
    #[test]
    fn a_seek_elsewhere_drops_the_index_cursor() {
        let dir = tempfile::tempdir().expect("temp dir");
        let line = "0123456789abcde\n"; // 16 bytes: 4096 records per block
        let texts = vec![line; 3 * REPLAY_BLOCK / line.len()];
        let seg = segment(dir.path(), 0, &texts);
        let end = seg.end;
        let view = OutputView {
            segments: vec![seg],
            end,
            elided: None,
        };
        let mut p = Pieces::new(view.clone(), 0, end, true);
        let Step::Items(first) = p.step().expect("readable") else {
            panic!("a block")
        };
        assert_eq!(first.len(), REPLAY_BLOCK / line.len());
        assert!(p.index.is_some(), "kept for the next block");
        p.seek(p.position());
        assert!(p.index.is_some(), "a seek to where it is keeps it");
        p.set_view(view);
        assert!(p.index.is_some(), "a newer view of the same segment keeps it");
        let far = 2 * REPLAY_BLOCK as u64 + 8;
        p.seek(far);
        assert!(p.index.is_none(), "a seek elsewhere drops it");
        let Step::Items(items) = p.step().expect("readable") else {
            panic!("a block")
        };
        let Item::Text(piece) = &items[0] else { panic!("text") };
        assert_eq!((piece.start, piece.text.as_str()), (far, "89abcde\n"));
        assert_eq!(piece.seq(), far / 16 + 1, "the record holding the position");
    }
}
