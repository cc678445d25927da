//! The one durable atomic write of prochub, used by store records, the
//! client's offline queue and `server.json`: temp file in the same folder,
//! write, fsync, rename over the target, fsync the folder. A crash at any
//! instant leaves the old or the new file, never a torn one.
//!
//! Everything here blocks; async callers run it inside `spawn_blocking`.
//! The temp file is made here, not with tempfile: tempfile wraps its errors
//! in a type that hides the OS error code, and the server answers a full
//! disk (ENOSPC), a read-only folder (EROFS) and a lack of descriptors
//! (EMFILE) each in its own way.
//!
//! # Failing half-way
//! Every resource a write needs (the temp file, the folder's descriptor)
//! is taken before the rename or unlink that makes the change visible, so
//! running out of descriptors or space fails before anything changed. What
//! can still fail after it (the folder fsync, an I/O error) is reported
//! with [`WriteError::applied`] set: the change is visible and a restart
//! will most likely see it, so a caller keeping a copy in memory must
//! follow the disk, not the error (regression: a DELETE answered 500 after
//! its unlink, and memory kept a record that a restart no longer had).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::sync;

/// Prefix of the temporary files of atomic writes; the store removes
/// leftovers at open. Starts with a dot so no valid id can collide with it.
pub const TEMP_PREFIX: &str = ".tmp-";

/// A failed step of a durable write, naming the step and the path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {}: {source}", path.display())]
pub struct WriteError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
    /// The rename or unlink happened; only making it durable failed.
    pub applied: bool,
}

