//! How the CLI prints: writing to stdout/stderr with a closed pipe in
//! mind, the `ls` table, ages and durations, colours, the end summary and
//! the live status line. Colour and the status line are used only when
//! stdout is a terminal; piped output stays plain and parseable.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::model::{Process, Status, StatusInfo, StreamKind, Timestamp};

/// Widest name shown in the `ls` table, in terminal columns (longer ones
/// end with `…`).
pub const NAME_WIDTH: usize = 40;

/// Whether stdout is a terminal (colour, status line).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether stderr is a terminal where colour is welcome (the end summary
/// goes there, and stderr may be redirected while stdout is not).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Writes to stdout, tolerating a closed pipe (`prochub ls | head`).
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes a chunk to stdout, or stderr for stderr chunks. False when
/// stdout's reader is gone (a closed stderr is ignored).
pub fn write_chunk(content: &str, stream: Option<StreamKind>) -> std::io::Result<bool> {
    let result = if stream == Some(StreamKind::Stderr) {
        let mut err = std::io::stderr().lock();
        err.write_all(content.as_bytes()).and_then(|_| err.flush())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(content.as_bytes()).and_then(|_| out.flush())
    };
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(stream == Some(StreamKind::Stderr)),
        other => other.map(|()| true),
    }
}

/// ANSI colour of a status.
fn status_color(s: Status) -> &'static str {
    match s {
        Status::Queued => "\x1b[2m",
        Status::Running => "\x1b[36m",
        Status::Completed => "\x1b[32m",
        Status::Failed => "\x1b[31m",
        Status::Cancelled => "\x1b[33m",
    }
}

/// `text` in the colour of `status` when `color` is on.
pub fn paint(text: &str, status: Status, color: bool) -> String {
    if color {
        format!("{}{text}\x1b[0m", status_color(status))
    } else {
        text.to_owned()
    }
}

/// A short human age: `42s`, `5m`, `3h`, `2d`.
pub fn short_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// The duration column: the record's own once finished, the time so far
/// while running, `-` before it started.
pub fn duration_cell(p: &Process, now: Timestamp) -> String {
    if let Some(d) = &p.duration {
        return d.clone();
    }
    match (p.status, p.started_at) {
        (Status::Running, Some(start)) => {
            let ms = (now - start).num_milliseconds().max(0) as u64;
            crate::model::format_duration(ms / 1000 * 1000)
        }
        _ => "-".to_owned(),
    }
}

/// `s` on one line, cut to at most `width` terminal columns. Columns, not
/// chars: a CJK character or an emoji takes two, a combining mark none.
fn truncate(s: &str, width: usize) -> String {
    let one_line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if one_line.width() <= width {
        return one_line;
    }
    let mut t = String::new();
    let mut used = 0;
    for c in one_line.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        used += w;
        t.push(c);
    }
    t.push('…');
    t
}

/// The `ls` table: id, name, status, age, duration; columns aligned.
pub fn process_table(processes: &[Process], now: Timestamp, color: bool) -> String {
    let header = ["ID", "NAME", "STATUS", "AGE", "DURATION"];
    let rows: Vec<(Status, [String; 5])> = processes
        .iter()
        .map(|p| {
            (
                p.status,
                [
                    p.id.to_string(),
                    truncate(&p.name, NAME_WIDTH),
                    p.status.to_string(),
                    short_age((now - p.created_at).num_seconds()),
                    duration_cell(p, now),
                ],
            )
        })
        .collect();
    let mut widths = header.map(UnicodeWidthStr::width);
    for (_, cells) in &rows {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.width());
        }
    }
    let line = |cells: &[String; 5], status: Option<Status>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            let last = i == cells.len() - 1;
            let padded = if last {
                c.clone()
            } else {
                format!("{c}{}  ", " ".repeat(w - c.width()))
            };
            match status {
                Some(s) if i == 2 => out.push_str(&paint(&padded, s, color)),
                _ => out.push_str(&padded),
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(&header.map(str::to_owned), None);
    out.push('\n');
    for (status, cells) in &rows {
        out.push_str(&line(cells, Some(*status)));
        out.push('\n');
    }
    out
}

