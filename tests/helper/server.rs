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
        Self::builder(data).args(extra).start().await
    }

    /// The same command, to change before it starts: more flags, variables,
    /// where stderr goes, a descriptor limit.
    pub fn builder(data: &Path) -> BinServerBuilder {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_prochub"));
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--data"])
            .arg(data)
            .env("PROCHUB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        BinServerBuilder {
            cmd,
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

    /// SIGTERM, and asserts a clean exit (every acknowledged write on disk).
    pub async fn stop(mut self) {
        self.signal(libc::SIGTERM);
        assert!(self.wait().await.success(), "graceful exit");
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

/// `prochub serve` before it starts; [`BinServer::builder`] makes one, and
/// [`BinServerBuilder::start`] is the one place that spawns the binary as a
/// server and reads its address.
pub struct BinServerBuilder {
    cmd: Command,
    data: PathBuf,
}

impl BinServerBuilder {
    /// More flags, after `--data DATA`.
    pub fn args(mut self, extra: &[&str]) -> Self {
        self.cmd.args(extra);
        self
    }

    /// A variable for the server (`PROCHUB_LOG` replaces the default `warn`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Where the server's stderr goes (inherited by default).
    pub fn stderr(mut self, to: impl Into<Stdio>) -> Self {
        self.cmd.stderr(to);
        self
    }

    /// Starts the server under a descriptor limit of `soft`/`hard`
    /// (`RLIMIT_NOFILE`, set between fork and exec, as `prlimit` would).
    pub fn nofile(mut self, soft: u64, hard: u64) -> Self {
        // SAFETY: setrlimit(2) is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            self.cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self
    }

    /// Spawns the server and reads the address from its first stdout line.
    pub async fn start(mut self) -> BinServer {
        let mut child = self.cmd.spawn().expect("spawn prochub");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("first line within the bound")
            .expect("read stdout")
            .expect("a first line: the server started");
        let url = line
            .strip_prefix("prochub listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let addr: SocketAddr = url.parse().expect("an address");
        BinServer {
            child,
            addr,
            base: format!("http://{addr}"),
            data: self.data,
        }
    }
}
