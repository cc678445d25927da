//! Blocking file-system primitives of the store: the durable atomic write,
//! the shared folder fsync, the `LOCK` file and the start-up scan.
//!
//! Everything here blocks; callers run it inside `spawn_blocking` (or at
//! open, before the store is shared), never on the async executor.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{Result, StoreError};
use crate::durable;
use crate::model::{Id, SERVER_JSON, ServerInfo};

pub use crate::durable::{DirSync, TEMP_PREFIX};

/// `fsync` of a folder, so a rename or unlink inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    Ok(durable::fsync_dir(dir)?)
}

/// Writes `value` as pretty JSON to `path` with the one durable atomic
/// write ([`crate::durable::write`]), sharing the folder fsync.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T, dir_sync: &DirSync) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Encode {
        path: path.to_owned(),
        source,
    })?;
    json.push(b'\n');
    Ok(durable::write(path, &json, Some(dir_sync))?)
}

/// Removes `path` durably; a missing file is not an error.
pub fn remove_durable(path: &Path, dir_sync: &DirSync) -> Result<()> {
    Ok(durable::remove(path, Some(dir_sync))?)
}

/// Takes `DIR/LOCK` exclusively (std `File::try_lock`, Rust 1.89) and writes
/// our pid into it. The returned file must live as long as the store: the
/// lock is released when it is closed. A second opener fails at once with an
/// error naming the owner (pid, and address when a server wrote one).
///
/// The lock is held on a read-only descriptor (a file open for writing
/// keeps a folder from being remounted read-only), and the pid is written
/// through a second one that is closed at once. Writing the pid is best
/// effort: on a full or read-only disk the store still opens for reads.
pub fn acquire_lock(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(StoreError::io("create", &path))?;
            File::open(&path).map_err(StoreError::io("open", &path))?
        }
        Err(e) => return Err(StoreError::io("open", &path)(e)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(StoreError::Locked {
                dir: dir.to_owned(),
                owner: describe_owner(dir, &mut file),
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(StoreError::io("lock", &path)(e)),
    }
    if let Err(e) = write_pid(&path) {
        tracing::warn!(%e, path = %path.display(), "cannot write our pid into LOCK (a second server will say \"pid unknown\")");
    }
    Ok(file)
}

/// Replaces `LOCK`'s contents with our pid; only the lock holder calls it.
fn write_pid(path: &Path) -> io::Result<()> {
    let mut w = OpenOptions::new().write(true).truncate(true).open(path)?;
    writeln!(w, "{}", std::process::id())?;
    w.sync_all()
}

/// "pid 123, address 127.0.0.1:7070" from `LOCK` and `server.json`.
fn describe_owner(dir: &Path, lock: &mut File) -> String {
    let mut pid = String::new();
    let _ = lock.read_to_string(&mut pid);
    let pid = pid.trim();
    let mut owner = if pid.is_empty() {
        "pid unknown".to_string()
    } else {
        format!("pid {pid}")
    };
    if let Ok(text) = fs::read_to_string(dir.join(SERVER_JSON))
        && let Ok(info) = serde_json::from_str::<ServerInfo>(&text)
        && info.pid.to_string() == pid
    {
        owner.push_str(&format!(", address {}", info.addr));
    }
    owner
}

/// Records per batch of a start-up scan.
pub const SCAN_BATCH: usize = 4096;

/// What the start-up scan found in one record folder.
pub struct Scan {
    /// Records handed to the sink.
    pub loaded: usize,
    /// Where each quarantined file went.
    pub quarantined: Vec<PathBuf>,
    /// File stems of the quarantined files (the ids they claimed), so their
    /// output logs can follow them instead of being taken for orphans.
    pub quarantined_stems: Vec<String>,
    pub temp_removed: usize,
}

/// Loads every `<id>.json` of `dir`. Leftover temp files are removed;
/// anything unreadable (bad JSON, a name that is not a valid id, an id that
/// disagrees with its file name) is moved to `quarantine` with a log line.
/// A readable record is never dropped or overwritten. Parsing runs on
/// several threads: opening 100,000 records is dominated by it.
///
/// Records reach `sink` in batches of [`SCAN_BATCH`] on the calling thread
/// while the parser threads go on, so the caller builds its index during the
/// parse and never holds all records twice.
pub fn scan_dir<T>(dir: &Path, quarantine: &Path, id_of: fn(&T) -> &str, sink: impl FnMut(Vec<T>)) -> Result<Scan>
where
    T: DeserializeOwned + Send,
{
    let Listing {
        names,
        mut bad,
        temp_removed,
    } = list_records(dir)?;
    let loaded = parse_records(dir, names, id_of, &mut bad, sink);
    let mut quarantined = Vec::new();
    let mut quarantined_stems = Vec::new();
    for (path, why) in bad {
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
            quarantined_stems.push(stem.to_owned());
        }
        quarantined.extend(quarantine_or_leave(&path, quarantine, &why));
    }
    Ok(Scan {
        loaded,
        quarantined,
        quarantined_stems,
        temp_removed,
    })
}

