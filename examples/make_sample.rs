//! Writes the sample store of `data/sample/` through the store itself, with
//! a deterministic clock, so the files are exactly what prochub writes.
//!
//! ```sh
//! cargo run --example make_sample -- data/sample
//! ```
//!
//! The folder is replaced. `LOCK` is removed at the end: it belongs to a
//! running owner, never to the repository. `tests/store/sample.rs` pins
//! the result: regenerate only on purpose, and update that test with it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use prochub::model::{NewProcess, NewWorkspace, ProcessPatch, Status};
use prochub::store::{FileProcessStore, StoreConfig};
use serde_json::json;

/// 2026-01-15T09:00:00Z; every reading of the clock advances it 20 s.
const START_MS: i64 = 1_768_467_600_000;
const TICK_MS: i64 = 20_000;

struct Step {
    id: &'static str,
    workspace: &'static str,
    name: &'static str,
    output: &'static [&'static str],
    end: Status,
    patch: fn() -> ProcessPatch,
    metadata: fn() -> serde_json::Value,
}

fn steps() -> Vec<Step> {
    vec![
        Step {
            id: "hello",
            workspace: "default",
            name: "Say hello",
            output: &["hello, world\n"],
            end: Status::Completed,
            patch: || ProcessPatch {
                result: Some(json!("greeted")),
                ..Default::default()
            },
            metadata: || json!({}),
        },
        Step {
            id: "webapp-build",
            workspace: "webapp",
            name: "cargo build --release",
            output: &[
                "   Compiling webapp v0.3.1 (/home/dev/webapp)\n",
                "    Finished `release` profile [optimized] target(s) in 41.27s\n",
            ],
            end: Status::Completed,
            patch: || ProcessPatch {
                result: Some(json!({"artifacts": ["target/release/webapp"], "warnings": 0})),
                exit_code: Some(Some(0)),
                ..Default::default()
            },
            metadata: || json!({"branch": "main", "commit": "4f2a9c1"}),
        },
        Step {
            id: "webapp-test",
            workspace: "webapp",
            name: "cargo test",
            output: &[
                "running 42 tests\n",
                "test api::list_orders ... ok\n",
                "test api::create_order ... FAILED\n",
                "test api::cancel_order ... FAILED\n",
                "\ntest result: FAILED. 40 passed; 2 failed\n",
            ],
            end: Status::Failed,
            patch: || ProcessPatch {
                error: Some(Some("2 tests failed".into())),
                exit_code: Some(Some(101)),
                ..Default::default()
            },
            metadata: || json!({"branch": "main", "commit": "4f2a9c1"}),
        },
        Step {
            id: "ml-train",
            workspace: "ml-pipeline",
            name: "Train classifier",
            output: &[
                "epoch 1/3  loss 0.812  acc 0.701\n",
                "epoch 2/3  loss 0.403  acc 0.884\n",
                "epoch 3/3  loss 0.211  acc 0.943 ✓\n",
            ],
            end: Status::Completed,
            patch: || ProcessPatch {
                result: Some(json!({"accuracy": 0.943, "model": "models/classifier-v7.onnx"})),
                ..Default::default()
            },
            metadata: || json!({"epochs": 3, "dataset": "reviews-2025"}),
        },
        Step {
            id: "ml-fetch",
            workspace: "ml-pipeline",
            name: "Fetch dataset",
            output: &["downloading reviews-2025.parquet\n", "  12% (61 MiB / 508 MiB)\n"],
            end: Status::Cancelled,
            patch: ProcessPatch::default,
            metadata: || json!({"source": "s3://datasets/reviews-2025"}),
        },
    ]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: make_sample <folder>")?);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let ticks = Arc::new(AtomicI64::new(0));
    let clock = move || {
        let n = ticks.fetch_add(1, Ordering::SeqCst);
        chrono::DateTime::from_timestamp_millis(START_MS + n * TICK_MS).expect("valid time")
    };
    let config = StoreConfig {
        clock: Arc::new(clock),
        ..StoreConfig::default()
    };
    let store = FileProcessStore::open(&dir, config).await?;
    for (id, name, root) in [
        ("webapp", "Web app", "/home/dev/webapp"),
        ("ml-pipeline", "ML pipeline", "/home/dev/ml-pipeline"),
    ] {
        store
            .create_workspace(NewWorkspace {
                id: Some(id.into()),
                name: name.into(),
                root_path: Some(root.into()),
            })
            .await?;
    }
    for step in steps() {
        let metadata = (step.metadata)().as_object().cloned();
        let id = store
            .create_process(NewProcess {
                id: Some(step.id.into()),
                workspace: Some(step.workspace.into()),
                name: step.name.into(),
                metadata,
                ..Default::default()
            })
            .await?
            .id;
        for part in step.output {
            store.append_output(&id, (*part).into(), None).await?;
        }
        let patch = ProcessPatch {
            status: Some(step.end),
            ..(step.patch)()
        };
        store.update_process(&id, patch).await?;
    }
    drop(store);
    std::fs::remove_file(dir.join("LOCK"))?;
    println!("sample store written to {}", dir.display());
    Ok(())
}
