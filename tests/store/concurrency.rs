//! Concurrent writers: parallel creates and updates, racing creates of one
//! client-chosen id, and random mixed operations, after which disk and
//! memory agree.

use std::collections::BTreeMap;

use prochub::model::{ProcessPatch, Status};
use prochub::store::{ListQuery, OutputRange, StoreConfig, StoreError};
use serde_json::json;

use crate::helper::{new_proc, new_proc_in, record_on_disk, reopen, temp_store};

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
