//! Query shapes shared by the store (which answers them) and the client
//! (which asks them): a page of the process list, a read of output.

use std::fmt;
use std::str::FromStr;

use super::{Process, Status, StreamKind, Timestamp};

/// A list request (`GET /api/processes?workspace=&status=&limit=&cursor=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub workspace: Option<String>,
    /// Only processes whose status is in the set; None means any.
    pub status: Option<StatusSet>,
    /// Page size; None means the server's default.
    pub limit: Option<usize>,
    /// Opaque position returned as `next_cursor` by the previous page.
    pub cursor: Option<String>,
}

/// A set of statuses, the `?status=running,queued` filter: a bitset over
/// the five, so testing a record costs one AND. Written and parsed as a
/// comma list (`FromStr`/`Display`), in [`Status::ALL`] order when written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct StatusSet(u8);

impl StatusSet {
    pub const EMPTY: StatusSet = StatusSet(0);

    fn bit(s: Status) -> u8 {
        1 << (s as u8)
    }

    pub fn contains(self, s: Status) -> bool {
        self.0 & Self::bit(s) != 0
    }

    pub fn insert(&mut self, s: Status) {
        self.0 |= Self::bit(s);
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in [`Status::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Status> {
        Status::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl From<Status> for StatusSet {
    fn from(s: Status) -> Self {
        StatusSet(Self::bit(s))
    }
}

impl FromIterator<Status> for StatusSet {
    fn from_iter<I: IntoIterator<Item = Status>>(iter: I) -> Self {
        let mut set = StatusSet::EMPTY;
        iter.into_iter().for_each(|s| set.insert(s));
        set
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

/// `running,queued`: one or more statuses separated by commas, nothing
/// else (no spaces, no empty item), so that what is accepted is exactly
/// what the OpenAPI pattern says. A repeated status is harmless.
impl FromStr for StatusSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("empty status list (give one or more of queued, running, completed, failed, cancelled, separated by commas)".into());
        }
        s.split(',').map(str::parse::<Status>).collect()
    }
}

/// One page of processes, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Process>,
    /// Present when more records follow.
    pub next_cursor: Option<String>,
}

/// Which part of the stored output to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputRange {
    All,
    /// From this byte offset to the end.
    From(u64),
    /// The last N bytes.
    Tail(u64),
}

/// A read of stored output (`GET /api/processes/:id/output`, SPEC section
/// 10): the byte range, then the records stored in `since..=until`, then
/// those of one pipe, then the last `lines` lines of that, optionally each
/// prefixed with its record's time. Times are absolute here: the HTTP
/// layer resolves `since=10m` against its clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputQuery {
    pub range: OutputRange,
    /// Only appends stored at or after this time.
    pub since: Option<Timestamp>,
    /// Only appends stored at or before this time.
    pub until: Option<Timestamp>,
    /// Only the last N lines of what the other filters select.
    pub lines: Option<u64>,
    /// Each line prefixed by its append's RFC 3339 time and a space.
    pub timestamps: bool,
    /// Only appends from this pipe (appends without one are left out).
    pub stream: Option<StreamKind>,
}

impl Default for OutputQuery {
    fn default() -> Self {
        OutputQuery::range(OutputRange::All)
    }
}

impl OutputQuery {
    /// Everything stored in `range`, unfiltered.
    pub fn range(range: OutputRange) -> Self {
        OutputQuery {
            range,
            since: None,
            until: None,
            lines: None,
            timestamps: false,
            stream: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets_parse_and_print_as_comma_lists() {
        let set: StatusSet = "running,queued,running".parse().unwrap();
        assert!(set.contains(Status::Running) && set.contains(Status::Queued));
        assert!(!set.contains(Status::Failed));
        assert_eq!(set.to_string(), "queued,running");
        assert_eq!(StatusSet::from(Status::Failed).to_string(), "failed");
        for bad in ["", ",", "running,", ",running", "running, queued", "Running", "stauts"] {
            assert!(bad.parse::<StatusSet>().is_err(), "{bad:?} parsed");
        }
        let err = "running,nope".parse::<StatusSet>().unwrap_err();
        assert!(err.contains("\"nope\""), "{err}");
        let all: StatusSet = Status::ALL.into_iter().collect();
        assert_eq!(all.iter().count(), 5);
        assert!(StatusSet::EMPTY.is_empty());
    }
}
