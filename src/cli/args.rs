//! Command-line definitions (clap derive). `main.rs` parses these and hands
//! the [`Command`] to [`super::dispatch`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::model::{Status, StatusSet, StreamKind, Timestamp};

/// prochub: register long-running processes, push their output, follow it live.
#[derive(Debug, Parser)]
#[command(name = "prochub", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Register a process (its output is pushed by you, via the API).
    Submit(SubmitArgs),
    /// Ask the server to run a command, stream its output, exit with its code.
    Run(RunArgs),
    /// Follow a process's output: its last lines (or the stored history the
    /// flags select, like `docker logs -t --since 10m --tail 100 -f`), then live.
    Follow(FollowArgs),
    /// List processes.
    Ls(LsArgs),
    /// Show one process record as JSON.
    Show(IdArgs),
    /// Delete a process and its output.
    Rm(IdArgs),
    /// Remove finished processes by age and count.
    Prune(PruneArgs),
    /// Print lifecycle events as they happen (one JSON line each).
    Events(EventsArgs),
}

/// Parses a size: bytes, or with a `KiB`/`MiB`/`GiB` (or `K`/`M`/`G`) suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 1048576, 512KiB, 16MiB, 1GiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" | "k" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

/// Durations in flags read as they do in queries (one parser, in the model).
pub use crate::model::parse_duration;

/// `prochub serve` flags; each is also read from `PROCHUB_<FLAG>`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "PROCHUB_ADDR", default_value = "127.0.0.1:7070")]
    pub addr: String,
    /// Data folder [default: $XDG_DATA_HOME/prochub, i.e. ~/.local/share/prochub].
    #[arg(long, env = "PROCHUB_DATA")]
    pub data: Option<PathBuf>,
    /// Require `Authorization: Bearer TOKEN` (or `?access_token=`) on /api and /ws.
    #[arg(long, env = "PROCHUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Prune finished processes older than this (e.g. 7d).
    #[arg(long, env = "PROCHUB_MAX_AGE", value_parser = parse_duration)]
    pub max_age: Option<Duration>,
    /// Keep at most this many finished processes.
    #[arg(long, env = "PROCHUB_MAX_COUNT")]
    pub max_count: Option<usize>,
    /// Output stored per process (beyond it, output only streams live).
    #[arg(long, env = "PROCHUB_MAX_OUTPUT", value_parser = parse_size, default_value = "16MiB")]
    pub max_output: u64,
    /// Largest request body.
    #[arg(long, env = "PROCHUB_MAX_BODY", value_parser = parse_size, default_value = "1MiB")]
    pub max_body: u64,
    /// Interval of SSE heartbeats while a stream is idle.
    #[arg(long, env = "PROCHUB_HEARTBEAT", value_parser = parse_duration, default_value = "15s")]
    pub heartbeat: Duration,
    /// Allow clients to have the server run commands (SPEC section 6).
    #[arg(long, env = "PROCHUB_ALLOW_EXEC")]
    pub allow_exec: bool,
    /// Allowed CORS origin (`*` for any).
    #[arg(long, env = "PROCHUB_CORS_ORIGIN")]
    pub cors_origin: Option<String>,
    /// A `Host` name to answer besides the bound address and `localhost`
    /// (repeatable, or comma-separated in the variable; `*`: any host).
    #[arg(long = "allowed-host", env = "PROCHUB_ALLOWED_HOST", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Most connections (WebSockets included) served at once; more wait in the accept
    /// queue, and idle ones are closed to make room [default: the descriptor limit,
    /// raised to its hard limit at start, minus 1024 kept for the store].
    #[arg(long, env = "PROCHUB_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Time a request body has to arrive in full (408 past it).
    #[arg(long, env = "PROCHUB_BODY_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub body_timeout: Duration,
    /// Bytes of request bodies over 16 KiB read at once over all connections; past it
    /// new bodies wait up to 5 s, then get 503 `busy` with `Retry-After`.
    #[arg(long, env = "PROCHUB_BODY_BUDGET", value_parser = parse_size, default_value = "128MiB")]
    pub body_budget: u64,
    /// Close a connection whose writes make no progress this long [default: 4
    /// heartbeats, at least 30s].
    #[arg(long, env = "PROCHUB_WRITE_STALL", value_parser = parse_duration)]
    pub write_stall: Option<Duration>,
    /// Log lines on stderr: `text` for people, `json` (one object per line) for log shippers.
    #[arg(long, env = "PROCHUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// No access-log line per request (as `PROCHUB_LOG=info,prochub::access=off`).
    #[arg(long, env = "PROCHUB_QUIET_ACCESS_LOG")]
    pub quiet_access_log: bool,
}

/// How `prochub serve` writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where a client command finds the server.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server URL [default: PROCHUB_URL, else the address in DATA/server.json].
    #[arg(long, global = true, env = "PROCHUB_URL")]
    pub server: Option<String>,
    /// Bearer token of the server.
    #[arg(long, global = true, env = "PROCHUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data folder whose server.json names the server.
    #[arg(long, global = true, env = "PROCHUB_DATA")]
    pub data: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    pub name: String,
    #[arg(long, short)]
    pub workspace: Option<String>,
    /// Initial status.
    #[arg(long, default_value = "running")]
    pub status: Status,
    /// Client-chosen id.
    #[arg(long)]
    pub id: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Process name [default: the command line].
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, short)]
    pub workspace: Option<String>,
    /// Working directory of the command on the server [default: current directory].
    #[arg(long)]
    pub cwd: Option<String>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct FollowArgs {
    pub id: String,
    /// Replay the stored output from the start before following.
    #[arg(long, conflicts_with = "lines")]
    pub from_start: bool,
    /// Prefix each line with the time the server stored it (RFC 3339 UTC, ms) and a space.
    #[arg(long, short = 't')]
    pub timestamps: bool,
    /// Only output stored since then: a duration back from now (10m, 2h) or an RFC 3339 time.
    #[arg(long, value_parser = super::history::parse_when, value_name = "DURATION|TIME")]
    pub since: Option<Timestamp>,
    /// Only output stored until then (same forms); prints the history and exits.
    #[arg(long, value_parser = super::history::parse_when, value_name = "DURATION|TIME")]
    pub until: Option<Timestamp>,
    /// Start with the last N lines of stored output [default: 10; all with --since].
    #[arg(long, short = 'n', visible_alias = "tail", value_name = "N")]
    pub lines: Option<u64>,
    /// Only one pipe of a server-run command (output pushed without one is left out).
    #[arg(long, value_enum)]
    pub stream: Option<Pipe>,
    /// Print the stored output and exit instead of following it live.
    #[arg(long)]
    pub no_follow: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A pipe of a server-run command, as `--stream` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pipe {
    Stdout,
    Stderr,
}

impl From<Pipe> for StreamKind {
    fn from(p: Pipe) -> Self {
        match p {
            Pipe::Stdout => StreamKind::Stdout,
            Pipe::Stderr => StreamKind::Stderr,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct LsArgs {
    #[arg(long, short)]
    pub workspace: Option<String>,
    /// Only these statuses: one or a comma list (`running,queued`).
    #[arg(long, short)]
    pub status: Option<StatusSet>,
    /// At most this many rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct IdArgs {
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    #[arg(long, value_parser = parse_duration)]
    pub max_age: Option<Duration>,
    #[arg(long)]
    pub max_count: Option<usize>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    #[arg(long, short)]
    pub workspace: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations_use_humantime() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("soon").is_err());
    }
}
