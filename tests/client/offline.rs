//! The editor layer: workspace identity and the offline queue.

use prochub::client::{Client, Delivery, OfflineQueue, QueuedOp, WorkspaceClient, WorkspaceIdentity};
use prochub::model::{ListQuery, NewProcess, ProcessPatch, Status};

use crate::helper::client::{DeadPort, Gate, Hold, ServerProc, WAIT};

fn named(name: &str) -> NewProcess {
    NewProcess {
        name: name.into(),
        ..Default::default()
    }
}

/// A client of a port where nothing listens (the port stays reserved for
/// the whole test run, so no other test's server can appear there).
fn dead_client() -> Client {
    static DEAD: std::sync::OnceLock<DeadPort> = std::sync::OnceLock::new();
    Client::new(&DEAD.get_or_init(DeadPort::new).url(), None).unwrap()
}

#[test]
fn workspace_identity_follows_the_canonical_path() {
    let root = tempfile::tempdir().unwrap();
    let a = root.path().join("project");
    let b = root.path().join("other");
    std::fs::create_dir_all(a.join("src")).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let id = |p: &std::path::Path| WorkspaceIdentity::for_path(p).unwrap();

    let first = id(&a);
    assert_eq!(first, id(&a), "same path, same id");
    assert!(first.id.starts_with("ws-") && first.id.len() == 19, "{}", first.id);
    prochub::model::Id::parse(&first.id).unwrap();
    assert_eq!(first.name, "project");
    assert_ne!(first.id, id(&b).id, "different paths, different ids");
    assert_eq!(id(&a.join("src/..")).id, first.id, "`..` resolves");
    assert_eq!(id(&a.join(".")).id, first.id);
    let slash = format!("{}/", a.display());
    assert_eq!(id(std::path::Path::new(&slash)).id, first.id, "trailing slash");
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    assert_eq!(id(&link).id, first.id, "a symlink is its target");
    assert_eq!(first.root_path, a.canonicalize().unwrap());
}

