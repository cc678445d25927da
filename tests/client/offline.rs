//! The editor layer: workspace identity and the offline queue.

use prochub::client::{Client, Delivery, ListParams, QueuedOp, WorkspaceClient, WorkspaceIdentity};
use prochub::model::{NewProcess, ProcessPatch, Status};

use crate::helper::client::{ServerProc, WAIT, free_port};

fn named(name: &str) -> NewProcess {
    NewProcess {
        name: name.into(),
        ..Default::default()
    }
}

fn dead_client() -> Client {
    Client::new(&format!("127.0.0.1:{}", free_port()), None).unwrap()
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
    prochub::model::validate_id(&first.id).unwrap();
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
            &ListParams {
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
    drop(wc);

    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let online = Client::new(&server.url, None).unwrap();

    // A crash after the server acknowledged the first two creates but
    // before they left the file: simulate by delivering them directly.
    for op in &entries[..2] {
        let QueuedOp::Create { process } = op else {
            panic!("{op:?}")
        };
        online
            .create_workspace(&WorkspaceIdentity::for_path(tmp.path()).unwrap().registration())
            .await
            .unwrap();
        online.create_process(process).await.unwrap();
    }

    // A flush interrupted at an arbitrary point (the future is dropped
    // once a few requests went out)...
    let wc = WorkspaceClient::open(online.clone(), tmp.path(), &queue).unwrap();
    {
        let flush = wc.flush();
        tokio::pin!(flush);
        let target = online.requests_attempted() + 6;
        let interrupt = async {
            loop {
                tokio::select! {
                    r = &mut flush => panic!("the flush was meant to be interrupted, it finished: {r:?}"),
                    _ = tokio::task::yield_now() => {
                        if online.requests_attempted() >= target { break; }
                    }
                }
            }
        };
        tokio::time::timeout(WAIT, interrupt)
            .await
            .expect("the flush makes progress");
    }
    let left = wc.queued().len();
    assert!(left > 0 && left < entries.len(), "interrupted half-way ({left} left)");

    // ...and repeated: everything arrives once.
    let report = tokio::time::timeout(WAIT, wc.flush()).await.unwrap().unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert!(wc.queued().is_empty());
    let all = online.list_all(&ListParams::default(), None).await.unwrap();
    assert_eq!(all.len(), 12, "no duplicates, none missing");
    let mut seen: Vec<&str> = all.iter().map(|p| p.id.as_str()).collect();
    seen.sort();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(online.get_process(&ids[0]).await.unwrap().status, Status::Completed);
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
