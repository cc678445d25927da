//! Workspaces (default, cascade, concurrent deletes) and lifecycle events.

use prochub::model::{NewWorkspace, ProcessPatch, Status};
use prochub::store::{FileProcessStore, StoreConfig, StoreError};

use crate::helper::{new_proc_in, reopen, temp_store};

#[tokio::test]
async fn workspaces_default_always_exists_and_delete_needs_cascade() {
    let (dir, store) = temp_store().await;
    let ws = store.list_workspaces();
    assert_eq!(ws.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), ["default"]);
    assert!(matches!(
        store.delete_workspace(&crate::helper::id("default"), true).await,
        Err(StoreError::DefaultWorkspace)
    ));

    let (w, created) = store
        .create_workspace(NewWorkspace {
            id: Some("proj".into()),
            name: "Project".into(),
            root_path: Some("/src/proj".into()),
        })
        .await
        .unwrap();
    assert!(created);
    let (again, created) = store
        .create_workspace(NewWorkspace {
            id: Some("proj".into()),
            name: "Other name".into(),
            root_path: None,
        })
        .await
        .unwrap();
    assert!(!created, "same id: the stored one is returned");
    assert_eq!(again, w);

    let a = store.create_process(new_proc_in("a", "proj")).await.unwrap();
    store.append_output(&a.id, "output of a".into(), None).await.unwrap();
    store.create_process(new_proc_in("b", "proj")).await.unwrap();
    let keep = store.create_process(new_proc_in("keep", "default")).await.unwrap();
    let err = store
        .delete_workspace(&crate::helper::id("proj"), false)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WorkspaceNotEmpty { count: 2, .. }), "{err}");
    assert!(
        store.get_workspace(&crate::helper::id("proj")).is_ok(),
        "a refused delete changes nothing"
    );

    store.delete_workspace(&crate::helper::id("proj"), true).await.unwrap();
    assert!(matches!(
        store.get_workspace(&crate::helper::id("proj")),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.get_process(&crate::helper::id("a")),
        Err(StoreError::NotFound { .. })
    ));
    assert!(!dir.path().join("processes/a.json").exists());
    assert!(!dir.path().join("output/a.log").exists());
    assert!(!dir.path().join("workspaces/proj.json").exists());
    assert_eq!(store.get_process(&crate::helper::id("keep")).unwrap(), keep);
    assert!(matches!(
        store.delete_workspace(&crate::helper::id("proj"), true).await,
        Err(StoreError::NotFound { .. })
    ));

    // `default` comes back even if its file was removed while stopped.
    let store = reopen(store, StoreConfig::default()).await;
    assert!(store.get_workspace(&crate::helper::id("proj")).is_err());
    let path = dir.path().join("workspaces/default.json");
    drop(store);
    std::fs::remove_file(&path).unwrap();
    let store = FileProcessStore::open(dir.path(), StoreConfig::default())
        .await
        .unwrap();
    assert!(store.get_workspace(&crate::helper::id("default")).is_ok());
    assert!(path.exists());
}

/// Regression: two concurrent deletes of one workspace both succeeded and
/// both published `workspace-removed` (the second one checked existence
/// before waiting for the first to finish).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bug_concurrent_workspace_deletes_both_succeeded() {
    let (_dir, store) = temp_store().await;
    for round in 0..20 {
        let id = format!("w{round}");
        store
            .create_workspace(NewWorkspace {
                id: Some(id.clone()),
                name: id.clone(),
                root_path: None,
            })
            .await
            .unwrap();
        store
            .create_process(new_proc_in(&format!("p{round}"), &id))
            .await
            .unwrap();
        let mut events = store.events().subscribe();
        let deletes: Vec<_> = (0..2)
            .map(|_| {
                let (store, id) = (store.clone(), id.clone());
                tokio::spawn(async move { store.delete_workspace(&crate::helper::id(&id), true).await })
            })
            .collect();
        let mut ok = 0;
        for d in deletes {
            match d.await.unwrap() {
                Ok(()) => ok += 1,
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok, 1, "round {round}: exactly one delete wins");
        let mut removed = 0;
        while let Ok(ev) = events.try_recv() {
            if ev.kind == prochub::model::EventKind::WorkspaceRemoved {
                removed += 1;
            }
        }
        assert_eq!(removed, 1, "round {round}: one workspace-removed event");
    }
}

