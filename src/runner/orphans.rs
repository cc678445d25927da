//! The commands of a server that died without shutting down (`kill -9`,
//! a crash, a power cut): at the next start they are stopped if they still
//! run, and their records end `failed` with an `error` saying what
//! happened. Regression: their records said `failed` while the commands
//! ran on, and `cancel` answered 409, so nothing could stop them.
//!
//! # Telling our process from a stranger
//! `DIR/children/<id>.json` ([`ChildRecord`]) holds the pid, the process
//! group and the start time `/proc` gave at spawn, and the boot id.
//! * Another boot: nothing of ours can run; nothing is signalled.
//! * The pid runs with the same start time and group: it is our leader,
//!   and its group is ours.
//! * The pid runs with another start time: it was reused, which Linux
//!   does only once no process is left in our group; nothing is signalled.
//! * No such pid, but its group has members: the leader exited and left
//!   them (a background `&` job). While they live the group id cannot be
//!   reused, so they are ours. (The one stranger this could hit is a
//!   group that a later process with the recycled pid created and then
//!   left, between the crash and this start: that needs the pid to wrap
//!   around while the server was down.)
//!
//! Stopping is what every stop does (`signal::end_group`: SIGTERM, the
//! grace period, SIGKILL), for every orphan at once, before the server
//! takes requests: the start is delayed by at most one grace period, and
//! only when something ignores SIGTERM.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Runner, signal};
use crate::model::{Id, ProcessPatch, Status};
use crate::store::{ChildRecord, ListQuery, MAX_LIMIT, StoreError};

/// The `error` of a record whose command had ended when the server came
/// back (or left nothing saying which process it was).
pub const ORPHAN_ERROR: &str = "the server stopped unexpectedly while this command was running; \
     the command has ended, but how is unknown and its later output was not recorded";
/// The `error` of a record whose command was still running when the
/// server came back, and was stopped then.
pub const ORPHAN_STOPPED_ERROR: &str = "the server stopped unexpectedly while this command was running; \
     the command was still running when it restarted, and was stopped (SIGTERM, then SIGKILL)";

impl Runner {
    /// At server start: stops what is left of the commands of a previous
    /// server, marks their records failed, and removes their files.
    /// Returns how many records it marked.
    pub async fn recover_orphans(self: &Arc<Self>) -> Result<usize, StoreError> {
        let saved: Vec<ChildRecord> = {
            let found = self.store.saved_children().await?;
            let ours = self.children();
            found.into_iter().filter(|c| !ours.contains_key(&c.id)).collect()
        };
        let stops = saved.iter().map(|c| self.stop_orphan(c));
        let stopped: HashSet<Id> = futures_util::future::join_all(stops)
            .await
            .into_iter()
            .zip(&saved)
            .filter(|(was_running, _)| *was_running)
            .map(|(_, c)| c.id.clone())
            .collect();
        let mut recovered = 0;
        for id in self.running_commands()? {
            if self.children().contains_key(&id) {
                continue; // ours: started by this server
            }
            let error = if stopped.contains(&id) {
                ORPHAN_STOPPED_ERROR
            } else {
                ORPHAN_ERROR
            };
            let patch = ProcessPatch {
                status: Some(Status::Failed),
                error: Some(Some(error.to_owned())),
                ..Default::default()
            };
            match self.store.update_process(&id, patch).await {
                Ok(_) => recovered += 1,
                // Ended or deleted meanwhile: not an orphan any more.
                Err(StoreError::BadTransition { .. } | StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for c in &saved {
            self.store.forget_child(&c.id).await?;
        }
        if recovered > 0 || !stopped.is_empty() {
            tracing::warn!(
                recovered,
                stopped = stopped.len(),
                "commands of a previous server: stopped what still ran, marked failed"
            );
        }
        Ok(recovered)
    }

    /// Stops an orphan's process group if it is still ours and alive;
    /// returns whether anything of it was running.
    async fn stop_orphan(&self, c: &ChildRecord) -> bool {
        let probe = c.clone();
        let ours = tokio::task::spawn_blocking(move || group_is_ours(&probe))
            .await
            .unwrap_or(false);
        if !ours {
            return false;
        }
        tracing::info!(id = %c.id, pid = c.pid, pgid = c.pgid, "a command of a previous server still runs; stopping it");
        signal::end_group(c.pgid, tokio::time::Instant::now() + self.grace, false).await
    }

    /// Ids of every `running` record with a `command`, all pages.
    fn running_commands(&self) -> Result<Vec<Id>, StoreError> {
        let mut ids = Vec::new();
        let mut query = ListQuery {
            status: Some(Status::Running.into()),
            limit: Some(MAX_LIMIT),
            ..Default::default()
        };
        loop {
            let page = self.store.list_processes(&query)?;
            ids.extend(page.items.into_iter().filter(|p| p.command.is_some()).map(|p| p.id));
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => return Ok(ids),
            }
        }
    }
}

/// Whether a live process of `c`'s group is still the command's (the
/// rules in the module doc). Blocking: reads /proc.
fn group_is_ours(c: &ChildRecord) -> bool {
    if c.boot_id.is_some() && signal::boot_id() != c.boot_id {
        return false;
    }
    match signal::proc_stat(c.pid) {
        // Our leader (perhaps a zombie no one reaps): its group is ours.
        Some(st) if st.start_time == c.start_time => signal::group_alive(c.pgid),
        Some(_) => false,
        // The group id is the leader's pid (as spawned), which Linux does
        // not hand out again while the group has members.
        None => c.pgid == c.pid && signal::group_alive(c.pgid),
    }
}
