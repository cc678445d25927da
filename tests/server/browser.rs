//! Safe by default in a browser (SPEC section 7): what a page on another
//! site, or on a DNS name re-pointed at loopback, can do to a server
//! without a token. Requests are sent as a browser would send them: with
//! its `Origin` and the `Host` of the page's URL.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helper::http::{Method, Reply, call, call_as, create, get};
use crate::helper::server::{BinServer, TestServer};

const EVIL: &str = "https://evil.example";

/// One request with exactly this `Host` (None: none at all) and headers.
async fn send_as(
    s: &TestServer,
    method: Method,
    path: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    call_as(s.addr, method, path, host, headers, body.to_owned()).await
}

/// A request from a page whose origin is `origin`, to the server's own address.
async fn from_page(s: &TestServer, method: Method, path: &str, origin: &str, ctype: &str, body: &str) -> Reply {
    let host = s.addr.to_string();
    let mut headers = vec![("origin", origin)];
    if !ctype.is_empty() {
        headers.push(("content-type", ctype));
    }
    send_as(s, method, path, Some(&host), &headers, body).await
}

fn code(r: &Reply) -> String {
    r.json()["code"].as_str().unwrap_or_default().to_owned()
}

/// Regression: with no token a page on any site could cancel commands,
/// prune history and inject output with requests a browser sends without
/// a preflight (a form-style POST, a `text/plain` body), and PATCH/DELETE
/// once it got past one. Every such request is now a 403 that changes
/// nothing; reads stay open (a browser does not let the page read them).
#[tokio::test]
async fn bug_a_page_on_another_site_could_cancel_prune_and_inject_output() {
    let s = TestServer::start().await;
    let p = create(s.addr, json!({"name": "victim"})).await;
    let id = p["id"].as_str().unwrap().to_owned();
    let done = create(s.addr, json!({"name": "old", "status": "completed"})).await;
    let form = "application/x-www-form-urlencoded";
    let attempts: Vec<(Method, String, &str, &str)> = vec![
        (Method::POST, format!("/api/processes/{id}/cancel"), form, ""),
        (Method::POST, "/api/prune?max_count=0".to_owned(), form, ""),
        (
            Method::POST,
            format!("/api/processes/{id}/output"),
            "text/plain",
            "injected\n",
        ),
        (
            Method::POST,
            "/api/processes".to_owned(),
            "text/plain",
            r#"{"name":"x"}"#,
        ),
        (
            Method::PATCH,
            format!("/api/processes/{id}"),
            "application/json",
            r#"{"name":"pwned"}"#,
        ),
        (Method::DELETE, format!("/api/processes/{id}"), "", ""),
        (
            Method::POST,
            "/api/workspaces".to_owned(),
            "application/json",
            r#"{"name":"w"}"#,
        ),
    ];
    for origin in [EVIL, "null", "http://127.0.0.1:1", "http://localhost"] {
        for (method, path, ctype, body) in &attempts {
            let r = from_page(&s, method.clone(), path, origin, ctype, body).await;
            r.expect(403);
            assert_eq!(code(&r), "forbidden_origin", "{method} {path} from {origin}");
        }
    }
    let rec = get(s.addr, &format!("/api/processes/{id}")).await.json();
    assert_eq!(
        (rec["status"].as_str(), rec["name"].as_str()),
        (Some("running"), Some("victim"))
    );
    assert_eq!(rec["output_bytes"], 0);
    get(s.addr, &format!("/api/processes/{}", done["id"].as_str().unwrap()))
        .await
        .expect(200);
    assert_eq!(get(s.addr, "/api/processes").await.json().as_array().unwrap().len(), 2);
    assert_eq!(get(s.addr, "/api/workspaces").await.json().as_array().unwrap().len(), 1);
    // Reads with a foreign Origin are answered (no CORS header lets the page see them).
    let r = from_page(&s, Method::GET, "/api/processes", EVIL, "", "").await;
    r.expect(200);
    assert!(r.header("access-control-allow-origin").is_none());
    // The server's own origin, and clients that send no Origin, may write.
    let own = format!("http://{}", s.addr);
    from_page(
        &s,
        Method::POST,
        &format!("/api/processes/{id}/output"),
        &own,
        "text/plain",
        "ok\n",
    )
    .await
    .expect(202);
    call(s.addr, Method::POST, &format!("/api/processes/{id}/cancel"), &[], "")
        .await
        .expect(200);
}

/// Regression: `/ws` accepted any `Origin` (browsers apply no CORS to
/// WebSockets), so any page could read every lifecycle event.
#[tokio::test]
async fn bug_ws_let_a_page_on_any_site_read_every_lifecycle_event() {
    let s = TestServer::start().await;
    let url = format!("ws://{}/ws", s.addr);
    for origin in [EVIL, "null"] {
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 403, "{origin}");
                let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["code"], "forbidden_origin");
            }
            other => panic!("a /ws upgrade from {origin} must be refused, got {other:?}"),
        }
    }
    // The route as the router decodes it: `/%77s` is `/ws`.
    let mut encoded = format!("ws://{}/%77s", s.addr).into_client_request().unwrap();
    encoded.headers_mut().insert("origin", EVIL.parse().unwrap());
    assert!(
        matches!(tokio_tungstenite::connect_async(encoded).await, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 403),
        "an encoded /ws path must not slip past the Origin check"
    );
    let mut own = url.as_str().into_client_request().unwrap();
    own.headers_mut()
        .insert("origin", format!("http://{}", s.addr).parse().unwrap());
    assert!(tokio_tungstenite::connect_async(own).await.is_ok());
    assert!(
        tokio_tungstenite::connect_async(url.as_str()).await.is_ok(),
        "no Origin: not a browser"
    );
}

