//! `FileProcessStore`: process and workspace records as JSON files, an
//! in-memory index answering every read, append-only output logs with one
//! lazily created emitter per followed process, lifecycle events, and
//! retention. Knows nothing about HTTP.
//!
//! # Concurrency
//! * Reads (`get`, `list`) take the index `RwLock` briefly and clone.
//! * Each mutating call runs as its own tokio task, so a caller that goes
//!   away (a dropped HTTP request) can never leave disk and memory apart.
//! * Writes to one record are serialised by that record's `write` mutex and
//!   applied to memory only after the file is durable; writes to different
//!   records run in parallel on the blocking pool and share folder fsyncs
//!   (`fsio::DirSync`).
//! * Output appends are page-cache writes under the process's output lock,
//!   run through `block_in_place` on a multi-thread runtime (the blocking
//!   pool elsewhere): a pool round trip per 4 KiB chunk cost 3x the CPU.
//! * Open parses records on several threads and builds the index from
//!   their batches as they arrive.

pub(crate) use super::error;
mod events;
mod follow;
mod fsio;
mod index;
mod output;
mod process;
mod retention;
mod stats;
mod workspace;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use error::{Result, StoreError};
pub use events::{EVENT_RING, EVENT_RING_BYTES, Events, Resume, SeqEvent};
pub use follow::{Follow, FollowEvent};
pub use index::{DEFAULT_LIMIT, ListQuery, MAX_LIMIT, Page};
pub use output::{Chunk, EMITTER_CAPACITY, MAX_CHUNK};
// `read_output` and `append_output` take and return these: without the
// re-export no caller outside the store could name them.
pub use process::{AppendResult, OutputRange};
pub use retention::Retention;

use crate::model::{DEFAULT_WORKSPACE, Id, Process, Timestamp, Workspace};
use fsio::DirSync;
use index::{Entry, Index};
use output::Output;

/// Default per-process output cap (SPEC section 5).
pub const DEFAULT_MAX_OUTPUT: u64 = 16 * 1024 * 1024;

/// Source of "now" for record timestamps and retention; tests inject one.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Tunables of a store.
#[derive(Clone)]
pub struct StoreConfig {
    /// Bytes of output stored per process; the rest only streams live.
    pub max_output: u64,
    pub clock: Clock,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_output: DEFAULT_MAX_OUTPUT,
            clock: Arc::new(crate::model::now),
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("max_output", &self.max_output)
            .finish_non_exhaustive()
    }
}

/// What `open` found and did, for the start-up log line.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub processes: usize,
    pub workspaces: usize,
    pub quarantined: Vec<PathBuf>,
    pub temp_removed: usize,
    pub orphan_logs_removed: usize,
}

