//! Server-run commands (SPEC section 6): spawn, pipe stdout/stderr into the
//! store as chunks, record the exit, cancel with SIGTERM then SIGKILL.
//!
//! # How one command runs
//! [`Runner::start`] spawns the command in a process group of its own (so a
//! `sh -c` pipeline dies as a whole) and hands the child to a *supervisor*
//! task. The supervisor starts one *pump* per pipe, which decodes the bytes
//! with [`Utf8Decoder`] (no character is ever split across chunks) and
//! appends them to the store tagged `stdout`/`stderr`. When the child ends,
//! the supervisor waits for both pumps (bounded: a background grandchild may
//! keep a pipe open), then writes the final record. Output therefore always
//! lands before the terminal status, which would refuse it.
//!
//! Cancel and shutdown never touch the child directly: they record *why* it
//! must stop and wake the supervisor, which owns the child and does the
//! SIGTERM → grace → SIGKILL dance, so there is one place that reaps it.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, broadcast, watch};

use crate::model::{EventKind, Id, Process, ProcessPatch, Status, StreamKind};
use crate::store::{FileProcessStore, ListQuery, MAX_LIMIT, StoreError};
use crate::utf8::Utf8Decoder;

/// Time between SIGTERM and SIGKILL on cancel and shutdown.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// How long the supervisor waits for a pipe to reach EOF after the command
/// exited. A grandchild that escaped the process group can hold a pipe open
/// forever; its output after this is not recorded.
pub const PIPE_DRAIN: Duration = Duration::from_secs(2);
/// How often a stopped command's process group is checked for members
/// that outlived its leader, until the grace period ends.
const GROUP_POLL: Duration = Duration::from_millis(50);
/// Bytes read from a pipe at once (one chunk at most, usually less).
pub const READ_BLOCK: usize = 16 * 1024;
/// The `error` of a record whose command outlived its server.
pub const ORPHAN_ERROR: &str =
    "the server restarted while this command was running; its output can no longer be followed";
/// The `error` of a command stopped by a graceful server shutdown.
pub const SHUTDOWN_ERROR: &str = "the server shut down while this command was running";

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The runner is shutting down and starts nothing new.
    #[error("the server is shutting down; no new command can be started")]
    Unavailable,
    #[error("process {0:?} has no command to run")]
    NoCommand(String),
}

/// Why a command is being stopped before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// `POST /api/processes/:id/cancel`.
    Cancel,
    /// Graceful server shutdown.
    Shutdown,
    /// The record was deleted while the command ran: nothing to record.
    Deleted,
}

/// A running command as seen by everyone but its supervisor.
struct Tracked {
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
    fn new() -> Self {
        Tracked {
            stop: Mutex::new(None),
            stop_requested: Notify::new(),
            done: watch::channel(None).0,
        }
    }

    /// Asks the supervisor to stop the command; the first reason wins.
    fn request_stop(&self, reason: StopReason) {
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
    async fn finished(&self) -> Option<Process> {
        let mut rx = self.done.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().flatten(),
            // The supervisor is gone without recording (runtime shutdown).
            Err(_) => None,
        }
    }
}

/// Runs and tracks the commands of one server.
pub struct Runner {
    store: Arc<FileProcessStore>,
    grace: Duration,
    /// Commands running now, by process id. `start` inserts, the command's
    /// supervisor removes once the final record is written; `cancel`,
    /// `shutdown` and `recover_orphans` look entries up. std Mutex: held
    /// only to insert, remove or clone an entry, never across an `.await`.
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

    /// Number of commands running now.
    pub fn running(&self) -> usize {
        self.children().len()
    }

