//! Server-run commands (SPEC section 6): spawn, pipe stdout/stderr into the
//! store as chunks, record the exit, cancel with SIGTERM then SIGKILL.
//!
//! # How one command runs
//! [`Runner::start`] spawns the command in a process group of its own (so a
//! `sh -c` pipeline dies as a whole) and hands the child to a *supervisor*
//! task. The supervisor starts one *pump* per pipe, which decodes the bytes
//! with [`Utf8Decoder`](crate::utf8::Utf8Decoder) (no character is ever
//! split across chunks) and appends them to the store tagged
//! `stdout`/`stderr`. When the child ends, the supervisor waits for both
//! pumps (bounded: a background grandchild may keep a pipe open), then
//! writes the final record: `exit_code`, or `exit_signal` when a signal
//! killed the command, and an `error` for people. Output therefore always
//! lands before the terminal status, which would refuse it.
//!
//! When the command's leader exits, whatever it left in its process group
//! is stopped too (SIGTERM, grace, SIGKILL) before the end is recorded: a
//! command is its whole group. While it runs, `DIR/children/<id>.json`
//! says which OS process it is (pid, group, start time), so that after a
//! crash of the server the next one can stop it (`orphans.rs`).
//!
//! Cancel, a PATCH to `cancelled` and shutdown never touch the child
//! directly: they record *why* it must stop and wake the supervisor, which
//! owns the child and does the SIGTERM → grace → SIGKILL dance, so there is
//! one place that reaps it and one place that writes its end.
//!
//! # Files
//! * `mod.rs`: the [`Runner`]: start (and recording a start that failed),
//!   cancel, PATCH to `cancelled`, shutdown.
//! * `orphans.rs`: at start, the commands of a server that crashed:
//!   stopped if they still run, recorded failed.
//! * `supervise.rs`: one command's supervisor: waiting, terminating,
//!   recording the end.
//! * `pump.rs`: a pipe into the store as chunks of whole characters.
//! * `signal.rs`: signals to a process group, and signal names (`nix`).

mod orphans;
mod pump;
mod signal;
mod supervise;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};

use crate::model::{Id, Process, ProcessPatch, Status};
use crate::store::{ChildRecord, FileProcessStore, StoreError};

pub use orphans::{ORPHAN_ERROR, ORPHAN_STOPPED_ERROR};
pub use pump::READ_BLOCK;
use supervise::{StopReason, Tracked};

/// Time between SIGTERM and SIGKILL on cancel and shutdown.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// How long the supervisor waits for a pipe to reach EOF after the command
/// exited. A grandchild that escaped the process group can hold a pipe open
/// forever; its output after this is not recorded.
pub const PIPE_DRAIN: Duration = Duration::from_secs(2);
/// What shutdown allows, past the grace period and the pipe drain, for the
/// final records to be written before it gives up on them.
const RECORD_SLACK: Duration = Duration::from_secs(5);
/// The `error` of a command stopped by a graceful server shutdown.
pub const SHUTDOWN_ERROR: &str = "the server shut down while this command was running";

/// Why the runner refused a command. Either way the record already says
/// so: it ended `failed` with this as its `error`.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The runner is shutting down and starts nothing new.
    #[error("the server is shutting down; no new command can be started")]
    Unavailable,
    #[error("process {0:?} has no command to run")]
    NoCommand(String),
}

/// What became of a command the runner accepted.
enum Started {
    /// Spawned; its supervisor owns it now.
    Running,
    /// It could not be spawned, for this reason (for the record's `error`).
    NotSpawned(String),
}

/// Runs and tracks the commands of one server.
pub struct Runner {
    store: Arc<FileProcessStore>,
    grace: Duration,
    /// Commands running now, by process id. `start` inserts, the command's
    /// supervisor removes once the final record is written; `cancel`,
    /// `update_process`, `shutdown` and `recover_orphans` look entries up.
    /// std Mutex: held only to insert, remove or clone an entry, never
    /// across an `.await`.
    children: Mutex<HashMap<Id, Arc<Tracked>>>,
    /// Set by `shutdown`: `start` refuses new commands from then on.
    shutting_down: AtomicBool,
}

impl Runner {
    pub fn new(store: Arc<FileProcessStore>, grace: Duration) -> Arc<Self> {
        Arc::new(Runner {
            store,
            grace,
            children: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
        })
    }

