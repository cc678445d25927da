//! Lifecycle events over WebSocket and SSE (SPEC section 4).

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helper::http::{self, complete, create, post_json};
use crate::helper::server::{PAUSED_HEARTBEAT, TestServer, WAIT};
use crate::helper::sse::{SseReader, ws_connect, ws_next};

#[tokio::test]
async fn websocket_broadcasts_added_updated_removed() {
    let s = TestServer::start().await;
    let mut ws = ws_connect(s.addr, "/ws").await;
    let p = create(s.addr, json!({"name": "x"})).await;
    let id = p["id"].as_str().unwrap();
    let added = ws_next(&mut ws).await;
    assert_eq!(added["type"], "process-added");
    assert_eq!(added["process"], p);
    assert!(added["timestamp"].is_string());
    assert_eq!(
        added.as_object().unwrap().len(),
        3,
        "exactly type, process, timestamp: {added}"
    );
    complete(s.addr, id).await;
    let updated = ws_next(&mut ws).await;
    assert_eq!(updated["type"], "process-updated");
    assert_eq!(updated["process"]["status"], "completed");
    http::delete(s.addr, &format!("/api/processes/{id}")).await.expect(204);
    let removed = ws_next(&mut ws).await;
    assert_eq!(removed["type"], "process-removed");
    assert_eq!(removed["process"]["id"], id);
    post_json(s.addr, "/api/workspaces", &json!({"id": "w", "name": "W"}))
        .await
        .expect(201);
    let w = ws_next(&mut ws).await;
    assert_eq!(w["type"], "workspace-added");
    assert_eq!(w["workspace"]["id"], "w");
}

#[tokio::test]
async fn websocket_filters_by_workspace_and_answers_pings() {
    let s = TestServer::start().await;
    post_json(s.addr, "/api/workspaces", &json!({"id": "mine", "name": "M"}))
        .await
        .expect(201);
    let mut ws = ws_connect(s.addr, "/ws?workspace=mine").await;
    create(s.addr, json!({"name": "other"})).await;
    let mine = create(s.addr, json!({"name": "mine", "workspace": "mine"})).await;
    let ev = ws_next(&mut ws).await;
    assert_eq!(ev["process"]["id"], mine["id"]);
    ws.send(Message::Ping(b"hi"[..].into())).await.unwrap();
    let pong = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(pong, Message::Pong(b"hi"[..].into()));
    ws.send(Message::Close(None)).await.unwrap();
    // The server answers the close and ends the socket.
    while let Some(Ok(m)) = tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        assert!(matches!(m, Message::Close(_)), "{m:?}");
    }
}

#[tokio::test]
async fn events_sse_has_ids_replay_and_reset() {
    let s = TestServer::start().await;
    let mut r = SseReader::open(s.addr, "/api/events", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "text/event-stream");
    let hello = r.next().await.unwrap();
    assert!(
        r.raw.starts_with(b": connected\n"),
        "{:?}",
        String::from_utf8_lossy(&r.raw)
    );
    assert_eq!(hello.comments, ["connected"]);
    let p1 = create(s.addr, json!({"name": "one"})).await;
    let ev = r.next_named().await.unwrap();
    assert_eq!(ev.name(), "process-added");
    assert_eq!(ev.json()["process"], p1);
    let id1 = ev.id.clone().unwrap();
    assert_eq!(id1, format!("{}-1", s.store.events().epoch()));
    drop(r);

    let p2 = create(s.addr, json!({"name": "two"})).await;
    complete(s.addr, p2["id"].as_str().unwrap()).await;
    let mut r = SseReader::open(s.addr, "/api/events", &[("last-event-id", &id1)]).await;
    let a = r.next_named().await.unwrap();
    let b = r.next_named().await.unwrap();
    assert_eq!((a.name(), b.name()), ("process-added", "process-updated"));
    assert_eq!(a.json()["process"]["id"], p2["id"]);
    assert_eq!(b.id.unwrap(), format!("{}-3", s.store.events().epoch()));
    drop(r);

    let mut r = SseReader::open(s.addr, "/api/events", &[("last-event-id", "OTHEREPOCH-3")]).await;
    assert_eq!(r.next_named().await.unwrap().name(), "reset");
    // Then live as usual.
    create(s.addr, json!({"name": "three"})).await;
    assert_eq!(r.next_named().await.unwrap().name(), "process-added");
}

/// On the paused clock, so the heartbeat interval costs no real time.
#[tokio::test(start_paused = true)]
async fn events_sse_filters_by_workspace_and_heartbeats() {
    let s = TestServer::start_with(prochub::server::ServerConfig {
        heartbeat: PAUSED_HEARTBEAT,
        ..Default::default()
    })
    .await;
    post_json(s.addr, "/api/workspaces", &json!({"id": "mine", "name": "M"}))
        .await
        .expect(201);
    let mut r = SseReader::open(s.addr, "/api/events?workspace=mine", &[]).await;
    create(s.addr, json!({"name": "other"})).await;
    let mine = create(s.addr, json!({"name": "mine", "workspace": "mine"})).await;
    loop {
        let ev = r.next_named().await.unwrap();
        if ev.name() == "heartbeat" {
            continue;
        }
        assert_eq!(ev.json()["process"]["id"], mine["id"]);
        break;
    }
    assert_eq!(r.next_named().await.unwrap().name(), "heartbeat");
}

/// Regression: `/ws` never wrote anything to an idle socket, so a client
/// that vanished silently (no FIN, e.g. a sleeping laptop) was never
/// noticed while no events flowed. The server now pings every
/// `--heartbeat`, and a write that fails ends the socket. On the paused
/// clock: the pings come one interval apart.
#[tokio::test(start_paused = true)]
async fn bug_idle_websockets_were_never_pinged() {
    let s = TestServer::start_with(prochub::server::ServerConfig {
        heartbeat: PAUSED_HEARTBEAT,
        ..Default::default()
    })
    .await;
    let connecting = tokio::time::Instant::now();
    let mut ws = ws_connect(s.addr, "/ws").await;
    let mut pings = 0;
    while pings < 2 {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        assert!(matches!(msg, Message::Ping(_)), "only pings on an idle socket: {msg:?}");
        pings += 1;
        let idle = connecting.elapsed();
        assert!(
            idle >= PAUSED_HEARTBEAT * pings && idle < PAUSED_HEARTBEAT * (pings + 1),
            "ping {pings} after {idle:?} of idleness"
        );
    }
    // Events still arrive in between.
    let p = create(s.addr, json!({"name": "x"})).await;
    assert_eq!(ws_next(&mut ws).await["process"]["id"], p["id"]);
}
