//! Query shapes shared by the store (which answers them) and the client
//! (which asks them): a page of the process list, a range of output.

use super::{Process, Status};

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
