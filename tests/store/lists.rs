//! The process list: newest first, filters, page sizes and cursors that
//! walk every record exactly once.

use std::collections::{BTreeMap, HashSet};

use prochub::model::{NewWorkspace, ProcessPatch, Status};
use prochub::store::{ListQuery, StoreConfig, StoreError};
use serde_json::json;

use crate::helper::{TestClock, new_proc_in, reopen, t0, temp_store_with};

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
            status: Some(Status::Failed.into()),
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
