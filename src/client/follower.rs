//! [`Follower`]: a process's output as it is written (SPEC section 3),
//! across dropped connections and server restarts.
//!
//! The stream's event ids are byte offsets, so a reconnect (see
//! [`super::resumable`]) resumes exactly where the last chunk ended, and
//! the follower also drops any byte it already delivered: output is seen
//! exactly once.
//!
//! Each chunk carries when the server stored it (`ts`) and, for
//! server-run commands, its pipe (`stream`), replayed or live (SPEC
//! section 3); a replay through output no longer stored (the elided
//! middle of a long log, section 5) yields one [`OutputEvent::Lagged`].

use futures_util::Stream;
use serde::Deserialize;

use super::error::ClientError;
use super::resumable::Resumable;
use super::sse::SseEvent;
use super::transport::Client;
use super::url::query;
use crate::model::{Id, StatusInfo, StreamKind, Timestamp};

/// What a follower receives.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputEvent {
    /// Output; `offset` is the byte offset after it.
    Chunk {
        offset: u64,
        content: String,
        /// `stdout`/`stderr` for chunks of server-run commands (and of
        /// appends that named their pipe).
        stream: Option<StreamKind>,
        /// When the server stored this output (its `ts`); None from a
        /// server that predates it.
        ts: Option<Timestamp>,
    },
    /// Output in `from..to` is no longer stored (the elided middle of a
    /// long log, past the server's cap) and was skipped; what follows
    /// starts at `to`.
    Lagged { from: u64, to: u64 },
    /// The process ended; `Done` follows.
    Status(StatusInfo),
    /// Last event: the stream is over.
    Done,
}

#[derive(Deserialize)]
struct ChunkData {
    content: String,
    #[serde(default)]
    stream: Option<StreamKind>,
    /// RFC 3339; a value that does not parse counts as absent (the
    /// content matters more than its time).
    #[serde(default)]
    ts: Option<String>,
}

/// Parses a chunk's `ts`.
fn parse_ts(s: &str) -> Option<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

#[derive(Deserialize, Default)]
struct LaggedData {
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    to: Option<u64>,
}

/// Follows one process's output; see [`Client::follow`].
pub struct Follower {
    id: String,
    /// The requested start; None: resolve "now" from the record on first use.
    from: Option<u64>,
    conn: Option<Resumable>,
    client: Client,
    /// Offset after the last byte delivered.
    pos: Option<u64>,
    got_status: bool,
    done: bool,
}

impl Follower {
    pub(crate) fn new(client: Client, id: String, from: Option<u64>) -> Self {
        Follower {
            id,
            from,
            conn: None,
            client,
            pos: from,
            got_status: false,
            done: false,
        }
    }

    /// Process id being followed.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Offset after the last byte delivered (where a resume would start).
    pub fn position(&self) -> Option<u64> {
        self.pos
    }

    fn open(&mut self) -> Result<(), ClientError> {
        let id = Id::parse(&self.id)?;
        let from = self.from.expect("resolved before opening");
        let path = format!(
            "/api/processes/{id}/stream{}",
            query(&[("from", Some(from.to_string()))])
        );
        self.conn = Some(Resumable::new(self.client.clone(), path));
        Ok(())
    }

    /// Resolves the start and prepares the stream (no request yet).
    async fn prepare(&mut self) -> Result<(), ClientError> {
        if self.conn.is_some() {
            return Ok(());
        }
        if self.from.is_none() {
            // "From now on", pinned to an offset, so that a reconnect
            // before the first chunk still knows where to resume.
            let p = self.client.get_process(&self.id).await?;
            self.from = Some(p.output_bytes);
            self.pos = Some(p.output_bytes);
        }
        self.open()
    }

