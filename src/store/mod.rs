//! The store: everything the server keeps about processes and workspaces,
//! and the live fan-out of their output. Knows nothing about HTTP.
//!
//! * [`error`]: [`StoreError`], the one error type of every backend.
//! * [`file`]: [`FileProcessStore`], the embedded backend (SPEC section 5):
//!   JSON records, the in-memory index, output logs, per-process emitters,
//!   lifecycle events, retention.
//!
//! # Lock order
//! Locks nest in one order only; taking them in any other order can
//! deadlock. Outer first:
//!
//! 1. the index `RwLock` (`FileProcessStore::index`), or the `creating`
//!    set (ids whose create is in flight): the index is released before
//!    `creating` is taken, and neither is held across an `.await`;
//! 2. a record's `write` mutex (tokio, held across the durable write of
//!    that one record);
//! 3. the record's in-memory snapshot (std `Mutex` in `index::Entry`);
//! 4. the process's output state (std `Mutex` in `log::OutputLog`), which
//!    covers the log handle, the emitter and its followers.
//!
//! std mutexes are only held for short, non-async critical sections and
//! are taken through [`crate::sync`], which recovers from poisoning.

pub mod error;
pub mod file;

pub use error::{Result, StoreError};
pub use file::*;
