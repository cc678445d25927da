//! Pins the on-disk format with the committed sample store `data/sample/`
//! (written by `cargo run --example make_sample -- data/sample`). If this
//! test breaks, the store can no longer read what it wrote before: that is
//! a breaking change, not a test to update casually. (`data/sample/LOCK`
//! is git-ignored: serve a copy, as the README's tour does.)

use std::collections::BTreeMap;
use std::path::Path;

use prochub::model::Status;
use prochub::model::StreamKind::{self, Stderr, Stdout};
use prochub::store::{FileProcessStore, FollowEvent, ListQuery, OutputRange, StoreConfig};
use serde_json::json;

use crate::helper::copy_tree;

fn sample_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/data/sample"))
}

#[tokio::test]
async fn the_sample_store_loads_with_exact_values() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(sample_dir(), tmp.path());
    let store = FileProcessStore::open(tmp.path(), StoreConfig::default())
        .await
        .unwrap();
    let report = store.open_report();
    assert_eq!((report.processes, report.workspaces), (5, 3));
    assert!(report.quarantined.is_empty(), "{:?}", report.quarantined);
    assert_eq!((report.temp_removed, report.orphan_logs_removed), (0, 0));

    let ws: Vec<_> = store
        .list_workspaces()
        .into_iter()
        .map(|w| serde_json::to_value(w).unwrap())
        .collect();
    assert_eq!(
        ws,
        [
            json!({"id": "default", "name": "Default", "root_path": null, "created_at": "2026-01-15T09:00:00.000Z"}),
            json!({"id": "ml-pipeline", "name": "ML pipeline", "root_path": "/home/dev/ml-pipeline", "created_at": "2026-01-15T09:00:40.000Z"}),
            json!({"id": "webapp", "name": "Web app", "root_path": "/home/dev/webapp", "created_at": "2026-01-15T09:00:20.000Z"}),
        ]
    );

    // One record in full, as the API serves it.
    assert_eq!(
        serde_json::to_value(store.get_process(&crate::helper::id("webapp-test")).unwrap()).unwrap(),
        json!({
            "id": "webapp-test",
            "workspace": "webapp",
            "name": "cargo test",
            "status": "failed",
            "created_at": "2026-01-15T09:02:20.000Z",
            "updated_at": "2026-01-15T09:02:40.000Z",
            "started_at": "2026-01-15T09:02:20.000Z",
            "ended_at": "2026-01-15T09:02:40.000Z",
            "duration": "20s",
            "result": null,
            "error": "2 tests failed",
            "metadata": {"branch": "main", "commit": "4f2a9c1"},
            "command": null,
            "exit_code": 101,
            "output_bytes": 156,
            "output_truncated": false,
            "output_elided": 0
        })
    );

    // Every record: status, workspace, key fields, and output_bytes equal
    // to its log (both in memory and in the file).
    let expected: BTreeMap<&str, (&str, Status, serde_json::Value, &str)> = BTreeMap::from([
        (
            "hello",
            ("default", Status::Completed, json!("greeted"), "hello, world\n"),
        ),
        (
            "webapp-build",
            (
                "webapp",
                Status::Completed,
                json!({"artifacts": ["target/release/webapp"], "warnings": 0}),
                "   Compiling webapp v0.3.1 (/home/dev/webapp)\n    Finished `release` profile [optimized] target(s) in 41.27s\n",
            ),
        ),
        (
            "webapp-test",
            (
                "webapp",
                Status::Failed,
                json!(null),
                "running 42 tests\ntest api::list_orders ... ok\ntest api::create_order ... FAILED\ntest api::cancel_order ... FAILED\n\ntest result: FAILED. 40 passed; 2 failed\n",
            ),
        ),
        (
            "ml-train",
            (
                "ml-pipeline",
                Status::Completed,
                json!({"accuracy": 0.943, "model": "models/classifier-v7.onnx"}),
                "epoch 1/3  loss 0.812  acc 0.701\nepoch 2/3  loss 0.403  acc 0.884\nepoch 3/3  loss 0.211  acc 0.943 ✓\n",
            ),
        ),
        (
            "ml-fetch",
            (
                "ml-pipeline",
                Status::Cancelled,
                json!(null),
                "downloading reviews-2025.parquet\n  12% (61 MiB / 508 MiB)\n",
            ),
        ),
    ]);
    let all = store.list_processes(&ListQuery::default()).unwrap().items;
    assert_eq!(
        all.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["ml-fetch", "ml-train", "webapp-test", "webapp-build", "hello"],
        "newest first"
    );
    for p in &all {
        let (ws, status, result, output) = &expected[p.id.as_str()];
        assert_eq!((p.workspace.as_str(), p.status), (*ws, *status), "{}", p.id);
        assert_eq!(p.result.clone().unwrap_or(json!(null)), *result, "{}", p.id);
        assert!(p.ended_at.is_some() && p.duration.as_deref() == Some("20s"), "{}", p.id);
        let log = store.read_output(&p.id, OutputRange::All).await.unwrap();
        assert_eq!(String::from_utf8(log).unwrap(), *output, "{}", p.id);
        assert_eq!(p.output_bytes, output.len() as u64, "{}", p.id);
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(tmp.path().join(format!("processes/{}.json", p.id))).unwrap())
                .unwrap();
        assert_eq!(
            file["output_bytes"],
            json!(output.len()),
            "{}: the file's output_bytes",
            p.id
        );
        assert_eq!(
            file,
            serde_json::to_value(p).unwrap(),
            "{}: file and served record differ",
            p.id
        );
    }
    // Finished processes replay and end, as the README tour shows.
    let f = store.subscribe(&crate::helper::id("ml-train"), Some(0)).unwrap();
    let got = crate::helper::drain(f).await;
    assert_eq!(got.text, expected["ml-train"].3);
    assert_eq!(got.status.unwrap().status, Status::Completed);

    // The append index: one record per append, with its SEQ (store-wide,
    // in the order the sample was written), its time inside the process's
    // run and its pipe; replayed chunks carry them.
    let replayed = chunks(&store, "webapp-test").await;
    assert_eq!(
        replayed,
        [
            ("running 42 tests\n", 4, "2026-01-15T09:02:23.000Z", Some(Stdout)),
            (
                "test api::list_orders ... ok\n",
                5,
                "2026-01-15T09:02:26.000Z",
                Some(Stdout)
            ),
            (
                "test api::create_order ... FAILED\n",
                6,
                "2026-01-15T09:02:29.000Z",
                Some(Stdout)
            ),
            (
                "test api::cancel_order ... FAILED\n",
                7,
                "2026-01-15T09:02:32.000Z",
                Some(Stdout)
            ),
            (
                "\ntest result: FAILED. 40 passed; 2 failed\n",
                8,
                "2026-01-15T09:02:35.000Z",
                Some(Stderr)
            ),
        ]
        .map(|(c, seq, ts, pipe)| (c.to_owned(), seq, ts.to_owned(), pipe))
    );
    for (id, want) in [
        ("hello", &[1][..]),
        ("webapp-build", &[2, 3]),
        ("ml-train", &[9, 10, 11]),
        ("ml-fetch", &[12, 13]),
    ] {
        let got: Vec<u64> = chunks(&store, id).await.into_iter().map(|c| c.1).collect();
        assert_eq!(got, want, "{id}");
    }
    assert_eq!(store.last_seq(), 13, "the counter resumes after the largest SEQ");
    let build = chunks(&store, "webapp-build").await;
    assert!(build.iter().all(|c| c.3 == Some(Stderr)), "{build:?}");
    assert_eq!(build[0].2, "2026-01-15T09:01:46.000Z");
}

