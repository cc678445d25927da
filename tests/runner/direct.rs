//! Server-run commands against a store in a temporary folder (no HTTP).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prochub::model::{NewProcess, Process, ProcessPatch, Status, StatusInfo, StreamKind};
use prochub::runner::{ORPHAN_ERROR, Runner, SHUTDOWN_ERROR};
use prochub::store::{FileProcessStore, Follow, FollowEvent, StoreError};
use serde_json::json;

use crate::helper::{temp_store, wait_until};

/// Upper bound of any wait in these tests.
const WAIT: Duration = Duration::from_secs(20);

async fn create(store: &Arc<FileProcessStore>, argv: &[&str]) -> Process {
    store
        .create_process(NewProcess {
            name: argv.join(" "),
            command: Some(argv.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        })
        .await
        .expect("create")
}

/// Everything a follower sees until the end: tagged chunks and the status.
async fn drain(mut follow: Follow) -> (Vec<(Option<StreamKind>, String)>, StatusInfo) {
    let mut chunks = Vec::new();
    let status = tokio::time::timeout(WAIT, async {
        while let Some(ev) = follow.next().await {
            match ev {
                FollowEvent::Chunk(c) => chunks.push((c.stream, c.content.clone())),
                FollowEvent::Status(s) => return s,
                FollowEvent::Lagged { .. } => panic!("nothing may be skipped"),
            }
        }
        panic!("the follow ended without a status")
    })
    .await
    .expect("the command ends in time");
    (chunks, status)
}

/// Starts `argv` and follows it from before the spawn (so chunks keep
/// their stream tags).
async fn run(store: &Arc<FileProcessStore>, runner: &Arc<Runner>, argv: &[&str]) -> (Process, Follow) {
    let p = create(store, argv).await;
    let follow = store.subscribe(&p.id, None).expect("subscribe");
    runner.start(&p, None, BTreeMap::new()).await.expect("start");
    (p, follow)
}

/// The command's first output, once it comes: the command really runs
/// (and has set up what it prints after, e.g. a trap).
async fn first_output(follow: &mut Follow) -> String {
    match tokio::time::timeout(WAIT, follow.next())
        .await
        .expect("the command prints in time")
    {
        Some(FollowEvent::Chunk(c)) => c.content.clone(),
        other => panic!("the command prints before anything else happens: {other:?}"),
    }
}

#[tokio::test]
async fn stdout_and_stderr_arrive_tagged_and_a_nonzero_exit_fails() {
    let (_dir, store) = temp_store().await;
    let runner = Runner::new(store.clone(), Duration::from_secs(2));
    let (p, follow) = run(&store, &runner, &["sh", "-c", "echo out; echo err >&2; exit 3"]).await;
    let (chunks, status) = drain(follow).await;
    let text = |kind| {
        chunks
            .iter()
            .filter(|(k, _)| *k == Some(kind))
            .map(|(_, c)| c.as_str())
            .collect::<String>()
    };
    assert_eq!(text(StreamKind::Stdout), "out\n");
    assert_eq!(text(StreamKind::Stderr), "err\n");
    assert_eq!(status.status, Status::Failed);
    assert_eq!(status.exit_code, Some(3));
    let rec = store.get_process(&p.id).unwrap();
    assert_eq!(rec.error.as_deref(), Some("exited with code 3"));
    assert_eq!(rec.exit_code, Some(3));
    assert_eq!(runner.running(), 0);
}

#[tokio::test]
async fn exit_zero_completes_with_env_and_cwd() {
    let (dir, store) = temp_store().await;
    let runner = Runner::new(store.clone(), Duration::from_secs(2));
    let p = create(&store, &["sh", "-c", "echo \"$GREETING\"; pwd"]).await;
    let follow = store.subscribe(&p.id, Some(0)).unwrap();
    let env = BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]);
    let cwd = dir.path().canonicalize().unwrap().display().to_string();
    runner.start(&p, Some(cwd.clone()), env).await.unwrap();
    let (chunks, status) = drain(follow).await;
    let out: String = chunks.into_iter().map(|(_, c)| c).collect();
    assert_eq!(out, format!("hello\n{cwd}\n"));
    assert_eq!(status.status, Status::Completed);
    assert_eq!(status.exit_code, Some(0));
    assert_eq!(store.get_process(&p.id).unwrap().error, None);
}

