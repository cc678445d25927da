//! Strict query strings (issue 10 item 7): every endpoint refuses a
//! parameter it does not take, and a repeated one, with a 400
//! `invalid_query` naming it, before anything is changed; `access_token`
//! is accepted wherever auth applies; `status` on the list is a comma list.

use std::collections::BTreeSet;

use prochub::client::Client;
use prochub::model::{ListQuery, Process};
use prochub::server::ServerConfig;
use serde_json::{Value, json};

use crate::helper::client::{WAIT, prochub};
use crate::helper::http::{Method, call, create, get};
use crate::helper::server::TestServer;

const JSON: (&str, &str) = ("content-type", "application/json");

/// Asserts a 400 `invalid_query` whose message contains every one of `says`.
fn refused(r: &crate::helper::http::Reply, says: &[&str], what: &str) {
    assert_eq!(r.status.as_u16(), 400, "{what}: {}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["code"], "invalid_query", "{what}: {v}");
    let msg = v["error"].as_str().expect("a message");
    for s in says {
        assert!(msg.contains(s), "{what}: {msg:?} does not say {s:?}");
    }
}

/// One process in each status; returns their ids by status name.
async fn one_of_each(a: std::net::SocketAddr) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    for status in ["queued", "running", "completed", "failed", "cancelled"] {
        let p = create(a, json!({ "name": status, "status": status })).await;
        ids.push((status.to_owned(), p["id"].as_str().expect("id").to_owned()));
    }
    ids
}

