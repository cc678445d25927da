//! The in-memory index of process records: lookup by id, and the
//! newest-first order that list, filters and cursors walk.
//!
//! A page for HTTP is a [`LazyPage`]: the walk (filters, limit, next
//! cursor) happens up front, but it keeps only weak references, and each
//! record is cloned when the response is serialized, so a client that
//! does not read its page holds 8 bytes per record, not the records
//! (regression: 20 such clients of a page of 1 MB `result`s held 4.87 GB).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::error::{Result, StoreError};
use super::log::{LogEnv, OutputLog, Stored};
use crate::model::{Id, Process, Timestamp};
pub use crate::model::{ListQuery, Page};

/// Default page size of a list.
pub const DEFAULT_LIMIT: usize = 1000;
/// Largest page a list may ask for.
pub const MAX_LIMIT: usize = 10_000;

/// One process in the index.
pub(crate) struct Entry {
    /// Serialises writers of this record (update, complete, delete) across
    /// their durable write. tokio Mutex because it is held across the
    /// `spawn_blocking` await; readers never take it.
    pub write: tokio::sync::Mutex<()>,
    /// The acknowledged record. std Mutex, held to clone or replace it.
    pub record: Mutex<Process>,
    pub log: Arc<OutputLog>,
    /// Set when the entry leaves the index (deleted, pruned), so a
    /// [`LazyPage`] taken before skips it even while a writer still holds it.
    removed: AtomicBool,
}

impl Entry {
    /// The entry of a record whose output is `stored` (`status` and
    /// `output_truncated` say where the record stands).
    pub fn new(p: Process, env: &Arc<LogEnv>, stored: Stored) -> Arc<Entry> {
        let log = OutputLog::new(env, p.id.as_str(), stored, p.status, p.output_truncated);
        Arc::new(Entry {
            write: tokio::sync::Mutex::new(()),
            record: Mutex::new(p),
            log: Arc::new(log),
            removed: AtomicBool::new(false),
        })
    }

    pub fn record(&self) -> Process {
        let mut p = crate::sync::lock(&self.record).clone();
        let st = self.log.lock();
        p.output_bytes = st.total;
        p.output_truncated |= st.truncated;
        p.output_elided = st.elided_bytes();
        p
    }

    pub fn set_record(&self, p: Process) {
        *crate::sync::lock(&self.record) = p;
    }
}

impl super::FileProcessStore {
    /// [`FileProcessStore::list_processes`](super::FileProcessStore) as a
    /// [`LazyPage`], for responses that serialize as the client reads.
    pub fn list_processes_lazy(&self, q: &ListQuery) -> Result<LazyPage> {
        if let Some(w) = &q.workspace {
            StoreError::parse_id("workspace", w)?;
        }
        self.read_index().lazy_list(q)
    }
}

/// Sort key: newest first is the reverse of (created_at, id).
type Key = (Timestamp, Id);

#[derive(Default)]
pub(crate) struct Index {
    pub by_id: HashMap<Id, Arc<Entry>>,
    order: BTreeSet<Key>,
}

impl Index {
    pub fn insert(&mut self, p: &Process, entry: Arc<Entry>) {
        self.insert_key(p.created_at, p.id.clone(), entry);
    }

    /// [`Index::insert`] for a caller that has moved the record into the
    /// entry already (open: no clone of each record).
    pub fn insert_key(&mut self, created_at: Timestamp, id: Id, entry: Arc<Entry>) {
        self.order.insert((created_at, id.clone()));
        self.by_id.insert(id, entry);
    }

