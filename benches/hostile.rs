//! Hostile clients against the real server, run with `cargo bench --bench
//! hostile` (issue 8's goal: with 20,000 hostile connections of any one
//! kind, server RSS stays under 1 GiB and a well-behaved client is still
//! served within 1 s).
//!
//! Each scenario starts `prochub serve` on a temporary data folder, opens
//! `PROCHUB_BENCH_CONNS` (default 20,000) hostile connections of one kind
//! over 127.0.0.1, waits for the server to settle, then reports the
//! server's RSS and the latency of a good client (5 `GET /healthz` and one
//! create, each on a fresh connection):
//! * `idle`: connect, send nothing;
//! * `slow-head`: a head cut off after 1 KiB, then a byte every 2 s;
//! * `big-head`: a head cut off after 60 KB (under the 64 KiB limit);
//! * `slow-body`: a POST declaring 1 MiB - 1 that sends all but the last
//!   byte (from one shared buffer: the client holds nothing per socket);
//! * `stalled-follower`: an SSE follower with a small receive buffer that
//!   never reads, while 32 MiB of output is appended (`--write-stall 5s`:
//!   what is left connected after the stall limit is reported too);
//! * `websocket`: upgraded sockets that never read.
//!
//! 20,000 connections need about 40,000 descriptors on this side and the
//! server's: the bench raises its soft `RLIMIT_NOFILE` to the hard limit,
//! and says so if that is too low (raise it with `ulimit -Hn`). Scale down
//! with `PROCHUB_BENCH_CONNS=2000`; `PROCHUB_BENCH_ONLY=idle,slow-body`
//! runs some scenarios only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod support;

/// The goal on RSS.
const RSS_GOAL_KIB: u64 = 1024 * 1024;
/// The goal on a good client's latency.
const LATENCY_GOAL: Duration = Duration::from_secs(1);
/// How long hostile connections sit before the figures are taken.
const SETTLE: Duration = Duration::from_secs(3);
/// Connections opened at once while setting up.
const OPEN_AT_ONCE: usize = 256;

static BODY: [u8; 1024 * 1024] = [b' '; 1024 * 1024];

fn main() {
    raise_nofile();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run_all());
}

fn conns() -> usize {
    std::env::var("PROCHUB_BENCH_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            let need = (conns() as u64) * 2 + 2048;
            if lim.rlim_max < need {
                eprintln!(
                    "warning: RLIMIT_NOFILE hard limit {} is below the ~{need} descriptors {} connections need here and in the server",
                    lim.rlim_max,
                    conns()
                );
            }
        }
    }
}

struct Server {
    child: tokio::process::Child,
    addr: SocketAddr,
    _data: tempfile::TempDir,
}

impl Server {
    async fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_prochub"));
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--quiet-access-log", "--data"])
            .arg(dir.path())
            .args(extra)
            .env("PROCHUB_LOG", "error");
        let (child, _lines, addr) = support::spawn_server(cmd).await;
        Server {
            child,
            addr,
            _data: dir,
        }
    }

    fn rss_kib(&self) -> u64 {
        support::rss_kib(&self.child)
    }

    fn fds(&self) -> usize {
        let pid = self.child.id().expect("running");
        std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
    }
}

/// One request on a fresh connection: status line and elapsed time.
async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (String, Duration) {
    let started = Instant::now();
    let attempt = async {
        let mut s = TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&out).lines().next().unwrap_or("").to_owned())
    };
    let status = match tokio::time::timeout(Duration::from_secs(30), attempt).await {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "no answer in 30 s".into(),
    };
    (status, started.elapsed())
}

