//! Store benchmarks (issue 2). Run with `cargo bench --bench store`.
//!
//! Each scenario runs several times and the table shows medians, next to
//! the targets. Everything happens in a temporary folder under
//! `target/tmp` (same file system as a real data folder in the worktree),
//! removed at the end. Opening the 100,000-record store runs in a fresh
//! child process (this binary with `--open-child DIR`) so its peak RSS is
//! the store's alone.
//!
//! Knobs (env): `BENCH_RUNS` (default 5), `BENCH_DURABLE_ROUNDS` (8) and
//! `BENCH_SECS` (0.75) for the durable-write loops, `BENCH_OPEN_RECORDS`
//! (100000), `BENCH_APPEND_MIB` (128), `BENCH_FANOUT_SUBS` (1000),
//! `BENCH_FANOUT_CHUNKS` (100000), `BENCH_OPEN_LOGS_EVERY` (10: which
//! planted records get a log), `BENCH_SINCE_APPENDS` (1000000), `BENCH_ONLY`
//! (comma list of durable, open, append, since, fanout).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use prochub::model::{NewProcess, Process, ProcessPatch, Status};
use prochub::store::{FileProcessStore, FollowEvent, StoreConfig};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt_runs(v: &[f64]) -> String {
    v.iter()
        .map(|x| {
            if x.abs() < 100.0 {
                format!("{x:.2}")
            } else {
                format!("{x:.0}")
            }
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The raw rate of this disk: write + fsync + rename + folder fsync of a
/// small file, in a loop, for `secs`, on `threads` threads at once (each
/// its own file, same folder; 1 thread is the single-writer reference):
/// what the disk gives writers without any store.
fn raw_durable_rate_threads(dir: &Path, threads: usize, secs: f64) -> f64 {
    fs::create_dir_all(dir).expect("raw dir");
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let payload = vec![b'x'; 400];
                    let target = dir.join(format!("record-{t}.json"));
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let tmp = dir.join(format!(".tmp-{t}-{n}"));
                        let mut f = File::create(&tmp).expect("create tmp");
                        f.write_all(&payload).expect("write");
                        f.sync_all().expect("fsync file");
                        fs::rename(&tmp, &target).expect("rename");
                        File::open(dir).and_then(|d| d.sync_all()).expect("fsync dir");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("raw thread")).sum()
    });
    total as f64 / started.elapsed().as_secs_f64()
}

