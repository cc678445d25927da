//! An SSE reader over a hyper response body, and a WebSocket client.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

use super::http::{build, send};
use super::server::WAIT;

/// One SSE block (fields of the lines up to a blank line).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub retry: Option<String>,
    pub comments: Vec<String>,
}

impl Event {
    pub fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("data")).expect("JSON data")
    }
}

pub struct SseReader {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    body: Incoming,
    buf: BytesMut,
    /// Every byte received, for exact-format assertions.
    pub raw: Vec<u8>,
}

impl SseReader {
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseReader {
        let resp: Response<Incoming> = send(addr, build(Method::GET, addr, path, headers, Bytes::new())).await;
        let (parts, body) = resp.into_parts();
        SseReader {
            status: parts.status,
            headers: parts.headers,
            body,
            buf: BytesMut::new(),
            raw: Vec::new(),
        }
    }

    /// The next block, or None when the server ended the stream. Panics if
    /// nothing arrives within the bound.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = find_blank(&self.buf) {
                let block = self.buf.split_to(end + 2);
                return Some(parse(&block[..end]));
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("an SSE frame within the bound");
            match frame {
                None => {
                    assert!(self.buf.is_empty(), "stream ended inside an event: {:?}", self.buf);
                    return None;
                }
                Some(Err(e)) => panic!("stream failed: {e}"),
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.raw.extend_from_slice(&d);
                        self.buf.extend_from_slice(&d);
                    }
                }
            }
        }
    }

    /// The next block that has an `event:` name (skips `retry`, comments).
    pub async fn next_named(&mut self) -> Option<Event> {
        loop {
            let ev = self.next().await?;
            if ev.event.is_some() {
                return Some(ev);
            }
        }
    }

    /// Reads to the end; returns the named events.
    pub async fn rest(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(ev) = self.next_named().await {
            out.push(ev);
        }
        out
    }
}

fn find_blank(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\n\n")
}

fn parse(block: &[u8]) -> Event {
    let text = std::str::from_utf8(block).expect("SSE is UTF-8");
    let mut ev = Event::default();
    for line in text.split('\n') {
        if let Some(c) = line.strip_prefix(':') {
            ev.comments.push(c.trim().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "id" => ev.id = Some(value),
            "event" => ev.event = Some(value),
            "retry" => ev.retry = Some(value),
            "data" => {
                ev.data = Some(match ev.data.take() {
                    Some(d) => format!("{d}\n{value}"),
                    None => value,
                })
            }
            other => panic!("unknown SSE field {other:?} in {text:?}"),
        }
    }
    ev
}

/// Follows a process; concatenated chunk contents, and the named events.
pub async fn follow_all(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (String, Vec<Event>) {
    let mut r = SseReader::open(addr, path, headers).await;
    assert_eq!(r.status, 200);
    let events = r.rest().await;
    let content = events
        .iter()
        .filter(|e| e.name() == "chunk")
        .map(|e| e.json()["content"].as_str().expect("content").to_owned())
        .collect();
    (content, events)
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects a WebSocket to `/ws…` on the server.
pub async fn ws_connect(addr: SocketAddr, path_and_query: &str) -> Ws {
    let url = format!("ws://{addr}{path_and_query}");
    let (ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("WebSocket handshake within the bound")
        .expect("WebSocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next text message as JSON (pongs and pings skipped).
pub async fn ws_next(ws: &mut Ws) -> Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a WebSocket message within the bound")
            .expect("socket open")
            .expect("message");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON text frame"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}
