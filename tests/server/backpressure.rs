//! Issue 8, clients that never read: responses stream (output from the
//! log, lists in frames) and lifecycle events are delivered from the
//! bytes-capped ring, so a client that stops reading costs the server its
//! socket buffers and one frame. The memory tests run the real binary and
//! read its VmRSS; a stalled client (`http::stalled`) is a raw socket with
//! a small receive buffer that reads the response head and nothing more.

use std::net::SocketAddr;

use futures_util::StreamExt;
use prochub::model::{EventKind, ProcessPatch};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::helper::http::{self, create, get, stalled};
use crate::helper::server::{BinServer, TestServer, WAIT};
use crate::helper::sse::{SseReader, ws_connect};

const MIB: u64 = 1024 * 1024;

/// A GET that asks the server to close after the response, so a client
/// that reads it to the end sees the end.
fn get_request(addr: SocketAddr, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n")
}

/// Asserts the response head read so far starts with `status_line`.
fn assert_head(head: &[u8], status_line: &str) {
    assert!(
        head.starts_with(status_line.as_bytes()),
        "{:?}",
        String::from_utf8_lossy(head)
    );
}

/// `n` stalled GETs of `path`, each checked to be a 200.
async fn stall_many(addr: SocketAddr, path: &str, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (s, head) = stalled(addr, &get_request(addr, path)).await;
        assert_head(&head, "HTTP/1.1 200");
        out.push(s);
    }
    out
}

/// The real binary, with glibc's mmap threshold fixed at 128 KiB: by
/// default it rises after the first big free, and freed request buffers
/// then stay resident in the heap, so VmRSS would measure the allocator's
/// retention instead of what the server holds.
async fn start_measured(data: &std::path::Path, extra: &[&str]) -> BinServer {
    BinServer::builder(data)
        .args(extra)
        .env("MALLOC_MMAP_THRESHOLD_", "131072")
        .start()
        .await
}