/// Durable creates per second with `writers` concurrent tasks, for `secs`.
async fn create_rate(dir: &Path, writers: usize, secs: f64) -> f64 {
    let store = FileProcessStore::open(dir, StoreConfig::default()).await.expect("open");
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    store
                        .create_process(NewProcess {
                            name: format!("bench writer {w} #{n}"),
                            ..Default::default()
                        })
                        .await
                        .expect("create");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("writer");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// A realistic finished record, written straight to disk (no fsync: this is
/// fixture generation, not the thing measured).
fn plant_records(dir: &Path, n: usize) {
    // Every 10th record has a log by default; `BENCH_OPEN_LOGS_EVERY=1`
    // gives every record one (the open-with-index-files comparison).
    let logs_every: usize = env_or("BENCH_OPEN_LOGS_EVERY", 10).max(1);
    let procs = dir.join("processes");
    let out = dir.join("output");
    fs::create_dir_all(&procs).expect("processes dir");
    fs::create_dir_all(&out).expect("output dir");
    let t = prochub::model::now();
    for i in 0..n {
        let id = prochub::model::Id::generate();
        let p = Process {
            id: id.clone(),
            workspace: prochub::model::Id::default_workspace(),
            name: format!("cargo test --workspace (run {i})"),
            status: [Status::Completed, Status::Failed, Status::Cancelled][i % 3],
            created_at: t,
            updated_at: t,
            started_at: Some(t),
            ended_at: Some(t),
            duration: Some("2m 34s".into()),
            result: Some(serde_json::json!({"passed": 412, "failed": i % 3})),
            error: None,
            metadata: serde_json::json!({"branch": "main", "commit": "4f2a9c1", "runner": "ci-7"})
                .as_object()
                .cloned()
                .expect("object"),
            command: None,
            exit_code: Some(0),
            exit_signal: None,
            output_bytes: 0,
            output_truncated: false,
            output_elided: 0,
        };
        let json = serde_json::to_vec_pretty(&p).expect("encode");
        fs::write(procs.join(format!("{id}.json")), json).expect("write record");
        if i % logs_every == 0 {
            fs::write(out.join(format!("{id}.log")), b"some output\n").expect("write log");
        }
    }
}

/// CPU seconds (user + system) this process has used so far: on a machine
/// shared with other work, CPU per MiB compares variants more steadily than
/// wall-clock rates do.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn vm_kib(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Child side of the open benchmark: prints
/// `secs peak_rss_kib base_kib records cpu_secs`.
fn open_child(dir: &str) {
    let base = vm_kib("VmHWM:");
    let cpu = cpu_secs();
    let started = Instant::now();
    let store = FileProcessStore::open_blocking(PathBuf::from(dir), StoreConfig::default()).expect("open");
    let secs = started.elapsed().as_secs_f64();
    let peak = vm_kib("VmHWM:");
    println!("{secs} {peak} {base} {} {}", store.process_count(), cpu_secs() - cpu);
    // Freeing 100,000 records is not part of opening; skip it.
    std::mem::forget(store);
}

/// Appends `total` bytes in 4 KiB chunks with one follower attached;
/// returns MiB/s (until the follower has everything) and CPU ms per MiB.
async fn append_rate(dir: &Path, total: usize) -> (f64, f64) {
    let config = StoreConfig {
        max_output: u64::MAX,
        ..StoreConfig::default()
    };
    let store = FileProcessStore::open(dir, config).await.expect("open");
    let id = store
        .create_process(NewProcess {
            name: "append bench".into(),
            ..Default::default()
        })
        .await
        .expect("create")
        .id;
    let mut follow = store.subscribe(&id, None).expect("subscribe");
    let follower = tokio::spawn(async move {
        let mut got = 0usize;
        while let Some(ev) = follow.next().await {
            match ev {
                FollowEvent::Chunk(c) => got += c.content.len(),
                FollowEvent::Lagged { from, to } => panic!("lost {from}..{to}"),
                FollowEvent::Status(_) => break,
            }
        }
        got
    });
    let chunk: String = "0123456789abcdef".repeat(256);
    let cpu = cpu_secs();
    let started = Instant::now();
    // The appender is a spawned task on a worker, like a request handler
    // (not the block_on thread, where tokio treats blocking differently).
    let appender = {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            for _ in 0..total / chunk.len() {
                store.append_output(&id, chunk.clone(), None).await.expect("append");
            }
            store
                .update_process(&id, ProcessPatch::status(Status::Completed))
                .await
                .expect("complete");
        })
    };
    appender.await.expect("appender");
    let got = follower.await.expect("follower");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(got, total, "the follower must receive every byte");
    let mib = total as f64 / (1024.0 * 1024.0);
    (mib / secs, (cpu_secs() - cpu) * 1000.0 / mib)
}

/// 1 process, `subs` subscribers, `chunks` chunks: every subscriber must
/// get every byte; returns chunk deliveries per second.
async fn fanout_rate(dir: &Path, subs: usize, chunks: usize) -> (f64, f64) {
    let store = FileProcessStore::open(dir, StoreConfig::default()).await.expect("open");
    let id = store
        .create_process(NewProcess {
            name: "fan-out bench".into(),
            ..Default::default()
        })
        .await
        .expect("create")
        .id;
    let line = "x".repeat(63) + "\n";
    let total = line.len() * chunks;
    let followers: Vec<_> = (0..subs)
        .map(|_| {
            let mut follow = store.subscribe(&id, None).expect("subscribe");
            tokio::spawn(async move {
                let (mut bytes, mut events) = (0usize, 0usize);
                while let Some(ev) = follow.next().await {
                    match ev {
                        FollowEvent::Chunk(c) => {
                            bytes += c.content.len();
                            events += 1;
                        }
                        FollowEvent::Lagged { from, to } => panic!("lost {from}..{to}"),
                        FollowEvent::Status(_) => {}
                    }
                }
                (bytes, events)
            })
        })
        .collect();
    let started = Instant::now();
    let appender = {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            for _ in 0..chunks {
                store.append_output(&id, line.clone(), None).await.expect("append");
            }
            store
                .update_process(&id, ProcessPatch::status(Status::Completed))
                .await
                .expect("complete");
        })
    };
    appender.await.expect("appender");
    let mut events = 0;
    for f in followers {
        let (bytes, ev) = f.await.expect("follower");
        assert_eq!(bytes, total, "every subscriber gets every chunk");
        events += ev;
    }
    let secs = started.elapsed().as_secs_f64();
    // Deliveries counted in chunks of output; a follower that caught up from
    // the log received several chunks' bytes in one event.
    ((subs * chunks) as f64 / secs, events as f64 / subs as f64)
}

