//! Token auth and CORS (SPEC section 7).

use serde_json::json;

use crate::helper::http::{Method, call, get};
use crate::helper::server::TestServer;
use crate::helper::sse::SseReader;

fn with_token() -> prochub::server::ServerConfig {
    prochub::server::ServerConfig {
        token: Some("s3cret".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn token_is_required_on_api_and_ws_but_not_healthz() {
    let s = TestServer::start_with(with_token()).await;
    let a = s.addr;
    get(a, "/healthz").await.expect(200);
    let r = get(a, "/api/processes").await;
    r.expect(401);
    assert_eq!(r.json()["code"], "unauthorized");
    get(a, "/api/nope").await.expect(401);
    get(a, "/ws").await.expect(401);
    call(
        a,
        Method::GET,
        "/api/processes",
        &[("authorization", "Bearer wrong")],
        "",
    )
    .await
    .expect(401);
    call(
        a,
        Method::GET,
        "/api/processes",
        &[("authorization", "Bearer s3cret")],
        "",
    )
    .await
    .expect(200);
    call(
        a,
        Method::GET,
        "/api/processes",
        &[("authorization", "bearer s3cret")],
        "",
    )
    .await
    .expect(200);
    get(a, "/api/processes?access_token=s3cret").await.expect(200);
    get(a, "/api/processes?access_token=s3cre").await.expect(401);
    let r = call(
        a,
        Method::POST,
        "/api/processes",
        &[("authorization", "Bearer s3cret"), ("content-type", "application/json")],
        json!({"name": "x"}).to_string(),
    )
    .await;
    r.expect(201);
    let sse = SseReader::open(a, "/api/events?access_token=s3cret", &[]).await;
    assert_eq!(sse.status, 200);
    let ws = tokio_tungstenite::connect_async(format!("ws://{a}/ws?access_token=s3cret")).await;
    assert!(ws.is_ok());
    let ws = tokio_tungstenite::connect_async(format!("ws://{a}/ws")).await;
    assert!(ws.is_err());
}

#[tokio::test]
async fn cors_headers_and_preflight() {
    let s = TestServer::start_with(prochub::server::ServerConfig {
        cors_origin: Some("https://app.example".into()),
        ..with_token()
    })
    .await;
    let r = call(
        s.addr,
        Method::OPTIONS,
        "/api/processes/x/stream",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "last-event-id"),
        ],
        "",
    )
    .await;
    r.expect(204);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));
    assert!(
        r.header("access-control-allow-headers")
            .unwrap()
            .contains("Last-Event-ID")
    );
    assert!(r.header("access-control-allow-methods").unwrap().contains("PATCH"));
    // Errors carry the origin too, so the browser can read them.
    let r = get(s.addr, "/api/processes").await;
    r.expect(401);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));
    // Without --cors-origin: no CORS headers at all.
    let plain = TestServer::start().await;
    let r = get(plain.addr, "/healthz").await;
    assert!(r.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn connections_past_the_cap_wait_instead_of_failing() {
    let s = TestServer::start_with(prochub::server::ServerConfig {
        max_connections: 2,
        ..Default::default()
    })
    .await;
    let a = SseReader::open(s.addr, "/api/events", &[]).await;
    let b = SseReader::open(s.addr, "/api/events", &[]).await;
    let addr = s.addr;
    let third = tokio::spawn(async move { get(addr, "/healthz").await.status });
    // Bounded check that it is held back while both slots are taken.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!third.is_finished(), "a third connection was served past the cap of 2");
    drop(a);
    let status = tokio::time::timeout(crate::helper::server::WAIT, third)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    drop(b);
}

/// Regression: an empty token (`--token ""`, or `PROCHUB_TOKEN=` from an
/// unset variable) turned auth on with an empty secret that
/// `?access_token=` matched. `serve` now refuses it, and the library's auth
/// check fails closed on it.
#[tokio::test]
async fn bug_empty_token_was_matched_by_an_empty_access_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_prochub"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .env("PROCHUB_TOKEN", "")
        .env("PROCHUB_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(crate::helper::server::WAIT, out)
        .await
        .expect("serve exits at once")
        .expect("run prochub");
    assert!(!out.status.success(), "serve must refuse an empty token");
    assert!(out.stdout.is_empty(), "it never announced an address");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token"), "the message names the token: {err}");

    let s = TestServer::start_with(prochub::server::ServerConfig {
        token: Some(String::new()),
        ..Default::default()
    })
    .await;
    get(s.addr, "/api/processes?access_token=").await.expect(401);
    call(
        s.addr,
        Method::GET,
        "/api/processes",
        &[("authorization", "Bearer ")],
        "",
    )
    .await
    .expect(401);
    get(s.addr, "/healthz").await.expect(200);
}
