//! Output history in the file store (issue 10): the append index beside
//! each log (SEQ, time, pipe) surviving restarts, its crash repair at
//! open, the SEQ floor, head + tail retention, and `?at=N` appends.

use std::path::Path;

use prochub::model::StreamKind::{Stderr, Stdout};
use prochub::model::{Id, ProcessPatch, Status, StreamKind};
use prochub::store::{FileProcessStore, FollowEvent, StoreConfig, StoreError};

use crate::helper::{TestClock, drain, new_proc_in, reopen, running, t0, temp_store, temp_store_with};

/// Every replayed chunk of a finished process: content, SEQ, ms time, pipe.
async fn replayed(store: &FileProcessStore, id: &Id) -> Vec<(String, u64, i64, Option<StreamKind>)> {
    let mut f = store.subscribe(id, Some(0)).expect("subscribe");
    let mut out = Vec::new();
    while let Some(ev) = f.next().await {
        match ev {
            FollowEvent::Chunk(c) => out.push((c.content.clone(), c.seq, c.ts_ms, c.stream)),
            FollowEvent::Lagged { from, to } => panic!("nothing is elided here: {from}..{to}"),
            FollowEvent::Status(_) => {}
        }
    }
    out
}

async fn finish(store: &std::sync::Arc<FileProcessStore>, id: &Id) {
    store
        .update_process(id, ProcessPatch::status(Status::Completed))
        .await
        .expect("complete");
}

/// Regression (bug: after a restart replayed output had no pipe, and no
/// chunk had a time): time and pipe come from the index, live, replayed,
/// and replayed after a restart; times never go back within a process.
#[tokio::test]
async fn bug_replayed_output_lost_its_time_and_pipe_after_a_restart() {
    let clock = TestClock::at(t0());
    let config = clock.config();
    let (_dir, store) = temp_store_with(config.clone()).await;
    let id = running(&store, "piped").await;
    let mut live = store.subscribe(&id, None).expect("subscribe");
    let t = t0().timestamp_millis();
    store.append_output(&id, "out\n".into(), Some(Stdout)).await.unwrap();
    clock.set(t0() + chrono::Duration::seconds(2));
    store.append_output(&id, "err\n".into(), Some(Stderr)).await.unwrap();
    // The clock going back does not make the index go back.
    clock.set(t0() + chrono::Duration::seconds(1));
    store.append_output(&id, "push\n".into(), None).await.unwrap();
    match live.next().await {
        Some(FollowEvent::Chunk(c)) => assert_eq!((c.content.as_str(), c.ts_ms, c.stream), ("out\n", t, Some(Stdout))),
        other => panic!("{other:?}"),
    }
    drop(live);
    finish(&store, &id).await;
    let want = vec![
        ("out\n".to_owned(), 1, t, Some(Stdout)),
        ("err\n".to_owned(), 2, t + 2000, Some(Stderr)),
        ("push\n".to_owned(), 3, t + 2000, None),
    ];
    assert_eq!(replayed(&store, &id).await, want);
    let store = reopen(store, config).await;
    assert_eq!(replayed(&store, &id).await, want, "the same after a restart");
}

/// SEQ is store-wide and strictly increasing across restarts, also after
/// the process holding the newest SEQs was deleted (the `output/SEQ`
/// floor) and after a prune.
#[tokio::test]
async fn seq_strictly_increases_across_restarts_and_after_deleting_the_newest() {
    let (dir, store) = temp_store().await;
    let a = running(&store, "a").await;
    let b = running(&store, "b").await;
    store.append_output(&a, "a1".into(), None).await.unwrap();
    store.append_output(&b, "b1".into(), None).await.unwrap();
    store.append_output(&a, "a2".into(), None).await.unwrap();
    assert_eq!(store.last_seq(), 3);
    let store = reopen(store, StoreConfig::default()).await;
    assert_eq!(store.last_seq(), 3, "resumes after the largest SEQ on disk");
    store.append_output(&b, "b2".into(), None).await.unwrap();
    assert_eq!(store.last_seq(), 4);
    // b holds SEQ 4, the newest: deleting it must not let a restart reuse it.
    store.delete_process(&b).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("output/SEQ")).unwrap().trim(),
        "4"
    );
    let store = reopen(store, StoreConfig::default()).await;
    assert_eq!(store.last_seq(), 4);
    store.append_output(&a, "a3".into(), None).await.unwrap();
    finish(&store, &a).await;
    let seqs: Vec<u64> = replayed(&store, &a).await.into_iter().map(|c| c.1).collect();
    assert_eq!(seqs, [1, 3, 5]);
    // Deleting a process above the floor writes the counter as it is;
    // one whose SEQs are all at or below the floor leaves it alone.
    let c = running(&store, "c").await;
    store.append_output(&c, "c1".into(), None).await.unwrap();
    store.delete_process(&a).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("output/SEQ")).unwrap().trim(),
        "6"
    );
    let d = running(&store, "d").await;
    store.append_output(&d, "d1".into(), None).await.unwrap();
    store.delete_process(&c).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("output/SEQ")).unwrap().trim(),
        "6"
    );
    let store = reopen(store, StoreConfig::default()).await;
    assert_eq!(store.last_seq(), 7);
}

