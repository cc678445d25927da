//! `prochub follow ID`, and `stream_output`, the printing of a followed
//! process's output that `prochub run` shares: stdout and stderr chunks to
//! their own pipes, a status line on a terminal, Ctrl-C, a closed pipe, a
//! marker line where the server elided output.
//!
//! Without history flags `follow` replays the last lines through the
//! stream (each pipe to its own output). With `--timestamps`, `--since`,
//! `--until`, `--lines`, `--stream` or `--no-follow` it reads the history
//! with `GET …/output` and those filters (see [`super::history`]), then
//! follows live from where that read ended (`Prochub-Output-End`), so
//! nothing is missed or printed twice between the two.

use anyhow::Context;

use super::history::{self, LiveView, Stamper};
use super::print::{self, StatusLine, end_summary, write_chunk};
use super::{EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, FollowArgs, connect, interrupts};
use crate::client::{Client, Follower, OutputEvent};
use crate::model::{OutputQuery, OutputRange, StatusInfo, StreamKind};

/// Lines of earlier output `follow` shows before going live (like `tail -f`).
pub const FOLLOW_CONTEXT_LINES: usize = 10;
/// Bytes read back to find those lines.
const FOLLOW_CONTEXT_BYTES: u64 = 16 * 1024;
/// How often the status line's clock is redrawn.
const STATUS_LINE_TICK: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn follow(a: FollowArgs) -> anyhow::Result<u8> {
    let client = connect(&a.client)?;
    let sigint = interrupts()?;
    let mut view = LiveView {
        stream: a.stream.map(StreamKind::from),
        stamper: None,
    };
    let from = match history::query(&a) {
        None if a.from_start => 0,
        None => context_start(&client, &a.id).await?,
        Some(q) => {
            let read = client.read_output(&a.id, &q).await?;
            if !history::print(&read.body, q.stream)? {
                return Ok(EXIT_BROKEN_PIPE);
            }
            if a.no_follow || a.until.is_some() {
                return Ok(0);
            }
            if a.timestamps {
                view.stamper = Some(Stamper::new(read.body.is_empty() || read.body.ends_with('\n')));
            }
            read.end.with_context(|| {
                format!(
                    "{} sent no Prochub-Output-End header (a server without output history): \
                     follow without --timestamps/--since/--lines/--stream, or use --no-follow",
                    client.base_url()
                )
            })?
        }
    };
    let outcome = stream_output(&client, client.follow(&a.id, Some(from)), false, sigint, view).await?;
    Ok(if outcome.reader_gone {
        EXIT_BROKEN_PIPE
    } else if outcome.interrupted {
        EXIT_INTERRUPTED
    } else {
        0
    })
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
    let bytes = client
        .read_output_bytes(id, &OutputQuery::range(OutputRange::From(start)))
        .await?
        .body;
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

/// How a followed stream ended.
pub(super) struct Outcome {
    /// The final status, if it arrived.
    pub status: Option<StatusInfo>,
    /// The user pressed Ctrl-C (twice for `run`) and we stopped waiting.
    pub interrupted: bool,
    /// stdout was a pipe whose reader is gone (`prochub follow ID | head`):
    /// we stopped, as a local writer killed by SIGPIPE would.
    pub reader_gone: bool,
}

/// Prints a follower's output (stderr chunks to stderr) until `done`.
/// With `cancel_on_interrupt`, the first Ctrl-C cancels the remote process
/// and keeps following to its end; a second one leaves at once. Without
/// it, Ctrl-C just stops following.
pub(super) async fn stream_output(
    client: &Client,
    mut follower: Follower,
    cancel_on_interrupt: bool,
    // One SIGINT listener for the whole stream, so that no Ctrl-C falls
    // between two loop iterations.
    mut sigint: tokio::signal::unix::Signal,
    view: LiveView,
) -> anyhow::Result<Outcome> {
    let mut printer = Printer::new(client, follower.id(), cancel_on_interrupt, view);
    let mut ticker = tokio::time::interval(STATUS_LINE_TICK);
    let outcome = loop {
        let ended = tokio::select! {
            ev = follower.next() => match ev {
                Some(ev) => printer.on_event(ev?).await?,
                None => Some(printer.outcome(false, false)),
            },
            _ = ticker.tick() => {
                printer.line.draw();
                None
            }
            _ = sigint.recv() => printer.on_interrupt(),
        };
        if let Some(outcome) = ended {
            break outcome;
        }
    };
    printer.line.clear();
    Ok(outcome)
}

/// What [`stream_output`] keeps between events.
struct Printer<'a> {
    client: &'a Client,
    id: String,
    /// stdout is a terminal: status line and end summary.
    tty: bool,
    line: StatusLine,
    cancel_on_interrupt: bool,
    /// A Ctrl-C already asked the server to cancel.
    cancelling: bool,
    status: Option<StatusInfo>,
    /// Which chunks are shown, and how.
    view: LiveView,
}

impl<'a> Printer<'a> {
    fn new(client: &'a Client, id: &str, cancel_on_interrupt: bool, view: LiveView) -> Self {
        let tty = print::stdout_is_terminal();
        Printer {
            client,
            id: id.to_owned(),
            tty,
            line: StatusLine::new(tty, format!("{id} running")),
            cancel_on_interrupt,
            cancelling: false,
            status: None,
            view,
        }
    }

    fn outcome(&mut self, interrupted: bool, reader_gone: bool) -> Outcome {
        Outcome {
            status: self.status.take(),
            interrupted,
            reader_gone,
        }
    }

    /// Prints one event; Some when the stream is over for us.
    async fn on_event(&mut self, ev: OutputEvent) -> anyhow::Result<Option<Outcome>> {
        self.line.clear();
        match ev {
            OutputEvent::Chunk {
                content, stream, ts, ..
            } => {
                let Some(content) = self.view.render(content, stream, ts) else {
                    return Ok(None);
                };
                if !write_chunk(&content, stream)? {
                    self.stop_without_reader().await;
                    return Ok(Some(self.outcome(false, true)));
                }
                self.line.wrote(&content);
                self.line.draw();
            }
            OutputEvent::Lagged { from, to } => history::print_elided(from, to),
            OutputEvent::Status(s) => {
                if let Some(summary) = end_summary(&s, self.tty, print::stderr_is_terminal()) {
                    eprintln!("{summary}");
                }
                self.status = Some(s);
            }
            OutputEvent::Done => return Ok(Some(self.outcome(false, false))),
        }
        Ok(None)
    }

    /// stdout's reader is gone. For `run`, like a local pipeline, the
    /// command does not outlive its reader.
    async fn stop_without_reader(&self) {
        if !self.cancel_on_interrupt {
            return;
        }
        match self.client.cancel(&self.id).await {
            Err(e) if e.status() != Some(409) => eprintln!("prochub: cancel failed: {e}"),
            _ => {}
        }
    }

    /// Ctrl-C: stop, or (`run`, first time) cancel and keep following.
    fn on_interrupt(&mut self) -> Option<Outcome> {
        self.line.clear();
        if !self.cancel_on_interrupt || self.cancelling {
            return Some(self.outcome(true, false));
        }
        self.cancelling = true;
        eprintln!("prochub: cancelling {} (Ctrl-C again to stop waiting)", self.id);
        self.line.set_label(format!("{} cancelling", self.id));
        let client = self.client.clone();
        let id = self.id.clone();
        tokio::spawn(async move {
            if let Err(e) = client.cancel(&id).await {
                eprintln!("prochub: cancel failed: {e}");
            }
        });
        None
    }
}
