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
//! Each cached entry is the pair of descriptors of the segment a process
//! is writing ([`SegmentFiles`]: its log and its index), so the cache's
//! capacity counts processes, and the store holds at most twice that many
//! descriptors for appends. A process that starts a new tail segment
//! forgets its pair and opens the new one.
//!
//! Handles are `Arc<SegmentFiles>`: an appender clones the handle and writes
//! without this cache's lock, so an eviction by another appender never
//! closes a descriptor in the middle of a write (the descriptor closes when
//! the write drops its clone). The descriptors open at once are therefore
//! at most the capacity plus the appends in flight.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use super::appends;
use std::sync::{Arc, Mutex};

use super::log::MAX_OPEN_LOGS;

/// Fewest logs kept open, however low the descriptor limit.
pub const MIN_OPEN_LOGS: usize = 16;
/// Under a low descriptor limit the cache takes at most this fraction
/// (1/N) of the soft `RLIMIT_NOFILE`, so that connections, record writes
/// and reads keep the rest: each cached process holds two descriptors (log
/// and index), so `ulimit -n 256` gives 32 processes with open handles,
/// 2,048 and above give [`MAX_OPEN_LOGS`].
pub const NOFILE_SHARE: usize = 4;
/// Descriptors per cached entry: the segment's log and its index.
pub const FILES_PER_LOG: usize = 2;

/// How many logs this process may keep open: [`MAX_OPEN_LOGS`], less under
/// a low soft `RLIMIT_NOFILE` (read when the store opens; a server raises
/// its limit before that).
pub fn capacity() -> usize {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _hard)) => {
            let soft = usize::try_from(soft).unwrap_or(usize::MAX);
            (soft / NOFILE_SHARE / FILES_PER_LOG).clamp(MIN_OPEN_LOGS, MAX_OPEN_LOGS)
        }
        Err(_) => MAX_OPEN_LOGS,
    }
}

/// The open descriptors of the segment a process is appending to.
pub(crate) struct SegmentFiles {
    /// Absolute offset of the segment's first byte (0: the head).
    pub start: u64,
    pub log: File,
    pub idx: File,
}

/// One cached handle.
struct Slot {
    file: Arc<SegmentFiles>,
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
    pub fn cached(&self, key: u64) -> Option<Arc<SegmentFiles>> {
        let mut open = crate::sync::lock(&self.open);
        open.clock += 1;
        let clock = open.clock;
        let slot = open.by_log.get_mut(&key)?;
        slot.used = clock;
        Some(slot.file.clone())
    }

    /// The handles of log `key`'s segment starting at `start` (log at
    /// `log`, index at `idx`) for writing, opened when not cached (the log
    /// created if missing, the index created with its header if missing);
    /// `fresh` says they were just opened. Opening past the capacity closes
    /// the least recently used pair.
    pub fn for_writing(&self, key: u64, start: u64, log: &Path, idx: &Path) -> io::Result<(Arc<SegmentFiles>, bool)> {
        if let Some(f) = self.cached(key).filter(|f| f.start == start) {
            return Ok((f, false));
        }
        // Not append mode: writes are positioned (`write_all_at`), so a
        // failed write leaves nothing the next one would land behind.
        let log = OpenOptions::new().create(true).write(true).truncate(false).open(log)?;
        let idx = match appends::open_for_writing(idx) {
            Ok(f) if f.metadata()?.len() >= appends::HEADER_LEN => f,
            Ok(_) => appends::create(idx)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => appends::create(idx)?,
            Err(e) => return Err(e),
        };
        let file = Arc::new(SegmentFiles { start, log, idx });
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
        let path = |k: u64, ext: &str| dir.path().join(format!("{k}.{ext}"));
        let open = |k: u64| handles.for_writing(k, 0, &path(k, "log"), &path(k, "idx")).unwrap();
        for k in 0..2 {
            open(k);
        }
        handles.cached(0).expect("0 is open");
        let (_, fresh) = open(2);
        assert!(fresh);
        assert_eq!(handles.len(), 2);
        assert!(handles.cached(1).is_none(), "1 was the least recently used");
        assert!(handles.cached(0).is_some() && handles.cached(2).is_some());
        handles.forget(0);
        assert_eq!(handles.len(), 1);
        assert_eq!(
            std::fs::read(path(2, "idx")).unwrap(),
            appends::header(),
            "a new index starts with its header"
        );
    }
}
