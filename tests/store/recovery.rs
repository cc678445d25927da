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

/// Completes a process (its followers' replays then end).
async fn complete(store: &std::sync::Arc<FileProcessStore>, id: &prochub::model::Id) {
    store
        .update_process(
            id,
            prochub::model::ProcessPatch::status(prochub::model::Status::Completed),
        )
        .await
        .expect("complete");
}

/// Names of the files in `dir` whose name starts with `prefix`, sorted.
fn files_starting(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Regression (review M2): a head-only log with an elided range (a cap
/// too small for a tail) restarted with a larger cap wrote the next append
/// at the head's end while its offsets said `output_bytes` (misplaced
/// bytes), or, with more elided than the new head holds, underflowed.
#[tokio::test]
async fn bug_a_larger_cap_after_restart_misplaced_or_underflowed_the_next_append() {
    for (before, cap) in [("abc", 1024 * 1024u64), ("0123456789", 8)] {
        let small = StoreConfig {
            max_output: 1,
            ..StoreConfig::default()
        };
        let (dir, store) = crate::helper::temp_store_with(small).await;
        let id = running(&store, "grows").await;
        store.append_output(&id, before.into(), None).await.unwrap();
        let elided = before.len() as u64;
        assert_eq!(store.get_process(&id).unwrap().output_elided, elided);
        let larger = StoreConfig {
            max_output: cap,
            ..StoreConfig::default()
        };
        let store = crate::helper::reopen(store, larger.clone()).await;
        let r = store.append_output(&id, "defg".into(), None).await.unwrap();
        assert_eq!(r.output_bytes, elided + 4, "cap {cap}");
        complete(&store, &id).await;
        let check = async |store: &std::sync::Arc<FileProcessStore>| {
            let got = crate::helper::drain(store.subscribe(&id, Some(0)).unwrap()).await;
            assert_eq!(
                got.lagged,
                [(0, elided)],
                "cap {cap}: the elided range, then the new bytes"
            );
            assert_eq!((got.text.as_str(), got.offsets.as_slice()), ("defg", &[elided + 4][..]));
            let tail = store.read_output(&id, OutputRange::From(elided)).await.unwrap();
            assert_eq!(tail, b"defg", "cap {cap}: the bytes are where their offsets say");
            assert_eq!(store.get_process(&id).unwrap().output_bytes, elided + 4);
        };
        check(&store).await;
        let store = crate::helper::reopen(store, larger).await;
        check(&store).await;
        drop(dir);
    }
}

/// A store whose `output/SEQ` cannot be written (a folder in its place:
/// the durable write's rename fails), so a delete of the process holding
/// the newest SEQs leaves its output in place.
fn block_seq_floor(dir: &std::path::Path) -> std::path::PathBuf {
    let seq = dir.join("output/SEQ");
    let _ = std::fs::remove_file(&seq);
    std::fs::create_dir(&seq).unwrap();
    seq
}

/// Regression (review M1): a delete that could not remove its output
/// (the SEQ floor could not be raised), then a create of the same id: the
/// old segments attached to the new process at the next open (old bytes,
/// `output_bytes` jumped). A create removes them first, at run time and
/// after a restart that could not remove them either.
#[tokio::test]
async fn bug_a_recreated_id_inherited_the_output_its_deleted_namesake_left() {
    for restart_between in [false, true] {
        let config = StoreConfig {
            max_output: 4096,
            ..StoreConfig::default()
        };
        let (dir, store) = crate::helper::temp_store_with(config.clone()).await;
        let id = store.create_process(new_proc_in("again", "default")).await.unwrap().id;
        for i in 0..20 {
            store
                .append_output(&id, format!("old {i} {}\n", "o".repeat(300)), None)
                .await
                .unwrap();
        }
        let out = dir.path().join("output");
        assert!(files_starting(&out, "again.").len() > 2, "head and tail segments");
        let seq = block_seq_floor(dir.path());
        store.delete_process(&id).await.unwrap();
        assert!(!files_starting(&out, "again.").is_empty(), "the output stayed");
        let store = if restart_between {
            let store = crate::helper::reopen(store, config.clone()).await;
            assert!(
                !files_starting(&out, "again.").is_empty(),
                "still there: the floor cannot be raised"
            );
            store
        } else {
            store
        };
        std::fs::remove_dir(&seq).unwrap();
        store.create_process(new_proc_in("again", "default")).await.unwrap();
        assert!(
            files_starting(&out, "again.").is_empty(),
            "removed before the new process writes"
        );
        store.append_output(&id, "new\n".into(), None).await.unwrap();
        complete(&store, &id).await;
        let store = crate::helper::reopen(store, config).await;
        assert_eq!(store.get_process(&id).unwrap().output_bytes, 4);
        assert_eq!(store.read_output(&id, OutputRange::All).await.unwrap(), b"new\n");
        assert!(store.open_report().quarantined.is_empty(), "restart {restart_between}");
    }
}

/// Open's backstop for M1: segments of an earlier process of the same id
/// (a first SEQ below the head's last one) are quarantined, not attached.
#[tokio::test]
async fn segments_that_do_not_chain_to_the_head_are_quarantined_at_open() {
    let config = StoreConfig {
        max_output: 4096,
        ..StoreConfig::default()
    };
    let (dir, store) = crate::helper::temp_store_with(config.clone()).await;
    let old = store.create_process(new_proc_in("old", "default")).await.unwrap().id;
    for i in 0..12 {
        store
            .append_output(&old, format!("old {i} {}\n", "o".repeat(300)), None)
            .await
            .unwrap();
    }
    let new = store.create_process(new_proc_in("new", "default")).await.unwrap().id;
    store.append_output(&new, "mine\n".into(), None).await.unwrap();
    complete(&store, &new).await;
    drop(store);
    let out = dir.path().join("output");
    // Plant the old process's first tail segment as one of "new".
    let tail = files_starting(&out, "old.")
        .into_iter()
        .find(|n| n.ends_with(".log") && n != "old.log")
        .expect("a tail segment");
    let start = tail.trim_start_matches("old.").trim_end_matches(".log").to_owned();
    for ext in ["log", "idx"] {
        std::fs::copy(
            out.join(format!("old.{start}.{ext}")),
            out.join(format!("new.{start}.{ext}")),
        )
        .unwrap();
    }
    let store = FileProcessStore::open(dir.path(), config).await.unwrap();
    let q = store.open_report().quarantined.clone();
    assert_eq!(q.len(), 2, "{q:?}");
    assert!(q.iter().all(|p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("new.{start}."))
    }));
    assert_eq!(store.get_process(&new).unwrap().output_bytes, 5);
    let got = crate::helper::drain(store.subscribe(&new, Some(0)).unwrap()).await;
    assert_eq!((got.text.as_str(), got.lagged.len()), ("mine\n", 0));
    assert_eq!(files_starting(&out, "new."), ["new.idx", "new.log"]);
    drop(dir);
}
