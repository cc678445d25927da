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
//!   (`durable::DirSync`).
//! * Output appends are page-cache writes under the process's log lock:
//!   on the calling task up to `process::INLINE_APPEND_MAX` (measured,
//!   see there), larger ones through `block_in_place` on a multi-thread
//!   runtime (the blocking pool elsewhere): a pool round trip per 4 KiB
//!   chunk cost 3x the CPU.
//! * Locks nest in the one order written in [`crate::store`]'s module doc.
//!
//! # When a step fails
//! Memory changes only after the disk change that makes it true: a write
//! that fails before its rename (or unlink) leaves both as they were, and
//! one that fails after it (`StoreError::NotDurable`) is applied to memory
//! too, since that is what a restart will find ([`settle`]). So whatever
//! fails in the middle (a full disk, a read-only folder, no descriptors
//! left), the index, the emitters and the files agree, and a restart shows
//! what the API last answered.
//!
//! # Layout
//! * here: [`FileProcessStore`], its config, the folder `Layout`, the
//!   task helpers (`detached`, `blocking`, `blocking_short`);
//! * `open`: taking `DIR/LOCK`, loading records, settling orphan logs;
//! * `fsio`: the blocking file primitives (lock file, scan, quarantine);
//! * `index`: the in-memory index and its `Entry` per process;
//! * `process`, `creating`, `checks`: process records (create, update,
//!   delete, output calls), ids whose create is in flight, field rules;
//! * `workspace`: workspace records;
//! * `appends`: the append index beside each log (format, lookups,
//!   torn-tail repair);
//! * `segments`: which files hold a process's output (head, tail
//!   segments) and the snapshot of them a reader reads;
//! * `log`, `chunk`, `follow`: a process's output log and emitter, the
//!   chunks it broadcasts, a follower's replay-then-live stream;
//! * `handles`: the bounded cache of open log handles, store-wide;
//! * `reader`: `GET …/output` read from a log block by block;
//! * `events`: lifecycle events and their ring (replay and live delivery);
//! * `retention`: prune by age and count, on demand and on an interval.
//! * `children`: what identifies each running server-run command's OS
//!   process, kept for the next server after a crash.
//! * Open parses records on several threads and builds the index from
//!   their batches as they arrive.

pub(crate) use super::error;
pub mod appends;
mod checks;
mod children;
mod chunk;
mod creating;
mod events;
mod follow;
mod fsio;
mod handles;
mod history;
mod index;
mod log;
mod open;
mod process;
mod reader;
mod records;
mod retention;
pub mod segments;
mod stats;
mod workspace;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

pub use children::ChildRecord;
pub use chunk::{Chunk, MAX_CHUNK};
pub use error::{Result, StoreError};
pub use events::{EVENT_RING, EVENT_RING_BYTES, Events, Resume, SeqEvent, Subscription};
pub use follow::{Follow, FollowEvent};
pub use index::{DEFAULT_LIMIT, LazyPage, ListQuery, MAX_LIMIT, Page};
pub use log::{EMITTER_CAPACITY, MAX_OPEN_LOGS};
pub use reader::OutputReader;
// `append_output` returns it: without the re-export no caller outside the
// store could name it.
pub use process::AppendResult;
// `read_output` takes it; the model defines it for store and client alike.
pub use crate::model::OutputRange;
pub use retention::Retention;

use crate::model::{DEFAULT_WORKSPACE, Id, Timestamp, Workspace};
use fsio::DirSync;
use handles::LogHandles;
use index::Index;
use log::OutputLog;

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
    /// Orphan segments (log or index) of deleted records removed.
    pub orphan_logs_removed: usize,
    /// Segments whose torn tail was cut (a crash mid-append), with what
    /// was cut.
    pub trimmed: Vec<Trimmed>,
    /// Logs from before the append index that got one.
    pub indexes_synthesized: usize,
}

/// One segment whose torn tail `open` cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trimmed {
    /// The segment's log.
    pub log: PathBuf,
    /// Index records dropped (partial or beyond the log).
    pub records: u64,
    /// Bytes cut from the index and from the log.
    pub index_bytes: u64,
    pub log_bytes: u64,
}

/// Where each kind of file lives below `DIR` (SPEC section 5).
struct Layout {
    processes: PathBuf,
    workspaces: PathBuf,
    output: PathBuf,
    /// Created on first use: most stores never quarantine anything.
    quarantine: PathBuf,
    /// `children/<id>.json` of running server-run commands (`children`);
    /// created on first use.
    children: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Self {
        Layout {
            processes: dir.join("processes"),
            workspaces: dir.join("workspaces"),
            output: dir.join("output"),
            quarantine: dir.join("quarantine"),
            children: dir.join("children"),
        }
    }

    /// `children/<id>.json`.
    fn child(&self, id: &str) -> PathBuf {
        self.children.join(format!("{id}.json"))
    }