/// Appends `bytes` to the file at `path`.
fn append_raw(path: &Path, bytes: &[u8]) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).expect("open");
    f.write_all(bytes).expect("write");
}

/// One 32-byte index record, written by hand (the README's format).
fn raw_record(start: u64, seq: u64, ts_ms: i64, len: u32, pipe: u8) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0..8].copy_from_slice(&start.to_le_bytes());
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16..24].copy_from_slice(&ts_ms.to_le_bytes());
    b[24..28].copy_from_slice(&len.to_le_bytes());
    b[28] = pipe;
    b
}

/// A crash can tear the tail of a log or its index: a partial record, log
/// bytes past the last record, a record whose bytes never reached the log,
/// a log ending inside a character. Open cuts each back to the last whole
/// append, says so, and loses nothing else.
#[tokio::test]
async fn torn_tails_of_log_and_index_are_trimmed_at_open_and_nothing_else_is_lost() {
    let (dir, store) = temp_store().await;
    let mut ids = Vec::new();
    for name in ["partial-record", "log-beyond", "record-beyond", "torn-char"] {
        let id = store.create_process(new_proc_in(name, "default")).await.unwrap().id;
        store.append_output(&id, "one\n".into(), Some(Stdout)).await.unwrap();
        store.append_output(&id, "twé\n".into(), Some(Stderr)).await.unwrap();
        ids.push(id);
    }
    let before: Vec<_> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(drain_text(&store, id).await);
        }
        v
    };
    let out = dir.path().join("output");
    drop(store);
    let idx = |n: &str| out.join(format!("{n}.idx"));
    let log = |n: &str| out.join(format!("{n}.log"));
    append_raw(&idx("partial-record"), &[7; 13]);
    append_raw(&log("log-beyond"), b"never acknowledged");
    append_raw(&idx("record-beyond"), &raw_record(9, 99, 0, 100, 1));
    // A record ending inside a character, with log bytes after it (one
    // ending exactly at the log's end is trusted without reading the log:
    // a writer cuts pieces at characters, open stays fast).
    append_raw(&log("torn-char"), &"é".as_bytes()[..1]);
    append_raw(&log("torn-char"), b"z");
    append_raw(&idx("torn-char"), &raw_record(9, 99, 0, 1, 1));

    let store = FileProcessStore::open(dir.path(), StoreConfig::default())
        .await
        .unwrap();
    let mut trimmed: Vec<String> = store
        .open_report()
        .trimmed
        .iter()
        .map(|t| t.log.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    trimmed.sort();
    assert_eq!(
        trimmed,
        [
            "log-beyond.log",
            "partial-record.log",
            "record-beyond.log",
            "torn-char.log"
        ]
    );
    for (id, text) in ids.iter().zip(&before) {
        assert_eq!(store.get_process(id).unwrap().output_bytes, 9, "{id}");
        assert_eq!(&drain_text(&store, id).await, text, "{id}");
        assert_eq!(
            std::fs::metadata(log(id.as_str())).unwrap().len(),
            9,
            "{id}: log cut back"
        );
        assert_eq!(
            std::fs::metadata(idx(id.as_str())).unwrap().len(),
            16 + 2 * 32,
            "{id}: index cut back"
        );
        // Appends go on right after the last whole one, with the next SEQ.
        store.append_output(id, "3\n".into(), None).await.unwrap();
        finish(&store, id).await;
        let got = replayed(&store, id).await;
        assert_eq!(got.iter().map(|c| c.0.as_str()).collect::<String>(), "one\ntwé\n3\n");
        assert_eq!(got[1].3, Some(Stderr));
    }
    assert_eq!(store.last_seq(), 8 + 4, "the bogus SEQ 99 records were dropped");
    let store = reopen(store, StoreConfig::default()).await;
    assert!(store.open_report().trimmed.is_empty(), "a repaired store opens clean");
}

