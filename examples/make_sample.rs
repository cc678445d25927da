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

use prochub::model::StreamKind::{self, Stderr, Stdout};
use prochub::model::{NewProcess, NewWorkspace, ProcessPatch, Status};
use prochub::store::{FileProcessStore, StoreConfig};
use serde_json::json;

/// 2026-01-15T09:00:00Z: the store opens (the `default` workspace).
const START_MS: i64 = 1_768_467_600_000;
/// Each workspace and each process start this much after the one before;
/// a process runs for this long, its output spread evenly inside.
const TICK_MS: i64 = 20_000;

struct Step {
    id: &'static str,
    workspace: &'static str,
    name: &'static str,
    /// Each append with the pipe it came from (cargo writes its progress
    /// to stderr, test failures are reported there too).
    output: &'static [(&'static str, Option<StreamKind>)],
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
            output: &[("hello, world\n", None)],
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
                ("   Compiling webapp v0.3.1 (/home/dev/webapp)\n", Some(Stderr)),
                (
                    "    Finished `release` profile [optimized] target(s) in 41.27s\n",
                    Some(Stderr),
                ),
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
                ("running 42 tests\n", Some(Stdout)),
                ("test api::list_orders ... ok\n", Some(Stdout)),
                ("test api::create_order ... FAILED\n", Some(Stdout)),
                ("test api::cancel_order ... FAILED\n", Some(Stdout)),
                ("\ntest result: FAILED. 40 passed; 2 failed\n", Some(Stderr)),
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
                ("epoch 1/3  loss 0.812  acc 0.701\n", None),
                ("epoch 2/3  loss 0.403  acc 0.884\n", None),
                ("epoch 3/3  loss 0.211  acc 0.943 ✓\n", None),
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
            output: &[
                ("downloading reviews-2025.parquet\n", None),
                ("  12% (61 MiB / 508 MiB)\n", None),
            ],
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
    // The time every reading of the clock returns, set before each call.
    let now = Arc::new(AtomicI64::new(START_MS));
    let at = now.clone();
    let clock = move || chrono::DateTime::from_timestamp_millis(at.load(Ordering::SeqCst)).expect("valid time");
    let mut t = START_MS;
    let set = |ms: i64| now.store(ms, Ordering::SeqCst);
    let config = StoreConfig {
        clock: Arc::new(clock),
        ..StoreConfig::default()
    };
    let store = FileProcessStore::open(&dir, config).await?;
    for (id, name, root) in [
        ("webapp", "Web app", "/home/dev/webapp"),
        ("ml-pipeline", "ML pipeline", "/home/dev/ml-pipeline"),
    ] {
        t += TICK_MS;
        set(t);
        store
            .create_workspace(NewWorkspace {
                id: Some(id.into()),
                name: name.into(),
                root_path: Some(root.into()),
            })
            .await?;
    }
    for step in steps() {
        t += TICK_MS;
        set(t);
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
        let gap = TICK_MS / (step.output.len() as i64 + 1) / 1000 * 1000;
        for (i, (part, pipe)) in step.output.iter().enumerate() {
            set(t + (i as i64 + 1) * gap);
            store.append_output(&id, (*part).into(), *pipe).await?;
        }
        t += TICK_MS;
        set(t);
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