#[tokio::test]
async fn offline_requests_are_queued_on_disk_and_flushed_in_order_once() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("my-project");
    std::fs::create_dir(&folder).unwrap();
    let queue = tmp.path().join("queue.jsonl");

    // No server: the first request finds out, everything is queued.
    let offline = dead_client();
    let wc = WorkspaceClient::open(offline.clone(), &folder, &queue).unwrap();
    let mut ids = Vec::new();
    for name in ["first", "second", "third"] {
        let (id, delivery) = wc.submit(named(name)).await.unwrap();
        assert_eq!(delivery, Delivery::Queued);
        ids.push(id);
    }
    let update = ProcessPatch {
        result: Some(serde_json::json!({"tests": 42})),
        ..ProcessPatch::status(Status::Completed)
    };
    assert_eq!(wc.update(&ids[0], update.clone()).await.unwrap(), Delivery::Queued);
    assert_eq!(
        offline.requests_attempted(),
        1,
        "only the first request tried to connect; the rest went straight to the queue"
    );
    assert!(wc.is_offline().await);
    let on_disk = std::fs::read_to_string(&queue).unwrap();
    assert_eq!(on_disk.lines().count(), 4, "{on_disk}");
    drop(wc);

    // A new instance (the editor restarted) still has them, and stays
    // offline: it does not try the server while the queue is not empty.
    let still_dead = dead_client();
    let wc = WorkspaceClient::open(still_dead.clone(), &folder, &queue).unwrap();
    let queued = wc.queued();
    assert_eq!(queued.len(), 4);
    assert!(matches!(&queued[3], QueuedOp::Update { id, .. } if *id == ids[0]));
    let (fourth, d) = wc.submit(named("fourth")).await.unwrap();
    assert_eq!(d, Delivery::Queued);
    ids.push(fourth);
    assert_eq!(still_dead.requests_attempted(), 0);
    drop(wc);

    // The server is back: flush sends everything in order, once.
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let online = Client::new(&server.url, None).unwrap();
    let wc = WorkspaceClient::open(online.clone(), &folder, &queue).unwrap();
    let report = tokio::time::timeout(WAIT, wc.flush()).await.unwrap().unwrap();
    assert_eq!(report.sent, 5);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(report.remaining, 0);
    assert!(wc.queued().is_empty());
    assert_eq!(std::fs::read_to_string(&queue).unwrap(), "");
    assert!(!wc.is_offline().await);

    let ws = wc.identity().id.clone();
    let listed = online
        .list_all(
            &ListQuery {
                workspace: Some(ws.clone()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    let names: Vec<&str> = listed.iter().rev().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["first", "second", "third", "fourth"], "created in order");
    let first = online.get_process(&ids[0]).await.unwrap();
    assert_eq!(first.status, Status::Completed);
    assert_eq!(first.result, Some(serde_json::json!({"tests": 42})));
    assert_eq!(online.get_workspace(&ws).await.unwrap().name, "my-project");

    // A second flush has nothing to send and sends nothing.
    let before = online.requests_attempted();
    let report = wc.flush().await.unwrap();
    assert_eq!((report.sent, report.remaining), (0, 0));
    assert_eq!(online.requests_attempted(), before);

    // Online now: requests go straight out; an update sends only changes.
    let d = wc.update(&ids[0], update).await.unwrap();
    assert_eq!(d, Delivery::Unchanged, "nothing differs from what was sent");
    assert_eq!(online.requests_attempted(), before);
    let d = wc.update(&ids[1], ProcessPatch::status(Status::Failed)).await.unwrap();
    assert!(matches!(d, Delivery::Sent(p) if p.status == Status::Failed));
    server.stop().await;
}

/// Regression (flaky under load): the test used to infer "half-way" from
/// the client's own attempt counter, polled between `yield_now`s, and read
/// the in-memory queue right after dropping the flush. Now a gate in front
/// of the server stops the flush at an exact request, one the server has
/// acknowledged but whose answer never arrives: the hardest interruption,
/// and the same one on every run.
#[tokio::test]
async fn a_flush_interrupted_and_repeated_creates_no_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = tmp.path().join("queue.jsonl");
    let wc = WorkspaceClient::open(dead_client(), tmp.path(), &queue).unwrap();
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(wc.submit(named(&format!("job {i}"))).await.unwrap().0);
    }
    wc.update(&ids[0], ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    let entries: Vec<QueuedOp> = wc.queued();
    assert_eq!(entries.len(), 13);
    drop(wc);

    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let direct = Client::new(&server.url, None).unwrap();

    // A crash after the server acknowledged the first two creates but
    // before they left the file: simulate by delivering them directly.
    direct
        .create_workspace(&WorkspaceIdentity::for_path(tmp.path()).unwrap().registration())
        .await
        .unwrap();
    for op in &entries[..2] {
        let QueuedOp::Create { process } = op else {
            panic!("{op:?}")
        };
        direct.create_process(process).await.unwrap();
    }

    // A flush through a gate that swallows the answer to its 6th request:
    // 1 registers the workspace, 2-3 are the creates delivered above (409,
    // the stored record), 4-5 create jobs 2 and 3, and 6 creates job 4 on
    // the server while the flush never hears back. Dropping the flush then
    // is a crash mid-request.
    let gate = Gate::start(server.addr, 6, Hold::SwallowAnswer).await;
    let online = Client::new(&gate.url(), None).unwrap();
    let wc = WorkspaceClient::open(online.clone(), tmp.path(), &queue).unwrap();
    {
        let flush = wc.flush();
        tokio::pin!(flush);
        tokio::select! {
            r = &mut flush => panic!("the flush was meant to be interrupted, it finished: {r:?}"),
            () = gate.held() => {}
        }
    }
    assert_eq!(gate.received(), 6);
    // Jobs 0-3 were acknowledged and removed, each before the next request
    // went out; job 4 and everything after it is still queued, in memory
    // and on disk.
    let left: Vec<QueuedOp> = entries[4..].to_vec();
    assert_eq!(wc.queued(), left, "interrupted half-way");
    let on_disk = OfflineQueue::open(&queue).unwrap();
    assert_eq!(on_disk.entries().iter().map(|e| e.op.clone()).collect::<Vec<_>>(), left);
    assert!(
        direct.get_process(&ids[4]).await.is_ok(),
        "the server has the create whose answer was lost"
    );

    // ...and repeated: everything arrives once (job 4's create is a 409
    // with the stored record, which counts as delivered).
    let report = tokio::time::timeout(WAIT, wc.flush()).await.unwrap().unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!((report.sent, report.remaining), (left.len(), 0));
    assert!(wc.queued().is_empty());
    assert!(OfflineQueue::open(&queue).unwrap().is_empty());
    let all = direct.list_all(&ListQuery::default(), None).await.unwrap();
    assert_eq!(all.len(), 12, "no duplicates, none missing");
    let mut seen: Vec<&str> = all.iter().map(|p| p.id.as_str()).collect();
    seen.sort();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(direct.get_process(&ids[0]).await.unwrap().status, Status::Completed);
    drop(gate);
    server.stop().await;
}

#[tokio::test]
async fn the_server_going_away_mid_session_switches_to_the_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let addr = server.addr.to_string();
    let client = Client::new(&server.url, None).unwrap();
    let wc = WorkspaceClient::open(client.clone(), tmp.path(), tmp.path().join("q.jsonl")).unwrap();
    let (id, d) = wc.submit(named("online")).await.unwrap();
    assert!(matches!(d, Delivery::Sent(_)));
    server.stop().await;
    assert_eq!(
        wc.update(&id, ProcessPatch::status(Status::Completed)).await.unwrap(),
        Delivery::Queued
    );
    let (id2, d) = wc.submit(named("offline")).await.unwrap();
    assert_eq!(d, Delivery::Queued);
    assert_eq!(wc.remove("gone-anyway").await.unwrap(), Delivery::Queued);
    let server = ServerProc::start_with(data.path(), &addr, &[]).await;
    let report = wc.flush().await.unwrap();
    assert_eq!(report.sent, 3);
    assert_eq!(client.get_process(&id).await.unwrap().status, Status::Completed);
    assert_eq!(client.get_process(&id2).await.unwrap().name, "offline");
    server.stop().await;
}

