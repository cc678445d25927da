//! A Server-Sent Events parser following the WHATWG HTML rules
//! ("9.2.6 Interpreting an event stream"), fed with body frames cut at
//! arbitrary points.
//!
//! * The stream is UTF-8 (invalid bytes become U+FFFD); one leading BOM is
//!   dropped.
//! * Lines end with CRLF, LF or CR, including a CR at the end of one frame
//!   and its LF at the start of the next.
//! * A line starting with `:` is a comment; a line without `:` is a field
//!   name with an empty value; one space after the colon is dropped.
//! * `data` lines accumulate joined by LF; `id` (unless it contains NUL)
//!   sets the last event id, which persists across events; `retry` with
//!   only ASCII digits sets the reconnection time; other fields are ignored.
//! * An empty line dispatches the event, unless no data was given; an
//!   unterminated event at the end of the stream is dropped.

use std::collections::VecDeque;

use crate::utf8::Utf8Decoder;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field, `message` when absent.
    pub event: String,
    pub data: String,
    /// The last event id at dispatch time (empty when none was ever set).
    pub id: String,
}

/// Incremental parser. Feed it bytes, take events out.
#[derive(Debug, Default)]
pub struct SseParser {
    decoder: Utf8Decoder,
    /// Text of the line being read (no line terminator yet).
    line: String,
    /// The previous piece ended with CR: an LF starting the next one
    /// belongs to that line end.
    after_cr: bool,
    /// Whether the BOM check at the start of the stream is done.
    started: bool,
    event_type: String,
    data: String,
    /// Whether any `data` field was seen for the pending event.
    has_data: bool,
    last_id: String,
    retry_ms: Option<u64>,
    ready: VecDeque<SseEvent>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser whose last event id starts as `id` (a resumed stream).
    pub fn with_last_id(id: impl Into<String>) -> Self {
        SseParser {
            last_id: id.into(),
            ..Self::default()
        }
    }

    /// The last event id seen so far (what `Last-Event-ID` should carry).
    pub fn last_event_id(&self) -> &str {
        &self.last_id
    }

