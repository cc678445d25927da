//! Graceful shutdown of the in-process server: open streams and sockets
//! are closed, `run` returns, nothing acknowledged is lost.

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helper::http::{append, create};
use crate::helper::server::{TestServer, WAIT};
use crate::helper::sse::{SseReader, ws_connect};

#[tokio::test]
async fn shutdown_closes_sse_streams_and_websockets() {
    let mut s = TestServer::start().await;
    let p = create(s.addr, json!({"name": "x"})).await;
    let id = p["id"].as_str().unwrap();
    let mut follow = SseReader::open(s.addr, &format!("/api/processes/{id}/stream"), &[]).await;
    let mut events = SseReader::open(s.addr, "/api/events", &[]).await;
    let mut ws = ws_connect(s.addr, "/ws").await;
    append(s.addr, id, "before shutdown").await;
    assert_eq!(follow.next_named().await.unwrap().name(), "chunk");

    s.stop().await.expect("clean shutdown");

    // Each stream ends (None) instead of hanging; the socket gets a close.
    while follow.next().await.is_some() {}
    while events.next().await.is_some() {}
    let mut saw_close = false;
    while let Some(msg) = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("socket ends in time")
    {
        match msg {
            Ok(Message::Close(_)) => saw_close = true,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(saw_close, "the server sends a close frame");
    // New connections are refused.
    assert!(tokio::net::TcpStream::connect(s.addr).await.is_err());
    // The acknowledged output is there.
    let out = s
        .store
        .read_output(&crate::helper::id(id), prochub::store::OutputRange::All)
        .await
        .unwrap();
    assert_eq!(out, b"before shutdown");
}