/// The one-line summary printed when a followed process ends (terminal
/// only): status, duration, and how it ended: its exit code, the signal
/// that killed it, or else its `error` (a command that never started, a
/// failure a client reported). The runner's `error` only restates the code
/// or the signal, so it is left out when one of those fields says it.
pub fn summary(info: &StatusInfo, color: bool) -> String {
    let mut s = format!("{}", info.status);
    if let Some(d) = &info.duration {
        s.push_str(&format!(" in {d}"));
    }
    match (info.exit_code, &info.exit_signal, &info.error) {
        (Some(code), _, _) => s.push_str(&format!(" (exit code {code})")),
        (None, Some(signal), _) => s.push_str(&format!(" (killed by {signal})")),
        (None, None, Some(e)) => s.push_str(&format!(": {e}")),
        (None, None, None) => {}
    }
    paint(&format!("● {s}"), info.status, color)
}

/// The line for stderr when a followed process ends. On a terminal, the
/// summary, coloured only when stderr is a terminal too (`run 2>log` keeps
/// the log plain). Piped, stdout stays exactly the command's output and
/// stderr gets a line only when the command did not exit by itself with a
/// code (it never started, or a signal killed it): else nothing would say
/// why `run` failed.
pub fn end_summary(info: &StatusInfo, stdout_tty: bool, stderr_tty: bool) -> Option<String> {
    if stdout_tty {
        return Some(summary(info, stderr_tty));
    }
    match (&info.error, info.exit_code) {
        (Some(e), None) if info.status == Status::Failed => Some(format!("prochub: {e}")),
        _ => None,
    }
}

/// A status line kept at the bottom of the terminal while output scrolls
/// above it. Disabled (every call a no-op) when stdout is not a terminal.
pub struct StatusLine {
    enabled: bool,
    shown: bool,
    /// The last output ended with a newline (the line can be drawn).
    at_line_start: bool,
    started: Instant,
    label: String,
}

impl StatusLine {
    pub fn new(enabled: bool, label: impl Into<String>) -> Self {
        StatusLine {
            enabled,
            shown: false,
            at_line_start: true,
            started: Instant::now(),
            label: label.into(),
        }
    }

    pub fn set_label(&mut self, label: impl Into<String>) {
        self.label = label.into();
        self.draw();
    }

    /// Erases the line (before output is written).
    pub fn clear(&mut self) {
        if self.enabled && self.shown {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(b"\r\x1b[2K");
            let _ = out.flush();
            self.shown = false;
        }
    }

    /// Records what the output just written ended with.
    pub fn wrote(&mut self, text: &str) {
        if let Some(last) = text.chars().last() {
            self.at_line_start = last == '\n';
        }
    }