/// A measured server taking bodies of 3 MiB results, and the path of a
/// record to update with them.
async fn measured_with_a_record(data: &std::path::Path) -> (BinServer, String) {
    let server = start_measured(data, &["--max-body", "4MiB"]).await;
    let p = create(server.addr, json!({"name": "busy"})).await;
    let path = format!("/api/processes/{}", p["id"].as_str().expect("id"));
    (server, path)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// Regression: `GET …/output` built the whole range in memory before
/// answering, so each client asking for a 16 MiB log that did not read
/// held 16 MiB (100 such clients: 1.66 GB). It now reads one block at a
/// time as the client takes it.
#[tokio::test]
async fn bug_output_of_a_big_log_was_held_in_memory_per_client_that_did_not_read() {
    const CLIENTS: u64 = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_measured(dir.path(), &[]).await;
    let p = create(server.addr, json!({"name": "big"})).await;
    let id = p["id"].as_str().expect("id");
    let piece = "0123456789abcdef".repeat(62_500); // 1,000,000 bytes
    for _ in 0..16 {
        http::append(server.addr, id, &piece).await;
    }
    let path = format!("/api/processes/{id}/output");
    let before = server.rss();
    let clients = stall_many(server.addr, &path, CLIENTS as usize).await;
    let grown = server.rss().saturating_sub(before);
    assert!(
        grown < CLIENTS * 2 * MIB,
        "{CLIENTS} clients not reading a 16 MB log grew the server by {:.1} MiB",
        mib(grown)
    );
    drop(clients);
    // And a client that reads gets every byte.
    let r = get(server.addr, &path).await;
    r.expect(200);
    assert_eq!(r.body.len(), 16 * piece.len());
    assert!(r.text().starts_with(&piece) && r.text().ends_with(&piece));
}

/// Regression: `GET /api/processes` cloned and serialized its whole page
/// before answering, so each client that did not read held the page twice
/// (20 clients of a page with 1 MB `result`s: 4.87 GB). It now serializes
/// a frame of records at a time as the client reads.
#[tokio::test]
async fn bug_a_page_of_big_records_was_held_in_memory_per_client_that_did_not_read() {
    const CLIENTS: u64 = 20;
    const RECORDS: usize = 32;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_measured(dir.path(), &[]).await;
    let big = "r".repeat(500_000);
    for i in 0..RECORDS {
        create(server.addr, json!({"name": format!("p{i}"), "result": big})).await;
    }
    // A reader gets the whole page, as valid JSON, newest first.
    let page = get(server.addr, "/api/processes").await;
    page.expect(200);
    assert_names_newest_first(&page.json(), 0..RECORDS);
    let before = server.rss();
    let clients = stall_many(server.addr, "/api/processes", CLIENTS as usize).await;
    let grown = server.rss().saturating_sub(before);
    assert!(
        grown < CLIENTS * 3 * MIB,
        "{CLIENTS} clients not reading a 16 MB page grew the server by {:.1} MiB",
        mib(grown)
    );
    drop(clients);
}

/// The WebSocket handshake on a stalled socket.
fn ws_request(addr: SocketAddr) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nhost: {addr}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// `prochub_open_connections{kind="ws"}` of a server.
async fn open_ws(addr: SocketAddr) -> u64 {
    let m = get(addr, "/metrics").await;
    m.text()
        .lines()
        .find_map(|l| l.strip_prefix("prochub_open_connections{kind=\"ws\"} "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the ws connection gauge")
}

/// Regression: a `/ws` or `/api/events` client that never read pinned the
/// live broadcast channel's 4,096 events (1.8 GB during 3,000 updates of
/// records with 256 KiB results): the 32 MiB cap covered the replay ring
/// only. Events are now delivered from the ring itself, so the server
/// holds at most the ring however many subscribers stall, and the stalled
/// WebSocket is dropped once it has lagged.
#[tokio::test]
async fn bug_a_stalled_lifecycle_subscriber_pinned_the_live_channel() {
    // 72 MB of events in few updates (each is a durable record write).
    const UPDATES: usize = 24;
    const RESULT: usize = 3 * 1024 * 1024;
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, path) = measured_with_a_record(dir.path()).await;
    let (ws, head) = stalled(server.addr, &ws_request(server.addr)).await;
    assert_head(&head, "HTTP/1.1 101");
    let (sse, _) = stalled(server.addr, &get_request(server.addr, "/api/events")).await;
    assert_eq!(open_ws(server.addr).await, 1);
    let before = server.rss();
    let big = "u".repeat(RESULT);
    for i in 0..UPDATES {
        let r = http::patch_json(server.addr, &path, &json!({"result": big, "metadata": {"i": i}})).await;
        r.expect(200);
    }
    let grown = server.rss().saturating_sub(before);
    // The ring's cap, plus request and socket buffers.
    let bound = prochub::store::EVENT_RING_BYTES as u64 + 48 * MIB;
    assert!(
        grown < bound,
        "{UPDATES} updates of 3 MiB with two stalled subscribers grew the server by {:.1} MiB",
        mib(grown)
    );
    // The WebSocket fell behind the ring: the server gave up on it.
    crate::helper::wait_until("the stalled WebSocket is closed", WAIT, async || {
        open_ws(server.addr).await == 0
    })
    .await;
    drop((ws, sse));
}

/// Regression: a reconnect to `/api/events` with a `Last-Event-ID` early
/// in the ring got every event it missed copied into its first frame (up
/// to the ring's 32 MiB per client, read or not). The missed events are
/// now read from the ring as the client reads.
#[tokio::test]
async fn bug_a_reconnect_copied_its_whole_replay_into_one_frame() {
    const CLIENTS: u64 = 10;
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, path) = measured_with_a_record(dir.path()).await;
    let mut reader = SseReader::open(server.addr, "/api/events", &[]).await;
    let big = "u".repeat(3 * 1024 * 1024);
    for i in 0..8 {
        http::patch_json(server.addr, &path, &json!({"result": big, "metadata": {"i": i}}))
            .await
            .expect(200);
    }
    let first = reader.next_named().await.expect("the first update");
    let last_id = first.id.expect("an EPOCH-SEQ id");
    drop(reader);
    let request = format!(
        "GET /api/events HTTP/1.1\r\nhost: {}\r\nlast-event-id: {last_id}\r\n\r\n",
        server.addr
    );
    let before = server.rss();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(stalled(server.addr, &request).await.0);
    }
    let grown = server.rss().saturating_sub(before);
    // Each holds one frame: here one 3 MiB event, plus socket buffers.
    assert!(
        grown < CLIENTS * 5 * MIB,
        "{CLIENTS} reconnects replaying 24 MiB each, not reading, grew the server by {:.1} MiB",
        mib(grown)
    );
    drop(clients);
}

