//! Records: the status machine, id conflicts and validation, output
//! ranges, and what a failed delete or cancel leaves behind.

use prochub::model::{NewProcess, NewWorkspace, ProcessPatch, Status};
use prochub::store::{FileProcessStore, ListQuery, OutputRange, StoreConfig, StoreError};
use serde_json::json;

use crate::helper::{new_proc, new_proc_in, reopen, running, temp_store, tree};

#[tokio::test]
async fn status_machine_terminal_is_final() {
    let (_dir, store) = temp_store().await;
    let queued = store
        .create_process(NewProcess {
            status: Some(Status::Queued),
            ..new_proc("q")
        })
        .await
        .unwrap();
    assert_eq!(queued.started_at, None);
    let err = store
        .update_process(&queued.id, ProcessPatch::status(Status::Completed))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::BadTransition {
                from: Status::Queued,
                to: Status::Completed,
                ..
            }
        ),
        "{err}"
    );
    let err = store.append_output(&queued.id, "x".into(), None).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotRunning {
                status: Status::Queued,
                ..
            }
        ),
        "{err}"
    );
    let p = store
        .update_process(&queued.id, ProcessPatch::status(Status::Running))
        .await
        .unwrap();
    assert!(p.started_at.is_some());
    store.append_output(&p.id, "now running\n".into(), None).await.unwrap();
    let err = store
        .update_process(&p.id, ProcessPatch::status(Status::Queued))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::BadTransition { .. }), "{err}");
    let done = store
        .update_process(&p.id, ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    assert!(done.ended_at.is_some() && done.duration.is_some());
    assert_eq!(done.output_bytes, 12);
    for next in [Status::Queued, Status::Running, Status::Failed, Status::Cancelled] {
        let err = store
            .update_process(&p.id, ProcessPatch::status(next))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::BadTransition {
                    from: Status::Completed,
                    ..
                }
            ),
            "{next}: {err}"
        );
    }
    let err = store.append_output(&p.id, "late".into(), None).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotRunning {
                status: Status::Completed,
                ..
            }
        ),
        "{err}"
    );
    // Other fields stay editable, and restating the terminal status is a no-op.
    let edited = store
        .update_process(
            &p.id,
            ProcessPatch {
                name: Some("renamed".into()),
                status: Some(Status::Completed),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((edited.name.as_str(), edited.status), ("renamed", Status::Completed));
    assert_eq!(edited.ended_at, done.ended_at, "ended_at is set once");

    let q2 = store
        .create_process(NewProcess {
            status: Some(Status::Queued),
            ..new_proc("q2")
        })
        .await
        .unwrap();
    let c = store
        .update_process(&q2.id, ProcessPatch::status(Status::Cancelled))
        .await
        .unwrap();
    assert_eq!(c.status, Status::Cancelled);

    // Invalid input is refused and changes nothing.
    let before = store.get_process(&p.id).unwrap();
    for patch in [
        ProcessPatch {
            name: Some("  ".into()),
            ..Default::default()
        },
        ProcessPatch {
            metadata: Some(json!("not an object")),
            ..Default::default()
        },
        ProcessPatch {
            metadata: Some(json!({ "big": "x".repeat(prochub::model::MAX_METADATA_BYTES) })),
            ..Default::default()
        },
    ] {
        let err = store.update_process(&p.id, patch).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    }
    assert_eq!(store.get_process(&p.id).unwrap(), before);
}

#[tokio::test]
async fn an_existing_id_conflicts_with_the_stored_record() {
    let (_dir, store) = temp_store().await;
    let first = store.create_process(new_proc_in("offline-1", "default")).await.unwrap();
    let err = store
        .create_process(new_proc_in("offline-1", "default"))
        .await
        .unwrap_err();
    match err {
        StoreError::ProcessExists { existing } => assert_eq!(*existing, first),
        other => panic!("expected ProcessExists, got {other}"),
    }
    let err = store.create_process(new_proc_in("x", "nosuch")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::UnknownWorkspace(ref w) if w == "nosuch"),
        "{err}"
    );
    let err = store.create_process(new_proc("")).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid { field: "name", .. }), "{err}");
}

