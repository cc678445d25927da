//! Crash safety: a child process (this test binary re-running itself, see
//! [`crash_child`]) writes records in a loop and is SIGKILLed at random
//! instants; after every kill the store must open cleanly, every file must
//! parse, and every write the child reported as acknowledged must be there
//! with its content; every acknowledged append must replay as its own
//! chunk with its pipe, a plausible time and a SEQ above every SEQ seen
//! before the kill, and no replayed byte is U+FFFD (the appends are
//! multi-byte text: a torn tail served as text would show).
//!
//! The child prints `begin …` before each call and `ack …` after its await
//! returned. Its writer tasks each own their ids, so at most one write per
//! id is in flight at the kill: that id must then hold either the last
//! acknowledged state or the in-flight one, nothing else.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prochub::model::{NewProcess, ProcessPatch, StreamKind};
use prochub::store::{Chunk, FileProcessStore, FollowEvent, StoreConfig};
use serde_json::json;

/// Set (to the store folder) only in the child.
const CHILD_DIR: &str = "PROCHUB_CRASH_CHILD_DIR";
/// Which run the child is, so its ids are new.
const CHILD_RUN: &str = "PROCHUB_CRASH_CHILD_RUN";
const KILLS: usize = 22;
const WRITERS: usize = 4;

/// The child: only does something when started by the parent test below.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let run: u64 = std::env::var(CHILD_RUN).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = FileProcessStore::open(dir, StoreConfig::default()).await.unwrap();
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let log_id = format!("r{run}-t{t}-log");
                    println!("begin create {log_id} 0");
                    store
                        .create_process(NewProcess {
                            id: Some(log_id.clone()),
                            name: "n0".into(),
                            metadata: Some(json!({"seq": 0}).as_object().unwrap().clone()),
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    println!("ack create {log_id} 0");
                    let mut live: Vec<String> = Vec::new();
                    let mut rng = Rng::new(run * 100 + t as u64);
                    for seq in 1u64.. {
                        let pick = rng.below(10);
                        if pick < 4 || live.is_empty() {
                            let id = format!("r{run}-t{t}-{seq}");
                            println!("begin create {id} {seq}");
                            store
                                .create_process(NewProcess {
                                    id: Some(id.clone()),
                                    name: format!("n{seq}"),
                                    metadata: Some(json!({"seq": seq}).as_object().unwrap().clone()),
                                    ..Default::default()
                                })
                                .await
                                .unwrap();
                            println!("ack create {id} {seq}");
                            live.push(id);
                        } else if pick < 7 {
                            let id = live[rng.below(live.len() as u64) as usize].clone();
                            println!("begin update {id} {seq}");
                            let patch = ProcessPatch {
                                name: Some(format!("n{seq}")),
                                metadata: Some(json!({"seq": seq})),
                                ..Default::default()
                            };
                            store.update_process(&crate::helper::id(&id), patch).await.unwrap();
                            println!("ack update {id} {seq}");
                        } else if pick < 8 {
                            let id = live.swap_remove(rng.below(live.len() as u64) as usize);
                            println!("begin delete {id} {seq}");
                            store.delete_process(&crate::helper::id(&id)).await.unwrap();
                            println!("ack delete {id} {seq}");
                        } else {
                            let text = append_text(seq);
                            println!("begin append {log_id} {text}");
                            store
                                .append_output(&crate::helper::id(&log_id), text.clone(), append_pipe(seq))
                                .await
                                .unwrap();
                            println!("ack append {log_id} {text}");
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
    });
}

/// The text of the child's append number `seq`: multi-byte characters,
/// so a torn tail that cut one would show as U+FFFD.
fn append_text(seq: u64) -> String {
    format!("<{seq}\u{e9}\u{20ac}\u{1f600}>")
}

/// The pipe of append `seq` (none, stdout, stderr in turn), so replays
/// after a crash must bring back each append's own tag.
fn append_pipe(seq: u64) -> Option<StreamKind> {
    [None, Some(StreamKind::Stdout), Some(StreamKind::Stderr)][(seq % 3) as usize]
}

/// `seq` back from an [`append_text`].
fn seq_of(text: &str) -> u64 {
    text.trim_start_matches('<')
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("an append text")
}

/// A tiny xorshift generator: random enough for kill instants and ops, and
/// needs no extra crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What a record must look like: `seq` in its name and metadata, or gone.
type State = Option<u64>;

#[derive(Default)]
struct Model {
    /// Per id: the acknowledged state, and the in-flight one if any.
    records: BTreeMap<String, (State, Option<State>)>,
    /// Per log: acknowledged appends in order, and an in-flight one if any.
    logs: BTreeMap<String, (Vec<String>, Option<String>)>,
    /// Highest SEQ seen in any replay so far: SEQs only grow, also across
    /// the restarts after each kill.
    max_seq: u64,
    /// Per log: appends already checked by an earlier verify.
    verified: BTreeMap<String, usize>,
    acks: usize,
}

impl Model {
    fn apply(&mut self, line: &str) {
        let parts: Vec<&str> = line.split(' ').collect();
        let &[phase, op, id, arg] = parts.as_slice() else {
            return; // libtest's own lines
        };
        if op == "append" {
            let log = self.logs.entry(id.to_owned()).or_default();
            match phase {
                "begin" => log.1 = Some(arg.to_owned()),
                "ack" => {
                    log.0.push(log.1.take().unwrap_or_else(|| arg.to_owned()));
                    self.acks += 1;
                }
                _ => {}
            }
            return;
        }
        let state: State = match op {
            "delete" => None,
            _ => Some(arg.parse().expect("seq")),
        };
        let rec = self.records.entry(id.to_owned()).or_insert((None, None));
        match phase {
            "begin" => rec.1 = Some(state),
            "ack" => {
                rec.0 = state;
                rec.1 = None;
                self.acks += 1;
            }
            _ => {}
        }
    }

    /// Checks the reopened folder against what was acknowledged, then adopts
    /// what is on disk (the in-flight writes resolved one way or the other).
    fn verify(&mut self, dir: &Path, kill: usize) {
        let store = FileProcessStore::open_blocking(dir.to_owned(), StoreConfig::default())
            .unwrap_or_else(|e| panic!("kill {kill}: the store does not open: {e}"));
        assert!(
            store.open_report().quarantined.is_empty(),
            "kill {kill}: torn files: {:?}",
            store.open_report().quarantined
        );
        for e in std::fs::read_dir(dir.join("processes")).unwrap() {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            serde_json::from_slice::<prochub::model::Process>(&bytes)
                .unwrap_or_else(|err| panic!("kill {kill}: {} does not parse: {err}", path.display()));
        }
        for (id, (acked, pending)) in &mut self.records {
            let actual: State = store.get_process(&crate::helper::id(id)).ok().map(|p| {
                let seq = p.metadata["seq"].as_u64().expect("seq in metadata");
                assert_eq!(p.name, format!("n{seq}"), "kill {kill}: {id} mixes two writes");
                seq
            });
            assert!(
                actual == *acked || Some(actual) == *pending,
                "kill {kill}: {id} is {actual:?}, acknowledged {acked:?}, in flight {pending:?}"
            );
            *acked = actual;
            *pending = None;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // SEQs grow by store: the appends made since the last check (by a
        // server started after it) are all above every SEQ seen then.
        let seen_before = self.max_seq;
        for (id, (acked, pending)) in &mut self.logs {
            let end = store.get_process(&crate::helper::id(id)).unwrap().output_bytes;
            let replayed = runtime.block_on(replay(&store, id, end));
            let texts: Vec<&str> = replayed.iter().map(|c| c.content.as_str()).collect();
            let with_pending: Vec<&str> = acked.iter().map(String::as_str).chain(pending.as_deref()).collect();
            assert!(
                texts == *acked || texts == with_pending,
                "kill {kill}: log {id} lost acknowledged output (one replayed chunk per append):\n  on disk {texts:?}\n  acked   {acked:?}"
            );
            let (mut last_seq, mut last_ts) = (0, 0);
            for (i, c) in replayed.iter().enumerate() {
                assert!(
                    !c.content.contains('\u{fffd}'),
                    "kill {kill}: {id} serves U+FFFD: {:?}",
                    c.content
                );
                let seq = seq_of(&c.content);
                assert_eq!(
                    c.stream,
                    append_pipe(seq),
                    "kill {kill}: {id} append {seq} lost its pipe"
                );
                assert!(c.seq > last_seq, "kill {kill}: {id} SEQ {} after {last_seq}", c.seq);
                if i >= self.verified.get(id.as_str()).copied().unwrap_or(0) {
                    assert!(
                        c.seq > seen_before,
                        "kill {kill}: {id} SEQ {} reused (seen {seen_before})",
                        c.seq
                    );
                }
                assert!(
                    c.ts_ms >= last_ts && c.ts_ms >= self_started_ms() && c.ts_ms <= now_ms(),
                    "kill {kill}: {id} append {seq} has no plausible time: {} (previous {last_ts})",
                    c.ts_ms
                );
                (last_seq, last_ts) = (c.seq, c.ts_ms);
            }
            self.max_seq = self.max_seq.max(last_seq);
            self.verified.insert(id.clone(), replayed.len());
            *acked = texts.iter().map(|t| (*t).to_owned()).collect();
            *pending = None;
        }
    }
}

/// Every stored chunk of `id` from byte 0 to `end`, as replayed by a
/// follower (the log is still `running`: stop at `end`).
async fn replay(store: &std::sync::Arc<FileProcessStore>, id: &str, end: u64) -> Vec<std::sync::Arc<Chunk>> {
    let mut follow = store.subscribe(&crate::helper::id(id), Some(0)).expect("follow");
    let mut chunks = Vec::new();
    let mut at = 0;
    while at < end {
        match tokio::time::timeout(Duration::from_secs(10), follow.next()).await {
            Ok(Some(FollowEvent::Chunk(c))) => {
                at = c.offset;
                chunks.push(c);
            }
            other => panic!("replay of {id} stopped at {at} of {end}: {other:?}"),
        }
    }
    chunks
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// When this test process started, in ms (every append is younger).
fn self_started_ms() -> i64 {
    static STARTED: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *STARTED.get_or_init(now_ms)
}

#[test]
fn sigkill_at_random_instants_loses_no_acknowledged_write() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let started = Instant::now();
    self_started_ms();
    for kill in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "store::crash::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_RUN, kill.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the test binary as the child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill only once writes are flowing, then at a random instant.
        let mut lines = Vec::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("kill {kill}: the child never acknowledged a write"));
            let first_ack = line.starts_with("ack ");
            lines.push(line);
            if first_ack {
                break;
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(150_000)));
        child.kill().expect("SIGKILL the child");
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child was killed, not finished");
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        for line in &lines {
            model.apply(line);
        }
        model.verify(dir.path(), kill);
    }
    assert!(
        model.acks > KILLS * 2,
        "too few acknowledged writes to mean much: {}",
        model.acks
    );
    eprintln!(
        "crash test: {KILLS} kills, {} acknowledged writes checked, seed {seed}, {:?}",
        model.acks,
        started.elapsed()
    );
}