/// A big record event, published straight into the ring (no disk write):
/// the delivery is what these tests pin.
fn publish_big(s: &TestServer, p: &prochub::model::Process, n: usize) {
    let mut p = p.clone();
    p.result = Some(Value::String("e".repeat(512 * 1024)));
    for _ in 0..n {
        s.store.events().process(EventKind::ProcessUpdated, &p);
    }
}

/// An in-process server with one record whose events [`publish_big`] sends.
async fn with_a_record() -> (TestServer, prochub::model::Process) {
    let s = TestServer::start().await;
    let p = s
        .store
        .create_process(crate::helper::new_proc("p"))
        .await
        .expect("create");
    (s, p)
}

/// Events past the ring's byte cap: more than a subscriber can be behind.
fn past_the_ring() -> usize {
    prochub::store::EVENT_RING_BYTES / (512 * 1024) + 16
}

/// A subscriber to `/api/events` that falls behind the ring gets one
/// `event: reset` (re-list), then goes on with live events.
#[tokio::test]
async fn an_sse_subscriber_that_falls_behind_the_ring_gets_reset_then_live_events() {
    let (s, p) = with_a_record().await;
    let mut r = SseReader::open(s.addr, "/api/events", &[]).await;
    assert!(
        r.next()
            .await
            .expect("greeting")
            .comments
            .iter()
            .any(|c| c.contains("connected"))
    );
    publish_big(&s, &p, past_the_ring());
    let mut seen = 0;
    loop {
        let ev = r.next_named().await.expect("stream open");
        if ev.name() == "reset" {
            break;
        }
        assert_eq!(ev.name(), "process-updated");
        seen += 1;
        assert!(seen < past_the_ring(), "no reset after {seen} events");
    }
    let patch = ProcessPatch {
        result: Some(json!("after the reset")),
        ..Default::default()
    };
    s.store.update_process(&p.id, patch).await.expect("update");
    let live = r.next_named().await.expect("stream open");
    assert_eq!(live.name(), "process-updated");
    assert_eq!(live.json()["process"]["result"], "after the reset");
}

/// A `/ws` client that falls behind the ring is closed with 1013 (try
/// again later) and a reason. On one thread the publishing finishes before
/// the socket's task runs, so it lags at once and the client is reading by
/// the time the close is sent (the close waits at most 2 s for a client
/// that does not read; the blocked-send case is pinned by the memory test
/// above, whose stalled socket the server drops).
#[tokio::test]
async fn a_websocket_that_falls_behind_the_ring_is_closed_with_1013() {
    let (s, p) = with_a_record().await;
    let mut ws = ws_connect(s.addr, "/ws").await;
    publish_big(&s, &p, past_the_ring());
    let mut texts = 0;
    let close = loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message within the bound")
            .expect("a close frame before the end")
            .expect("message");
        match msg {
            Message::Text(_) => texts += 1,
            Message::Close(frame) => break frame.expect("a close code"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::Again);
    assert!(
        close.reason.contains("re-list"),
        "a reason that says what to do: {close:?}"
    );
    assert_eq!(texts, 0, "its first event had left the ring already");
}

/// The output range is fixed when the request arrives, long output goes
/// out chunked in blocks that never split a character, short output with
/// its `Content-Length`.
#[tokio::test]
async fn output_streams_the_range_stored_when_the_request_arrived() {
    let s = TestServer::start().await;
    let p = create(s.addr, json!({"name": "out"})).await;
    let id = p["id"].as_str().expect("id");
    http::append(s.addr, id, "héllo").await;
    let path = format!("/api/processes/{id}/output");
    let small = get(s.addr, &path).await;
    assert_eq!(small.header("content-length"), Some("6"));
    assert_eq!(small.text(), "héllo");
    // 8 MB (more than the socket buffers take) of two-byte characters
    // after one byte: every block boundary of the log falls inside one.
    let piece = "é".repeat(500_000);
    for _ in 0..8 {
        http::append(s.addr, id, &piece).await;
    }
    let expected = format!("héllo{}", piece.repeat(8));
    let (stalled, head) = stalled(s.addr, &get_request(s.addr, &path)).await;
    let head_text = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head_text.contains("transfer-encoding: chunked"), "{head_text}");
    assert!(!head_text.contains("content-length"), "{head_text}");
    // Appended after the request: not part of its body.
    http::append(s.addr, id, "later").await;
    let body = read_chunked_body(stalled, head).await;
    assert_eq!(body.len(), expected.len());
    assert!(body == expected, "the body is the output stored at the request");
    // `?offset` inside a character starts at the next one, across blocks
    // (and a new request sees what was appended since).
    let r = get(s.addr, &format!("{path}?offset=7")).await;
    assert!(
        r.text() == format!("{}later", &expected[8..]),
        "offset inside a character"
    );
}

