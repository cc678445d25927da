//! `DIR/children/<id>.json`: what identifies the OS process of each
//! server-run command while it runs, so that the next server can stop it
//! after a crash (`kill -9` of the server leaves its commands running:
//! they lead process groups of their own).
//!
//! The runner writes one file when a command starts (durably, before the
//! create is answered) and removes it once the command's process group is
//! gone and its end recorded; whatever is left at start belongs to a
//! server that died. The store only keeps the files: deciding whether the
//! process is still the same one, and stopping it, is the runner's job.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{Result, StoreError};
use super::{FileProcessStore, fsio};
use crate::model::Id;

/// One running command's OS process, as `/proc` described it at spawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildRecord {
    /// The process record whose command this is (also the file name).
    pub id: Id,
    /// The command's pid; it leads its own process group.
    pub pid: u32,
    /// Its process group id (the pid, as spawned).
    pub pgid: u32,
    /// Field 22 of `/proc/PID/stat`: clock ticks after boot at which the
    /// process started. A reused pid has another start time.
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` at spawn: after a reboot no
    /// process of ours is left, whatever the pids and start times say.
    pub boot_id: Option<String>,
}

impl FileProcessStore {
    fn children_dir(&self) -> PathBuf {
        self.files.children.clone()
    }

    /// Writes `children/<id>.json` durably (temp, fsync, rename, folder
    /// fsync), creating the folder on first use.
    pub async fn save_child(&self, child: &ChildRecord) -> Result<()> {
        let dir = self.children_dir();
        let path = self.files.child(child.id.as_str());
        let json = serde_json::to_vec_pretty(child).map_err(|source| StoreError::Encode {
            path: path.clone(),
            source,
        })?;
        Self::blocking(move || {
            std::fs::create_dir_all(&dir).map_err(StoreError::io("create folder", &dir))?;
            Ok(crate::durable::write(&path, &json, None)?)
        })
        .await
    }

    /// Removes `children/<id>.json`; a missing file is not an error. Not
    /// fsynced: a file that comes back after a power loss names a process
    /// that is gone, which the next start recognises and removes.
    pub async fn forget_child(&self, id: &Id) -> Result<()> {
        let path = self.files.child(id.as_str());
        Self::blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove", &path)(e)),
        })
        .await
    }

    /// Every `children/*.json` (at start: the commands of a server that
    /// died). Leftover temp files are removed and unreadable files
    /// quarantined, as for records.
    pub async fn saved_children(&self) -> Result<Vec<ChildRecord>> {
        let dir = self.children_dir();
        let quarantine = self.files.quarantine.clone();
        Self::blocking(move || {
            if !dir.is_dir() {
                return Ok(Vec::new());
            }
            let mut children = Vec::new();
            let scan =
                fsio::scan_dir::<ChildRecord>(&dir, &quarantine, |c| c.id.as_str(), |batch| children.extend(batch))?;
            if !scan.quarantined.is_empty() {
                tracing::warn!(files = ?scan.quarantined, "unreadable files of running commands quarantined");
            }
            Ok(children)
        })
        .await
    }
}
