//! Load generator for the HTTP server, run with `cargo bench --bench server`.
//!
//! It starts two servers as separate processes, one after the other, and
//! runs the same scenarios against both over loopback:
//! * `bare`: a minimal hyper + `tokio::sync::broadcast` SSE server with no
//!   persistence (this file re-executed with `PROCHUB_BENCH_BARE=1`): the
//!   ceiling of our stack;
//! * `prochub`: the real binary (`prochub serve`) on a temporary data folder.
//!
//! The ratio prochub/bare is the figure that matters. Scenarios (each bounded
//! in count and time; all traffic to 127.0.0.1):
//! 1. fan-out: 1 process, 1,000 followers, 1,000 chunks/s of 100 bytes, 2 s;
//! 2. many: 100 processes x 10 followers, 5,000 chunks/s in all, 2 s;
//! 3. idle: 10,000 followers held open: server RSS per follower;
//! 4. burst: 100 followers, 50,000 chunks pushed as fast as possible;
//! 5. REST (prochub only): creates/s and appends/s with 64 clients, next to
//!    the raw write+fsync+rename+folder-fsync rate of this disk.
//!
//! `PROCHUB_BENCH_QUICK=1` shrinks every scenario (a smoke run);
//! `PROCHUB_BENCH_LOG=info` runs prochub with its access log on (default
//! `warn`: off).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, broadcast};

mod support;

fn main() {
    if std::env::var_os("PROCHUB_BENCH_BARE").is_some() {
        tokio::runtime::Runtime::new().expect("runtime").block_on(bare::serve());
        return;
    }
    // `cargo bench` passes `--bench`; nothing to parse.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run_all());
}

/// `PROCHUB_BENCH_ONLY=bare|prochub` runs one side only.
fn kinds() -> Vec<Kind> {
    match std::env::var("PROCHUB_BENCH_ONLY").as_deref() {
        Ok("bare") => vec![Kind::Bare],
        Ok("prochub") => vec![Kind::Prochub],
        _ => vec![Kind::Bare, Kind::Prochub],
    }
}

fn quick() -> bool {
    std::env::var_os("PROCHUB_BENCH_QUICK").is_some()
}

/// Wall-clock nanoseconds, shared by the publisher and the followers (same
/// machine), to measure publish-to-receive latency.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64
}

/// A 100-byte chunk carrying its publish time.
fn payload() -> String {
    let mut s = format!("t={:020};", now_ns());
    while s.len() < 99 {
        s.push('x');
    }
    s.push('\n');
    s
}

// ---------------------------------------------------------------- servers

/// A server under test, running as a child process.
struct Server {
    kind: Kind,
    child: tokio::process::Child,
    addr: SocketAddr,
    _data: Option<tempfile::TempDir>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Bare,
    Prochub,
}

