//! The CLI's client commands: `submit`, `run`, `follow`, `ls`, `show`,
//! `rm`, `prune`, `events`. Each returns the process exit code; errors
//! travel up as `anyhow` to `main`, which prints them.

use std::io::Write;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::print::{self as output, StatusLine};
use crate::cli::{ClientArgs, Command, EventsArgs, FollowArgs, IdArgs, LsArgs, PruneArgs, RunArgs, SubmitArgs};
use crate::client::api::{Client, DEFAULT_URL, ListParams, OutputRange};
use crate::client::default_data_dir;
use crate::client::stream::{Event, FollowEvent, Follower};
use crate::model::{NewProcess, Status, StatusInfo, StreamKind};

/// Lines of earlier output `follow` shows before going live (like `tail -f`).
pub const FOLLOW_CONTEXT_LINES: usize = 10;
/// Bytes read back to find those lines.
const FOLLOW_CONTEXT_BYTES: u64 = 16 * 1024;
/// Exit code after Ctrl-C (128 + SIGINT), also used for a cancelled run.
const EXIT_INTERRUPTED: u8 = 130;
/// Exit code when whoever read stdout went away (128 + SIGPIPE, what a
/// shell reports for a writer killed by a closed pipe).
const EXIT_BROKEN_PIPE: u8 = 141;

/// Every command but `serve`.
pub async fn run(cmd: Command) -> anyhow::Result<u8> {
    match cmd {
        Command::Serve(_) => bail!("`serve` is not a client command"),
        Command::Submit(a) => submit(a).await,
        Command::Run(a) => run_command(a).await,
        Command::Follow(a) => follow(a).await,
        Command::Ls(a) => ls(a).await,
        Command::Show(a) => show(a).await,
        Command::Rm(a) => rm(a).await,
        Command::Prune(a) => prune(a).await,
        Command::Events(a) => events(a).await,
    }
}

/// `DIR/server.json` as the server writes it.
#[derive(Deserialize)]
struct ServerFile {
    addr: String,
}

/// Where the server is: `--server` (or `PROCHUB_URL`), else the address in
/// `DATA/server.json`, else the default address.
pub fn resolve_url(args: &ClientArgs) -> anyhow::Result<String> {
    if let Some(url) = &args.server {
        return Ok(url.clone());
    }
    let dir = args.data.clone().unwrap_or_else(default_data_dir);
    let file = dir.join("server.json");
    match std::fs::read(&file) {
        Ok(bytes) => {
            let s: ServerFile = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading the server address in {}", file.display()))?;
            Ok(s.addr)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DEFAULT_URL.to_owned()),
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    Ok(Client::new(&resolve_url(args)?, args.token.clone())?)
}

/// Writes to stdout, tolerating a closed pipe (`prochub ls | head`).
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

async fn submit(a: SubmitArgs) -> anyhow::Result<u8> {
    let client = connect(&a.client)?;
    let p = client
        .create_process(&NewProcess {
            id: a.id,
            workspace: a.workspace,
            name: a.name,
            status: Some(a.status),
            ..Default::default()
        })
        .await?;
    print(&format!("{}\n", p.id))?;
    Ok(0)
}

/// A command line as one readable string (for the default name).
fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run_command(a: RunArgs) -> anyhow::Result<u8> {
    let client = connect(&a.client)?;
    let cwd = match a.cwd {
        Some(c) => c,
        None => std::env::current_dir()
            .context("reading the current folder")?
            .display()
            .to_string(),
    };
    let name = a.name.unwrap_or_else(|| shell_join(&a.command));
    // Listen for Ctrl-C before the command exists on the server: one
    // pressed while the create is in flight must cancel the command, not
    // kill this process and leave the command running unwatched.
    let mut sigint = interrupts()?;
    let new = NewProcess {
        workspace: a.workspace,
        name,
        command: Some(a.command),
        cwd: Some(cwd),
        ..Default::default()
    };
    let create = client.create_process(&new);
    tokio::pin!(create);
    let mut interrupted = false;
    let p = loop {
        tokio::select! {
            p = &mut create => break p?,
            _ = sigint.recv() => interrupted = true,
        }
    };
    tracing::debug!(id = %p.id, "command submitted");
    if interrupted {
        eprintln!("prochub: cancelling {}", p.id);
        match client.cancel(&p.id).await {
            // 409: it already ended by itself.
            Err(e) if e.status() != Some(409) => return Err(e.into()),
            _ => return Ok(EXIT_INTERRUPTED),
        }
    }
    // From byte 0: the command may have printed before we connect.
    let follower = client.follow(&p.id, Some(0));
    let outcome = stream_output(&client, follower, true, sigint).await?;
    if outcome.reader_gone {
        return Ok(EXIT_BROKEN_PIPE);
    }
    if outcome.interrupted {
        return Ok(EXIT_INTERRUPTED);
    }
    Ok(exit_code_of(outcome.status.as_ref()))
}

/// Ctrl-C (SIGINT) as a stream. Once this is called, SIGINT no longer
/// ends the process: the caller decides.
fn interrupts() -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).context("listening for Ctrl-C")
}