fn step(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriteError {
    let path = path.to_owned();
    move |source| WriteError {
        op,
        path,
        source,
        applied: false,
    }
}

impl WriteError {
    /// The same error, marked as coming after the change became visible.
    fn after_change(mut self) -> WriteError {
        self.applied = true;
        self
    }
}

/// Writes `bytes` to `path` atomically and durably. The folder fsync goes
/// through `dir_sync` when the caller shares one across writers (the
/// store), else it is a plain fsync of the folder.
pub fn write(path: &Path, bytes: &[u8], dir_sync: Option<&DirSync>) -> Result<(), WriteError> {
    let dir = path
        .parent()
        .expect("durable writes always target a file inside a folder");
    // Opened before the rename: past it, a lack of descriptors would leave
    // the new file in place with the write reported as failed.
    let own_dir = match dir_sync {
        Some(_) => None,
        None => Some(File::open(dir).map_err(step("open folder", dir))?),
    };
    let mut tmp = TempFile::create_in(dir).map_err(step("create a temp file for", path))?;
    tmp.file.write_all(bytes).map_err(step("write", &tmp.path))?;
    let fsync_started = Instant::now();
    tmp.file.sync_all().map_err(step("write", &tmp.path))?;
    let file_fsync = fsync_started.elapsed();
    tmp.rename_onto(path).map_err(step("rename temp file onto", path))?;
    match (dir_sync, own_dir) {
        (Some(shared), _) => {
            let dir_started = Instant::now();
            shared.sync().map_err(WriteError::after_change)?;
            if let Some(hook) = shared.on_fsync {
                hook(file_fsync + dir_started.elapsed());
            }
            Ok(())
        }
        (None, Some(d)) => d.sync_all().map_err(|e| step("fsync folder", dir)(e).after_change()),
        (None, None) => unreachable!("a write without a shared folder sync opened its folder above"),
    }
}

/// Numbers the temp files of this process (with its pid: unique across
/// processes writing into one folder, e.g. two clients' offline queues).
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// A temp file in the target's folder, removed on drop unless renamed.
struct TempFile {
    path: PathBuf,
    file: File,
    renamed: bool,
}

impl TempFile {
    fn create_in(dir: &Path) -> io::Result<TempFile> {
        loop {
            let n = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file,
                        renamed: false,
                    });
                }
                // A leftover of an earlier process with our pid.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn rename_onto(&mut self, target: &Path) -> io::Result<()> {
        fs::rename(&self.path, target)?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes `path` durably; a missing file is not an error.
pub fn remove(path: &Path, dir_sync: Option<&DirSync>) -> Result<(), WriteError> {
    let dir = path.parent().expect("a file path has a folder");
    let own_dir = match dir_sync {
        Some(_) => None,
        None => Some(File::open(dir).map_err(step("open folder", dir))?),
    };
    match fs::remove_file(path) {
        Ok(()) => match (dir_sync, own_dir) {
            (Some(shared), _) => shared.sync().map_err(WriteError::after_change),
            (None, Some(d)) => d.sync_all().map_err(|e| step("fsync folder", dir)(e).after_change()),
            (None, None) => unreachable!("a remove without a shared folder sync opened its folder above"),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(step("remove", path)(e)),
    }
}

/// `fsync` of a folder, so a rename or unlink inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(step("fsync folder", dir))
}

/// Coalesces `fsync` calls on one folder across concurrent writers.
///
/// A writer that has renamed its file needs *some* fsync of the folder that
/// starts after its rename. If one is already running it may have started
/// before the rename, so the writer waits for it and then for the next one,
/// which a single waiter starts on behalf of everyone queued behind it. With
/// 16 writers this turns 16 folder fsyncs into about 2, and each writer still
/// returns only once its rename is durable.
///
/// The folder stays open for the life of the `DirSync`: an fsync after a
/// rename never needs a new descriptor, so a process out of descriptors
/// fails its writes before they change anything, never after.
pub struct DirSync {
    dir: PathBuf,
    /// The folder, opened once (read-only: fsync works on any descriptor).
    handle: File,
    /// `requested`: tickets handed out; `completed`: every ticket up to this
    /// one is covered by a finished fsync; `running`: an fsync is in flight.
    /// std Mutex: held only to update the counters, never across the fsync.
    state: Mutex<DirSyncState>,
    done: Condvar,
    /// Told how long each write through this folder spent in fsync (the
    /// file's and the folder's); the store passes its metrics hook.
    on_fsync: Option<fn(Duration)>,
}

#[derive(Default)]
struct DirSyncState {
    requested: u64,
    completed: u64,
    running: bool,
}

impl DirSync {
    /// Opens `dir` for the fsyncs to come.
    pub fn open(dir: PathBuf) -> Result<Self, WriteError> {
        let handle = File::open(&dir).map_err(step("open folder", &dir))?;
        Ok(DirSync {
            dir,
            handle,
            state: Mutex::new(DirSyncState::default()),
            done: Condvar::new(),
            on_fsync: None,
        })
    }

    /// Reports the fsync time of every [`write`] through this folder to
    /// `hook` (a plain `fn`: this module stays free of metrics).
    pub fn with_fsync_hook(mut self, hook: fn(Duration)) -> Self {
        self.on_fsync = Some(hook);
        self
    }

    /// Returns once an fsync of the folder that started after this call has
    /// finished.
    pub fn sync(&self) -> Result<(), WriteError> {
        let mut st = sync::lock(&self.state);
        st.requested += 1;
        let ticket = st.requested;
        loop {
            if st.completed >= ticket {
                return Ok(());
            }
            if st.running {
                st = sync::wait(&self.done, st);
                continue;
            }
            st.running = true;
            let covers = st.requested;
            drop(st);
            let res = self.handle.sync_all().map_err(step("fsync folder", &self.dir));
            st = sync::lock(&self.state);
            st.running = false;
            if res.is_ok() {
                st.completed = st.completed.max(covers);
            }
            self.done.notify_all();
            res?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temp_behind() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.json");
        write(&path, b"one", None).expect("first write");
        let shared = DirSync::open(dir.path().to_owned()).expect("open folder");
        write(&path, b"two", Some(&shared)).expect("second write");
        assert_eq!(fs::read(&path).expect("read back"), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        remove(&path, None).expect("remove");
        remove(&path, None).expect("a missing file is not an error");
    }

    #[test]
    fn errors_name_the_step_and_path() {
        let err = write(Path::new("/nonexistent-prochub-dir/x.json"), b"x", None).expect_err("no such folder");
        assert_eq!(err.op, "open folder");
        assert!(!err.applied, "nothing changed");
        assert!(err.to_string().contains("/nonexistent-prochub-dir"), "{err}");
    }
}