/// Reads a stalled response to its end (`head`: what [`stalled`] read);
/// returns the payload of its chunked body.
async fn read_chunked_body(mut stalled: TcpStream, head: Vec<u8>) -> String {
    let mut rest = head;
    tokio::time::timeout(WAIT, stalled.read_to_end(&mut rest))
        .await
        .expect("the body within the bound")
        .expect("read body");
    let raw = String::from_utf8(rest).expect("UTF-8 response");
    dechunk(raw.split_once("\r\n\r\n").expect("head").1)
}

/// The payload of a chunked HTTP/1.1 body (ends at the last chunk).
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size line");
        let n = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// Asserts a page of records named `p{i}` holds exactly `numbers`, newest
/// (highest) first.
fn assert_names_newest_first(page: &Value, numbers: std::ops::Range<usize>) {
    let names: Vec<&str> = page
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    let expected: Vec<String> = numbers.rev().map(|i| format!("p{i}")).collect();
    assert_eq!(names, expected);
}

/// **Choice** pinned: a record deleted after its page was chosen but before
/// it was serialized is left out, and the array stays valid JSON.
#[tokio::test]
async fn a_record_deleted_while_its_page_is_written_is_left_out() {
    const RECORDS: usize = 24;
    let s = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..RECORDS {
        let mut new = crate::helper::new_proc(&format!("p{i}"));
        new.result = Some(Value::String("d".repeat(1_000_000)));
        ids.push(s.store.create_process(new).await.expect("create").id);
    }
    let (stalled, head) = stalled(s.addr, &get_request(s.addr, "/api/processes")).await;
    assert_head(&head, "HTTP/1.1 200");
    // The oldest record comes last in the page: not serialized yet (the
    // socket buffers hold a few MB of the 24 MB page at most).
    http::delete(s.addr, &format!("/api/processes/{}", ids[0]))
        .await
        .expect(204);
    let body = read_chunked_body(stalled, head).await;
    let page: Value = serde_json::from_str(&body).expect("a valid JSON array");
    assert_names_newest_first(&page, 1..RECORDS);
}

/// Regression: a follower that stopped reading held hyper's whole write
/// queue (72 KiB) plus a 256 KiB frame until the stall limit: 144 KiB per
/// follower measured with 2,000 (20,000 would pass 2.7 GiB). Its stream now
/// makes no frame while the socket is backed up, and frames are one log
/// block: 87 KiB per follower, the connection included (release; debug
/// builds here: 173 KiB before, 107 after).
#[tokio::test]
async fn bug_a_stalled_follower_held_the_write_queue_and_a_256_kib_frame() {
    const FOLLOWERS: u64 = 200;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_measured(dir.path(), &[]).await;
    let p = create(server.addr, json!({"name": "loud"})).await;
    let id = p["id"].as_str().expect("id");
    let path = format!("/api/processes/{id}/stream");
    let before = server.rss();
    let followers = stall_many(server.addr, &path, FOLLOWERS as usize).await;
    let piece = "x".repeat(64 * 1024);
    for _ in 0..128 {
        http::append(server.addr, id, &piece).await; // 8 MiB: every follower lags
    }
    // No signal says every follower is stuck: wait until the server's RSS
    // stops growing (two samples 250 ms apart within 1%), at most 10 s.
    let mut last = server.rss();
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let now = server.rss();
        if now.abs_diff(last) * 100 <= last {
            break;
        }
        last = now;
    }
    let per = server.rss().saturating_sub(before) / FOLLOWERS;
    eprintln!("stalled follower: {:.1} KiB each", per as f64 / 1024.0);
    assert!(
        per < 140 * 1024,
        "{FOLLOWERS} stalled followers cost {:.1} KiB each",
        per as f64 / 1024.0
    );
    drop(followers);
}
