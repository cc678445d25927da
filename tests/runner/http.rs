//! Server-run commands through the HTTP API of a real server.

use std::time::Instant;

use prochub::client::{Client, OutputEvent};
use prochub::model::{NewProcess, Status, StreamKind};
use prochub::runner::{CANCEL_GRACE, ORPHAN_STOPPED_ERROR, SHUTDOWN_ERROR};

use crate::helper::client::{ServerProc, WAIT};

fn command(argv: &[&str]) -> NewProcess {
    NewProcess {
        name: argv.join(" "),
        command: Some(argv.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

/// A server allowed to run commands, in a fresh folder (removed when the
/// TempDir drops), and a client of it.
async fn serve() -> (tempfile::TempDir, ServerProc, Client) {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let c = Client::new(&server.url, None).unwrap();
    (data, server, c)
}

/// Waits (bounded) until the process leaves `running`.
async fn wait_end(c: &Client, id: &str) -> prochub::model::Process {
    let mut f = c.follow(id, Some(0));
    tokio::time::timeout(WAIT, async {
        while let Some(ev) = f.next().await {
            if matches!(ev.unwrap(), OutputEvent::Done) {
                break;
            }
        }
    })
    .await
    .expect("the command ends in time");
    c.get_process(id).await.unwrap()
}

#[tokio::test]
async fn multi_byte_characters_split_across_reads_arrive_intact() {
    let (_data, server, c) = serve().await;
    // A 4-byte emoji and a 3-byte euro sign, each cut in the middle by a pause.
    let script = r"printf '\360\237'; sleep 0.2; printf '\230\200 \342'; sleep 0.2; printf '\202\254\n'";
    let p = c.create_process(&command(&["sh", "-c", script])).await.unwrap();
    let mut f = c.follow(&p.id, Some(0));
    let mut chunks = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(ev) = f.next().await {
            match ev.unwrap() {
                OutputEvent::Chunk { content, stream, .. } => chunks.push((content, stream)),
                OutputEvent::Done => break,
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    let text: String = chunks.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(text, "😀 €\n");
    assert!(chunks.iter().all(|(c, _)| !c.contains('\u{FFFD}')), "{chunks:?}");
    assert_eq!(c.read_output(&p.id, &Default::default()).await.unwrap().body, "😀 €\n");
    let rec = c.get_process(&p.id).await.unwrap();
    assert_eq!((rec.status, rec.exit_code), (Status::Completed, Some(0)));
    server.stop().await;
}

#[tokio::test]
async fn live_chunks_say_which_pipe_they_came_from() {
    let (_data, server, c) = serve().await;
    let p = c
        .create_process(&command(&["sh", "-c", "echo to-out; echo to-err >&2"]))
        .await
        .unwrap();
    // The follower may connect after the output was written: replayed
    // chunks carry no tag, but any tag present must be the right one.
    let mut f = c.follow(&p.id, Some(0));
    let mut seen = Vec::new();
    while let Some(ev) = tokio::time::timeout(WAIT, f.next()).await.unwrap() {
        match ev.unwrap() {
            OutputEvent::Chunk { content, stream, .. } => seen.push((content, stream)),
            OutputEvent::Done => break,
            _ => {}
        }
    }
    for (content, stream) in &seen {
        match stream {
            Some(StreamKind::Stdout) => assert_eq!(content, "to-out\n"),
            Some(StreamKind::Stderr) => assert_eq!(content, "to-err\n"),
            None => {}
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn cancel_ends_a_sleep_within_the_grace_period() {
    let (_data, server, c) = serve().await;
    let p = c
        .create_process(&command(&["sh", "-c", "echo up; sleep 30"]))
        .await
        .unwrap();
    let mut f = c.follow(&p.id, Some(0));
    let first = tokio::time::timeout(WAIT, f.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(first, OutputEvent::Chunk { .. }), "{first:?}");
    let t0 = Instant::now();
    let rec = c.cancel(&p.id).await.unwrap();
    assert!(t0.elapsed() < CANCEL_GRACE, "took {:?}", t0.elapsed());
    assert_eq!(rec.status, Status::Cancelled);
    assert_eq!(c.cancel(&p.id).await.unwrap_err().status(), Some(409));
    server.stop().await;
}

#[tokio::test]
async fn a_missing_command_gives_a_failed_record_with_a_clear_error() {
    let (_data, server, c) = serve().await;
    let p = c
        .create_process(&command(&["prochub-definitely-missing"]))
        .await
        .unwrap();
    let rec = wait_end(&c, &p.id).await;
    assert_eq!(rec.status, Status::Failed);
    let err = rec.error.unwrap();
    assert!(
        err.contains("command not found") && err.contains("prochub-definitely-missing"),
        "{err}"
    );
    let p = c
        .create_process(&NewProcess {
            cwd: Some("/nonexistent/prochub".into()),
            ..command(&["true"])
        })
        .await
        .unwrap();
    let rec = wait_end(&c, &p.id).await;
    assert_eq!(rec.status, Status::Failed);
    assert!(rec.error.unwrap().contains("working directory"));
    server.stop().await;
}

#[tokio::test]
async fn a_command_killed_by_a_signal_has_exit_signal_on_its_record() {
    let (_data, server, c) = serve().await;
    let p = c.create_process(&command(&["sh", "-c", "kill -9 $$"])).await.unwrap();
    let rec = wait_end(&c, &p.id).await;
    assert_eq!(rec.status, Status::Failed);
    assert_eq!((rec.exit_code, rec.exit_signal.as_deref()), (None, Some("SIGKILL")));
    assert_eq!(rec.error.as_deref(), Some("killed by signal 9 (SIGKILL)"));
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_records_running_commands_and_a_crash_leaves_orphans_marked() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let addr = server.addr.to_string();
    let c = Client::new(&server.url, None).unwrap();
    let p = c
        .create_process(&command(&["sh", "-c", "echo up; sleep 30"]))
        .await
        .unwrap();
    let mut f = c.follow(&p.id, Some(0));
    tokio::time::timeout(WAIT, f.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(server.stop().await, Some(0));
    let server = ServerProc::start_with(data.path(), &addr, &["--allow-exec"]).await;
    let rec = c.get_process(&p.id).await.unwrap();
    assert_eq!(rec.status, Status::Cancelled);
    assert_eq!(rec.error.as_deref(), Some(SHUTDOWN_ERROR));

    // A crash (SIGKILL) while a command runs: the next server stops it
    // and marks it.
    let q = c
        .create_process(&command(&["sh", "-c", "echo up; sleep 30"]))
        .await
        .unwrap();
    let mut f = c.follow(&q.id, Some(0));
    tokio::time::timeout(WAIT, f.next()).await.unwrap().unwrap().unwrap();
    server.kill().await;
    let server = ServerProc::start_with(data.path(), &addr, &["--allow-exec"]).await;
    let rec = c.get_process(&q.id).await.unwrap();
    assert_eq!(rec.status, Status::Failed);
    assert_eq!(rec.error.as_deref(), Some(ORPHAN_STOPPED_ERROR));
    assert_eq!(rec.output_bytes, 3, "its output so far is kept");
    server.stop().await;
}

#[tokio::test]
async fn commands_do_not_inherit_the_server_token() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start_env(
        data.path(),
        "127.0.0.1:0",
        &["--allow-exec"],
        &[("PROCHUB_TOKEN", "hush")],
    )
    .await;
    let c = Client::new(&server.url, Some("hush".into())).unwrap();
    let p = c
        .create_process(&NewProcess {
            env: Some([("EXTRA".to_owned(), "yes".to_owned())].into()),
            ..command(&["sh", "-c", "echo ${PROCHUB_TOKEN:-none} $EXTRA"])
        })
        .await
        .unwrap();
    wait_end(&c, &p.id).await;
    assert_eq!(
        c.read_output(&p.id, &Default::default()).await.unwrap().body,
        "none yes\n"
    );
    server.stop().await;
}

/// Regression: `env` keys were not checked: `""` or `"A=B"` were stored
/// and then either failed the spawn or set another variable than the one
/// named, and a NUL cut the entry short. Now a 400 `invalid_field` naming
/// the key, and nothing is stored or run.
#[tokio::test]
async fn bug_env_keys_that_are_empty_or_hold_equals_or_nul_were_accepted() {
    let (_data, server, c) = serve().await;
    for (key, value, named) in [
        ("", "v", "empty"),
        ("A=B", "v", "A=B"),
        ("A\0B", "v", "NUL"),
        ("OK", "v\0w", "OK"),
    ] {
        let err = c
            .create_process(&NewProcess {
                env: Some([(key.to_owned(), value.to_owned())].into()),
                ..command(&["true"])
            })
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(400), "{key:?}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("invalid_field") && text.contains(named),
            "{key:?}: {text}"
        );
    }
    let stored = c.list_processes(&prochub::model::ListQuery::default()).await.unwrap();
    assert!(stored.items.is_empty(), "nothing stored");
    server.stop().await;
}