/// A good client's worst latency, and whether every answer was a success.
async fn good_client(addr: SocketAddr) -> (Duration, bool) {
    let mut worst = Duration::ZERO;
    let mut ok = true;
    for _ in 0..5 {
        let (status, took) = request(addr, "GET", "/healthz", "").await;
        ok &= status.contains(" 200 ");
        worst = worst.max(took);
    }
    let (status, took) = request(addr, "POST", "/api/processes", r#"{"name":"good"}"#).await;
    ok &= status.contains(" 201 ");
    (worst.max(took), ok)
}

/// A process to follow, created before the hostile crowd arrives.
async fn process(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let body = r#"{"name":"loud"}"#;
    let head = format!(
        "POST /api/processes HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let at = out.find("\"id\":\"").expect("an id") + 6;
    out[at..at + out[at..].find('"').expect("id end")].to_owned()
}

/// Opens one hostile connection of `kind`; it lives in its own task until
/// the returned handle is aborted.
async fn hostile(kind: &'static str, addr: SocketAddr, id: &str) -> Option<tokio::task::JoinHandle<()>> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    if matches!(kind, "stalled-follower" | "websocket") {
        socket.set_recv_buffer_size(4096).ok()?;
    }
    let mut s = socket.connect(addr).await.ok()?;
    let head = match kind {
        "idle" => String::new(),
        "slow-head" => format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\nx-pad: {}", "a".repeat(1024)),
        "big-head" => format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\nx-pad: {}", "a".repeat(60_000)),
        "slow-body" => format!(
            "POST /api/processes HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            BODY.len() - 1
        ),
        "stalled-follower" => format!("GET /api/processes/{id}/stream HTTP/1.1\r\nhost: {addr}\r\n\r\n"),
        "websocket" => format!(
            "GET /ws HTTP/1.1\r\nhost: {addr}\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
        _ => unreachable!("known scenario"),
    };
    Some(tokio::spawn(async move {
        if s.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        match kind {
            "slow-head" => loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if s.write_all(b"a").await.is_err() {
                    return;
                }
            },
            "slow-body" => {
                let _ = s.write_all(&BODY[..BODY.len() - 2]).await;
                std::future::pending::<()>().await;
            }
            _ => std::future::pending::<()>().await,
        }
    }))
}

async fn scenario(kind: &'static str) {
    let n = conns();
    let extra: &[&str] = match kind {
        "stalled-follower" => &["--write-stall", "5s"],
        _ => &[],
    };
    let server = Server::start(extra).await;
    let addr = server.addr;
    let id = process(addr).await;
    let base = server.rss_kib();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let mut failed = 0usize;
    for batch in (0..n).collect::<Vec<_>>().chunks(OPEN_AT_ONCE) {
        let opened = futures_util::future::join_all(batch.iter().map(|_| hostile(kind, addr, &id))).await;
        for t in opened {
            match t {
                Some(t) => tasks.push(t),
                None => failed += 1,
            }
        }
    }
    if kind == "stalled-follower" {
        // 32 MiB of output: far more than the followers' socket buffers.
        let chunk = format!(r#"{{"content":"{}"}}"#, "y".repeat(64 * 1024));
        for _ in 0..512 {
            request(addr, "POST", &format!("/api/processes/{id}/output"), &chunk).await;
        }
    }
    tokio::time::sleep(SETTLE).await;
    let peak = server.rss_kib();
    let fds = server.fds();
    let (latency, ok) = good_client(addr).await;
    let verdict = if peak < RSS_GOAL_KIB && latency < LATENCY_GOAL && ok {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "{kind:>16}: {n} connections ({failed} failed to open) in {:.1} s; server RSS {} MiB (base {} MiB, {:.1} KiB per connection), {fds} fds; good client worst {:.0} ms, all answered: {ok}; goal {verdict}",
        started.elapsed().as_secs_f64(),
        peak / 1024,
        base / 1024,
        (peak.saturating_sub(base)) as f64 / n.max(1) as f64,
        latency.as_secs_f64() * 1000.0,
    );
    if kind == "stalled-follower" {
        tokio::time::sleep(Duration::from_secs(6)).await;
        println!("{:>16}  after the 5 s stall limit: {} fds left open", "", server.fds());
    }
    for t in tasks {
        t.abort();
    }
}

async fn run_all() {
    let all = [
        "idle",
        "slow-head",
        "big-head",
        "slow-body",
        "stalled-follower",
        "websocket",
    ];
    let only = std::env::var("PROCHUB_BENCH_ONLY").unwrap_or_default();
    println!("hostile connections: {} per scenario, 127.0.0.1", conns());
    for kind in all {
        if only.is_empty() || only.split(',').any(|k| k == kind) {
            scenario(kind).await;
        }
    }
}
