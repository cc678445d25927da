//! Fixtures of the client tests: the real `prochub` binary serving a temp
//! folder (so a test can stop and restart it on the same address), and a
//! TCP proxy whose connections a test can cut.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::AbortHandle;

/// Upper bound of every wait in the client tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// The prochub binary with a clean environment (no PROCHUB_* of the
/// developer's shell leaks into a test).
pub fn prochub() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prochub"));
    for var in [
        "PROCHUB_URL",
        "PROCHUB_TOKEN",
        "PROCHUB_DATA",
        "PROCHUB_ADDR",
        "PROCHUB_ALLOW_EXEC",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PROCHUB_LOG", "warn").env("NO_COLOR", "1").kill_on_drop(true);
    cmd
}

/// A `prochub serve` child process.
pub struct ServerProc {
    child: Child,
    /// Kept open so the server never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
    pub addr: SocketAddr,
    pub url: String,
    pub data: PathBuf,
}

impl ServerProc {
    /// Serves `data` on a free port with `--allow-exec`.
    pub async fn start(data: &Path) -> Self {
        Self::start_with(data, "127.0.0.1:0", &["--allow-exec"]).await
    }

    /// Serves `data` on `addr` with extra flags; returns once it listens.
    pub async fn start_with(data: &Path, addr: &str, extra: &[&str]) -> Self {
        Self::start_env(data, addr, extra, &[]).await
    }

    /// The same with extra environment variables for the server.
    pub async fn start_env(data: &Path, addr: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = prochub();
        cmd.envs(env.iter().copied());
        cmd.args(["serve", "--addr", addr, "--data"])
            .arg(data)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("PROCHUB_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().expect("spawn prochub serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        tokio::time::timeout(WAIT, stdout.read_line(&mut line))
            .await
            .expect("the server announces its address in time")
            .expect("read the server's stdout");
        let url = line
            .trim()
            .strip_prefix("prochub listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let addr = url.trim_start_matches("http://").parse().expect("a socket address");
        ServerProc {
            child,
            _stdout: stdout,
            addr,
            url,
            data: data.to_owned(),
        }
    }

    /// SIGTERM, then waits for a graceful exit; returns its exit code.
    pub async fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().expect("still running") as libc::pid_t;
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the server stops in time")
            .expect("wait for the server");
        status.code()
    }

    /// SIGKILL: a crash, nothing graceful.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("kill the server");
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

/// A TCP proxy in front of a server; `cut` drops every open connection
/// (the client sees its stream break) while new ones keep working.
pub struct Proxy {
    pub addr: SocketAddr,
    /// Tasks of open connections. std Mutex: pushed by the accept task,
    /// drained by `cut`; held for a push or a drain only.
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let list = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                list.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy { addr, conns, accept }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every connection open right now.
    pub fn cut(&self) -> usize {
        let conns: Vec<AbortHandle> = self.conns.lock().unwrap().drain(..).collect();
        let n = conns.iter().filter(|c| !c.is_finished()).count();
        conns.iter().for_each(AbortHandle::abort);
        n
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A port nothing listens on, reserved for as long as this lives: a
/// socket is bound to it but never listens, so connecting is refused and
/// no other test's server can take the port meanwhile (a port bound and
/// released at once could be picked by the next `bind(0)`, and a client
/// meant to be offline would reach somebody's server).
pub struct DeadPort {
    fd: std::os::fd::OwnedFd,
    pub port: u16,
}

impl DeadPort {
    pub fn new() -> Self {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: plain socket(2); the descriptor is owned from here on.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_in of `len` bytes for both calls.
        unsafe {
            let p = &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr;
            assert_eq!(
                libc::bind(fd.as_raw_fd(), p, len),
                0,
                "bind: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(libc::getsockname(fd.as_raw_fd(), p, &mut len), 0, "getsockname");
        }
        DeadPort {
            fd,
            port: u16::from_be(addr.sin_port),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// What a [`Gate`] does with the request it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Forward it and let the server answer, but never pass the answer
    /// on: the server acknowledged a request its client never hears of.
    SwallowAnswer,
    /// Keep it until [`Gate::release`], then forward it.
    UntilReleased,
}

/// An HTTP proxy in front of a server that passes every request through
/// except the `hold_at`-th (counting from 1), which it holds as [`Hold`]
/// says; [`Gate::held`] resolves once it does. A test can thus stop a
/// client at an exact request, without timing or counting on its side.
pub struct Gate {
    pub addr: SocketAddr,
    state: Arc<GateState>,
    accept: AbortHandle,
}

struct GateState {
    target: SocketAddr,
    hold_at: usize,
    hold: Hold,
    /// Requests received so far (the held one included).
    received: std::sync::atomic::AtomicUsize,
    /// Permit stored by the handler once it holds its request.
    held: tokio::sync::Notify,
    released: tokio::sync::Notify,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    /// Connection tasks, aborted when the gate drops. std Mutex: pushed
    /// by the accept task, drained by `drop`.
    conns: Mutex<Vec<AbortHandle>>,
}

impl Gate {
    pub async fn start(target: SocketAddr, hold_at: usize, hold: Hold) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the gate");
        let addr = listener.local_addr().expect("gate address");
        let state = Arc::new(GateState {
            target,
            hold_at,
            hold,
            received: Default::default(),
            held: Default::default(),
            released: Default::default(),
            client: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
            conns: Mutex::default(),
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let st2 = st.clone();
                let service = hyper::service::service_fn(move |req| st2.clone().handle(req));
                let task = tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
                st.conns.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Gate { addr, state, accept }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn received(&self) -> usize {
        self.state.received.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once the `hold_at`-th request is held (for
    /// `SwallowAnswer`: once the server has answered it).
    pub async fn held(&self) {
        tokio::time::timeout(WAIT, self.state.held.notified())
            .await
            .expect("the gate holds a request in time");
    }

    /// Lets an `UntilReleased` request go on to the server.
    pub fn release(&self) {
        self.state.released.notify_one();
    }
}

impl GateState {
    async fn handle(
        self: Arc<Self>,
        req: http::Request<hyper::body::Incoming>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        use http_body_util::BodyExt;
        let n = self.received.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let (mut parts, body) = req.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = format!("http://{}{path}", self.target).parse().expect("a valid URI");
        let forward = http::Request::from_parts(parts, http_body_util::Full::new(body));
        if n == self.hold_at && self.hold == Hold::UntilReleased {
            self.held.notify_one();
            self.released.notified().await;
        }
        let resp = self.client.request(forward).await?;
        if n == self.hold_at && self.hold == Hold::SwallowAnswer {
            let _ = resp.into_body().collect().await;
            self.held.notify_one();
            return std::future::pending().await;
        }
        Ok(resp)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.conns.lock().unwrap().drain(..).for_each(|c| c.abort());
    }
}
