//! Workspace records: register, list, get, delete (optionally cascading to
//! the workspace's processes).

use std::sync::Arc;

use super::error::{Result, StoreError};
use super::{FileProcessStore, checks, fsio, settle};
use crate::model::{DEFAULT_WORKSPACE, EventKind, Id, NewWorkspace, Workspace};

impl FileProcessStore {
    /// Registers a workspace. Returns it and whether it was created (false:
    /// that id already existed and the stored record is returned).
    pub async fn create_workspace(self: &Arc<Self>, new: NewWorkspace) -> Result<(Workspace, bool)> {
        self.detached(move |s| async move { s.create_workspace_inner(new).await })
            .await
    }

    async fn create_workspace_inner(self: Arc<Self>, new: NewWorkspace) -> Result<(Workspace, bool)> {
        let id = match new.id {
            Some(id) => StoreError::parse_id("workspace", &id)?,
            None => Id::generate(),
        };
        checks::name(&new.name)?;
        let _guard = self.ws_guard.write().await;
        if let Some(existing) = self.workspace(&id) {
            return Ok((existing, false));
        }
        let w = Workspace {
            id: id.clone(),
            name: new.name,
            root_path: new.root_path,
            created_at: self.now(),
        };
        let (path, record, store) = (self.workspace_path(&id), w.clone(), self.clone());
        let written = Self::blocking(move || fsio::write_json_atomic(&path, &record, &store.ws_sync)).await;
        settle(written, || {
            self.lock_workspaces().insert(id, w.clone());
            self.events.workspace(EventKind::WorkspaceAdded, &w);
        })?;
        Ok((w, true))
    }

    fn lock_workspaces(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<Id, Workspace>> {
        crate::sync::lock(&self.workspaces)
    }

    fn workspace(&self, id: &str) -> Option<Workspace> {
        self.lock_workspaces().get(id).cloned()
    }

    pub(crate) fn workspace_exists(&self, id: &str) -> bool {
        self.lock_workspaces().contains_key(id)
    }

    pub fn get_workspace(&self, id: &Id) -> Result<Workspace> {
        self.workspace(id).ok_or_else(|| StoreError::NotFound {
            kind: "workspace",
            id: id.to_string(),
        })
    }

    /// All workspaces, by id.
    pub fn list_workspaces(&self) -> Vec<Workspace> {
        self.lock_workspaces().values().cloned().collect()
    }

    /// Deletes a workspace. With processes it is refused unless `cascade`,
    /// which deletes them (and their output) first. `default` stays.
    pub async fn delete_workspace(self: &Arc<Self>, id: &Id, cascade: bool) -> Result<()> {
        let id = id.to_owned();
        self.detached(move |s| async move { s.delete_workspace_inner(&id, cascade).await })
            .await
    }

    async fn delete_workspace_inner(self: Arc<Self>, id: &Id, cascade: bool) -> Result<()> {
        self.get_workspace(id)?;
        if id == DEFAULT_WORKSPACE {
            return Err(StoreError::DefaultWorkspace);
        }
        let _guard = self.ws_guard.write().await;
        // Look again under the guard: a concurrent delete may have removed
        // it while this one waited (regression: both then succeeded and
        // both published workspace-removed).
        let w = self.get_workspace(id)?;
        let procs = self.processes_where(|p| p.workspace == *id);
        if !procs.is_empty() && !cascade {
            return Err(StoreError::WorkspaceNotEmpty {
                id: id.to_string(),
                count: procs.len(),
            });
        }
        for p in procs {
            match self.clone().delete_process_inner(&p.id).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // Its processes are gone one by one above, each settled on its own:
        // a cascade that fails half-way leaves the workspace with the
        // processes not yet deleted, on disk and in memory alike.
        let (path, store) = (self.workspace_path(id), self.clone());
        let removed = Self::blocking(move || fsio::remove_durable(&path, &store.ws_sync)).await;
        settle(removed, || {
            self.lock_workspaces().remove(id);
            self.events.workspace(EventKind::WorkspaceRemoved, &w);
        })
    }
}
