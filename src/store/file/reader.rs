//! [`OutputReader`]: the stored output of a process read block by block,
//! for `GET /api/processes/:id/output` (SPEC sections 1 and 10).
//!
//! # Why a reader, not a buffer
//! The endpoint used to read the whole range into memory before answering:
//! 100 clients asking for a 16 MiB log and never reading held 1.66 GB. A
//! reader holds a position and reads one [`REPLAY_BLOCK`] when the HTTP
//! body is polled, which hyper does only when the socket takes more, so a
//! client that stops reading costs its socket buffers plus one block.
//!
//! # What it reads
//! The output as it is when the reader is made: an `OutputView` snapshot
//! of the head and tail segments taken under the log lock (bytes appended
//! later are not included, and nothing is read under the lock). Which
//! bytes a query selects and how they become text is
//! [`super::history`]'s job; this is its async face: each block runs on
//! the blocking pool and opens, reads and closes its files, so a stalled
//! client holds no file descriptor.

use super::FileProcessStore;
use super::error::{Result, StoreError};
use super::history::History;
#[cfg(doc)]
use super::log::REPLAY_BLOCK;
use super::segments::OutputView;
use crate::model::{Id, OutputQuery};

impl FileProcessStore {
    /// A reader of what `query` selects of `id`'s stored output as it is
    /// now. Nothing is read until [`OutputReader::next_block`].
    pub fn output_reader(&self, id: &Id, query: &OutputQuery) -> Result<OutputReader> {
        let entry = self.read_index().by_id.get(id).cloned();
        let entry = entry.ok_or_else(|| StoreError::NotFound {
            kind: "process",
            id: id.to_string(),
        })?;
        Ok(OutputReader::of_view(entry.log.view(), query.clone()))
    }
}

/// One query's text, read in blocks.
pub struct OutputReader {
    /// None while a block is being read on the blocking pool (or after a
    /// read was cancelled half-way).
    history: Option<History>,
    output_end: u64,
    elided: Option<(u64, u64)>,
    done: bool,
}

impl OutputReader {
    /// A reader of `query` over the snapshot `view`.
    pub(crate) fn of_view(view: OutputView, query: OutputQuery) -> OutputReader {
        OutputReader {
            output_end: view.end,
            history: Some(History::new(view, query)),
            elided: None,
            done: false,
        }
    }

