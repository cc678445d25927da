//! [`Chunk`], one piece of output as it travels from an append to its
//! followers, and where an append is cut into pieces: never inside a
//! character, never larger than [`MAX_CHUNK`] (so what an emitter buffers
//! is bounded in bytes), never across a segment boundary. One stored piece
//! is one index record, one SEQ and one chunk, live or replayed.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::model::{StreamKind, Timestamp};

/// Appends larger than this are split (at character boundaries) into several
/// pieces, so an emitter's buffer holds at most
/// `EMITTER_CAPACITY * MAX_CHUNK` bytes = 16 MiB, and an index record's
/// length always fits its `u32`.
pub const MAX_CHUNK: usize = 16 * 1024;

/// One piece of output as it travels from an append to its followers.
#[derive(Debug)]
pub struct Chunk {
    /// Byte offset of the output after this chunk (the SSE `id`).
    pub offset: u64,
    /// Always valid UTF-8 and never split inside a character.
    pub content: String,
    /// The pipe it came from (server-run commands, or a push that named
    /// one), live and replayed alike: replays read it from the index.
    pub stream: Option<StreamKind>,
    /// The store-wide sequence number of the stored append this is (part
    /// of); 0 for output that was never stored (a cap too small to keep a
    /// tail, see `log::Retain`).
    pub seq: u64,
    /// When the store took it, ms since the Unix epoch.
    pub ts_ms: i64,
    /// A transport's encoding of this chunk (e.g. the SSE frame), filled by
    /// the first follower that needs it so 1,000 followers encode it once.
    pub encoded: OnceLock<Bytes>,
}

impl Chunk {
    pub fn new(offset: u64, content: String, stream: Option<StreamKind>, seq: u64, ts_ms: i64) -> Self {
        Chunk {
            offset,
            content,
            stream,
            seq,
            ts_ms,
            encoded: OnceLock::new(),
        }
    }

    /// Offset of the first byte of this chunk.
    pub fn start(&self) -> u64 {
        self.offset - self.content.len() as u64
    }

    /// When it was stored.
    pub fn ts(&self) -> Timestamp {
        super::appends::ts_from_ms(self.ts_ms)
    }
}

/// Where the piece of `s` that starts at byte `at` ends: at most
/// [`MAX_CHUNK`] bytes and not past `limit`, cut back to a character
/// boundary. Returns `at` when not even one character fits before `limit`
/// (the caller moves to the next segment); `limit` must be `> at`.
pub(crate) fn piece_end(s: &str, at: usize, limit: usize) -> usize {
    let want = (at + MAX_CHUNK).min(limit).min(s.len());
    // Only `limit` can leave no whole character: one is at most 4 bytes.
    floor_char_boundary(s.as_bytes(), want).max(at)
}

/// The largest index `<= i` that is not inside a UTF-8 sequence.
fn floor_char_boundary(b: &[u8], mut i: usize) -> usize {
    while i > 0 && i < b.len() && (b[i] & 0xC0) == 0x80 {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(s: &str, limit: usize) -> Vec<&str> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < s.len() {
            let lim = if at < limit { limit } else { usize::MAX };
            let end = piece_end(s, at, lim);
            if end == at {
                // The next segment: no limit there.
                let end = piece_end(s, at, usize::MAX);
                out.push(&s[at..end]);
                at = end;
                continue;
            }
            out.push(&s[at..end]);
            at = end;
        }
        out
    }

    #[test]
    fn pieces_never_cut_a_character_nor_pass_the_limit() {
        let s = "é".repeat(MAX_CHUNK);
        let all = pieces(&s, usize::MAX);
        assert!(all.len() > 1);
        assert_eq!(all.concat(), s);
        assert!(all.iter().all(|p| p.len() <= MAX_CHUNK && !p.is_empty()));
        // A limit at byte 5 (inside the third "é") ends the first piece at 4.
        let cut = pieces(&s, 5);
        assert_eq!(cut[0], "éé");
        assert_eq!(cut.concat(), s);
        // Not even one character fits before the limit.
        assert_eq!(piece_end("€abc", 0, 2), 0);
        assert_eq!(piece_end("abc", 0, usize::MAX), 3);
    }
}