    /// The reconnection time the server asked for, if it did.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// Parses more of the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        let text = self.decoder.push(bytes);
        self.feed_text(&text);
    }

    /// The next complete event, if any.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    /// Convenience: feed, then take all events that are complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.feed(bytes);
        self.ready.drain(..).collect()
    }

    fn feed_text(&mut self, mut text: &str) {
        if !self.started && !text.is_empty() {
            self.started = true;
            text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        }
        if self.after_cr && !text.is_empty() {
            self.after_cr = false;
            text = text.strip_prefix('\n').unwrap_or(text);
        }
        while let Some(pos) = text.find(['\r', '\n']) {
            let (head, rest) = text.split_at(pos);
            self.line.push_str(head);
            let line = std::mem::take(&mut self.line);
            self.process_line(&line);
            text = if let Some(after) = rest.strip_prefix("\r\n") {
                after
            } else if rest == "\r" {
                // The LF of a CRLF may be in the next piece.
                self.after_cr = true;
                ""
            } else {
                &rest[1..]
            };
        }
        self.line.push_str(text);
    }

    fn process_line(&mut self, line: &str) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line.starts_with(':') {
            return; // comment
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event_type = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = value.to_owned(),
            "retry" => {
                if !value.is_empty()
                    && value.bytes().all(|b| b.is_ascii_digit())
                    && let Ok(ms) = value.parse()
                {
                    self.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let event_type = std::mem::take(&mut self.event_type);
        let data = std::mem::take(&mut self.data);
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        self.ready.push_back(SseEvent {
            event: if event_type.is_empty() {
                "message".to_owned()
            } else {
                event_type
            },
            data,
            id: self.last_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Vec<SseEvent> {
        SseParser::new().push(input.as_bytes())
    }

    fn ev(event: &str, data: &str, id: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.into(),
        }
    }

    #[test]
    fn every_line_ending_works() {
        for sep in ["\n", "\r\n", "\r"] {
            let input = format!("event: chunk{sep}id: 5{sep}data: hello{sep}{sep}data: two{sep}{sep}");
            assert_eq!(
                parse(&input),
                vec![ev("chunk", "hello", "5"), ev("message", "two", "5")],
                "separator {sep:?}"
            );
        }
    }

    #[test]
    fn a_crlf_split_between_frames_is_one_line_end() {
        let mut p = SseParser::new();
        let mut out = p.push(b"data: a\r");
        out.extend(p.push(b"\ndata: b\r"));
        out.extend(p.push(b"\n\r"));
        out.extend(p.push(b"\n"));
        assert_eq!(out, vec![ev("message", "a\nb", "")]);
    }

    #[test]
    fn multi_line_data_joins_with_newlines() {
        assert_eq!(
            parse("data: one\ndata:two\ndata\ndata:  three\n\n"),
            vec![ev("message", "one\ntwo\n\n three", "")]
        );
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        assert_eq!(
            parse(": connected\nfoo: bar\n: another\ndata: x\n\n"),
            vec![ev("message", "x", "")]
        );
    }

    #[test]
    fn events_without_data_are_not_dispatched_but_keep_their_id() {
        assert_eq!(
            parse("id: 7\nevent: ping\n\ndata: y\n\n"),
            vec![ev("message", "y", "7")]
        );
        // An `id` with NUL is ignored; an empty `id` resets.
        assert_eq!(
            parse("id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\nid\ndata: c\n\n"),
            vec![ev("message", "a", "1"), ev("message", "b", "1"), ev("message", "c", "")]
        );
    }

    #[test]
    fn retry_takes_only_digits() {
        let mut p = SseParser::new();
        p.push(b"retry: 2000\n\n");
        assert_eq!(p.retry_ms(), Some(2000));
        p.push(b"retry: 12x\n\nretry: -5\n\nretry:\n\n");
        assert_eq!(p.retry_ms(), Some(2000));
        p.push(b"retry:300\n\n");
        assert_eq!(p.retry_ms(), Some(300));
    }

    #[test]
    fn a_leading_bom_is_dropped_once() {
        assert_eq!(parse("\u{FEFF}data: a\n\n"), vec![ev("message", "a", "")]);
        // A second BOM is part of a field name, so the line is ignored.
        assert_eq!(parse("\u{FEFF}\u{FEFF}data: a\n\n"), vec![]);
    }

    #[test]
    fn a_field_without_colon_has_an_empty_value() {
        assert_eq!(parse("data\n\n"), vec![ev("message", "", "")]);
        assert_eq!(parse("event\ndata: z\n\n"), vec![ev("message", "z", "")]);
    }

    #[test]
    fn an_unterminated_event_at_the_end_is_dropped() {
        let mut p = SseParser::new();
        assert_eq!(
            p.push(b"data: complete\n\ndata: partial\n"),
            vec![ev("message", "complete", "")]
        );
        assert!(p.next_event().is_none());
    }

    #[test]
    fn bytes_cut_anywhere_give_the_same_events() {
        let input = "\u{FEFF}retry: 2000\r\n: hi\r\nid: 3\r\nevent: chunk\r\ndata: {\"content\":\"é€😀\"}\r\n\r\n";
        let whole = parse(input);
        assert_eq!(whole.len(), 1);
        let bytes = input.as_bytes();
        for cut in 0..bytes.len() {
            let mut p = SseParser::new();
            let mut out = p.push(&bytes[..cut]);
            out.extend(p.push(&bytes[cut..]));
            assert_eq!(out, whole, "cut at {cut}");
        }
    }

    #[test]
    fn a_resumed_parser_starts_from_the_given_id() {
        let mut p = SseParser::with_last_id("42");
        assert_eq!(p.push(b"data: x\n\n"), vec![ev("message", "x", "42")]);
        assert_eq!(p.last_event_id(), "42");
    }
}