#[tokio::test]
async fn lifecycle_events_are_numbered_and_carry_the_records() {
    use prochub::model::EventKind::*;
    let (_dir, store) = temp_store().await;
    let mut rx = store.events().subscribe();
    let (w, _) = store
        .create_workspace(NewWorkspace {
            id: Some("ev".into()),
            name: "Events".into(),
            root_path: None,
        })
        .await
        .unwrap();
    let p = store.create_process(new_proc_in("e1", "ev")).await.unwrap();
    let done = store
        .update_process(&crate::helper::id("e1"), ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    store.delete_workspace(&crate::helper::id("ev"), true).await.unwrap();
    let mut got = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        got.push(ev);
    }
    let kinds: Vec<_> = got.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            WorkspaceAdded,
            ProcessAdded,
            ProcessUpdated,
            ProcessRemoved,
            WorkspaceRemoved
        ]
    );
    let seqs: Vec<_> = got.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|s| s[1] == s[0] + 1), "consecutive: {seqs:?}");
    assert_eq!(got[0].event().workspace.as_ref(), Some(&w));
    assert_eq!(got[1].event().process.as_ref(), Some(&p));
    assert_eq!(got[2].event().process.as_ref(), Some(&done));
    assert_eq!(got[3].workspace, "ev");
    let json: serde_json::Value = serde_json::from_str(&got[1].json).unwrap();
    assert_eq!(json["type"], "process-added");
    // A reconnect after the second event replays the rest.
    let last = store.events().id_of(&got[1]);
    let (resume, mut replay) = store.events().resume(&last);
    assert_eq!(resume, prochub::store::Resume::Replay);
    let replayed: Vec<_> = std::iter::from_fn(|| replay.try_recv().ok()).map(|e| e.seq).collect();
    assert_eq!(replayed, seqs[2..]);
}

/// Regression: lifecycle event timestamps came from the real clock while
/// the records they carry came from the store's (injected) clock.
#[tokio::test]
async fn bug_event_timestamps_ignored_the_store_clock() {
    let clock = crate::helper::TestClock::at(crate::helper::t0());
    let (_dir, store) = crate::helper::temp_store_with(clock.config()).await;
    let mut rx = store.events().subscribe();
    let p = store.create_process(new_proc_in("c1", "default")).await.unwrap();
    let later = crate::helper::t0() + chrono::Duration::minutes(5);
    clock.set(later);
    store
        .update_process(&crate::helper::id("c1"), ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    let added = rx.try_recv().unwrap();
    assert_eq!(added.event().timestamp, p.created_at);
    assert_eq!(added.event().timestamp, crate::helper::t0());
    let updated = rx.try_recv().unwrap();
    assert_eq!(updated.event().timestamp, later);
    let json: serde_json::Value = serde_json::from_str(&updated.json).unwrap();
    assert_eq!(json["timestamp"], "2026-01-15T12:05:00.000Z");
}

/// Regression: the replay ring of lifecycle events was bounded by count
/// only (1024), so events carrying large records (a `result` of up to a
/// request body each) could pin gigabytes. It is now bounded by bytes too:
/// a reconnect from before the evicted events gets a reset, and so does a
/// live subscriber that was that far behind (issue 8: the live channel
/// used to keep 4,096 events of its own for it).
#[tokio::test]
async fn bug_event_ring_kept_1024_events_whatever_their_size() {
    use prochub::store::{EVENT_RING_BYTES, Resume};
    use tokio::sync::broadcast::error::TryRecvError;
    let (_dir, store) = temp_store().await;
    let p = store.create_process(new_proc_in("big", "default")).await.unwrap();
    let mut rx = store.events().subscribe();
    let big = serde_json::json!("x".repeat(512 * 1024));
    let updates = EVENT_RING_BYTES / (512 * 1024) + 8;
    for _ in 0..updates {
        let patch = ProcessPatch {
            result: Some(big.clone()),
            ..Default::default()
        };
        store.update_process(&p.id, patch).await.unwrap();
    }
    // Seq 1 is the process-added of this fresh store; the updates follow.
    let first_seq = 2;
    let id_of = |seq: usize| format!("{}-{seq}", store.events().epoch());
    assert_eq!(
        store.events().resume(&id_of(first_seq)).0,
        Resume::Reset,
        "{updates} events of 512 KiB cannot all be kept for replay"
    );
    assert!(
        matches!(rx.try_recv(), Err(TryRecvError::Lagged(n)) if n == updates as u64),
        "a subscriber that read none of them lagged"
    );
    // The recent ones still replay.
    let (resume, mut replay) = store.events().resume(&id_of(first_seq + updates - 10));
    assert_eq!(resume, Resume::Replay, "the last events must replay");
    assert_eq!(std::iter::from_fn(|| replay.try_recv().ok()).count(), 9);
}
