//! [`WorkspaceIdentity`]: a workspace id derived deterministically from the
//! folder an editor has open (same folder, same id, across restarts).

use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::ClientError;
use crate::model::NewWorkspace;

/// A workspace id derived from a folder: `ws-` and 16 hex digits of the
/// SHA-256 of the canonical path. Same folder, same id, on every run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceIdentity {
    pub id: String,
    /// The folder's name, for display.
    pub name: String,
    /// The canonical path the id was derived from.
    pub root_path: PathBuf,
}

impl WorkspaceIdentity {
    /// The identity of `folder`. The path is canonicalised (symlinks,
    /// `..`, `.`, trailing slashes resolved); a folder that does not exist
    /// is normalised lexically against the current directory instead.
    pub fn for_path(folder: impl AsRef<Path>) -> Result<Self, ClientError> {
        let folder = folder.as_ref();
        let root = match folder.canonicalize() {
            Ok(p) => p,
            Err(_) => {
                let abs = if folder.is_absolute() {
                    folder.to_path_buf()
                } else {
                    std::env::current_dir()
                        .map_err(ClientError::io("read current folder", "."))?
                        .join(folder)
                };
                normalize_lexically(&abs)
            }
        };
        Ok(Self::from_canonical(root))
    }

    fn from_canonical(root: PathBuf) -> Self {
        use std::os::unix::ffi::OsStrExt;
        let digest = Sha256::digest(root.as_os_str().as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| root.display().to_string());
        WorkspaceIdentity {
            id: format!("ws-{hex}"),
            name,
            root_path: root,
        }
    }

    /// The body that registers this workspace.
    pub fn registration(&self) -> NewWorkspace {
        NewWorkspace {
            id: Some(self.id.clone()),
            name: self.name.clone(),
            root_path: Some(self.root_path.display().to_string()),
        }
    }

    /// Where this workspace's offline queue lives by default:
    /// `DATA/queue/<id>.jsonl` under the user's data folder (a `prochub`
    /// folder in the current one when the user has none).
    pub fn default_queue_path(&self) -> PathBuf {
        super::default_data_dir()
            .unwrap_or_else(|| PathBuf::from("prochub"))
            .join("queue")
            .join(format!("{}.jsonl", self.id))
    }
}

/// Resolves `.` and `..` without touching the file system.
fn normalize_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_valid() {
        let a = WorkspaceIdentity::from_canonical(PathBuf::from("/home/me/project"));
        let b = WorkspaceIdentity::from_canonical(PathBuf::from("/home/me/project"));
        let c = WorkspaceIdentity::from_canonical(PathBuf::from("/home/me/other"));
        assert_eq!(a, b);
        assert_ne!(a.id, c.id);
        assert_eq!(a.id.len(), 3 + 16);
        crate::model::Id::parse(&a.id).unwrap();
        assert_eq!(a.name, "project");
    }

    #[test]
    fn missing_folders_are_normalised_lexically() {
        let a = WorkspaceIdentity::for_path("/nonexistent-prochub/x/../y/").unwrap();
        let b = WorkspaceIdentity::for_path("/nonexistent-prochub/y").unwrap();
        assert_eq!(a, b);
    }
}