#[tokio::test]
async fn a_character_split_across_reads_arrives_intact() {
    let (_dir, store) = temp_store().await;
    let runner = Runner::new(store.clone(), Duration::from_secs(2));
    // "€" is E2 82 AC; the pause makes the two halves separate reads.
    let script = r"printf 'a\342\202'; sleep 0.3; printf '\254b\n'; printf '\377\n'";
    let (p, follow) = run(&store, &runner, &["sh", "-c", script]).await;
    let (chunks, status) = drain(follow).await;
    assert_eq!(status.status, Status::Completed);
    assert!(chunks.len() >= 2, "the output came in pieces: {chunks:?}");
    let out: String = chunks.into_iter().map(|(_, c)| c).collect();
    assert_eq!(out, "a€b\n\u{FFFD}\n");
    // The stored log replays the same text.
    let (replayed, _) = drain(store.subscribe(&p.id, Some(0)).unwrap()).await;
    assert_eq!(replayed.into_iter().map(|(_, c)| c).collect::<String>(), out);
}

#[tokio::test]
async fn a_missing_command_fails_with_a_clear_error() {
    let (_dir, store) = temp_store().await;
    let runner = Runner::new(store.clone(), Duration::from_secs(2));
    let (p, follow) = run(&store, &runner, &["prochub-no-such-command-xyz", "arg"]).await;
    let (_, status) = drain(follow).await;
    assert_eq!(status.status, Status::Failed);
    let err = store.get_process(&p.id).unwrap().error.unwrap();
    assert!(err.contains("command not found"), "{err}");
    assert!(err.contains("prochub-no-such-command-xyz"), "{err}");
}

#[tokio::test]
async fn a_missing_working_directory_fails_with_a_clear_error() {
    let (dir, store) = temp_store().await;
    let runner = Runner::new(store.clone(), Duration::from_secs(2));
    let p = create(&store, &["true"]).await;
    let follow = store.subscribe(&p.id, Some(0)).unwrap();
    let cwd = dir.path().join("nope").display().to_string();
    runner.start(&p, Some(cwd), BTreeMap::new()).await.unwrap();
    let (_, status) = drain(follow).await;
    assert_eq!(status.status, Status::Failed);
    let err = store.get_process(&p.id).unwrap().error.unwrap();
    assert!(err.contains("working directory"), "{err}");
}

#[tokio::test]
async fn cancel_ends_a_sleep_within_the_grace_period() {
    let (_dir, store) = temp_store().await;
    let grace = Duration::from_secs(3);
    let runner = Runner::new(store.clone(), grace);
    // A pipeline, so the group kill must reach the shell's child too.
    let (p, mut follow) = run(&store, &runner, &["sh", "-c", "echo started; sleep 30; echo never"]).await;
    first_output(&mut follow).await;
    let t0 = Instant::now();
    let rec = tokio::time::timeout(WAIT, runner.cancel(&p.id)).await.unwrap().unwrap();
    assert!(t0.elapsed() < grace, "took {:?}", t0.elapsed());
    assert_eq!(rec.status, Status::Cancelled);
    let (_, status) = drain(follow).await;
    assert_eq!(status.status, Status::Cancelled);
    assert_eq!(runner.running(), 0);
}

#[tokio::test]
async fn a_command_ignoring_sigterm_is_killed_after_the_grace_period() {
    let (_dir, store) = temp_store().await;
    let grace = Duration::from_millis(300);
    let runner = Runner::new(store.clone(), grace);
    let (p, mut follow) = run(&store, &runner, &["sh", "-c", "trap '' TERM; echo ready; sleep 30"]).await;
    first_output(&mut follow).await;
    let t0 = Instant::now();
    let rec = tokio::time::timeout(WAIT, runner.cancel(&p.id)).await.unwrap().unwrap();
    let took = t0.elapsed();
    assert!(took >= grace && took < grace + Duration::from_secs(3), "took {took:?}");
    assert_eq!(rec.status, Status::Cancelled);
}

