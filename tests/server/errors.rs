//! Every error status of SPEC section 2, always as JSON `{error, code}`,
//! and never a dropped connection.

use serde_json::json;

use crate::helper::http::{self, Method, call, create, get, post_json, raw};
use crate::helper::server::TestServer;

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn bad_requests_are_400() {
    let s = TestServer::start().await;
    let a = s.addr;
    let cases: &[(&str, &str)] = &[
        ("{", "invalid_json"),
        ("[1]", "invalid_field"),
        (r#"{"nmae": "typo"}"#, "invalid_field"),
        (r#"{"name": ""}"#, "invalid_field"),
        (r#"{"name": "x", "status": "sleeping"}"#, "invalid_field"),
        (r#"{"name": "x", "id": "../x"}"#, "invalid_id"),
        (r#"{"name": "x", "cwd": "/tmp"}"#, "invalid_field"),
    ];
    for (body, code) in cases {
        let r = call(a, Method::POST, "/api/processes", &[JSON], *body).await;
        r.expect(400);
        assert_eq!(r.json()["code"], *code, "body {body}");
    }
    for path in [
        "/api/processes/..%2Fx",
        "/api/processes/../x",
        "/api/processes/a%2Fb",
        "/api/processes/a%00b",
        "/api/processes/a%zz",
        "/api/workspaces/..",
        "/api/processes/../x/stream",
    ] {
        let r = get(a, path).await;
        r.expect(400);
    }
    let long = "a".repeat(65);
    get(a, &format!("/api/processes/{long}")).await.expect(400);
    get(a, "/api/processes?limit=0").await.expect(400);
    get(a, "/api/processes?limit=x").await.expect(400);
    get(a, "/api/processes?status=nope").await.expect(400);
    get(a, "/api/processes?cursor=garbage").await.expect(400);
    let p = create(a, json!({"name": "x"})).await;
    let id = p["id"].as_str().unwrap();
    get(a, &format!("/api/processes/{id}/output?offset=1&tail=1"))
        .await
        .expect(400);
    get(a, &format!("/api/processes/{id}/stream?from=-1")).await.expect(400);
    let r = call(
        a,
        Method::GET,
        &format!("/api/processes/{id}/stream"),
        &[("last-event-id", "x")],
        "",
    )
    .await;
    r.expect(400);
    assert_eq!(r.json()["code"], "invalid_last_event_id");
    // Nothing stored was touched by any of it.
    assert_eq!(s.store.process_count(), 1);
}

/// Regression: an out-of-range `limit` said `invalid_field` (the store's
/// code) while API.md and every other bad query parameter say
/// `invalid_query`.
#[tokio::test]
async fn bug_out_of_range_limit_said_invalid_field() {
    let s = TestServer::start().await;
    for q in ["limit=0", "limit=10001", "limit=x", "limit=99999999999999999999"] {
        let r = get(s.addr, &format!("/api/processes?{q}")).await;
        r.expect(400);
        assert_eq!(r.json()["code"], "invalid_query", "{q}");
    }
    get(s.addr, "/api/processes?limit=10000").await.expect(200);
    get(s.addr, "/api/processes?limit=1").await.expect(200);
}

#[tokio::test]
async fn unknown_routes_and_records_are_404_json() {
    let s = TestServer::start().await;
    for path in [
        "/",
        "/nope",
        "/api",
        "/api/nope",
        "/api/processes/x/nope",
        "/api/processes/missing",
        "/api/workspaces/missing",
    ] {
        get(s.addr, path).await.expect(404);
    }
    get(s.addr, "/api/processes/missing/stream").await.expect(404);
    get(s.addr, "/api/processes/missing/output").await.expect(404);
    post_json(s.addr, "/api/processes/missing/output", &json!({"content": "x"}))
        .await
        .expect(404);
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let s = TestServer::start().await;
    let r = call(s.addr, Method::PUT, "/api/processes", &[], "").await;
    r.expect(405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST, OPTIONS"));
    let r = call(s.addr, Method::POST, "/api/processes/x", &[], "").await;
    r.expect(405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, PATCH, DELETE, OPTIONS"));
    call(s.addr, Method::DELETE, "/healthz", &[], "").await.expect(405);
}

/// Regression: HEAD was a 405 everywhere, though every general-purpose
/// HTTP server must support it wherever GET works (RFC 9110 section 9.1);
/// monitors often probe `/healthz` with it. It is GET without the body,
/// also on the SSE routes (headers, then the response ends at once).
#[tokio::test]
async fn bug_head_was_405_where_get_works() {
    let s = TestServer::start().await;
    let p = create(s.addr, json!({"name": "x"})).await;
    let id = p["id"].as_str().unwrap();
    for path in [
        "/healthz".to_owned(),
        "/api/processes".to_owned(),
        "/api/workspaces/default".to_owned(),
        format!("/api/processes/{id}"),
        format!("/api/processes/{id}/output"),
    ] {
        let r = call(s.addr, Method::HEAD, &path, &[], "").await;
        assert_eq!(r.status, 200, "HEAD {path}");
        assert!(r.body.is_empty(), "HEAD {path} has no body");
    }
    let r = call(s.addr, Method::HEAD, "/api/processes/missing", &[], "").await;
    assert_eq!(r.status, 404, "HEAD of a missing record");
    for path in [format!("/api/processes/{id}/stream"), "/api/events".to_owned()] {
        let req = format!("HEAD {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
        let out = raw(s.addr, req.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("text/event-stream"), "{out}");
        assert!(!out.contains("retry:") && !out.contains("connected"), "no body: {out}");
    }
    crate::helper::wait_until("no emitter is left", crate::helper::server::WAIT, async || {
        s.store.emitter_count() == 0
    })
    .await;
    let r = call(s.addr, Method::HEAD, "/ws", &[], "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, OPTIONS"));
}

#[tokio::test]
async fn conflicts_are_409() {
    let s = TestServer::start().await;
    let a = s.addr;
    let q = create(a, json!({"name": "q", "status": "queued"})).await;
    let id = q["id"].as_str().unwrap();
    // Output only while running.
    post_json(a, &format!("/api/processes/{id}/output"), &json!({"content": "x"}))
        .await
        .expect(409);
    http::patch_json(a, &format!("/api/processes/{id}"), &json!({"status": "completed"}))
        .await
        .expect(409);
    http::delete(a, "/api/workspaces/default").await.expect(409);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_while_reading() {
    let s = TestServer::start_with(prochub::server::ServerConfig {
        max_body: 1024,
        ..Default::default()
    })
    .await;
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(4096));
    // Declared length over the limit.
    call(s.addr, Method::POST, "/api/processes", &[JSON], big.clone())
        .await
        .expect(413);
    // Chunked body (no length): refused once the limit is passed.
    let mut req = String::from(
        "POST /api/processes HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    );
    for piece in big.as_bytes().chunks(500) {
        req.push_str(&format!(
            "{:x}\r\n{}\r\n",
            piece.len(),
            std::str::from_utf8(piece).unwrap()
        ));
    }
    req.push_str("0\r\n\r\n");
    let out = raw(s.addr, req.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains(r#""code":"body_too_large""#), "{out}");
    // A body of 2 MiB against the default limit: the client still sees 413.
    let s2 = TestServer::start().await;
    let huge = vec![b'a'; 2 << 20];
    let r = call(
        s2.addr,
        Method::POST,
        "/api/processes/x/output",
        &[("content-type", "text/plain")],
        huge,
    )
    .await;
    r.expect(413);
    assert_eq!(s.store.process_count(), 0);
}

#[tokio::test]
async fn wrong_content_types_are_415() {
    let s = TestServer::start().await;
    let a = s.addr;
    call(a, Method::POST, "/api/processes", &[], r#"{"name":"x"}"#)
        .await
        .expect(415);
    call(
        a,
        Method::POST,
        "/api/processes",
        &[("content-type", "text/plain")],
        r#"{"name":"x"}"#,
    )
    .await
    .expect(415);
    call(
        a,
        Method::POST,
        "/api/processes",
        &[("content-type", "application/x-www-form-urlencoded")],
        "name=x",
    )
    .await
    .expect(415);
    let p = create(a, json!({"name": "x"})).await;
    let id = p["id"].as_str().unwrap();
    call(
        a,
        Method::POST,
        &format!("/api/processes/{id}/output"),
        &[("content-type", "image/png")],
        "x",
    )
    .await
    .expect(415);
    call(
        a,
        Method::PATCH,
        &format!("/api/processes/{id}"),
        &[("content-type", "text/plain")],
        "{}",
    )
    .await
    .expect(415);
    // Charset parameters are fine.
    call(
        a,
        Method::POST,
        "/api/processes",
        &[("content-type", "application/json; charset=utf-8")],
        r#"{"name":"y"}"#,
    )
    .await
    .expect(201);
}

#[tokio::test]
async fn commands_need_allow_exec() {
    let s = TestServer::start().await;
    let r = post_json(s.addr, "/api/processes", &json!({"name": "x", "command": ["true"]})).await;
    r.expect(403);
    assert_eq!(r.json()["code"], "exec_disabled");
    assert_eq!(s.store.process_count(), 0);
}

/// Regression: a `command` with a status other than `running` (queued, or
/// already terminal) used to be stored and handed to the runner, which
/// started it anyway and then could record neither its output nor its end.
#[tokio::test]
async fn command_with_a_status_other_than_running_is_400_not_started() {
    let s = TestServer::start_with(prochub::server::ServerConfig {
        allow_exec: true,
        ..Default::default()
    })
    .await;
    for status in ["queued", "completed", "failed", "cancelled"] {
        let body = json!({"name": "x", "command": ["true"], "status": status});
        let r = post_json(s.addr, "/api/processes", &body).await;
        r.expect(400);
        assert_eq!(r.json()["code"], "invalid_field", "status {status}");
    }
    assert_eq!(s.store.process_count(), 0, "nothing was stored");
    // Explicitly `running` is what a command starts as anyway.
    let body = json!({"name": "x", "command": ["true"], "status": "running"});
    post_json(s.addr, "/api/processes", &body).await.expect(201);
    // Without --allow-exec the answer stays 403, whatever the status.
    let off = TestServer::start().await;
    let body = json!({"name": "x", "command": ["true"], "status": "queued"});
    let r = post_json(off.addr, "/api/processes", &body).await;
    r.expect(403);
    assert_eq!(off.store.process_count(), 0);
}

#[tokio::test]
async fn garbage_on_the_wire_gets_an_answer_not_a_hang() {
    let s = TestServer::start().await;
    let out = raw(
        s.addr,
        b"GET /api/processes/%00 HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let out = raw(s.addr, b"POST /api/processes HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 3\r\nconnection: close\r\n\r\n\x00\xff{").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let out = raw(s.addr, b"NONSENSE\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // The server is still fine.
    get(s.addr, "/healthz").await.expect(200);
}