    /// The next block of text (from at most [`REPLAY_BLOCK`] bytes of log;
    /// longer with timestamps, U+FFFD or an elided marker), or None at the
    /// end. The first call also plans the read (index lookups), so
    /// [`OutputReader::elided`] is known after it.
    pub async fn next_block(&mut self) -> Result<Option<String>> {
        if self.done {
            return Ok(None);
        }
        let mut history = self
            .history
            .take()
            .ok_or_else(|| StoreError::Task("output reader used after a cancelled read".into()))?;
        let (history, block) = tokio::task::spawn_blocking(move || {
            let block = history.next_block();
            (history, block)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?;
        self.elided = history.elided();
        self.done = history.is_done();
        self.history = Some(history);
        block
    }

    /// Whether every block was returned (after the first call: the whole
    /// text fit in one block, so its length is known).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Where the stored output ended when the reader was made: where a
    /// follower continues (`Prochub-Output-End`, `?from=N`).
    pub fn output_end(&self) -> u64 {
        self.output_end
    }

    /// `from..to`: the bytes of the selection that are not stored (the
    /// elided middle, or a tail segment deleted since the snapshot), as far
    /// as read (`Prochub-Elided`). After the first block it includes every
    /// elided range the snapshot showed.
    pub fn elided(&self) -> Option<(u64, u64)> {
        self.elided
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::{OutputRange, StreamKind, Timestamp};
    use crate::store::file::appends::ts_from_ms;
    use crate::store::file::history;
    use crate::store::file::log::REPLAY_BLOCK;
    use crate::store::file::segments::{SegmentView, segment_paths};

    const OUT: Option<StreamKind> = Some(StreamKind::Stdout);
    const ERR: Option<StreamKind> = Some(StreamKind::Stderr);
    /// 2026-12-01T10:00:00Z in ms: record times below are offsets from it.
    const T0: i64 = 1_796_119_200_000;

    /// Writes a segment starting at `start`: its log is the appends'
    /// texts, its index one record per append `(text, ms after T0, pipe)`.
    fn segment(dir: &Path, start: u64, appends: &[(&str, i64, Option<StreamKind>)]) -> SegmentView {
        let at_t0: Vec<_> = appends.iter().map(|&(t, ms, pipe)| (t, T0 + ms, pipe)).collect();
        crate::store::file::segments::write_test_segment(dir, start, &at_t0)
    }

    fn view(segments: Vec<SegmentView>, elided: Option<(u64, u64)>) -> OutputView {
        let end = segments.last().map_or(0, |s| s.end);
        OutputView { segments, end, elided }
    }

    fn at(ms: i64) -> Timestamp {
        ts_from_ms(T0 + ms)
    }

    fn stamp(ms: i64) -> String {
        crate::model::format_ts(&at(ms))
    }

    /// The blocks of a read, and the reader after it.
    async fn blocks(v: &OutputView, q: OutputQuery) -> (Vec<String>, OutputReader) {
        let mut r = OutputReader::of_view(v.clone(), q);
        let mut out = Vec::new();
        while let Some(b) = r.next_block().await.expect("readable") {
            out.push(b);
        }
        (out, r)
    }

    async fn text(v: &OutputView, q: OutputQuery) -> String {
        blocks(v, q).await.0.concat()
    }

    fn q() -> OutputQuery {
        OutputQuery::default()
    }

    /// A head, an elided middle 20..50 and a tail segment that starts at
    /// 40 (its first 10 bytes are below the kept window).
    fn elided_fixture(dir: &Path) -> OutputView {
        let head = segment(
            dir,
            0,
            &[
                ("one\n", 0, OUT),
                ("two\nthr", 10, OUT),
                ("ee\n", 20, ERR),
                ("xxxxxx", 30, OUT),
            ],
        );
        assert_eq!(head.end, 20);
        let tail = segment(
            dir,
            40,
            &[("dropped...", 40, OUT), ("aa\nbb\n", 50, OUT), ("cc\n", 60, ERR)],
        );
        view(vec![head, tail], Some((20, 50)))
    }

    #[tokio::test]
    async fn byte_ranges_and_a_start_inside_a_character() {
        let dir = tempfile::tempdir().expect("temp dir");
        let v = view(
            vec![segment(
                dir.path(),
                0,
                &[("h\u{e9}llo\n", 0, None), ("world\n", 1, None)],
            )],
            None,
        );
        assert_eq!(text(&v, q()).await, "h\u{e9}llo\nworld\n");
        assert_eq!(text(&v, OutputQuery::range(OutputRange::Tail(6))).await, "world\n");
        // Byte 2 is inside "é": the text starts at the next character.
        assert_eq!(text(&v, OutputQuery::range(OutputRange::From(2))).await, "llo\nworld\n");
        assert_eq!(text(&v, OutputQuery::range(OutputRange::From(99))).await, "");
        let (_, r) = blocks(&v, q()).await;
        assert_eq!((r.output_end(), r.elided()), (13, None));
    }

    #[tokio::test]
    async fn blocks_never_split_a_character() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Regression: a block was read to exactly REPLAY_BLOCK bytes, so a
        // character across the boundary became U+FFFD + a skipped byte.
        let mut long = "a".repeat(REPLAY_BLOCK - 1);
        long.push('\u{20ac}');
        long.push_str(&"\u{e9}".repeat(REPLAY_BLOCK));
        let v = view(vec![segment(dir.path(), 0, &[(&long, 0, OUT)])], None);
        for query in [
            q(),
            OutputQuery { stream: OUT, ..q() },
            OutputQuery {
                timestamps: true,
                ..q()
            },
        ] {
            let (bs, _) = blocks(&v, query.clone()).await;
            assert!(bs.len() >= 3, "{query:?}");
            let got = bs.concat();
            assert!(!got.contains('\u{fffd}'), "{query:?}");
            assert!(got.ends_with(&long), "{query:?}");
        }
        let inside = OutputQuery::range(OutputRange::From(REPLAY_BLOCK as u64));
        assert_eq!(text(&v, inside).await, long[REPLAY_BLOCK + 2..]);
    }

    #[tokio::test]
    async fn since_and_until_select_records_by_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let v = view(
            vec![segment(
                dir.path(),
                0,
                &[
                    ("a\n", 0, None),
                    ("b\n", 1000, None),
                    ("c\n", 1000, None),
                    ("d\n", 3000, None),
                ],
            )],
            None,
        );
        let since = |ms| OutputQuery {
            since: Some(at(ms)),
            ..q()
        };
        assert_eq!(text(&v, since(1000)).await, "b\nc\nd\n");
        assert_eq!(text(&v, since(1001)).await, "d\n");
        assert_eq!(text(&v, since(-5)).await, "a\nb\nc\nd\n");
        assert_eq!(text(&v, since(3001)).await, "", "nothing stored since");
        let until = |ms| OutputQuery {
            until: Some(at(ms)),
            ..q()
        };
        assert_eq!(text(&v, until(1000)).await, "a\nb\nc\n");
        assert_eq!(text(&v, until(-1)).await, "");
        let both = OutputQuery {
            since: Some(at(500)),
            until: Some(at(2000)),
            ..q()
        };
        assert_eq!(text(&v, both).await, "b\nc\n");
        let backwards = OutputQuery {
            since: Some(at(2000)),
            until: Some(at(500)),
            ..q()
        };
        assert_eq!(text(&v, backwards).await, "");
        // With a byte range: the intersection.
        let ranged = OutputQuery {
            since: Some(at(1000)),
            ..OutputQuery::range(OutputRange::From(5))
        };
        assert_eq!(text(&v, ranged).await, "\nd\n");
    }

    #[tokio::test]
    async fn stream_keeps_one_pipe_and_leaves_out_untagged_records() {
        let dir = tempfile::tempdir().expect("temp dir");
        let v = view(
            vec![segment(
                dir.path(),
                0,
                &[
                    ("o1 ", 0, OUT),
                    ("E1\n", 1, ERR),
                    ("o2\n", 2, OUT),
                    ("pushed\n", 3, None),
                ],
            )],
            None,
        );
        let pipe = |s| OutputQuery { stream: s, ..q() };
        assert_eq!(text(&v, pipe(OUT)).await, "o1 o2\n");
        assert_eq!(text(&v, pipe(ERR)).await, "E1\n");
        assert_eq!(text(&v, q()).await, "o1 E1\no2\npushed\n");
    }

    #[tokio::test]
    async fn timestamps_prefix_each_line_with_the_time_of_its_first_byte() {
        let dir = tempfile::tempdir().expect("temp dir");
        let v = view(
            vec![segment(
                dir.path(),
                0,
                &[("a\nb", 0, OUT), ("c\nd\n", 1500, ERR), ("e", 2000, OUT)],
            )],
            None,
        );
        let got = text(
            &v,
            OutputQuery {
                timestamps: true,
                ..q()
            },
        )
        .await;
        let want = format!("{} a\n{} bc\n{} d\n{} e", stamp(0), stamp(0), stamp(1500), stamp(2000));
        assert_eq!(got, want);
        assert_eq!(stamp(1500), "2026-12-01T10:00:01.500Z");
        // The line joined across a filtered-out record keeps its first time.
        let got = text(
            &v,
            OutputQuery {
                timestamps: true,
                stream: OUT,
                ..q()
            },
        )
        .await;
        assert_eq!(got, format!("{} a\n{} be", stamp(0), stamp(0)));
    }

    #[tokio::test]
    async fn lines_counts_back_from_the_end_of_the_selection() {
        let dir = tempfile::tempdir().expect("temp dir");
        let v = view(
            vec![segment(
                dir.path(),
                0,
                &[("l1\nl2\n", 0, OUT), ("l3\n", 1, ERR), ("l4\nl5", 2, OUT)],
            )],
            None,
        );
        let lines = |n| OutputQuery { lines: Some(n), ..q() };
        assert_eq!(text(&v, lines(1)).await, "l5", "a last line without a newline counts");
        assert_eq!(text(&v, lines(2)).await, "l4\nl5");
        assert_eq!(text(&v, lines(4)).await, "l2\nl3\nl4\nl5");
        assert_eq!(text(&v, lines(99)).await, "l1\nl2\nl3\nl4\nl5");
        assert_eq!(text(&v, lines(0)).await, "");
        // Lines of one pipe: counted in the filtered text.
        let out2 = OutputQuery {
            lines: Some(2),
            stream: OUT,
            ..q()
        };
        assert_eq!(text(&v, out2).await, "l4\nl5");
        let out3 = OutputQuery {
            lines: Some(3),
            stream: OUT,
            ..q()
        };
        assert_eq!(text(&v, out3).await, "l2\nl4\nl5");
        // A trailing newline ends the last line; empty lines count.
        let v2 = view(
            vec![segment(&dir.path().join("x"), 0, &[("a\n\nb\n\n", 0, None)])],
            None,
        );
        assert_eq!(text(&v2, lines(2)).await, "b\n\n");
        assert_eq!(text(&v2, lines(3)).await, "\nb\n\n");
    }

    #[tokio::test]
    async fn every_filter_together() {
        let dir = tempfile::tempdir().expect("temp dir");
        let v = view(
            vec![segment(
                dir.path(),
                0,
                &[
                    ("old\n", 0, OUT),
                    ("e0\n", 1000, ERR),
                    ("s1\ns2\n", 2000, OUT),
                    ("e1\n", 2500, ERR),
                    ("s3\n", 3000, OUT),
                    ("s4\n", 4000, OUT),
                    ("late\n", 9000, OUT),
                ],
            )],
            None,
        );
        let query = OutputQuery {
            range: OutputRange::From(4),
            since: Some(at(1000)),
            until: Some(at(4000)),
            lines: Some(3),
            timestamps: true,
            stream: OUT,
        };
        let want = format!("{} s2\n{} s3\n{} s4\n", stamp(2000), stamp(3000), stamp(4000));
        assert_eq!(text(&v, query).await, want);
    }

    #[tokio::test]
    async fn lines_and_timestamps_across_blocks_of_one_long_legacy_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        // One record of ~3.5 blocks, like a log from before the index.
        let line = format!("{}\n", "x".repeat(99));
        let long = line.repeat(REPLAY_BLOCK * 7 / 2 / line.len()) + "end";
        let v = view(vec![segment(dir.path(), 0, &[(&long, 7, None)])], None);
        let (bs, r) = blocks(&v, q()).await;
        assert!(bs.len() >= 4, "read in blocks, got {}", bs.len());
        assert!(bs.iter().all(|b| b.len() <= REPLAY_BLOCK));
        assert!(r.is_done());
        assert_eq!(bs.concat(), long);
        let last3 = OutputQuery { lines: Some(3), ..q() };
        assert_eq!(text(&v, last3).await, format!("{line}{line}end"));
        let many = long.lines().count() as u64 - 1;
        let got = text(
            &v,
            OutputQuery {
                lines: Some(many),
                timestamps: true,
                ..q()
            },
        )
        .await;
        assert_eq!(got.lines().count() as u64, many);
        assert!(got.lines().all(|l| l.starts_with(&format!("{} ", stamp(7)))));
        assert!(got.ends_with(" end"));
    }

