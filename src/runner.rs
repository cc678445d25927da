//! Server-run commands (SPEC section 6): spawn, pipe stdout/stderr into the
//! store as chunks, record the exit, cancel with SIGTERM then SIGKILL.
//!
//! PLACEHOLDER: the API below is fixed (the server calls it); the bodies
//! are filled in by the client/exec issue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::model::Process;
use crate::store::FileProcessStore;

/// Time between SIGTERM and SIGKILL on cancel and shutdown.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("server-run commands are not available in this build")]
    Unavailable,
}

/// Runs and tracks the commands of one server.
pub struct Runner {
    _store: Arc<FileProcessStore>,
    _grace: Duration,
}

impl Runner {
    pub fn new(store: Arc<FileProcessStore>, grace: Duration) -> Arc<Self> {
        Arc::new(Runner {
            _store: store,
            _grace: grace,
        })
    }

    /// Spawns `process.command` (already stored, status running) without
    /// waiting for it. A spawn failure ends the record `failed` with the
    /// error; it is not returned as an HTTP error.
    pub fn start(
        self: &Arc<Self>,
        _process: &Process,
        _cwd: Option<String>,
        _env: BTreeMap<String, String>,
    ) -> Result<(), RunnerError> {
        Err(RunnerError::Unavailable)
    }

    /// Cancels a process: a server-run command gets SIGTERM, then SIGKILL
    /// after the grace period, and its record ends `cancelled`; a process
    /// without a command is just marked `cancelled`. Returns the final record.
    pub async fn cancel(self: &Arc<Self>, _id: &str) -> Result<Process, crate::store::StoreError> {
        Err(crate::store::StoreError::Task("cancel is not built yet".into()))
    }

    /// At server start: records left `running` with a `command` by a previous
    /// server can no longer be followed: mark them failed, saying so.
    pub async fn recover_orphans(self: &Arc<Self>) -> Result<usize, crate::store::StoreError> {
        Ok(0)
    }

    /// Graceful shutdown: terminate every running command and record it.
    pub async fn shutdown(self: &Arc<Self>) {}
}
