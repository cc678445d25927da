//! The store's error type: every variant says what went wrong and where.

use std::io;
use std::path::PathBuf;

use crate::model::{IdError, Process, Status};

/// Errors of [`crate::store::FileProcessStore`]. The server maps each variant
/// to one HTTP status and `code` in one place (`server::error`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid {what} id: {source}")]
    InvalidId {
        what: &'static str,
        #[source]
        source: IdError,
    },
    #[error("invalid field `{field}`: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("workspace {0:?} is not registered")]
    UnknownWorkspace(String),
    #[error("process {:?} already exists", existing.id)]
    ProcessExists { existing: Box<Process> },
    #[error("process {id:?} cannot move from {from} to {to}")]
    BadTransition { id: String, from: Status, to: Status },
    #[error("process {id:?} is {status}: output is only accepted while it is running")]
    NotRunning { id: String, status: Status },
    /// An append with `?at=N` found the output ending elsewhere: the
    /// producer's idea of what is stored is wrong (or its earlier attempt
    /// was stored after all: then `output_bytes` is `at` + its length).
    #[error("output of process {id:?} ends at byte {output_bytes}, not at {at}")]
    OffsetMismatch { id: String, at: u64, output_bytes: u64 },
    #[error("workspace {id:?} still has {count} processes; delete with cascade to remove them too")]
    WorkspaceNotEmpty { id: String, count: usize },
    #[error("the default workspace cannot be deleted")]
    DefaultWorkspace,
    #[error("invalid cursor {0:?}")]
    BadCursor(String),
    #[error("data folder {dir} is in use by another prochub ({owner})")]
    Locked { dir: PathBuf, owner: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A rename or unlink happened but the folder fsync that makes it
    /// durable failed. Memory follows the disk (a restart will most likely
    /// find the change) and the caller still hears of the failure.
    #[error("{op} {path} (done, but it may not survive a power loss): {source}")]
    NotDurable {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("encoding record {path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("a blocking store task failed: {0}")]
    Task(String),
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }

    /// Parses a `what` ("process", "workspace") id, or says which was bad.
    pub(crate) fn parse_id(what: &'static str, id: &str) -> Result<crate::model::Id> {
        crate::model::Id::parse(id).map_err(|source| StoreError::InvalidId { what, source })
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl From<crate::durable::WriteError> for StoreError {
    fn from(e: crate::durable::WriteError) -> StoreError {
        let (op, path, source) = (e.op, e.path, e.source);
        if e.applied {
            StoreError::NotDurable { op, path, source }
        } else {
            StoreError::Io { op, path, source }
        }
    }
}

/// What the file system said no with, when it is something an operator
/// fixes (free space, remount, raise a limit) rather than a bug: the server
/// answers each with its own status and a message naming the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// ENOSPC, EDQUOT: the disk (or the quota) is full.
    NoSpace,
    /// EROFS, EACCES, EPERM: the data folder cannot be written.
    ReadOnly,
    /// EMFILE, ENFILE: out of file descriptors, for now.
    Busy,
}

impl Fault {
    /// Classifies an I/O error, looking through wrappers (an error wrapped
    /// with its path carries the OS code one level down).
    pub fn of(e: &io::Error) -> Option<Fault> {
        use nix::errno::Errno;
        let code = os_code(e)?;
        match Errno::from_raw(code) {
            Errno::ENOSPC | Errno::EDQUOT => Some(Fault::NoSpace),
            Errno::EROFS | Errno::EACCES | Errno::EPERM => Some(Fault::ReadOnly),
            Errno::EMFILE | Errno::ENFILE => Some(Fault::Busy),
            _ => None,
        }
    }

    /// A fault of the disk (full, or not writable), which start-up
    /// housekeeping tolerates: the server still serves reads. Not `Busy`,
    /// which passes and must not be papered over.
    pub fn is_disk(self) -> bool {
        matches!(self, Fault::NoSpace | Fault::ReadOnly)
    }
}

/// The OS error code of `e` or of the first I/O error among its sources.
fn os_code(e: &io::Error) -> Option<i32> {
    if let Some(code) = e.raw_os_error() {
        return Some(code);
    }
    let mut next = e.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static));
    while let Some(err) = next {
        if let Some(code) = err.downcast_ref::<io::Error>().and_then(os_code) {
            return Some(code);
        }
        next = err.source();
    }
    None
}

impl StoreError {
    /// The operator-fixable fault behind this error, with the path it hit.
    pub fn fault(&self) -> Option<(Fault, &std::path::Path)> {
        match self {
            StoreError::Io { path, source, .. } | StoreError::NotDurable { path, source, .. } => {
                Fault::of(source).map(|f| (f, path.as_path()))
            }
            _ => None,
        }
    }
}

/// Shorthand used across the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