/// A fact is a field: the signal that killed a command is its record's
/// `exit_signal`, not something to parse out of the `error` text.
#[tokio::test]
async fn a_command_killed_by_a_signal_names_it_in_exit_signal() {
    let (_dir, store) = temp_store().await;
    let runner = Runner::new(store.clone(), Duration::from_secs(2));
    for (number, name) in [(9, "SIGKILL"), (15, "SIGTERM")] {
        let (p, follow) = run(&store, &runner, &["sh", "-c", &format!("kill -{number} $$")]).await;
        let (_, status) = drain(follow).await;
        assert_eq!(status.status, Status::Failed);
        assert_eq!(status.exit_signal.as_deref(), Some(name));
        let rec = store.get_process(&p.id).unwrap();
        assert_eq!((rec.exit_code, rec.exit_signal.as_deref()), (None, Some(name)));
        // The text for people stays as it was.
        assert_eq!(
            rec.error.as_deref(),
            Some(format!("killed by signal {number} ({name})").as_str())
        );
    }
}

#[tokio::test]
async fn a_cancelled_command_records_the_signal_that_ended_it() {
    let (_dir, store) = temp_store().await;
    let runner = Runner::new(store.clone(), Duration::from_millis(300));
    let obeys = ["sh", "-c", "echo up; sleep 30"];
    let ignores = ["sh", "-c", "trap '' TERM; echo up; sleep 30"];
    for (argv, name) in [(obeys, "SIGTERM"), (ignores, "SIGKILL")] {
        let (p, mut follow) = run(&store, &runner, &argv).await;
        first_output(&mut follow).await;
        let rec = tokio::time::timeout(WAIT, runner.cancel(&p.id)).await.unwrap().unwrap();
        assert_eq!(rec.status, Status::Cancelled);
        assert_eq!(rec.exit_signal.as_deref(), Some(name), "{argv:?}");
    }
}

/// `PATCH {"status": "cancelled", …}` goes through the runner: the command
/// stops, the patch's other fields are kept, and a bad patch stops nothing.
#[tokio::test]
async fn a_patch_to_cancelled_stops_the_command_and_keeps_the_other_fields() {
    let (_dir, store) = temp_store().await;
    let runner = Runner::new(store.clone(), Duration::from_secs(2));
    let (p, mut follow) = run(&store, &runner, &["sh", "-c", "echo up; sleep 30"]).await;
    first_output(&mut follow).await;
    let cancel_with = |metadata| ProcessPatch {
        status: Some(Status::Cancelled),
        metadata: Some(metadata),
        ..Default::default()
    };
    let bad = runner
        .update_process(&p.id, cancel_with(json!(["not", "an object"])))
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid { .. })), "{bad:?}");
    assert_eq!(runner.running(), 1, "a refused patch stops nothing");
    assert_eq!(store.get_process(&p.id).unwrap().status, Status::Running);
    let patched = runner.update_process(&p.id, cancel_with(json!({"why": "user"})));
    let rec = tokio::time::timeout(WAIT, patched).await.unwrap().unwrap();
    assert_eq!(rec.status, Status::Cancelled);
    assert_eq!(rec.metadata["why"], "user");
    assert_eq!(rec.exit_signal.as_deref(), Some("SIGTERM"));
    assert_eq!(runner.running(), 0);
    let (_, status) = drain(follow).await;
    assert_eq!(status.status, Status::Cancelled);
    // Without a command of its own, a patch is just a patch.
    let pushed = store.create_process(crate::helper::new_proc("pushed")).await.unwrap();
    let rec = runner.update_process(&pushed.id, cancel_with(json!({}))).await.unwrap();
    assert_eq!(rec.status, Status::Cancelled);
}

