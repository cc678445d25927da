//! Following output over SSE (SPEC section 3).

use std::time::Duration;

use tokio::time::Instant;

use serde_json::json;

use crate::helper::http::{self, Method, append, complete, create, get};
use crate::helper::server::{PAUSED_HEARTBEAT, TestServer};
use crate::helper::sse::{SseReader, follow_all};

#[tokio::test]
async fn live_chunks_in_order_then_status_then_done_then_close() {
    let s = TestServer::start().await;
    let p = create(s.addr, json!({"name": "x"})).await;
    let id = p["id"].as_str().unwrap();
    let mut r = SseReader::open(s.addr, &format!("/api/processes/{id}/stream"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "text/event-stream");
    assert_eq!(r.headers["cache-control"], "no-cache, no-store, no-transform");
    assert_eq!(r.headers["x-accel-buffering"], "no");
    assert!(r.headers.get("content-encoding").is_none());
    let first = r.next().await.unwrap();
    assert_eq!(first.retry.as_deref(), Some("2000"));
    // The 200 means the follower is subscribed: nothing below can be missed.
    for part in ["one\n", "two\n", "three\n"] {
        append(s.addr, id, part).await;
    }
    complete(s.addr, id).await;
    let events = r.rest().await;
    let names: Vec<&str> = events.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["chunk", "chunk", "chunk", "status", "done"]);
    let ids: Vec<&str> = events[..3].iter().map(|e| e.id.as_deref().unwrap()).collect();
    assert_eq!(ids, ["4", "8", "14"]);
    // Every chunk carries the time it was stored (RFC 3339 UTC, ms, `Z`).
    let mut first = events[0].json();
    let ts = first["ts"].take();
    let ts = ts.as_str().expect("a ts string");
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.parse::<chrono::DateTime<chrono::Utc>>().is_ok(),
        "{ts}"
    );
    assert_eq!(first, json!({"content": "one\n", "ts": null}));
    assert_eq!(events[3].json()["status"], "completed");
    assert!(events[3].json()["duration_ms"].is_u64());
    assert_eq!(events[4].json(), json!({"process_id": id}));
    assert!(r.raw.starts_with(b"retry: 2000\n\n"));
    assert!(s.store.emitter_count() == 0);
}

#[tokio::test]
async fn a_finished_process_gets_status_and_done_at_once() {
    let s = TestServer::start().await;
    let p = create(s.addr, json!({"name": "x"})).await;
    let id = p["id"].as_str().unwrap();
    append(s.addr, id, "stored").await;
    http::patch_json(
        s.addr,
        &format!("/api/processes/{id}"),
        &json!({"status": "failed", "error": "boom"}),
    )
    .await
    .expect(200);
    let (content, events) = follow_all(s.addr, &format!("/api/processes/{id}/stream"), &[]).await;
    assert_eq!(content, "");
    assert_eq!(events.iter().map(|e| e.name()).collect::<Vec<_>>(), ["status", "done"]);
    assert_eq!(events[0].json()["error"], "boom");
    // With a replay: the output, then the end.
    let (content, events) = follow_all(s.addr, &format!("/api/processes/{id}/stream?from=0"), &[]).await;
    assert_eq!(content, "stored");
    assert_eq!(events.last().unwrap().name(), "done");
}

