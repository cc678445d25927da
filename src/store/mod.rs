//! The store: everything the server keeps about processes and workspaces,
//! and the live fan-out of their output. Knows nothing about HTTP.
//!
//! * [`error`]: [`StoreError`], the one error type of every backend.
//! * [`file`](mod@file): [`FileProcessStore`], the embedded backend (SPEC section 5):
//!   JSON records, the in-memory index, output logs, per-process emitters,
//!   lifecycle events, retention.
//!
//! # Lock order
//! Locks nest in this order only, outer first; taking them the other way
//! round could deadlock. The tokio locks are the outer ones because they
//! are held across `.await`s (durable writes); the std locks inside are
//! held for short, non-async critical sections and are taken through
//! [`crate::sync`], which recovers from poisoning. In `file`:
//!
//! 1. `FileProcessStore::ws_guard` (tokio `RwLock`): shared by a process
//!    create for its whole length, exclusive by a workspace create or
//!    delete, so a workspace cannot vanish under a create that checked it.
//! 2. One record's write lock, held across its durable write:
//!    `index::Entry::write` (tokio `Mutex`: update, delete,
//!    `mark_truncated`), or for a create its id's lock in
//!    `FileProcessStore::creating`. Never two at once: a cascade delete
//!    takes its processes' locks one after another.
//! 3. `FileProcessStore::index` (std `RwLock`).
//! 4. Under the index, one at a time, never two of them together:
//!    * the `creating` map (std `Mutex`): `reserve_id` looks the id up in
//!      the index and claims it in `creating` under one index read, so a
//!      create that finishes in between cannot be missed by both looks;
//!      the create's guard removes its id (level 2 → 4);
//!    * a record's snapshot, `index::Entry::record` (std `Mutex`);
//!    * a process's output, `log::OutputLog::state` (std `Mutex`: the log
//!      handle, offsets, the emitter). `Entry::record()` takes the
//!      snapshot and then this one, releasing the first before the second.
//!      Held for page-cache writes of one append (log bytes, then index
//!      record), and, rarely, for file work that must not interleave with
//!      an append: creating a tail segment's two files on its first write,
//!      and unlinking the two files of a tail segment that left the
//!      retention window (a few per C/4 bytes appended past the cap).
//! 5. Leaves, taken under any of the above and holding no other store lock:
//!    the workspace map `FileProcessStore::workspaces` (std `Mutex`), the
//!    lifecycle event ring `events::Events::ring` (std `RwLock`, shared
//!    with every `events::Subscription`: written to number and push one
//!    event, so sequence order is ring order; read by a subscriber taking
//!    one event, never across an `.await`), and the folder-fsync
//!    coalescer `durable::DirSync` (std `Mutex`, never held across the
//!    fsync), and the open log handles `handles::LogHandles::open` (std
//!    `Mutex`, taken under a log's output lock by an append, a finish or a
//!    delete; never held across an open, a write or a close), and the SEQ
//!    floor `log::Seqs::floor` (std `Mutex`, held across the durable write
//!    of `output/SEQ` by a delete, never under an output lock), and the
//!    set of output files a delete could not remove,
//!    `process::Leftovers` (std `Mutex`, brief: looked up by a create,
//!    filled by a delete or an open).
//!
//! `Follow` (a follower) takes only level 4's output lock, never while
//! awaiting; the server holds no store lock at all.

pub mod error;
pub mod file;

pub use error::{Fault, Result, StoreError};
pub use file::*;