    /// (Re)draws the line, unless the output left a line unfinished.
    pub fn draw(&mut self) {
        if !self.enabled || !self.at_line_start {
            return;
        }
        let secs = self.started.elapsed().as_secs();
        let mut out = std::io::stdout().lock();
        let _ = write!(
            out,
            "\r\x1b[2K\x1b[2m… {} {}\x1b[0m",
            self.label,
            short_age(secs as i64)
        );
        let _ = out.flush();
        self.shown = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn proc(id: &str, name: &str, status: Status, created: Timestamp) -> Process {
        Process {
            id: crate::model::Id::parse(id).expect("test ids are valid"),
            workspace: crate::model::Id::default_workspace(),
            name: name.into(),
            status,
            created_at: created,
            updated_at: created,
            started_at: Some(created),
            ended_at: None,
            duration: status.is_terminal().then(|| "2m 34s".to_owned()),
            result: None,
            error: None,
            metadata: Default::default(),
            command: None,
            exit_code: None,
            exit_signal: None,
            output_bytes: 0,
            output_truncated: false,
            output_elided: 0,
        }
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(short_age(5), "5s");
        assert_eq!(short_age(125), "2m");
        assert_eq!(short_age(7300), "2h");
        assert_eq!(short_age(90000), "1d");
        assert_eq!(short_age(-3), "0s");
    }

    #[test]
    fn the_table_is_aligned_and_plain_without_colour() {
        let now = crate::model::now();
        let ps = [
            proc("01AAA", "build the thing", Status::Running, now - Duration::seconds(90)),
            proc("02B", "t", Status::Failed, now - Duration::hours(3)),
        ];
        let table = process_table(&ps, now, false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "ID     NAME             STATUS   AGE  DURATION");
        assert_eq!(lines[1], "01AAA  build the thing  running  1m   1m 30s");
        assert_eq!(lines[2], "02B    t                failed   3h   2m 34s");
        assert!(!table.contains('\x1b'));
        assert!(process_table(&ps, now, true).contains("\x1b[31m"));
    }

    /// Regression: the end summary was coloured whenever stdout was a
    /// terminal, so `prochub run … 2>log` wrote ANSI codes into the log.
    #[test]
    fn the_end_summary_has_no_colour_when_stderr_is_redirected() {
        let info = StatusInfo {
            status: Status::Failed,
            duration: Some("1s".into()),
            duration_ms: Some(1000),
            result: serde_json::Value::Null,
            error: Some("exited with code 3".into()),
            exit_code: Some(3),
            exit_signal: None,
        };
        assert_eq!(end_summary(&info, false, true), None, "piped: nothing but the output");
        // Regression: piped, a command that never started failed silently.
        let not_started = StatusInfo {
            error: Some("cannot start \"x\": command not found".into()),
            exit_code: None,
            ..info.clone()
        };
        assert_eq!(
            end_summary(&not_started, false, false).as_deref(),
            Some("prochub: cannot start \"x\": command not found")
        );
        let plain = end_summary(&info, true, false).unwrap();
        assert_eq!(plain, "● failed in 1s (exit code 3)");
        assert!(end_summary(&info, true, true).unwrap().contains("\x1b[31m"));
    }

    /// How a command ended comes from the record's fields; the runner's
    /// `error` text is not parsed.
    #[test]
    fn the_summary_names_the_signal_that_killed_the_command() {
        let killed = StatusInfo {
            status: Status::Failed,
            duration: Some("2s".into()),
            duration_ms: Some(2000),
            result: serde_json::Value::Null,
            error: Some("killed by signal 9 (SIGKILL)".into()),
            exit_code: None,
            exit_signal: Some("SIGKILL".into()),
        };
        assert_eq!(summary(&killed, false), "● failed in 2s (killed by SIGKILL)");
        let reported = StatusInfo {
            error: Some("tests failed".into()),
            exit_signal: None,
            ..killed
        };
        assert_eq!(summary(&reported, false), "● failed in 2s: tests failed");
    }

    #[test]
    fn long_names_are_cut() {
        assert_eq!(truncate(&"x".repeat(50), 10).chars().count(), 10);
        assert_eq!(truncate("a\nb", 10), "a b");
    }

    /// Regression: widths were counted in chars, so a row with CJK or
    /// emoji in its name pushed every later column out of line, and a
    /// 40-char CJK name filled 80 columns.
    #[test]
    fn the_table_stays_aligned_with_wide_characters_in_names() {
        let now = crate::model::now();
        let ps = [
            proc("01A", "构建项目", Status::Running, now),
            proc("02B", "🚀 deploy", Status::Failed, now),
            proc("03C", "plain", Status::Completed, now),
        ];
        let table = process_table(&ps, now, false);
        // The column (in terminal cells) where each line's status starts.
        let cols: Vec<usize> = table
            .lines()
            .zip(["STATUS", "running", "failed", "completed"])
            .map(|(line, word)| line[..line.find(word).unwrap()].width())
            .collect();
        assert_eq!(cols, [cols[0]; 4], "\n{table}");
        let cut = truncate(&"汉".repeat(40), NAME_WIDTH);
        assert!(cut.width() <= NAME_WIDTH && cut.ends_with('…'), "{cut}");
        assert_eq!(truncate(&"汉".repeat(20), NAME_WIDTH), "汉".repeat(20));
    }
}
