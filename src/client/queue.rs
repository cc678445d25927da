//! The offline queue: requests an editor extension made while the server
//! was unreachable, kept in order in a JSON-lines file until delivered.
//!
//! Every change rewrites the file with [`crate::durable::write`] (temp file
//! in the same folder, fsync, rename, fsync of the folder), so a crash
//! leaves the old or the new queue, never a torn one. An entry leaves the file only after
//! the server acknowledged it, so a flush that is interrupted and repeated
//! re-sends at most the entry in flight; client-chosen ids make that safe,
//! and so does the offset an append records (`at`, sent as `?at=N`: the
//! server stores it only where it was meant to go, see
//! [`super::output`]).
//!
//! Two editor windows on one workspace share its queue file. Each change
//! therefore takes an exclusive lock on `<file>.lock`, re-reads the file,
//! applies itself and writes it back, so neither window overwrites what the
//! other queued. (Both may flush the same entry at once; like an
//! interrupted flush, that repeats one request and is harmless.)

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::ClientError;
use crate::model::{NewProcess, ProcessPatch, StreamKind};

/// One queued request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum QueuedOp {
    /// `POST /api/processes` (always with a client-chosen id).
    Create { process: NewProcess },
    /// `PATCH /api/processes/:id`.
    Update { id: String, patch: ProcessPatch },
    /// `DELETE /api/processes/:id` (404 counts as done).
    Remove { id: String },
    /// `POST /api/processes/:id/output[?at=N]`. `at` is where the output
    /// was to end before this append, when the client knew it; a flush
    /// repeated after a crash then finds it stored instead of storing it
    /// twice. (Queue files written before appends had offsets read with
    /// `at` and `stream` absent.)
    Append {
        id: String,
        content: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<StreamKind>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<u64>,
    },
}

impl QueuedOp {
    /// The process this request is about.
    pub fn process_id(&self) -> &str {
        match self {
            QueuedOp::Create { process } => process.id.as_deref().unwrap_or(""),
            QueuedOp::Update { id, .. } | QueuedOp::Remove { id } | QueuedOp::Append { id, .. } => id,
        }
    }
}

/// A queued request and its place in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub seq: u64,
    #[serde(flatten)]
    pub op: QueuedOp,
}

/// The queue file and its entries in memory.
#[derive(Debug)]
pub struct OfflineQueue {
    path: PathBuf,
    entries: Vec<QueueEntry>,
    next_seq: u64,
}