/// The exit code `run` ends with: the command's own when it has one, 128 +
/// the signal when a signal killed it (as a shell reports it).
fn exit_code_of(status: Option<&StatusInfo>) -> u8 {
    match status {
        Some(StatusInfo {
            exit_code: Some(code), ..
        }) => u8::try_from(*code).unwrap_or(1),
        Some(s) if s.status == Status::Completed => 0,
        Some(s) if s.status == Status::Cancelled => EXIT_INTERRUPTED,
        Some(StatusInfo {
            exit_signal: Some(name),
            ..
        }) => match name.parse::<nix::sys::signal::Signal>() {
            Ok(sig) => u8::try_from(128 + sig as i32).unwrap_or(1),
            Err(_) => 1,
        },
        _ => 1,
    }
}

/// How a followed stream ended.
struct Outcome {
    /// The final status, if it arrived.
    status: Option<StatusInfo>,
    /// The user pressed Ctrl-C (twice for `run`) and we stopped waiting.
    interrupted: bool,
    /// stdout was a pipe whose reader is gone (`prochub follow ID | head`):
    /// we stopped, as a local writer killed by SIGPIPE would.
    reader_gone: bool,
}

/// Prints a follower's output (stderr chunks to stderr) until `done`.
/// With `cancel_on_interrupt`, the first Ctrl-C cancels the remote process
/// and keeps following to its end; a second one leaves at once. Without
/// it, Ctrl-C just stops following.
async fn stream_output(
    client: &Client,
    mut follower: Follower,
    cancel_on_interrupt: bool,
    // One SIGINT listener for the whole stream, so that no Ctrl-C falls
    // between two loop iterations.
    mut sigint: tokio::signal::unix::Signal,
) -> anyhow::Result<Outcome> {
    let tty = output::stdout_is_terminal();
    let id = follower.id().to_owned();
    let mut line = StatusLine::new(tty, format!("{id} running"));
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut cancelling = false;
    let mut status = None;
    loop {
        tokio::select! {
            ev = follower.next() => {
                let Some(ev) = ev else { break };
                match ev? {
                    FollowEvent::Chunk { content, stream, .. } => {
                        line.clear();
                        if !write_chunk(&content, stream)? {
                            if cancel_on_interrupt {
                                // `run`: like a local pipeline, the
                                // command does not outlive its reader.
                                match client.cancel(&id).await {
                                    Err(e) if e.status() != Some(409) => eprintln!("prochub: cancel failed: {e}"),
                                    _ => {}
                                }
                            }
                            return Ok(Outcome { status, interrupted: false, reader_gone: true });
                        }
                        line.wrote(&content);
                        line.draw();
                    }
                    FollowEvent::Lagged { from, to } => {
                        line.clear();
                        eprintln!("prochub: {} bytes of output were dropped by the server (bytes {from}..{to})", to - from);
                    }
                    FollowEvent::Status(s) => {
                        line.clear();
                        if let Some(summary) = output::end_summary(&s, tty, output::stderr_is_terminal()) {
                            eprintln!("{summary}");
                        }
                        status = Some(s);
                    }
                    FollowEvent::Done => break,
                }
            }
            _ = ticker.tick() => line.draw(),
            _ = sigint.recv() => {
                line.clear();
                if !cancel_on_interrupt || cancelling {
                    return Ok(Outcome { status, interrupted: true, reader_gone: false });
                }
                cancelling = true;
                eprintln!("prochub: cancelling {id} (Ctrl-C again to stop waiting)");
                line.set_label(format!("{id} cancelling"));
                let client = client.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    if let Err(e) = client.cancel(&id).await {
                        eprintln!("prochub: cancel failed: {e}");
                    }
                });
            }
        }
    }
    line.clear();
    Ok(Outcome {
        status,
        interrupted: false,
        reader_gone: false,
    })
}

