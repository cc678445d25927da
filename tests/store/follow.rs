//! Emitters and followers: order, completion, unsubscribe, replay racing
//! live appends, slow followers, the output cap, delete while followed.

use std::sync::Arc;
use std::time::Duration;

use prochub::model::{ProcessPatch, Status};
use prochub::store::{EMITTER_CAPACITY, FileProcessStore, FollowEvent, StoreConfig};

use crate::helper::{drain, reopen, running, temp_store, temp_store_with};

async fn complete(store: &Arc<FileProcessStore>, id: &str) {
    store
        .update_process(&crate::helper::id(id), ProcessPatch::status(Status::Completed))
        .await
        .expect("complete");
}

#[tokio::test]
async fn emitter_count_returns_to_zero_after_completion_with_several_followers() {
    let (_dir, store) = temp_store().await;
    let a = running(&store, "a").await;
    let b = running(&store, "b").await;
    let followers = [
        store.subscribe(&a, None).unwrap(),
        store.subscribe(&a, Some(0)).unwrap(),
        store.subscribe(&b, None).unwrap(),
    ];
    assert_eq!(store.emitter_count(), 2, "one emitter per followed process");
    store.append_output(&a, "x".into(), None).await.unwrap();
    store.append_output(&b, "y".into(), None).await.unwrap();
    complete(&store, &a).await;
    assert_eq!(store.emitter_count(), 1, "a's emitter goes with its completion");
    store
        .update_process(&b, ProcessPatch::status(Status::Failed))
        .await
        .unwrap();
    assert_eq!(store.emitter_count(), 0);
    let [fa, fa0, fb] = followers;
    for (f, text, status) in [
        (fa, "x", Status::Completed),
        (fa0, "x", Status::Completed),
        (fb, "y", Status::Failed),
    ] {
        let got = drain(f).await;
        assert_eq!(got.text, text);
        assert_eq!(got.status.unwrap().status, status);
    }
    // A follower of a finished process gets replay + status, no emitter.
    let late = store.subscribe(&a, Some(0)).unwrap();
    assert_eq!(store.emitter_count(), 0);
    let got = drain(late).await;
    assert_eq!(
        (got.text.as_str(), got.status.unwrap().status),
        ("x", Status::Completed)
    );
    let late = store.subscribe(&a, None).unwrap();
    let got = drain(late).await;
    assert_eq!((got.text.as_str(), got.status.unwrap().status), ("", Status::Completed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_follower_gets_nothing_more_and_the_emitter_goes() {
    let (_dir, store) = temp_store().await;
    let id = running(&store, "p").await;
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut follow = store.subscribe(&id, None).unwrap();
    let task = tokio::spawn(async move {
        while let Some(ev) = follow.next().await {
            got_tx.send(ev).unwrap();
        }
    });
    assert_eq!(store.emitter_count(), 1);
    store.append_output(&id, "before\n".into(), None).await.unwrap();
    match got_rx.recv().await.unwrap() {
        FollowEvent::Chunk(c) => assert_eq!(c.content, "before\n"),
        other => panic!("{other:?}"),
    }
    // The client goes away: its task (and the Follow in it) is dropped.
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(store.emitter_count(), 0, "the last follower took the emitter with it");
    store.append_output(&id, "after\n".into(), None).await.unwrap();
    complete(&store, &id).await;
    assert!(got_rx.recv().await.is_none(), "nothing reaches a dropped follower");
    assert_eq!(store.emitter_count(), 0);

    // Two followers: dropping one keeps the emitter for the other.
    let id = running(&store, "q").await;
    let f1 = store.subscribe(&id, None).unwrap();
    let f2 = store.subscribe(&id, None).unwrap();
    drop(f1);
    assert_eq!(store.emitter_count(), 1);
    store.append_output(&id, "for f2".into(), None).await.unwrap();
    complete(&store, &id).await;
    assert_eq!(drain(f2).await.text, "for f2");
    assert_eq!(store.emitter_count(), 0);
}

/// Replay-then-live while appends race the replay: every follower, whatever
/// offset it starts from and whenever it subscribes, sees exactly the bytes
/// from its offset to the end, once each, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_then_live_racing_appends_is_gapless_and_duplicate_free() {
    let (_dir, store) = temp_store().await;
    for round in 0..60 {
        let id = running(&store, &format!("race {round}")).await;
        let appenders: Vec<_> = (0..2)
            .map(|a| {
                let (store, id) = (store.clone(), id.clone());
                tokio::spawn(async move {
                    for i in 0..40 {
                        let line = format!("{a}:{i:02}|");
                        store.append_output(&id, line, None).await.unwrap();
                        if i % 8 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        let followers: Vec<_> = (0..6u64)
            .map(|k| {
                let (store, id) = (store.clone(), id.clone());
                tokio::spawn(async move {
                    for _ in 0..k {
                        tokio::task::yield_now().await;
                    }
                    // Offsets that land on chunk edges (0, multiples of 5)
                    // and inside chunks.
                    let from = [0, 5, 7, 23, 60, 1_000_000][k as usize];
                    let f = store.subscribe(&id, Some(from)).unwrap();
                    let start = f.position();
                    (start, drain(f).await)
                })
            })
            .collect();
        for a in appenders {
            a.await.unwrap();
        }
        complete(&store, &id).await;
        let full = String::from_utf8(store.read_output(&id, prochub::store::OutputRange::All).await.unwrap()).unwrap();
        assert_eq!(full.len(), 2 * 40 * 5);
        for f in followers {
            let (start, got) = f.await.unwrap();
            assert_eq!(
                got.text,
                full[start as usize..],
                "round {round}: follower from {start} saw a gap or a duplicate"
            );
            assert!(got.lagged.is_empty(), "nothing was truncated, nothing may be skipped");
            assert_eq!(got.status.unwrap().status, Status::Completed);
        }
        assert_eq!(store.emitter_count(), 0, "round {round}");
    }
}

/// A follower that sleeps while far more than EMITTER_CAPACITY chunks go by
/// falls behind the broadcast buffer; it must catch up from the log and
/// still receive every byte, in order, nothing skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_follower_receives_every_byte() {
    let (_dir, store) = temp_store().await;
    let id = running(&store, "firehose").await;
    let chunks = EMITTER_CAPACITY * 8;
    let mut slow = store.subscribe(&id, None).unwrap();
    let fast = store.subscribe(&id, None).unwrap();
    let reader = tokio::spawn(async move {
        let mut text = String::new();
        let mut events = 0;
        while let Some(ev) = slow.next().await {
            events += 1;
            if events <= 20 {
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            match ev {
                FollowEvent::Chunk(c) => text.push_str(&c.content),
                FollowEvent::Lagged { from, to } => panic!("skipped {from}..{to} of stored output"),
                FollowEvent::Status(s) => assert_eq!(s.status, Status::Completed),
            }
        }
        (text, slow.catch_ups())
    });
    let fast = tokio::spawn(drain(fast));
    let mut expected = String::new();
    for i in 0..chunks {
        let line = format!("line {i:06}\n");
        expected.push_str(&line);
        store.append_output(&id, line, None).await.unwrap();
    }
    complete(&store, &id).await;
    let (text, catch_ups) = reader.await.unwrap();
    // It really fell behind and caught up from the log (otherwise this
    // test proves nothing).
    assert!(catch_ups > 0, "the slow follower never lagged");
    assert_eq!(text.len(), expected.len());
    assert!(text == expected, "the slow follower's bytes differ");
    assert_eq!(
        fast.await.unwrap().text,
        expected,
        "a slow follower never costs a fast one"
    );
    assert_eq!(store.emitter_count(), 0);
}

/// Past the cap (100: head 50, tail window 50, segments of 25) the head
/// and the most recent tail are kept; a replay gets the head, one `lagged`
/// for the elided middle, then the tail; live followers get everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_past_the_cap_keeps_head_and_tail_and_replay_reports_the_elided_middle() {
    let config = StoreConfig {
        max_output: 100,
        ..StoreConfig::default()
    };
    let (_dir, store) = temp_store_with(config.clone()).await;
    let id = running(&store, "chatty").await;
    let live = store.subscribe(&id, None).unwrap();
    let live = tokio::spawn(drain(live));
    let parts = ["a".repeat(60), "b".repeat(60), "c".repeat(30)];
    let all = parts.concat();
    let r = store.append_output(&id, parts[0].clone(), None).await.unwrap();
    assert_eq!((r.output_bytes, r.offset), (60, 60));
    assert!(!store.get_process(&id).unwrap().output_truncated, "60 <= the cap");
    let r = store.append_output(&id, parts[1].clone(), None).await.unwrap();
    assert_eq!((r.output_bytes, r.offset), (120, 120), "every byte counts");
    let p = store.get_process(&id).unwrap();
    assert!(p.output_truncated);
    assert_eq!((p.output_bytes, p.output_elided), (120, 20), "50..70 elided");

    // A replay from 0 while still running: the head, the elided range,
    // then the tail and live output.
    let replay = tokio::spawn(drain(store.subscribe(&id, Some(0)).unwrap()));
    tokio::task::yield_now().await;
    let r = store.append_output(&id, parts[2].clone(), None).await.unwrap();
    assert_eq!((r.output_bytes, r.offset), (150, 150));
    complete(&store, &id).await;

    let live = live.await.unwrap();
    assert_eq!(live.text, all, "live followers get everything");
    assert!(live.lagged.is_empty());
    let replay = replay.await.unwrap();
    assert_eq!(replay.lagged.len(), 1, "{replay:?}");
    let (from, to) = replay.lagged[0];
    assert_eq!(from, 50, "the elided range starts where the head ends");
    assert!(to == 70 || to == 100, "elided {from}..{to}");
    assert_eq!(replay.text, format!("{}{}", &all[..50], &all[to as usize..]));

    // After completion: the head, the final elided range, the last 50.
    let after = drain(store.subscribe(&id, Some(0)).unwrap()).await;
    assert_eq!(after.text, format!("{}{}", &all[..50], &all[100..]));
    assert_eq!(after.lagged, [(50, 100)]);
    assert_eq!(after.status.unwrap().status, Status::Completed);
    let p = store.get_process(&id).unwrap();
    assert_eq!((p.output_bytes, p.output_elided), (150, 50));

    // The same after a restart, and the flags are on disk.
    let store = reopen(store, config).await;
    let p = store.get_process(&id).unwrap();
    assert!(p.output_truncated);
    assert_eq!((p.output_bytes, p.output_elided), (150, 50));
    let again = drain(store.subscribe(&id, Some(0)).unwrap()).await;
    assert_eq!((again.text, again.lagged), (after.text, after.lagged));
}

#[tokio::test]
async fn deleting_a_running_process_ends_its_followers_with_cancelled() {
    let (dir, store) = temp_store().await;
    let id = running(&store, "doomed").await;
    store.append_output(&id, "partial".into(), None).await.unwrap();
    let f = store.subscribe(&id, Some(0)).unwrap();
    let f2 = store.subscribe(&id, None).unwrap();
    store.delete_process(&id).await.unwrap();
    assert_eq!(store.emitter_count(), 0);
    for f in [f, f2] {
        let got = drain(f).await;
        let status = got.status.clone().expect("a status event ends the stream");
        assert_eq!(status.status, Status::Cancelled);
        // The log is gone: what could not be replayed is reported, never
        // invented.
        assert!(got.text.is_empty() || got.text == "partial", "{got:?}");
    }
    assert!(!dir.path().join(format!("output/{id}.log")).exists());
    assert!(store.subscribe(&id, None).is_err());
}

/// Regression: while a completion was being written (log fsync + record
/// write), a refused append reported the process as `queued`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bug_append_during_completion_reported_queued() {
    let (_dir, store) = temp_store().await;
    let id = running(&store, "closing").await;
    let appender = {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            loop {
                match store.append_output(&id, "tick\n".into(), None).await {
                    Ok(_) => tokio::task::yield_now().await,
                    Err(e) => return e,
                }
            }
        })
    };
    store.append_output(&id, "first\n".into(), None).await.unwrap();
    store
        .update_process(&id, ProcessPatch::status(Status::Failed))
        .await
        .unwrap();
    match appender.await.unwrap() {
        prochub::store::StoreError::NotRunning { status, .. } => assert_eq!(status, Status::Failed),
        other => panic!("expected NotRunning, got {other}"),
    }
}

/// A process finished before this store was opened ends its followers with
/// the record's status, including fields edited after it finished.
#[tokio::test]
async fn followers_of_a_process_finished_before_open_get_the_records_status() {
    let (_dir, store) = temp_store().await;
    let id = running(&store, "old").await;
    store.append_output(&id, "done\n".into(), None).await.unwrap();
    store
        .update_process(&id, ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    let store = reopen(store, StoreConfig::default()).await;
    let patch = ProcessPatch {
        result: Some(serde_json::json!({"late": true})),
        ..Default::default()
    };
    store.update_process(&id, patch).await.unwrap();
    let got = drain(store.subscribe(&id, Some(0)).unwrap()).await;
    assert_eq!(got.text, "done\n");
    let status = got.status.unwrap();
    assert_eq!(status.status, Status::Completed);
    assert_eq!(status.result, serde_json::json!({"late": true}));
    assert!(status.duration.is_some());
    assert_eq!(store.emitter_count(), 0);
}

/// Regression: a replay asked to start inside a multi-byte character sent
/// U+FFFD garbage whose length did not match its offsets. It now starts at
/// the next character.
#[tokio::test]
async fn bug_replay_from_inside_a_character_sent_garbage() {
    let (_dir, store) = temp_store().await;
    let id = running(&store, "utf8").await;
    // Bytes: a=0, é=1..3, €=3..6, 😀=6..10, b=10..11.
    store.append_output(&id, "aé€😀b".into(), None).await.unwrap();
    let cases = [
        (0, "aé€😀b"),
        (1, "é€😀b"),
        (2, "€😀b"),
        (4, "😀b"),
        (5, "😀b"),
        (7, "b"),
        (11, ""),
    ];
    // Running: replay, then live.
    let live: Vec<_> = cases
        .iter()
        .map(|&(from, _)| tokio::spawn(drain(store.subscribe(&id, Some(from)).unwrap())))
        .collect();
    tokio::task::yield_now().await;
    store.append_output(&id, "!".into(), None).await.unwrap();
    complete(&store, &id).await;
    for ((from, expected), f) in cases.iter().zip(live) {
        let got = f.await.unwrap();
        assert_eq!(got.text, format!("{expected}!"), "running, from {from}");
        assert!(got.lagged.is_empty());
    }
    // Finished: replay only.
    for (from, expected) in cases {
        let got = drain(store.subscribe(&id, Some(from)).unwrap()).await;
        assert_eq!(got.text, format!("{expected}!"), "finished, from {from}");
        assert_eq!(got.offsets.last(), Some(&12));
    }
}

/// Regression (bug: replayed output lost its stdout/stderr tag, so `prochub
/// run` printed a fast command's early stderr on stdout): stored chunks
/// replay with the pipe they were appended from, one chunk per append.
#[tokio::test]
async fn bug_replay_lost_the_pipe_of_server_run_output() {
    use prochub::model::StreamKind::{Stderr, Stdout};
    let (_dir, store) = temp_store().await;
    let id = running(&store, "piped").await;
    for (text, pipe) in [
        ("a1\n", Some(Stdout)),
        ("a2\n", Some(Stdout)),
        ("e1\n", Some(Stderr)),
        ("p\n", None),
    ] {
        store.append_output(&id, text.into(), pipe).await.unwrap();
    }
    complete(&store, &id).await;
    let mut follow = store.subscribe(&id, Some(0)).unwrap();
    let mut got = Vec::new();
    while let Some(ev) = follow.next().await {
        if let FollowEvent::Chunk(c) = ev {
            got.push((c.content.clone(), c.stream));
        }
    }
    assert_eq!(
        got,
        [
            ("a1\n".to_string(), Some(Stdout)),
            ("a2\n".to_string(), Some(Stdout)),
            ("e1\n".to_string(), Some(Stderr)),
            ("p\n".to_string(), None)
        ]
    );
    // From inside a run: the tag of that run.
    let mut follow = store.subscribe(&id, Some(3)).unwrap();
    match follow.next().await {
        Some(FollowEvent::Chunk(c)) => assert_eq!((c.content.as_str(), c.stream), ("a2\n", Some(Stdout))),
        other => panic!("{other:?}"),
    }
}

/// Regression (review C1, bug: a follower of a deleted process spun
/// forever): the replay found the log gone, gave up at its position, took
/// the next live chunk as a gap to replay, found the log gone again, and so
/// on, with no event and no end. Now the stream ends with the status.
#[tokio::test]
async fn bug_follower_of_a_deleted_process_spun_forever() {
    let (_dir, store) = temp_store().await;
    let id = running(&store, "spin").await;
    store.append_output(&id, "stored".into(), None).await.unwrap();
    let f = store.subscribe(&id, Some(0)).unwrap();
    store.append_output(&id, "live".into(), None).await.unwrap();
    store.delete_process(&id).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), drain(f))
        .await
        .expect("the stream of a deleted process ends");
    assert_eq!(got.status.expect("a status ends it").status, Status::Cancelled);
    // Its output is gone: nothing is replayed, nothing reported skipped.
    assert_eq!((got.text.as_str(), got.lagged.as_slice()), ("", &[][..]));
}

/// Regression (review C2, bug: a replay stopped at a gap between two
/// segments and lost the rest): open repairs each segment on its own, so a
/// torn tail segment that is not the last leaves a gap before the next one.
/// The replay reports the gap as `lagged` and goes on to the end, like
/// `read_output`, which serves the rest after a marker.
#[tokio::test]
async fn bug_replay_stopped_at_a_gap_between_segments() {
    let config = StoreConfig {
        max_output: 4096,
        ..StoreConfig::default()
    };
    let (dir, store) = temp_store_with(config.clone()).await;
    let id = running(&store, "torn").await;
    for i in 0..40 {
        let line = format!("line {i:03} {}\n", "x".repeat(90));
        store.append_output(&id, line, None).await.unwrap();
    }
    store.append_output(&id, "THE END\n".into(), None).await.unwrap();
    complete(&store, &id).await;
    let total = store.get_process(&id).unwrap().output_bytes;
    // The first tail segment loses its last 10 bytes (a torn page).
    let first_tail = dir.path().join(format!("output/{id}.2048.log"));
    let len = std::fs::metadata(&first_tail)
        .expect("a first tail segment at 2048")
        .len();
    let f = std::fs::OpenOptions::new().write(true).open(&first_tail).unwrap();
    f.set_len(len - 10).unwrap();
    drop(f);
    let store = reopen(store, config).await;
    let text = String::from_utf8(store.read_output(&id, prochub::store::OutputRange::All).await.unwrap()).unwrap();
    assert!(text.ends_with("THE END\n"), "read_output serves past the gap");
    let got = tokio::time::timeout(Duration::from_secs(10), drain(store.subscribe(&id, Some(0)).unwrap()))
        .await
        .expect("the replay ends");
    assert_eq!(got.lagged.len(), 1, "one gap: {:?}", got.lagged);
    let (from, to) = got.lagged[0];
    assert!(from > 2048 && to > from && to < total, "gap {from}..{to} of {total}");
    assert!(got.text.ends_with("THE END\n"), "the replay goes on after the gap");
    assert_eq!(got.text.len() as u64, total - (to - from));
    assert_eq!(got.status.expect("status").status, Status::Completed);
}