    /// `processes/<id>.json`.
    fn process(&self, id: &str) -> PathBuf {
        self.processes.join(format!("{id}.json"))
    }

    /// `workspaces/<id>.json`.
    fn workspace(&self, id: &str) -> PathBuf {
        self.workspaces.join(format!("{id}.json"))
    }
}

/// The store. Share it as `Arc<FileProcessStore>`.
pub struct FileProcessStore {
    dir: PathBuf,
    config: StoreConfig,
    /// `DIR/LOCK`, held exclusively for the store's lifetime.
    _lock: File,
    files: Layout,
    /// Shared folder fsyncs of `processes/` and `workspaces/`, for the
    /// record writes running at once on the blocking pool.
    proc_sync: DirSync,
    ws_sync: DirSync,
    /// The process index. std RwLock: held only to look up, insert or
    /// collect a page, never across an `.await` or a file operation
    /// (level 3 of the lock order).
    index: RwLock<Index>,
    /// Ids whose create is writing its file right now, so two creates of
    /// one client-chosen id cannot both succeed; the second waits for the
    /// first. std Mutex, brief (the per-id tokio locks are awaited outside it).
    creating: creating::Creating,
    /// Workspaces by id. std Mutex, brief; a leaf of the lock order.
    workspaces: Mutex<BTreeMap<Id, Workspace>>,
    /// Process creates hold it shared, workspace create/delete exclusive,
    /// so a workspace cannot vanish under a create that checked it. tokio
    /// RwLock: held across the durable write.
    ws_guard: tokio::sync::RwLock<()>,
    events: Events,
    /// What every output log shares: the output folder, the SEQ counter,
    /// the clock, the retention rule, the live emitter count.
    env: Arc<log::LogEnv>,
    /// Open output-log handles, at most [`MAX_OPEN_LOGS`].
    log_handles: LogHandles,
    /// Output files deleted processes left behind, removed by a create of
    /// their id (a leaf std Mutex inside, never held across I/O).
    leftovers: process::Leftovers,
    report: OpenReport,
}

impl FileProcessStore {
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
        self.env.emitters.load(Ordering::Relaxed)
    }

    /// Output logs open for appends right now (at most [`MAX_OPEN_LOGS`]).
    pub fn open_logs(&self) -> usize {
        self.log_handles.len()
    }

    /// The last SEQ the store handed out (store-wide, +1 per stored
    /// piece of output, never reused after a restart).
    pub fn last_seq(&self) -> u64 {
        self.env.seqs.last()
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
        self.files.process(id)
    }

    fn workspace_path(&self, id: &str) -> PathBuf {
        self.files.workspace(id)
    }

    /// Writes the `default` workspace if the folder has none. Runs at open,
    /// before the store is shared, so nothing can race the check. On a full
    /// or read-only disk it is kept in memory only (the folder can still be
    /// served for reads, and every start writes it again until it sticks:
    /// `default` always exists either way).
    fn ensure_default_workspace(&self) -> Result<()> {
        if self.workspace_exists(DEFAULT_WORKSPACE) {
            return Ok(());
        }
        let w = Workspace {
            id: Id::default_workspace(),
            name: "Default".into(),
            root_path: None,
            created_at: self.now(),
        };
        match fsio::write_json_atomic(&self.workspace_path(&w.id), &w, &self.ws_sync) {
            Ok(()) => {}
            Err(e) if e.fault().is_some_and(|(f, _)| f.is_disk()) => {
                tracing::warn!(%e, "cannot write the default workspace: kept in memory until a start can write it");
            }
            Err(e) => return Err(e),
        }
        crate::sync::lock(&self.workspaces).insert(w.id.clone(), w);
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

    /// fsyncs the log and index of every segment written since its last
    /// fsync, so output acknowledged before a graceful shutdown survives a
    /// power loss after it.
    pub async fn sync_output(self: &Arc<Self>) -> Result<()> {
        let logs: Vec<Arc<OutputLog>> = self.read_index().by_id.values().map(|e| e.log.clone()).collect();
        let store = self.clone();
        Self::blocking(move || logs.iter().try_for_each(|l| l.sync(&store.log_handles))).await
    }
}

/// Applies a disk change's outcome to memory: `apply` runs when the change
/// happened (`Ok`, or [`StoreError::NotDurable`]: renamed or unlinked, only
/// its fsync failed), never when it did not, and the write's error, if any,
/// is passed on. The one place that decides whether memory follows a write.
fn settle<T>(written: Result<()>, apply: impl FnOnce() -> T) -> Result<T> {
    match written {
        Ok(()) => Ok(apply()),
        Err(e @ StoreError::NotDurable { .. }) => {
            tracing::error!(%e, "a change is on disk but its fsync failed; memory follows the disk");
            apply();
            Err(e)
        }
        Err(e) => Err(e),
    }
}

impl Drop for FileProcessStore {
    fn drop(&mut self) {
        tracing::debug!(dir = %self.dir.display(), "store closed, LOCK released");
    }
}