/// The store. Share it as `Arc<FileProcessStore>`.
pub struct FileProcessStore {
    dir: PathBuf,
    config: StoreConfig,
    /// `DIR/LOCK`, held exclusively for the store's lifetime.
    _lock: File,
    processes_dir: PathBuf,
    workspaces_dir: PathBuf,
    output_dir: PathBuf,
    proc_sync: DirSync,
    ws_sync: DirSync,
    /// The process index. std RwLock: held only to look up, insert or
    /// collect a page, never across an `.await` or a file operation.
    index: RwLock<Index>,
    /// Ids whose create is writing its file right now, so two creates of
    /// one client-chosen id cannot both succeed; the second waits for the
    /// first. std Mutex, brief (the per-id tokio locks are awaited outside it).
    creating: process::Creating,
    /// Workspaces by id. std Mutex, brief.
    workspaces: Mutex<BTreeMap<Id, Workspace>>,
    /// Process creates hold it shared, workspace create/delete exclusive,
    /// so a workspace cannot vanish under a create that checked it. tokio
    /// RwLock: held across the durable write.
    ws_guard: tokio::sync::RwLock<()>,
    events: Events,
    /// Live emitters (processes with at least one follower).
    emitters: Arc<AtomicUsize>,
    report: OpenReport,
}

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
        let processes_dir = dir.join("processes");
        let workspaces_dir = dir.join("workspaces");
        let output_dir = dir.join("output");
        let quarantine = dir.join("quarantine");
        for d in [&processes_dir, &workspaces_dir, &output_dir] {
            fs::create_dir_all(d).map_err(StoreError::io("create folder", d))?;
        }
        let mut workspaces = BTreeMap::new();
        let ws_scan = fsio::scan_dir::<Workspace>(
            &workspaces_dir,
            &quarantine,
            |w| &w.id,
            |batch| {
                workspaces.extend(batch.into_iter().map(|w| (w.id.clone(), w)));
            },
        )?;
        // output_bytes is derived from the logs, so their sizes come first;
        // the index is then built while the records are being parsed.
        let emitters = Arc::new(AtomicUsize::new(0));
        let logs = output::log_sizes(&output_dir)?;
        let mut index = Index::default();
        let proc_scan = fsio::scan_dir::<Process>(
            &processes_dir,
            &quarantine,
            |p| p.id.as_str(),
            |batch| {
                for mut p in batch {
                    let path = output_dir.join(format!("{}.log", p.id));
                    p.output_bytes = logs.get(p.id.as_str()).copied().unwrap_or(0);
                    let out = Output::new(path, p.output_bytes, p.status, p.output_truncated, emitters.clone());
                    let (created_at, id) = (p.created_at, p.id.clone());
                    let entry = Arc::new(Entry {
                        write: tokio::sync::Mutex::new(()),
                        record: Mutex::new(p),
                        output: Arc::new(out),
                    });
                    index.insert_key(created_at, id, entry);
                }
            },
        )?;
        let mut report = OpenReport {
            processes: proc_scan.loaded,
            workspaces: ws_scan.loaded,
            temp_removed: ws_scan.temp_removed + proc_scan.temp_removed,
            ..Default::default()
        };
        report.quarantined.extend(ws_scan.quarantined);
        report.quarantined.extend(proc_scan.quarantined);

        let set_aside: HashSet<&str> = proc_scan.quarantined_stems.iter().map(String::as_str).collect();
        for id in logs.keys().filter(|id| !index.by_id.contains_key(id.as_str())) {
            let path = output_dir.join(format!("{id}.log"));
            if set_aside.contains(id.as_str()) {
                // Its record was quarantined, not deleted: the output is
                // part of the evidence and goes with it.
                let to = fsio::move_to_quarantine(&path, &quarantine, "output of a quarantined record")?;
                report.quarantined.push(to);
                continue;
            }
            // The log of a record that was deleted (crash between removing
            // the record and its log): nothing refers to it any more.
            fs::remove_file(&path).map_err(StoreError::io("remove orphan log", &path))?;
            report.orphan_logs_removed += 1;
        }

        let events = Events::with_clock(config.clock.clone());
        let store = FileProcessStore {
            proc_sync: DirSync::new(processes_dir.clone()).with_fsync_hook(crate::metrics::observe_fsync),
            ws_sync: DirSync::new(workspaces_dir.clone()).with_fsync_hook(crate::metrics::observe_fsync),
            dir,
            config,
            _lock: lock,
            processes_dir,
            workspaces_dir,
            output_dir,
            index: RwLock::new(index),
            creating: Mutex::default(),
            workspaces: Mutex::new(workspaces),
            ws_guard: tokio::sync::RwLock::new(()),
            events,
            emitters,
            report,
        };
        store.ensure_default_workspace()?;
        tracing::info!(
            dir = %store.dir.display(),
            processes = store.report.processes,
            workspaces = store.report.workspaces,
            quarantined = store.report.quarantined.len(),
            temp_removed = store.report.temp_removed,
            "store opened"
        );
        Ok(Arc::new(store))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// What the last open found (counts, quarantined files).
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// Lifecycle events of this store.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Processes that currently have a live emitter (at least one follower
    /// of a running process).
    pub fn emitter_count(&self) -> usize {
        self.emitters.load(Ordering::Relaxed)
    }

    /// Number of process records.
    pub fn process_count(&self) -> usize {
        self.read_index().len()
    }

    fn now(&self) -> Timestamp {
        (self.config.clock)()
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        crate::sync::read(&self.index)
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        crate::sync::write(&self.index)
    }

    fn process_path(&self, id: &str) -> PathBuf {
        self.processes_dir.join(format!("{id}.json"))
    }

    fn workspace_path(&self, id: &str) -> PathBuf {
        self.workspaces_dir.join(format!("{id}.json"))
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.output_dir.join(format!("{id}.log"))
    }

    fn ensure_default_workspace(&self) -> Result<()> {
        let mut ws = crate::sync::lock(&self.workspaces);
        if !ws.contains_key(DEFAULT_WORKSPACE) {
            let w = Workspace {
                id: Id::default_workspace(),
                name: "Default".into(),
                root_path: None,
                created_at: self.now(),
            };
            fsio::write_json_atomic(&self.workspace_path(&w.id), &w, &self.ws_sync)?;
            ws.insert(w.id.clone(), w);
        }
        Ok(())
    }

    /// Runs `f` as its own task so that it completes even if the caller's
    /// future is dropped half-way (memory and disk must not drift apart).
    async fn detached<T, F, Fut>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Self>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        tokio::spawn(f(self.clone()))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs blocking file work on the blocking pool.
    async fn blocking<T, F>(f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Runs a short blocking file operation (an append to the page cache):
    /// in place via `block_in_place` on a multi-thread runtime, which first
    /// hands this worker's other tasks to another thread, so nothing waits
    /// behind it; on the blocking pool otherwise (`block_in_place` panics on
    /// a current-thread runtime). Measured with 4 KiB appends and one
    /// follower: a `spawn_blocking` round trip per append cost ~8 CPU ms per
    /// MiB appended, this ~3 (benches/store.rs, docs/BENCHMARKS.md).
    async fn blocking_short<T, F>(f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
            _ => Self::blocking(f).await,
        }
    }

    /// fsyncs every open output log, so output acknowledged before a
    /// graceful shutdown survives a power loss after it.
    pub async fn sync_output(self: &Arc<Self>) -> Result<()> {
        let outputs: Vec<Arc<Output>> = self.read_index().by_id.values().map(|e| e.output.clone()).collect();
        Self::blocking(move || outputs.iter().try_for_each(|o| o.sync())).await
    }
}

impl Drop for FileProcessStore {
    fn drop(&mut self) {
        tracing::debug!(dir = %self.dir.display(), "store closed, LOCK released");
    }
}