impl Server {
    async fn start(kind: Kind) -> Server {
        let (cmd, data) = match kind {
            Kind::Bare => {
                let mut c = tokio::process::Command::new(std::env::current_exe().expect("own path"));
                c.env("PROCHUB_BENCH_BARE", "1");
                (c, None)
            }
            Kind::Prochub => {
                let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
                let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_prochub"));
                c.args(["serve", "--addr", "127.0.0.1:0", "--heartbeat", "15s", "--data"])
                    .arg(dir.path())
                    // PROCHUB_BENCH_LOG=info measures with the access log on.
                    .env(
                        "PROCHUB_LOG",
                        std::env::var("PROCHUB_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
                    );
                (c, Some(dir))
            }
        };
        let (child, mut lines, addr) = support::spawn_server(cmd).await;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server {
            kind,
            child,
            addr,
            _data: data,
        }
    }

    fn rss_kib(&self) -> u64 {
        support::rss_kib(&self.child)
    }

    /// Makes a topic (bare) or process (prochub); returns its id.
    async fn new_topic(&self, http: &mut Http, name: &str) -> String {
        match self.kind {
            Kind::Bare => name.to_owned(),
            Kind::Prochub => {
                let body = format!(r#"{{"name":"{name}"}}"#);
                let (status, resp) = http
                    .request("POST", "/api/processes", "application/json", body.as_bytes())
                    .await;
                assert_eq!(status, 201, "create: {}", String::from_utf8_lossy(&resp));
                let v: serde_json::Value = serde_json::from_slice(&resp).expect("JSON record");
                v["id"].as_str().expect("id").to_owned()
            }
        }
    }

    fn stream_path(&self, id: &str) -> String {
        match self.kind {
            Kind::Bare => format!("/stream/{id}"),
            Kind::Prochub => format!("/api/processes/{id}/stream"),
        }
    }

    fn publish_path(&self, id: &str) -> String {
        match self.kind {
            Kind::Bare => format!("/publish/{id}"),
            Kind::Prochub => format!("/api/processes/{id}/output"),
        }
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM our own child, by its pid, then wait for it.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

// ------------------------------------------------------------- HTTP client

/// A minimal keep-alive HTTP/1.1 client for publishing (responses must
/// carry Content-Length, which both servers' JSON answers do).
struct Http {
    stream: BufReader<TcpStream>,
}

impl Http {
    async fn connect(addr: SocketAddr) -> Http {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        Http {
            stream: BufReader::new(s),
        }
    }

    async fn request(&mut self, method: &str, path: &str, ctype: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        self.stream.get_mut().write_all(&req).await.expect("send request");
        let mut line = String::new();
        self.stream.read_line(&mut line).await.expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let mut len = 0;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().expect("length");
            }
        }
        let mut resp = vec![0; len];
        self.stream.read_exact(&mut resp).await.expect("body");
        (status, resp)
    }

    async fn publish(&mut self, path: &str, content: &str) {
        let (status, body) = self.request("POST", path, "text/plain", content.as_bytes()).await;
        assert!(status == 202, "publish: {status} {}", String::from_utf8_lossy(&body));
    }
}

// ---------------------------------------------------------------- follower

/// What one follower saw.
#[derive(Default)]
struct Seen {
    chunks: u64,
    latencies_us: Vec<u32>,
}

/// Opens an SSE stream; returns once the response head has arrived (the
/// server has subscribed), with a task that counts chunk events until
/// `expect` arrived or `deadline` passed.
async fn follow(addr: SocketAddr, path: String, expect: u64, deadline: Instant) -> tokio::task::JoinHandle<Seen> {
    // Opening hundreds of connections at once can overflow a listen
    // backlog (a reset): retry a few times before giving up.
    let mut tries = 0;
    let (mut s, buf) = loop {
        match open_stream(addr, &path).await {
            Ok(opened) => break opened,
            Err(_) if tries < 10 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20 * tries)).await;
            }
            Err(e) => panic!("cannot open {path} after {tries} tries: {e}"),
        }
    };
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut dechunk = Dechunk::default();
        let mut sse = Vec::new();
        let mut tmp = vec![0u8; 64 * 1024];
        let mut pending = buf;
        loop {
            dechunk.feed(&pending, &mut sse);
            pending.clear();
            count_events(&mut sse, &mut seen);
            if seen.chunks >= expect {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, s.read(&mut tmp)).await {
                Ok(Ok(n)) if n > 0 => pending.extend_from_slice(&tmp[..n]),
                _ => break,
            }
        }
        seen
    })
}

/// Connects, sends the GET and reads the response head; returns the socket
/// and whatever body bytes came with the head.
async fn open_stream(addr: SocketAddr, path: &str) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before the head",
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            assert!(buf.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf));
            buf.drain(..i + 4);
            return Ok((s, buf));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decodes `Transfer-Encoding: chunked`.
#[derive(Default)]
struct Dechunk {
    /// Bytes of the current HTTP chunk still to copy, plus its CRLF.
    remaining: usize,
    head: Vec<u8>,
}

impl Dechunk {
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(input.len());
                // The last two bytes of a chunk are its CRLF.
                let data = n.min(self.remaining.saturating_sub(2));
                out.extend_from_slice(&input[..data]);
                self.remaining -= n;
                input = &input[n..];
                continue;
            }
            match input.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.head.extend_from_slice(&input[..i]);
                    input = &input[i + 1..];
                    let line = String::from_utf8_lossy(&self.head).trim().to_owned();
                    self.head.clear();
                    if line.is_empty() {
                        continue;
                    }
                    let size = usize::from_str_radix(line.split(';').next().unwrap_or("0"), 16).unwrap_or(0);
                    self.remaining = size + 2;
                }
                None => {
                    self.head.extend_from_slice(input);
                    input = &[];
                }
            }
        }
    }
}