#[tokio::test]
async fn unknown_process_is_404_json_not_sse() {
    let s = TestServer::start().await;
    let r = get(s.addr, "/api/processes/nope/stream").await;
    r.expect(404);
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn last_event_id_resumes_without_gap_or_duplicate_and_wins_over_from() {
    let s = TestServer::start().await;
    let p = create(s.addr, json!({"name": "x"})).await;
    let id = p["id"].as_str().unwrap();
    append(s.addr, id, "aaa").await;
    append(s.addr, id, "bbb").await;
    let path = format!("/api/processes/{id}/stream?from=0");
    let mut r = SseReader::open(s.addr, &path, &[]).await;
    let mut got = String::new();
    let mut last = String::new();
    while got.len() < 6 {
        let ev = r.next_named().await.unwrap();
        assert_eq!(ev.name(), "chunk");
        got.push_str(ev.json()["content"].as_str().unwrap());
        last = ev.id.unwrap();
    }
    assert_eq!((got.as_str(), last.as_str()), ("aaabbb", "6"));
    drop(r);
    append(s.addr, id, "ccc").await;
    // Reconnect as EventSource does: original URL, plus Last-Event-ID.
    let mut r = SseReader::open(s.addr, &path, &[("last-event-id", &last)]).await;
    let ev = r.next_named().await.unwrap();
    assert_eq!(
        (ev.json()["content"].as_str().unwrap(), ev.id.as_deref()),
        ("ccc", Some("9"))
    );
    append(s.addr, id, "ddd").await;
    complete(s.addr, id).await;
    let rest = r.rest().await;
    assert_eq!(rest[0].json()["content"], "ddd");
    assert_eq!(rest[0].id.as_deref(), Some("12"));
    assert_eq!(
        rest.iter().map(|e| e.name()).collect::<Vec<_>>(),
        ["chunk", "status", "done"]
    );
}

#[tokio::test]
async fn replay_while_output_keeps_coming_has_no_gap_or_duplicate() {
    let s = TestServer::start().await;
    let p = create(s.addr, json!({"name": "x"})).await;
    let id = p["id"].as_str().unwrap().to_owned();
    let mut expected = String::new();
    for i in 0..100 {
        let piece = format!("line {i}\n");
        append(s.addr, &id, &piece).await;
        expected.push_str(&piece);
    }
    let writer = {
        let (a, id) = (s.addr, id.clone());
        tokio::spawn(async move {
            let mut more = String::new();
            for i in 100..300 {
                let piece = format!("line {i}\n");
                append(a, &id, &piece).await;
                more.push_str(&piece);
            }
            complete(a, &id).await;
            more
        })
    };
    let (content, events) = follow_all(s.addr, &format!("/api/processes/{id}/stream?from=0"), &[]).await;
    expected.push_str(&writer.await.unwrap());
    assert_eq!(content, expected);
    assert!(events.iter().all(|e| e.name() != "lagged"));
    // Every id is the offset after its chunk.
    let mut offset = 0;
    for e in events.iter().filter(|e| e.name() == "chunk") {
        offset += e.json()["content"].as_str().unwrap().len();
        assert_eq!(e.id.as_deref(), Some(offset.to_string().as_str()));
    }
}

/// On the paused clock: a heartbeat after each whole interval of
/// idleness, never before, and chunks still come through.
#[tokio::test(start_paused = true)]
async fn heartbeats_while_idle() {
    let every = PAUSED_HEARTBEAT;
    let s = TestServer::start_with(prochub::server::ServerConfig {
        heartbeat: every,
        ..Default::default()
    })
    .await;
    let p = create(s.addr, json!({"name": "x"})).await;
    let id = p["id"].as_str().unwrap();
    let opening = Instant::now();
    let mut r = SseReader::open(s.addr, &format!("/api/processes/{id}/stream"), &[]).await;
    for n in 1..=2 {
        let ev = r.next_named().await.unwrap();
        assert_eq!(ev.name(), "heartbeat");
        assert_eq!(ev.data.as_deref(), Some("{}"));
        let idle = opening.elapsed();
        assert!(
            idle >= every * n && idle < every * (n + 1),
            "heartbeat {n} after {idle:?} of idleness"
        );
    }
    append(s.addr, id, "x").await;
    loop {
        let ev = r.next_named().await.unwrap();
        if ev.name() == "chunk" {
            break;
        }
        assert_eq!(ev.name(), "heartbeat");
    }
}

/// Regression: `--heartbeat 0s` made every idle stream (follow and
/// events) send heartbeats as fast as its client could read them. Zero now
/// means no heartbeats. On the paused clock the streams sit idle for an
/// hour at no cost.
#[tokio::test(start_paused = true)]
async fn bug_zero_heartbeat_flooded_idle_streams() {
    let s = TestServer::start_with(prochub::server::ServerConfig {
        heartbeat: Duration::ZERO,
        ..Default::default()
    })
    .await;
    let p = create(s.addr, json!({"name": "x"})).await;
    let id = p["id"].as_str().unwrap();
    let mut r = SseReader::open(s.addr, &format!("/api/processes/{id}/stream"), &[]).await;
    let mut events = SseReader::open(s.addr, "/api/events", &[]).await;
    // Both streams sit idle for a long while before anything happens.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    append(s.addr, id, "x").await;
    let ev = r.next_named().await.unwrap();
    assert_eq!(ev.name(), "chunk", "nothing but the chunk may come first");
    create(s.addr, json!({"name": "y"})).await;
    let ev = events.next_named().await.unwrap();
    assert_eq!(ev.name(), "process-added", "nothing but the event may come first");
}

#[tokio::test]
async fn awkward_content_round_trips_exactly() {
    let s = TestServer::start().await;
    let p = create(s.addr, json!({"name": "x"})).await;
    let id = p["id"].as_str().unwrap();
    let mut live = SseReader::open(s.addr, &format!("/api/processes/{id}/stream"), &[]).await;
    let pieces = [
        "plain\n",
        "\n\n",
        "carriage\rreturn\r\n",
        "nul\0byte",
        "data: not an event\n\nevent: done\ndata: {}\n\n",
        "id: 999\r\n",
        "emoji 😀👩‍💻 and é\u{2028}",
        "",
    ];
    let mut expected = String::new();
    for (i, piece) in pieces.iter().enumerate() {
        if i % 2 == 0 {
            append(s.addr, id, piece).await;
        } else {
            http::call(
                s.addr,
                Method::POST,
                &format!("/api/processes/{id}/output"),
                &[("content-type", "text/plain")],
                piece.to_string(),
            )
            .await
            .expect(202);
        }
        expected.push_str(piece);
    }
    // Invalid UTF-8 in a raw body becomes U+FFFD.
    http::call(
        s.addr,
        Method::POST,
        &format!("/api/processes/{id}/output"),
        &[("content-type", "text/plain")],
        b"bad \xff!".to_vec(),
    )
    .await
    .expect(202);
    expected.push_str("bad \u{FFFD}!");
    complete(s.addr, id).await;
    let live_content: String = live
        .rest()
        .await
        .iter()
        .filter(|e| e.name() == "chunk")
        .map(|e| e.json()["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(live_content, expected);
    let (replayed, _) = follow_all(s.addr, &format!("/api/processes/{id}/stream?from=0"), &[]).await;
    assert_eq!(replayed, expected);
    assert_eq!(
        get(s.addr, &format!("/api/processes/{id}/output")).await.text(),
        expected
    );
}

#[tokio::test]
async fn deleting_a_running_process_ends_its_followers_with_cancelled() {
    let s = TestServer::start().await;
    let p = create(s.addr, json!({"name": "x"})).await;
    let id = p["id"].as_str().unwrap();
    let mut r = SseReader::open(s.addr, &format!("/api/processes/{id}/stream"), &[]).await;
    append(s.addr, id, "partial").await;
    http::delete(s.addr, &format!("/api/processes/{id}")).await.expect(204);
    let events = r.rest().await;
    let names: Vec<&str> = events.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["chunk", "status", "done"]);
    assert_eq!(events[1].json()["status"], "cancelled");
    assert_eq!(s.store.emitter_count(), 0);
}

#[tokio::test]
async fn output_past_the_cap_keeps_head_and_tail_and_the_middle_is_reported_as_lagged() {
    let s = TestServer::start_full(
        prochub::server::ServerConfig::default(),
        prochub::store::StoreConfig {
            max_output: 1000,
            ..Default::default()
        },
    )
    .await;
    let p = create(s.addr, json!({"name": "x"})).await;
    let id = p["id"].as_str().unwrap();
    append(s.addr, id, &"a".repeat(600)).await;
    // Past the cap (head 500, tail window 500): every byte counts, the
    // middle 500..700 is elided.
    assert_eq!(append(s.addr, id, &"b".repeat(600)).await, 1200);
    let rec = get(s.addr, &format!("/api/processes/{id}")).await.json();
    assert_eq!(
        (&rec["output_truncated"], &rec["output_elided"]),
        (&json!(true), &json!(200))
    );
    let mut r = SseReader::open(s.addr, &format!("/api/processes/{id}/stream?from=0"), &[]).await;
    let head = r.next_named().await.unwrap();
    assert_eq!((head.name(), head.id.as_deref()), ("chunk", Some("500")));
    assert_eq!(head.json()["content"], "a".repeat(500));
    let lagged = r.next_named().await.unwrap();
    assert_eq!(lagged.name(), "lagged");
    assert_eq!(lagged.json(), json!({"from": 500, "to": 700}));
    assert_eq!(lagged.id.as_deref(), Some("700"));
    let tail = r.next_named().await.unwrap();
    assert_eq!((tail.name(), tail.id.as_deref()), ("chunk", Some("1200")));
    assert_eq!(tail.json()["content"], "b".repeat(500));
    append(s.addr, id, "c").await;
    let live = r.next_named().await.unwrap();
    assert_eq!(
        (live.json()["content"].as_str(), live.id.as_deref()),
        (Some("c"), Some("1201"))
    );
}

/// SPEC section 3 pins the `status` payload to exactly these fields, with
/// `result` present (null when unset) and `done` naming the process.
#[tokio::test]
async fn status_event_carries_exactly_the_spec_fields() {
    let s = TestServer::start().await;
    let p = create(s.addr, json!({"name": "x"})).await;
    let id = p["id"].as_str().unwrap();
    complete(s.addr, id).await;
    let (_, events) = follow_all(s.addr, &format!("/api/processes/{id}/stream"), &[]).await;
    let status = events[0].json();
    let mut keys: Vec<_> = status.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["duration", "duration_ms", "error", "exit_code", "result", "status"]
    );
    assert_eq!(status["status"], "completed");
    assert!(status["result"].is_null() && status["duration"].is_string());
    assert_eq!(events[1].json(), json!({"process_id": id}));
}
