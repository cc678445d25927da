//! Records: concurrent creates and updates, list and pagination, the status
//! machine, id validation, output ranges, random mixed operations.

use std::collections::{BTreeMap, HashSet};

use prochub::model::{NewProcess, NewWorkspace, ProcessPatch, Status};
use prochub::store::{FileProcessStore, ListQuery, OutputRange, StoreConfig, StoreError};
use serde_json::json;

use crate::helper::{
    TestClock, new_proc, new_proc_in, record_on_disk, reopen, running, t0, temp_store, temp_store_with, tree,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_parallel_creates_are_all_persisted() {
    let (dir, store) = temp_store().await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.create_process(new_proc(&format!("p{i}"))).await })
        })
        .collect();
    let mut made = BTreeMap::new();
    for t in tasks {
        let p = t.await.unwrap().expect("create");
        made.insert(p.id.clone(), p);
    }
    assert_eq!(made.len(), 20, "server-made ids are unique under concurrency");
    for (id, p) in &made {
        assert_eq!(
            &record_on_disk(dir.path(), id),
            p,
            "the file is exactly what create returned"
        );
    }
    let store = reopen(store, StoreConfig::default()).await;
    assert_eq!(store.process_count(), 20);
    for (id, p) in &made {
        assert_eq!(&store.get_process(id).unwrap(), p);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_parallel_updates_on_overlapping_ids_leave_one_complete_write_each() {
    let (dir, store) = temp_store().await;
    let ids: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    for id in &ids {
        let mut n = new_proc(id);
        n.id = Some(id.clone());
        store.create_process(n).await.unwrap();
    }
    // Writer w updates ids w%3 and (w+1)%3, setting several fields that all
    // carry its number: a torn or interleaved merge would mix numbers.
    let tasks: Vec<_> = (0..10)
        .map(|w| {
            let (store, ids) = (store.clone(), ids.clone());
            tokio::spawn(async move {
                for id in [&ids[w % 3], &ids[(w + 1) % 3]] {
                    let patch = ProcessPatch {
                        name: Some(format!("writer {w}")),
                        result: Some(json!({ "writer": w })),
                        error: Some(Some(format!("e{w}"))),
                        metadata: Some(json!({ "writer": w, format!("seen_{w}"): true })),
                        exit_code: Some(Some(w as i32)),
                        ..Default::default()
                    };
                    store
                        .update_process(&crate::helper::id(id), patch)
                        .await
                        .expect("update");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut in_memory = Vec::new();
    for id in &ids {
        let p = store.get_process(&crate::helper::id(id)).unwrap();
        let w = p.exit_code.expect("some writer won") as u64;
        assert_eq!(p.name, format!("writer {w}"), "{id}: fields from different writes");
        assert_eq!(p.result, Some(json!({ "writer": w })));
        assert_eq!(p.error.as_deref(), Some(format!("e{w}").as_str()));
        assert_eq!(p.metadata["writer"], json!(w));
        // Metadata merges: every writer that touched this id left its key.
        let seen = p.metadata.keys().filter(|k| k.starts_with("seen_")).count();
        let touching = (0..10).filter(|x| ids[x % 3] == *id || ids[(x + 1) % 3] == *id).count();
        assert_eq!(seen, touching, "{id}: a merge was lost");
        assert_eq!(record_on_disk(dir.path(), id), p, "{id}: disk differs from memory");
        in_memory.push(p);
    }
    let store = reopen(store, StoreConfig::default()).await;
    for p in in_memory {
        assert_eq!(store.get_process(&p.id).unwrap(), p, "reopened store differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_processes_list_filter_and_paginate_exactly() {
    let (_dir, store) = temp_store_with(TestClock::at(t0()).config()).await;
    for w in ["alpha", "beta"] {
        store
            .create_workspace(NewWorkspace {
                id: Some(w.into()),
                name: w.into(),
                root_path: None,
            })
            .await
            .unwrap();
    }
    // Created 50 at a time under a clock that stands still: every record
    // has the same created_at, so order and cursors rest on the id
    // tie-break (the hard case for a (created_at, id) cursor).
    let mut by_ws: BTreeMap<&str, HashSet<String>> = BTreeMap::new();
    let mut all = Vec::new();
    for batch in (0..500).collect::<Vec<usize>>().chunks(50) {
        let tasks: Vec<_> = batch
            .iter()
            .map(|&i| {
                let store = store.clone();
                let ws = ["default", "alpha", "beta"][i % 3];
                tokio::spawn(async move { (ws, store.create_process(new_proc_in(&format!("p{i:03}"), ws)).await) })
            })
            .collect();
        for t in tasks {
            let (ws, p) = t.await.unwrap();
            let p = p.expect("create");
            by_ws.entry(ws).or_default().insert(p.id.to_string());
            all.push(p.id);
        }
    }
    let page = store
        .list_processes(&ListQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.items.len(), 500);
    assert!(page.next_cursor.is_none());
    let listed: Vec<_> = page.items.iter().map(|p| p.id.clone()).collect();
    let mut newest_first = all.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first, "newest first");

    for (ws, ids) in &by_ws {
        let page = store
            .list_processes(&ListQuery {
                workspace: Some(ws.to_string()),
                ..Default::default()
            })
            .unwrap();
        let got: HashSet<String> = page.items.iter().map(|p| p.id.to_string()).collect();
        assert_eq!(&got, ids, "workspace filter {ws} is exact");
        assert!(page.items.iter().all(|p| p.workspace == *ws));
    }
    let none = store
        .list_processes(&ListQuery {
            workspace: Some("nosuch".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(none.items.is_empty());

    for (limit, ws) in [
        (7, None),
        (1, Some("beta")),
        (100, Some("alpha")),
        (499, None),
        (500, None),
    ] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .list_processes(&ListQuery {
                    workspace: ws.map(String::from),
                    limit: Some(limit),
                    cursor: cursor.take(),
                    ..Default::default()
                })
                .unwrap();
            assert!(page.items.len() <= limit);
            seen.extend(page.items.into_iter().map(|p| p.id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let expected: Vec<_> = newest_first
            .iter()
            .filter(|id| ws.is_none_or(|w| by_ws[w].contains(id.as_str())))
            .cloned()
            .collect();
        assert_eq!(
            seen, expected,
            "pages of {limit} in {ws:?} cover everything once, in order"
        );
    }

    // Status filter, and bad list input.
    store
        .update_process(&crate::helper::id("p007"), ProcessPatch::status(Status::Failed))
        .await
        .unwrap();
    let failed = store
        .list_processes(&ListQuery {
            status: Some(Status::Failed),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(failed.items.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["p007"]);
    for limit in [0, prochub::store::MAX_LIMIT + 1] {
        let q = ListQuery {
            limit: Some(limit),
            ..Default::default()
        };
        assert!(matches!(store.list_processes(&q), Err(StoreError::Invalid { .. })));
    }
    let q = ListQuery {
        cursor: Some("garbage".into()),
        ..Default::default()
    };
    assert!(matches!(store.list_processes(&q), Err(StoreError::BadCursor(_))));
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_creates_of_one_client_id_make_exactly_one_record() {
    let (dir, store) = temp_store().await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut n = new_proc_in("offline-42", "default");
                n.name = format!("attempt {i}");
                store.create_process(n).await
            })
        })
        .collect();
    let mut made = Vec::new();
    let mut existing = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(p) => made.push(p),
            // Regression (bug: a create racing an in-flight create of the
            // same id got `create_in_progress` without the record, and the
            // client's offline queue dropped it as refused): every loser
            // now waits and gets the stored record.
            Err(StoreError::ProcessExists { existing: e }) => existing.push(*e),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(made.len(), 1, "one create wins");
    assert_eq!(existing.len(), 9);
    assert!(
        existing.iter().all(|e| *e == made[0]),
        "every loser sees the winner's record"
    );
    assert_eq!(record_on_disk(dir.path(), "offline-42"), made[0]);
    assert_eq!(store.get_process(&crate::helper::id("offline-42")).unwrap(), made[0]);
    match store.create_process(new_proc_in("offline-42", "default")).await {
        Err(StoreError::ProcessExists { existing }) => assert_eq!(*existing, made[0]),
        other => panic!("expected ProcessExists, got {other:?}"),
    }
}

/// Many tasks doing random mixed operations on a shared set of ids: after
/// all of them, the folder holds exactly the indexed records, each file is
/// the indexed record (output_bytes aside, which the file may lag), and a
/// reopened store equals the one in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_mixed_operations_leave_disk_and_memory_equal() {
    let (dir, store) = temp_store().await;
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut next = move |n: u64| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % n
                };
                for step in 0..40 {
                    let id = format!("m{}", next(12));
                    let r = match next(6) {
                        0 | 1 => store.create_process(new_proc_in(&id, "default")).await.map(drop),
                        2 => store
                            .update_process(
                                &crate::helper::id(&id),
                                ProcessPatch {
                                    name: Some(format!("t{t} s{step}")),
                                    metadata: Some(json!({ format!("t{t}"): step })),
                                    ..Default::default()
                                },
                            )
                            .await
                            .map(drop),
                        3 => store
                            .append_output(&crate::helper::id(&id), format!("[{t}:{step}]"), None)
                            .await
                            .map(drop),
                        4 => store
                            .update_process(&crate::helper::id(&id), ProcessPatch::status(Status::Completed))
                            .await
                            .map(drop),
                        _ => store.delete_process(&crate::helper::id(&id)).await,
                    };
                    match r {
                        Ok(())
                        | Err(StoreError::NotFound { .. })
                        | Err(StoreError::ProcessExists { .. })
                        | Err(StoreError::NotRunning { .. })
                        | Err(StoreError::BadTransition { .. }) => {}
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let in_memory = store
        .list_processes(&ListQuery {
            limit: Some(1000),
            ..Default::default()
        })
        .unwrap()
        .items;
    assert!(!in_memory.is_empty(), "the random walk should leave some records");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir.path().join("processes"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".json")
                .to_owned()
        })
        .collect();
    on_disk.sort();
    let mut ids: Vec<String> = in_memory.iter().map(|p| p.id.to_string()).collect();
    ids.sort();
    assert_eq!(on_disk, ids, "the folder holds exactly the indexed records");
    for p in &in_memory {
        let file = record_on_disk(dir.path(), &p.id);
        assert_eq!(
            prochub::model::Process {
                output_bytes: p.output_bytes,
                ..file
            },
            *p,
            "{}: file differs from memory",
            p.id
        );
        let log = store.read_output(&p.id, OutputRange::All).await.unwrap();
        assert_eq!(log.len() as u64, p.output_bytes);
    }
    let store = reopen(store, StoreConfig::default()).await;
    for p in &in_memory {
        assert_eq!(&store.get_process(&p.id).unwrap(), p, "{}: reopened differs", p.id);
    }
    assert_eq!(store.process_count(), in_memory.len());
}

/// Regression: cursors carried `created_at` in whole milliseconds, so with
/// records whose `created_at` has finer precision on disk (hand-written or
/// from another tool) the next page started at the wrong key and records
/// were skipped.
#[tokio::test]
async fn bug_cursor_skipped_records_with_sub_millisecond_created_at() {
    let (dir, store) = temp_store_with(TestClock::at(t0()).config()).await;
    for id in ["a", "b", "c"] {
        store.create_process(new_proc_in(id, "default")).await.unwrap();
    }
    for (id, at) in [
        ("a", "2026-01-15T12:00:00.000500Z"),
        ("b", "2026-01-15T12:00:00.000200Z"),
        ("c", "2026-01-15T12:00:00.000Z"),
    ] {
        let path = dir.path().join(format!("processes/{id}.json"));
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["created_at"] = json!(at);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    }
    let store = reopen(store, StoreConfig::default()).await;
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let page = store
            .list_processes(&ListQuery {
                limit: Some(1),
                cursor: cursor.take(),
                ..Default::default()
            })
            .unwrap();
        seen.extend(page.items.into_iter().map(|p| p.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c"], "newest first, each once");
}