/// What a record folder holds, by file name.
struct Listing {
    /// `<id>.json` names. File names only (not full paths): at 100,000
    /// records every byte per record counts towards the peak memory of an
    /// open.
    names: Vec<std::ffi::OsString>,
    /// Files that are not records, and why.
    bad: Vec<(PathBuf, String)>,
    temp_removed: usize,
}

/// Sorts the files of `dir` into records and misfits, removing leftover
/// temp files of interrupted writes on the way.
fn list_records(dir: &Path) -> Result<Listing> {
    let mut listing = Listing {
        names: Vec::new(),
        bad: Vec::new(),
        temp_removed: 0,
    };
    for entry in fs::read_dir(dir).map_err(StoreError::io("read folder", dir))? {
        let entry = entry.map_err(StoreError::io("read folder", dir))?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if text.starts_with(TEMP_PREFIX) {
            // Housekeeping: a temp file is never read as a record, so one
            // that cannot be removed now (read-only disk) waits for a start
            // that can.
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => listing.temp_removed += 1,
                Err(e) => tracing::warn!(%e, file = %path.display(), "cannot remove a leftover temp file"),
            }
        } else if text.strip_suffix(".json").is_some_and(|id| Id::parse(id).is_ok()) {
            listing.names.push(name);
        } else {
            listing
                .bad
                .push((entry.path(), "file name is not <id>.json".to_string()));
        }
    }
    Ok(listing)
}

/// Parses `names` on up to 8 threads, handing `sink` each batch as it
/// arrives; unreadable files are added to `bad`. Returns how many records
/// reached `sink`.
fn parse_records<T>(
    dir: &Path,
    names: Vec<std::ffi::OsString>,
    id_of: fn(&T) -> &str,
    bad: &mut Vec<(PathBuf, String)>,
    mut sink: impl FnMut(Vec<T>),
) -> usize
where
    T: DeserializeOwned + Send,
{
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
    let per = names.len().div_ceil(threads).max(1);
    let mut loaded = 0;
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<T>>(threads * 2);
        let handles: Vec<_> = names
            .chunks(per)
            .map(|part| {
                let tx = tx.clone();
                s.spawn(move || {
                    let mut bad = Vec::new();
                    let mut buf = Vec::with_capacity(64 * 1024);
                    for slice in part.chunks(SCAN_BATCH) {
                        let mut batch = Vec::with_capacity(slice.len());
                        for name in slice {
                            let path = dir.join(name);
                            match read_record::<T>(&path, &mut buf, id_of) {
                                Ok(r) => batch.push(r),
                                Err(why) => bad.push((path, why)),
                            }
                        }
                        // The receiver lives until every sender is gone.
                        let _ = tx.send(batch);
                    }
                    bad
                })
            })
            .collect();
        drop(tx);
        for batch in rx {
            loaded += batch.len();
            sink(batch);
        }
        for h in handles {
            bad.append(&mut h.join().expect("record parser threads do not panic"));
        }
    });
    loaded
}

/// Reads and parses one record into `buf` (reused across records: no
/// allocation and no `statx` per file, unlike `fs::read`).
fn read_record<T: DeserializeOwned>(path: &Path, buf: &mut Vec<u8>, id_of: fn(&T) -> &str) -> Result<T, String> {
    buf.clear();
    File::open(path)
        // Through `take`: File's own read_to_end first asks for the size
        // and position (statx + lseek per file) to size a buffer we already
        // have.
        .and_then(|f| f.take(u64::MAX).read_to_end(buf))
        .map_err(|e| format!("unreadable: {e}"))?;
    let record: T = serde_json::from_slice(buf).map_err(|e| format!("invalid JSON: {e}"))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    if id_of(&record) != stem {
        return Err(format!("record id {:?} does not match its file name", id_of(&record)));
    }
    Ok(record)
}

/// [`move_to_quarantine`], or, when the disk does not allow it (full,
/// read-only), leaves the file where it is with a log line: it is not
/// loaded either way, and the next start tries again.
pub fn quarantine_or_leave(path: &Path, quarantine: &Path, why: &str) -> Option<PathBuf> {
    match move_to_quarantine(path, quarantine, why) {
        Ok(to) => Some(to),
        Err(e) => {
            tracing::warn!(%e, file = %path.display(), reason = why, "cannot quarantine an unreadable file; it stays, unloaded");
            None
        }
    }
}

/// Moves `path` into `quarantine/`, never overwriting an earlier file there.
pub fn move_to_quarantine(path: &Path, quarantine: &Path, why: &str) -> Result<PathBuf> {
    fs::create_dir_all(quarantine).map_err(StoreError::io("create folder", quarantine))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f");
    let mut target = quarantine.join(format!("{name}.{stamp}"));
    let mut n = 1;
    while target.exists() {
        target = quarantine.join(format!("{name}.{stamp}.{n}"));
        n += 1;
    }
    fs::rename(path, &target).map_err(StoreError::io("quarantine", path))?;
    tracing::warn!(file = %path.display(), to = %target.display(), reason = why, "quarantined unreadable file");
    fsync_dir(quarantine)?;
    if let Some(parent) = path.parent() {
        fsync_dir(parent)?;
    }
    Ok(target)
}
