//! Process records: create, read, list, merge-update, delete, and their
//! output (append, read, follow).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::checks;
use super::error::{Result, StoreError};
use super::follow::Follow;
use super::fsio;
use super::index::{Entry, ListQuery, Page};
use super::{FileProcessStore, settle};
use crate::model::{
    EventKind, Id, NewProcess, OutputRange, Process, ProcessPatch, Status, StreamKind, Timestamp, format_duration,
};

/// Appends up to this size are written on the calling task, without
/// `blocking_short`: such a write is one copy into the page cache (no
/// fsync), while `block_in_place` first hands the worker's queued tasks
/// (under fan-out: every follower the last chunk woke) to another thread.
/// Measured with `cargo bench --bench server`, fan-out scenario (1 process,
/// 1,000 followers, 1,000 chunks/s from one appender), 3 runs each on the
/// same machine: `block_in_place` 0.42x of the bare baseline, inline 0.94x.
/// Larger appends still go through `blocking_short`.
pub const INLINE_APPEND_MAX: usize = 64 * 1024;

/// Output files that an earlier process of an id left behind (its delete
/// could not raise the SEQ floor or remove them, at run time or at open),
/// with the largest SEQ they hold. A create of that id removes them before
/// the new process can write (regression, review M1: a restart attached
/// the old tail segments to the new process). std Mutex, a leaf: held only
/// to insert or take an entry, never across I/O. Empty in the common case,
/// so a create pays one lookup.
#[derive(Default)]
pub(crate) struct Leftovers(Mutex<HashMap<String, Leftover>>);

/// One id's leftover output files.
#[derive(Debug, Default)]
pub(crate) struct Leftover {
    pub paths: Vec<PathBuf>,
    /// The largest SEQ in them (0: unknown or none).
    pub last_seq: u64,
}

impl Leftovers {
    /// Records that `paths` (of `id`) stay on disk.
    pub fn add(&self, id: &str, paths: impl IntoIterator<Item = PathBuf>, last_seq: u64) {
        let mut map = crate::sync::lock(&self.0);
        let left = map.entry(id.to_owned()).or_default();
        left.paths.extend(paths);
        left.last_seq = left.last_seq.max(last_seq);
    }

    fn take(&self, id: &str) -> Option<Leftover> {
        crate::sync::lock(&self.0).remove(id)
    }
}

/// Removes an earlier process's leftover output files, raising the SEQ
/// floor past their SEQs first (as a delete does). Blocking.
fn remove_leftover(seqs: &super::log::Seqs, left: &Leftover) -> Result<()> {
    seqs.keep_above(left.last_seq)?;
    for path in &left.paths {
        match std::fs::remove_file(path) {
            Ok(()) => tracing::info!(file = %path.display(), "removed output an earlier process of this id left"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("remove leftover output", path)(e)),
        }
    }
    Ok(())
}

/// Result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Every byte appended so far, stored or elided (the record's
    /// `output_bytes`).
    pub output_bytes: u64,
    /// Offset of the output after this append, as followers see it: the
    /// same as `output_bytes` since the head + tail retention (kept so
    /// callers need not change).
    pub offset: u64,
}

/// Sets `started_at`, `ended_at` and `duration` for a record entering
/// `status` at `now`.
fn stamp_transition(p: &mut Process, status: Status, now: Timestamp) {
    if status == Status::Running && p.started_at.is_none() {
        p.started_at = Some(now);
    }
    if status.is_terminal() && p.ended_at.is_none() {
        p.ended_at = Some(now);
        p.duration = p.duration_ms().map(format_duration);
    }
    p.status = status;
}

impl FileProcessStore {
    /// Creates a process record; returns it once it is durable. An existing
    /// id is [`StoreError::ProcessExists`] carrying the stored record.
    pub async fn create_process(self: &Arc<Self>, new: NewProcess) -> Result<Process> {
        self.detached(move |s| async move { s.create_process_inner(new).await })
            .await
    }

    async fn create_process_inner(self: Arc<Self>, new: NewProcess) -> Result<Process> {
        let (id, workspace) = check_new(&new)?;
        let _ws = self.ws_guard.read().await;
        if !self.workspace_exists(&workspace) {
            return Err(StoreError::UnknownWorkspace(workspace.into_string()));
        }
        let _creating = self.reserve_id(&id).await?;
        self.remove_leftovers(&id).await?;
        let p = new_record(id, workspace, new, self.now());
        let written = self.write_record(&p).await;
        settle(written, || {
            let entry = Entry::new(p.clone(), &self.env, Default::default());
            self.write_index().insert(&p, entry);
            self.events.process(EventKind::ProcessAdded, &p);
        })?;
        Ok(p)
    }

