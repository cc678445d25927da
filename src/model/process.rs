//! The process record and its status machine.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Id;
use super::time::{Timestamp, ts};

/// Life stage of a process. Allowed moves: `queued→running`,
/// `queued→cancelled`, `running→completed|failed|cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    #[default]
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Queued,
        Status::Running,
        Status::Completed,
        Status::Failed,
        Status::Cancelled,
    ];

    /// A terminal status never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }

    /// Whether `self → next` is an allowed move. Staying put is allowed (a
    /// no-op) unless the status is terminal and `next` differs.
    pub fn can_move_to(self, next: Status) -> bool {
        use Status::*;
        self == next
            || matches!(
                (self, next),
                (Queued, Running) | (Queued, Cancelled) | (Running, Completed | Failed | Cancelled)
            )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?} (expected queued, running, completed, failed or cancelled)"))
    }
}

/// A process record, exactly as stored in `processes/<id>.json` and served
/// by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub id: Id,
    pub workspace: Id,
    pub name: String,
    pub status: Status,
    #[serde(with = "ts")]
    pub created_at: Timestamp,
    #[serde(with = "ts")]
    pub updated_at: Timestamp,
    #[serde(with = "ts::opt", default)]
    pub started_at: Option<Timestamp>,
    #[serde(with = "ts::opt", default)]
    pub ended_at: Option<Timestamp>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The signal that killed a command (`"SIGKILL"`), when one did: a
    /// field, so nobody parses `error` to learn it. An addition to SPEC
    /// section 1, next to `exit_code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
    /// Byte offset of the end of the output: every byte appended so far,
    /// stored or elided (SPEC section 1). On disk this may lag behind the
    /// logs; the store derives it from them at open.
    #[serde(default)]
    pub output_bytes: u64,
    /// True once output went past the per-process cap (`--max-output`):
    /// from then on the store keeps its head and its most recent tail.
    #[serde(default)]
    pub output_truncated: bool,
    /// Bytes between the kept head and the kept tail that are no longer
    /// stored (SPEC section 5); 0 while everything is kept.
    #[serde(default)]
    pub output_elided: u64,
}

impl Process {
    /// Milliseconds between `started_at` (or `created_at`) and `ended_at`.
    pub fn duration_ms(&self) -> Option<u64> {
        let end = self.ended_at?;
        let start = self.started_at.unwrap_or(self.created_at);
        Some((end - start).num_milliseconds().max(0) as u64)
    }

    /// The final `status` event payload of SPEC section 3.
    pub fn status_info(&self) -> StatusInfo {
        StatusInfo {
            status: self.status,
            duration: self.duration.clone(),
            duration_ms: self.duration_ms(),
            result: self.result.clone().unwrap_or(Value::Null),
            error: self.error.clone(),
            exit_code: self.exit_code,
            exit_signal: self.exit_signal.clone(),
        }
    }
}

/// Payload of the `status` event that ends a follow stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub status: Status,
    pub duration: Option<String>,
    pub duration_ms: Option<u64>,
    pub result: Value,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    /// As the record's `exit_signal`; absent unless a signal ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_signal: Option<String>,
}