/// What a replay from 0 of a running process delivers up to its current
/// end: content and pipe per chunk.
async fn drain_text(store: &FileProcessStore, id: &Id) -> Vec<(String, Option<StreamKind>)> {
    let end = store.get_process(id).unwrap().output_bytes;
    let mut f = store.subscribe(id, Some(0)).unwrap();
    let mut out = Vec::new();
    while f.position() < end {
        match f.next().await {
            Some(FollowEvent::Chunk(c)) => out.push((c.content.clone(), c.stream)),
            other => panic!("{other:?}"),
        }
    }
    out
}

/// The content of append `i` of the head + tail test: distinct per append,
/// so a byte from the wrong place is caught.
fn block(i: usize, len: usize) -> String {
    let tag = format!("<{i:07}>");
    tag.repeat(len / tag.len() + 1)[..len].to_owned()
}

/// Bytes on disk of `id`'s output files (head and tail segments).
fn disk_usage(out: &Path, id: &str) -> u64 {
    std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{id}.")))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

/// Issue 10's acceptance test: 100 MiB through a 4 MiB cap keeps exactly
/// the first 2 MiB and the last 2 MiB; a follow from 0 gets the head, one
/// `lagged` for the middle, the tail, byte for byte, also after a restart;
/// the process's files stay under ~1.5x the cap all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_run_through_a_4_mib_cap_keeps_the_first_and_last_2_mib_exactly() {
    const MIB: usize = 1024 * 1024;
    const APPEND: usize = 64 * 1024 - 7;
    const TOTAL: usize = 100 * MIB;
    let config = StoreConfig {
        max_output: 4 * MIB as u64,
        ..StoreConfig::default()
    };
    let (dir, store) = temp_store_with(config.clone()).await;
    let id = running(&store, "big").await;
    let out = dir.path().join("output");
    let (mut head, mut tail) = (String::new(), std::collections::VecDeque::<u8>::new());
    let (mut sent, mut i, mut most_on_disk) = (0, 0, 0);
    while sent < TOTAL {
        let text = block(i, APPEND.min(TOTAL - sent));
        if head.len() < 2 * MIB {
            head.push_str(&text[..(2 * MIB - head.len()).min(text.len())]);
        }
        tail.extend(text.as_bytes());
        while tail.len() > 2 * MIB {
            tail.pop_front();
        }
        sent += text.len();
        let r = store.append_output(&id, text, None).await.unwrap();
        assert_eq!(r.output_bytes, sent as u64);
        i += 1;
        if i % 16 == 0 {
            most_on_disk = most_on_disk.max(disk_usage(&out, id.as_str()));
        }
    }
    assert!(
        most_on_disk < 6 * MIB as u64,
        "{most_on_disk} bytes on disk for a 4 MiB cap"
    );
    let p = store.get_process(&id).unwrap();
    let elided = (TOTAL - 4 * MIB) as u64;
    assert!(p.output_truncated);
    assert_eq!((p.output_bytes, p.output_elided), (TOTAL as u64, elided));
    finish(&store, &id).await;
    let tail = String::from_utf8(tail.into_iter().collect()).unwrap();
    let check = |got: crate::helper::Followed| {
        assert_eq!(got.lagged, [(2 * MIB as u64, (TOTAL - 2 * MIB) as u64)]);
        assert_eq!(got.text.len(), 4 * MIB);
        assert!(got.text[..2 * MIB] == head, "the head differs");
        assert!(got.text[2 * MIB..] == tail, "the tail differs");
    };
    check(drain(store.subscribe(&id, Some(0)).unwrap()).await);
    let view = store.get_process(&id).unwrap();
    assert_eq!(view.output_elided, elided, "final in the record");
    let store = reopen(store, config).await;
    let p = store.get_process(&id).unwrap();
    assert_eq!(
        (p.output_bytes, p.output_elided, p.output_truncated),
        (TOTAL as u64, elided, true)
    );
    check(drain(store.subscribe(&id, Some(0)).unwrap()).await);
    // A follow starting inside the elided range starts with the tail.
    let got = drain(store.subscribe(&id, Some(50 * MIB as u64)).unwrap()).await;
    assert_eq!(got.lagged, [(50 * MIB as u64, (TOTAL - 2 * MIB) as u64)]);
    assert!(got.text == tail);
}