    #[tokio::test]
    async fn a_log_without_index_records_reads_as_one_untagged_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, idx) = segment_paths(dir.path(), "p", 0);
        std::fs::write(&log, "legacy\nlog\n").expect("write log");
        let seg = SegmentView {
            start: 0,
            end: 11,
            records: 0,
            log,
            idx,
        };
        let v = view(vec![seg], None);
        assert_eq!(text(&v, q()).await, "legacy\nlog\n");
        assert_eq!(text(&v, OutputQuery { lines: Some(1), ..q() }).await, "log\n");
        assert_eq!(text(&v, OutputQuery { stream: OUT, ..q() }).await, "");
        let stamped = text(
            &v,
            OutputQuery {
                timestamps: true,
                ..q()
            },
        )
        .await;
        assert!(
            chrono::DateTime::parse_from_rfc3339(&stamped[..24]).is_ok(),
            "{stamped}"
        );
    }

    #[tokio::test]
    async fn the_elided_middle_is_one_marker_line_and_a_reported_range() {
        let dir = tempfile::tempdir().expect("temp dir");
        let v = elided_fixture(dir.path());
        let (got, r) = blocks(&v, q()).await;
        // The head ends mid-line: the marker still gets a line of its own.
        assert_eq!(
            got.concat(),
            "one\ntwo\nthree\nxxxxxx\n[\u{2026} 30 bytes elided \u{2026}]\naa\nbb\ncc\n"
        );
        assert_eq!((r.elided(), r.output_end()), (Some((20, 50)), 59));
        // A range past the gap: no marker, no range.
        let (got, r) = blocks(&v, OutputQuery::range(OutputRange::From(50))).await;
        assert_eq!((got.concat().as_str(), r.elided()), ("aa\nbb\ncc\n", None));
        // A tail starting inside the gap: the part of it in the range.
        let (got, r) = blocks(&v, OutputQuery::range(OutputRange::Tail(14))).await;
        assert_eq!(got.concat(), "[\u{2026} 5 bytes elided \u{2026}]\naa\nbb\ncc\n");
        assert_eq!(r.elided(), Some((45, 50)));
        // Lines: the gap is crossed only when the lines reach before it.
        let lines = |n| OutputQuery { lines: Some(n), ..q() };
        let (got, r) = blocks(&v, lines(3)).await;
        assert_eq!((got.concat().as_str(), r.elided()), ("aa\nbb\ncc\n", None));
        assert_eq!(
            text(&v, lines(4)).await,
            "xxxxxx\n[\u{2026} 30 bytes elided \u{2026}]\naa\nbb\ncc\n"
        );
        // Time: a window inside the tail has no gap; one across it has.
        let since = |ms| OutputQuery {
            since: Some(at(ms)),
            ..q()
        };
        assert_eq!(text(&v, since(40)).await, "aa\nbb\ncc\n");
        let across = OutputQuery {
            since: Some(at(20)),
            stream: ERR,
            ..q()
        };
        assert_eq!(text(&v, across).await, "ee\n[\u{2026} 30 bytes elided \u{2026}]\ncc\n");
        let stamped = text(
            &v,
            OutputQuery {
                timestamps: true,
                ..lines(4)
            },
        )
        .await;
        assert_eq!(
            stamped,
            format!(
                "{} xxxxxx\n[\u{2026} 30 bytes elided \u{2026}]\n{} aa\n{} bb\n{} cc\n",
                stamp(30),
                stamp(50),
                stamp(50),
                stamp(60)
            )
        );
    }

    #[tokio::test]
    async fn a_tail_segment_deleted_after_the_snapshot_reads_as_elided() {
        let dir = tempfile::tempdir().expect("temp dir");
        let head = segment(dir.path(), 0, &[("head\n", 0, OUT)]);
        let gone = segment(dir.path(), 5, &[("middle\n", 1, OUT)]);
        let last = segment(dir.path(), 12, &[("last\n", 2, OUT)]);
        let v = view(vec![head, gone.clone(), last], None);
        std::fs::remove_file(&gone.log).expect("delete log");
        std::fs::remove_file(&gone.idx).expect("delete index");
        let (got, r) = blocks(&v, q()).await;
        assert_eq!(got.concat(), "head\n[\u{2026} 7 bytes elided \u{2026}]\nlast\n");
        assert_eq!(r.elided(), Some((5, 12)));
        for query in [
            OutputQuery { lines: Some(2), ..q() },
            OutputQuery {
                stream: OUT,
                timestamps: true,
                ..q()
            },
            OutputQuery {
                since: Some(at(1)),
                ..q()
            },
        ] {
            let got = text(&v, query.clone()).await;
            assert!(!got.contains("middle"), "{query:?}: {got}");
            assert!(got.ends_with("last\n"), "{query:?}: {got}");
        }
        // A deleted process (its head is gone): the text just ends.
        std::fs::remove_file(&v.segments[0].log).expect("delete head");
        std::fs::remove_file(&v.segments[2].log).expect("delete last");
        let got = text(&v, q()).await;
        assert_eq!(got, "");
    }

    /// Regression (review L6, bug: bytes dropped without a hole when an
    /// index vanished mid-read): the log was read, the records for it were
    /// not found, and its bytes were skipped with no marker and no
    /// `Prochub-Elided`. Now exactly the bytes not served are a hole, for a
    /// segment reached after its index went, and for the rest of a segment
    /// whose index went between two blocks.
    #[tokio::test]
    async fn bug_an_index_deleted_mid_read_dropped_bytes_without_a_hole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let line = format!("{}\n", "z".repeat(999));
        let lines: Vec<_> = (0..200).map(|i| (line.as_str(), i, OUT)).collect();
        let head_lines = [("head\n", 0, OUT)];
        let make = || {
            let head = segment(dir.path(), 0, &head_lines);
            let tail = segment(dir.path(), head.end, &lines);
            view(vec![head, tail], None)
        };
        let v = make();
        let (head_end, end) = (v.segments[0].end, v.end);
        for query in [
            OutputQuery { stream: OUT, ..q() },
            OutputQuery {
                timestamps: true,
                ..q()
            },
        ] {
            // The tail's index goes after the head was served.
            let mut r = OutputReader::of_view(v.clone(), query.clone());
            let first = r.next_block().await.expect("readable").expect("a first block");
            assert!(first.ends_with("head\n"), "{query:?}: {first}");
            std::fs::remove_file(&v.segments[1].idx).expect("delete the index");
            let rest = drain_reader(&mut r).await;
            assert_eq!(r.elided(), Some((head_end, end)), "{query:?}");
            assert_eq!(rest, history::elided_marker(end - head_end), "{query:?}");
            assert_eq!(make(), v);
            // The tail's index goes after its first block was served.
            let from = OutputQuery::range(OutputRange::From(head_end));
            let mut r = OutputReader::of_view(
                v.clone(),
                OutputQuery {
                    range: from.range,
                    ..query.clone()
                },
            );
            let first = r.next_block().await.expect("readable").expect("a first block");
            assert!(first.ends_with(&line[..REPLAY_BLOCK % line.len()]), "{query:?}");
            std::fs::remove_file(&v.segments[1].idx).expect("delete the index");
            // The reader keeps the index it opened for the first block: the
            // rest is served whole, with its records (nothing dropped).
            let rest = drain_reader(&mut r).await;
            assert_eq!(r.elided(), None, "{query:?}");
            let all = format!("{first}{rest}");
            assert_eq!(all.matches('\n').count(), 200, "{query:?}: every line, once");
            if !query.timestamps {
                assert_eq!(all, line.repeat(200), "{query:?}");
            }
            assert_eq!(make(), v);
        }
    }

    async fn drain_reader(r: &mut OutputReader) -> String {
        let mut out = String::new();
        while let Some(b) = r.next_block().await.expect("readable") {
            out.push_str(&b);
        }
        out
    }

    #[tokio::test]
    async fn empty_results_end_at_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = view(vec![segment(dir.path(), 0, &[])], None);
        for query in [
            q(),
            OutputQuery {
                lines: Some(5),
                timestamps: true,
                ..q()
            },
            OutputQuery {
                since: Some(at(0)),
                ..q()
            },
        ] {
            let mut r = OutputReader::of_view(empty.clone(), query);
            assert_eq!(r.next_block().await.expect("readable"), None);
            assert!(r.is_done());
        }
        let one = view(vec![segment(&dir.path().join("b"), 0, &[("x\n", 0, None)])], None);
        let mut r = OutputReader::of_view(one, OutputQuery { stream: ERR, ..q() });
        assert_eq!(r.next_block().await.expect("readable"), None);
    }

    #[tokio::test]
    async fn lines_of_one_pipe_across_many_index_batches_and_log_blocks() {
        let dir = tempfile::tempdir().expect("temp dir");
        // 5,000 records (over two index batches), alternating pipes.
        let texts: Vec<String> = (0..5000).map(|i| format!("line {i:04} {}\n", "y".repeat(40))).collect();
        let appends: Vec<_> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as i64, if i % 2 == 0 { OUT } else { ERR }))
            .collect();
        let v = view(vec![segment(dir.path(), 0, &appends)], None);
        let query = OutputQuery {
            lines: Some(2000),
            stream: ERR,
            ..q()
        };
        let (bs, _) = blocks(&v, query).await;
        let got = bs.concat();
        let want: String = texts.iter().skip(1).step_by(2).skip(500).cloned().collect();
        assert_eq!(got, want);
        let since = OutputQuery {
            since: Some(at(4990)),
            timestamps: true,
            ..q()
        };
        let got = text(&v, since).await;
        assert_eq!(got.lines().count(), 10);
        assert!(got.starts_with(&format!("{} line 4990 ", stamp(4990))), "{got}");
    }
}
