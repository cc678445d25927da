//! Lifecycle events (SPEC section 4) and the pipe a chunk came from.

use serde::{Deserialize, Serialize};

use super::time::{Timestamp, ts};
use super::{Process, Workspace};

/// Which pipe a chunk of a server-run command came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// Kind of a lifecycle event (SPEC section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    ProcessAdded,
    ProcessUpdated,
    ProcessRemoved,
    WorkspaceAdded,
    WorkspaceRemoved,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ProcessAdded => "process-added",
            EventKind::ProcessUpdated => "process-updated",
            EventKind::ProcessRemoved => "process-removed",
            EventKind::WorkspaceAdded => "workspace-added",
            EventKind::WorkspaceRemoved => "workspace-removed",
        }
    }
}

/// A lifecycle event as sent over `/ws` and `/api/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    #[serde(rename = "type")]
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Workspace>,
    #[serde(with = "ts")]
    pub timestamp: Timestamp,
}

impl LifecycleEvent {
    /// The workspace this event belongs to (for `?workspace=` filters).
    pub fn workspace_id(&self) -> &str {
        match (&self.process, &self.workspace) {
            (Some(p), _) => &p.workspace,
            (None, Some(w)) => &w.id,
            (None, None) => "",
        }
    }
}
