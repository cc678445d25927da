//! The `prochub` binary: parses the command line, sets up logging, and
//! hands the command to [`prochub::cli`].

use std::process::ExitCode;

use clap::Parser;
use prochub::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_));
    // Logs go to stderr: stdout carries the listening line and command output.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROCHUB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if serving { "info" } else { "warn" })),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal; log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("prochub: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(prochub::cli::dispatch(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("prochub: {e:#}");
            ExitCode::from(1)
        }
    }
}
