//! `prochub run -- CMD…`: has the server run a command, prints its output
//! live (see [`super::follow`]) and exits with the command's exit code.

use std::str::FromStr;

use anyhow::Context;
use nix::sys::signal::Signal;

use super::follow::stream_output;
use super::{EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, RunArgs, connect, interrupts};
use crate::client::Client;
use crate::model::{NewProcess, Process, Status, StatusInfo};

pub async fn run(a: RunArgs) -> anyhow::Result<u8> {
    let client = connect(&a.client)?;
    let new = command_process(a)?;
    // Listen for Ctrl-C before the command exists on the server: one
    // pressed while the create is in flight must cancel the command, not
    // kill this process and leave the command running unwatched.
    let mut sigint = interrupts()?;
    let (p, interrupted) = {
        let create = client.create_process(&new);
        tokio::pin!(create);
        let mut interrupted = false;
        loop {
            tokio::select! {
                p = &mut create => break (p?, interrupted),
                _ = sigint.recv() => interrupted = true,
            }
        }
    };
    tracing::debug!(id = %p.id, "command submitted");
    if interrupted {
        return cancel_at_once(&client, &p).await;
    }
    // From byte 0: the command may have printed before we connect.
    let follower = client.follow(&p.id, Some(0));
    let outcome = stream_output(&client, follower, true, sigint, Default::default()).await?;
    if outcome.reader_gone {
        return Ok(EXIT_BROKEN_PIPE);
    }
    if outcome.interrupted {
        return Ok(EXIT_INTERRUPTED);
    }
    Ok(exit_code_of(outcome.status.as_ref()))
}

/// The create body: the command, in the current folder unless `--cwd`,
/// named after its command line unless `--name`.
fn command_process(a: RunArgs) -> anyhow::Result<NewProcess> {
    let cwd = match a.cwd {
        Some(c) => c,
        None => std::env::current_dir()
            .context("reading the current folder")?
            .display()
            .to_string(),
    };
    Ok(NewProcess {
        workspace: a.workspace,
        name: a.name.unwrap_or_else(|| shell_join(&a.command)),
        command: Some(a.command),
        cwd: Some(cwd),
        ..Default::default()
    })
}

/// Ctrl-C came while the command was being created: cancel it now.
async fn cancel_at_once(client: &Client, p: &Process) -> anyhow::Result<u8> {
    eprintln!("prochub: cancelling {}", p.id);
    match client.cancel(&p.id).await {
        // 409: it already ended by itself.
        Err(e) if e.status() != Some(409) => Err(e.into()),
        _ => Ok(EXIT_INTERRUPTED),
    }
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
        }) => signal_exit_code(name).unwrap_or(1),
        _ => 1,
    }
}

/// 128 + the number of the signal named in `exit_signal` (`"SIGKILL"`).
fn signal_exit_code(name: &str) -> Option<u8> {
    let signal = Signal::from_str(name).ok()?;
    u8::try_from(128 + signal as i32).ok()
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
}
