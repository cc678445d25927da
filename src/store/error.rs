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
        StoreError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

/// Shorthand used across the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