    pub fn remove(&mut self, p: &Process) {
        self.order.remove(&(p.created_at, p.id.clone()));
        if let Some(e) = self.by_id.remove(&p.id) {
            e.removed.store(true, Ordering::Release);
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Entries newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Arc<Entry>> {
        self.order.iter().rev().filter_map(|(_, id)| self.by_id.get(id))
    }

    pub fn list(&self, q: &ListQuery) -> Result<Page> {
        let (entries, next_cursor) = self.page(q)?;
        let items = entries.into_iter().map(|e| e.record()).collect();
        Ok(Page { items, next_cursor })
    }

    /// [`Index::list`] with the records left in the index until they are
    /// serialized.
    pub fn lazy_list(&self, q: &ListQuery) -> Result<LazyPage> {
        let (entries, next_cursor) = self.page(q)?;
        Ok(LazyPage {
            entries: entries.into_iter().map(Arc::downgrade).collect::<Vec<_>>().into_iter(),
            next_cursor,
        })
    }

    /// The entries of one page, newest first, and the cursor of the next.
    fn page(&self, q: &ListQuery) -> Result<(Vec<&Arc<Entry>>, Option<String>)> {
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(StoreError::invalid(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let upper = match &q.cursor {
            Some(c) => Some(decode_cursor(c)?),
            None => None,
        };
        let range = match &upper {
            Some(k) => self.order.range(..k.clone()),
            None => self.order.range::<Key, _>(..),
        };
        let mut items = Vec::new();
        let mut last_key = None;
        let mut next_cursor = None;
        for key @ (_, id) in range.rev() {
            let Some(entry) = self.by_id.get(id) else { continue };
            // Filter on the stored record in place: cloning every record a
            // filter then drops made a filtered page cost a full clone of
            // the index.
            let wanted = {
                let r = crate::sync::lock(&entry.record);
                q.workspace.as_ref().is_none_or(|w| *w == r.workspace) && q.status.is_none_or(|s| s.contains(r.status))
            };
            if !wanted {
                continue;
            }
            if items.len() == limit {
                let (created, id): &Key = last_key.expect("limit >= 1");
                next_cursor = Some(encode_cursor(created, id));
                break;
            }
            items.push(entry);
            last_key = Some(key);
        }
        Ok((items, next_cursor))
    }
}

/// One page of processes whose records are read as they are taken:
/// [`LazyPage::next_record`] clones one record at a time. A record deleted
/// after the page was taken is skipped (**choice**: the page then has
/// fewer items than `limit`, as if it had been deleted just before; the
/// cursor still names the same next page).
pub struct LazyPage {
    entries: std::vec::IntoIter<Weak<Entry>>,
    /// Present when more records follow.
    pub next_cursor: Option<String>,
}

impl LazyPage {
    /// The next record of the page still in the index, as it is now.
    pub fn next_record(&mut self) -> Option<Process> {
        self.entries.find_map(|w| {
            let entry = w.upgrade()?;
            (!entry.removed.load(Ordering::Acquire)).then(|| entry.record())
        })
    }
}

/// `<created_at seconds>.<nanoseconds>.<id>`: ids never contain a dot.
/// Regression: it used to be `<millis>.<id>`, which named the wrong key for
/// a record whose `created_at` on disk is finer than a millisecond, and the
/// next page then skipped records.
fn encode_cursor(created: &Timestamp, id: &str) -> String {
    format!("{}.{:09}.{id}", created.timestamp(), created.timestamp_subsec_nanos())
}

/// Reads a cursor of [`encode_cursor`], or of its old `<millis>.<id>` form
/// (a client may hold one across an upgrade).
fn decode_cursor(c: &str) -> Result<Key> {
    let bad = || StoreError::BadCursor(c.chars().take(100).collect());
    let parts: Vec<&str> = c.split('.').collect();
    let (t, id) = match parts.as_slice() {
        [secs, nanos, id] => {
            let secs: i64 = secs.parse().map_err(|_| bad())?;
            let nanos: u32 = nanos.parse().map_err(|_| bad())?;
            (chrono::DateTime::from_timestamp(secs, nanos), *id)
        }
        [ms, id] => {
            let ms: i64 = ms.parse().map_err(|_| bad())?;
            (chrono::DateTime::from_timestamp_millis(ms), *id)
        }
        _ => return Err(bad()),
    };
    let id = Id::parse(id).map_err(|_| bad())?;
    Ok((t.ok_or_else(bad)?, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_exactly_and_old_ones_still_parse() {
        let t: Timestamp = "2026-01-15T12:00:00.000123456Z".parse().unwrap();
        let c = encode_cursor(&t, "abc");
        assert_eq!(decode_cursor(&c).unwrap(), (t, Id::parse("abc").unwrap()));
        let old = decode_cursor("1768478400123.abc").unwrap();
        assert_eq!(old.0.timestamp_millis(), 1768478400123);
        for bad in ["", "x", "1.2.3.4", "1.x.abc", "1.2.a/b", "1.9999999999.abc"] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }
}
