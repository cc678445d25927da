//! The client library against a real `prochub serve`: every call, errors,
//! and `follow` across dropped connections and a server restart.

use std::time::Duration;

use prochub::client::{Client, ClientError, Delivery, Event, Follower, OutputEvent, ReconnectPolicy, WorkspaceClient};
use prochub::model::{ListQuery, NewProcess, NewWorkspace, OutputQuery, OutputRange, ProcessPatch, Status};
use serde_json::json;

use crate::helper::client::{DeadPort, Proxy, ServerProc, WAIT};

fn named(name: &str) -> NewProcess {
    NewProcess {
        name: name.into(),
        ..Default::default()
    }
}

/// Collects a follower's output until `Done`; panics on error or lag.
async fn collect(mut f: Follower) -> (String, Option<Status>) {
    tokio::time::timeout(WAIT * 2, async {
        let mut text = String::new();
        let mut status = None;
        while let Some(ev) = f.next().await {
            match ev.expect("no stream error") {
                OutputEvent::Chunk { content, .. } => text.push_str(&content),
                OutputEvent::Status(s) => status = Some(s.status),
                OutputEvent::Lagged { from, to } => panic!("lagged {from}..{to}"),
                OutputEvent::Done => return (text, status),
            }
        }
        panic!("the stream ended without done")
    })
    .await
    .expect("the follow ends in time")
}

