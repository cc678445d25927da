//! What the bench harnesses share: starting a server process and reading
//! the address from its first stdout line, and reading its RSS.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// How long a server may take to print its listening line.
const START_WAIT: Duration = Duration::from_secs(20);

/// Spawns `cmd` (stdout piped, stdin closed, killed on drop) and waits for
/// its first line, `… listening on http://HOST:PORT`. Returns the child,
/// the rest of its stdout (drain it if the child may print more) and the
/// address.
pub async fn spawn_server(mut cmd: Command) -> (Child, Lines<BufReader<ChildStdout>>, SocketAddr) {
    cmd.stdout(Stdio::piped()).stdin(Stdio::null()).kill_on_drop(true);
    let mut child = cmd.spawn().expect("start server");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = tokio::time::timeout(START_WAIT, lines.next_line())
        .await
        .expect("server printed its address in time")
        .expect("read stdout")
        .expect("a first line");
    let addr = first
        .rsplit("http://")
        .next()
        .expect("an address")
        .trim()
        .parse()
        .expect("HOST:PORT");
    (child, lines, addr)
}

/// The resident set of a running child, in KiB (0 once it is gone).
pub fn rss_kib(child: &Child) -> u64 {
    let Some(pid) = child.id() else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