    /// Spawns `process.command` (already stored, status running) without
    /// waiting for it. A spawn failure ends the record `failed` with the
    /// error; it is not returned as an HTTP error.
    pub fn start(
        self: &Arc<Self>,
        process: &Process,
        cwd: Option<String>,
        env: BTreeMap<String, String>,
    ) -> Result<(), RunnerError> {
        let argv = match &process.command {
            Some(argv) if argv.first().is_some_and(|p| !p.is_empty()) => argv.clone(),
            _ => return Err(RunnerError::NoCommand(process.id.to_string())),
        };
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(RunnerError::Unavailable);
        }
        let id = process.id.clone();
        let spawned = spawn(&argv, cwd.as_deref(), &env);
        let runner = self.clone();
        match spawned {
            Ok(child) => {
                let tracked = Arc::new(Tracked::new());
                {
                    // Checked again under the lock `shutdown` takes to
                    // collect the children: a command is either collected
                    // (and terminated) by it, or refused here.
                    let mut children = self.children();
                    if self.shutting_down.load(Ordering::SeqCst) {
                        drop(children);
                        if let Some(pid) = child.id() {
                            signal_group(pid, libc::SIGKILL);
                        }
                        return Err(RunnerError::Unavailable);
                    }
                    children.insert(id.clone(), tracked.clone());
                }
                tracing::info!(id = %id, pid = child.id(), command = ?argv, "command started");
                tokio::spawn(async move { runner.supervise(id, child, tracked).await });
            }
            Err(message) => {
                tracing::info!(id = %id, command = ?argv, %message, "command could not start");
                tokio::spawn(async move {
                    let patch = ProcessPatch {
                        status: Some(Status::Failed),
                        error: Some(Some(message)),
                        ..Default::default()
                    };
                    if let Err(err) = runner.store.update_process(&id, patch).await {
                        tracing::warn!(%err, id = %id, "recording a failed start");
                    }
                });
            }
        }
        Ok(())
    }

    /// Owns the child from spawn to the final record.
    async fn supervise(self: Arc<Self>, id: Id, mut child: Child, tracked: Arc<Tracked>) {
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(
                self.store.clone(),
                id.clone(),
                out,
                StreamKind::Stdout,
                tracked.clone(),
            )));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(
                self.store.clone(),
                id.clone(),
                err,
                StreamKind::Stderr,
                tracked.clone(),
            )));
        }
        let exit = tokio::select! {
            status = child.wait() => status,
            _ = tracked.stop_requested.notified() => self.terminate(&id, &mut child).await,
            _ = removed(&self.store, &id) => {
                tracing::info!(id = %id, "record deleted while its command ran; stopping the command");
                tracked.request_stop(StopReason::Deleted);
                self.terminate(&id, &mut child).await
            }
        };
        for mut pump in pumps {
            if tokio::time::timeout(PIPE_DRAIN, &mut pump).await.is_err() {
                tracing::warn!(id = %id, "a pipe stayed open after the command exited; its further output is dropped");
                pump.abort();
            }
        }
        let reason = tracked.stop_reason();
        let record = match exit {
            Ok(status) => self.record_end(&id, status, reason).await,
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
        signal_group(pid, libc::SIGTERM);
        let status = match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::info!(id = %id, pid, "command ignored SIGTERM; sending SIGKILL");
                signal_group(pid, libc::SIGKILL);
                let _ = child.start_kill();
                child.wait().await
            }
        };
        // The leader is reaped; members of its group may live on (they
        // keep the group id, so it cannot be reused while they do).
        while group_alive(pid) {
            if tokio::time::Instant::now() >= deadline {
                tracing::info!(id = %id, pid, "processes of the command ignored SIGTERM; sending SIGKILL");
                signal_group(pid, libc::SIGKILL);
                break;
            }
            tokio::time::sleep(GROUP_POLL).await;
        }
        status
    }

    /// Writes the terminal record for a command that exited with `status`.
    async fn record_end(&self, id: &Id, status: ExitStatus, reason: Option<StopReason>) -> Option<Process> {
        let code = status.code();
        let patch = match reason {
            Some(StopReason::Deleted) => return None,
            Some(StopReason::Cancel) => ProcessPatch {
                status: Some(Status::Cancelled),
                exit_code: Some(code),
                ..Default::default()
            },
            Some(StopReason::Shutdown) => ProcessPatch {
                status: Some(Status::Cancelled),
                exit_code: Some(code),
                error: Some(Some(SHUTDOWN_ERROR.to_owned())),
                ..Default::default()
            },
            None => ProcessPatch {
                status: Some(if status.success() {
                    Status::Completed
                } else {
                    Status::Failed
                }),
                exit_code: Some(code),
                error: Some(describe_failure(status)),
                ..Default::default()
            },
        };
        tracing::info!(id = %id, ?code, signal = status.signal(), ?reason, "command ended");
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

    /// Cancels a process: a server-run command gets SIGTERM, then SIGKILL
    /// after the grace period, and its record ends `cancelled`; a process
    /// without a command is just marked `cancelled`. Returns the final record.
    pub async fn cancel(self: &Arc<Self>, id: &Id) -> Result<Process, crate::store::StoreError> {
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
        let tracked = self.children().get(id).cloned();
        match tracked {
            Some(t) => {
                t.request_stop(StopReason::Cancel);
                match t.finished().await {
                    Some(p) => Ok(p),
                    None => self.store.get_process(id),
                }
            }
            None => {
                self.store
                    .update_process(id, ProcessPatch::status(Status::Cancelled))
                    .await
            }
        }
    }

    /// At server start: records left `running` with a `command` by a previous
    /// server can no longer be followed: mark them failed, saying so.
    pub async fn recover_orphans(self: &Arc<Self>) -> Result<usize, crate::store::StoreError> {
        let mut orphans = Vec::new();
        let mut query = ListQuery {
            status: Some(Status::Running),
            limit: Some(MAX_LIMIT),
            ..Default::default()
        };
        loop {
            let page = self.store.list_processes(&query)?;
            orphans.extend(page.items.into_iter().filter(|p| p.command.is_some()).map(|p| p.id));
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        let mut recovered = 0;
        for id in orphans {
            if self.children().contains_key(&id) {
                continue; // ours: started by this server
            }
            let patch = ProcessPatch {
                status: Some(Status::Failed),
                error: Some(Some(ORPHAN_ERROR.to_owned())),
                ..Default::default()
            };
            match self.store.update_process(&id, patch).await {
                Ok(_) => recovered += 1,
                // Ended or deleted meanwhile: not an orphan any more.
                Err(StoreError::BadTransition { .. } | StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if recovered > 0 {
            tracing::warn!(recovered, "marked commands of a previous server as failed");
        }
        Ok(recovered)
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
        let bound = self.grace + PIPE_DRAIN + Duration::from_secs(5);
        if tokio::time::timeout(bound, all).await.is_err() {
            tracing::warn!("some commands were not recorded before shutdown");
        }
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
                if ev.event.kind == EventKind::ProcessRemoved && ev.event.process.as_ref().is_some_and(|p| p.id == *id)
                {
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

/// Sends `sig` to the process group led by `pid` (the command and every
/// child it spawned that stayed in the group).
fn signal_group(pid: u32, sig: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid
    // addresses the process group. The child is not reaped yet, so its pid
    // (and group id) cannot have been reused.
    let rc = unsafe { libc::kill(-pgid, sig) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        tracing::debug!(%err, pid, sig, "signalling the process group");
    }
}

/// Whether a process other than a zombie is in process group `pgid`.
/// Read from /proc, because `kill(-pgid, 0)` also counts zombies, which
/// linger where PID 1 does not reap (containers). Without /proc, falls
/// back to `kill`.
fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        let Ok(pgid) = libc::pid_t::try_from(pgid) else {
            return false;
        };
        // SAFETY: kill(2) with signal 0 only checks for existence.
        return unsafe { libc::kill(-pgid, 0) } == 0;
    };
    entries.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parens.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|g| g.parse::<u32>().ok());
        pgrp == Some(pgid) && !matches!(state, Some("Z" | "X"))
    })
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
        Some(sig) => Some(format!("killed by signal {sig} ({})", signal_name(sig))),
        None => Some("ended abnormally".to_owned()),
    }
}

/// The signal that killed a command, read back from the `error`
/// [`describe_failure`] wrote (the record has no field of its own for it;
/// `prochub run` exits with 128 + it, as a shell would).
pub fn killed_by_signal(error: &str) -> Option<i32> {
    let rest = error.strip_prefix("killed by signal ")?;
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok().filter(|s| (1..128).contains(s))
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => "unknown signal",
    }
}