    fn children(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Arc<Tracked>>> {
        crate::sync::lock(&self.children)
    }

    fn tracked(&self, id: &Id) -> Option<Arc<Tracked>> {
        self.children().get(id).cloned()
    }

    /// Number of commands running now.
    pub fn running(&self) -> usize {
        self.children().len()
    }

    /// Spawns `process.command` (already stored, status running) without
    /// waiting for it to end. Every way it can fail to start is recorded
    /// here, once: the record ends `failed` with the reason in `error`.
    ///
    /// `Ok` once the command runs, and also when it could not be spawned (a
    /// missing program is that command's failure, like a non-zero exit).
    /// `Err` when the runner refused it (no command, shutting down): the
    /// caller's copy of the record is then out of date.
    pub async fn start(
        self: &Arc<Self>,
        process: &Process,
        cwd: Option<String>,
        env: BTreeMap<String, String>,
    ) -> Result<(), RunnerError> {
        let id = &process.id;
        match self.try_start(process, cwd.as_deref(), &env).await {
            Ok(Started::Running) => Ok(()),
            Ok(Started::NotSpawned(message)) => {
                tracing::info!(id = %id, command = ?process.command, %message, "command could not start");
                self.record_failed_start(id, message).await;
                Ok(())
            }
            Err(refused) => {
                tracing::warn!(err = %refused, id = %id, "command refused");
                self.record_failed_start(id, refused.to_string()).await;
                Err(refused)
            }
        }
    }

    /// Spawns the command, records what identifies its OS process
    /// (`DIR/children/<id>.json`, durably, so a server that crashes from
    /// now on leaves the next one able to stop it), and hands it to its
    /// supervisor.
    async fn try_start(
        self: &Arc<Self>,
        process: &Process,
        cwd: Option<&str>,
        env: &BTreeMap<String, String>,
    ) -> Result<Started, RunnerError> {
        let argv = match &process.command {
            Some(argv) if argv.first().is_some_and(|p| !p.is_empty()) => argv,
            _ => return Err(RunnerError::NoCommand(process.id.to_string())),
        };
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(RunnerError::Unavailable);
        }
        let child = match spawn(argv, cwd, env) {
            Ok(child) => child,
            Err(message) => return Ok(Started::NotSpawned(message)),
        };
        let id = process.id.clone();
        let tracked = self.track(&id, &child).ok_or(RunnerError::Unavailable)?;
        tracing::info!(id = %id, pid = child.id(), command = ?argv, "command started");
        // Saved and supervised in a task of its own, not in the request's
        // future: a client that hangs up mid-create drops that future, and
        // with it a child nobody would supervise (review finding). The
        // create is still answered only once the child's file is durable.
        let runner = self.clone();
        let (saved, is_saved) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            if let Some(pid) = child.id() {
                runner.save_child(&id, pid).await;
            }
            drop(saved);
            runner.supervise(id, child, tracked).await
        });
        let _ = is_saved.await;
        Ok(Started::Running)
    }

    /// Registers a spawned command, unless shutdown began meanwhile: then
    /// its group is killed and None returned. Checked again under the lock
    /// `shutdown` takes to collect the children, so a command is either
    /// collected (and terminated) by it, or refused here.
    fn track(&self, id: &Id, child: &Child) -> Option<Arc<Tracked>> {
        let mut children = self.children();
        if self.shutting_down.load(Ordering::SeqCst) {
            drop(children);
            if let Some(pid) = child.id() {
                signal::signal_group(pid, Signal::SIGKILL);
            }
            return None;
        }
        let tracked = Arc::new(Tracked::new());
        children.insert(id.clone(), tracked.clone());
        Some(tracked)
    }

    /// Writes `children/<id>.json` for a command just spawned. A failure is
    /// logged, not fatal: the command runs, only a crash of this server
    /// would then leave it running.
    async fn save_child(&self, id: &Id, pid: u32) {
        let record = tokio::task::spawn_blocking(move || signal::proc_stat(pid).map(|st| (st, signal::boot_id())))
            .await
            .ok()
            .flatten();
        let Some((stat, boot_id)) = record else {
            // Already gone (and not reaped: it is a zombie with a stat).
            return;
        };
        let child = ChildRecord {
            id: id.clone(),
            pid,
            pgid: stat.pgrp,
            start_time: stat.start_time,
            boot_id,
        };
        if let Err(err) = self.store.save_child(&child).await {
            tracing::warn!(%err, id = %id, "could not record the command's process; a crash would leave it running");
        }
    }

    async fn record_failed_start(&self, id: &Id, message: String) {
        let patch = ProcessPatch {
            status: Some(Status::Failed),
            error: Some(Some(message)),
            ..Default::default()
        };
        if let Err(err) = self.store.update_process(id, patch).await {
            tracing::warn!(%err, id = %id, "recording a failed start");
        }
    }

    /// Applies a merge patch (`PATCH /api/processes/:id`). A patch that
    /// moves a running server-run command to `cancelled` stops the command
    /// as [`Runner::cancel`] does and returns the record its supervisor
    /// wrote. Regression: it only marked the record, and the command ran
    /// on with its output going nowhere.
    ///
    /// The patch's other fields are written first, in a write of their
    /// own, before anything is stopped: the store validates them there, so
    /// a bad patch is refused and stops nothing, and the terminal status
    /// still comes after the command's last output. A patch of `status`
    /// alone makes one write, the supervisor's.
    pub async fn update_process(self: &Arc<Self>, id: &Id, patch: ProcessPatch) -> Result<Process, StoreError> {
        let Some(tracked) = self.stopped_by(id, &patch)? else {
            return self.store.update_process(id, patch).await;
        };
        let rest = ProcessPatch { status: None, ..patch };
        if rest != ProcessPatch::default() {
            self.store.update_process(id, rest).await?;
        }
        self.stop(id, &tracked).await
    }

    /// The command `patch` stops: one this server runs, whose record is
    /// still `running`, and the patch moves it to `cancelled`.
    fn stopped_by(&self, id: &Id, patch: &ProcessPatch) -> Result<Option<Arc<Tracked>>, StoreError> {
        if patch.status != Some(Status::Cancelled) || self.store.get_process(id)?.status != Status::Running {
            return Ok(None);
        }
        Ok(self.tracked(id))
    }

    /// Cancels a process: a server-run command gets SIGTERM, then SIGKILL
    /// after the grace period, and its record ends `cancelled`; a process
    /// without a command is just marked `cancelled`. Returns the final record.
    pub async fn cancel(self: &Arc<Self>, id: &Id) -> Result<Process, StoreError> {
        // The store lets a status "move" to itself; a second cancel of a
        // cancelled process must still be a conflict (409).
        let current = self.store.get_process(id)?;
        if current.status.is_terminal() {
            return Err(StoreError::BadTransition {
                id: id.to_string(),
                from: current.status,
                to: Status::Cancelled,
            });
        }
        match self.tracked(id) {
            Some(tracked) => self.stop(id, &tracked).await,
            None => {
                self.store
                    .update_process(id, ProcessPatch::status(Status::Cancelled))
                    .await
            }
        }
    }

    /// Asks a command's supervisor to stop it; waits for the final record.
    async fn stop(&self, id: &Id, tracked: &Tracked) -> Result<Process, StoreError> {
        tracked.request_stop(StopReason::Cancel);
        match tracked.finished().await {
            Some(p) => Ok(p),
            None => self.store.get_process(id),
        }
    }

    /// Graceful shutdown: terminate every running command and record it.
    /// Bounded by the grace period plus the pipe drain.
    pub async fn shutdown(self: &Arc<Self>) {
        let tracked: Vec<Arc<Tracked>> = {
            let children = self.children();
            self.shutting_down.store(true, Ordering::SeqCst);
            children.values().cloned().collect()
        };
        if tracked.is_empty() {
            return;
        }
        tracing::info!(commands = tracked.len(), "terminating running commands");
        for t in &tracked {
            t.request_stop(StopReason::Shutdown);
        }
        let all = futures_util::future::join_all(tracked.iter().map(|t| t.finished()));
        let bound = self.grace + PIPE_DRAIN + RECORD_SLACK;
        if tokio::time::timeout(bound, all).await.is_err() {
            tracing::warn!("some commands were not recorded before shutdown");
        }
    }
}

/// Builds and spawns the command; on failure, a message for the record.
fn spawn(argv: &[String], cwd: Option<&str>, env: &BTreeMap<String, String>) -> Result<Child, String> {
    let program = &argv[0];
    if let Some(dir) = cwd
        && !Path::new(dir).is_dir()
    {
        return Err(format!(
            "cannot start {program:?}: working directory {dir:?} does not exist or is not a folder"
        ));
    }
    let mut cmd = Command::new(program);
    // The server's own token is not the command's business (a client that
    // wants it there can pass it in `env`).
    cmd.env_remove("PROCHUB_TOKEN");
    cmd.args(&argv[1..])
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so cancel reaches `sh -c` children too.
        .process_group(0);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("cannot start {program:?}: command not found"),
        std::io::ErrorKind::PermissionDenied => format!("cannot start {program:?}: permission denied"),
        _ => format!("cannot start {program:?}: {e}"),
    })
}
