//! Operations (SPEC section 12): `GET /metrics`, `GET /api/openapi.json`,
//! JSON for every malformed request (sent raw over TCP), access logs.
//!
//! Metrics are process-wide: tests that need exact gauges scrape a server
//! binary of their own (`BinServer`); in-process servers share the test
//! binary's counters, so those tests assert what other tests cannot change
//! (a label set, a lower bound, a per-store gauge read at scrape time).

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::helper::http::{Method, append, call, complete, create, get, raw};
use crate::helper::server::{BinServer, TestServer, WAIT};
use crate::helper::sse::{SseReader, ws_connect};

fn with_token() -> prochub::server::ServerConfig {
    prochub::server::ServerConfig {
        token: Some("s3cret".into()),
        ..Default::default()
    }
}

const AUTH: (&str, &str) = ("authorization", "Bearer s3cret");

/// The value of the sample `name` (exactly, labels included) in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.parse().expect("a sample value"))
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let r = get(addr, "/metrics").await;
    r.expect(200);
    r.text()
}

#[tokio::test]
async fn metrics_need_the_token_and_speak_both_text_formats() {
    let s = TestServer::start_with(with_token()).await;
    call(s.addr, Method::GET, "/metrics", &[], "").await.expect(401);
    let r = call(s.addr, Method::GET, "/metrics", &[AUTH], "").await;
    r.expect(200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    let build = format!(r#"prochub_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"));
    assert_eq!(sample(&text, &build), Some(1.0), "{text}");
    assert!(!text.contains("# EOF"));

    // Prometheus asks for OpenMetrics.
    let accept = (
        "accept",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    let r = call(s.addr, Method::GET, "/metrics", &[AUTH, accept], "").await;
    r.expect(200);
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(r.text().ends_with("# EOF\n"), "{}", r.text());

    // A known path: HEAD works, other methods are 405 with Allow.
    let r = call(s.addr, Method::POST, "/metrics", &[AUTH], "").await;
    r.expect(405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    call(s.addr, Method::HEAD, "/metrics", &[AUTH], "").await.expect(200);
}

#[tokio::test]
async fn processes_by_status_are_read_from_the_store_at_scrape_time() {
    let s = TestServer::start().await;
    let a = create(s.addr, json!({"name": "a"})).await;
    create(s.addr, json!({"name": "b"})).await;
    create(s.addr, json!({"name": "q", "status": "queued"})).await;
    complete(s.addr, a["id"].as_str().unwrap()).await;
    let text = scrape(s.addr).await;
    for (status, n) in [("running", 1.0), ("queued", 1.0), ("completed", 1.0), ("failed", 0.0)] {
        let name = format!(r#"prochub_processes{{status="{status}"}}"#);
        assert_eq!(sample(&text, &name), Some(n), "{name} in\n{text}");
    }
    assert_eq!(sample(&text, "prochub_emitters"), Some(0.0));
}

#[tokio::test]
async fn requests_are_counted_by_route_pattern_never_by_raw_path() {
    let s = TestServer::start().await;
    let p = create(s.addr, json!({"name": "counted"})).await;
    let id = p["id"].as_str().unwrap();
    get(s.addr, &format!("/api/processes/{id}")).await.expect(200);
    get(s.addr, "/api/processes/no-such-process").await.expect(404);
    get(s.addr, "/nowhere/at/all").await.expect(404);
    let text = scrape(s.addr).await;
    let ok = r#"prochub_http_requests_total{route="/api/processes/:id",method="GET",status="200"}"#;
    let missing = r#"prochub_http_requests_total{route="/api/processes/:id",method="GET",status="404"}"#;
    let unmatched = r#"prochub_http_requests_total{route="unmatched",method="GET",status="404"}"#;
    for name in [ok, missing, unmatched] {
        assert!(sample(&text, name).is_some_and(|n| n >= 1.0), "{name} in\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("prochub_http_request_duration_seconds_count{")
                && l.contains(r#"route="/api/processes/:id""#)),
        "{text}"
    );
    for raw_path in [id, "no-such-process", "nowhere"] {
        assert!(!text.contains(raw_path), "{raw_path} leaked into a label");
    }
}

#[tokio::test]
async fn connections_followers_output_and_events_are_counted() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut server = BinServer::start(data.path(), &[]).await;
    let addr = server.addr;
    let before = scrape(addr).await;
    assert_eq!(sample(&before, "prochub_followers"), Some(0.0));
    assert_eq!(sample(&before, "prochub_output_appends_total"), Some(0.0));

    let p = create(addr, json!({"name": "watched"})).await;
    let id = p["id"].as_str().unwrap().to_owned();
    let mut follow = SseReader::open(addr, &format!("/api/processes/{id}/stream"), &[]).await;
    assert_eq!(follow.next().await.expect("the retry line").name(), "");
    let _ws = ws_connect(addr, "/ws").await;
    for chunk in ["one\n", "two\n", "three\n"] {
        append(addr, &id, chunk).await;
        assert_eq!(follow.next_named().await.expect("a chunk").name(), "chunk");
    }

    let text = scrape(addr).await;
    let expect = [
        ("prochub_followers", 1.0),
        ("prochub_emitters", 1.0),
        (r#"prochub_open_connections{kind="sse"}"#, 1.0),
        (r#"prochub_open_connections{kind="ws"}"#, 1.0),
        ("prochub_output_appends_total", 3.0),
        ("prochub_output_bytes_total", 14.0),
        (r#"prochub_lifecycle_events_total{type="process-added"}"#, 1.0),
        (r#"prochub_processes{status="running"}"#, 1.0),
    ];
    for (name, value) in expect {
        assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
    }
    // The SSE stream and this scrape ride on HTTP connections of their own.
    assert!(sample(&text, r#"prochub_open_connections{kind="http"}"#).is_some_and(|n| n >= 2.0));
    // Creating the record was a durable write.
    assert!(sample(&text, "prochub_record_fsync_duration_seconds_count").is_some_and(|n| n >= 1.0));

    // Completion ends the follower's stream; its gauge goes back down.
    complete(addr, &id).await;
    while follow.next().await.is_some() {}
    drop(follow);
    crate::helper::wait_until("the follower and its SSE stream are gone", WAIT, async || {
        let text = scrape(addr).await;
        sample(&text, "prochub_followers") == Some(0.0)
            && sample(&text, r#"prochub_open_connections{kind="sse"}"#) == Some(0.0)
    })
    .await;
    let text = scrape(addr).await;
    assert_eq!(
        sample(&text, r#"prochub_lifecycle_events_total{type="process-updated"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&text, "prochub_emitters"), Some(0.0));

    // A replay from the start reads the log back.
    let (_, events) = crate::helper::sse::follow_all(addr, &format!("/api/processes/{id}/stream?from=0"), &[]).await;
    assert!(events.iter().any(|e| e.name() == "done"));
    let text = scrape(addr).await;
    assert_eq!(sample(&text, "prochub_replayed_bytes_total"), Some(14.0), "{text}");
    server.signal(libc::SIGTERM);
    assert!(server.wait().await.success());
}

#[tokio::test]
async fn a_follower_that_falls_behind_is_counted_as_a_laggard() {
    let (_dir, store) = crate::helper::temp_store().await;
    let id = crate::helper::running(&store, "fast").await;
    let before = scrape_global();
    let mut follow = store.subscribe(&id, None).expect("subscribe");
    // More chunks than the emitter holds, with the follower not reading.
    let n = prochub::store::EMITTER_CAPACITY + 10;
    for i in 0..n {
        store
            .append_output(&id, format!("{i:05}\n"), None)
            .await
            .expect("append");
    }
    let first = follow.next().await.expect("an event");
    assert!(matches!(first, prochub::store::FollowEvent::Chunk(_)));
    let after = scrape_global();
    let delta = |name: &str| sample(&after, name).unwrap_or(0.0) - sample(&before, name).unwrap_or(0.0);
    assert!(delta("prochub_laggard_catchups_total") >= 1.0);
    assert!(delta("prochub_replayed_bytes_total") >= 6.0);
    assert!(delta("prochub_output_appends_total") >= n as f64);
}

/// The test binary's own metrics (shared by every in-process store).
fn scrape_global() -> String {
    prochub::metrics::get().encode(&prochub::metrics::Snapshot::default(), false)
}

#[tokio::test]
async fn the_openapi_document_is_served_and_names_every_route() {
    let s = TestServer::start_with(with_token()).await;
    call(s.addr, Method::GET, "/api/openapi.json", &[], "")
        .await
        .expect(401);
    let r = call(s.addr, Method::GET, "/api/openapi.json", &[AUTH], "").await;
    r.expect(200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc: Value = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/healthz",
        "/metrics",
        "/api/openapi.json",
        "/api/processes/{id}/stream",
        "/ws",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path}");
    }
    let stream = &doc["paths"]["/api/processes/{id}/stream"]["get"]["responses"]["200"];
    assert!(stream["content"].get("text/event-stream").is_some());
    let description = stream["description"].as_str().unwrap();
    for event in ["chunk", "lagged", "status", "done", "heartbeat"] {
        assert!(description.contains(&format!("`{event}`")), "{event}");
    }
    call(s.addr, Method::DELETE, "/api/openapi.json", &[AUTH], "")
        .await
        .expect(405);
}

/// Status code and JSON body of a raw response; panics unless the body is
/// `{"error", "code"}` labelled as JSON.
fn json_error(response: &str) -> (u16, String) {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {response:?}"));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    assert!(
        head.to_ascii_lowercase().contains("\r\ncontent-type: application/json"),
        "not labelled JSON: {head}"
    );
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    assert!(v["error"].is_string(), "{v}");
    (status, v["code"].as_str().expect("a code").to_owned())
}

fn headers(n: usize) -> String {
    (0..n).map(|i| format!("x-h{i}: v\r\n")).collect()
}

#[tokio::test]
async fn requests_hyper_rejects_get_json_too() {
    let s = TestServer::start().await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("a bad request line", b"NONSENSE\r\n\r\n".to_vec(), 400, "malformed_request"),
        (
            "a bad header",
            b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nbad header\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            "a bad content-length",
            b"POST /api/processes HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: abc\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            "101 header fields",
            format!("GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n{}\r\n", headers(100)).into_bytes(),
            431,
            "headers_too_large",
        ),
        (
            "a head longer than hyper buffers",
            format!("GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: {}\r\n\r\n", "v".repeat(80 * 1024)).into_bytes(),
            431,
            "headers_too_large",
        ),
        (
            "a request line longer than hyper buffers",
            format!("GET /{} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n", "a".repeat(80 * 1024)).into_bytes(),
            414,
            "uri_too_long",
        ),
        (
            "a bad chunked body",
            b"POST /api/processes HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".to_vec(),
            400,
            "body_read_failed",
        ),
    ];
    for (what, request, status, code) in cases {
        let out = raw(s.addr, &request).await;
        assert_eq!(json_error(&out), (status, code.to_owned()), "{what}: {out}");
    }
    // Still serving.
    get(s.addr, "/healthz").await.expect(200);
}

#[tokio::test]
async fn head_limits_inside_what_hyper_parses_are_414_and_431() {
    let s = TestServer::start().await;
    let close = "connection: close\r\n";
    // 9 KiB of request line, 70 KiB of headers: parsed, then refused.
    let long_line = format!(
        "GET /{} HTTP/1.1\r\nhost: 127.0.0.1\r\n{close}\r\n",
        "a".repeat(9 * 1024)
    );
    assert_eq!(
        json_error(&raw(s.addr, long_line.as_bytes()).await),
        (414, "uri_too_long".into())
    );
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n{close}x-a: {}\r\nx-b: {}\r\n\r\n",
        "v".repeat(35 * 1024),
        "v".repeat(35 * 1024)
    );
    assert_eq!(
        json_error(&raw(s.addr, big.as_bytes()).await),
        (431, "headers_too_large".into())
    );
    // At the limits: served. (Padded with empty query pairs, which are
    // ignored: /healthz takes no parameter.)
    let target = format!(
        "/healthz?{}",
        "&".repeat(8192 - "GET  HTTP/1.1".len() - "/healthz?".len())
    );
    let at_line = format!("GET {target} HTTP/1.1\r\nhost: 127.0.0.1\r\n{close}\r\n");
    let out = raw(s.addr, at_line.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{}", &out[..out.len().min(200)]);
    let at_fields = format!("GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n{close}{}\r\n", headers(98));
    let out = raw(s.addr, at_fields.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[tokio::test]
async fn a_kept_alive_connection_survives_a_refused_head() {
    let s = TestServer::start().await;
    let mut conn = TcpStream::connect(s.addr).await.expect("connect");
    let long_line = format!("GET /{} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n", "a".repeat(9 * 1024));
    conn.write_all(long_line.as_bytes()).await.expect("write");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read_to_string(&mut conn, &mut out))
        .await
        .expect("answers within the bound")
        .expect("read");
    let second = out.find("HTTP/1.1 200").expect("the second request is answered");
    assert_eq!(json_error(&out[..second]), (414, "uri_too_long".into()));
}

/// `prochub serve` with its log on a pipe.
async fn serve_logging(data: &std::path::Path, extra: &[&str]) -> (tokio::process::Child, std::net::SocketAddr) {
    let mut cmd = crate::helper::client::prochub();
    cmd.env("PROCHUB_LOG", "info")
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn prochub serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    tokio::time::timeout(WAIT, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("the listening line in time")
        .expect("read stdout");
    let addr = line
        .trim()
        .strip_prefix("prochub listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("an address");
    (child, addr)
}

/// SIGTERM, then every line the server wrote to stderr.
async fn stop_and_read_log(mut child: tokio::process::Child) -> Vec<String> {
    let stderr = child.stderr.take().expect("piped stderr");
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(child.id().expect("running") as libc::pid_t, libc::SIGTERM) };
    let mut lines = BufReader::new(stderr).lines();
    let mut out = Vec::new();
    while let Some(l) = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the log ends when the server exits")
        .expect("read stderr")
    {
        out.push(l);
    }
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exit in time")
        .expect("wait");
    assert!(status.success());
    out
}

#[tokio::test]
async fn json_logs_have_one_access_line_per_request() {
    let data = tempfile::tempdir().expect("temp dir");
    let (child, addr) = serve_logging(data.path(), &["--log-format", "json"]).await;
    get(addr, "/api/processes/nope?access_token=not-logged")
        .await
        .expect(404);
    raw(addr, b"NONSENSE\r\n\r\n").await;
    let lines = stop_and_read_log(child).await;
    let objects: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}")))
        .collect();
    let access: Vec<&Value> = objects.iter().filter(|o| o["target"] == "prochub::access").collect();
    assert_eq!(access.len(), 2, "{lines:#?}");
    let a = access[0];
    assert_eq!(a["level"], "INFO");
    assert_eq!(a["method"], "GET");
    assert_eq!(a["route"], "/api/processes/:id");
    assert_eq!(a["path"], "/api/processes/nope");
    assert_eq!(a["status"], 404);
    assert!(a["bytes"].as_u64().is_some_and(|b| b > 0), "{a}");
    assert!(a["duration_ms"].is_f64(), "{a}");
    assert!(!lines.concat().contains("not-logged"), "the query is never logged");
    assert_eq!(access[1]["route"], "malformed");
    assert_eq!(access[1]["status"], 400);
}

#[tokio::test]
async fn quiet_access_log_keeps_the_other_lines() {
    let data = tempfile::tempdir().expect("temp dir");
    let (child, addr) = serve_logging(data.path(), &["--quiet-access-log"]).await;
    get(addr, "/healthz").await.expect(200);
    let lines = stop_and_read_log(child).await;
    assert!(lines.iter().any(|l| l.contains("listening")), "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("prochub::access")), "{lines:#?}");
}
