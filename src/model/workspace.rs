//! The workspace record.

use serde::{Deserialize, Serialize};

use super::Id;
use super::time::{Timestamp, ts};

/// A workspace record, `workspaces/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    pub id: Id,
    pub name: String,
    #[serde(default)]
    pub root_path: Option<String>,
    #[serde(with = "ts")]
    pub created_at: Timestamp,
}
