//! The `prochub` command line, the top layer: it uses the client library
//! and, for `serve`, the server; nothing below imports from it. Every
//! command returns the process exit code; errors travel up as `anyhow` to
//! `main`, which prints them.
//!
//! * [`args`]: clap definitions.
//! * [`serve`]: `prochub serve`.
//! * [`run`]: `prochub run -- CMD…`, exiting with the command's code.
//! * [`follow`]: `prochub follow ID`, and the output printing `run` shares.
//! * [`history`]: what `follow --timestamps --since --lines --stream` asks
//!   the server for, and how live output keeps that look.
//! * [`records`]: `submit`, `ls`, `show`, `rm`, `prune`.
//! * [`events`]: `prochub events`.
//! * [`print`](mod@print): how they print (tables, colours, the live status line).

pub mod args;
pub mod events;
pub mod follow;
pub mod history;
pub mod print;
pub mod records;
pub mod run;
pub mod serve;

pub use args::*;

use anyhow::Context;

use crate::client::{self, Client};

/// Exit code after Ctrl-C (128 + SIGINT), also used for a cancelled run.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit code when whoever read stdout went away (128 + SIGPIPE, what a
/// shell reports for a writer killed by a closed pipe).
pub const EXIT_BROKEN_PIPE: u8 = 141;

/// Runs one parsed command.
pub async fn dispatch(cmd: Command) -> anyhow::Result<u8> {
    match cmd {
        Command::Serve(a) => serve::serve(a).await,
        Command::Submit(a) => records::submit(a).await,
        Command::Run(a) => run::run(a).await,
        Command::Follow(a) => follow::follow(a).await,
        Command::Ls(a) => records::ls(a).await,
        Command::Show(a) => records::show(a).await,
        Command::Rm(a) => records::rm(a).await,
        Command::Prune(a) => records::prune(a).await,
        Command::Events(a) => events::events(a).await,
    }
}

/// Where the server is: `--server` (or `PROCHUB_URL`), else the address in
/// `DATA/server.json`, else the default address.
pub fn resolve_url(args: &ClientArgs) -> anyhow::Result<String> {
    match &args.server {
        Some(url) => Ok(url.clone()),
        None => Ok(client::server_url(args.data.as_deref())?),
    }
}

/// A client of the server `args` name.
fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    Ok(Client::new(&resolve_url(args)?, args.token.clone())?)
}

/// Ctrl-C (SIGINT) as a stream. Once this is called, SIGINT no longer
/// ends the process: the caller decides.
fn interrupts() -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).context("listening for Ctrl-C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::DEFAULT_URL;

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
            r#"{"pid":1,"addr":"127.0.0.1:4567","started_at":"2026-01-01T00:00:00.000Z"}"#,
        )
        .unwrap();
        assert_eq!(resolve_url(&args(None)).unwrap(), "127.0.0.1:4567");
        assert_eq!(resolve_url(&args(Some("http://h:1"))).unwrap(), "http://h:1");
    }
}
