//! Pins the on-disk format with the committed sample store `data/sample/`
//! (written by `cargo run --example make_sample -- data/sample`). If this
//! test breaks, the store can no longer read what it wrote before: that is
//! a breaking change, not a test to update casually. (`data/sample/LOCK`
//! is git-ignored: serve a copy, as the README's tour does.)

use std::collections::BTreeMap;
use std::path::Path;

use prochub::model::Status;
use prochub::store::{FileProcessStore, ListQuery, OutputRange, StoreConfig};
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
            "output_truncated": false
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
}