    /// Removes what an earlier process of `id` left in the output folder
    /// (called with the id reserved, so nothing else writes it). If they
    /// cannot be removed the create fails with why (the disk is full or
    /// read-only: the record's write would fail too), and they stay listed.
    async fn remove_leftovers(self: &Arc<Self>, id: &str) -> Result<()> {
        let Some(left) = self.leftovers.take(id) else {
            return Ok(());
        };
        let store = self.clone();
        let id = id.to_owned();
        Self::blocking(move || {
            let removed = remove_leftover(&store.env.seqs, &left);
            if removed.is_err() {
                store.leftovers.add(&id, left.paths, left.last_seq);
            }
            removed
        })
        .await
    }

    fn entry(&self, id: &str) -> Result<Arc<Entry>> {
        self.read_index().by_id.get(id).cloned().ok_or_else(|| not_found(id))
    }

    /// Takes `entry`'s write lock, for a writer of an existing record, and
    /// checks that it is still the indexed record of `id`: it may have been
    /// deleted while the writer waited.
    async fn lock_current<'e>(&self, id: &str, entry: &'e Arc<Entry>) -> Result<tokio::sync::MutexGuard<'e, ()>> {
        let write = entry.write.lock().await;
        match self.read_index().by_id.get(id) {
            Some(e) if Arc::ptr_eq(e, entry) => Ok(write),
            _ => Err(not_found(id)),
        }
    }

    pub fn get_process(&self, id: &Id) -> Result<Process> {
        Ok(self.entry(id)?.record())
    }

    /// A page of processes, newest first.
    pub fn list_processes(&self, q: &ListQuery) -> Result<Page> {
        if let Some(w) = &q.workspace {
            StoreError::parse_id("workspace", w)?;
        }
        self.read_index().list(q)
    }

    /// Every process of a workspace (for cascade deletes and retention).
    pub(crate) fn processes_where(&self, keep: impl Fn(&Process) -> bool) -> Vec<Process> {
        self.read_index()
            .newest_first()
            .map(|e| e.record())
            .filter(|p| keep(p))
            .collect()
    }

    /// Applies a merge patch; returns the updated record once durable. A
    /// terminal status ends the process's emitter (followers get `status`).
    pub async fn update_process(self: &Arc<Self>, id: &Id, patch: ProcessPatch) -> Result<Process> {
        let id = id.clone();
        self.detached(move |s| async move { s.update_process_inner(&id, patch).await })
            .await
    }

    async fn update_process_inner(self: Arc<Self>, id: &str, patch: ProcessPatch) -> Result<Process> {
        if let Some(name) = &patch.name {
            checks::name(name)?;
        }
        let entry = self.entry(id)?;
        let _write = self.lock_current(id, &entry).await?;
        let current = entry.record();
        let next = self.patched(&current, &patch)?;
        let finishing = next.status.is_terminal() && !current.status.is_terminal();
        if finishing {
            return self.write_terminal(&entry, current.status, next).await;
        }
        let starting = current.status == Status::Queued && next.status == Status::Running;
        let written = self.write_record(&next).await;
        settle(written, || {
            entry.set_record(next);
            if starting {
                entry.log.reopen_for_appends();
            }
            self.updated(&entry)
        })
    }

    /// `current` with `patch` applied, its status move checked and stamped.
    fn patched(&self, current: &Process, patch: &ProcessPatch) -> Result<Process> {
        let mut next = current.clone();
        patch.apply(&mut next).map_err(checks::patch_error)?;
        if patch.metadata.is_some() {
            checks::metadata(&next.metadata)?;
        }
        let to = patch.status.unwrap_or(current.status);
        if !current.status.can_move_to(to) {
            return Err(StoreError::BadTransition {
                id: current.id.to_string(),
                from: current.status,
                to,
            });
        }
        let now = self.now();
        stamp_transition(&mut next, to, now);
        next.updated_at = now;
        Ok(next)
    }

    /// Writes the record of a process entering a terminal status, and only
    /// then ends its emitter. Appends stop first, so the record's
    /// `output_bytes` is final, and the log is fsynced before the record
    /// says the process is done; if either write fails the process takes
    /// output again as before.
    async fn write_terminal(self: &Arc<Self>, entry: &Arc<Entry>, was: Status, mut next: Process) -> Result<Process> {
        (next.output_bytes, next.output_elided) = entry.log.close_for_appends(next.status);
        next.output_truncated |= next.output_elided > 0;
        let (log, store) = (entry.log.clone(), self.clone());
        let written = match Self::blocking(move || log.sync(&store.log_handles)).await {
            Ok(()) => self.write_record(&next).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &written
            && !matches!(e, StoreError::NotDurable { .. })
        {
            entry.log.restore_status(was);
        }
        settle(written, || {
            let info = next.status_info();
            entry.set_record(next);
            entry.log.finish(&self.log_handles, info);
            self.updated(entry)
        })
    }

    /// The record as now stored, announced as updated.
    fn updated(&self, entry: &Entry) -> Process {
        let p = entry.record();
        self.events.process(EventKind::ProcessUpdated, &p);
        p
    }

    async fn write_record(self: &Arc<Self>, p: &Process) -> Result<()> {
        let path = self.process_path(&p.id);
        let record = p.clone();
        let store = self.clone();
        Self::blocking(move || fsio::write_json_atomic(&path, &record, &store.proc_sync)).await
    }

    /// Deletes a process and its output. Followers of a running process get
    /// `status` (cancelled) and the end of their stream.
    pub async fn delete_process(self: &Arc<Self>, id: &Id) -> Result<()> {
        let id = id.clone();
        self.detached(move |s| async move { s.delete_process_inner(&id).await })
            .await
    }

    /// The record's unlink is the one step that decides: before it nothing
    /// has changed (the process keeps its status, and a running one its
    /// appends), after it the process is gone from memory too, even if the
    /// folder fsync that followed failed. The log goes after the record (a
    /// log without a record is removed at the next open, a record without
    /// its log would be a process whose output vanished); `finish` closes
    /// the log's cached handle, so a deleted log's space is freed at once.
    /// Between the two, the SEQ floor is raised past this process's SEQs
    /// (if they are the newest), so a restart never hands them out again.
    pub(crate) async fn delete_process_inner(self: Arc<Self>, id: &str) -> Result<()> {
        let entry = self.entry(id)?;
        let _write = self.lock_current(id, &entry).await?;
        let mut p = entry.record();
        entry.log.close_for_appends(Status::Cancelled);
        let path = self.process_path(id);
        let (segments, last_seq) = entry.log.segments_for_removal();
        let store = self.clone();
        let owned_id = id.to_owned();
        let removed = Self::blocking(move || {
            let removed = fsio::remove_durable(&path, &store.proc_sync);
            if matches!(removed, Ok(()) | Err(StoreError::NotDurable { .. })) {
                match store.env.seqs.keep_above(last_seq) {
                    Ok(()) => segments.iter().for_each(super::log::remove_segment),
                    // The segments stay: their SEQs keep counting at the
                    // next open, which raises the floor before removing
                    // them as orphans.
                    Err(e) => tracing::warn!(%e, "cannot raise the SEQ floor; the deleted process's output is removed at the next open"),
                }
                // Whatever stayed is removed by a create of this id (or
                // the next open), never attached to a new process.
                let stayed = segments
                    .iter()
                    .flat_map(|s| [s.log.clone(), s.idx.clone()])
                    .filter(|p| p.exists());
                let stayed: Vec<_> = stayed.collect();
                if !stayed.is_empty() {
                    store.leftovers.add(&owned_id, stayed, last_seq);
                }
            }
            removed
        })
        .await;
        if let Err(e) = &removed
            && !matches!(e, StoreError::NotDurable { .. })
        {
            // Regression: a failed delete left a running process refusing
            // output. The unlink failed: the record is still indexed, so
            // the process keeps its status (and a running one keeps taking
            // output).
            entry.log.restore_status(p.status);
        }
        settle(removed, || {
            self.write_index().remove(&p);
            if !p.status.is_terminal() {
                let now = self.now();
                stamp_transition(&mut p, Status::Cancelled, now);
            }
            entry.log.finish(&self.log_handles, p.status_info());
            self.events.process(EventKind::ProcessRemoved, &p);
        })
    }

    /// Appends output to a running process (409 otherwise). Past the
    /// per-process cap the head and the most recent tail are kept (see
    /// `log::Retain`); every byte counts in `output_bytes`.
    pub async fn append_output(
        self: &Arc<Self>,
        id: &Id,
        content: String,
        stream: Option<StreamKind>,
    ) -> Result<AppendResult> {
        self.append_output_at(id, content, stream, None).await
    }

    /// [`FileProcessStore::append_output`] with a precondition: with
    /// `at = Some(n)` the content is appended only if the output ends at
    /// byte `n` now, else [`StoreError::OffsetMismatch`] (a producer that
    /// retries after a lost answer neither loses nor doubles output).
    pub async fn append_output_at(
        self: &Arc<Self>,
        id: &Id,
        content: String,
        stream: Option<StreamKind>,
        at: Option<u64>,
    ) -> Result<AppendResult> {
        let entry = self.entry(id)?;
        let len = content.len();
        let appended = if content.len() <= INLINE_APPEND_MAX {
            entry.log.append_blocking(&self.log_handles, id, content, stream, at)?
        } else {
            let (out, id, store) = (entry.log.clone(), id.to_owned(), self.clone());
            Self::blocking_short(move || out.append_blocking(&store.log_handles, &id, content, stream, at)).await?
        };
        crate::metrics::get().output_appended(len);
        if appended.newly_truncated {
            let id = id.to_owned();
            self.detached(move |s| async move { s.mark_truncated(&id).await })
                .await?;
        }
        Ok(AppendResult {
            output_bytes: appended.total,
            offset: appended.total,
        })
    }

    /// Persists `output_truncated: true` and the elided bytes so far, when
    /// elision starts (once per process; the completion writes the final
    /// `output_elided`).
    async fn mark_truncated(self: Arc<Self>, id: &str) -> Result<()> {
        let entry = self.entry(id)?;
        let _write = self.lock_current(id, &entry).await?;
        // `record()` overlays the log's figures.
        let p = entry.record();
        let written = self.write_record(&p).await;
        settle(written, || entry.set_record(p))
    }

    /// Reads stored output as UTF-8 bytes: a range starting inside a
    /// character starts at the next one, invalid bytes become U+FFFD. The
    /// whole range at once, for callers that want it whole; the server
    /// streams it with [`FileProcessStore::output_reader`], which this
    /// drains (one way to read output).
    pub async fn read_output(&self, id: &Id, range: OutputRange) -> Result<Vec<u8>> {
        let mut reader = self.output_reader(id, &crate::model::OutputQuery::range(range))?;
        let mut out = Vec::new();
        while let Some(block) = reader.next_block().await? {
            out.extend_from_slice(block.as_bytes());
        }
        Ok(out)
    }

    /// Follows a process's output: replay from byte `from` (None: only what
    /// comes from now on), then live, then the final status.
    pub fn subscribe(&self, id: &Id, from: Option<u64>) -> Result<Follow> {
        let entry = self.entry(id)?;
        let current = entry.record().status_info();
        Ok(entry.log.subscribe(from, current))
    }
}

