//! The supervisor of one command: it owns the child from spawn to the final
//! record. It waits for the child to exit or for a request to stop it
//! (cancel, shutdown, the record deleted), terminates the process group
//! when asked (SIGTERM, the grace period, SIGKILL), lets the pumps drain,
//! then writes the terminal record: how the command ended as fields
//! (`exit_code`, `exit_signal`) and, for people, an `error`.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::sync::{Notify, broadcast, watch};

use super::pump::Pumps;
use super::{Runner, SHUTDOWN_ERROR, signal};
use crate::model::{EventKind, Id, Process, ProcessPatch, Status};
use crate::store::{FileProcessStore, StoreError};

/// Why a command is being stopped before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopReason {
    /// `POST /api/processes/:id/cancel`, or a PATCH to `cancelled`.
    Cancel,
    /// Graceful server shutdown.
    Shutdown,
    /// The record was deleted while the command ran: nothing to record.
    Deleted,
}

/// A running command as seen by everyone but its supervisor.
pub(super) struct Tracked {
    /// Set once by the first stopper; read by the supervisor when it
    /// records the end. std Mutex, held for a read or a write.
    stop: Mutex<Option<StopReason>>,
    /// Wakes the supervisor when `stop` is set (`notify_one` keeps a
    /// permit, so a stop requested before the supervisor waits is not lost).
    stop_requested: Notify,
    /// The final record once the supervisor wrote it (None until then, and
    /// also None forever if writing it failed: waiters then re-read).
    done: watch::Sender<Option<Option<Process>>>,
}

impl Tracked {
    pub(super) fn new() -> Self {
        Tracked {
            stop: Mutex::new(None),
            stop_requested: Notify::new(),
            done: watch::channel(None).0,
        }
    }

    /// Asks the supervisor to stop the command; the first reason wins.
    pub(super) fn request_stop(&self, reason: StopReason) {
        let mut stop = crate::sync::lock(&self.stop);
        if stop.is_none() {
            *stop = Some(reason);
        }
        drop(stop);
        self.stop_requested.notify_one();
    }

    fn stop_reason(&self) -> Option<StopReason> {
        *crate::sync::lock(&self.stop)
    }

    /// Waits until the supervisor recorded the end; returns its record.
    pub(super) async fn finished(&self) -> Option<Process> {
        let mut rx = self.done.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().flatten(),
            // The supervisor is gone without recording (runtime shutdown).
            Err(_) => None,
        }
    }
}

impl Runner {
    /// Owns the child from spawn to the final record.
    pub(super) async fn supervise(self: Arc<Self>, id: Id, mut child: Child, tracked: Arc<Tracked>) {
        let pgid = child.id();
        let pumps = Pumps::start(&self.store, &id, &mut child, &tracked);
        let exit = self.wait_or_stop(&id, &mut child, &tracked).await;
        // Whatever the leader left in its group (`sh -c 'sleep 61 & echo'`)
        // is part of the command and must not outlive its record: it gets
        // the same SIGTERM → grace → SIGKILL, as CI runners do. This also
        // lets the pumps see EOF on pipes such a process held open.
        if let Some(pgid) = pgid
            && signal::end_group(pgid, tokio::time::Instant::now() + self.grace, false).await
        {
            tracing::info!(id = %id, pgid, "stopped processes the command left in its group");
        }
        pumps.finish(&id).await;
        // The group is gone: nothing is left for a later server to stop.
        // Removed before the end is recorded, so that the record's end is
        // the last thing that happens (a crash in between leaves a running
        // record without a file: the next start marks it failed).
        if let Err(err) = self.store.forget_child(&id).await {
            tracing::warn!(%err, id = %id, "removing the file of an ended command");
        }
        let record = match exit {
            Ok(status) => self.record_end(&id, status, tracked.stop_reason()).await,
            Err(err) => {
                tracing::warn!(%err, id = %id, "waiting for the command failed");
                let patch = ProcessPatch {
                    status: Some(Status::Failed),
                    error: Some(Some(format!("lost track of the command: {err}"))),
                    ..Default::default()
                };
                self.finish_record(&id, patch).await
            }
        };
        self.children().remove(&id);
        tracked.done.send_replace(Some(record));
    }

    /// The child's exit status: when it ends by itself, or once terminated
    /// because someone asked it to stop or its record was deleted.
    async fn wait_or_stop(&self, id: &Id, child: &mut Child, tracked: &Tracked) -> std::io::Result<ExitStatus> {
        tokio::select! {
            status = child.wait() => status,
            _ = tracked.stop_requested.notified() => self.terminate(id, child).await,
            _ = removed(&self.store, id) => {
                tracing::info!(id = %id, "record deleted while its command ran; stopping the command");
                tracked.request_stop(StopReason::Deleted);
                self.terminate(id, child).await
            }
        }
    }

