//! The `prochub` binary: parses the command line, sets up logging, and
//! hands the command to [`prochub::cli`].

use std::process::ExitCode;

use clap::Parser;
use prochub::cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_));
    let (format, quiet_access) = match &cli.command {
        Command::Serve(a) => (a.log_format, a.quiet_access_log),
        _ => (LogFormat::Text, false),
    };
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("PROCHUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if serving { "info" } else { "warn" }));
    if quiet_access {
        filter = filter.add_directive("prochub::access=off".parse().expect("a valid directive"));
    }
    // Logs go to stderr: stdout carries the listening line and command output.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // One object per line, the event's fields at the top level.
        LogFormat::Json => logs.json().flatten_event(true).with_span_list(false).init(),
        // Colour only for a person at a terminal; log files and pipes get plain text.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
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
