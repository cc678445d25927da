//! The one durable atomic write of prochub, used by store records, the
//! client's offline queue and `server.json`: temp file in the same folder,
//! write, fsync, rename over the target, fsync the folder. A crash at any
//! instant leaves the old or the new file, never a torn one.
//!
//! Everything here blocks; async callers run it inside `spawn_blocking`.
//! (tempfile's `persist` does not fsync: we do both fsyncs ourselves.)

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
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
}

fn step(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriteError {
    let path = path.to_owned();
    move |source| WriteError { op, path, source }
}

/// Writes `bytes` to `path` atomically and durably. The folder fsync goes
/// through `dir_sync` when the caller shares one across writers (the
/// store), else it is a plain fsync of the folder.
pub fn write(path: &Path, bytes: &[u8], dir_sync: Option<&DirSync>) -> Result<(), WriteError> {
    let dir = path
        .parent()
        .expect("durable writes always target a file inside a folder");
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(step("create temp file in", dir))?;
    tmp.write_all(bytes).map_err(step("write", tmp.path()))?;
    let fsync_started = Instant::now();
    tmp.as_file().sync_all().map_err(step("write", tmp.path()))?;
    let file_fsync = fsync_started.elapsed();
    tmp.persist(path)
        .map_err(|e| step("rename temp file onto", path)(e.error))?;
    match dir_sync {
        Some(shared) => {
            let dir_started = Instant::now();
            shared.sync()?;
            if let Some(hook) = shared.on_fsync {
                hook(file_fsync + dir_started.elapsed());
            }
            Ok(())
        }
        None => fsync_dir(dir),
    }
}

/// Removes `path` durably; a missing file is not an error.
pub fn remove(path: &Path, dir_sync: Option<&DirSync>) -> Result<(), WriteError> {
    match fs::remove_file(path) {
        Ok(()) => match dir_sync {
            Some(shared) => shared.sync(),
            None => fsync_dir(path.parent().expect("a file path has a folder")),
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
pub struct DirSync {
    dir: PathBuf,
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
    pub fn new(dir: PathBuf) -> Self {
        DirSync {
            dir,
            state: Mutex::new(DirSyncState::default()),
            done: Condvar::new(),
            on_fsync: None,
        }
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
            let res = fsync_dir(&self.dir);
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
        let shared = DirSync::new(dir.path().to_owned());
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
        assert_eq!(err.op, "create temp file in");
        assert!(err.to_string().contains("/nonexistent-prochub-dir"), "{err}");
    }
}
