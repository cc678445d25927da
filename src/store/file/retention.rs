//! Retention: prune finished processes (and their output) by age and count,
//! on demand and on an interval. Queued and running processes are never
//! touched.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::FileProcessStore;
use super::error::{Result, StoreError};
use crate::model::Process;

/// A retention policy; `None` fields do not limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Finished processes that ended longer ago than this are removed.
    pub max_age: Option<Duration>,
    /// At most this many finished processes are kept (the newest).
    pub max_count: Option<usize>,
}

impl Retention {
    pub fn is_unlimited(&self) -> bool {
        self.max_age.is_none() && self.max_count.is_none()
    }
}

/// When a finished process ended (older records may lack `ended_at`).
fn ended(p: &Process) -> crate::model::Timestamp {
    p.ended_at.unwrap_or(p.updated_at)
}

impl FileProcessStore {
    /// Removes finished processes outside `policy`, oldest first; returns
    /// how many were removed.
    pub async fn prune(self: &Arc<Self>, policy: Retention) -> Result<usize> {
        let now = self.now();
        // Newest first by creation; retention orders by end time.
        let mut done = self.processes_where(|p| p.status.is_terminal());
        done.sort_by(|a, b| ended(b).cmp(&ended(a)).then_with(|| b.id.cmp(&a.id)));
        let mut victims = Vec::new();
        for (rank, p) in done.iter().enumerate() {
            let too_many = policy.max_count.is_some_and(|n| rank >= n);
            let too_old = policy.max_age.is_some_and(|age| {
                let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
                now.signed_duration_since(ended(p)) > age
            });
            if too_many || too_old {
                victims.push(p.id.clone());
            }
        }
        // Oldest first, so an interrupted prune removed the oldest.
        victims.reverse();
        let mut removed = 0;
        for id in victims {
            match self.delete_process(&id).await {
                Ok(()) => removed += 1,
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if removed > 0 {
            tracing::info!(removed, "pruned finished processes");
        }
        Ok(removed)
    }

    /// Prunes every `every` until `cancel` fires.
    pub fn spawn_retention(
        self: &Arc<Self>,
        policy: Retention,
        every: Duration,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = store.prune(policy).await {
                            tracing::warn!(%e, "periodic prune failed");
                        }
                    }
                }
            }
        })
    }
}
