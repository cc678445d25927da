//! Where one process's stored output lives: the head log and its index
//! (`output/<id>.log`, `output/<id>.idx`) and, once the head is full, tail
//! segments (`output/<id>.<START>.log` / `.idx`, START the absolute offset
//! of the segment's first byte). See README's on-disk section for the
//! retention rule (head + tail) that decides which segments exist.
//!
//! [`OutputView`] is a snapshot of them taken under the log lock: what a
//! reader (`GET …/output`, a follower's replay) may read without holding
//! any lock, since stored bytes and records below the snapshot's ends are
//! never rewritten (a segment can only be deleted whole, and a reader that
//! finds it gone reports the range as elided).

use std::path::{Path, PathBuf};

/// One segment file pair as of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentView {
    /// Absolute offset of the segment's first byte.
    pub start: u64,
    /// Absolute offset just past its last stored byte.
    pub end: u64,
    /// Whole records in its index at the snapshot (later ones are not
    /// read).
    pub records: u64,
    pub log: PathBuf,
    pub idx: PathBuf,
}

/// A process's stored output at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutputView {
    /// The head first, then tail segments in offset order.
    pub segments: Vec<SegmentView>,
    /// Offset just past the last byte appended (stored or elided):
    /// `output_bytes`.
    pub end: u64,
    /// `from..to`: bytes that are no longer stored (between the kept head
    /// and the kept tail). The first segment after it may start before
    /// `to`: its bytes below `to` are not served.
    pub elided: Option<(u64, u64)>,
}

impl OutputView {
    /// Where served output starts at or after `offset`: `offset` itself, or
    /// the end of the elided range when `offset` falls in it.
    pub fn served_from(&self, offset: u64) -> u64 {
        match self.elided {
            Some((from, to)) if offset >= from && offset < to => to,
            _ => offset,
        }
    }

    /// The segment holding byte `offset` (a served byte), if any.
    pub fn segment_at(&self, offset: u64) -> Option<&SegmentView> {
        self.segments.iter().find(|s| s.start <= offset && offset < s.end)
    }
}

/// The log and index of the segment of `id` starting at `start` in the
/// output folder `dir` (start 0 is the head: `<id>.log`, `<id>.idx`).
pub fn segment_paths(dir: &Path, id: &str, start: u64) -> (PathBuf, PathBuf) {
    if start == 0 {
        (dir.join(format!("{id}.log")), dir.join(format!("{id}.idx")))
    } else {
        (
            dir.join(format!("{id}.{start}.log")),
            dir.join(format!("{id}.{start}.idx")),
        )
    }
}

/// What a file name in the output folder is: `(id, segment start, is the
/// index)`, or None for anything else (`SEQ`, temp files).
pub fn parse_segment_name(name: &str) -> Option<(&str, u64, bool)> {
    let (stem, is_index) = match (name.strip_suffix(".log"), name.strip_suffix(".idx")) {
        (Some(s), _) => (s, false),
        (_, Some(s)) => (s, true),
        _ => return None,
    };
    let (id, start) = match stem.split_once('.') {
        None => (stem, 0),
        Some((id, n)) => {
            // Canonical decimal only: `x.007.log` is not a segment of x.
            let start: u64 = n.parse().ok()?;
            if start == 0 || n != start.to_string() {
                return None;
            }
            (id, start)
        }
    };
    crate::model::Id::parse(id).ok()?;
    Some((id, start, is_index))
}

/// Test fixture: writes a segment of process `p` starting at `start` in
/// `dir`, its log the appends' texts and its index one record per append
/// `(text, ts_ms, pipe)` with SEQ `start + i + 1`; returns its view.
#[cfg(test)]
pub(crate) fn write_test_segment(
    dir: &Path,
    start: u64,
    appends: &[(&str, i64, Option<crate::model::StreamKind>)],
) -> SegmentView {
    use super::appends::{self as index, Append};
    std::fs::create_dir_all(dir).expect("segment folder");
    let (log, idx) = segment_paths(dir, "p", start);
    let mut bytes = Vec::new();
    let mut records = Vec::new();
    for (i, (text, ts_ms, pipe)) in appends.iter().enumerate() {
        records.push(Append {
            start: start + bytes.len() as u64,
            seq: start + i as u64 + 1,
            ts_ms: *ts_ms,
            len: text.len() as u32,
            pipe: *pipe,
        });
        bytes.extend_from_slice(text.as_bytes());
    }
    std::fs::write(&log, &bytes).expect("write log");
    let f = index::create(&idx).expect("create index");
    index::write_records(&f, 0, &records).expect("write records");
    SegmentView {
        start,
        end: start + bytes.len() as u64,
        records: records.len() as u64,
        log,
        idx,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let dir = Path::new("/d");
        let (log, idx) = segment_paths(dir, "abc", 0);
        assert_eq!((log.to_str(), idx.to_str()), (Some("/d/abc.log"), Some("/d/abc.idx")));
        let (log, _) = segment_paths(dir, "abc", 4096);
        assert_eq!(log.to_str(), Some("/d/abc.4096.log"));
        assert_eq!(parse_segment_name("abc.log"), Some(("abc", 0, false)));
        assert_eq!(parse_segment_name("abc.idx"), Some(("abc", 0, true)));
        assert_eq!(parse_segment_name("abc.4096.log"), Some(("abc", 4096, false)));
        for bad in ["abc.0.log", "abc.007.log", "abc.x.log", "SEQ", "a b.log", "abc.log.tmp"] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_elided_range_is_skipped() {
        let v = OutputView {
            segments: vec![],
            end: 100,
            elided: Some((10, 40)),
        };
        assert_eq!(
            (
                v.served_from(5),
                v.served_from(10),
                v.served_from(39),
                v.served_from(40)
            ),
            (5, 40, 40, 40)
        );
    }
}