/// Each replayed chunk of a finished sample process: content, SEQ, time,
/// pipe.
async fn chunks(store: &FileProcessStore, id: &str) -> Vec<(String, u64, String, Option<StreamKind>)> {
    let mut f = store.subscribe(&crate::helper::id(id), Some(0)).unwrap();
    let mut out = Vec::new();
    while let Some(ev) = f.next().await {
        if let FollowEvent::Chunk(c) = ev {
            out.push((c.content.clone(), c.seq, prochub::model::format_ts(&c.ts()), c.stream));
        }
    }
    out
}

/// A store written before the append index (logs only) opens: each log
/// gets an index of one record with the log's mtime as its time, no pipe,
/// and fresh SEQs; the output reads as before and new appends go on from
/// there.
#[tokio::test]
async fn a_store_from_before_the_index_opens_and_gets_indexes() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(sample_dir(), tmp.path());
    let out = tmp.path().join("output");
    let mtime = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_768_467_700_000);
    for id in ["hello", "webapp-build", "webapp-test", "ml-train", "ml-fetch"] {
        std::fs::remove_file(out.join(format!("{id}.idx"))).unwrap();
        let log = std::fs::File::options()
            .write(true)
            .open(out.join(format!("{id}.log")))
            .unwrap();
        log.set_modified(mtime).unwrap();
    }
    let store = FileProcessStore::open(tmp.path(), StoreConfig::default())
        .await
        .unwrap();
    let report = store.open_report();
    assert_eq!(report.indexes_synthesized, 5);
    assert!(report.trimmed.is_empty() && report.quarantined.is_empty());
    for id in ["hello", "webapp-build", "webapp-test", "ml-train", "ml-fetch"] {
        assert!(out.join(format!("{id}.idx")).exists(), "{id}: index written");
        let got = chunks(&store, id).await;
        assert_eq!(got.len(), 1, "{id}: one record for the whole log");
        let (text, seq, ts, pipe) = &got[0];
        assert_eq!(ts, "2026-01-15T09:01:40.000Z", "{id}: the log's mtime");
        assert_eq!(*pipe, None);
        assert!((1..=5).contains(seq), "{id}: {seq}");
        let p = store.get_process(&crate::helper::id(id)).unwrap();
        assert_eq!(p.output_bytes, text.len() as u64);
    }
    assert_eq!(store.last_seq(), 5);
    let id = crate::helper::running(&store, "after").await;
    store.append_output(&id, "new\n".into(), None).await.unwrap();
    store
        .update_process(&id, prochub::model::ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    assert_eq!(chunks(&store, id.as_str()).await[0].1, 6);
}