fn ids_of(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Regression: `?stauts=completed` (a typo) returned the whole list,
/// unfiltered, as if the filter had matched everything.
#[tokio::test]
async fn bug_a_misspelt_status_filter_returned_the_unfiltered_list() {
    let s = TestServer::start().await;
    one_of_each(s.addr).await;
    let r = get(s.addr, "/api/processes?stauts=completed").await;
    refused(
        &r,
        &[
            "unknown query parameter `stauts`",
            "allowed: workspace, status, limit, cursor, access_token",
        ],
        "stauts",
    );
    let only = get(s.addr, "/api/processes?status=completed").await.json();
    assert_eq!(only.as_array().expect("array").len(), 1);
}

/// Every route and method, with one parameter it does not take: a 400
/// naming it, and nothing changed (checked after the table).
#[tokio::test]
async fn every_endpoint_refuses_an_unknown_parameter() {
    let s = TestServer::start().await;
    let a = s.addr;
    let running = create(a, json!({ "name": "r" })).await;
    let id = running["id"].as_str().expect("id").to_owned();
    crate::helper::http::append(a, &id, "kept\n").await;
    let done = create(a, json!({ "name": "d", "status": "completed" })).await;
    let done_id = done["id"].as_str().expect("id").to_owned();
    let ws = call(a, Method::POST, "/api/workspaces", &[JSON], r#"{"id":"w1","name":"W"}"#).await;
    ws.expect(201);

    let p = |sub: &str| format!("/api/processes/{id}{sub}");
    let cases: Vec<(Method, String, &str)> = vec![
        (Method::GET, "/healthz".into(), ""),
        (Method::GET, "/api/workspaces".into(), ""),
        (Method::POST, "/api/workspaces".into(), r#"{"id":"w2","name":"W2"}"#),
        (Method::GET, "/api/workspaces/w1".into(), ""),
        (Method::DELETE, "/api/workspaces/w1".into(), ""),
        (Method::GET, "/api/processes".into(), ""),
        (Method::POST, "/api/processes".into(), r#"{"name":"new"}"#),
        (Method::GET, p(""), ""),
        (Method::HEAD, p(""), ""),
        (Method::PATCH, p(""), r#"{"name":"renamed"}"#),
        (Method::DELETE, p(""), ""),
        (Method::GET, p("/output"), ""),
        (Method::POST, p("/output"), r#"{"content":"lost"}"#),
        (Method::POST, p("/cancel"), ""),
        (Method::GET, p("/stream"), ""),
        (Method::POST, "/api/prune".into(), ""),
        (Method::GET, "/api/events".into(), ""),
        (Method::GET, "/ws".into(), ""),
        (Method::GET, "/metrics".into(), ""),
        (Method::GET, "/api/openapi.json".into(), ""),
    ];
    for (method, path, body) in &cases {
        let what = format!("{method} {path}");
        let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &[JSON] };
        let r = call(a, method.clone(), &format!("{path}?bogus=1"), headers, *body).await;
        if *method == Method::HEAD {
            // Same status as GET; no body to read the message from.
            assert_eq!(r.status.as_u16(), 400, "{what}");
            continue;
        }
        refused(&r, &["unknown query parameter `bogus`"], &what);
        // A parameter that is real elsewhere is unknown here too.
        if !path.ends_with("/output") {
            let r = call(a, method.clone(), &format!("{path}?offset=1"), headers, *body).await;
            refused(&r, &["`offset`"], &what);
        }
    }

    // Nothing any refused request would have done happened.
    let after = get(a, &p("")).await;
    after.expect(200);
    let after = after.json();
    assert_eq!(
        (after["name"].as_str(), after["status"].as_str()),
        (Some("r"), Some("running"))
    );
    assert_eq!(get(a, &p("/output")).await.text(), "kept\n");
    get(a, "/api/workspaces/w1").await.expect(200);
    get(a, "/api/workspaces/w2").await.expect(404);
    get(a, &format!("/api/processes/{done_id}")).await.expect(200);
    let names: Vec<Value> = get(a, "/api/processes").await.json().as_array().unwrap().clone();
    assert_eq!(names.len(), 2, "no process created: {names:?}");
}

/// What each endpoint does take still works, `access_token` included.
#[tokio::test]
async fn endpoints_take_their_own_parameters() {
    let s = TestServer::start().await;
    let a = s.addr;
    let p = create(a, json!({ "name": "x" })).await;
    let id = p["id"].as_str().expect("id");
    get(a, "/api/processes?workspace=default&status=running&limit=5&cursor=")
        .await
        .expect(200);
    get(a, &format!("/api/processes/{id}/output?offset=0"))
        .await
        .expect(200);
    get(a, &format!("/api/processes/{id}/output?tail=1")).await.expect(200);
    let r = call(a, Method::POST, "/api/prune?max_age=7d&max_count=10", &[], "").await;
    r.expect(200);
    call(a, Method::POST, "/api/workspaces", &[JSON], r#"{"id":"w1","name":"W"}"#)
        .await
        .expect(201);
    call(a, Method::DELETE, "/api/workspaces/w1?cascade=true", &[], "")
        .await
        .expect(204);
    // No token configured: `access_token` is accepted (and unused) where
    // auth would apply, and unknown where it never does.
    get(a, "/api/processes?access_token=x").await.expect(200);
    get(a, "/api/openapi.json?access_token=x").await.expect(200);
    refused(
        &get(a, "/healthz?access_token=x").await,
        &["`access_token`", "takes no query parameters"],
        "healthz",
    );
}

/// A parameter given twice is refused: "later wins" would silently drop one
/// of two conflicting values.
#[tokio::test]
async fn a_repeated_parameter_is_refused() {
    let s = TestServer::start().await;
    let a = s.addr;
    refused(
        &get(a, "/api/processes?limit=1&limit=2").await,
        &["`limit` is given more than once"],
        "limit",
    );
    refused(
        &get(a, "/api/processes?status=running&status=queued").await,
        &["`status` is given more than once"],
        "status",
    );
    let p = create(a, json!({ "name": "x", "status": "completed" })).await;
    let id = p["id"].as_str().expect("id");
    refused(
        &get(a, &format!("/api/processes/{id}/stream?from=0&from=1")).await,
        &["`from`"],
        "from",
    );
}

#[tokio::test]
async fn access_token_works_with_a_token_and_auth_comes_first() {
    let s = TestServer::start_with(ServerConfig {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let a = s.addr;
    let bearer = ("authorization", "Bearer s3cret");
    call(a, Method::POST, "/api/processes", &[JSON, bearer], r#"{"name":"x"}"#)
        .await
        .expect(201);
    let listed = get(a, "/api/processes?access_token=s3cret&status=running").await;
    assert_eq!(listed.expect(200).json().as_array().unwrap().len(), 1);
    get(a, "/metrics?access_token=s3cret").await.expect(200);
    // A stranger learns nothing about the parameters: 401 first.
    get(a, "/api/processes?stauts=x").await.expect(401);
    get(a, "/api/processes?access_token=wrong&stauts=x").await.expect(401);
    refused(
        &get(a, "/api/processes?access_token=s3cret&stauts=x").await,
        &["`stauts`"],
        "stauts with the token",
    );
    refused(
        &call(a, Method::GET, "/api/processes?stauts=x", &[bearer], "").await,
        &["`stauts`"],
        "stauts with a bearer",
    );
    // /healthz never needs the token, so it takes no `access_token` either.
    get(a, "/healthz").await.expect(200);
    refused(
        &get(a, "/healthz?access_token=s3cret").await,
        &["`access_token`"],
        "healthz",
    );
}

#[tokio::test]
async fn a_status_list_returns_exactly_those_statuses_on_every_page() {
    let s = TestServer::start().await;
    let a = s.addr;
    let ids = one_of_each(a).await;
    let of = |names: &[&str]| -> BTreeSet<String> {
        ids.iter()
            .filter(|(st, _)| names.contains(&st.as_str()))
            .map(|(_, id)| id.clone())
            .collect()
    };
    let both = get(a, "/api/processes?status=running,queued").await;
    assert_eq!(ids_of(&both.expect(200).json()), of(&["running", "queued"]));
    let encoded = get(a, "/api/processes?status=failed%2Ccancelled,completed")
        .await
        .json();
    assert_eq!(ids_of(&encoded), of(&["failed", "cancelled", "completed"]));
    let one = get(a, "/api/processes?status=failed").await.json();
    assert_eq!(ids_of(&one), of(&["failed"]));

    // Paged: the `Link` keeps the list, its commas encoded (a `Link`
    // header separates links by commas).
    let first = get(a, "/api/processes?status=running,queued&limit=1").await;
    let link = first.header("link").expect("a next page").to_owned();
    assert!(link.contains("status=queued%2Crunning"), "{link}");
    let next = link.trim_start_matches('<').split('>').next().expect("a target");
    let second = get(a, next).await;
    assert!(second.header("link").is_none(), "two records, two pages");
    let mut seen = ids_of(&first.json());
    seen.extend(ids_of(&second.json()));
    assert_eq!(seen, of(&["running", "queued"]));

    // The client library sends the set and follows those pages.
    let client = Client::new(&s.base, None).expect("client");
    let query = ListQuery {
        status: Some("running,queued".parse().expect("a status list")),
        limit: Some(1),
        ..Default::default()
    };
    let all: BTreeSet<String> = client
        .list_all(&query, None)
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.id.to_string())
        .collect();
    assert_eq!(all, of(&["running", "queued"]));

    // And the CLI: `prochub ls --status running,queued`.
    let out = tokio::time::timeout(
        WAIT,
        prochub()
            .args(["ls", "--server", &s.base, "--status", "running,queued", "--json"])
            .output(),
    )
    .await
    .expect("ls ends in time")
    .expect("run prochub ls");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<Process> = serde_json::from_slice(&out.stdout).expect("ls --json is JSON");
    let listed: BTreeSet<String> = listed.into_iter().map(|p| p.id.to_string()).collect();
    assert_eq!(listed, of(&["running", "queued"]));
    let bad = tokio::time::timeout(
        WAIT,
        prochub()
            .args(["ls", "--server", &s.base, "--status", "running,nope"])
            .output(),
    )
    .await
    .expect("ls ends in time")
    .expect("run prochub ls");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nope"));
}

#[tokio::test]
async fn bad_status_values_are_400_naming_the_value() {
    let s = TestServer::start().await;
    let a = s.addr;
    for (query, names) in [
        ("status=", "empty status list"),
        ("status=nope", "\"nope\""),
        ("status=running,nope", "\"nope\""),
        ("status=running%2Cnope", "\"nope\""),
        ("status=running,", "\"\""),
        ("status=running,,queued", "\"\""),
        ("status=Running", "\"Running\""),
        ("status=running%20", "\"running \""),
    ] {
        refused(
            &get(a, &format!("/api/processes?{query}")).await,
            &["`status`", names],
            query,
        );
    }
}