impl OfflineQueue {
    /// Opens the queue at `path` (a missing file is an empty queue).
    /// Lines that cannot be read are skipped with a warning.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, ClientError> {
        let path = path.into();
        // A bare file name lives in the current folder (its writes need
        // the folder to fsync).
        let path = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => path,
            _ => Path::new(".").join(path),
        };
        let mut q = OfflineQueue {
            path,
            entries: Vec::new(),
            next_seq: 1,
        };
        q.reload()?;
        Ok(q)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries in the order they will be sent, as of the last change or
    /// [`OfflineQueue::reload`].
    pub fn entries(&self) -> &[QueueEntry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn front(&self) -> Option<&QueueEntry> {
        self.entries.first()
    }

    /// Re-reads the file (another process may have changed it).
    pub fn reload(&mut self) -> Result<(), ClientError> {
        let _lock = self.lock()?;
        self.read()
    }

    /// Appends a request; it is on disk when this returns.
    pub fn push(&mut self, op: QueuedOp) -> Result<u64, ClientError> {
        let _lock = self.lock()?;
        self.read()?;
        let seq = self.next_seq;
        self.entries.push(QueueEntry { seq, op });
        if let Err(e) = self.write() {
            self.entries.pop();
            return Err(e);
        }
        self.next_seq += 1;
        Ok(seq)
    }

    /// Removes an acknowledged entry; durable when this returns.
    pub fn remove(&mut self, seq: u64) -> Result<(), ClientError> {
        let _lock = self.lock()?;
        self.read()?;
        let Some(at) = self.entries.iter().position(|e| e.seq == seq) else {
            return Ok(());
        };
        let removed = self.entries.remove(at);
        if let Err(e) = self.write() {
            self.entries.insert(at, removed);
            return Err(e);
        }
        Ok(())
    }

    fn dir(&self) -> &Path {
        self.path.parent().expect("open gives the path a folder")
    }

    /// Takes the exclusive lock of the queue file (blocking: call from a
    /// blocking context); released when the returned file is dropped.
    fn lock(&self) -> Result<File, ClientError> {
        let dir = self.dir();
        fs::create_dir_all(dir).map_err(ClientError::io("create folder", dir))?;
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let path = dir.join(name);
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(ClientError::io("open", &path))?;
        file.lock().map_err(ClientError::io("lock", &path))?;
        Ok(file)
    }

    /// Reads the file into memory (under the lock).
    fn read(&mut self) -> Result<(), ClientError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(ClientError::io("read offline queue", &self.path)(e)),
        };
        let mut entries: Vec<QueueEntry> = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            match serde_json::from_str(line) {
                Ok(e) => entries.push(e),
                Err(err) => {
                    tracing::warn!(%err, path = %self.path.display(), line = n + 1, "skipping an unreadable queue entry")
                }
            }
        }
        entries.sort_by_key(|e| e.seq);
        // Never reuse a number this instance handed out, even if the queue
        // emptied meanwhile.
        self.next_seq = self.next_seq.max(entries.last().map_or(1, |e| e.seq + 1));
        self.entries = entries;
        Ok(())
    }

    /// Rewrites the file atomically and durably (under the lock).
    fn write(&self) -> Result<(), ClientError> {
        let mut text = String::new();
        for e in &self.entries {
            text.push_str(&serde_json::to_string(e).expect("queue entries serialise"));
            text.push('\n');
        }
        crate::durable::write(&self.path, text.as_bytes(), None)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(id: &str) -> QueuedOp {
        QueuedOp::Create {
            process: NewProcess {
                id: Some(id.into()),
                name: format!("job {id}"),
                ..Default::default()
            },
        }
    }

    #[test]
    fn entries_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/queue.jsonl");
        let mut q = OfflineQueue::open(&path).unwrap();
        assert!(q.is_empty());
        q.push(create("a")).unwrap();
        let b = q.push(create("b")).unwrap();
        q.push(QueuedOp::Update {
            id: "a".into(),
            patch: ProcessPatch {
                error: Some(None),
                ..ProcessPatch::status(crate::model::Status::Failed)
            },
        })
        .unwrap();
        q.remove(b).unwrap();
        let again = OfflineQueue::open(&path).unwrap();
        assert_eq!(again.entries(), q.entries());
        assert_eq!(
            again.entries().iter().map(|e| e.op.process_id()).collect::<Vec<_>>(),
            ["a", "a"]
        );
        // `error: null` (clear) survives the round trip.
        match &again.entries()[1].op {
            QueuedOp::Update { patch, .. } => assert_eq!(patch.error, Some(None)),
            other => panic!("{other:?}"),
        }
        // No temp files are left behind (only the lock file).
        let mut names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["queue.jsonl", "queue.jsonl.lock"]);
    }

    #[test]
    fn two_instances_on_one_file_keep_each_others_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        let mut a = OfflineQueue::open(&path).unwrap();
        let mut b = OfflineQueue::open(&path).unwrap();
        let sa = a.push(create("a")).unwrap();
        let sb = b.push(create("b")).unwrap();
        assert_ne!(sa, sb);
        a.push(create("c")).unwrap();
        b.remove(sa).unwrap();
        let ids = |q: &OfflineQueue| {
            q.entries()
                .iter()
                .map(|e| e.op.process_id().to_owned())
                .collect::<Vec<_>>()
        };
        a.reload().unwrap();
        assert_eq!(ids(&a), ["b", "c"]);
        assert_eq!(ids(&OfflineQueue::open(&path).unwrap()), ["b", "c"]);
    }

    #[test]
    fn appends_keep_their_offset_and_older_lines_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        // A line as a client without offsets wrote it, and one with both.
        std::fs::write(
            &path,
            concat!(
                r#"{"seq":1,"op":"append","id":"a","content":"old\n"}"#,
                "\n",
                r#"{"seq":2,"op":"append","id":"a","content":"new\n","stream":"stderr","at":4}"#,
                "\n"
            ),
        )
        .unwrap();
        let mut q = OfflineQueue::open(&path).unwrap();
        let ops: Vec<QueuedOp> = q.entries().iter().map(|e| e.op.clone()).collect();
        assert_eq!(
            ops,
            [
                QueuedOp::Append {
                    id: "a".into(),
                    content: "old\n".into(),
                    stream: None,
                    at: None
                },
                QueuedOp::Append {
                    id: "a".into(),
                    content: "new\n".into(),
                    stream: Some(StreamKind::Stderr),
                    at: Some(4)
                },
            ]
        );
        // Rewritten, they keep exactly that (and absent fields stay absent).
        q.remove(1).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"seq\":2,\"op\":\"append\",\"id\":\"a\",\"content\":\"new\\n\",\"stream\":\"stderr\",\"at\":4}\n"
        );
        assert_eq!(ops[0].process_id(), "a");
    }

    #[test]
    fn sequence_numbers_keep_growing_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        let mut q = OfflineQueue::open(&path).unwrap();
        let s1 = q.push(create("a")).unwrap();
        let mut q2 = OfflineQueue::open(&path).unwrap();
        let s2 = q2.push(create("b")).unwrap();
        assert!(s2 > s1);
    }
}
