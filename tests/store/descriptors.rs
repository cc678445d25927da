//! Descriptors the store holds: logs are opened on demand through a
//! bounded cache, never one per running process, and a deleted log's
//! descriptor is closed at once.

use prochub::model::{OutputRange, ProcessPatch, Status};
use prochub::store::{MAX_OPEN_LOGS, StoreConfig};

use crate::helper::{reopen, running, temp_store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bug_every_running_process_with_output_kept_its_log_open() {
    let (_dir, store) = temp_store().await;
    let n = MAX_OPEN_LOGS + 44;
    let mut ids = Vec::new();
    for i in 0..n {
        let id = running(&store, &format!("p{i}")).await;
        store.append_output(&id, format!("{i}\n"), None).await.expect("append");
        ids.push(id);
    }
    assert!(
        store.open_logs() <= MAX_OPEN_LOGS,
        "{} logs open for {n} running processes",
        store.open_logs()
    );
    // The first logs were evicted: appending reopens them and writes at
    // their end, and every log reads back whole.
    for id in &ids[..3] {
        store
            .append_output(id, "again\n".into(), None)
            .await
            .expect("append after eviction");
    }
    for (i, id) in ids.iter().enumerate() {
        let want = if i < 3 {
            format!("{i}\nagain\n")
        } else {
            format!("{i}\n")
        };
        let got = store.read_output(id, OutputRange::All).await.expect("read");
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }
    // A finished process's log is closed; the fsync at completion reopened
    // the evicted ones.
    for id in &ids {
        store
            .update_process(id, ProcessPatch::status(Status::Completed))
            .await
            .expect("complete");
    }
    assert_eq!(store.open_logs(), 0);
    let store = reopen(store, StoreConfig::default()).await;
    let p = store.get_process(&ids[0]).expect("still there");
    assert_eq!(p.output_bytes, "0\nagain\n".len() as u64);
}

#[tokio::test]
async fn a_deleted_process_log_descriptor_is_closed_at_once_freeing_its_space() {
    let (dir, store) = temp_store().await;
    let id = running(&store, "big").await;
    store.append_output(&id, "x".repeat(1024), None).await.expect("append");
    assert_eq!(store.open_logs(), 1);
    store.delete_process(&id).await.expect("delete");
    assert_eq!(store.open_logs(), 0);
    let log = dir.path().join("output").join(format!("{id}.log"));
    let held = std::fs::read_dir("/proc/self/fd")
        .expect("list our descriptors")
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|target| target.to_string_lossy().starts_with(&*log.to_string_lossy()));
    assert!(!held, "a descriptor still points at the deleted {}", log.display());
}