fn not_found(id: &str) -> StoreError {
    StoreError::NotFound {
        kind: "process",
        id: id.to_owned(),
    }
}

/// Checks a create's fields before anything is locked or written; returns
/// its id (generated when absent) and workspace (`default` when absent).
fn check_new(new: &NewProcess) -> Result<(Id, Id)> {
    let id = match &new.id {
        Some(id) => StoreError::parse_id("process", id)?,
        None => Id::generate(),
    };
    checks::name(&new.name)?;
    if let Some(m) = &new.metadata {
        checks::metadata(m)?;
    }
    let workspace = match &new.workspace {
        Some(w) => StoreError::parse_id("workspace", w)?,
        None => Id::default_workspace(),
    };
    checks::command(new.command.as_deref())?;
    Ok((id, workspace))
}

/// The record a checked create becomes, stamped at `now`.
fn new_record(id: Id, workspace: Id, new: NewProcess, now: Timestamp) -> Process {
    let mut p = Process {
        id,
        workspace,
        name: new.name,
        status: Status::Queued,
        created_at: now,
        updated_at: now,
        started_at: None,
        ended_at: None,
        duration: None,
        result: new.result,
        error: new.error,
        metadata: new.metadata.unwrap_or_default(),
        command: new.command,
        exit_code: new.exit_code,
        exit_signal: None,
        output_bytes: 0,
        output_truncated: false,
        output_elided: 0,
    };
    stamp_transition(&mut p, new.status.unwrap_or_default(), now);
    p
}