/// `?since=` on a big log (issue 10): one process with `appends` appends
/// of 1 KiB, stored 1 ms apart by an injected clock; then reads from the
/// middle of its time range, three times. Returns, per read, (ms to the
/// first block, ms to read everything after it, VmRSS growth in MiB while
/// reading, MiB read).
async fn since_read(dir: &Path, appends: usize) -> Vec<(f64, f64, f64, f64)> {
    use std::sync::atomic::{AtomicI64, Ordering};
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let tick = std::sync::Arc::new(AtomicI64::new(0));
    let clock = {
        let tick = tick.clone();
        std::sync::Arc::new(move || base + chrono::Duration::milliseconds(tick.load(Ordering::Relaxed)))
    };
    let config = StoreConfig {
        max_output: u64::MAX,
        clock,
    };
    let store = FileProcessStore::open(dir, config).await.expect("open");
    let id = store
        .create_process(NewProcess {
            name: "since bench".into(),
            ..Default::default()
        })
        .await
        .expect("create")
        .id;
    let line = "y".repeat(1023) + "\n";
    let t = Instant::now();
    for i in 0..appends {
        tick.store(i as i64, Ordering::Relaxed);
        store.append_output(&id, line.clone(), None).await.expect("append");
    }
    eprintln!(
        "since: wrote {appends} appends ({} MiB) in {:.1}s",
        (appends * line.len()) >> 20,
        t.elapsed().as_secs_f64()
    );
    // Three reads, from 1/2, 1/4 and 3/4 of the time range.
    let mut runs = Vec::new();
    for at in [appends / 2, appends / 4, appends * 3 / 4] {
        let rss_before = vm_kib("VmRSS:");
        let query = prochub::model::OutputQuery {
            since: Some(base + chrono::Duration::milliseconds(at as i64)),
            ..Default::default()
        };
        let started = Instant::now();
        let mut reader = store.output_reader(&id, &query).expect("reader");
        let first = reader.next_block().await.expect("read").expect("a first block");
        let first_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (mut bytes, mut peak) = (first.len(), vm_kib("VmRSS:"));
        while let Some(b) = reader.next_block().await.expect("read") {
            bytes += b.len();
            peak = peak.max(vm_kib("VmRSS:"));
        }
        let all_ms = started.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(
            bytes,
            (appends - at) * line.len(),
            "since= serves exactly the appends from then on"
        );
        let grown = peak.saturating_sub(rss_before) as f64 / 1024.0;
        runs.push((first_ms, all_ms, grown, bytes as f64 / (1024.0 * 1024.0)));
    }
    runs
}