/// Writes a chunk to stdout, or stderr for stderr chunks. False when
/// stdout's reader is gone (a closed stderr is ignored).
fn write_chunk(content: &str, stream: Option<StreamKind>) -> anyhow::Result<bool> {
    let result = if stream == Some(StreamKind::Stderr) {
        let mut err = std::io::stderr().lock();
        err.write_all(content.as_bytes()).and_then(|_| err.flush())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(content.as_bytes()).and_then(|_| out.flush())
    };
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(stream == Some(StreamKind::Stderr)),
        other => Ok(other.map(|()| true)?),
    }
}

/// Where `follow` starts without `--from-start`: at the beginning of the
/// last [`FOLLOW_CONTEXT_LINES`] lines of stored output.
async fn context_start(client: &Client, id: &str) -> anyhow::Result<u64> {
    let p = client.get_process(id).await?;
    let end = p.output_bytes;
    let start = end.saturating_sub(FOLLOW_CONTEXT_BYTES);
    if end == 0 {
        return Ok(0);
    }
    let bytes = client.read_output_bytes(id, OutputRange::From(start)).await?;
    let known = &bytes[..bytes.len().min((end - start) as usize)];
    // Skip a trailing newline so "last N lines" counts complete lines.
    let body = known.strip_suffix(b"\n").unwrap_or(known);
    let newlines: Vec<usize> = body
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
        .collect();
    let offset = if newlines.len() >= FOLLOW_CONTEXT_LINES {
        newlines[newlines.len() - FOLLOW_CONTEXT_LINES] + 1
    } else if start == 0 {
        0
    } else {
        // The window holds fewer lines: start after its first newline
        // (a whole line), or at the end if it has none.
        newlines.first().map_or(known.len(), |n| n + 1)
    };
    Ok(start + offset as u64)
}

async fn follow(a: FollowArgs) -> anyhow::Result<u8> {
    let client = connect(&a.client)?;
    let sigint = interrupts()?;
    let from = if a.from_start {
        0
    } else {
        context_start(&client, &a.id).await?
    };
    let outcome = stream_output(&client, client.follow(&a.id, Some(from)), false, sigint).await?;
    Ok(if outcome.reader_gone {
        EXIT_BROKEN_PIPE
    } else if outcome.interrupted {
        EXIT_INTERRUPTED
    } else {
        0
    })
}

async fn ls(a: LsArgs) -> anyhow::Result<u8> {
    let client = connect(&a.client)?;
    let params = ListParams {
        workspace: a.workspace,
        status: a.status,
        limit: None,
        cursor: None,
    };
    let processes = client.list_all(&params, a.limit).await?;
    if a.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&processes)?))?;
    } else {
        let color = output::stdout_is_terminal();
        print(&output::process_table(&processes, crate::model::now(), color))?;
    }
    Ok(0)
}

async fn show(a: IdArgs) -> anyhow::Result<u8> {
    let client = connect(&a.client)?;
    let p = client.get_process(&a.id).await?;
    print(&format!("{}\n", serde_json::to_string_pretty(&p)?))?;
    Ok(0)
}

