//! Fixtures shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use prochub::store::{FileProcessStore, StoreConfig};
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
/// (counts visible only from outside, like open file descriptors).
pub async fn wait_until(what: &str, within: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting until {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