/// `?at=N`: an append happens only where the output ends; a producer that
/// lost the answer to its append retries with the same `at` and learns
/// from the 409's `output_bytes` that it was stored (neither lost nor
/// doubled).
#[tokio::test]
async fn appends_at_an_offset_match_mismatch_and_retry_after_a_lost_answer() {
    let (_dir, store) = temp_store().await;
    let id = running(&store, "idempotent").await;
    let r = store.append_output_at(&id, "abc".into(), None, Some(0)).await.unwrap();
    assert_eq!(r.output_bytes, 3);
    // The answer was "lost": the producer sends the same append again.
    match store.append_output_at(&id, "abc".into(), None, Some(0)).await {
        Err(StoreError::OffsetMismatch { at, output_bytes, .. }) => {
            assert_eq!((at, output_bytes), (0, 3));
            assert_eq!(output_bytes, at + 3, "the retry rule: it was stored");
        }
        other => panic!("{other:?}"),
    }
    match store.append_output_at(&id, "x".into(), None, Some(7)).await {
        Err(StoreError::OffsetMismatch { output_bytes: 3, .. }) => {}
        other => panic!("a gap is refused: {other:?}"),
    }
    store
        .append_output_at(&id, "de".into(), Some(Stdout), Some(3))
        .await
        .unwrap();
    finish(&store, &id).await;
    let got = replayed(&store, &id).await;
    assert_eq!(got.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["abc", "de"]);
    assert_eq!(store.get_process(&id).unwrap().output_bytes, 5);
}

/// Caps too small for head + tail (0 to 5 bytes, and one below a chunk)
/// never panic: output still streams live, `output_bytes` counts it all,
/// and a replay gets what is kept plus one `lagged`.
#[tokio::test]
async fn tiny_caps_do_not_panic_and_count_every_byte() {
    for cap in [0u64, 1, 2, 3, 5, 16 * 1024 - 1] {
        let config = StoreConfig {
            max_output: cap,
            ..StoreConfig::default()
        };
        let (_dir, store) = temp_store_with(config.clone()).await;
        let id = running(&store, "tiny").await;
        let live = tokio::spawn(drain(store.subscribe(&id, None).unwrap()));
        let mut all = String::new();
        for i in 0..40 {
            let text = format!("é{i}-{}", "x".repeat(i * 700));
            all.push_str(&text);
            store.append_output(&id, text, None).await.unwrap();
        }
        finish(&store, &id).await;
        assert_eq!(live.await.unwrap().text, all, "cap {cap}: live gets everything");
        let check = |got: crate::helper::Followed| {
            assert!(got.text.len() as u64 <= cap, "cap {cap}: {} bytes kept", got.text.len());
            let [(from, to)] = got.lagged[..] else {
                panic!("cap {cap}: one elided range, got {:?}", got.lagged)
            };
            assert!(from <= cap / 2, "cap {cap}: head {from}");
            let kept = format!("{}{}", &all[..from as usize], &all[to as usize..]);
            assert!(got.text == kept, "cap {cap}: head then tail, byte for byte");
        };
        check(drain(store.subscribe(&id, Some(0)).unwrap()).await);
        let p = store.get_process(&id).unwrap();
        assert_eq!(p.output_bytes, all.len() as u64, "cap {cap}");
        assert!(p.output_truncated);
        let store = reopen(store, config).await;
        assert_eq!(
            store.get_process(&id).unwrap().output_bytes,
            all.len() as u64,
            "cap {cap} after a restart"
        );
        check(drain(store.subscribe(&id, Some(0)).unwrap()).await);
    }
}

/// What opening a store whose 1,000 processes have index files costs (a
/// rough debug-build figure for the report; the lead benches release).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_1000_processes_with_index_files() {
    let (dir, store) = temp_store().await;
    for i in 0..1000 {
        let id = store
            .create_process(new_proc_in(&format!("p{i}"), "default"))
            .await
            .unwrap()
            .id;
        store
            .append_output(&id, format!("line {i}\n"), Some(Stdout))
            .await
            .unwrap();
        store.append_output(&id, "more\n".into(), Some(Stderr)).await.unwrap();
    }
    drop(store);
    let started = std::time::Instant::now();
    let store = FileProcessStore::open(dir.path(), StoreConfig::default())
        .await
        .unwrap();
    let took = started.elapsed();
    eprintln!("opened 1000 processes with index files in {took:?}");
    assert_eq!(store.process_count(), 1000);
    assert_eq!(store.last_seq(), 2000);
    assert!(store.open_report().trimmed.is_empty());
}
