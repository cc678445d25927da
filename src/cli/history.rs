//! The stored part of `prochub follow ID --timestamps --since 10m --lines
//! 100 --stream stderr` (SPEC section 10, like `docker logs -t --since
//! --tail`): the query those flags make, and how the live part that
//! follows keeps the same look: [`LiveView`] filters chunks by pipe and
//! prefixes lines with their chunk's time, as the server does for the
//! stored part.

use std::io::Write;

use super::FollowArgs;
use super::follow::FOLLOW_CONTEXT_LINES;
use crate::model::{OutputQuery, OutputRange, StreamKind, Timestamp, format_ts};

/// The history read `follow` makes, or None when no flag asks for one
/// (then it replays the last lines through the stream, as before, which
/// keeps each pipe on its own output). Without `--lines`, the last
/// [`FOLLOW_CONTEXT_LINES`] lines are shown, unless `--since` or
/// `--from-start` say where to start.
pub fn query(a: &FollowArgs) -> Option<OutputQuery> {
    let asked = a.timestamps
        || a.since.is_some()
        || a.until.is_some()
        || a.lines.is_some()
        || a.stream.is_some()
        || a.no_follow;
    if !asked {
        return None;
    }
    let default_lines = (!a.from_start && a.since.is_none()).then_some(FOLLOW_CONTEXT_LINES as u64);
    Some(OutputQuery {
        range: OutputRange::All,
        since: a.since,
        until: a.until,
        lines: a.lines.or(default_lines),
        timestamps: a.timestamps,
        stream: a.stream.map(StreamKind::from),
    })
}

/// Prints the stored part: to stderr when only stderr was asked for, else
/// to stdout (the server's history is one text, both pipes in order).
/// False when stdout's reader is gone.
pub fn print(text: &str, stream: Option<StreamKind>) -> std::io::Result<bool> {
    super::print::write_chunk(text, stream)
}

/// How `follow` shows live chunks so that they read like the history
/// above them.
#[derive(Debug, Default)]
pub struct LiveView {
    /// Only chunks of this pipe (chunks without one are left out, as the
    /// server leaves them out of `?stream=`).
    pub stream: Option<StreamKind>,
    /// Prefix each line with its chunk's time.
    pub stamper: Option<Stamper>,
}

impl LiveView {
    /// What to print for a chunk; None to skip it. `ts` None (a server
    /// without times) stamps with the time it arrived.
    pub fn render(&mut self, content: String, pipe: Option<StreamKind>, ts: Option<Timestamp>) -> Option<String> {
        if self.stream.is_some_and(|s| pipe != Some(s)) {
            return None;
        }
        match &mut self.stamper {
            Some(stamper) => Some(stamper.stamp(&content, pipe, ts.unwrap_or_else(crate::model::now))),
            None => Some(content),
        }
    }
}

/// Prefixes lines with `RFC3339 ` as `?timestamps=true` does: a line gets
/// the time of the chunk its first byte is in, so a line split across
/// chunks is prefixed once. Each pipe keeps its own line state (they go
/// to different outputs).
#[derive(Debug)]
pub struct Stamper {
    /// Whether the next byte of stdout (0) / stderr (1) starts a line.
    at_line_start: [bool; 2],
}

impl Stamper {
    /// `at_line_start`: whether what was printed before (the history)
    /// ended a line.
    pub fn new(at_line_start: bool) -> Self {
        Stamper {
            at_line_start: [at_line_start; 2],
        }
    }

    pub fn stamp(&mut self, content: &str, pipe: Option<StreamKind>, ts: Timestamp) -> String {
        let state = &mut self.at_line_start[usize::from(pipe == Some(StreamKind::Stderr))];
        let prefix = format_ts(&ts);
        let mut out = String::with_capacity(content.len() + prefix.len() + 1);
        for piece in content.split_inclusive('\n') {
            if *state {
                out.push_str(&prefix);
                out.push(' ');
            }
            out.push_str(piece);
            *state = piece.ends_with('\n');
        }
        out
    }
}

/// The time of `--since`/`--until`, as the server reads `?since=`
/// ([`crate::model::parse_when`]); durations are resolved here, against
/// this machine's clock.
pub fn parse_when(s: &str) -> Result<Timestamp, String> {
    crate::model::parse_when(s, crate::model::now())
}

/// The one line `follow` and `run` print (to stderr) where output was
/// elided, as `GET …/output` marks it in the body.
pub fn elided_line(from: u64, to: u64) -> String {
    format!("[… {} bytes elided …]\n", to.saturating_sub(from))
}

