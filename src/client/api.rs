//! Typed calls for every endpoint of SPEC section 2, as methods of
//! [`Client`]; the request plumbing they share is in [`super::transport`].

use std::time::Duration;

use http::{Method, header};
use serde::{Deserialize, Serialize};

use super::error::ClientError;
use super::event_stream::EventStream;
use super::follower::Follower;
use super::link::next_cursor;
use super::transport::Client;
use super::url::query;
use crate::model::{Id, ListQuery, NewProcess, NewWorkspace, Page, Process, ProcessPatch, Workspace};

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub uptime_s: f64,
}

pub(crate) fn process_path(id: &str) -> Result<String, ClientError> {
    Ok(format!("/api/processes/{}", Id::parse(id)?))
}

fn workspace_path(id: &str) -> Result<String, ClientError> {
    Ok(format!("/api/workspaces/{}", Id::parse(id)?))
}

impl Client {
    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.json(Method::GET, "/healthz", None::<&()>).await
    }

    /// `POST /api/workspaces`: creates, or returns the existing one (same id).
    pub async fn create_workspace(&self, new: &NewWorkspace) -> Result<Workspace, ClientError> {
        self.json(Method::POST, "/api/workspaces", Some(new)).await
    }

    pub async fn list_workspaces(&self) -> Result<Vec<Workspace>, ClientError> {
        self.json(Method::GET, "/api/workspaces", None::<&()>).await
    }

    pub async fn get_workspace(&self, id: &str) -> Result<Workspace, ClientError> {
        self.json(Method::GET, &workspace_path(id)?, None::<&()>).await
    }

    /// `DELETE /api/workspaces/:id` (`cascade` also deletes its processes).
    pub async fn delete_workspace(&self, id: &str, cascade: bool) -> Result<(), ClientError> {
        let q = query(&[("cascade", cascade.then(|| "true".to_owned()))]);
        self.call(Method::DELETE, &format!("{}{q}", workspace_path(id)?), None)
            .await
            .map(drop)
    }

    /// `POST /api/processes`. An existing client-chosen id is a 409 whose
    /// [`ClientError::Api`] carries the stored record in `existing`.
    pub async fn create_process(&self, new: &NewProcess) -> Result<Process, ClientError> {
        self.json(Method::POST, "/api/processes", Some(new)).await
    }

    /// One page of `GET /api/processes`; its `next_cursor` comes from the
    /// `Link: rel="next"` header.
    pub async fn list_processes(&self, params: &ListQuery) -> Result<Page, ClientError> {
        let q = query(&[
            ("workspace", params.workspace.clone()),
            ("status", params.status.map(|s| s.to_string())),
            ("limit", params.limit.map(|l| l.to_string())),
            ("cursor", params.cursor.clone()),
        ]);
        let (_, headers, bytes) = self.call(Method::GET, &format!("/api/processes{q}"), None).await?;
        let items: Vec<Process> = self.parse_json(&bytes)?;
        let next_cursor = headers
            .get_all(header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_cursor);
        Ok(Page { items, next_cursor })
    }

    /// Every matching process (following `Link` pages), at most `max`.
    pub async fn list_all(&self, params: &ListQuery, max: Option<usize>) -> Result<Vec<Process>, ClientError> {
        let mut params = params.clone();
        let mut all = Vec::new();
        loop {
            if let Some(max) = max {
                let left = max.saturating_sub(all.len());
                if left == 0 {
                    break;
                }
                params.limit = Some(params.limit.map_or(left, |l| l.min(left)));
            }
            let page = self.list_processes(&params).await?;
            all.extend(page.items);
            match page.next_cursor {
                Some(c) => params.cursor = Some(c),
                None => break,
            }
        }
        Ok(all)
    }

    pub async fn get_process(&self, id: &str) -> Result<Process, ClientError> {
        self.json(Method::GET, &process_path(id)?, None::<&()>).await
    }

    /// `PATCH /api/processes/:id` (JSON merge of the given fields).
    pub async fn update_process(&self, id: &str, patch: &ProcessPatch) -> Result<Process, ClientError> {
        self.json(Method::PATCH, &process_path(id)?, Some(patch)).await
    }

    /// `DELETE /api/processes/:id` (404 is an error here; see
    /// [`crate::client::WorkspaceClient::remove`] for the idempotent one).
    pub async fn delete_process(&self, id: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &process_path(id)?, None).await.map(drop)
    }

    /// `POST /api/processes/:id/cancel`; returns the final record.
    pub async fn cancel(&self, id: &str) -> Result<Process, ClientError> {
        let path = format!("{}/cancel", process_path(id)?);
        let (_, _, bytes) = self.call(Method::POST, &path, None).await?;
        match serde_json::from_slice::<Process>(&bytes) {
            Ok(p) => Ok(p),
            // A server that answers with something else: read the record.
            Err(_) => self.get_process(id).await,
        }
    }

    /// `POST /api/prune`; returns how many processes were removed.
    pub async fn prune(&self, max_age: Option<Duration>, max_count: Option<usize>) -> Result<u64, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            removed: u64,
        }
        let q = query(&[
            ("max_age", max_age.map(|d| format!("{}s", d.as_secs()))),
            ("max_count", max_count.map(|c| c.to_string())),
        ]);
        let a: Answer = self.json(Method::POST, &format!("/api/prune{q}"), None::<&()>).await?;
        Ok(a.removed)
    }

    /// Follows a process's output (SPEC section 3): from byte `from`
    /// (`Some(0)`: everything), or from now on (`None`). Reconnects by
    /// itself after a dropped connection, resuming after the last byte it
    /// delivered.
    pub fn follow(&self, id: &str, from: Option<u64>) -> Follower {
        Follower::new(self.clone(), id.to_owned(), from)
    }

    /// Lifecycle events (SSE `/api/events`), optionally of one workspace.
    pub fn events(&self, workspace: Option<&str>) -> EventStream {
        EventStream::new(self.clone(), workspace.map(str::to_owned))
    }
}