/// Regression: no `Host` check, so a page on a DNS name re-pointed at
/// 127.0.0.1 (DNS rebinding) was same-origin with the server and read
/// everything. Loopback names and IPs pass; other names are a 421.
#[tokio::test]
async fn bug_dns_rebinding_read_everything_because_host_was_not_checked() {
    let s = TestServer::start().await;
    let port = s.addr.port();
    for host in [
        format!("evil.example:{port}"),
        "evil.example".into(),
        "127.0.0.1.nip.io".into(),
        "".into(),
    ] {
        for path in ["/api/processes", "/healthz", "/ws", "/api/events"] {
            let r = send_as(&s, Method::GET, path, Some(&host), &[], "").await;
            r.expect(421);
            assert_eq!(code(&r), "misdirected_host", "{path} with Host {host:?}");
        }
    }
    // An OPTIONS preflight for a rebinding page is refused too.
    send_as(
        &s,
        Method::OPTIONS,
        "/api/processes",
        Some("evil.example"),
        &[("origin", EVIL)],
        "",
    )
    .await
    .expect(421);
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LocalHost".into(),
        format!("[::1]:{port}"),
        "127.0.0.1".into(),
    ] {
        send_as(&s, Method::GET, "/api/processes", Some(&host), &[], "")
            .await
            .expect(200);
    }
    // A client that sends no Host (HTTP/1.0 tools) is not a browser.
    send_as(&s, Method::GET, "/api/processes", None, &[], "")
        .await
        .expect(200);
}

#[tokio::test]
async fn allowed_hosts_are_answered_and_their_pages_are_same_origin() {
    let s = TestServer::start_with(prochub::server::ServerConfig {
        allowed_hosts: vec!["Box.Lan".into()],
        ..Default::default()
    })
    .await;
    let host = format!("box.lan:{}", s.addr.port());
    send_as(&s, Method::GET, "/api/processes", Some(&host), &[], "")
        .await
        .expect(200);
    let own = format!("http://{host}");
    let r = send_as(
        &s,
        Method::POST,
        "/api/processes",
        Some(&host),
        &[("origin", &own), ("content-type", "application/json")],
        r#"{"name":"from the dashboard"}"#,
    )
    .await;
    r.expect(201);
    send_as(&s, Method::GET, "/api/processes", Some("other.lan"), &[], "")
        .await
        .expect(421);
}

/// `--cors-origin` lets that origin write (the reason to set it), and its
/// preflight is still answered; other origins stay out.
#[tokio::test]
async fn the_cors_origin_may_write_and_others_may_not() {
    let app = "https://app.example";
    let s = TestServer::start_with(prochub::server::ServerConfig {
        cors_origin: Some(app.into()),
        ..Default::default()
    })
    .await;
    let r = from_page(
        &s,
        Method::POST,
        "/api/processes",
        app,
        "application/json",
        r#"{"name":"x"}"#,
    )
    .await;
    r.expect(201);
    assert_eq!(r.header("access-control-allow-origin"), Some(app));
    let r = from_page(
        &s,
        Method::POST,
        "/api/processes",
        EVIL,
        "application/json",
        r#"{"name":"x"}"#,
    )
    .await;
    r.expect(403);
    let host = s.addr.to_string();
    let pre = send_as(
        &s,
        Method::OPTIONS,
        "/api/processes",
        Some(&host),
        &[("origin", app), ("access-control-request-method", "POST")],
        "",
    )
    .await;
    pre.expect(204);
    assert!(pre.header("access-control-allow-methods").unwrap().contains("POST"));
    let any = TestServer::start_with(prochub::server::ServerConfig {
        cors_origin: Some("*".into()),
        ..Default::default()
    })
    .await;
    from_page(
        &any,
        Method::POST,
        "/api/processes",
        EVIL,
        "application/json",
        r#"{"name":"x"}"#,
    )
    .await
    .expect(201);
}

/// `--allowed-host` is repeatable, and `PROCHUB_ALLOWED_HOST` is a
/// comma-separated list (the real binary, as a user starts it).
#[tokio::test]
async fn allowed_host_flag_repeats_and_its_variable_is_comma_separated() {
    let dir = tempfile::tempdir().unwrap();
    let flags = BinServer::start(
        &dir.path().join("a"),
        &["--allowed-host", "one.lan", "--allowed-host", "two.lan"],
    )
    .await;
    let env_server = BinServer::builder(&dir.path().join("b"))
        .env("PROCHUB_ALLOWED_HOST", "three.lan, four.lan")
        .start()
        .await;
    let status = async |addr: std::net::SocketAddr, host: &str| {
        call_as(addr, Method::GET, "/healthz", Some(host), &[], "")
            .await
            .status
            .as_u16()
    };
    for (addr, good, bad) in [
        (flags.addr, ["one.lan", "two.lan:80"], "three.lan"),
        (env_server.addr, ["three.lan", "four.lan"], "one.lan"),
    ] {
        for host in good {
            assert_eq!(status(addr, host).await, 200, "{host}");
        }
        assert_eq!(status(addr, bad).await, 421, "{bad}");
    }
    flags.stop().await;
    env_server.stop().await;
}

/// Regression: `/healthz` needs no token, and with one configured it still
/// told anyone how many processes and followers the server had.
#[tokio::test]
async fn bug_healthz_told_anyone_the_counts_when_a_token_is_set() {
    let s = TestServer::start_with(prochub::server::ServerConfig {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let r = get(s.addr, "/healthz").await;
    r.expect(200);
    let body = r.json();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["status", "version"], "{body}");
    let open = TestServer::start().await;
    let body = get(open.addr, "/healthz").await.json();
    assert!(body["processes"].is_u64() && body["uptime_s"].is_u64(), "{body}");
}