/// Copies one pipe into the store as chunks of whole characters.
async fn pump(
    store: Arc<FileProcessStore>,
    id: Id,
    mut pipe: impl AsyncRead + Unpin,
    kind: StreamKind,
    tracked: Arc<Tracked>,
) {
    let mut buf = vec![0u8; READ_BLOCK];
    let mut decoder = Utf8Decoder::new();
    // Once the store refuses output (record ended or deleted), keep
    // draining the pipe so the command never blocks on a full pipe.
    let mut storing = true;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) => {
                tracing::warn!(%err, id = %id, ?kind, "reading the command's output");
                break;
            }
        };
        let text = decoder.push(&buf[..n]);
        if storing && !text.is_empty() {
            storing = append(&store, &id, text, kind, &tracked).await;
        }
    }
    let tail = decoder.finish();
    if storing && !tail.is_empty() {
        append(&store, &id, tail, kind, &tracked).await;
    }
}

/// Appends one chunk; false once the store will not take more.
async fn append(store: &Arc<FileProcessStore>, id: &Id, text: String, kind: StreamKind, tracked: &Tracked) -> bool {
    match store.append_output(id, text, Some(kind)).await {
        Ok(_) => true,
        Err(StoreError::NotFound { .. }) => {
            tracked.request_stop(StopReason::Deleted);
            false
        }
        Err(StoreError::NotRunning { .. }) => false,
        Err(err) => {
            tracing::warn!(%err, id = %id, "storing the command's output");
            false
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
            describe_failure(ExitStatus::from_raw(libc::SIGKILL)).as_deref(),
            Some("killed by signal 9 (SIGKILL)")
        );
    }

    #[test]
    fn the_signal_is_read_back_from_the_error() {
        let error = describe_failure(ExitStatus::from_raw(libc::SIGTERM)).unwrap();
        assert_eq!(killed_by_signal(&error), Some(libc::SIGTERM));
        assert_eq!(killed_by_signal("exited with code 3"), None);
        assert_eq!(killed_by_signal("killed by signal x"), None);
    }
}
