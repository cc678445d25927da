//! Opening a folder: leftovers, corrupt files, the LOCK.

use std::time::{Duration, Instant};

use prochub::model::Process;
use prochub::store::{FileProcessStore, OutputRange, StoreConfig, StoreError};

use crate::helper::{new_proc_in, running, temp_store};

#[tokio::test]
async fn corrupt_and_leftover_files_are_quarantined_or_removed_and_the_rest_loads() {
    let (dir, store) = temp_store().await;
    let good = store.create_process(new_proc_in("good", "default")).await.unwrap();
    store
        .append_output(&crate::helper::id("good"), "kept output".into(), None)
        .await
        .unwrap();
    let good = Process {
        output_bytes: 11,
        ..good
    };
    let broken = store.create_process(new_proc_in("broken", "default")).await.unwrap();
    store.append_output(&broken.id, "evidence".into(), None).await.unwrap();
    let dir_path = dir.path().to_owned();
    drop(store);

    let procs = dir_path.join("processes");
    let wss = dir_path.join("workspaces");
    // A torn record, a file that is not a record, a record whose id
    // disagrees with its name, a corrupt workspace, leftover temp files.
    std::fs::write(procs.join("broken.json"), b"{\"id\": \"broken\", \"name\": ").unwrap();
    std::fs::write(procs.join("notes.txt"), b"hello").unwrap();
    let mut liar = good.clone();
    liar.id = prochub::model::Id::parse("someone-else").unwrap();
    std::fs::write(procs.join("liar.json"), serde_json::to_vec(&liar).unwrap()).unwrap();
    std::fs::write(wss.join("ws1.json"), b"not json").unwrap();
    std::fs::write(procs.join(".tmp-abc123"), b"{\"half\": ").unwrap();
    std::fs::write(wss.join(".tmp-xyz"), b"").unwrap();

    let store = FileProcessStore::open(&dir_path, StoreConfig::default()).await.unwrap();
    let report = store.open_report().clone();
    assert_eq!(report.temp_removed, 2);
    assert_eq!(report.processes, 1);
    // Four unreadable files, plus the output log and index of the broken
    // record.
    assert_eq!(report.quarantined.len(), 6, "{:?}", report.quarantined);
    assert!(!procs.join(".tmp-abc123").exists() && !wss.join(".tmp-xyz").exists());
    for name in ["broken.json", "notes.txt", "liar.json"] {
        assert!(!procs.join(name).exists(), "{name} left in place");
    }
    let q = dir_path.join("quarantine");
    let quarantined: Vec<String> = std::fs::read_dir(&q)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for prefix in [
        "broken.json",
        "broken.log",
        "broken.idx",
        "notes.txt",
        "liar.json",
        "ws1.json",
    ] {
        let hit = quarantined.iter().find(|n| n.starts_with(prefix));
        let hit = hit.unwrap_or_else(|| panic!("{prefix} not in quarantine: {quarantined:?}"));
        assert!(!std::fs::read(q.join(hit)).unwrap().is_empty() || prefix == "ws1.json");
    }
    // Everything readable loaded, untouched.
    assert_eq!(store.get_process(&crate::helper::id("good")).unwrap(), good);
    assert_eq!(
        store
            .read_output(&crate::helper::id("good"), OutputRange::All)
            .await
            .unwrap(),
        b"kept output"
    );
    assert!(store.get_workspace(&crate::helper::id("default")).is_ok());
    assert!(matches!(
        store.get_process(&crate::helper::id("broken")),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.process_count(), 1);
}

/// Regression: the output log of a quarantined record was deleted at open as
/// an "orphan", destroying the output of a record that recovery had only set
/// aside. It must go to quarantine with its record.
#[tokio::test]
async fn bug_open_deleted_the_log_of_a_quarantined_record() {
    let (dir, store) = temp_store().await;
    let id = running(&store, "p").await;
    store.append_output(&id, "precious output".into(), None).await.unwrap();
    let gone = running(&store, "deleted").await;
    store.append_output(&gone, "x".into(), None).await.unwrap();
    let dir_path = dir.path().to_owned();
    drop(store);
    std::fs::write(dir_path.join(format!("processes/{id}.json")), b"{").unwrap();
    // A log whose record was deleted (crash between the two removals).
    std::fs::remove_file(dir_path.join(format!("processes/{gone}.json"))).unwrap();

    let store = FileProcessStore::open(&dir_path, StoreConfig::default()).await.unwrap();
    assert!(!dir_path.join(format!("output/{id}.log")).exists());
    let kept = std::fs::read_dir(dir_path.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{id}.log"))
        })
        .expect("the log went to quarantine with its record");
    assert_eq!(std::fs::read(kept).unwrap(), b"precious output");
    assert!(
        !dir_path.join(format!("output/{gone}.log")).exists(),
        "a true orphan is removed"
    );
    assert!(!dir_path.join(format!("output/{gone}.idx")).exists(), "with its index");
    assert_eq!(store.open_report().orphan_logs_removed, 2);
}

#[tokio::test]
async fn a_second_open_of_the_same_folder_fails_at_once_naming_the_pid() {
    let (dir, _store) = temp_store().await;
    let started = Instant::now();
    let err = FileProcessStore::open(dir.path(), StoreConfig::default())
        .await
        .err()
        .expect("the folder is owned");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "it must not wait for the lock"
    );
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "the message names the owner: {msg}"
    );
    assert!(msg.contains(&dir.path().display().to_string()), "and the folder: {msg}");
    // server.json adds the owner's address.
    std::fs::write(
        dir.path().join("server.json"),
        format!(r#"{{"pid": {}, "addr": "127.0.0.1:7070"}}"#, std::process::id()),
    )
    .unwrap();
    let msg = FileProcessStore::open(dir.path(), StoreConfig::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("address 127.0.0.1:7070"), "{msg}");
}

#[tokio::test]
async fn the_lock_is_released_when_the_store_is_dropped() {
    let (dir, store) = temp_store().await;
    drop(store);
    FileProcessStore::open(dir.path(), StoreConfig::default())
        .await
        .expect("reopen after drop");
}
