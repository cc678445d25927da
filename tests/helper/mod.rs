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
