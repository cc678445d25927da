//! A real server: in-process via `prochub::server::run` on 127.0.0.1:0 in a
//! TempDir, or the real binary (`serve --addr 127.0.0.1:0 --data DIR`) for
//! tests that need a separate process (signals, kill -9, RSS, fds).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use prochub::server::{ApiError, ServerConfig};
use prochub::store::{FileProcessStore, StoreConfig};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Bound on any single wait in the server tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// Heartbeat interval of the tests that run on tokio's paused clock
/// (`start_paused`): a real-looking interval that costs no real time, and
/// shorter than [`WAIT`], so a wait for the next heartbeat never gives up
/// first. Paused time works with the real server: virtual time moves only
/// when every task is idle, and loopback I/O or a blocking-pool task
/// (a durable write) keeps it from moving.
pub const PAUSED_HEARTBEAT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub store: Arc<FileProcessStore>,
    pub shutdown: CancellationToken,
    pub handle: Option<JoinHandle<Result<(), ApiError>>>,
    pub dir: TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(ServerConfig::default()).await
    }

    pub async fn start_with(config: ServerConfig) -> Self {
        Self::start_full(config, StoreConfig::default()).await
    }

    pub async fn start_full(config: ServerConfig, store_config: StoreConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = FileProcessStore::open(dir.path(), store_config)
            .await
            .expect("open store");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(prochub::server::run(listener, config, store.clone(), shutdown.clone()));
        TestServer {
            addr,
            base: format!("http://{addr}"),
            store,
            shutdown,
            handle: Some(handle),
            dir,
        }
    }

    /// Fires the shutdown token and waits (bounded) for `run` to return.
    pub async fn stop(&mut self) -> Result<(), ApiError> {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("stopped once");
        tokio::time::timeout(WAIT, handle)
            .await
            .expect("server stops within the bound")
            .expect("server task did not panic")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The real `prochub` binary serving a folder.
pub struct BinServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub base: String,
    pub data: PathBuf,
}

impl BinServer {
    /// Starts `prochub serve --addr 127.0.0.1:0 --data DATA EXTRA…` and reads
    /// the address from its first stdout line.
    pub async fn start(data: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_prochub"))
            .args(["serve", "--addr", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .env("PROCHUB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn prochub");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("first line within the bound")
            .expect("read stdout")
            .expect("a first line");
        let url = line
            .strip_prefix("prochub listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let addr: SocketAddr = url.parse().expect("an address");
        BinServer {
            child,
            addr,
            base: format!("http://{addr}"),
            data: data.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }

    /// Waits (bounded) for exit; returns the exit status.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("server exits within the bound")
            .expect("wait for server")
    }

    /// Resident set size of the server, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line");
        kb * 1024
    }

    /// Open file descriptors of the server.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read fd dir")
            .count()
    }
}
