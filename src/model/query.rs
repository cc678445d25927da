//! Query shapes shared by the store (which answers them) and the client
//! (which asks them): a page of the process list, a read of output.

use super::{Process, Status, StreamKind, Timestamp};

/// A list request (`GET /api/processes?workspace=&status=&limit=&cursor=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub workspace: Option<String>,
    pub status: Option<Status>,
    /// Page size; None means the server's default.
    pub limit: Option<usize>,
    /// Opaque position returned as `next_cursor` by the previous page.
    pub cursor: Option<String>,
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
