//! The ids whose create is in flight, so that two creates of one
//! client-chosen id (an offline queue re-sending after a dropped
//! connection) cannot both write a record: the second waits for the first
//! and then gets its definite answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::FileProcessStore;
use super::error::{Result, StoreError};

/// Ids whose create is writing its file, each with a lock the creating
/// request holds until it has finished (inserted into the index, or failed).
/// std Mutex around the map, held only to look up, insert or remove; the
/// per-id tokio locks are awaited outside it.
pub(crate) type Creating = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// Takes an id out of the "being created" map when the create ends, however
/// it ends, and then (field drop order) releases the requests waiting on it.
pub(super) struct CreatingGuard<'a> {
    map: &'a Creating,
    id: String,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for CreatingGuard<'_> {
    fn drop(&mut self) {
        crate::sync::lock(self.map).remove(&self.id);
    }
}

impl FileProcessStore {
    /// Claims `id` for a create. An id already stored is
    /// [`StoreError::ProcessExists`]; an id another request is creating right
    /// now is waited for, so a retried create always gets a definite answer:
    /// the stored record, or the id to itself if the first attempt failed.
    ///
    /// The index stays read-locked while `creating` is looked at (lock order
    /// index → creating): a create that finished in between would otherwise
    /// be missed by both looks, and its id written twice.
    pub(super) async fn reserve_id(&self, id: &str) -> Result<CreatingGuard<'_>> {
        loop {
            let in_flight = {
                let index = self.read_index();
                if let Some(existing) = index.by_id.get(id) {
                    return Err(StoreError::ProcessExists {
                        existing: Box::new(existing.record()),
                    });
                }
                let mut creating = crate::sync::lock(&self.creating);
                match creating.get(id) {
                    Some(lock) => lock.clone(),
                    None => {
                        let lock = Arc::new(tokio::sync::Mutex::new(()));
                        let held = lock.clone().try_lock_owned().expect("a new lock is free");
                        creating.insert(id.to_owned(), lock);
                        return Ok(CreatingGuard {
                            map: &self.creating,
                            id: id.to_owned(),
                            _held: held,
                        });
                    }
                }
            };
            // The other create releases this when it has finished; then
            // look again.
            drop(in_flight.lock().await);
        }
    }
}