struct Row {
    what: String,
    runs: Vec<f64>,
    unit: &'static str,
    target: String,
    ok: Option<bool>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--open-child") {
        open_child(&args[i + 1]);
        return;
    }
    // For profiling the open path by hand: `--plant DIR N`.
    if let Some(i) = args.iter().position(|a| a == "--plant") {
        plant_records(Path::new(&args[i + 1]), args[i + 2].parse().expect("record count"));
        return;
    }
    let runs: usize = env_or("BENCH_RUNS", 5);
    let secs: f64 = env_or("BENCH_SECS", 0.75);
    let open_n: usize = env_or("BENCH_OPEN_RECORDS", 100_000);
    let base = tempfile::Builder::new()
        .prefix("prochub-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("bench temp dir");
    let fresh = {
        let mut k = 0;
        let base = base.path().to_owned();
        move |what: &str| {
            k += 1;
            base.join(format!("{what}-{k}"))
        }
    };
    let mut fresh = fresh;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    let only: Option<String> = std::env::var("BENCH_ONLY").ok();
    let want = |s: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == s));

    if want("durable") {
        // Many short rounds, each running the four loops back to back, and
        // ratios taken within a round: the disk here is shared with other
        // work and its speed drifts by 3x over seconds, which would swamp a
        // comparison of medians taken at different times.
        let rounds: usize = env_or("BENCH_DURABLE_ROUNDS", 8);
        let (mut raw, mut raw16, mut one, mut sixteen) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut r1, mut r16) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            raw.push(raw_durable_rate_threads(&fresh("raw"), 1, secs));
            one.push(rt.block_on(create_rate(&fresh("one"), 1, secs)));
            sixteen.push(rt.block_on(create_rate(&fresh("sixteen"), 16, secs)));
            raw16.push(raw_durable_rate_threads(&fresh("raw16"), 16, secs));
            r1.push(one[r] / raw[r]);
            r16.push(sixteen[r] / one[r]);
            eprintln!(
                "durable round {r}: raw {:.0}/s, 1 writer {:.0}/s ({:.2}x), 16 writers {:.0}/s ({:.2}x 1 writer), raw 16 threads {:.0}/s",
                raw[r], one[r], r1[r], sixteen[r], r16[r], raw16[r]
            );
        }
        let (m1, m16) = (median(r1.clone()), median(r16.clone()));
        rows.push(Row {
            what: "raw write+fsync+rename+dir fsync, 1 thread".into(),
            runs: raw,
            unit: "ops/s",
            target: "(reference)".into(),
            ok: None,
        });
        rows.push(Row {
            what: "raw loop on 16 threads at once".into(),
            runs: raw16,
            unit: "ops/s",
            target: "(reference)".into(),
            ok: None,
        });
        rows.push(Row {
            what: "durable creates, 1 writer".into(),
            runs: one,
            unit: "creates/s",
            target: "".into(),
            ok: None,
        });
        rows.push(Row {
            what: "durable creates, 16 writers".into(),
            runs: sixteen,
            unit: "creates/s",
            target: "".into(),
            ok: None,
        });
        rows.push(Row {
            what: "  ratio 1 writer / raw (same round)".into(),
            runs: r1,
            unit: "x",
            target: ">= 0.8x".into(),
            ok: Some(m1 >= 0.8),
        });
        rows.push(Row {
            what: "  ratio 16 writers / 1 writer (same round)".into(),
            runs: r16,
            unit: "x",
            target: ">= 3x".into(),
            ok: Some(m16 >= 3.0),
        });
    }

    if want("open") {
        let dir = fresh("open");
        let t = Instant::now();
        plant_records(&dir, open_n);
        eprintln!("planted {open_n} records in {:.1}s", t.elapsed().as_secs_f64());
        // Write the fixture back first, so the opens are not measured
        // against the writeback of 100,000 fresh files; then one untimed
        // open, so every timed one sees the same (warm) page cache, as a
        // restarting server would.
        let t = Instant::now();
        File::open(&dir)
            .and_then(|d| {
                use std::os::fd::AsRawFd;
                // SAFETY: syncfs only reads the fd, which `d` keeps open.
                match unsafe { libc::syncfs(d.as_raw_fd()) } {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            })
            .expect("syncfs");
        eprintln!("flushed the fixture in {:.1}s", t.elapsed().as_secs_f64());
        let exe = std::env::current_exe().expect("current exe");
        let warm = Command::new(&exe)
            .arg("--open-child")
            .arg(&dir)
            .output()
            .expect("warm-up open");
        assert!(warm.status.success(), "warm-up open failed");
        let (mut times, mut peaks, mut cpus) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..runs {
            let out = Command::new(&exe)
                .arg("--open-child")
                .arg(&dir)
                .output()
                .expect("run open child");
            assert!(
                out.status.success(),
                "open child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let f: Vec<f64> = text.split_whitespace().map(|x| x.parse().expect("number")).collect();
            assert_eq!(f[3] as usize, open_n, "every record loaded");
            eprintln!(
                "open run {r}: {:.3}s, peak RSS {:.1} MiB (before open {:.1} MiB), CPU {:.2}s",
                f[0],
                f[1] / 1024.0,
                f[2] / 1024.0,
                f[4]
            );
            times.push(f[0] * 1000.0);
            peaks.push(f[1] / 1024.0);
            cpus.push(f[4] * 1000.0);
        }
        rows.push(Row {
            what: format!("open {open_n} records: CPU (user+sys, all threads)"),
            runs: cpus.clone(),
            unit: "ms",
            target: "(report)".into(),
            ok: None,
        });
        let (mt, mp) = (median(times.clone()), median(peaks.clone()));
        rows.push(Row {
            what: format!("open {open_n} records: time"),
            runs: times,
            unit: "ms",
            target: "< 1500 ms".into(),
            ok: Some(mt < 1500.0),
        });
        rows.push(Row {
            what: format!("open {open_n} records: peak RSS"),
            runs: peaks,
            unit: "MiB",
            target: "< 300 MiB".into(),
            ok: Some(mp < 300.0),
        });
        fs::remove_dir_all(&dir).ok();
    }

    if want("append") {
        let total: usize = env_or("BENCH_APPEND_MIB", 128) << 20;
        let (mut v, mut cpu) = (Vec::new(), Vec::new());
        for r in 0..runs {
            let dir = fresh("append");
            let (rate, ms) = rt.block_on(append_rate(&dir, total));
            eprintln!("append run {r}: {rate:.0} MiB/s, {ms:.2} CPU ms per MiB");
            v.push(rate);
            cpu.push(ms);
            fs::remove_dir_all(&dir).ok();
        }
        let m = median(v.clone());
        rows.push(Row {
            what: "append: CPU time per MiB (all threads)".into(),
            runs: cpu,
            unit: "ms/MiB",
            target: "(report)".into(),
            ok: None,
        });
        rows.push(Row {
            what: "append 4 KiB chunks, 1 follower".into(),
            runs: v,
            unit: "MiB/s",
            target: ">= 200 MiB/s".into(),
            ok: Some(m >= 200.0),
        });
    }

    if want("since") {
        let appends: usize = env_or("BENCH_SINCE_APPENDS", 1_000_000);
        let dir = fresh("since");
        let (mut first, mut rss) = (Vec::new(), Vec::new());
        // One big log, several reads of it (the write is not what is measured).
        let rt_since = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        for (r, (f, all, grown, mib)) in rt_since.block_on(since_read(&dir, appends)).into_iter().enumerate() {
            eprintln!("since read {r}: first block {f:.2} ms, all {all:.0} ms ({mib:.0} MiB), RSS +{grown:.1} MiB");
            first.push(f);
            rss.push(grown);
        }
        fs::remove_dir_all(&dir).ok();
        let (mf, mr) = (median(first.clone()), median(rss.clone()));
        rows.push(Row {
            what: format!("?since= on a {appends}-append log: first block"),
            runs: first,
            unit: "ms",
            target: "< 50 ms".into(),
            ok: Some(mf < 50.0),
        });
        rows.push(Row {
            what: "  RSS added while serving it".into(),
            runs: rss,
            unit: "MiB",
            target: "< 8 MiB".into(),
            ok: Some(mr < 8.0),
        });
    }

    if want("fanout") {
        let subs: usize = env_or("BENCH_FANOUT_SUBS", 1000);
        let chunks: usize = env_or("BENCH_FANOUT_CHUNKS", 100_000);
        let mut v = Vec::new();
        for r in 0..runs {
            let dir = fresh("fanout");
            let (rate, events) = rt.block_on(fanout_rate(&dir, subs, chunks));
            eprintln!(
                "fan-out run {r}: {:.0} chunk deliveries/s ({events:.0} events per subscriber for {chunks} chunks)",
                rate
            );
            v.push(rate);
            fs::remove_dir_all(&dir).ok();
        }
        rows.push(Row {
            what: format!("fan-out: {subs} subscribers x {chunks} chunks"),
            runs: v,
            unit: "deliveries/s",
            target: "(report)".into(),
            ok: None,
        });
    }

    println!();
    println!(
        "{:<52} {:>14} {:<13} {:<16} {:<5} runs",
        "scenario", "median", "unit", "target", "ok"
    );
    for r in &rows {
        let ok = match r.ok {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let m = median(r.runs.clone());
        let m = if m.abs() < 10.0 {
            format!("{m:.2}")
        } else {
            format!("{m:.1}")
        };
        println!(
            "{:<52} {:>14} {:<13} {:<16} {:<5} {}",
            r.what,
            m,
            r.unit,
            r.target,
            ok,
            fmt_runs(&r.runs)
        );
    }
    drop(base);
}