/// Counts complete `chunk` events in `sse` (removing them) and records
/// each one's latency from the `t=` stamp in its content.
fn count_events(sse: &mut Vec<u8>, seen: &mut Seen) {
    let now = now_ns();
    let mut consumed = 0;
    while let Some(end) = find(&sse[consumed..], b"\n\n") {
        let ev = &sse[consumed..consumed + end];
        if find(ev, b"event: chunk").is_some() {
            seen.chunks += 1;
            if let Some(t) = find(ev, b"t=") {
                let digits = &ev[t + 2..(t + 22).min(ev.len())];
                if let Ok(sent) = std::str::from_utf8(digits).unwrap_or("").parse::<u64>() {
                    seen.latencies_us.push((now.saturating_sub(sent) / 1000) as u32);
                }
            }
        }
        consumed += end + 2;
    }
    sse.drain(..consumed);
}

// --------------------------------------------------------------- scenarios

struct Outcome {
    delivered_per_s: f64,
    lost: u64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn collect(followers: Vec<tokio::task::JoinHandle<Seen>>, expect_each: u64, started: Instant) -> Outcome {
    let mut lost = 0;
    let mut delivered = 0;
    let mut lat = Vec::new();
    for f in followers {
        let seen = f.await.expect("follower task");
        delivered += seen.chunks;
        lost += expect_each.saturating_sub(seen.chunks);
        lat.extend(seen.latencies_us);
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    Outcome {
        delivered_per_s: delivered as f64 / elapsed,
        lost,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
    }
}

/// Publishes `per_topic` chunks to each of `topics`, spread over
/// `publishers` connections, at `rate` chunks/s in all (None: flat out).
async fn publish(server: &Server, topics: &[String], per_topic: u64, publishers: usize, rate: Option<u64>) {
    let total = per_topic * topics.len() as u64;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..publishers {
        let (addr, next) = (server.addr, next.clone());
        let paths: Vec<String> = topics.iter().map(|t| server.publish_path(t)).collect();
        tasks.push(tokio::spawn(async move {
            let mut http = Http::connect(addr).await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                http.publish(&paths[(i % paths.len() as u64) as usize], &payload())
                    .await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
}

async fn open_followers(
    server: &Server,
    topics: &[String],
    per_topic: usize,
    expect: u64,
    limit: Duration,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    let deadline = Instant::now() + limit;
    let mut handles = Vec::new();
    for t in topics {
        for _ in 0..per_topic {
            handles.push(follow(server.addr, server.stream_path(t), expect, deadline).await);
        }
    }
    handles
}

async fn topics(server: &Server, n: usize) -> Vec<String> {
    let mut http = Http::connect(server.addr).await;
    let mut v = Vec::new();
    for i in 0..n {
        v.push(server.new_topic(&mut http, &format!("bench-{i}")).await);
    }
    v
}

async fn fan_out(server: &Server) -> Outcome {
    let (followers, rate, secs) = if quick() { (100, 1000, 1) } else { (1000, 1000, 2) };
    let chunks = rate * secs;
    let t = topics(server, 1).await;
    let f = open_followers(server, &t, followers, chunks, Duration::from_secs(secs + 30)).await;
    let started = Instant::now();
    publish(server, &t, chunks, 1, Some(rate)).await;
    collect(f, chunks, started).await
}

async fn many(server: &Server) -> Outcome {
    let (procs, per, rate, secs) = if quick() { (10, 10, 1000, 1) } else { (100, 10, 5000, 2) };
    let per_topic = rate * secs / procs as u64;
    let t = topics(server, procs).await;
    let f = open_followers(server, &t, per, per_topic, Duration::from_secs(secs + 30)).await;
    let started = Instant::now();
    publish(server, &t, per_topic, 8, Some(rate)).await;
    collect(f, per_topic, started).await
}

async fn burst(server: &Server) -> Outcome {
    let (followers, chunks) = if quick() { (20, 5_000) } else { (100, 50_000) };
    let t = topics(server, 1).await;
    let f = open_followers(server, &t, followers, chunks, Duration::from_secs(120)).await;
    let started = Instant::now();
    publish(server, &t, chunks, 4, None).await;
    collect(f, chunks, started).await
}

/// Server RSS per idle follower, in KiB.
async fn idle(server: &Server) -> f64 {
    let n = if quick() { 500 } else { 10_000 };
    let t = topics(server, 1).await;
    let before = server.rss_kib();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut conns = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let batch = futures_util::future::join_all(
            chunk
                .iter()
                .map(|_| follow(server.addr, server.stream_path(&t[0]), u64::MAX, deadline)),
        )
        .await;
        conns.extend(batch);
    }
    // Let the server settle (allocations of the last connections).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss_kib();
    for c in conns {
        c.abort();
    }
    (after.saturating_sub(before)) as f64 / n as f64
}

/// Raw rate of this disk: write + fsync + rename + folder fsync, ops/s.
fn raw_fsync_rate(dir: &std::path::Path, secs: f64) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    let d = std::fs::File::open(dir).expect("open dir");
    while start.elapsed().as_secs_f64() < secs {
        let tmp = dir.join(".raw.tmp");
        let mut f = std::fs::File::create(&tmp).expect("create");
        f.write_all(&[b'x'; 400]).expect("write");
        f.sync_all().expect("fsync");
        std::fs::rename(&tmp, dir.join("raw.json")).expect("rename");
        d.sync_all().expect("dir fsync");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// creates/s and appends/s with 64 concurrent clients.
async fn rest(server: &Server) -> (f64, f64) {
    let (clients, secs) = if quick() { (16, 1.0) } else { (64, 3.0) };
    let run = |create: bool, target: Option<String>| {
        let addr = server.addr;
        async move {
            let count = Arc::new(AtomicU64::new(0));
            let deadline = Instant::now() + Duration::from_secs_f64(secs);
            let mut tasks = Vec::new();
            for c in 0..clients {
                let (count, target) = (count.clone(), target.clone());
                tasks.push(tokio::spawn(async move {
                    let mut http = Http::connect(addr).await;
                    while Instant::now() < deadline {
                        if create {
                            let body = format!(r#"{{"name":"rest-{c}","status":"completed"}}"#);
                            let (st, _) = http
                                .request("POST", "/api/processes", "application/json", body.as_bytes())
                                .await;
                            assert_eq!(st, 201);
                        } else {
                            let path = format!("/api/processes/{}/output", target.as_deref().expect("target"));
                            http.publish(&path, &payload()).await;
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            let start = Instant::now();
            for t in tasks {
                t.await.expect("client");
            }
            count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
        }
    };
    let creates = run(true, None).await;
    let t = topics(server, 1).await;
    let appends = run(false, Some(t[0].clone())).await;
    (creates, appends)
}

// ------------------------------------------------------------------ driver

async fn run_all() {
    let runs = if quick() { 1 } else { 3 };
    let mut table: HashMap<(&str, Kind), Vec<f64>> = HashMap::new();
    let mut record = |name: &'static str, kind: Kind, v: f64| table.entry((name, kind)).or_default().push(v);
    for run in 0..runs {
        for kind in kinds() {
            eprintln!("run {}/{runs}: {kind:?}", run + 1);
            let server = Server::start(kind).await;
            let o = fan_out(&server).await;
            record("fan-out delivered/s", kind, o.delivered_per_s);
            record("fan-out lost", kind, o.lost as f64);
            record("fan-out p50 ms", kind, o.p50_ms);
            record("fan-out p99 ms", kind, o.p99_ms);
            let o = many(&server).await;
            record("many p50 ms", kind, o.p50_ms);
            record("many p99 ms", kind, o.p99_ms);
            record("many lost", kind, o.lost as f64);
            let o = burst(&server).await;
            record("burst delivered/s", kind, o.delivered_per_s);
            record("burst lost", kind, o.lost as f64);
            server.stop().await;
            // A fresh server for the RSS figure, so earlier scenarios' memory
            // does not blur it.
            let server = Server::start(kind).await;
            record("idle KiB/follower", kind, idle(&server).await);
            if kind == Kind::Prochub {
                let (c, a) = rest(&server).await;
                record("REST creates/s", kind, c);
                record("REST appends/s", kind, a);
                let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp");
                record("raw fsync ops/s", kind, raw_fsync_rate(dir.path(), 2.0));
            }
            server.stop().await;
        }
    }
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v[v.len() / 2]
    };
    let rows = [
        "fan-out delivered/s",
        "fan-out lost",
        "fan-out p50 ms",
        "fan-out p99 ms",
        "many p50 ms",
        "many p99 ms",
        "many lost",
        "burst delivered/s",
        "burst lost",
        "idle KiB/follower",
        "REST creates/s",
        "REST appends/s",
        "raw fsync ops/s",
    ];
    println!("\nmedians of {runs} run(s)\n");
    println!("| scenario | bare | prochub | prochub/bare |");
    println!("|---|---:|---:|---:|");
    for name in rows {
        let b = table.get(&(name, Kind::Bare)).map(median);
        let p = table.get(&(name, Kind::Prochub)).map(median);
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let ratio = match (b, p) {
            (Some(b), Some(p)) if b > 0.0 => format!("{:.2}", p / b),
            _ => "-".into(),
        };
        println!("| {name} | {} | {} | {ratio} |", fmt(b), fmt(p));
    }
    if let (Some(c), Some(r)) = (
        table.get(&("REST creates/s", Kind::Prochub)),
        table.get(&("raw fsync ops/s", Kind::Prochub)),
    ) {
        println!("\nREST creates / raw fsync rate: {:.2}", median(c) / median(r));
    }
}

// -------------------------------------------------------------- bare server

/// The baseline: hyper + tokio broadcast, no persistence, no validation.
/// Like prochub, it writes every event that is ready in one frame.
mod bare {
    use super::*;

    type Topics = Arc<Mutex<HashMap<String, broadcast::Sender<Bytes>>>>;

    pub async fn serve() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("bare listening on http://{}", listener.local_addr().expect("addr"));
        let _ = std::io::stdout().flush();
        let topics: Topics = Arc::default();
        let seq = Arc::new(AtomicU64::new(0));
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (topics, seq) = (topics.clone(), seq.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(req, topics.clone(), seq.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    }

    type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

    async fn handle(req: Request<Incoming>, topics: Topics, seq: Arc<AtomicU64>) -> Result<Response<Body>, Infallible> {
        let path = req.uri().path().to_owned();
        if let Some(topic) = path.strip_prefix("/publish/") {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let content = String::from_utf8_lossy(&body);
            let n = seq.fetch_add(body.len() as u64, Ordering::Relaxed) + body.len() as u64;
            let frame = format!(
                "id: {n}\nevent: chunk\ndata: {}\n\n",
                serde_json::json!({ "content": content })
            );
            if let Some(tx) = topics.lock().await.get(topic) {
                let _ = tx.send(Bytes::from(frame));
            }
            let out = Full::new(Bytes::from(format!(r#"{{"output_bytes":{n}}}"#)));
            return Ok(Response::builder().status(202).body(out.boxed()).expect("response"));
        }
        if let Some(topic) = path.strip_prefix("/stream/") {
            let rx = topics
                .lock()
                .await
                .entry(topic.to_owned())
                .or_insert_with(|| broadcast::channel(1024).0)
                .subscribe();
            let stream = futures_util::stream::unfold((rx, true), |(mut rx, first)| async move {
                if first {
                    return Some((Ok(Frame::data(Bytes::from_static(b"retry: 2000\n\n"))), (rx, false)));
                }
                let mut buf = Vec::new();
                match rx.recv().await {
                    Ok(b) => buf.extend_from_slice(&b),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
                while let Ok(b) = rx.try_recv() {
                    buf.extend_from_slice(&b);
                    if buf.len() > 256 * 1024 {
                        break;
                    }
                }
                Some((Ok(Frame::data(Bytes::from(buf))), (rx, false)))
            });
            let resp = Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(StreamBody::new(stream).boxed())
                .expect("response");
            return Ok(resp);
        }
        Ok(Response::builder()
            .status(404)
            .body(Full::new(Bytes::new()).boxed())
            .expect("response"))
    }
}