    /// Connects now instead of at the first `next`: for `follow(id, None)`
    /// this fixes "now", and output appended after it returns is delivered.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        self.prepare().await?;
        self.conn.as_mut().expect("prepared").open_now().await
    }

    /// The next event; None after `Done` or after an error.
    pub async fn next(&mut self) -> Option<Result<OutputEvent, ClientError>> {
        if self.done {
            return None;
        }
        if let Err(e) = self.prepare().await {
            self.done = true;
            return Some(Err(e));
        }
        loop {
            let conn = self.conn.as_mut().expect("prepared above");
            let ev = match conn.next().await {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => {
                    self.done = true;
                    return None;
                }
            };
            if let Some(out) = self.interpret(ev) {
                return Some(Ok(out));
            }
        }
    }

    /// What an SSE event means for the caller; None for what it need not
    /// see (heartbeats, bytes or a status it already has, malformed data).
    fn interpret(&mut self, ev: SseEvent) -> Option<OutputEvent> {
        match ev.event.as_str() {
            "chunk" => self.chunk(&ev),
            "status" => self.status(&ev),
            "done" => {
                self.conn.as_mut().expect("events come from a connection").close();
                self.done = true;
                Some(OutputEvent::Done)
            }
            "lagged" => Some(self.lagged(&ev)),
            _ => None, // heartbeat and anything newer
        }
    }

    /// A chunk, minus the bytes delivered before a reconnect.
    fn chunk(&mut self, ev: &SseEvent) -> Option<OutputEvent> {
        let Ok(data) = serde_json::from_str::<ChunkData>(&ev.data) else {
            tracing::warn!(data = %ev.data, "ignoring a malformed chunk event");
            return None;
        };
        let offset: u64 = ev.id.parse().unwrap_or(0);
        let mut content = data.content;
        if let (Some(pos), true) = (self.pos, offset > 0) {
            if offset <= pos {
                return None; // already delivered before a reconnect
            }
            let start = offset - content.len() as u64;
            if start < pos {
                let skip = (pos - start) as usize;
                if content.is_char_boundary(skip) {
                    content.drain(..skip);
                }
            }
        }
        if offset > 0 {
            self.pos = Some(offset);
        }
        Some(OutputEvent::Chunk {
            offset,
            content,
            stream: data.stream,
            ts: data.ts.as_deref().and_then(parse_ts),
        })
    }

    /// The final status, once (a reconnect resends it).
    fn status(&mut self, ev: &SseEvent) -> Option<OutputEvent> {
        if self.got_status {
            return None;
        }
        match serde_json::from_str::<StatusInfo>(&ev.data) {
            Ok(s) => {
                self.got_status = true;
                Some(OutputEvent::Status(s))
            }
            Err(e) => {
                tracing::warn!(%e, data = %ev.data, "ignoring a malformed status event");
                None
            }
        }
    }

    /// A skipped range; the position moves past it.
    fn lagged(&mut self, ev: &SseEvent) -> OutputEvent {
        let d: LaggedData = serde_json::from_str(&ev.data).unwrap_or_default();
        let from = d.from.or(self.pos).unwrap_or(0);
        let to = d.to.or_else(|| ev.id.parse().ok()).unwrap_or(from);
        self.pos = Some(self.pos.map_or(to, |p| p.max(to)));
        OutputEvent::Lagged { from, to }
    }

    /// As a `futures` Stream.
    pub fn into_stream(self) -> impl Stream<Item = Result<OutputEvent, ClientError>> + Send {
        futures_util::stream::unfold(self, |mut f| async move { f.next().await.map(|ev| (ev, f)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower() -> Follower {
        let client = Client::new("127.0.0.1:1", None).expect("a valid address");
        Follower::new(client, "p1".into(), Some(0))
    }

    fn event(name: &str, id: &str, data: &str) -> SseEvent {
        SseEvent {
            event: name.into(),
            id: id.into(),
            data: data.into(),
        }
    }

    #[test]
    fn chunks_carry_their_time_and_pipe() {
        let mut f = follower();
        let ev = f.interpret(event(
            "chunk",
            "6",
            r#"{"content":"hello\n","ts":"2026-12-01T10:00:00.123Z","stream":"stderr"}"#,
        ));
        assert_eq!(
            ev,
            Some(OutputEvent::Chunk {
                offset: 6,
                content: "hello\n".into(),
                stream: Some(StreamKind::Stderr),
                ts: Some("2026-12-01T10:00:00.123Z".parse().unwrap()),
            })
        );
        // Without a pipe, or from an older server without a time.
        let ev = f.interpret(event("chunk", "9", r#"{"content":"abc","ts":"not a time"}"#));
        assert!(
            matches!(
                ev,
                Some(OutputEvent::Chunk {
                    stream: None,
                    ts: None,
                    offset: 9,
                    ..
                })
            ),
            "{ev:?}"
        );
    }

    #[test]
    fn a_skipped_range_moves_the_position_past_it() {
        let mut f = follower();
        let ev = f.interpret(event("lagged", "", r#"{"from":2097152,"to":98566144}"#));
        assert_eq!(
            ev,
            Some(OutputEvent::Lagged {
                from: 2097152,
                to: 98566144
            })
        );
        assert_eq!(f.position(), Some(98566144));
        // A replayed chunk from before the gap is not delivered again.
        assert_eq!(f.interpret(event("chunk", "10", r#"{"content":"old"}"#)), None);
    }
}