    /// SIGTERM to the command's process group, SIGKILL after the grace
    /// period; returns the exit status once reaped. The group gets the
    /// SIGKILL too when its leader obeyed SIGTERM but a member did not:
    /// a stop means every process of the command.
    async fn terminate(&self, id: &Id, child: &mut Child) -> std::io::Result<ExitStatus> {
        let Some(pid) = child.id() else {
            // Already reaped: nothing left to signal.
            return child.wait().await;
        };
        let deadline = tokio::time::Instant::now() + self.grace;
        signal::signal_group(pid, Signal::SIGTERM);
        let status = match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::info!(id = %id, pid, "command ignored SIGTERM; sending SIGKILL");
                signal::signal_group(pid, Signal::SIGKILL);
                let _ = child.start_kill();
                child.wait().await
            }
        };
        // The leader is reaped; members of its group may live on (they
        // keep the group id, so it cannot be reused while they do).
        signal::end_group(pid, deadline, true).await;
        status
    }

    /// Writes the terminal record for a command that exited with `status`.
    async fn record_end(&self, id: &Id, status: ExitStatus, reason: Option<StopReason>) -> Option<Process> {
        let ended = exit_fields(status);
        let patch = match reason {
            Some(StopReason::Deleted) => return None,
            Some(StopReason::Cancel) => ProcessPatch {
                status: Some(Status::Cancelled),
                ..ended
            },
            Some(StopReason::Shutdown) => ProcessPatch {
                status: Some(Status::Cancelled),
                error: Some(Some(SHUTDOWN_ERROR.to_owned())),
                ..ended
            },
            None => ProcessPatch {
                status: Some(if status.success() {
                    Status::Completed
                } else {
                    Status::Failed
                }),
                error: Some(describe_failure(status)),
                ..ended
            },
        };
        let (code, signal) = (status.code(), patch.exit_signal.as_deref());
        tracing::info!(id = %id, ?code, ?signal, ?reason, "command ended");
        self.finish_record(id, patch).await
    }

    async fn finish_record(&self, id: &Id, patch: ProcessPatch) -> Option<Process> {
        match self.store.update_process(id, patch.clone()).await {
            Ok(p) => Some(p),
            Err(StoreError::BadTransition { .. }) => {
                // Someone already ended the record (a PATCH): keep their
                // status, still record how the command exited.
                let patch = ProcessPatch {
                    exit_code: patch.exit_code,
                    exit_signal: patch.exit_signal,
                    ..Default::default()
                };
                self.store.update_process(id, patch).await.ok()
            }
            Err(StoreError::NotFound { .. }) => None,
            Err(err) => {
                tracing::warn!(%err, id = %id, "recording the end of a command");
                None
            }
        }
    }
}

/// How a command ended, as the record's fields: `exit_code` when it exited
/// by itself, `exit_signal` when a signal killed it. A signal without a
/// name (a real-time one) leaves `exit_signal` unset; `error` still gives
/// its number.
fn exit_fields(status: ExitStatus) -> ProcessPatch {
    ProcessPatch {
        exit_code: Some(status.code()),
        exit_signal: status.signal().and_then(signal::name).map(str::to_owned),
        ..Default::default()
    }
}

/// The `error` of an ended command: None on success.
fn describe_failure(status: ExitStatus) -> Option<String> {
    if status.success() {
        return None;
    }
    if let Some(code) = status.code() {
        return Some(format!("exited with code {code}"));
    }
    match status.signal() {
        Some(sig) => Some(format!(
            "killed by signal {sig} ({})",
            signal::name(sig).unwrap_or("unknown signal")
        )),
        None => Some("ended abnormally".to_owned()),
    }
}

/// Resolves once the record `id` is deleted (a silent command would
/// otherwise never notice: its pumps only find out at the next write).
async fn removed(store: &Arc<FileProcessStore>, id: &Id) {
    let gone = || matches!(store.get_process(id), Err(StoreError::NotFound { .. }));
    let mut rx = store.events().subscribe();
    if gone() {
        return;
    }
    loop {
        match rx.recv().await {
            Ok(ev) => {
                if ev.kind == EventKind::ProcessRemoved && ev.process.as_ref() == Some(id) {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if gone() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_say_how_the_command_ended() {
        assert_eq!(describe_failure(ExitStatus::from_raw(0)), None);
        assert_eq!(
            describe_failure(ExitStatus::from_raw(3 << 8)).as_deref(),
            Some("exited with code 3")
        );
        assert_eq!(
            describe_failure(ExitStatus::from_raw(Signal::SIGKILL as i32)).as_deref(),
            Some("killed by signal 9 (SIGKILL)")
        );
    }

    #[test]
    fn the_signal_is_a_field_of_its_own() {
        let killed = exit_fields(ExitStatus::from_raw(Signal::SIGTERM as i32));
        assert_eq!(
            (killed.exit_code, killed.exit_signal.as_deref()),
            (Some(None), Some("SIGTERM"))
        );
        let exited = exit_fields(ExitStatus::from_raw(3 << 8));
        assert_eq!((exited.exit_code, exited.exit_signal), (Some(Some(3)), None));
    }
}