async fn rm(a: IdArgs) -> anyhow::Result<u8> {
    let client = connect(&a.client)?;
    client.delete_process(&a.id).await?;
    print(&format!("removed {}\n", a.id))?;
    Ok(0)
}

async fn prune(a: PruneArgs) -> anyhow::Result<u8> {
    if a.max_age.is_none() && a.max_count.is_none() {
        bail!("give --max-age and/or --max-count (e.g. `prochub prune --max-age 7d`)");
    }
    let client = connect(&a.client)?;
    let removed = client.prune(a.max_age, a.max_count).await?;
    print(&format!("removed {removed}\n"))?;
    Ok(0)
}

async fn events(a: EventsArgs) -> anyhow::Result<u8> {
    let client = connect(&a.client)?;
    let mut stream = client.events(a.workspace.as_deref());
    // Connect before waiting: fails fast with the usual message when
    // nothing listens, and events from now on are not missed.
    stream.connect().await?;
    let mut sigint = interrupts()?;
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { return Ok(0) };
                let line = match ev? {
                    Event::Lifecycle(le) => serde_json::to_string(&le)?,
                    Event::Reset => r#"{"type":"reset"}"#.to_owned(),
                };
                if !write_chunk(&format!("{line}\n"), None)? {
                    return Ok(EXIT_BROKEN_PIPE); // `prochub events | head -1`
                }
            }
            _ = sigint.recv() => return Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_quoted_for_display() {
        let argv = ["sh", "-c", "echo 'hi'; exit 3"].map(String::from);
        assert_eq!(shell_join(&argv), r#"sh -c 'echo '\''hi'\''; exit 3'"#);
        assert_eq!(shell_join(&["cargo".into(), "test".into()]), "cargo test");
    }

    #[test]
    fn exit_codes_follow_the_command() {
        let info = |status, exit_code| StatusInfo {
            status,
            duration: None,
            duration_ms: None,
            result: serde_json::Value::Null,
            error: None,
            exit_code,
            exit_signal: None,
        };
        assert_eq!(exit_code_of(Some(&info(Status::Failed, Some(3)))), 3);
        assert_eq!(exit_code_of(Some(&info(Status::Completed, None))), 0);
        assert_eq!(exit_code_of(Some(&info(Status::Failed, None))), 1);
        assert_eq!(exit_code_of(Some(&info(Status::Cancelled, None))), 130);
        assert_eq!(exit_code_of(None), 1);
    }

    #[test]
    fn a_command_killed_by_a_signal_exits_128_plus_the_signal() {
        let killed = StatusInfo {
            status: Status::Failed,
            duration: None,
            duration_ms: None,
            result: serde_json::Value::Null,
            error: Some("killed by signal 9 (SIGKILL)".into()),
            exit_code: None,
            exit_signal: Some("SIGKILL".into()),
        };
        assert_eq!(exit_code_of(Some(&killed)), 137);
        let not_started = StatusInfo {
            error: Some("cannot start \"x\": command not found".into()),
            exit_signal: None,
            ..killed
        };
        assert_eq!(exit_code_of(Some(&not_started)), 1);
    }

    #[test]
    fn the_server_address_comes_from_server_json() {
        let dir = tempfile::tempdir().unwrap();
        let args = |server: Option<&str>| ClientArgs {
            server: server.map(String::from),
            token: None,
            data: Some(dir.path().to_path_buf()),
        };
        assert_eq!(resolve_url(&args(None)).unwrap(), DEFAULT_URL);
        std::fs::write(
            dir.path().join("server.json"),
            r#"{"pid":1,"addr":"127.0.0.1:4567","started_at":"x"}"#,
        )
        .unwrap();
        assert_eq!(resolve_url(&args(None)).unwrap(), "127.0.0.1:4567");
        assert_eq!(resolve_url(&args(Some("http://h:1"))).unwrap(), "http://h:1");
    }
}