/// Writes [`elided_line`] to stderr (a closed stderr is ignored).
pub fn print_elided(from: u64, to: u64) {
    let mut err = std::io::stderr().lock();
    let _ = err
        .write_all(elided_line(from, to).as_bytes())
        .and_then(|()| err.flush());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("a valid time")
    }

    fn follow_args(args: &[&str]) -> FollowArgs {
        let argv = ["prochub", "follow"].iter().chain(args).copied();
        match Cli::try_parse_from(argv).expect("valid arguments").command {
            Command::Follow(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lines_get_the_time_of_the_chunk_their_first_byte_is_in() {
        let (t1, t2, t3) = (
            t("2026-12-01T10:00:00.123Z"),
            t("2026-12-01T10:00:01Z"),
            t("2026-12-01T10:00:02.5Z"),
        );
        let mut s = Stamper::new(true);
        let mut out = s.stamp("one\ntw", None, t1);
        out += &s.stamp("o\nthree\n", None, t2);
        out += &s.stamp("", None, t3);
        out += &s.stamp("four", None, t3);
        assert_eq!(
            out,
            "2026-12-01T10:00:00.123Z one\n\
             2026-12-01T10:00:00.123Z two\n\
             2026-12-01T10:00:01.000Z three\n\
             2026-12-01T10:00:02.500Z four"
        );
    }

    #[test]
    fn each_pipe_keeps_its_own_line_and_history_sets_the_start() {
        let ts = t("2026-12-01T10:00:00Z");
        // The history ended inside a line: its rest gets no prefix.
        let mut s = Stamper::new(false);
        assert_eq!(s.stamp("rest\n", None, ts), "rest\n");
        assert_eq!(s.stamp("err: ", Some(StreamKind::Stderr), ts), "err: ");
        assert_eq!(
            s.stamp("out\n", Some(StreamKind::Stdout), ts),
            "2026-12-01T10:00:00.000Z out\n"
        );
        assert_eq!(s.stamp("boom\n", Some(StreamKind::Stderr), ts), "boom\n");
    }

    #[test]
    fn the_live_view_filters_by_pipe_like_the_server() {
        let mut v = LiveView {
            stream: Some(StreamKind::Stderr),
            stamper: None,
        };
        assert_eq!(v.render("a".into(), Some(StreamKind::Stdout), None), None);
        assert_eq!(v.render("b".into(), None, None), None, "no pipe: left out");
        assert_eq!(
            v.render("c".into(), Some(StreamKind::Stderr), None).as_deref(),
            Some("c")
        );
    }

    #[test]
    fn since_takes_a_duration_or_a_time() {
        assert_eq!(parse_when("2026-12-01T12:00:00+02:00"), Ok(t("2026-12-01T10:00:00Z")));
        let ten_min_ago = parse_when("10m").unwrap();
        let expected = crate::model::now() - chrono::Duration::minutes(10);
        assert!((ten_min_ago - expected).num_seconds().abs() <= 1, "{ten_min_ago}");
        assert!(parse_when("yesterday").is_err());
    }

    #[test]
    fn flags_make_the_history_query() {
        assert_eq!(query(&follow_args(&["p1"])), None, "no flag: as before");
        assert_eq!(query(&follow_args(&["p1", "--from-start"])), None);
        let q = query(&follow_args(&["p1", "--timestamps"])).unwrap();
        assert_eq!((q.lines, q.timestamps), (Some(10), true), "the last lines by default");
        let q = query(&follow_args(&[
            "p1",
            "-t",
            "--since",
            "2026-12-01T10:00:00Z",
            "--until",
            "2026-12-01T11:00:00Z",
            "--lines",
            "100",
            "--stream",
            "stderr",
        ]))
        .unwrap();
        assert_eq!(
            q,
            OutputQuery {
                range: OutputRange::All,
                since: Some(t("2026-12-01T10:00:00Z")),
                until: Some(t("2026-12-01T11:00:00Z")),
                lines: Some(100),
                timestamps: true,
                stream: Some(StreamKind::Stderr),
            }
        );
        let q = query(&follow_args(&["p1", "--since", "1h"])).unwrap();
        assert_eq!(q.lines, None, "--since: everything since then");
        let q = query(&follow_args(&["p1", "--no-follow", "--from-start"])).unwrap();
        assert_eq!((q.lines, q.range), (None, OutputRange::All));
        assert_eq!(query(&follow_args(&["p1", "--tail", "3"])).unwrap().lines, Some(3));
    }

    #[test]
    fn the_elided_marker_matches_the_server_s() {
        assert_eq!(elided_line(2097152, 2097152 + 1000), "[… 1000 bytes elided …]\n");
    }
}
