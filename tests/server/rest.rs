//! The REST API over a real server: process and workspace lifecycles,
//! id conflicts, lists and their `Link` pagination, prune and cancel,
//! server-run commands, and the regressions of PATCH and output.

use serde_json::json;

use crate::helper::http::{self, append, complete, create, get, post_json};
use crate::helper::server::TestServer;
use crate::helper::sse::follow_all;

#[tokio::test]
async fn full_lifecycle_of_a_process() {
    let s = TestServer::start().await;
    let a = s.addr;
    let health = get(a, "/healthz").await;
    health.expect(200);
    assert_eq!(health.json()["status"], "ok");
    assert!(health.json()["uptime_s"].is_u64());

    let r = post_json(a, "/api/processes", &json!({"name": "build", "metadata": {"k": 1}})).await;
    r.expect(201);
    let p = r.json();
    let id = p["id"].as_str().unwrap().to_owned();
    assert_eq!(r.header("location"), Some(format!("/api/processes/{id}").as_str()));
    assert_eq!(p["status"], "running");
    assert_eq!(p["workspace"], "default");

    assert_eq!(append(a, &id, "one\n").await, 4);
    let r = http::call(
        a,
        http::Method::POST,
        &format!("/api/processes/{id}/output"),
        &[("content-type", "text/plain; charset=utf-8")],
        "two\n",
    )
    .await;
    r.expect(202);
    assert_eq!(r.json(), json!({"output_bytes": 8}));

    let out = get(a, &format!("/api/processes/{id}/output")).await;
    out.expect(200);
    assert_eq!(out.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(out.text(), "one\ntwo\n");
    assert_eq!(
        get(a, &format!("/api/processes/{id}/output?offset=4")).await.text(),
        "two\n"
    );
    assert_eq!(
        get(a, &format!("/api/processes/{id}/output?tail=2")).await.text(),
        "o\n"
    );

    let r = http::patch_json(
        a,
        &format!("/api/processes/{id}"),
        &json!({"name": "build 2", "metadata": {"j": 2}}),
    )
    .await;
    r.expect(200);
    assert_eq!(r.json()["metadata"], json!({"k": 1, "j": 2}));

    let done = complete(a, &id).await;
    assert_eq!(done["status"], "completed");
    assert!(done["duration"].is_string());
    assert!(done["ended_at"].is_string());
    assert_eq!(done["output_bytes"], 8);
    // Terminal status never changes.
    http::patch_json(a, &format!("/api/processes/{id}"), &json!({"status": "running"}))
        .await
        .expect(409);
    post_json(a, &format!("/api/processes/{id}/output"), &json!({"content": "late"}))
        .await
        .expect(409);

    let (content, events) = follow_all(a, &format!("/api/processes/{id}/stream?from=0"), &[]).await;
    assert_eq!(content, "one\ntwo\n");
    assert_eq!(events.last().unwrap().name(), "done");

    let list = get(a, "/api/processes").await;
    list.expect(200);
    assert_eq!(list.json().as_array().unwrap().len(), 1);
    assert_eq!(get(a, &format!("/api/processes/{id}")).await.json()["name"], "build 2");

    http::delete(a, &format!("/api/processes/{id}")).await.expect(204);
    get(a, &format!("/api/processes/{id}")).await.expect(404);
    http::delete(a, &format!("/api/processes/{id}")).await.expect(404);
}

#[tokio::test]
async fn client_ids_conflict_with_the_existing_record() {
    let s = TestServer::start().await;
    let p = create(s.addr, json!({"id": "offline-1", "name": "queued offline"})).await;
    let r = post_json(s.addr, "/api/processes", &json!({"id": "offline-1", "name": "again"})).await;
    r.expect(409);
    assert_eq!(r.json()["code"], "already_exists");
    assert_eq!(r.json()["existing"], p);
}

#[tokio::test]
async fn workspaces_and_isolation_between_them() {
    let s = TestServer::start().await;
    let a = s.addr;
    let r = post_json(
        a,
        "/api/workspaces",
        &json!({"id": "ws-a", "name": "A", "root_path": "/src/a"}),
    )
    .await;
    r.expect(201);
    post_json(a, "/api/workspaces", &json!({"id": "ws-a", "name": "A again"}))
        .await
        .expect(200);
    post_json(a, "/api/workspaces", &json!({"id": "ws-b", "name": "B"}))
        .await
        .expect(201);
    let ids: Vec<String> = get(a, "/api/workspaces")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["default", "ws-a", "ws-b"]);
    assert_eq!(get(a, "/api/workspaces/ws-a").await.json()["root_path"], "/src/a");

    for i in 0..3 {
        create(a, json!({"name": format!("a{i}"), "workspace": "ws-a"})).await;
    }
    let b = create(a, json!({"name": "b0", "workspace": "ws-b", "status": "queued"})).await;
    let la = get(a, "/api/processes?workspace=ws-a").await.json();
    assert_eq!(la.as_array().unwrap().len(), 3);
    assert!(la.as_array().unwrap().iter().all(|p| p["workspace"] == "ws-a"));
    let lb = get(a, "/api/processes?workspace=ws-b&status=queued").await.json();
    assert_eq!(lb, json!([b]));
    assert_eq!(
        get(a, "/api/processes?workspace=ws-b&status=running").await.json(),
        json!([])
    );

    let r = post_json(a, "/api/processes", &json!({"name": "x", "workspace": "nope"})).await;
    r.expect(400);
    assert_eq!(r.json()["code"], "unknown_workspace");

    let r = http::delete(a, "/api/workspaces/ws-a").await;
    r.expect(409);
    assert_eq!(r.json()["code"], "workspace_not_empty");
    http::delete(a, "/api/workspaces/ws-a?cascade=true").await.expect(204);
    assert_eq!(get(a, "/api/processes?workspace=ws-a").await.json(), json!([]));
    assert_eq!(get(a, "/api/processes").await.json(), json!([b]));
    get(a, "/api/workspaces/ws-a").await.expect(404);
}