#[tokio::test]
async fn bad_ids_are_refused_before_touching_the_disk() {
    // The store lives in outer/store, so a path escaping it would show up
    // in outer (a shared /tmp would be too busy to compare).
    let outer = tempfile::tempdir().unwrap();
    let store = FileProcessStore::open(outer.path().join("store"), StoreConfig::default())
        .await
        .unwrap();
    let ok = running(&store, "real").await;
    let before = tree(outer.path());
    let long = "a".repeat(65);
    let bad = ["../x", "a/b", "a\0b", long.as_str(), "", "..", "x.json", "%2F", "é"];
    for id in bad {
        let is_invalid = |r: Result<(), StoreError>| {
            assert!(
                matches!(r, Err(StoreError::InvalidId { .. })),
                "{id:?} must be InvalidId, got {r:?}"
            )
        };
        is_invalid(store.create_process(new_proc_in(id, "default")).await.map(drop));
        is_invalid(store.create_process(new_proc_in("fine", id)).await.map(drop));
        // Every other call takes a `&Id`: an invalid id cannot reach it,
        // because it cannot be made (parse, don't validate).
        is_invalid(
            prochub::model::Id::parse(id)
                .map(drop)
                .map_err(|source| StoreError::InvalidId {
                    what: "process",
                    source,
                }),
        );
        is_invalid(
            store
                .create_workspace(NewWorkspace {
                    id: Some(id.into()),
                    name: "w".into(),
                    root_path: None,
                })
                .await
                .map(drop),
        );
        is_invalid(
            store
                .list_processes(&ListQuery {
                    workspace: Some(id.into()),
                    ..Default::default()
                })
                .map(drop),
        );
    }
    assert_eq!(
        tree(outer.path()),
        before,
        "nothing changed in or beside the store folder"
    );
    assert!(store.get_process(&ok).is_ok());
    // 64 characters is the longest valid id.
    let longest = "b".repeat(64);
    store.create_process(new_proc_in(&longest, "default")).await.unwrap();
}

#[tokio::test]
async fn output_reads_whole_from_offset_and_tail() {
    let (_dir, store) = temp_store().await;
    let id = running(&store, "out").await;
    assert_eq!(store.read_output(&id, OutputRange::All).await.unwrap(), b"");
    let r = store.append_output(&id, "hello ".into(), None).await.unwrap();
    assert_eq!((r.output_bytes, r.offset), (6, 6));
    let r = store.append_output(&id, "world".into(), None).await.unwrap();
    assert_eq!((r.output_bytes, r.offset), (11, 11));
    let read = |range| {
        let store = store.clone();
        let id = id.clone();
        async move { String::from_utf8(store.read_output(&id, range).await.unwrap()).unwrap() }
    };
    assert_eq!(read(OutputRange::All).await, "hello world");
    assert_eq!(read(OutputRange::From(6)).await, "world");
    assert_eq!(read(OutputRange::From(0)).await, "hello world");
    assert_eq!(read(OutputRange::From(11)).await, "");
    assert_eq!(read(OutputRange::From(1000)).await, "");
    assert_eq!(read(OutputRange::Tail(5)).await, "world");
    assert_eq!(read(OutputRange::Tail(0)).await, "");
    assert_eq!(read(OutputRange::Tail(1000)).await, "hello world");
    assert_eq!(store.get_process(&id).unwrap().output_bytes, 11);
    // output_bytes is derived from the log at open.
    let store = reopen(store, StoreConfig::default()).await;
    assert_eq!(store.get_process(&id).unwrap().output_bytes, 11);
    assert_eq!(store.read_output(&id, OutputRange::Tail(5)).await.unwrap(), b"world");
}

/// Regression: a delete that failed on the file system left the (still
/// existing, still running) process refusing every further append.
#[tokio::test]
async fn bug_failed_delete_left_appends_refused() {
    let (dir, store) = temp_store().await;
    let id = running(&store, "sticky").await;
    store.append_output(&id, "one\n".into(), None).await.unwrap();
    // Make the removal fail: the record's path becomes a non-empty folder.
    let path = dir.path().join(format!("processes/{id}.json"));
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir_all(path.join("blocker")).unwrap();
    let err = store.delete_process(&id).await.unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    assert_eq!(store.get_process(&id).unwrap().status, Status::Running);
    store
        .append_output(&id, "two\n".into(), None)
        .await
        .expect("the process is still running and must take output");
    assert_eq!(store.read_output(&id, OutputRange::All).await.unwrap(), b"one\ntwo\n");
}

/// Regression: a queued process whose cancel failed on the file system was
/// reopened for appends as if it were running: it took output (and said
/// "running" when refusing it) although its record still said queued.
#[tokio::test]
async fn bug_failed_cancel_of_a_queued_process_made_it_take_output() {
    let (dir, store) = temp_store().await;
    let new = NewProcess {
        status: Some(Status::Queued),
        ..new_proc("waiting")
    };
    let id = store.create_process(new).await.unwrap().id;
    // Make the record write fail: its path becomes a non-empty folder.
    let path = dir.path().join(format!("processes/{id}.json"));
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir_all(path.join("blocker")).unwrap();
    let err = store
        .update_process(&id, ProcessPatch::status(Status::Cancelled))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    assert_eq!(store.get_process(&id).unwrap().status, Status::Queued);
    match store.append_output(&id, "early\n".into(), None).await {
        Err(StoreError::NotRunning { status, .. }) => assert_eq!(status, Status::Queued),
        other => panic!("a queued process must refuse output, got {other:?}"),
    }
    // Once the disk is fine again the process moves on normally.
    std::fs::remove_dir_all(&path).unwrap();
    store
        .update_process(&id, ProcessPatch::status(Status::Running))
        .await
        .unwrap();
    store.append_output(&id, "now\n".into(), None).await.unwrap();
    assert_eq!(store.read_output(&id, OutputRange::All).await.unwrap(), b"now\n");
}