/// Regression: a flush dropped every entry the server refused, 401 and
/// 5xx included, as if the entry itself were at fault: a server that
/// wants a token (or one having trouble) emptied the queue for good.
#[tokio::test]
async fn a_flush_refused_with_401_keeps_the_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = tmp.path().join("queue.jsonl");
    let wc = WorkspaceClient::open(dead_client(), tmp.path(), &queue).unwrap();
    let (id, _) = wc.submit(named("kept")).await.unwrap();
    wc.update(&id, ProcessPatch::status(Status::Completed)).await.unwrap();
    drop(wc);

    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start_with(data.path(), "127.0.0.1:0", &["--token", "s3cret"]).await;
    let no_token = Client::new(&server.url, None).unwrap();
    let wc = WorkspaceClient::open(no_token, tmp.path(), &queue).unwrap();
    let err = wc.flush().await.unwrap_err();
    assert!(
        matches!(err, prochub::client::ClientError::Unauthorized { .. }),
        "{err}"
    );
    assert_eq!(wc.queued().len(), 2, "nothing dropped");
    assert!(wc.is_offline().await, "later requests still queue behind them");
    assert_eq!(OfflineQueue::open(&queue).unwrap().len(), 2);

    let with_token = Client::new(&server.url, Some("s3cret".into())).unwrap();
    let wc = WorkspaceClient::open(with_token.clone(), tmp.path(), &queue).unwrap();
    let report = wc.flush().await.unwrap();
    assert_eq!((report.sent, report.remaining, report.rejected.len()), (2, 0, 0));
    assert_eq!(with_token.get_process(&id).await.unwrap().status, Status::Completed);
    server.stop().await;
}

/// Queued appends of a process this client submitted know where its
/// output ends: each records the offset after the previous one.
#[tokio::test]
async fn queued_appends_record_the_offset_they_expect() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = tmp.path().join("queue.jsonl");
    let wc = WorkspaceClient::open(dead_client(), tmp.path(), &queue).unwrap();
    let (id, _) = wc.submit(named("appender")).await.unwrap();
    assert_eq!(wc.append(&id, "one\n", None).await.unwrap(), Delivery::Queued);
    let stderr = Some(prochub::model::StreamKind::Stderr);
    assert_eq!(wc.append(&id, "two €\n", stderr).await.unwrap(), Delivery::Queued);
    // Another process, never submitted here: its end is unknown.
    assert_eq!(wc.append("elsewhere", "x", None).await.unwrap(), Delivery::Queued);
    let appends: Vec<(String, Option<u64>)> = OfflineQueue::open(&queue)
        .unwrap()
        .entries()
        .iter()
        .filter_map(|e| match &e.op {
            QueuedOp::Append { id, at, .. } => Some((id.clone(), *at)),
            _ => None,
        })
        .collect();
    assert_eq!(
        appends,
        [(id.clone(), Some(0)), (id.clone(), Some(4)), ("elsewhere".into(), None)]
    );
}

/// Regression test for the double-append of a repeated flush: a flush
/// stored the queued appends, then crashed before their removal reached
/// the queue file; the next flush sent them again and the output held
/// them twice. Simulated by flushing, then putting back a copy of the
/// queue file taken before, and flushing again.
#[tokio::test]
async fn a_flush_repeated_from_a_copy_of_the_queue_does_not_double_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let queue = tmp.path().join("queue.jsonl");
    let wc = WorkspaceClient::open(dead_client(), tmp.path(), &queue).unwrap();
    let (id, _) = wc.submit(named("appender")).await.unwrap();
    for line in ["one\n", "two\n", "three\n"] {
        assert_eq!(wc.append(&id, line, None).await.unwrap(), Delivery::Queued);
    }
    drop(wc);
    let copy = std::fs::read(&queue).unwrap();

    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let online = Client::new(&server.url, None).unwrap();
    let wc = WorkspaceClient::open(online.clone(), tmp.path(), &queue).unwrap();
    let report = wc.flush().await.unwrap();
    assert_eq!((report.sent, report.rejected.len()), (4, 0), "{:?}", report.rejected);
    let read = || async {
        online
            .read_output(&id, &prochub::model::OutputQuery::default())
            .await
            .unwrap()
            .body
    };
    assert_eq!(read().await, "one\ntwo\nthree\n");
    drop(wc);

    // The crash: the removals never reached the file.
    std::fs::write(&queue, &copy).unwrap();
    let wc = WorkspaceClient::open(online.clone(), tmp.path(), &queue).unwrap();
    let report = wc.flush().await.unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!((report.sent, report.remaining), (4, 0));
    assert_eq!(read().await, "one\ntwo\nthree\n", "each append stored once");

    // Online again, the client continues at the end it now knows.
    let d = wc.append(&id, "four\n", None).await.unwrap();
    assert_eq!(d, Delivery::Appended { output_bytes: 19 });
    assert_eq!(read().await, "one\ntwo\nthree\nfour\n");
    server.stop().await;
}
