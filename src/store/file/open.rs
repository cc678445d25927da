//! Opening a store folder (SPEC section 5): take `DIR/LOCK`, load every
//! record into memory (leftover temp files removed, unreadable files
//! quarantined), derive `output_bytes` from the logs, and settle logs
//! whose record is gone. Runs before the store is shared, so it may block.
//!
//! # On a full or read-only disk
//! A store that can still be read opens: the writes of an open are either
//! needed (none, beyond folders that already exist) or housekeeping, and
//! housekeeping that fails is logged and left for the next start. Leftover
//! temp files stay (they are never read as records), a file that cannot
//! be quarantined stays where it is, unloaded, an orphan log stays (a
//! later log of that id is cut back to its own length when opened), the
//! pid in `LOCK` stays unwritten, and the `default` workspace is kept in
//! memory only. Writes then fail with their own error (507, 503) until the
//! disk has room or is writable again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};

use super::error::{Result, StoreError};
use super::events::Events;
use super::fsio::{self, DirSync, Scan};
use super::handles::{self, LogHandles};
use super::index::{Entry, Index};
use super::{FileProcessStore, Layout, OpenReport, StoreConfig, log};
use crate::model::{Id, Process, Workspace};

impl FileProcessStore {
    /// Opens (creating if needed) the store in `dir`: takes `DIR/LOCK`,
    /// loads every record, removes leftover temp files and quarantines
    /// unreadable ones. Fails at once if another process owns `dir`.
    pub async fn open(dir: impl Into<PathBuf>, config: StoreConfig) -> Result<Arc<Self>> {
        let dir = dir.into();
        tokio::task::spawn_blocking(move || Self::open_blocking(dir, config))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// [`FileProcessStore::open`] for callers outside a runtime.
    pub fn open_blocking(dir: PathBuf, config: StoreConfig) -> Result<Arc<Self>> {
        fs::create_dir_all(&dir).map_err(StoreError::io("create folder", &dir))?;
        let lock = fsio::acquire_lock(&dir)?;
        let files = Layout::new(&dir);
        for d in [&files.processes, &files.workspaces, &files.output] {
            fs::create_dir_all(d).map_err(StoreError::io("create folder", d))?;
        }
        let mut report = OpenReport::default();
        let workspaces = load_workspaces(&files, &mut report)?;
        let emitters = Arc::new(AtomicUsize::new(0));
        let index = load_processes(&files, &emitters, &mut report)?;
        let store = FileProcessStore {
            proc_sync: DirSync::open(files.processes.clone())?.with_fsync_hook(crate::metrics::observe_fsync),
            ws_sync: DirSync::open(files.workspaces.clone())?.with_fsync_hook(crate::metrics::observe_fsync),
            events: Events::with_clock(config.clock.clone()),
            dir,
            config,
            _lock: lock,
            files,
            index: RwLock::new(index),
            creating: Mutex::default(),
            workspaces: Mutex::new(workspaces),
            ws_guard: tokio::sync::RwLock::new(()),
            emitters,
            log_handles: LogHandles::new(handles::capacity()),
            report,
        };
        store.ensure_default_workspace()?;
        tracing::info!(
            dir = %store.dir.display(),
            processes = store.report.processes,
            workspaces = store.report.workspaces,
            quarantined = store.report.quarantined.len(),
            temp_removed = store.report.temp_removed,
            open_logs_max = store.log_handles.capacity(),
            "store opened"
        );
        Ok(Arc::new(store))
    }
}

impl OpenReport {
    /// Counts what a scan removed and quarantined; returns how many
    /// records it loaded.
    fn add(&mut self, scan: Scan) -> usize {
        self.temp_removed += scan.temp_removed;
        self.quarantined.extend(scan.quarantined);
        scan.loaded
    }
}

fn load_workspaces(files: &Layout, report: &mut OpenReport) -> Result<BTreeMap<Id, Workspace>> {
    let mut workspaces = BTreeMap::new();
    let scan = fsio::scan_dir::<Workspace>(
        &files.workspaces,
        &files.quarantine,
        |w| &w.id,
        |batch| workspaces.extend(batch.into_iter().map(|w| (w.id.clone(), w))),
    )?;
    report.workspaces = report.add(scan);
    Ok(workspaces)
}

/// Builds the process index while the records are being parsed.
/// `output_bytes` is derived from the logs, so their sizes come first.
fn load_processes(files: &Layout, emitters: &Arc<AtomicUsize>, report: &mut OpenReport) -> Result<Index> {
    let logs = log::log_sizes(&files.output)?;
    let mut index = Index::default();
    let mut scan = fsio::scan_dir::<Process>(
        &files.processes,
        &files.quarantine,
        |p| p.id.as_str(),
        |batch| {
            for mut p in batch {
                p.output_bytes = logs.get(p.id.as_str()).copied().unwrap_or(0);
                let (created_at, id) = (p.created_at, p.id.clone());
                let log = files.log(&id);
                index.insert_key(created_at, id, Entry::new(p, log, emitters));
            }
        },
    )?;
    let set_aside = std::mem::take(&mut scan.quarantined_stems);
    report.processes = report.add(scan);
    settle_orphan_logs(files, &logs, &index, &set_aside, report)?;
    Ok(index)
}

/// Logs without an indexed record: the output of a quarantined record goes
/// to quarantine with it (it is part of the evidence); the log of a deleted
/// record (a crash between removing the record and its log) is removed.
fn settle_orphan_logs(
    files: &Layout,
    logs: &HashMap<String, u64>,
    index: &Index,
    quarantined_stems: &[String],
    report: &mut OpenReport,
) -> Result<()> {
    let set_aside: HashSet<&str> = quarantined_stems.iter().map(String::as_str).collect();
    for id in logs.keys().filter(|id| !index.by_id.contains_key(id.as_str())) {
        let path = files.log(id);
        if set_aside.contains(id.as_str()) {
            if let Some(to) = fsio::quarantine_or_leave(&path, &files.quarantine, "output of a quarantined record") {
                report.quarantined.push(to);
            }
        } else {
            match fs::remove_file(&path) {
                Ok(()) => report.orphan_logs_removed += 1,
                Err(e) => {
                    tracing::warn!(%e, log = %path.display(), "cannot remove an orphan log; left for the next start")
                }
            }
        }
    }
    Ok(())
}
