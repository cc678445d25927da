//! Fixtures shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prochub::model::{Id, NewProcess, Process, Timestamp};
use prochub::store::{FileProcessStore, FollowEvent, StoreConfig};
use tempfile::TempDir;

/// A store in a fresh temporary folder (removed when the TempDir drops).
pub async fn temp_store() -> (TempDir, Arc<FileProcessStore>) {
    temp_store_with(StoreConfig::default()).await
}

pub async fn temp_store_with(config: StoreConfig) -> (TempDir, Arc<FileProcessStore>) {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = FileProcessStore::open(dir.path(), config).await.expect("open store");
    (dir, store)
}

pub mod client;
pub mod http;
pub mod server;
pub mod sse;

/// Polls `cond` every few milliseconds until it holds or `within` passes;
/// panics with `what` on timeout. For conditions without a signal to await
/// (counts visible only from outside, like open file descriptors, or a
/// record as another client sees it: `cond` may make requests).
pub async fn wait_until(what: &str, within: std::time::Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond().await {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting until {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Drops `store` (releasing `DIR/LOCK`) and opens the same folder again, as
/// a restarted server would. Retries briefly: the store's own detached tasks
/// may still hold a clone for a moment after the last call returned.
pub async fn reopen(store: Arc<FileProcessStore>, config: StoreConfig) -> Arc<FileProcessStore> {
    let dir = store.dir().to_owned();
    drop(store);
    for _ in 0..200 {
        match FileProcessStore::open(&dir, config.clone()).await {
            Ok(s) => return s,
            Err(prochub::store::StoreError::Locked { .. }) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => panic!("reopen {}: {e}", dir.display()),
        }
    }
    panic!("{} stayed locked after the store was dropped", dir.display());
}

/// A clock tests move by hand. Millisecond precision, like stored records.
#[derive(Clone)]
pub struct TestClock(Arc<AtomicI64>);

impl TestClock {
    pub fn at(t: Timestamp) -> Self {
        TestClock(Arc::new(AtomicI64::new(t.timestamp_millis())))
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t.timestamp_millis(), Ordering::SeqCst);
    }

    pub fn now(&self) -> Timestamp {
        chrono::DateTime::from_timestamp_millis(self.0.load(Ordering::SeqCst)).expect("valid time")
    }

    pub fn config(&self) -> StoreConfig {
        let me = self.clone();
        StoreConfig {
            clock: Arc::new(move || me.now()),
            ..StoreConfig::default()
        }
    }
}

/// A fixed instant tests start from.
pub fn t0() -> Timestamp {
    "2026-01-15T12:00:00.000Z".parse().expect("valid timestamp")
}

/// A process body with just a name (and optionally an id and workspace).
pub fn new_proc(name: &str) -> NewProcess {
    NewProcess {
        name: name.into(),
        ..Default::default()
    }
}

pub fn new_proc_in(id: &str, workspace: &str) -> NewProcess {
    NewProcess {
        id: Some(id.into()),
        workspace: Some(workspace.into()),
        name: format!("proc {id}"),
        ..Default::default()
    }
}

/// Creates a running process and returns its id.
pub async fn running(store: &Arc<FileProcessStore>, name: &str) -> Id {
    store.create_process(new_proc(name)).await.expect("create").id
}

/// A valid id from a literal.
pub fn id(s: &str) -> Id {
    Id::parse(s).unwrap_or_else(|e| panic!("{s:?} is not a valid test id: {e}"))
}

/// Reads `processes/<id>.json` straight from disk.
pub fn record_on_disk(dir: &Path, id: &str) -> Process {
    let path = dir.join("processes").join(format!("{id}.json"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Every file below `dir`, relative, sorted (to show nothing was touched).
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            }
            out.push(p.strip_prefix(base).expect("below base").to_owned());
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Copies a folder tree (for the sample store).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy target");
    for e in std::fs::read_dir(from).expect("read sample dir").flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).expect("copy sample file");
        }
    }
}

/// What a follower saw, end to end.
#[derive(Debug, Default)]
pub struct Followed {
    pub text: String,
    /// Offsets after each chunk, in order.
    pub offsets: Vec<u64>,
    pub lagged: Vec<(u64, u64)>,
    pub status: Option<prochub::model::StatusInfo>,
}

/// Reads a follower to its end, checking that chunk offsets line up.
pub async fn drain(mut follow: prochub::store::Follow) -> Followed {
    let mut out = Followed::default();
    let mut pos = follow.position();
    while let Some(ev) = follow.next().await {
        assert!(out.status.is_none(), "nothing may follow the status event");
        match ev {
            FollowEvent::Chunk(c) => {
                if out.offsets.is_empty() && out.lagged.is_empty() {
                    // A replay asked to start inside a character starts at
                    // the next one (at most 3 bytes on).
                    assert!(
                        (pos..=pos + 3).contains(&c.start()),
                        "first chunk starts at {}",
                        c.start()
                    );
                } else {
                    assert_eq!(c.start(), pos, "chunk must start where the previous one ended");
                }
                pos = c.offset;
                out.text.push_str(&c.content);
                out.offsets.push(c.offset);
            }
            FollowEvent::Lagged { from, to } => {
                assert_eq!(from, pos, "a skipped range starts where delivery stopped");
                pos = to;
                out.lagged.push((from, to));
            }
            FollowEvent::Status(s) => out.status = Some(s),
        }
    }
    out
}
