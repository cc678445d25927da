//! The store-wide cache of open output-log handles, so that the number of
//! descriptors the store holds is bounded by [`super::log::MAX_OPEN_LOGS`]
//! however many processes are running (regression: every running process
//! with output kept its log open, 5,000 running processes held 5,012
//! descriptors, and under `ulimit -n 256` every call failed from the 245th
//! process on, until a restart).
//!
//! A log is opened on its first append and kept here while it is among the
//! most recently used; past the capacity the least recently used handle is
//! closed. Closing a handle with unsynced writes loses nothing: the bytes
//! are in the page cache, and an fsync through any later descriptor of the
//! same file flushes them ([`super::log::OutputLog::sync`] reopens the log
//! for that).
//!
//! Handles are `Arc<File>`: an appender clones the handle and writes
//! without this cache's lock, so an eviction by another appender never
//! closes a descriptor in the middle of a write (the descriptor closes when
//! the write drops its clone). The descriptors open at once are therefore
//! at most the capacity plus the appends in flight.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::log::MAX_OPEN_LOGS;

/// Fewest logs kept open, however low the descriptor limit.
pub const MIN_OPEN_LOGS: usize = 16;
/// Under a low descriptor limit the cache takes at most this fraction
/// (1/N) of the soft `RLIMIT_NOFILE`, so that connections, record writes
/// and reads keep the rest: `ulimit -n 256` gives 64 open logs, 1,024 (the
/// usual default) and above give [`MAX_OPEN_LOGS`].
pub const NOFILE_SHARE: usize = 4;

/// How many logs this process may keep open: [`MAX_OPEN_LOGS`], less under
/// a low soft `RLIMIT_NOFILE` (read when the store opens; a server raises
/// its limit before that).
pub fn capacity() -> usize {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _hard)) => {
            let soft = usize::try_from(soft).unwrap_or(usize::MAX);
            (soft / NOFILE_SHARE).clamp(MIN_OPEN_LOGS, MAX_OPEN_LOGS)
        }
        Err(_) => MAX_OPEN_LOGS,
    }
}

/// One cached handle.
struct Slot {
    file: Arc<File>,
    /// Value of the use counter at its last use (the LRU order).
    used: u64,
}

#[derive(Default)]
struct Open {
    by_log: HashMap<u64, Slot>,
    /// Bumped at every use.
    clock: u64,
}

/// Open log handles by log key ([`super::log::LogState`]'s serial number).
/// std Mutex, a leaf of the store's lock order: held to look up, insert or
/// evict, never across a write, an open or a close.
pub(crate) struct LogHandles {
    open: Mutex<Open>,
    capacity: usize,
}

impl LogHandles {
    pub fn new(capacity: usize) -> Self {
        LogHandles {
            open: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    /// The cached handle of log `key`, if it is open.
    pub fn cached(&self, key: u64) -> Option<Arc<File>> {
        let mut open = crate::sync::lock(&self.open);
        open.clock += 1;
        let clock = open.clock;
        let slot = open.by_log.get_mut(&key)?;
        slot.used = clock;
        Some(slot.file.clone())
    }

    /// The handle of log `key` at `path` for writing, opened (created if
    /// missing) when it is not cached; `fresh` says it was just opened.
    /// Opening past the capacity closes the least recently used handle.
    pub fn for_writing(&self, key: u64, path: &Path) -> io::Result<(Arc<File>, bool)> {
        if let Some(f) = self.cached(key) {
            return Ok((f, false));
        }
        // Not append mode: writes are positioned (`write_all_at`), so a
        // failed write leaves nothing the next one would land behind.
        let file = Arc::new(OpenOptions::new().create(true).write(true).truncate(false).open(path)?);
        let evicted = {
            let mut open = crate::sync::lock(&self.open);
            open.clock += 1;
            let used = open.clock;
            let evicted = if open.by_log.len() >= self.capacity {
                lru(&open.by_log).and_then(|k| open.by_log.remove(&k))
            } else {
                None
            };
            open.by_log.insert(
                key,
                Slot {
                    file: file.clone(),
                    used,
                },
            );
            evicted
        };
        // Closed here, outside the lock (close can take a while on some
        // file systems).
        drop(evicted);
        Ok((file, true))
    }

    /// Closes log `key`'s handle, if open (its process finished or is being
    /// deleted: a deleted log's space is freed only once no handle is left).
    pub fn forget(&self, key: u64) {
        let slot = crate::sync::lock(&self.open).by_log.remove(&key);
        drop(slot);
    }

    /// Handles open now.
    pub fn len(&self) -> usize {
        crate::sync::lock(&self.open).by_log.len()
    }

    /// Most handles kept open.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The least recently used key. A scan: it runs only when a log is opened
/// with the cache full, next to an `open` and a `close` that cost far more
/// than walking [`super::log::MAX_OPEN_LOGS`] entries.
fn lru(by_log: &HashMap<u64, Slot>) -> Option<u64> {
    by_log.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_holds_more_than_its_capacity_and_evicts_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let handles = LogHandles::new(2);
        let path = |k: u64| dir.path().join(format!("{k}.log"));
        for k in 0..2 {
            handles.for_writing(k, &path(k)).unwrap();
        }
        handles.cached(0).expect("0 is open");
        let (_, fresh) = handles.for_writing(2, &path(2)).unwrap();
        assert!(fresh);
        assert_eq!(handles.len(), 2);
        assert!(handles.cached(1).is_none(), "1 was the least recently used");
        assert!(handles.cached(0).is_some() && handles.cached(2).is_some());
        handles.forget(0);
        assert_eq!(handles.len(), 1);
    }
}