#[tokio::test]
async fn cancel_without_a_command_marks_cancelled_and_a_finished_one_conflicts() {
    let (_dir, store) = temp_store().await;
    let runner = Runner::new(store.clone(), Duration::from_secs(1));
    let p = store
        .create_process(NewProcess {
            name: "pushed".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let rec = runner.cancel(&p.id).await.unwrap();
    assert_eq!(rec.status, Status::Cancelled);
    let again = runner.cancel(&p.id).await;
    assert!(matches!(again, Err(StoreError::BadTransition { .. })), "{again:?}");
    assert!(matches!(
        runner.cancel(&crate::helper::id("nope")).await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn orphans_of_a_previous_server_are_marked_failed() {
    let (_dir, store) = temp_store().await;
    let orphan = create(&store, &["sleep", "30"]).await; // never started
    let pushed = store
        .create_process(NewProcess {
            name: "pushed by a client".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let runner = Runner::new(store.clone(), Duration::from_secs(1));
    assert_eq!(runner.recover_orphans().await.unwrap(), 1);
    let rec = store.get_process(&orphan.id).unwrap();
    assert_eq!(rec.status, Status::Failed);
    assert_eq!(rec.error.as_deref(), Some(ORPHAN_ERROR));
    // A client-pushed process has no command: it is not an orphan.
    assert_eq!(store.get_process(&pushed.id).unwrap().status, Status::Running);
    assert_eq!(runner.recover_orphans().await.unwrap(), 0);
}

#[tokio::test]
async fn shutdown_terminates_and_records_running_commands() {
    let (_dir, store) = temp_store().await;
    let runner = Runner::new(store.clone(), Duration::from_secs(2));
    let (a, mut fa) = run(&store, &runner, &["sh", "-c", "echo a; sleep 30"]).await;
    let (b, mut fb) = run(&store, &runner, &["sh", "-c", "echo b; sleep 30"]).await;
    for f in [&mut fa, &mut fb] {
        first_output(f).await;
    }
    tokio::time::timeout(WAIT, runner.shutdown()).await.unwrap();
    for id in [&a.id, &b.id] {
        let rec = store.get_process(id).unwrap();
        assert_eq!(rec.status, Status::Cancelled);
        assert_eq!(rec.error.as_deref(), Some(SHUTDOWN_ERROR));
    }
    let late = create(&store, &["true"]).await;
    assert!(runner.start(&late, None, BTreeMap::new()).await.is_err());
    // The refusal is on the record, written by the runner itself.
    let rec = store.get_process(&late.id).unwrap();
    assert_eq!(rec.status, Status::Failed);
    assert!(rec.error.as_deref().unwrap().contains("shutting down"), "{rec:?}");
}

#[tokio::test]
async fn deleting_the_record_stops_a_silent_command() {
    let (_dir, store) = temp_store().await;
    let runner = Runner::new(store.clone(), Duration::from_secs(2));
    let (p, mut follow) = run(&store, &runner, &["sh", "-c", "echo up; sleep 30"]).await;
    first_output(&mut follow).await;
    store.delete_process(&p.id).await.unwrap();
    // The command is stopped and forgotten well before its 30 s.
    wait_until("the command stops", WAIT, async || runner.running() == 0).await;
}

#[tokio::test]
async fn a_lot_of_output_arrives_complete_and_in_order() {
    let (_dir, store) = temp_store().await;
    let runner = Runner::new(store.clone(), Duration::from_secs(2));
    let (_p, follow) = run(&store, &runner, &["seq", "1", "200000"]).await;
    let (chunks, status) = drain(follow).await;
    assert_eq!(status.status, Status::Completed);
    let out: String = chunks.into_iter().map(|(_, c)| c).collect();
    let want: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert_eq!(out.len(), want.len());
    assert!(out == want, "the output differs");
}

/// Processes of group `pgid` that are not zombies (from /proc: zombies
/// linger where PID 1 does not reap them).
fn live_group_members(pgid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        let f: Vec<&str> = after.split_whitespace().collect();
        if f[2] == pgid.to_string() && f[0] != "Z" {
            found.push(stat);
        }
    }
    found
}

/// Regression: the SIGKILL after the grace period went only to a leader
/// that ignored SIGTERM. When the leader obeyed but a member of its group
/// did not, that member ran on after the cancel.
#[tokio::test]
async fn cancel_kills_group_members_that_outlive_their_leader() {
    let (_dir, store) = temp_store().await;
    let grace = Duration::from_millis(500);
    let runner = Runner::new(store.clone(), grace);
    // The subshell prints the group id ($$ is the shell's pid there too)
    // once it ignores SIGTERM, so the cancel cannot come before the trap.
    let script = "(trap '' TERM; echo $$; exec sleep 30 >/dev/null 2>&1) & wait";
    let (p, mut follow) = run(&store, &runner, &["sh", "-c", script]).await;
    let pgid: u32 = first_output(&mut follow).await.trim().parse().unwrap();
    assert!(!live_group_members(pgid).is_empty());
    let rec = tokio::time::timeout(WAIT, runner.cancel(&p.id)).await.unwrap().unwrap();
    assert_eq!(rec.status, Status::Cancelled);
    // SIGKILL is delivered at once, but the kernel may take a moment to
    // turn the process into a zombie.
    let what = format!("nothing of process group {pgid} runs on");
    wait_until(&what, Duration::from_secs(2), async || {
        live_group_members(pgid).is_empty()
    })
    .await;
}