#[tokio::test]
async fn lists_are_newest_first_and_paginate_with_link() {
    let s = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            create(s.addr, json!({"name": format!("p{i}")})).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut next = Some("/api/processes?limit=2".to_owned());
    while let Some(path) = next.take() {
        let r = get(s.addr, &path).await;
        r.expect(200);
        seen.extend(
            r.json()
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned()),
        );
        if let Some(link) = r.header("link") {
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            next = Some(link[1..link.find('>').unwrap()].to_owned());
            assert!(next.as_ref().unwrap().contains("limit=2"));
        }
    }
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn fifty_concurrent_creates_all_land() {
    let s = TestServer::start().await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let a = s.addr;
            tokio::spawn(async move {
                create(a, json!({"name": format!("c{i}")})).await["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    assert_eq!(get(s.addr, "/api/processes").await.json().as_array().unwrap().len(), 50);
    assert_eq!(s.store.process_count(), 50);
}

#[tokio::test]
async fn prune_and_cancel() {
    let s = TestServer::start().await;
    let a = s.addr;
    let running = create(a, json!({"name": "r"})).await;
    for i in 0..3 {
        let p = create(a, json!({"name": format!("d{i}")})).await;
        complete(a, p["id"].as_str().unwrap()).await;
    }
    let r = http::call(a, http::Method::POST, "/api/prune?max_count=1", &[], "").await;
    r.expect(200);
    assert_eq!(r.json(), json!({"removed": 2}));
    assert_eq!(get(a, "/api/processes").await.json().as_array().unwrap().len(), 2);
    http::call(a, http::Method::POST, "/api/prune?max_age=soon", &[], "")
        .await
        .expect(400);

    let id = running["id"].as_str().unwrap();
    let r = http::call(a, http::Method::POST, &format!("/api/processes/{id}/cancel"), &[], "").await;
    r.expect(200);
    assert_eq!(r.json()["status"], "cancelled");
    http::call(a, http::Method::POST, &format!("/api/processes/{id}/cancel"), &[], "")
        .await
        .expect(409);
    http::call(a, http::Method::POST, "/api/processes/nope/cancel", &[], "")
        .await
        .expect(404);
}

#[tokio::test]
async fn commands_run_with_allow_exec() {
    let s = TestServer::start_with(prochub::server::ServerConfig {
        allow_exec: true,
        ..Default::default()
    })
    .await;
    let r = post_json(
        s.addr,
        "/api/processes",
        &json!({"name": "echo", "command": ["echo", "hi"], "env": {"X": "1"}}),
    )
    .await;
    r.expect(201);
    let p = r.json();
    assert_eq!(p["command"], json!(["echo", "hi"]));
    assert!(p.get("cwd").is_none() && p.get("env").is_none());
    let id = p["id"].as_str().unwrap();
    let (content, events) = follow_all(s.addr, &format!("/api/processes/{id}/stream?from=0"), &[]).await;
    let status = events.iter().find(|e| e.name() == "status").unwrap().json();
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["exit_code"], 0);
    assert_eq!(content, "hi\n");

    // A running command is cancelled through the runner.
    let p = create(s.addr, json!({"name": "sleeper", "command": ["sleep", "30"]})).await;
    let id = p["id"].as_str().unwrap();
    let mut follow = crate::helper::sse::SseReader::open(s.addr, &format!("/api/processes/{id}/stream"), &[]).await;
    let r = http::call(
        s.addr,
        http::Method::POST,
        &format!("/api/processes/{id}/cancel"),
        &[],
        "",
    )
    .await;
    r.expect(200);
    assert_eq!(r.json()["status"], "cancelled");
    let end = follow.rest().await;
    assert_eq!(end.iter().map(|e| e.name()).collect::<Vec<_>>(), ["status", "done"]);
    assert_eq!(end[0].json()["status"], "cancelled");
}

#[tokio::test]
async fn chunks_of_server_run_commands_say_which_stream() {
    let s = TestServer::start_with(prochub::server::ServerConfig {
        allow_exec: true,
        ..Default::default()
    })
    .await;
    let gate = s.dir.path().join("gate");
    let script = format!(
        "while [ ! -f '{}' ]; do sleep 0.01; done; echo out; sleep 0.05; echo err >&2",
        gate.display()
    );
    let p = create(s.addr, json!({"name": "streams", "command": ["sh", "-c", script]})).await;
    let id = p["id"].as_str().unwrap();
    // Subscribed (the 200 is back) before the command may print anything.
    let mut r = crate::helper::sse::SseReader::open(s.addr, &format!("/api/processes/{id}/stream"), &[]).await;
    std::fs::write(&gate, "").unwrap();
    let events = r.rest().await;
    let chunks: Vec<serde_json::Value> = events
        .iter()
        .filter(|e| e.name() == "chunk")
        .map(|e| {
            let mut c = e.json();
            assert!(c["ts"].take().is_string(), "every chunk has its time");
            c.as_object_mut().expect("an object").remove("ts");
            c
        })
        .collect();
    assert_eq!(
        chunks,
        [
            json!({"content": "out\n", "stream": "stdout"}),
            json!({"content": "err\n", "stream": "stderr"})
        ]
    );
    assert_eq!(events.last().unwrap().name(), "done");
}

/// Regression: `PATCH {"metadata": null}` (RFC 7396: remove the member) was
/// a 400 "must be an object" instead of clearing the metadata.
#[tokio::test]
async fn bug_patch_metadata_null_was_400_instead_of_clearing() {
    let s = TestServer::start().await;
    let p = create(s.addr, json!({"name": "m", "metadata": {"a": 1, "b": {"c": 2}}})).await;
    let path = format!("/api/processes/{}", p["id"].as_str().unwrap());
    let r = http::patch_json(s.addr, &path, &json!({"metadata": {"a": null, "b": {"d": 3}}})).await;
    r.expect(200);
    assert_eq!(r.json()["metadata"], json!({"b": {"c": 2, "d": 3}}));
    let r = http::patch_json(s.addr, &path, &json!({"metadata": null, "name": "n"})).await;
    r.expect(200);
    assert_eq!(r.json()["metadata"], json!({}));
    assert_eq!(r.json()["name"], "n");
    assert_eq!(get(s.addr, &path).await.json()["metadata"], json!({}));
    // Anything else that is not an object is still refused.
    let r = http::patch_json(s.addr, &path, &json!({"metadata": [1]})).await;
    r.expect(400);
    assert_eq!(r.json()["field"], "metadata");
}

/// Regression: a log holding invalid UTF-8 (a write torn by a crash, with
/// more output appended after it) was served raw under
/// `text/plain; charset=utf-8`. Invalid bytes now become U+FFFD, as they
/// do in an SSE replay; a range starting inside a character starts at the
/// next one.
#[tokio::test]
async fn bug_output_with_invalid_utf8_was_served_as_utf8() {
    use prochub::store::{FileProcessStore, StoreConfig};
    let dir = tempfile::tempdir().unwrap();
    let store = FileProcessStore::open(dir.path(), StoreConfig::default())
        .await
        .unwrap();
    let id = crate::helper::running(&store, "torn").await;
    store.append_output(&id, "é€".into(), None).await.unwrap();
    // As if a crash tore the next append after the first byte of "é", and
    // the client appended again after the restart.
    let log = dir.path().join(format!("output/{id}.log"));
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(b"\xC3after\n");
    std::fs::write(&log, &bytes).unwrap();
    // A log from before the append index (an indexed one has its torn
    // tail cut at open, tests/store/history.rs): its bytes are served as
    // they are.
    std::fs::remove_file(log.with_extension("idx")).unwrap();
    let store = crate::helper::reopen(store, StoreConfig::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    tokio::spawn(prochub::server::run(listener, Default::default(), store, shutdown));

    let path = format!("/api/processes/{id}/output");
    let r = get(addr, &path).await;
    r.expect(200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.text(), "é€\u{FFFD}after\n");
    // "é" is 2 bytes: offset 1 is inside it, the body starts at "€".
    let r = get(addr, &format!("{path}?offset=1")).await;
    assert_eq!(r.text(), "€\u{FFFD}after\n");
    let r = get(addr, &format!("{path}?tail=7")).await;
    assert_eq!(r.text(), "\u{FFFD}after\n");
}

/// Regression: `PATCH {"status": "cancelled"}` on a running server-run
/// command marked the record cancelled but left the command running (its
/// output then went nowhere) until it ended by itself. It now goes through
/// the runner like `POST …/cancel`, after applying the patch's other fields.
#[tokio::test]
async fn bug_patch_cancelled_left_the_server_run_command_running() {
    let s = TestServer::start_with(prochub::server::ServerConfig {
        allow_exec: true,
        ..Default::default()
    })
    .await;
    let pid_file = s.dir.path().join("child.pid");
    let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
    let p = create(s.addr, json!({"name": "sleeper", "command": ["sh", "-c", script]})).await;
    let id = p["id"].as_str().unwrap();
    crate::helper::wait_until("the command wrote its pid", crate::helper::server::WAIT, async || {
        std::fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n'))
    })
    .await;
    let pid: libc::pid_t = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let r = http::patch_json(
        s.addr,
        &format!("/api/processes/{id}"),
        &json!({"status": "cancelled", "metadata": {"why": "user"}}),
    )
    .await;
    r.expect(200);
    assert_eq!(r.json()["status"], "cancelled");
    assert_eq!(r.json()["metadata"], json!({"why": "user"}));
    // SAFETY: signal 0 only checks whether the pid exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    if alive {
        // SAFETY: our own test command.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(!alive, "the command must be stopped when its record is cancelled");
    let stored = get(s.addr, &format!("/api/processes/{id}")).await.json();
    assert_eq!(stored["status"], "cancelled");
    // A process without a command is still just patched.
    let plain = create(s.addr, json!({"name": "plain"})).await;
    let r = http::patch_json(
        s.addr,
        &format!("/api/processes/{}", plain["id"].as_str().unwrap()),
        &json!({"status": "cancelled"}),
    )
    .await;
    r.expect(200);
    assert_eq!(r.json()["status"], "cancelled");
}
