//! `GET /api/processes/:id/output` history parameters (SPEC section 10)
//! and `POST …/output?at=N` on a real server: time windows against the
//! store's clock, last lines, timestamps, pipes of a server-run command,
//! the elided middle of a capped process, strict parameters.

use chrono::{DateTime, Utc};
use http::Method;
use serde_json::{Value, json};

use crate::helper::http::{self, Reply, append, create, get, post_json};
use crate::helper::server::{TestServer, WAIT};
use crate::helper::{TestClock, t0, wait_until};

fn out(id: &str, query: &str) -> String {
    format!("/api/processes/{id}/output{query}")
}

async fn read(s: &TestServer, id: &str, query: &str) -> Reply {
    let r = get(s.addr, &out(id, query)).await;
    r.expect(200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    r
}

fn invalid_query(r: &Reply, names: &str) {
    r.expect(400);
    let v = r.json();
    assert_eq!(v["code"], "invalid_query", "{v}");
    assert!(v["error"].as_str().is_some_and(|m| m.contains(names)), "{v}");
}

/// A server whose store clock the test moves.
async fn clocked() -> (TestServer, TestClock) {
    let clock = TestClock::at(t0());
    let s = TestServer::start_full(Default::default(), clock.config()).await;
    (s, clock)
}

#[tokio::test]
async fn unknown_parameters_are_refused_naming_them() {
    let s = TestServer::start().await;
    create(s.addr, json!({"id": "p", "name": "p"})).await;
    // Regression: a misspelt parameter was ignored and everything served.
    invalid_query(&get(s.addr, &out("p", "?tial=5")).await, "tial");
    let r = post_json(s.addr, &out("p", "?at=0&retry=1"), &json!({"content": "x"})).await;
    invalid_query(&r, "retry");
    assert_eq!(read(&s, "p", "").await.text(), "", "the refused append stored nothing");
}

#[tokio::test]
async fn bad_values_are_invalid_query() {
    let s = TestServer::start().await;
    create(s.addr, json!({"id": "p", "name": "p"})).await;
    for (query, name) in [
        ("?since=yesterday", "since"),
        ("?until=10:00", "until"),
        ("?lines=-3", "lines"),
        ("?timestamps=maybe", "timestamps"),
        ("?stream=both", "stream"),
        ("?offset=1&tail=1", "offset"),
    ] {
        invalid_query(&get(s.addr, &out("p", query)).await, name);
    }
    invalid_query(
        &post_json(s.addr, &out("p", "?at=end"), &json!({"content": "x"})).await,
        "at",
    );
    post_json(s.addr, &out("p", ""), &json!({"content": "x", "stream": "both"}))
        .await
        .expect(400);
}

#[tokio::test]
async fn since_and_until_select_appends_by_the_time_they_were_stored() {
    let (s, clock) = clocked().await;
    create(s.addr, json!({"id": "p", "name": "p"})).await;
    let minutes = |m| t0() + chrono::Duration::minutes(m);
    for (m, line) in [(0, "zero\n"), (5, "five\n"), (10, "ten\n")] {
        clock.set(minutes(m));
        append(s.addr, "p", line).await;
    }
    clock.set(minutes(11));
    assert_eq!(read(&s, "p", "?since=3m").await.text(), "ten\n");
    assert_eq!(read(&s, "p", "?since=6m%2030s").await.text(), "five\nten\n");
    let at5 = minutes(5).to_rfc3339().replace('+', "%2B");
    assert_eq!(read(&s, "p", &format!("?since={at5}")).await.text(), "five\nten\n");
    assert_eq!(read(&s, "p", "?until=4m").await.text(), "zero\nfive\n");
    assert_eq!(read(&s, "p", "?since=8m&until=4m").await.text(), "five\n");
    assert_eq!(read(&s, "p", "?since=30s").await.text(), "");
    // Combined with a byte range and lines.
    assert_eq!(read(&s, "p", "?since=1h&offset=7").await.text(), "ve\nten\n");
    assert_eq!(read(&s, "p", "?since=1h&lines=2").await.text(), "five\nten\n");
}

#[tokio::test]
async fn lines_with_timestamps_give_each_line_its_append_time() {
    let (s, clock) = clocked().await;
    create(s.addr, json!({"id": "p", "name": "p"})).await;
    append(s.addr, "p", "a\nb\nc").await;
    clock.set(t0() + chrono::Duration::milliseconds(1_250));
    append(s.addr, "p", "ontinued\nd\n").await;
    let r = read(&s, "p", "?lines=3&timestamps=true").await;
    let lines: Vec<(DateTime<Utc>, String)> = r
        .text()
        .lines()
        .map(|l| {
            let (ts, rest) = l.split_once(' ').expect("a timestamp and a space");
            let ts = DateTime::parse_from_rfc3339(ts).expect("RFC 3339").with_timezone(&Utc);
            (ts, rest.to_owned())
        })
        .collect();
    let later = t0() + chrono::Duration::milliseconds(1_250);
    assert_eq!(
        lines,
        [(t0(), "b".into()), (t0(), "continued".into()), (later, "d".into())]
    );
    assert!(r.text().starts_with("2026-01-15T12:00:00.000Z b\n"), "{}", r.text());
    assert_eq!(read(&s, "p", "?lines=1").await.text(), "d\n");
    assert_eq!(read(&s, "p", "?lines=0").await.text(), "");
}

#[tokio::test]
async fn stream_filters_a_server_run_commands_pipes() {
    let s = TestServer::start_with(prochub::server::ServerConfig {
        allow_exec: true,
        ..Default::default()
    })
    .await;
    let p = create(
        s.addr,
        json!({"name": "both pipes", "command": ["sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2"]}),
    )
    .await;
    let id = p["id"].as_str().expect("an id").to_owned();
    wait_until("the command ends", WAIT, async || {
        get(s.addr, &format!("/api/processes/{id}")).await.json()["status"] == "completed"
    })
    .await;
    assert_eq!(read(&s, &id, "?stream=stdout").await.text(), "out1\nout2\n");
    assert_eq!(read(&s, &id, "?stream=stderr").await.text(), "err1\nerr2\n");
    assert_eq!(read(&s, &id, "?stream=stderr&lines=1").await.text(), "err2\n");
    assert_eq!(read(&s, &id, "").await.text().len(), 20);
}

#[tokio::test]
async fn pushed_output_keeps_its_body_stream_and_untagged_pushes_are_left_out() {
    let s = TestServer::start().await;
    create(s.addr, json!({"id": "p", "name": "p"})).await;
    post_json(s.addr, &out("p", ""), &json!({"content": "E\n", "stream": "stderr"}))
        .await
        .expect(202);
    post_json(s.addr, &out("p", ""), &json!({"content": "O\n", "stream": "stdout"}))
        .await
        .expect(202);
    append(s.addr, "p", "plain\n").await;
    assert_eq!(read(&s, "p", "?stream=stderr").await.text(), "E\n");
    assert_eq!(read(&s, "p", "?stream=stdout").await.text(), "O\n");
    assert_eq!(read(&s, "p", "").await.text(), "E\nO\nplain\n");
}

#[tokio::test]
async fn at_appends_only_where_the_output_ends() {
    let s = TestServer::start().await;
    create(s.addr, json!({"id": "p", "name": "p"})).await;
    let post = async |q: &str, content: &str| post_json(s.addr, &out("p", q), &json!({ "content": content })).await;
    let r = post("?at=0", "one\n").await;
    r.expect(202);
    assert_eq!(r.json()["output_bytes"], 4);
    // The same append retried (its 202 was lost): refused, with where the
    // output ends, which says the first attempt was stored.
    let r = post("?at=0", "one\n").await;
    r.expect(409);
    let v: Value = r.json();
    assert_eq!(
        (v["code"].as_str(), v["output_bytes"].as_u64()),
        (Some("offset_mismatch"), Some(4))
    );
    post("?at=4", "two\n").await.expect(202);
    post("?at=99", "never\n").await.expect(409);
    assert_eq!(read(&s, "p", "").await.text(), "one\ntwo\n");
}

#[tokio::test]
async fn the_elided_middle_of_a_capped_process_is_a_header_and_one_marker_line() {
    let store = prochub::store::StoreConfig {
        max_output: 4096,
        ..Default::default()
    };
    let s = TestServer::start_full(Default::default(), store).await;
    create(s.addr, json!({"id": "p", "name": "p"})).await;
    let lines: Vec<String> = (0..100).map(|i| format!("{i:03} {}\n", "x".repeat(95))).collect();
    for l in &lines {
        append(s.addr, "p", l).await;
    }
    let all = lines.concat();
    assert_eq!(all.len(), 10_000);
    let r = read(&s, "p", "").await;
    assert_eq!(r.header("prochub-output-end"), Some("10000"));
    assert_eq!(r.header("prochub-elided"), Some("2048-7952"));
    let want = format!(
        "{}\n[\u{2026} 5904 bytes elided \u{2026}]\n{}",
        &all[..2048],
        &all[7952..]
    );
    assert_eq!(r.text(), want);
    let record = get(s.addr, "/api/processes/p").await.json();
    assert_eq!(
        (record["output_elided"].as_u64(), record["output_truncated"].as_bool()),
        (Some(5904), Some(true))
    );
    // The last lines are all in the tail: no gap crossed.
    let r = read(&s, "p", "?lines=3").await;
    assert_eq!((r.text(), r.header("prochub-elided")), (lines[97..].concat(), None));
    // A tail reaching into the gap: the part of it in the range.
    let r = read(&s, "p", "?tail=3000").await;
    assert_eq!(r.header("prochub-elided"), Some("7000-7952"));
    assert!(
        r.text().starts_with("[\u{2026} 952 bytes elided \u{2026}]\n"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn output_end_is_sent_on_short_and_streamed_reads() {
    let s = TestServer::start().await;
    create(s.addr, json!({"id": "p", "name": "p"})).await;
    append(s.addr, "p", "short\n").await;
    let r = read(&s, "p", "").await;
    assert_eq!(
        (r.header("prochub-output-end"), r.header("content-length")),
        (Some("6"), Some("6"))
    );
    // Over one block: chunked, headers sent before the body.
    let big = "y".repeat(100 * 1024);
    append(s.addr, "p", &big).await;
    let r = http::call(s.addr, Method::GET, &out("p", "?offset=6"), &[], bytes::Bytes::new()).await;
    r.expect(200);
    assert_eq!(r.header("prochub-output-end"), Some("102406"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.text(), big);
}
