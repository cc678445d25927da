//! Opening a store folder (SPEC section 5): take `DIR/LOCK`, load every
//! record into memory (leftover temp files removed, unreadable files
//! quarantined), find each process's output segments and repair their
//! torn tails, derive `output_bytes` and the retention window from them,
//! resume the SEQ counter, and settle segments whose record is gone. Runs
//! before the store is shared, so it may block.
//!
//! # Output at open
//! Every `output/<id>[.<START>].{log,idx}` pair is repaired by
//! [`appends::repair`], which reads only the index's tail (open stays
//! fast with thousands of indexes: a `stat` of the log and one read of the
//! index each, on several threads, while other threads parse the
//! records): zero padding, a partial record, records no writer stores or
//! whose bytes are not all in the log, and log bytes past the last record
//! are cut, with a `warn!` naming the file (not for padding). A process's
//! segments must chain (start at or after the previous end, first SEQ
//! above the previous last): one that does not belongs to an earlier
//! process of the same id and is quarantined. A log without an index (a
//! store from before the index) gets one record per 4 GiB with the log's
//! mtime and fresh SEQs (`info!`); an index without its log is removed.
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

use super::appends::{self, Append};
use super::error::{Result, StoreError};
use super::events::Events;
use super::fsio::{self, DirSync, Scan};
use super::handles::{self, LogHandles};
use super::index::{Entry, Index};
use super::log::{LogEnv, Stored};
use super::process::Leftovers;
use super::segments::{self, SegmentView};
use super::{FileProcessStore, Layout, OpenReport, StoreConfig, Trimmed, log};
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
        // The output folder is scanned and repaired on its own thread while
        // the records are parsed: open waits for it only when the first
        // parsed batch needs its segments.
        let (workspaces, index, env, leftovers) = std::thread::scope(|s| -> Result<_> {
            let output = s.spawn(|| scan_output(&files));
            let workspaces = load_workspaces(&files, &mut report)?;
            let (index, env, leftovers) = load_processes(&files, &config, output, &mut report)?;
            Ok((workspaces, index, env, leftovers))
        })?;
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
            env,
            log_handles: LogHandles::new(handles::capacity()),
            leftovers,
            report,
        };
        store.ensure_default_workspace()?;
        tracing::info!(
            dir = %store.dir.display(),
            processes = store.report.processes,
            workspaces = store.report.workspaces,
            quarantined = store.report.quarantined.len(),
            temp_removed = store.report.temp_removed,
            segments_trimmed = store.report.trimmed.len(),
            indexes_synthesized = store.report.indexes_synthesized,
            last_seq = store.env.seqs.last(),
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

/// The output folder as found: each id's segments (repaired), the
/// largest SEQ of any index and the floor in `output/SEQ`, and what the
/// scan cut, synthesized and quarantined (merged into the open's report).
struct Output {
    by_id: HashMap<String, Vec<Seg>>,
    last_seq: u64,
    floor: u64,
    report: OpenReport,
}

/// One repaired segment of a process's output.
struct Seg {
    view: SegmentView,
    first: Option<Append>,
    last: Option<Append>,
}

/// Segments at least this many to a thread when open repairs them on
/// several threads (fewer are not worth a thread).
const REPAIRS_PER_THREAD: usize = 64;

/// What repairing one segment gave.
enum Repair {
    Done(Seg, Option<Trimmed>),
    /// Its index is unreadable (or gone with the log still there): rebuilt
    /// from the log, like a log from before the index.
    Rebuild,
    /// Its log is gone: the index alone is of no use.
    NoLog,
}

/// Finds and repairs every output segment (on several threads: with
/// thousands of segments open's time is these few syscalls each), then
/// checks that each id's segments chain. Logs without an index are given
/// one after all SEQs are known (their SEQs come after every existing one).
fn scan_output(files: &Layout) -> Result<Output> {
    let dir = &files.output;
    // (id, start) -> (has log, has index), from the names alone.
    let mut found: HashMap<(String, u64), (bool, bool)> = HashMap::new();
    for entry in fs::read_dir(dir).map_err(StoreError::io("read folder", dir))? {
        let entry = entry.map_err(StoreError::io("read folder", dir))?;
        let name = entry.file_name();
        let Some((id, start, is_index)) = name.to_str().and_then(segments::parse_segment_name) else {
            continue;
        };
        let slot = found.entry((id.to_owned(), start)).or_default();
        if is_index {
            slot.1 = true;
        } else {
            slot.0 = true;
        }
    }
    let floor = read_floor(&dir.join(log::SEQ_FILE));
    let mut out = Output {
        by_id: HashMap::new(),
        last_seq: floor,
        floor,
        report: OpenReport::default(),
    };
    let mut legacy = Vec::new();
    let mut pairs = Vec::with_capacity(found.len());
    for ((id, start), (has_log, has_index)) in found {
        match (has_log, has_index) {
            (true, true) => pairs.push((id, start)),
            (true, false) => legacy.push((id, start)),
            (false, _) => {
                // Its bytes are gone (a crash between deleting the two):
                // the records alone are of no use.
                remove_or_warn(&segments::segment_paths(dir, &id, start).1, "an index without its log");
            }
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8)
        .min(pairs.len().div_ceil(REPAIRS_PER_THREAD))
        .max(1);
    let per = pairs.len().div_ceil(threads).max(1);
    let folder = fs::File::open(dir).map_err(StoreError::io("open folder", dir))?;
    let folder = &folder;
    let repair_part = |part: &[(String, u64)]| -> Result<Vec<Repair>> {
        part.iter()
            .map(|(id, start)| repair_one(dir, folder, id, *start))
            .collect()
    };
    // The first part on this thread, the others on threads of their own.
    let repaired: Vec<Result<Vec<Repair>>> = std::thread::scope(|s| {
        let mut parts = pairs.chunks(per);
        let mine = parts.next().unwrap_or_default();
        let others: Vec<_> = parts.map(|part| s.spawn(move || repair_part(part))).collect();
        let mut all = vec![repair_part(mine)];
        all.extend(
            others
                .into_iter()
                .map(|h| h.join().expect("segment repairs do not panic")),
        );
        all
    });
    for (r, (id, start)) in repaired
        .into_iter()
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .zip(pairs)
    {
        match r {
            Repair::Done(seg, trimmed) => {
                out.report.trimmed.extend(trimmed);
                if let Some(last) = seg.last {
                    out.last_seq = out.last_seq.max(last.seq);
                }
                out.by_id.entry(id).or_default().push(seg);
            }
            Repair::Rebuild => legacy.push((id, start)),
            Repair::NoLog => remove_or_warn(&segments::segment_paths(dir, &id, start).1, "an index without its log"),
        }
    }
    // In name order, so the SEQs they get do not depend on the listing.
    legacy.sort();
    for (id, start) in legacy {
        let (log_path, idx_path) = segments::segment_paths(dir, &id, start);
        let ts_ms = fs::metadata(&log_path)
            .and_then(|m| m.modified())
            .map(|t| appends::ms_of(chrono::DateTime::<chrono::Utc>::from(t)))
            .unwrap_or(0);
        let records = appends::synthesize(&idx_path, &log_path, start, out.last_seq + 1, ts_ms)
            .map_err(StoreError::io("index", &log_path))?;
        tracing::info!(log = %log_path.display(), records = records.len(), "output log from before the append index: index written");
        out.report.indexes_synthesized += 1;
        let last = records.last().copied();
        if let Some(l) = last {
            out.last_seq = l.seq;
        }
        out.by_id.entry(id).or_default().push(Seg {
            view: SegmentView {
                start,
                end: last.map_or(start, |l| l.end()),
                records: records.len() as u64,
                log: log_path,
                idx: idx_path,
            },
            first: records.first().copied(),
            last,
        });
    }
    for segs in out.by_id.values_mut() {
        segs.sort_by_key(|s| s.view.start);
        unchain(segs, &files.quarantine, &mut out.report);
    }
    Ok(out)
}

/// Keeps only the segments of one id (sorted by start) that chain: each
/// starts at or after the end of the one before and its first SEQ is above
/// that one's last. Any other segment is output of an earlier process of
/// the same id (a delete that could not remove it, then a create of that
/// id): it goes to quarantine (or, if it cannot be moved, stays, unloaded).
fn unchain(segs: &mut Vec<Seg>, quarantine: &std::path::Path, report: &mut OpenReport) {
    let (mut end, mut last_seq) = (0u64, 0u64);
    segs.retain(|s| {
        let chained = s.view.start >= end && s.first.is_none_or(|f| f.seq > last_seq);
        if chained {
            end = s.view.end;
            last_seq = s.last.map_or(last_seq, |l| l.seq);
            return true;
        }
        let why = "output segment of an earlier process of this id (does not chain to the segments before it)";
        for path in [&s.view.log, &s.view.idx] {
            report
                .quarantined
                .extend(fsio::quarantine_or_leave(path, quarantine, why));
        }
        false
    });
}

/// Repairs the segment of `id` at `start` in `dir` (runs on a repair
/// thread): one `stat` of the log, then [`appends::repair`]. Both look
/// their file up in `folder` (`dir`, open).
fn repair_one(dir: &std::path::Path, folder: &fs::File, id: &str, start: u64) -> Result<Repair> {
    let (log_path, idx_path) = segments::segment_paths(dir, id, start);
    let log_len = match appends::size_in(folder, &log_path) {
        Ok(Some(len)) => len,
        Ok(None) => return Ok(Repair::NoLog),
        Err(e) => return Err(StoreError::io("stat", &log_path)(e)),
    };
    let repaired = match appends::repair(Some(folder), &idx_path, &log_path, Some(log_len), start) {
        Ok(r) => r,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::NotFound) => {
            // Not an index we can read (garbage header): treat the log as
            // one without an index.
            tracing::warn!(%e, index = %idx_path.display(), "unreadable output index; rebuilt from its log");
            return Ok(Repair::Rebuild);
        }
        Err(e) => return Err(StoreError::io("repair", &idx_path)(e)),
    };
    let trimmed = repaired.cut_anything().then(|| {
        tracing::warn!(
            log = %log_path.display(),
            records_cut = repaired.cut_records,
            index_bytes_cut = repaired.cut_index_bytes,
            log_bytes_cut = repaired.cut_log_bytes,
            "output segment had a torn tail (a crash mid-append); cut back to the last whole append"
        );
        Trimmed {
            log: log_path.clone(),
            records: repaired.cut_records,
            index_bytes: repaired.cut_index_bytes,
            log_bytes: repaired.cut_log_bytes,
        }
    });
    let seg = Seg {
        view: SegmentView {
            start,
            end: start + repaired.log_len,
            records: repaired.records,
            log: log_path,
            idx: idx_path,
        },
        first: repaired.first,
        last: repaired.last,
    };
    Ok(Repair::Done(seg, trimmed))
}

/// The SEQ floor in `output/SEQ`, 0 if absent or unreadable (then the
/// indexes alone decide, which is right unless the newest process was
/// deleted and the floor lost with it: logged).
fn read_floor(path: &std::path::Path) -> u64 {
    match fs::read_to_string(path) {
        Ok(s) => s.trim().parse().unwrap_or_else(|e| {
            tracing::warn!(%e, file = %path.display(), "unreadable SEQ floor; resuming after the largest SEQ of any index");
            0
        }),
        Err(_) => 0,
    }
}

fn remove_or_warn(path: &std::path::Path, what: &str) {
    if let Err(e) = fs::remove_file(path) {
        tracing::warn!(%e, file = %path.display(), "cannot remove {what}; left for the next start");
    }
}

/// A process's output as its log starts: the segments found, `total` the
/// end of the last one, and the elided range from the head's end to the
/// first tail byte served.
///
/// The window is placed with the record's `output_elided` (final once the
/// process finished; as of elision start if the server stopped while it
/// ran, which then serves a few bytes more of a partly expired segment:
/// real output, still in order), never before the first tail segment
/// kept. If `--max-output` changed between runs, what is on disk is
/// served as it was kept; a running process's next append applies the new
/// cap (deleting segments it no longer keeps). A head-only log with an
/// `output_elided` (a cap too small for a tail) keeps its elided range
/// after the head.
fn stored_of(segs: Vec<Seg>, p: &Process) -> Stored {
    let mut stored = Stored::default();
    let head_end = segs.first().filter(|s| s.view.start == 0).map_or(0, |s| s.view.end);
    for s in &segs {
        if let Some(l) = s.last {
            stored.last_seq = stored.last_seq.max(l.seq);
            stored.last_ts_ms = stored.last_ts_ms.max(l.ts_ms);
        }
    }
    stored.total = segs.last().map_or(0, |s| s.view.end);
    let first_tail = segs.iter().find(|s| s.view.start > 0).map(|s| s.view.start);
    stored.elided = match first_tail {
        Some(t) => {
            let from = (head_end + p.output_elided).clamp(t, stored.total);
            (from > head_end).then_some((head_end, from))
        }
        None if p.output_elided > 0 => {
            stored.total = head_end + p.output_elided;
            Some((head_end, stored.total))
        }
        None => None,
    };
    stored.segments = segs.into_iter().map(|s| s.view).collect();
    if stored.segments.first().is_some_and(|s| s.start != 0) {
        // The head is gone (removed by hand?): an empty one in its place.
        stored.segments.insert(
            0,
            SegmentView {
                start: 0,
                end: 0,
                records: 0,
                log: PathBuf::new(),
                idx: PathBuf::new(),
            },
        );
    }
    stored
}

/// Builds the process index while the records are being parsed, and the
/// store's output environment (the SEQ counter resumes after the output
/// scan's largest SEQ). `output` is the output scan running on its own
/// thread: joined when the first batch of records needs it.
/// `output_bytes` is derived from the segments, never trusted from the
/// record.
fn load_processes(
    files: &Layout,
    config: &StoreConfig,
    output: std::thread::ScopedJoinHandle<'_, Result<Output>>,
    report: &mut OpenReport,
) -> Result<(Index, Arc<LogEnv>, Leftovers)> {
    let mut output = Some(output);
    let mut ready: Option<(Output, Arc<LogEnv>)> = None;
    let mut failed = None;
    // Waits for the output scan (once) and builds the environment.
    let mut resolve = |ready: &mut Option<(Output, Arc<LogEnv>)>, failed: &mut Option<StoreError>| {
        let Some(handle) = output.take() else { return };
        match handle.join().expect("the output scan does not panic") {
            Ok(out) => {
                let env = Arc::new(LogEnv {
                    dir: files.output.clone(),
                    seqs: log::Seqs::new(&files.output, out.last_seq, out.floor),
                    clock: config.clock.clone(),
                    retain: log::Retain::new(config.max_output),
                    emitters: AtomicUsize::new(0),
                });
                *ready = Some((out, env));
            }
            Err(e) => *failed = Some(e),
        }
    };
    let mut index = Index::default();
    let scan = fsio::scan_dir::<Process>(
        &files.processes,
        &files.quarantine,
        |p| p.id.as_str(),
        |batch| {
            resolve(&mut ready, &mut failed);
            let Some((output, env)) = &mut ready else { return };
            for p in batch {
                let segs = output.by_id.remove(p.id.as_str()).unwrap_or_default();
                let stored = stored_of(segs, &p);
                let (created_at, id) = (p.created_at, p.id.clone());
                index.insert_key(created_at, id, Entry::new(p, env, stored));
            }
        },
    );
    resolve(&mut ready, &mut failed);
    if let Some(e) = failed {
        return Err(e);
    }
    let (output, env) = ready.expect("the output scan was joined");
    let mut scan = scan?;
    let set_aside = std::mem::take(&mut scan.quarantined_stems);
    report.processes = report.add(scan);
    let Output {
        by_id, report: found, ..
    } = output;
    report.quarantined.extend(found.quarantined);
    report.trimmed.extend(found.trimmed);
    report.indexes_synthesized += found.indexes_synthesized;
    let leftovers = settle_orphan_logs(files, &env.seqs, by_id, &set_aside, report);
    Ok((index, env, leftovers))
}

/// Segments without an indexed record: the output of a quarantined record
/// goes to quarantine with it (it is part of the evidence); the segments
/// of a deleted record (a crash between removing the record and its
/// output) are removed. What stays (the disk does not allow it) is
/// returned, for a create of that id to remove first.
fn settle_orphan_logs(
    files: &Layout,
    seqs: &log::Seqs,
    orphans: HashMap<String, Vec<Seg>>,
    quarantined_stems: &[String],
    report: &mut OpenReport,
) -> Leftovers {
    let leftovers = Leftovers::default();
    let set_aside: HashSet<&str> = quarantined_stems.iter().map(String::as_str).collect();
    // Their SEQs may be the newest (a delete that could not raise the
    // floor): raise it first, or leave them all for the next start.
    let newest = orphans.values().flatten().filter_map(|s| s.last).map(|a| a.seq).max();
    if let Some(seq) = newest
        && let Err(e) = seqs.keep_above(seq)
    {
        tracing::warn!(%e, "cannot raise the SEQ floor; orphan output left for the next start");
        for (id, segs) in orphans {
            let last_seq = segs.iter().filter_map(|s| s.last).map(|a| a.seq).max().unwrap_or(0);
            leftovers.add(&id, segs.into_iter().flat_map(|s| [s.view.log, s.view.idx]), last_seq);
        }
        return leftovers;
    }
    for (id, segs) in orphans {
        for seg in segs {
            let last_seq = seg.last.map_or(0, |a| a.seq);
            for path in [seg.view.log, seg.view.idx] {
                if set_aside.contains(id.as_str()) {
                    match fsio::quarantine_or_leave(&path, &files.quarantine, "output of a quarantined record") {
                        Some(to) => report.quarantined.push(to),
                        None => leftovers.add(&id, [path], last_seq),
                    }
                } else {
                    match fs::remove_file(&path) {
                        Ok(()) => report.orphan_logs_removed += 1,
                        Err(e) => {
                            tracing::warn!(%e, file = %path.display(), "cannot remove an orphan output file; left for the next start");
                            leftovers.add(&id, [path], last_seq);
                        }
                    }
                }
            }
        }
    }
    leftovers
}