#[tokio::test]
async fn every_call_against_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path()).await;
    let c = Client::new(&server.url, None).unwrap();

    let health = c.health().await.unwrap();
    assert_eq!(health.status, "ok");

    // Workspaces: create, idempotent create, list, get, delete.
    let ws = NewWorkspace {
        id: Some("ws-a".into()),
        name: "A".into(),
        root_path: Some("/tmp/a".into()),
    };
    let w = c.create_workspace(&ws).await.unwrap();
    assert_eq!(w.id, "ws-a");
    assert_eq!(c.create_workspace(&ws).await.unwrap().id, "ws-a");
    let ids: Vec<String> = c
        .list_workspaces()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id.into_string())
        .collect();
    assert!(
        ids.contains(&"default".to_owned()) && ids.contains(&"ws-a".to_owned()),
        "{ids:?}"
    );
    assert_eq!(c.get_workspace("ws-a").await.unwrap().name, "A");

    // Processes: create, 409 with the existing record, get, list, paging.
    let p = c
        .create_process(&NewProcess {
            id: Some("job-1".into()),
            workspace: Some("ws-a".into()),
            ..named("first")
        })
        .await
        .unwrap();
    assert_eq!(p.status, Status::Running);
    match c
        .create_process(&NewProcess {
            id: Some("job-1".into()),
            ..named("again")
        })
        .await
    {
        Err(ClientError::Api {
            status: 409,
            existing: Some(existing),
            ..
        }) => assert_eq!(existing.name, "first"),
        other => panic!("expected 409 with the record, got {other:?}"),
    }
    for i in 0..4 {
        c.create_process(&named(&format!("other {i}"))).await.unwrap();
    }
    assert_eq!(c.get_process("job-1").await.unwrap().name, "first");
    let page = c
        .list_processes(&ListQuery {
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    assert!(page.next_cursor.is_some(), "a Link header announces the next page");
    let all = c
        .list_all(
            &ListQuery {
                limit: Some(2),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[0].name, "other 3", "newest first");
    let in_ws = c
        .list_all(
            &ListQuery {
                workspace: Some("ws-a".into()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(in_ws.len(), 1);
    assert_eq!(c.list_all(&ListQuery::default(), Some(3)).await.unwrap().len(), 3);

    // Output: append, read all / from / tail.
    assert_eq!(c.append_output("job-1", "hello ").await.unwrap(), 6);
    assert_eq!(c.append_output("job-1", "wörld\n").await.unwrap(), 13);
    let read = |range| {
        let c = c.clone();
        async move { c.read_output("job-1", &OutputQuery::range(range)).await.unwrap().body }
    };
    assert_eq!(read(OutputRange::All).await, "hello wörld\n");
    assert_eq!(read(OutputRange::From(6)).await, "wörld\n");
    assert_eq!(read(OutputRange::Tail(3)).await, "ld\n");

    // Update (merge), status filter, cancel, errors.
    let up = c
        .update_process(
            "job-1",
            &ProcessPatch {
                metadata: Some(json!({"k": "v"})),
                result: Some(json!({"ok": true})),
                ..ProcessPatch::status(Status::Completed)
            },
        )
        .await
        .unwrap();
    assert_eq!(up.status, Status::Completed);
    assert_eq!(up.metadata["k"], "v");
    let done = c
        .list_all(
            &ListQuery {
                status: Some(Status::Completed.into()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    let to_cancel = c.create_process(&named("cancel me")).await.unwrap();
    assert_eq!(c.cancel(&to_cancel.id).await.unwrap().status, Status::Cancelled);
    let err = c.append_output("job-1", "late").await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    let err = c.get_process("nope").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(matches!(c.get_process("../x").await, Err(ClientError::Invalid(_))));

    // Prune keeps running ones; delete; workspace delete needs cascade.
    let removed = c.prune(None, Some(0)).await.unwrap();
    assert_eq!(removed, 2, "the completed and the cancelled one");
    assert!(c.get_process("job-1").await.unwrap_err().is_not_found());
    let doomed = c.create_process(&named("doomed")).await.unwrap();
    c.delete_process(&doomed.id).await.unwrap();
    assert!(c.delete_process(&doomed.id).await.unwrap_err().is_not_found());
    c.create_process(&NewProcess {
        workspace: Some("ws-a".into()),
        ..named("in a")
    })
    .await
    .unwrap();
    assert_eq!(c.delete_workspace("ws-a", false).await.unwrap_err().status(), Some(409));
    c.delete_workspace("ws-a", true).await.unwrap();
    assert!(c.get_workspace("ws-a").await.unwrap_err().is_not_found());

    // The editor layer's remove of a missing id succeeds.
    let folder = tempfile::tempdir().unwrap();
    let wc = WorkspaceClient::open(c.clone(), folder.path(), dir.path().join("q.jsonl")).unwrap();
    assert_eq!(wc.remove("never-existed").await.unwrap(), Delivery::Removed);
    server.stop().await;
}

#[tokio::test]
async fn errors_name_their_cause() {
    let dead = DeadPort::new();
    let url = dead.url();
    let err = Client::new(&url, None).unwrap().health().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no server at {url}: start one with `prochub serve`")
    );
    assert!(err.is_offline());

    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start_with(dir.path(), "127.0.0.1:0", &["--token", "s3cret"]).await;
    let err = Client::new(&server.url, None)
        .unwrap()
        .list_workspaces()
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "401: this server needs --token");
    let err = Client::new(&server.url, Some("wrong".into()))
        .unwrap()
        .list_workspaces()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
    let ok = Client::new(&server.url, Some("s3cret".into())).unwrap();
    ok.list_workspaces().await.unwrap();
    // Streams send the token too.
    let p = ok.create_process(&named("t")).await.unwrap();
    ok.update_process(&p.id, &ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    assert_eq!(collect(ok.follow(&p.id, Some(0))).await.1, Some(Status::Completed));
    // Without --allow-exec a command is refused.
    let err = ok
        .create_process(&NewProcess {
            command: Some(vec!["true".into()]),
            ..named("exec")
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn follow_across_forced_disconnects_sees_every_byte_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path()).await;
    let direct = Client::new(&server.url, None).unwrap();
    let proxy = Proxy::start(server.addr).await;
    let via_proxy = Client::new(&proxy.url(), None).unwrap().with_policy(ReconnectPolicy {
        initial_delay: Duration::from_millis(20),
        ..Default::default()
    });
    let p = direct.create_process(&named("flaky network")).await.unwrap();
    direct.append_output(&p.id, "before the follow\n").await.unwrap();

    let follower = via_proxy.follow(&p.id, Some(0));
    // Every event goes through a channel, so the test can wait for a line
    // to arrive (proof that the stream is up) before cutting it.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut f = follower;
        while let Some(ev) = f.next().await {
            let _ = tx.send(ev.expect("no stream error"));
        }
    });
    let mut text = String::new();
    let mut expected = String::from("before the follow\n");
    let mut cuts = 0;
    for i in 0..40 {
        let line = format!("line {i:02} ✓\n");
        direct.append_output(&p.id, &line).await.unwrap();
        expected.push_str(&line);
        if i % 8 == 0 {
            // Wait for everything so far, then break the connection.
            while text.len() < expected.len() {
                match tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap() {
                    OutputEvent::Chunk { content, .. } => text.push_str(&content),
                    other => panic!("unexpected {other:?}"),
                }
            }
            cuts += proxy.cut();
        }
    }
    direct
        .update_process(&p.id, &ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    let mut status = None;
    loop {
        match tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap() {
            OutputEvent::Chunk { content, .. } => text.push_str(&content),
            OutputEvent::Status(s) => status = Some(s.status),
            OutputEvent::Done => break,
            OutputEvent::Lagged { .. } => panic!("nothing may be skipped"),
        }
    }
    reader.await.unwrap();
    assert_eq!(cuts, 5, "each cut broke the live stream");
    assert_eq!(text, expected);
    assert_eq!(status, Some(Status::Completed));
    server.stop().await;
}

#[tokio::test]
async fn follow_across_a_server_restart_sees_every_byte_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path()).await;
    let addr = server.addr.to_string();
    let c = Client::new(&server.url, None).unwrap().with_policy(ReconnectPolicy {
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(300),
        max_attempts: 100,
        ..Default::default()
    });
    let p = c.create_process(&named("survives restarts")).await.unwrap();
    let mut follower = c.follow(&p.id, None);
    c.append_output(&p.id, "not seen: before the follow\n").await.unwrap();
    follower.connect().await.unwrap();
    c.append_output(&p.id, "one\n").await.unwrap();
    let first = tokio::time::timeout(WAIT, follower.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(&first, OutputEvent::Chunk { content, .. } if content == "one\n"));
    let reader = tokio::spawn(collect(follower));
    c.append_output(&p.id, "two\n").await.unwrap();

    assert_eq!(server.stop().await, Some(0), "graceful exit");
    let server = ServerProc::start_with(dir.path(), &addr, &["--allow-exec"]).await;
    c.append_output(&p.id, "three\n").await.unwrap();
    c.append_output(&p.id, "four\n").await.unwrap();
    c.update_process(&p.id, &ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    let (text, status) = reader.await.unwrap();
    assert_eq!(text, "two\nthree\nfour\n");
    assert_eq!(status, Some(Status::Completed));
    server.stop().await;
}

#[tokio::test]
async fn following_a_finished_process_replays_then_ends() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path()).await;
    let c = Client::new(&server.url, None).unwrap();
    let p = c.create_process(&named("finished")).await.unwrap();
    c.append_output(&p.id, "abc").await.unwrap();
    c.update_process(&p.id, &ProcessPatch::status(Status::Failed))
        .await
        .unwrap();
    assert_eq!(
        collect(c.follow(&p.id, Some(0))).await,
        ("abc".into(), Some(Status::Failed))
    );
    assert_eq!(
        collect(c.follow(&p.id, Some(1))).await,
        ("bc".into(), Some(Status::Failed))
    );
    assert_eq!(collect(c.follow(&p.id, None)).await, ("".into(), Some(Status::Failed)));
    let mut missing = c.follow("nope", Some(0));
    assert!(missing.next().await.unwrap().unwrap_err().is_not_found());
    assert!(missing.next().await.is_none());
    server.stop().await;
}

#[tokio::test]
async fn lifecycle_events_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path()).await;
    let c = Client::new(&server.url, None).unwrap();
    let mut events = c.events(None);
    events.connect().await.unwrap();
    let p = c.create_process(&named("watched")).await.unwrap();
    c.update_process(&p.id, &ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match tokio::time::timeout(WAIT, events.next())
            .await
            .expect("an event in time")
            .unwrap()
            .unwrap()
        {
            Event::Lifecycle(le) => {
                assert_eq!(le.process.as_ref().unwrap().id, p.id);
                kinds.push(le.kind.as_str().to_owned());
            }
            Event::Reset => panic!("no reset on a fresh stream"),
        }
    }
    assert_eq!(kinds, ["process-added", "process-updated"]);
    assert!(events.last_event_id().is_some());
    server.stop().await;
}

/// A fake server whose first stream goes silent (no heartbeat, no close):
/// the follower must give up on it after the idle timeout and resume with
/// `Last-Event-ID` on a new connection.
#[tokio::test]
async fn a_silent_stream_is_dropped_after_the_idle_timeout_and_resumed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut conns = Vec::new();
        for n in 0.. {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let k = sock.read(&mut buf).await.unwrap();
                if k == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..k]);
            }
            let head = String::from_utf8_lossy(&head).to_lowercase();
            let last = head
                .lines()
                .find_map(|l| l.strip_prefix("last-event-id: "))
                .unwrap_or("-")
                .to_owned();
            seen_tx.send(last).unwrap();
            let body = if n == 0 {
                "retry: 50\n\nid: 3\nevent: chunk\ndata: {\"content\":\"abc\"}\n\n"
            } else {
                "id: 5\nevent: chunk\ndata: {\"content\":\"de\"}\n\nevent: status\ndata: {\"status\":\"completed\",\"duration\":null,\"duration_ms\":null,\"result\":null,\"error\":null,\"exit_code\":0}\n\nevent: done\ndata: {}\n\n"
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
            if n > 0 {
                sock.write_all(b"0\r\n\r\n").await.unwrap();
            }
            conns.push(sock); // keep the first one open and silent
        }
    });
    let c = Client::new(&addr.to_string(), None)
        .unwrap()
        .with_policy(ReconnectPolicy {
            idle_timeout: Duration::from_millis(300),
            ..Default::default()
        });
    let (text, status) = collect(c.follow("p1", Some(0))).await;
    assert_eq!(text, "abcde");
    assert_eq!(status, Some(Status::Completed));
    assert_eq!(
        seen_rx.recv().await.unwrap(),
        "-",
        "the first request has no Last-Event-ID"
    );
    assert_eq!(
        seen_rx.recv().await.unwrap(),
        "3",
        "the reconnect resumes after the last id"
    );
}
